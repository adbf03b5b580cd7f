"""audio_node through real topics: transcripts per utterance, stream and detector health.

The stalled detector is the documented test hook EMOTION_ROS_TEST_STALL_DETECTOR=N:
the node's first detector blocks forever from its (N+1)-th decode on.
"""

import numpy as np

from conftest import wait_until
from rosgraph import latest_status, publish_audio
from emotion_ros.audio.synth import build_stream, RATE, set_rms_dbfs, speak
from emotion_ros.ros import conversions


def test_watchdog_restarts_a_stalled_detector_counted_in_diagnostics(start_node, ros_node):
    """A real audio_node whose detector stalls on the 2nd utterance: /diagnostics goes to
    ERROR/WARN naming the detector, the watchdog restarts it (detector_restarts 1,
    decode_timeouts 1), and the utterances after it are transcribed again, each Transcript
    stamped at its utterance's start with the audio's frame_id and naming the model that
    /diagnostics names."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from emotion_ros_msgs.msg import AudioFrame, Transcript

    node = start_node('audio_node', '--ros-args', '-p', 'vad_backend:=energy',
                      '-p', 'detector_timeout_s:=3.0', '-p', 'diagnostics_period_s:=0.3',
                      env={'EMOTION_ROS_TEST_STALL_DETECTOR': '1'})
    drv = ros_node('health_driver')
    transcripts, diags = [], []
    drv.create_subscription(Transcript, 'transcripts', transcripts.append, 20)
    drv.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 50)
    pub = drv.create_publisher(AudioFrame, 'audio', 200)
    assert wait_until(lambda: pub.get_subscription_count() > 0, 60, ros_node.spin), \
        node.output()[-3000:]

    clip = set_rms_dbfs(speak('Somebody help me', 'en-gb'), -20.0)
    audio, places = build_stream([(clip, 'call', 'x')] * 4, [1.5, 1.5, 1.5, 1.5])
    t0 = 1000.0
    publish_audio(ros_node.spin, pub, audio, t0)

    def restarted():
        values, _status = latest_status(diags)
        return (values.get('detector_restarts') == '1' and len(transcripts) >= 3
                and int(values.get('utterances_decoded', 0)) >= 3)
    assert wait_until(restarted, 90, ros_node.spin), (latest_status(diags)[0],
                                                      node.output()[-3000:])
    values, status = latest_status(diags)
    assert values['decode_timeouts'] == '1' and int(values['utterances_decoded']) >= 3
    # Every status received, not only the newest: the stall may begin and end while the
    # audio is still being published.
    levels = [(s.level, s.message) for array in diags for s in array.status
              if s.name == 'emotion_ros: audio_node']
    assert any(level >= DiagnosticStatus.WARN and 'help detector' in message
               for level, message in levels), levels
    # One transcript per decoded utterance: the 1st, then (after the stalled 2nd) the rest.
    starts = sorted(conversions.stamp_to_sec(t.header.stamp) - t0 for t in transcripts)
    expected = [places[0].start, places[2].start, places[3].start]
    assert len(starts) == 3, starts
    assert all(abs(s - e) < 0.2 for s, e in zip(starts, expected)), (starts, expected)
    for t in transcripts:
        assert t.header.frame_id == 'mic_test' and t.detector == 'whisper'   # the default
        assert t.model_id and t.model_id == values['help_model'], (t.model_id, values)
        assert conversions.stamp_to_sec(t.end) > conversions.stamp_to_sec(t.header.stamp)
    # Stream accounting from the stamps: nothing missing, no gaps.
    assert values['stream_gaps'] == '0' and float(values['audio_missing_s']) < 0.01
    assert int(values['frames_received']) == -(-audio.size // (RATE // 10))


def test_stream_gaps_and_jumps_are_counted(start_node, ros_node):
    """Frames with a gap and a jump back in their stamps are counted in /diagnostics
    (stream_gaps, stream_jumps_back, stream_restarts, audio_missing_s)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from emotion_ros_msgs.msg import AudioFrame

    node = start_node('audio_node', '--ros-args', '-p', 'vad_backend:=energy',
                      '-p', 'keyword_spotting:=false', '-p', 'diagnostics_period_s:=0.3')
    drv = ros_node('gap_driver')
    diags = []
    drv.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 50)
    pub = drv.create_publisher(AudioFrame, 'audio', 200)
    assert wait_until(lambda: pub.get_subscription_count() > 0, 60, ros_node.spin), \
        node.output()[-3000:]
    audio = np.zeros(RATE * 2, np.float32)
    publish_audio(ros_node.spin, pub, audio, 50.0)       # 50 .. 52
    publish_audio(ros_node.spin, pub, audio, 54.0)       # gap of 2 s
    publish_audio(ros_node.spin, pub, audio, 10.0)       # jump back

    def counted():
        values, _ = latest_status(diags)
        return values.get('frames_received') == '60' and values.get('stream_restarts') == '2'
    assert wait_until(counted, 60, ros_node.spin), (latest_status(diags)[0],
                                                    node.output()[-2000:])
    values, _ = latest_status(diags)
    assert values['stream_gaps'] == '1' and values['stream_jumps_back'] == '1'
    assert abs(float(values['audio_missing_s']) - 2.0) < 0.01

"""microphone_node in its own process: capture failures are reported and capture restarts;
run-time parameters change what is published or are refused (checked by effect)."""

from __future__ import annotations

import math

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
from emotion_ros_msgs.msg import AudioFrame
from rcl_interfaces.srv import SetParameters, SetParametersAtomically
from rclpy.parameter import Parameter

from conftest import wait_until
from emotion_ros.audio.pcm import write_wav
from emotion_ros.ros import conversions
from rosgraph import params

NAME = 'emotion_ros: microphone_node'

# The node's own main(), with fake capture hardware: the WAV source's producer raises after
# 10 chunks in the first two sources it builds (like a USB microphone that drops out twice).
FLAKY_MAIN = """
import emotion_ros.ros.microphone_node as mic
from emotion_ros.audio.sources import WavFileSource

class FlakyWav(WavFileSource):
    built = 0

    def start(self, callback):
        FlakyWav.built += 1
        self.fail_after = 10 if FlakyWav.built <= 2 else None
        super().start(callback)

    def _enqueue(self, samples, stamp):
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise OSError('simulated USB disconnect')
            self.fail_after -= 1
        super()._enqueue(samples, stamp)

mic.WavFileSource = FlakyWav
mic.main()
"""


def _tone_wav(path):
    t = np.arange(16000) / 16000
    write_wav(path, 0.2 * np.sin(2 * math.pi * 330 * t), 16000)
    return path


def _watch(ros_node, name='mic_watcher'):
    """A node collecting the microphone node's diagnostics statuses (no audio subscription)."""
    node = ros_node(name)
    statuses = []
    node.create_subscription(
        DiagnosticArray, '/diagnostics',
        lambda m: statuses.extend(s for s in m.status
                                  if s.name == NAME and s.hardware_id == '/microphone_node'),
        50)
    return node, statuses


def _listen(ros_node):
    node, statuses = _watch(ros_node, 'mic_listener')
    frames = []
    node.create_subscription(AudioFrame, 'audio', frames.append, 200)
    return node, frames, statuses


def values(status):
    """Key/values of a DiagnosticStatus."""
    return {kv.key: kv.value for kv in status.values}


def test_dead_capture_is_reported_and_restarted(start_node, ros_node, tmp_path):
    """Twice the source's producer raises: each death is logged with its reason, counted and
    shown as ERROR; capture restarts with backoff, audio flows again and diagnostics go to WARN
    (restarted) with both failures counted."""
    wav = _tone_wav(tmp_path / 'tone.wav')
    proc = start_node('python', '-c', FLAKY_MAIN, *params(
        'source:=wav', f'wav_path:={wav}', 'wav_loop:=true'))
    node, frames, statuses = _listen(ros_node)
    assert wait_until(lambda: any(s.level == DiagnosticStatus.ERROR for s in statuses), 90,
                      ros_node.spin), proc.output()[-3000:]
    error = next(s for s in statuses if s.level == DiagnosticStatus.ERROR)
    assert 'simulated USB disconnect' in error.message, error.message
    assert wait_until(lambda: statuses and values(statuses[-1])['capture_restarts'] == '2',
                      60, ros_node.spin), [values(s) for s in statuses[-2:]]
    count = len(frames)
    assert wait_until(lambda: len(frames) >= count + 20, 30, ros_node.spin), \
        'no audio after the restart'
    last = values(statuses[-1])
    assert last['capture_failures'] == '2' and last['capture_state'] == 'capturing'
    assert last['errors.worker.capture'] == '2'
    log = proc.output()
    assert log.count('simulated USB disconnect') >= 2 and 'restarting in' in log
    assert proc.alive()


def _set(ros_node, node, atomic=False, **values):
    srv = SetParametersAtomically if atomic else SetParameters
    name = 'set_parameters_atomically' if atomic else 'set_parameters'
    client = node.create_client(srv, f'/microphone_node/{name}')
    assert wait_until(client.service_is_ready, 30, ros_node.spin)
    future = client.call_async(srv.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]))
    assert wait_until(future.done, 30, ros_node.spin)
    result = future.result()
    return [result.result] if atomic else result.results


def test_runtime_parameters_change_the_published_audio(start_node, ros_node, tmp_path):
    """sample_format, frame_id and chunk_ms set at run time change the next frames; a source
    that cannot be built (a missing device) and read-only settings are refused with a reason,
    and audio keeps flowing as before."""
    wav = _tone_wav(tmp_path / 'tone.wav')
    proc = start_node('microphone_node', *params('source:=wav', f'wav_path:={wav}',
                                                 'wav_loop:=true', 'chunk_ms:=100'))
    node, frames, _ = _listen(ros_node)
    assert wait_until(lambda: len(frames) >= 3, 60, ros_node.spin), proc.output()[-3000:]
    first = frames[-1]
    assert first.sample_format == 'S16LE' and len(first.data) == 1600 * 2
    assert first.header.frame_id == 'microphone'

    assert all(r.successful for r in _set(ros_node, node, sample_format='F32LE',
                                          frame_id='head_mic'))
    frames.clear()
    assert wait_until(lambda: len(frames) >= 3, 30, ros_node.spin)
    assert frames[-1].sample_format == 'F32LE' and len(frames[-1].data) == 1600 * 4
    assert frames[-1].header.frame_id == 'head_mic'

    assert _set(ros_node, node, chunk_ms=50)[0].successful
    assert wait_until(lambda: len(frames[-1].data) == 800 * 4, 30, ros_node.spin)

    result = _set(ros_node, node, atomic=True, source='device', device='usb_mic_42')
    assert not all(r.successful for r in result)
    assert 'usb_mic_42' in ' '.join(r.reason for r in result)
    result = _set(ros_node, node, wav_start_delay_s=2.0)[0]
    assert not result.successful and 'read-only' in result.reason
    frames.clear()
    assert wait_until(lambda: len(frames) >= 5, 30, ros_node.spin), 'audio stopped'
    assert len(frames[-1].data) == 800 * 4
    assert proc.alive()


def test_wav_plays_from_its_first_sample_once_enough_listeners_are_matched(
        start_node, ros_node, tmp_path):
    """A WAV file waits for wav_wait_for_subscribers listeners of 'audio' (diagnostics say so,
    nothing is published meanwhile, one listener of two does not start it); then every
    listener gets the whole file, sample for sample, from its first chunk."""
    rng = np.random.default_rng(7)
    samples = (0.3 * rng.uniform(-1, 1, 16000 * 2)).astype(np.float32)  # 2 s, every chunk unique
    wav = tmp_path / 'noise.wav'
    write_wav(wav, samples, 16000)
    proc = start_node('microphone_node', *params('source:=wav', f'wav_path:={wav}',
                                                 'wav_wait_for_subscribers:=2'))
    node, statuses = _watch(ros_node)
    assert wait_until(lambda: len(statuses) >= 2, 60, ros_node.spin), proc.output()[-3000:]
    assert values(statuses[-1])['capture_state'] == 'waiting_for_subscribers'
    assert 'waiting for 2 subscriber(s) of /audio' in statuses[-1].message

    heard = [[], []]
    node.create_subscription(AudioFrame, 'audio', heard[0].append, 100)
    # One listener is not enough: still waiting, nothing published.
    assert wait_until(lambda: values(statuses[-1])['audio_subscribers'] == '1', 30,
                      ros_node.spin), [values(s) for s in statuses[-2:]]
    statuses.clear()
    assert wait_until(lambda: len(statuses) >= 2, 30, ros_node.spin)
    assert values(statuses[-1])['frames_published'] == '0' and not heard[0]
    assert values(statuses[-1])['capture_state'] == 'waiting_for_subscribers'

    node.create_subscription(AudioFrame, 'audio', heard[1].append, 100)
    chunks = samples.size // 1600
    assert wait_until(lambda: min(map(len, heard)) >= chunks, 30, ros_node.spin), \
        ([len(h) for h in heard], proc.output()[-3000:])
    expected = np.round(samples * 32767) / 32767
    for frames in heard:
        got = np.concatenate([conversions.audio_frame_to_samples(f).reshape(-1)
                              for f in frames])
        assert got.size == samples.size
        np.testing.assert_allclose(got, expected, atol=2 / 32767)
    assert proc.alive()


def test_wav_without_waiting_plays_at_once(start_node, ros_node, tmp_path):
    """wav_wait_for_subscribers 0: the file plays with nobody listening (counted as
    published), as before the option existed."""
    wav = _tone_wav(tmp_path / 'tone.wav')
    proc = start_node('microphone_node', *params('source:=wav', f'wav_path:={wav}',
                                                 'wav_wait_for_subscribers:=0'))
    _, statuses = _watch(ros_node)
    assert wait_until(lambda: statuses and values(statuses[-1])['frames_published'] == '10',
                      60, ros_node.spin), ([values(s) for s in statuses[-2:]],
                                           proc.output()[-3000:])
    assert values(statuses[-1])['audio_subscribers'] == '0'

"""audio_node accepts audio_common_msgs input (built here from test/fixtures, since the
community package is not on PyPI) chosen by parameter."""

import time

import numpy as np
import pytest
from emotion_ros_msgs.msg import AudioCues

from conftest import wait_until
from emotion_ros.audio.pcm import encode_pcm, read_wav
from emotion_ros.ros import conversions
from rosgraph import espeak_wav, params

audio_common_msgs = pytest.importorskip('audio_common_msgs.msg')


@pytest.mark.parametrize('msg_type', ['audio_common', 'audio_common_stamped'])
def test_audio_common_input_gives_cues(start_node, ros_node, tmp_path, msg_type):
    """A call for help sent as audio_common AudioData(Stamped) is heard by audio_node."""
    wav = espeak_wav(tmp_path / 'help.wav', 'Help! Somebody help me!', silence_s=1.5)
    speech, rate = read_wav(wav)
    proc = start_node('audio_node', *params(f'audio_msg_type:={msg_type}',
                                            'audio_common_sample_rate:=16000'))
    node = ros_node('audio_common_driver')
    cues = []
    node.create_subscription(AudioCues, 'audio_cues', cues.append, 50)
    cls = (audio_common_msgs.AudioData if msg_type == 'audio_common'
           else audio_common_msgs.AudioDataStamped)
    pub = node.create_publisher(cls, 'audio', 50)
    assert wait_until(lambda: pub.get_subscription_count() > 0, 60, ros_node.spin)
    samples = np.concatenate([np.zeros(rate, np.float32), speech.reshape(-1)])
    start = time.time()
    for i in range(0, len(samples), 1600):
        data = encode_pcm(samples[i:i + 1600], 'S16LE')
        if msg_type == 'audio_common':
            msg = cls(data=data)
        else:
            msg = cls(header=conversions.make_header(start + i / rate, 'mic'),
                      audio=audio_common_msgs.AudioData(data=data))
        pub.publish(msg)
        due = time.monotonic() + 0.1  # real time, like a microphone driver
        while time.monotonic() < due:
            ros_node.spin(0.02)
    assert wait_until(lambda: any(c.help_detected for c in cues), 15, ros_node.spin), \
        proc.output()[-3000:]
    assert wait_until(lambda: len(cues) >= 4, 10, ros_node.spin), len(cues)

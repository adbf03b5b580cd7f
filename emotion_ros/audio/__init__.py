"""Audio core: PCM decoding, audio cues of distress and audio sources (no ROS).

Importing this package is cheap: torch (Silero VAD), faster-whisper/ctranslate2,
pocketsphinx, scipy and sounddevice are imported only when a model is loaded or a
source is opened.
"""

from emotion_ros.audio.cues import AudioCueConfig, AudioCueExtractor, scream_score, vocal_arousal
from emotion_ros.audio.pcm import SAMPLE_FORMATS, decode_pcm, encode_pcm, read_wav, write_wav
from emotion_ros.audio.sources import (AudioSource, SoundDeviceSource, WavFileSource,
                                       list_input_devices)

__all__ = [
    'SAMPLE_FORMATS',
    'AudioCueConfig',
    'AudioCueExtractor',
    'AudioSource',
    'SoundDeviceSource',
    'WavFileSource',
    'decode_pcm',
    'encode_pcm',
    'list_input_devices',
    'read_wav',
    'scream_score',
    'vocal_arousal',
    'write_wav',
]

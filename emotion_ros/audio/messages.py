"""Audio in and out of messages, once for the nodes and the bag evaluation (no ROS imports).

:class:`AudioDecoder` turns every audio message type the project accepts into
``(float32 mono samples, sample_rate, stamp)``. It works on the message's
fields, so the same code decodes rclpy messages (``audio_node``) and the
message objects of a rosbags type store (``emotion-ros evaluate``):

- ``emotion_ros_msgs/AudioFrame`` (header, rate, channels, format, bytes);
- ros-drivers' ``audio_common_msgs/AudioData`` (bytes only) and
  ``AudioDataStamped`` (header + AudioData): the format comes from an
  ``AudioInfo`` message (:func:`audio_info_format`) or the audio node's
  ``audio_common_*`` parameters (:class:`RawAudioFormat`);
- mgonzs13's ``audio_common_msgs/Audio`` and ``AudioStamped`` (typed sample
  arrays with their own format info).

:func:`transcript_of` builds the fusion's :class:`~emotion_ros.types.Transcript`
from a decoded utterance, as ``audio_node`` publishes it and the offline
pipeline fuses it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import numpy as np

from emotion_ros.audio.detectors import Transcript as DecodedUtterance
from emotion_ros.audio.pcm import check_rate_channels, decode_pcm
from emotion_ros.errors import InputError
from emotion_ros.types import Transcript

# PortAudio sample format codes used by mgonzs13's audio_common AudioInfo.format.
_PA_FORMATS = {1: ('float32_data', 1.0), 2: ('int32_data', 2.0 ** 31),
               8: ('int16_data', 32768.0), 16: ('int8_data', 128.0), 32: ('uint8_data', 128.0)}


@dataclasses.dataclass(frozen=True)
class RawAudioFormat:
    """Format of headerless audio (audio_common AudioData): from AudioInfo or parameters."""

    sample_rate: int = 16000
    channels: int = 1
    sample_format: str = 'S16LE'


def audio_info_format(msg: Any) -> RawAudioFormat:
    """Return the format an ``audio_common_msgs/AudioInfo`` (ros-drivers) announces.

    Raises:
        InputError: ``audio_format`` for compressed (e.g. mp3) or unknown formats.
    """
    coding = str(getattr(msg, 'coding_format', 'wave') or 'wave').lower()
    if coding not in ('wave', 'raw', 'pcm', ''):
        raise InputError(f'audio_common AudioInfo announces coding_format {coding!r}; only '
                         "uncompressed audio ('wave') can be evaluated", kind='audio_format')
    return RawAudioFormat(int(msg.sample_rate), int(msg.channels),
                          str(msg.sample_format).upper())


def header_seconds(header: Any) -> float:
    """Seconds of a message header's stamp (rclpy or rosbags message)."""
    return int(header.stamp.sec) + int(header.stamp.nanosec) * 1e-9


class AudioDecoder:
    """Turns audio messages of every supported type into ``(samples, sample_rate, stamp)``."""

    def __init__(self, raw_format: Optional[RawAudioFormat] = None) -> None:
        """``raw_format``: format of AudioData without its own info (default S16LE mono 16 kHz)."""
        self.raw_format = raw_format or RawAudioFormat()

    def decode(self, msg: Any, msgtype: str = '', arrival: float = 0.0
               ) -> Tuple[np.ndarray, int, float]:
        """Decode one message.

        Args:
            msg: the message (rclpy or rosbags); its type is told by its fields.
            msgtype: its type name, only for the error message.
            arrival: the receiver's time of the message (bag log time, node clock): the
                stamp of a message without a header or with a zero stamp.

        Raises:
            InputError: from ``decode_pcm`` (format, size, NaN), ``audio_format`` /
                ``audio_empty`` / ``audio_size`` / ``audio_nonfinite`` for typed
                arrays, or ``audio_type`` for a message that is not audio.
        """
        header = getattr(msg, 'header', None)
        stamp = self._stamp(header, arrival) if header is not None else arrival
        if hasattr(msg, 'sample_format') and hasattr(msg, 'sample_rate') and \
                hasattr(msg, 'data'):  # emotion_ros_msgs/AudioFrame
            samples = decode_pcm(msg.data, msg.sample_format, int(msg.channels),
                                 int(msg.sample_rate))
            return samples, int(msg.sample_rate), stamp
        body = getattr(msg, 'audio', msg)  # *Stamped wraps the payload in .audio
        if hasattr(body, 'data') and not hasattr(body, 'info'):
            fmt = self.raw_format
            samples = decode_pcm(body.data, fmt.sample_format, fmt.channels, fmt.sample_rate)
            return samples, fmt.sample_rate, stamp
        if hasattr(body, 'info') and hasattr(body, 'audio_data'):
            return (*self._decode_typed(body), stamp)
        name = msgtype or type(msg).__name__
        raise InputError(f'{name} is not an audio message this decoder knows (AudioFrame, '
                         'audio_common AudioData[Stamped] or Audio[Stamped])', kind='audio_type')

    @staticmethod
    def _stamp(header: Any, arrival: float) -> float:
        stamp = header_seconds(header)
        return stamp if stamp > 0 else arrival

    @staticmethod
    def _decode_typed(body: Any) -> Tuple[np.ndarray, int]:
        info = body.info
        rate, channels = int(info.rate), int(info.channels)
        check_rate_channels(rate, channels)
        code = int(info.format)
        if code not in _PA_FORMATS:
            raise InputError(f'audio_common Audio format {code} is not supported (known: '
                             f'{sorted(_PA_FORMATS)})', kind='audio_format')
        name, scale = _PA_FORMATS[code]
        data = np.asarray(getattr(body.audio_data, name))
        if data.size == 0:
            raise InputError(f'audio_common Audio message has an empty {name}',
                             kind='audio_empty')
        if data.size % channels:
            raise InputError(f'audio_common Audio: {data.size} samples is not a multiple of '
                             f'{channels} channels', kind='audio_size')
        values = data.astype(np.float64)
        if name == 'uint8_data':
            values = values - 128.0
        values = values / scale
        if not np.isfinite(values).all():
            raise InputError('audio_common Audio message holds NaN/inf samples',
                             kind='audio_nonfinite')
        mono = values.reshape(-1, channels).mean(axis=1)
        return np.clip(mono, -1.0, 1.0).astype(np.float32), rate


def transcript_of(heard: DecodedUtterance, frame_id: str = '') -> Transcript:
    """The fusion's Transcript of one decoded utterance (what audio_node publishes)."""
    return Transcript(stamp=heard.start, end=heard.end, frame_id=frame_id, text=heard.text,
                      help_detected=heard.help_detected, help_phrase=heard.help_phrase,
                      help_score=heard.help_score, language=heard.language,
                      confidence=heard.confidence, detector=heard.detector,
                      model_id=heard.model_id)


__all__ = ['AudioDecoder', 'RawAudioFormat', 'audio_info_format', 'header_seconds',
           'transcript_of']

"""Decode camera and microphone messages read from a bag into what the pipeline takes.

Works on the message objects of a rosbags type store (same field names as
the ROS messages), so it needs no ROS installation. Audio may be our
``emotion_ros_msgs/AudioFrame`` or one of the two ``audio_common_msgs``
families: ros-drivers' ``AudioData``/``AudioDataStamped`` (bytes; the format
comes from an ``AudioInfo`` topic in the bag or from the audio node's
``audio_common_*`` parameters) and mgonzs13's ``AudioStamped``/``Audio``
(typed arrays with their own format info).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import numpy as np

from emotion_ros.evaluation.bags import (AUDIO_FRAME_TYPE, COMPRESSED_IMAGE_TYPE, IMAGE_TYPE,
                                         stamp_seconds)
from emotion_ros.errors import InputError

# PortAudio sample format codes used by mgonzs13's audio_common AudioInfo.format.
_PA_FORMATS = {1: ('float32_data', 1.0), 2: ('int32_data', 2.0 ** 31),
               8: ('int16_data', 32768.0), 16: ('int8_data', 128.0), 32: ('uint8_data', 128.0)}


def decode_image_message(msg: Any, msgtype: str) -> np.ndarray:
    """RGB uint8 image of a ``sensor_msgs`` Image or CompressedImage.

    Raises:
        InputError: from the image codec (encoding, size, corrupt data), or
            ``image_type`` for another message type.
    """
    from emotion_ros.perception.image_codec import decode_compressed, decode_image
    if msgtype == IMAGE_TYPE:
        return decode_image(msg.encoding, int(msg.width), int(msg.height), int(msg.step),
                            msg.data, is_bigendian=bool(msg.is_bigendian))
    if msgtype == COMPRESSED_IMAGE_TYPE:
        return decode_compressed(msg.format, msg.data)
    raise InputError(f'{msgtype} is not an image type', kind='image_type')


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


class AudioDecoder:
    """Turns audio messages into ``(float32 mono samples, sample_rate, stamp)``."""

    def __init__(self, raw_format: Optional[RawAudioFormat] = None) -> None:
        """``raw_format``: format of AudioData without its own info (default S16LE mono 16 kHz)."""
        self.raw_format = raw_format or RawAudioFormat()

    def decode(self, msg: Any, msgtype: str, log_time: float) -> Tuple[np.ndarray, int, float]:
        """Decode one message; ``log_time`` is the stamp for messages without a header.

        Raises:
            InputError: from ``decode_pcm`` (format, size, NaN), or ``audio_type``
                for a message that is not audio.
        """
        from emotion_ros.audio.pcm import decode_pcm
        if msgtype == AUDIO_FRAME_TYPE:
            samples = decode_pcm(msg.data, msg.sample_format, int(msg.channels),
                                 int(msg.sample_rate))
            return samples, int(msg.sample_rate), self._stamp(msg.header, log_time)
        header = getattr(msg, 'header', None)
        stamp = self._stamp(header, log_time) if header is not None else log_time
        body = getattr(msg, 'audio', msg)  # *Stamped wraps the payload in .audio
        if hasattr(body, 'data') and not hasattr(body, 'info'):
            fmt = self.raw_format
            samples = decode_pcm(body.data, fmt.sample_format, fmt.channels, fmt.sample_rate)
            return samples, fmt.sample_rate, stamp
        if hasattr(body, 'info') and hasattr(body, 'audio_data'):
            return (*self._decode_typed(body), stamp)
        raise InputError(f'{msgtype} is not an audio message this evaluation can decode',
                         kind='audio_type')

    @staticmethod
    def _stamp(header: Any, log_time: float) -> float:
        stamp = stamp_seconds(header)
        return stamp if stamp > 0 else log_time

    @staticmethod
    def _decode_typed(body: Any) -> Tuple[np.ndarray, int]:
        from emotion_ros.audio.pcm import check_rate_channels
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

"""Raw PCM and WAV conversion: bytes of an ``AudioFrame`` <-> float32 samples.

Formats use the same strings as the ``AudioFrame.msg`` constants. Every
decoding problem raises :class:`~emotion_ros.errors.InputError` with a stable
``kind`` so the audio node can count it in its diagnostics and keep running.
"""

from __future__ import annotations

import array
import os
import struct
import wave
from typing import Any, Dict, Tuple, Union

import numpy as np

from emotion_ros.errors import InputError

SAMPLE_FORMATS = ('S16LE', 'S32LE', 'F32LE')

#: THE audio rate of this project (Hz): the models' input, the audio cues' analysis, the VAD,
#: keyword spotter and Whisper. Every other name for 16 kHz refers to this one.
SAMPLE_RATE = 16000

# Bytes per sample and little-endian numpy dtype of each format.
_DTYPES: Dict[str, np.dtype] = {
    'S16LE': np.dtype('<i2'),
    'S32LE': np.dtype('<i4'),
    'F32LE': np.dtype('<f4'),
}
# Integer formats are scaled so that the most negative code maps to -1.
_SCALES = {'S16LE': 32768.0, 'S32LE': 2147483648.0}

# Sanity limits: no microphone or file we support goes beyond these, so
# anything outside is a corrupt header or a wrong field, not real audio.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
MAX_CHANNELS = 64

PcmData = Union[bytes, bytearray, memoryview, 'array.array[int]', np.ndarray, list]


def check_rate_channels(sample_rate: Any, channels: Any) -> None:
    """Check a sample rate and channel count.

    Raises:
        InputError: kind ``'audio_rate'`` for a rate outside
            [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE], ``'audio_channels'`` for a
            channel count outside [1, MAX_CHANNELS].
    """
    if (isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer))
            or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE):
        raise InputError(f'audio sample rate {sample_rate!r} Hz is not an integer in '
                         f'[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]', kind='audio_rate')
    if (isinstance(channels, bool) or not isinstance(channels, (int, np.integer))
            or not 1 <= channels <= MAX_CHANNELS):
        raise InputError(f'audio channel count {channels!r} is not an integer in '
                         f'[1, {MAX_CHANNELS}]', kind='audio_channels')


def _as_bytes_view(data: PcmData) -> np.ndarray:
    """View any byte container (bytes, array('B'), uint8 array, list) as uint8."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise InputError(f'audio data must be bytes (uint8), got a {data.dtype} array',
                             kind='audio_format')
        return data.reshape(-1)
    if isinstance(data, (list, tuple)):
        # rclpy may hand over uint8[] as a list of ints when built from Python.
        try:
            return np.asarray(data, dtype=np.uint8)
        except (ValueError, OverflowError, TypeError) as exc:
            raise InputError(f'audio data is not a byte sequence: {exc}',
                             kind='audio_format') from exc
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError as exc:
        raise InputError(f'audio data of type {type(data).__name__} is not a byte buffer',
                         kind='audio_format') from exc


def decode_pcm(data: PcmData, sample_format: str, channels: int,
               sample_rate: int) -> np.ndarray:
    """Decode interleaved little-endian PCM into float32 mono samples in [-1, 1].

    Channels are averaged. The rate is only validated here (the caller keeps
    it to interpret the samples).

    Args:
        data: the raw bytes (``bytes``, ``array('B')``, a uint8 array, ...).
        sample_format: one of :data:`SAMPLE_FORMATS`.
        channels: interleaved channel count.
        sample_rate: frames per second.

    Raises:
        InputError: kind ``'audio_format'`` (unknown format, listing the known
            ones), ``'audio_empty'``, ``'audio_size'`` (length not a multiple
            of the frame size, naming both), ``'audio_nonfinite'`` (NaN/inf in
            F32LE), ``'audio_rate'`` or ``'audio_channels'``.
    """
    if sample_format not in _DTYPES:
        raise InputError(f'unknown audio sample format {sample_format!r}; '
                         f'known: {list(SAMPLE_FORMATS)}', kind='audio_format')
    check_rate_channels(sample_rate, channels)
    raw = _as_bytes_view(data)
    if raw.size == 0:
        raise InputError('audio frame has no data', kind='audio_empty')
    dtype = _DTYPES[sample_format]
    frame_bytes = dtype.itemsize * int(channels)
    if raw.size % frame_bytes:
        raise InputError(f'audio data of {raw.size} bytes is not a multiple of the frame size '
                         f'{frame_bytes} bytes ({channels} channel(s) x {sample_format})',
                         kind='audio_size')
    # Copy so that the decoded samples never alias a message buffer.
    values = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(-1, int(channels))
    if sample_format == 'F32LE':
        samples = values.astype(np.float32)
        if not np.isfinite(samples).all():
            bad = int(np.count_nonzero(~np.isfinite(samples)))
            raise InputError(f'audio data holds {bad} NaN/inf sample(s)', kind='audio_nonfinite')
    else:
        samples = (values.astype(np.float64) / _SCALES[sample_format]).astype(np.float32)
    mono = samples.mean(axis=1, dtype=np.float64) if channels > 1 else samples[:, 0]
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def encode_pcm(samples: np.ndarray, sample_format: str) -> bytes:
    """Encode float samples in [-1, 1] as interleaved little-endian PCM.

    Args:
        samples: shape ``(n,)`` (mono) or ``(n, channels)``; values beyond
            [-1, 1] are clipped.
        sample_format: one of :data:`SAMPLE_FORMATS`.

    Raises:
        InputError: for an unknown format (``'audio_format'``), a wrong shape
            (``'audio_shape'``) or NaN/inf samples (``'audio_nonfinite'``).
    """
    if sample_format not in _DTYPES:
        raise InputError(f'unknown audio sample format {sample_format!r}; '
                         f'known: {list(SAMPLE_FORMATS)}', kind='audio_format')
    x = np.asarray(samples)
    if x.ndim not in (1, 2) or not np.issubdtype(x.dtype, np.number):
        raise InputError(f'audio samples must be a numeric (n,) or (n, channels) array, '
                         f'got shape {x.shape} of {x.dtype}', kind='audio_shape')
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise InputError('audio samples hold NaN/inf', kind='audio_nonfinite')
    x = np.clip(x, -1.0, 1.0)
    if sample_format == 'F32LE':
        return x.astype('<f4').tobytes()
    scale = _SCALES[sample_format]
    info = np.iinfo(_DTYPES[sample_format])
    # Round to the nearest code; +1.0 maps one code below full scale.
    codes = np.clip(np.round(x * scale), info.min, info.max)
    return codes.astype(_DTYPES[sample_format]).tobytes()


def read_wav(path: Union[str, os.PathLike]) -> Tuple[np.ndarray, int]:
    """Read a WAV file (8/16/24/32-bit integer or 32/64-bit float PCM).

    Returns:
        ``(samples, rate)``: float32 samples of shape ``(n, channels)`` in
        [-1, 1] and the sample rate in Hz.

    Raises:
        InputError: kind ``'audio_file'`` for a missing, truncated or
            unsupported file, ``'audio_empty'`` for a file without samples,
            ``'audio_nonfinite'`` for NaN/inf in a float file, or
            ``'audio_rate'``/``'audio_channels'`` for absurd header values.
    """
    import warnings

    from scipy.io import wavfile  # lazy: scipy is slow to import

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f'WAV file {path!r} does not exist', kind='audio_file')
    try:
        with warnings.catch_warnings(record=True) as caught:
            # scipy only warns when the file ends before the size its header
            # declares, and returns what it got: a truncated file we reject.
            warnings.simplefilter('always', wavfile.WavFileWarning)
            rate, data = wavfile.read(path, mmap=False)
    except (ValueError, EOFError, OSError, TypeError, IndexError, struct.error) as exc:
        raise InputError(f'cannot read WAV file {path!r}: {exc}', kind='audio_file') from exc
    for warning in caught:
        text = str(warning.message)
        if 'prematurely' in text or 'Incomplete' in text:
            raise InputError(f'WAV file {path!r} is truncated: {text}', kind='audio_file')
    data = np.asarray(data)
    if data.ndim == 1:
        data = data[:, None]
    check_rate_channels(int(rate), int(data.shape[1]))
    if data.shape[0] == 0:
        raise InputError(f'WAV file {path!r} holds no samples', kind='audio_empty')
    if data.dtype == np.uint8:
        out = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype == np.int16:
        out = data.astype(np.float32) / 32768.0
    elif data.dtype == np.int32:  # 32-bit, and 24-bit left-justified by scipy
        out = (data.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif data.dtype in (np.float32, np.float64):
        out = data.astype(np.float32)
        if not np.isfinite(out).all():
            raise InputError(f'WAV file {path!r} holds NaN/inf samples', kind='audio_nonfinite')
        out = np.clip(out, -1.0, 1.0)
    else:
        raise InputError(f'WAV file {path!r} has unsupported sample type {data.dtype}',
                         kind='audio_file')
    return np.ascontiguousarray(out, dtype=np.float32), int(rate)


def write_wav(path: Union[str, os.PathLike], samples: np.ndarray, rate: int) -> None:
    """Write float samples in [-1, 1] as a 16-bit PCM WAV file.

    Args:
        path: output file.
        samples: shape ``(n,)`` or ``(n, channels)``.
        rate: sample rate in Hz.

    Raises:
        InputError: for a bad shape, NaN/inf samples or an absurd rate.
    """
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise InputError(f'audio samples must be (n,) or (n, channels), got shape {x.shape}',
                         kind='audio_shape')
    check_rate_channels(int(rate) if float(rate).is_integer() else rate, int(x.shape[1]))
    payload = encode_pcm(x, 'S16LE')
    with wave.open(os.fspath(path), 'wb') as out:
        out.setnchannels(int(x.shape[1]))
        out.setsampwidth(2)
        out.setframerate(int(rate))
        out.writeframes(payload)

"""PCM/WAV conversion and the streaming resampler of emotion_ros.audio."""

import array
import math
import struct
import wave

import numpy as np
import pytest

from emotion_ros.audio.features import StreamResampler, resample
from emotion_ros.audio.pcm import (SAMPLE_FORMATS, decode_pcm, encode_pcm, read_wav,
                                   write_wav)
from emotion_ros.errors import InputError

LSB = {'S16LE': 1 / 32768, 'S32LE': 1 / 2 ** 31, 'F32LE': 1e-7}


def _signal(frames, channels, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(frames, channels)).astype(np.float32)


@pytest.mark.parametrize('fmt', SAMPLE_FORMATS)
@pytest.mark.parametrize('channels', [1, 2, 6])
@pytest.mark.parametrize('frames', [1, 7, 1000])
def test_round_trip_over_formats_channels_and_sizes(fmt, channels, frames):
    """encode_pcm then decode_pcm gives the channel mean back within one quantization step."""
    x = _signal(frames, channels, seed=frames * channels)
    data = encode_pcm(x, fmt)
    assert len(data) == frames * channels * {'S16LE': 2, 'S32LE': 4, 'F32LE': 4}[fmt]
    y = decode_pcm(data, fmt, channels, 16000)
    assert y.dtype == np.float32 and y.shape == (frames,)
    assert np.abs(y - x.mean(axis=1)).max() <= LSB[fmt] + 1e-6


def test_decode_known_codes_and_channel_average():
    """Known little-endian codes decode to the documented values; channels are averaged."""
    s16 = struct.pack('<4h', -32768, 32767, 16384, -16384)
    np.testing.assert_allclose(decode_pcm(s16, 'S16LE', 1, 8000),
                               [-1.0, 32767 / 32768, 0.5, -0.5])
    s32 = struct.pack('<2i', -2 ** 31, 2 ** 30)
    np.testing.assert_allclose(decode_pcm(s32, 'S32LE', 1, 8000), [-1.0, 0.5])
    stereo = struct.pack('<4f', 0.5, -0.5, 1.0, 0.0)
    np.testing.assert_allclose(decode_pcm(stereo, 'F32LE', 2, 48000), [0.0, 0.5])
    # Float data beyond full scale is clipped to [-1, 1].
    np.testing.assert_allclose(decode_pcm(struct.pack('<2f', 3.0, -2.0), 'F32LE', 1, 8000),
                               [1.0, -1.0])


@pytest.mark.parametrize('container', [bytes, bytearray, memoryview,
                                       lambda b: array.array('B', b), list,
                                       lambda b: np.frombuffer(b, np.uint8)])
def test_decode_accepts_the_byte_containers_rclpy_hands_over(container):
    """bytes, bytearray, memoryview, array('B'), list of ints and uint8 arrays all decode."""
    raw = struct.pack('<3h', 0, 16384, -32768)
    np.testing.assert_allclose(decode_pcm(container(raw), 'S16LE', 1, 16000), [0, 0.5, -1])


@pytest.mark.parametrize('args,kind,words', [
    ((b'\x00\x00', 'U8', 1, 16000), 'audio_format', ['U8', 'S16LE', 'F32LE']),
    ((b'', 'S16LE', 1, 16000), 'audio_empty', ['no data']),
    ((b'\x01\x02\x03', 'S16LE', 1, 16000), 'audio_size', ['3 bytes', '2 bytes']),
    ((b'\x00' * 6, 'S16LE', 2, 16000), 'audio_size', ['6 bytes', '4 bytes']),
    ((struct.pack('<2f', 0.1, math.nan), 'F32LE', 1, 16000), 'audio_nonfinite', ['NaN']),
    ((struct.pack('<2f', math.inf, 0.1), 'F32LE', 1, 16000), 'audio_nonfinite', ['1 NaN']),
    ((b'\x00\x00', 'S16LE', 1, 0), 'audio_rate', ['0']),
    ((b'\x00\x00', 'S16LE', 1, -16000), 'audio_rate', ['-16000']),
    ((b'\x00\x00', 'S16LE', 1, 10 ** 7), 'audio_rate', ['10000000']),
    ((b'\x00\x00', 'S16LE', 1, 16000.5), 'audio_rate', ['16000.5']),
    ((b'\x00\x00', 'S16LE', 0, 16000), 'audio_channels', ['0']),
    ((b'\x00\x00', 'S16LE', 1000, 16000), 'audio_channels', ['1000']),
    ((np.zeros(4, np.float32), 'S16LE', 1, 16000), 'audio_format', ['float32']),
])
def test_decode_rejects_bad_input_with_a_kind_and_a_clear_message(args, kind, words):
    """Each kind of malformed frame raises InputError with its kind and the offending values."""
    with pytest.raises(InputError) as info:
        decode_pcm(*args)
    assert info.value.kind == kind
    for word in words:
        assert word in str(info.value)


def test_encode_rejects_nan_unknown_format_and_bad_shape():
    """encode_pcm refuses NaN, unknown formats and arrays that are not (n,) or (n, ch)."""
    with pytest.raises(InputError) as info:
        encode_pcm(np.array([0.0, np.nan]), 'S16LE')
    assert info.value.kind == 'audio_nonfinite'
    with pytest.raises(InputError) as info:
        encode_pcm(np.zeros(3), 'S24LE')
    assert info.value.kind == 'audio_format'
    with pytest.raises(InputError) as info:
        encode_pcm(np.zeros((2, 2, 2)), 'S16LE')
    assert info.value.kind == 'audio_shape'


@pytest.mark.parametrize('channels', [1, 2])
def test_wav_round_trip(tmp_path, channels):
    """write_wav then read_wav keeps rate, channel count and samples (16-bit precision)."""
    x = _signal(4410, channels) * 0.9
    path = tmp_path / 'x.wav'
    write_wav(path, x if channels > 1 else x[:, 0], 44100)
    y, rate = read_wav(path)
    assert rate == 44100 and y.shape == (4410, channels) and y.dtype == np.float32
    assert np.abs(y - x).max() <= 1 / 32768 + 1e-7
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == channels


def test_read_wav_8_24_bit_and_float_files(tmp_path):
    """8-bit, 24-bit and 32-bit float WAV files read to the same [-1, 1] scale."""
    from scipy.io import wavfile
    values = np.array([0.0, 0.5, -0.5, -1.0])
    wavfile.write(tmp_path / 'u8.wav', 8000, (values * 128 + 128).clip(0, 255).astype(np.uint8))
    wavfile.write(tmp_path / 'f32.wav', 8000, values.astype(np.float32))
    with wave.open(str(tmp_path / 's24.wav'), 'wb') as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(8000)
        w.writeframes(b''.join(int(v * 2 ** 23).to_bytes(4, 'little', signed=True)[:3]
                               if v > -1 else (-2 ** 23).to_bytes(4, 'little', signed=True)[:3]
                               for v in values))
    for name in ('u8.wav', 'f32.wav', 's24.wav'):
        y, rate = read_wav(tmp_path / name)
        assert rate == 8000
        np.testing.assert_allclose(y[:, 0], values, atol=1 / 128, err_msg=name)


def test_read_wav_rejects_missing_corrupt_truncated_empty_and_nan_files(tmp_path):
    """Bad WAV files raise InputError with a kind naming the problem and the file."""
    with pytest.raises(InputError) as info:
        read_wav(tmp_path / 'missing.wav')
    assert info.value.kind == 'audio_file' and 'missing.wav' in str(info.value)

    (tmp_path / 'garbage.wav').write_bytes(b'this is not a wave file at all' * 10)
    with pytest.raises(InputError) as info:
        read_wav(tmp_path / 'garbage.wav')
    assert info.value.kind == 'audio_file'

    write_wav(tmp_path / 'good.wav', np.zeros(1000), 16000)
    data = (tmp_path / 'good.wav').read_bytes()
    for cut in (30, len(data) - 101):  # inside the header, inside the samples
        (tmp_path / 'truncated.wav').write_bytes(data[:cut])
        with pytest.raises(InputError) as info:
            read_wav(tmp_path / 'truncated.wav')
        assert info.value.kind == 'audio_file'
    assert read_wav(tmp_path / 'good.wav')[0].shape == (1000, 1)

    write_wav(tmp_path / 'empty.wav', np.zeros(0), 16000)
    with pytest.raises(InputError) as info:
        read_wav(tmp_path / 'empty.wav')
    assert info.value.kind == 'audio_empty'

    from scipy.io import wavfile
    wavfile.write(tmp_path / 'nan.wav', 16000, np.array([0.0, np.nan], np.float32))
    with pytest.raises(InputError) as info:
        read_wav(tmp_path / 'nan.wav')
    assert info.value.kind == 'audio_nonfinite'


@pytest.mark.parametrize('rate', [8000, 22050, 44100, 48000, 44101])
def test_resampler_is_accurate_and_independent_of_chunking(rate):
    """Resampling to 16 kHz reproduces a two-tone signal and gives bit-identical output for
    any chunking."""
    t = np.arange(int(rate * 1.0)) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)).astype(
        np.float32)
    whole = resample(x, rate, 16000)
    assert whole.size == 16000
    tt = np.arange(whole.size) / 16000
    ref = 0.5 * np.sin(2 * np.pi * 440 * tt) + 0.2 * np.sin(2 * np.pi * 3000 * tt)
    assert np.abs(whole[100:-100] - ref[100:-100]).max() < 1e-3
    rng = np.random.default_rng(rate)
    r = StreamResampler(rate, 16000)
    parts, i = [], 0
    while i < x.size:
        n = int(rng.integers(1, 2500))
        parts.append(r.process(x[i:i + n]))
        i += n
    parts.append(r.flush())
    chunked = np.concatenate(parts)[:whole.size]
    assert np.array_equal(chunked, whole)


def test_resampler_removes_content_above_the_new_nyquist():
    """A 9 kHz tone resampled from 48 kHz to 16 kHz is suppressed instead of aliasing to 7 kHz."""
    t = np.arange(48000) / 48000
    y = resample(np.sin(2 * np.pi * 9000 * t).astype(np.float32), 48000, 16000)
    assert np.sqrt(np.mean(y[200:-200] ** 2)) < 0.01

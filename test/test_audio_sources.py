"""Audio sources: WAV file played as a microphone, and the sound card source's errors."""

import importlib.abc
import sys
import threading
import time

import numpy as np
import pytest

from emotion_ros.audio.cues import AudioCueConfig, AudioCueExtractor
from emotion_ros.audio.pcm import write_wav
from emotion_ros.audio.sources import (SoundDeviceSource, WavFileSource,
                                       list_input_devices)
from emotion_ros.errors import ConfigError, InputError, ModelLoadError


class Collector:
    """Callback that records chunks, stamps and arrival times."""

    def __init__(self, delay=0.0):
        self.chunks, self.stamps, self.arrivals = [], [], []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, samples, stamp):
        with self.lock:
            self.chunks.append(samples)
            self.stamps.append(stamp)
            self.arrivals.append(time.monotonic())
        if self.delay:
            time.sleep(self.delay)


@pytest.fixture
def stereo_wav(tmp_path):
    """A 0.5 s stereo WAV at 16 kHz with different content per channel."""
    t = np.arange(8000) / 16000
    samples = np.stack([0.5 * np.sin(2 * np.pi * 300 * t), np.linspace(-0.5, 0.5, t.size)], 1)
    path = tmp_path / 'stereo.wav'
    write_wav(path, samples, 16000)
    return path, samples


def test_wav_source_delivers_the_whole_file_with_consistent_stamps(stereo_wav):
    """Offline playback hands over every frame in order, (n, ch) float32, stamped by position."""
    path, samples = stereo_wav
    source = WavFileSource(path, chunk_frames=1000, realtime=False, clock=lambda: 50.0)
    assert source.sample_rate == 16000 and source.channels == 2
    got = Collector()
    source.start(got)
    assert source.wait(10.0)
    source.stop()
    assert [c.shape for c in got.chunks] == [(1000, 2)] * 8
    assert all(c.dtype == np.float32 for c in got.chunks)
    np.testing.assert_allclose(np.concatenate(got.chunks), samples, atol=1 / 32768 + 1e-7)
    np.testing.assert_allclose(got.stamps, [50.0 + i * 1000 / 16000 for i in range(8)])
    assert source.dropped == 0 and not source.running


def test_wav_source_paces_chunks_in_real_time(stereo_wav):
    """Real-time playback of 0.5 s takes about 0.5 s, each chunk after its audio 'was recorded'."""
    path, _ = stereo_wav
    source = WavFileSource(path, chunk_frames=1600)  # 100 ms chunks, last one 0 frames short
    got = Collector()
    start = time.monotonic()
    source.start(got)
    assert source.wait(5.0)
    elapsed = time.monotonic() - start
    source.stop()
    assert len(got.chunks) == 5
    assert 0.45 <= elapsed < 2.0, elapsed
    for i, arrival in enumerate(got.arrivals):
        assert arrival - start >= (i + 1) * 0.1 - 0.02
    # Stamps are the capture times of each chunk's first sample on the clock.
    assert np.allclose(np.diff(got.stamps), 0.1)


def test_wav_source_loops_and_stops(stereo_wav):
    """A looping source wraps around the file and stops promptly (twice is fine)."""
    path, samples = stereo_wav
    source = WavFileSource(path, chunk_frames=3000, loop=True, realtime=False)
    got = Collector()
    source.start(got)
    deadline = time.monotonic() + 5
    while len(got.chunks) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()
    source.stop()
    assert not source.running and len(got.chunks) >= 6
    # Chunks never cross the file end: 3000, 3000, 2000, then from the start again.
    assert [c.shape[0] for c in got.chunks[:6]] == [3000, 3000, 2000, 3000, 3000, 2000]
    np.testing.assert_allclose(got.chunks[3], samples[:3000], atol=1 / 32768 + 1e-7)
    sizes = np.array([3000, 3000, 2000, 3000, 3000]) / 16000
    assert np.allclose(np.diff(got.stamps[:6]), sizes)
    assert not source.finished.is_set()


def test_wav_source_resamples_on_request(tmp_path):
    """resample_to delivers the file at the requested rate with the same duration."""
    t = np.arange(22050) / 22050
    write_wav(tmp_path / 'a.wav', 0.3 * np.sin(2 * np.pi * 440 * t), 22050)
    source = WavFileSource(tmp_path / 'a.wav', chunk_frames=1600, realtime=False,
                           resample_to=16000)
    assert source.sample_rate == 16000 and source.channels == 1
    got = Collector()
    source.start(got)
    assert source.wait(10.0)
    source.stop()
    audio = np.concatenate(got.chunks)[:, 0]
    assert audio.size == 16000
    tt = np.arange(16000) / 16000
    assert np.abs(audio[50:-50] - 0.3 * np.sin(2 * np.pi * 440 * tt[50:-50])).max() < 2e-3


def test_wav_source_rejects_bad_files_and_settings(tmp_path):
    """Missing or corrupt files raise InputError; a bad chunk size or rate raises ConfigError."""
    with pytest.raises(InputError):
        WavFileSource(tmp_path / 'nope.wav', chunk_frames=100)
    (tmp_path / 'bad.wav').write_bytes(b'RIFF\x00\x00')
    with pytest.raises(InputError):
        WavFileSource(tmp_path / 'bad.wav', chunk_frames=100)
    write_wav(tmp_path / 'ok.wav', np.zeros(100), 16000)
    with pytest.raises(ConfigError, match='chunk_frames'):
        WavFileSource(tmp_path / 'ok.wav', chunk_frames=0)
    with pytest.raises(ConfigError, match='resample_to'):
        WavFileSource(tmp_path / 'ok.wav', chunk_frames=10, resample_to=-5)


def test_slow_consumer_drops_oldest_chunks_and_counts_them(tmp_path):
    """In real time a consumer slower than the audio loses old chunks, counted in dropped."""
    write_wav(tmp_path / 'long.wav', np.zeros(16000), 16000)
    source = WavFileSource(tmp_path / 'long.wav', chunk_frames=80)  # 200 chunks of 5 ms
    got = Collector(delay=0.05)
    source.start(got)
    assert source.wait(15.0)
    source.stop()
    assert source.dropped > 0
    assert len(got.chunks) + source.dropped == 200


def test_callback_error_is_kept_not_swallowed(stereo_wav):
    """An exception in the consumer stops delivery and is kept in source.error."""
    path, _ = stereo_wav

    def broken(samples, stamp):
        raise RuntimeError('consumer bug')
    source = WavFileSource(path, chunk_frames=1000, realtime=False)
    source.start(broken)
    deadline = time.monotonic() + 5
    while source.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()
    assert isinstance(source.error, RuntimeError) and 'consumer bug' in str(source.error)


def test_wav_source_feeds_the_cue_extractor_like_a_microphone(tmp_path):
    """Cues computed from the source's chunks equal those of the whole file pushed at once."""
    t = np.arange(3 * 22050) / 22050
    tone = 0.3 * np.sin(2 * np.pi * 250 * t) * (t > 1.0)
    write_wav(tmp_path / 'tone.wav', tone, 22050)
    cfg = AudioCueConfig(vad_backend='energy', keyword_spotting=False)
    live = AudioCueExtractor(cfg)
    live.load()
    results = []
    source = WavFileSource(tmp_path / 'tone.wav', chunk_frames=1024, realtime=False,
                           clock=lambda: 7.0)
    source.start(lambda samples, stamp: results.extend(live.push(samples[:, 0], 22050, stamp)))
    assert source.wait(10.0)
    source.stop()
    whole = AudioCueExtractor(cfg)
    whole.load()
    expected = whole.push(source.samples[:, 0], 22050, 7.0)
    # 3 s of audio: windows end at 1.5, 2.0 and 2.5 s; the one ending at 3.0 s
    # needs the resampler's few samples of look-ahead beyond the file.
    assert len(results) == len(expected) == 3
    assert [repr(vars(r)) for r in results] == [repr(vars(e)) for e in expected]
    assert results[-1].pitch_hz == pytest.approx(250, rel=0.02)


def test_missing_sound_device_lists_the_available_ones():
    """A device that does not exist gives a ConfigError naming it and listing what exists."""
    devices = list_input_devices()
    assert all(isinstance(d, str) for d in devices)
    with pytest.raises(ConfigError) as info:
        SoundDeviceSource('no-such-microphone-xyz', 16000, 1, 1600)
    text = str(info.value)
    assert 'no-such-microphone-xyz' in text and 'available input devices' in text
    if not devices:
        assert 'none found' in text
        with pytest.raises(ConfigError, match='default input device'):
            SoundDeviceSource(None, 16000, 1, 1600)
    with pytest.raises(ConfigError, match='chunk_frames'):
        SoundDeviceSource(None, 16000, 1, 0)
    with pytest.raises(ConfigError, match='sample rate'):
        SoundDeviceSource(None, 0, 1, 1600)


class _NoPortAudio(importlib.abc.MetaPathFinder):
    """Import hook that fails like sounddevice does when libportaudio is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == 'sounddevice':
            raise OSError('PortAudio library not found')
        return None


def test_missing_portaudio_is_a_clear_load_error(monkeypatch):
    """Without the PortAudio library the source and the device list raise ModelLoadError
    telling how to install it."""
    monkeypatch.delitem(sys.modules, 'sounddevice', raising=False)
    monkeypatch.setattr(sys, 'meta_path', [_NoPortAudio()] + sys.meta_path)
    with pytest.raises(ModelLoadError, match='libportaudio2'):
        SoundDeviceSource(None, 16000, 1, 1600)
    with pytest.raises(ModelLoadError, match='PortAudio'):
        list_input_devices()

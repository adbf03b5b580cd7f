"""Audio sources: WAV file played as a microphone, and the sound card source's errors."""

import importlib.abc
import sys
import threading
import time

import numpy as np
import pytest

from emotion_ros.audio.cues import AudioCueConfig, AudioCueExtractor
from emotion_ros.audio.pcm import write_wav
from emotion_ros.audio.sources import (AudioSource, list_input_devices, SoundDeviceSource,
                                       SourceSupervisor, WavFileSource)
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
    assert source.wait(30.0)
    elapsed = time.monotonic() - start
    source.stop()
    assert len(got.chunks) == 5
    # Never faster than real time; how much slower depends on the machine's load.
    assert 0.45 <= elapsed, elapsed
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


# ---------------------------------------------------------------- supervision and restarts
class FakeClock:
    """A clock the test advances by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FlakyHardware(AudioSource):
    """Fake capture hardware behind the AudioSource interface: a producer thread that hands
    over ``chunks_before_failure`` chunks, then raises (like a driver losing its device)."""

    def __init__(self, chunks_before_failure=None, error=OSError('USB microphone vanished')):
        super().__init__()
        self.sample_rate, self.channels = 16000, 1
        self.chunks_before_failure = chunks_before_failure
        self.failure = error
        self._stop = threading.Event()
        self._producer = None

    def start(self, callback):
        self._stop.clear()
        self._start_worker(callback)
        self._producer = threading.Thread(target=self._run, daemon=True)
        self._producer.start()

    def _run(self):
        sent = 0
        while not self._stop.wait(0.002):
            if self.chunks_before_failure is not None and sent >= self.chunks_before_failure:
                self.error = self.failure
                self._queue.put(None)  # the delivery thread ends, as in a real failure
                return
            self._enqueue(np.full((160, 1), sent, np.float32), time.time())
            sent += 1

    def stop(self):
        self._stop.set()
        if self._producer is not None:
            self._producer.join(2)
        self._stop_worker()


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_supervisor_reports_a_dead_worker_and_restarts_with_backoff():
    """A source that dies is stopped, reported with its error, and replaced after a backoff
    that doubles per consecutive failure (0.5, 1, 2, 4 ... capped at 30 s) and resets once a
    source has run stably; chunks flow again after every restart."""
    clock = FakeClock()
    built, failures, got = [], [], []
    plan = [3, 3, 3, 3, 3, 3, 3, 3, None, 2, None]  # chunks before each source fails

    def factory():
        source = FlakyHardware(plan[len(built)])
        built.append(source)
        return source
    sup = SourceSupervisor(factory, lambda s, t, src: got.append((src, s)),
                           on_failure=failures.append, stable_s=30.0, clock=clock)
    sup.start()
    expected_backoff = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    for i, backoff in enumerate(expected_backoff):
        assert _wait(lambda: built[i].failed)
        sup.poll()
        assert sup.state == 'restarting' and sup.retry_in_s == backoff
        assert str(failures[-1]) == 'USB microphone vanished' and len(failures) == i + 1
        assert 'OSError: USB microphone vanished' in sup.last_error
        clock.now += backoff - 0.01
        sup.poll()
        assert len(built) == i + 1, 'restarted before the backoff passed'
        clock.now += 0.02
        sup.poll()
        assert len(built) == i + 2 and sup.state == 'capturing' and sup.restarts == i + 1
    # The 9th source keeps running; after stable_s the backoff starts from 0.5 s again.
    assert _wait(lambda: sum(1 for src, _ in got if src is built[-1]) >= 5)
    clock.now += 30.0
    sup.poll()
    assert sup.state == 'capturing'
    built[-1].chunks_before_failure = 0  # now it fails
    assert _wait(lambda: built[-1].failed)
    sup.poll()
    assert sup.retry_in_s == 0.5 and sup.failures == 9
    sup.stop()
    assert sup.state == 'stopped'
    assert all(not src.running for src in built)


def test_supervisor_retries_a_source_that_cannot_be_rebuilt():
    """When building the replacement fails (device still gone), that is counted as a failure
    and retried with a longer backoff; the running source of replace() survives a factory
    that raises."""
    clock = FakeClock()
    attempts = []

    def factory():
        attempts.append(clock.now)
        if len(attempts) in (2, 3):
            raise ConfigError('microphone: input device 2 is not available')
        return FlakyHardware(2 if len(attempts) == 1 else None)
    failures = []
    sup = SourceSupervisor(factory, lambda s, t, src: None, on_failure=failures.append,
                           clock=clock)
    sup.start()
    assert _wait(lambda: sup.source.failed)
    sup.poll()
    for backoff in (0.5, 1.0):
        clock.now += backoff
        sup.poll()
        assert sup.state == 'restarting' and 'not available' in sup.last_error
    assert sup.retry_in_s == 2.0
    clock.now += 2.0
    sup.poll()
    assert sup.state == 'capturing' and sup.failures == 3 and sup.restarts == 1
    running = sup.source

    def broken():
        raise ConfigError('no such device')
    with pytest.raises(ConfigError):
        sup.replace(broken)
    assert sup.source is running and running.running
    sup.stop()


def test_supervisor_restarts_a_wav_source_whose_consumer_raised(stereo_wav):
    """The real WAV source: a consumer exception ends its delivery thread; the supervisor
    sees the failure, reports the consumer's error and a new source delivers again."""
    path, _ = stereo_wav
    calls = []

    def consumer(samples, stamp, source):
        calls.append(source)
        if len(calls) == 2:
            raise RuntimeError('publisher gone')
    clock = FakeClock()
    failures = []
    sup = SourceSupervisor(lambda: WavFileSource(path, chunk_frames=400, loop=True),
                           consumer, on_failure=failures.append, clock=clock)
    first = sup.start()
    assert _wait(lambda: first.failed)
    sup.poll()
    assert isinstance(failures[0], RuntimeError) and 'publisher gone' in str(failures[0])
    clock.now += 0.5
    sup.poll()
    assert sup.source is not first
    count = len(calls)
    assert _wait(lambda: len(calls) >= count + 3)
    assert calls[-1] is sup.source
    sup.stop()


class FakeSoundDevice:
    """Fake PortAudio behind the sounddevice API: one input device; streams call back from a
    thread and can be 'unplugged' (the stream ends and calls finished_callback)."""

    class PortAudioError(Exception):
        """sounddevice.PortAudioError."""

    class CallbackAbort(Exception):
        """sounddevice.CallbackAbort."""

    class Times:
        """PortAudio's time info (no ADC time)."""

        currentTime = 0.0
        inputBufferAdcTime = 0.0

    class Flags:
        """CallbackFlags with input_overflow."""

        def __init__(self, overflow):
            self.input_overflow = overflow

        def __bool__(self):
            return self.input_overflow

    def __init__(self):
        self.streams = []

    def query_devices(self, device=None, kind=None):
        info = {'name': 'Fake USB Mic', 'max_input_channels': 1, 'default_samplerate': 16000}
        return [info] if device is None and kind is None else info

    def check_input_settings(self, **kwargs):
        pass

    def InputStream(self, **kwargs):  # noqa: N802 - the sounddevice name
        sd = self

        class Stream:
            def __init__(self):
                self.kw = kwargs
                self.unplugged = threading.Event()
                self.stopped = threading.Event()
                sd.streams.append(self)

            def start(self):
                threading.Thread(target=self._run, daemon=True).start()

            def _run(self):
                n = 0
                while not self.stopped.wait(0.002):
                    if self.unplugged.is_set():
                        break
                    data = np.zeros((self.kw['blocksize'], 1), np.float32)
                    self.kw['callback'](data, self.kw['blocksize'], sd.Times(),
                                        sd.Flags(n % 4 == 3))
                    n += 1
                self.kw['finished_callback']()

            def stop(self):
                self.stopped.set()

            def close(self):
                pass
        return Stream()


def test_unplugged_sound_card_is_a_failure_the_supervisor_restarts(monkeypatch):
    """SoundDeviceSource on fake hardware: a stream that ends by itself sets error naming the
    device; a stop() does not; overflows are counted; the supervisor reopens the device."""
    fake = FakeSoundDevice()
    monkeypatch.setitem(sys.modules, 'sounddevice', fake)
    got = []
    clock = FakeClock()
    sup = SourceSupervisor(lambda: SoundDeviceSource(None, 16000, 1, 160),
                           lambda s, t, src: got.append(src), clock=clock)
    first = sup.start()
    assert _wait(lambda: len(got) >= 8 and first.overflows >= 1)
    fake.streams[0].unplugged.set()
    assert _wait(lambda: first.failed)
    assert 'Fake USB Mic' in str(first.error) and 'stopped unexpectedly' in str(first.error)
    sup.poll()
    clock.now += 0.5
    sup.poll()
    second = sup.source
    assert second is not first and len(fake.streams) == 2
    count = len(got)
    assert _wait(lambda: len(got) > count + 3)
    sup.stop()
    assert _wait(lambda: fake.streams[1].stopped.is_set())
    time.sleep(0.05)
    assert second.error is None and not second.failed

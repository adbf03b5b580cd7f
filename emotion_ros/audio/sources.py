"""Audio sources for the microphone node: a real sound card, or a WAV file played as one.

A source calls ``callback(samples, stamp)`` from its own background thread
with float32 samples shaped ``(frames, channels)`` and the capture time of the
first sample in seconds (``clock()`` time, by default ``time.time()``). The
callback must return quickly; a source never blocks the audio driver on it:
chunks wait in a bounded queue and the oldest is dropped (and counted in
``dropped``) when the consumer falls behind.

A source that dies (its delivery thread ends because the consumer raised, the
sound card's stream stops, the file cannot be read) keeps the reason in
``error``; :class:`SourceSupervisor` notices that, reports it and starts a new
source with exponential backoff.
"""

from __future__ import annotations

import abc
import os
import queue
import threading
import time
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np

from emotion_ros.audio.features import resample
from emotion_ros.audio.pcm import check_rate_channels, read_wav
from emotion_ros.errors import ConfigError, InputError, ModelLoadError

Callback = Callable[[np.ndarray, float], None]
Clock = Callable[[], float]
#: Chunks waiting for the consumer before the oldest is dropped.
QUEUE_CHUNKS = 32
# Queue marker: a finite source has delivered everything.
_END: Any = object()


class AudioSource(abc.ABC):
    """Something that produces audio chunks on a background thread."""

    sample_rate: int
    channels: int

    def __init__(self) -> None:
        """Set up the delivery thread state (subclasses call this)."""
        self.dropped = 0  # chunks dropped because the callback fell behind
        self._queue: 'queue.Queue[Any]' = queue.Queue(QUEUE_CHUNKS)
        self._worker: Optional[threading.Thread] = None
        self._callback: Optional[Callback] = None
        self.error: Optional[BaseException] = None  # what stopped the source, if anything
        self.overflows = 0  # input overflows the driver reported (samples lost before us)

    @property
    def failed(self) -> bool:
        """True when the source stopped on its own (``error`` says why), not by ``stop()``."""
        worker = self._worker
        return self.error is not None or (worker is not None and not worker.is_alive())

    @abc.abstractmethod
    def start(self, callback: Callback) -> None:
        """Start producing; ``callback(samples (n, ch) float32, stamp)`` runs on a thread."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop producing and join the threads. Safe to call twice."""

    @property
    def running(self) -> bool:
        """True while chunks are being delivered."""
        return self._worker is not None and self._worker.is_alive()

    # Delivery: producers put chunks into a bounded queue; one worker thread
    # calls the user's callback, so a slow consumer never stalls the driver.
    def _start_worker(self, callback: Callback) -> None:
        if self.running:
            raise RuntimeError(f'{type(self).__name__} is already started')
        self.error = None
        self._callback = callback
        self._queue = queue.Queue(QUEUE_CHUNKS)
        self._worker = threading.Thread(target=self._deliver, name=f'{type(self).__name__}',
                                        daemon=True)
        self._worker.start()

    def _enqueue(self, samples: np.ndarray, stamp: float) -> None:
        while True:
            try:
                self._queue.put_nowait((samples, stamp))
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _deliver(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if item is _END:
                self._end_of_stream()
                continue
            assert self._callback is not None
            try:
                self._callback(item[0], item[1])
            except Exception as exc:  # a failing consumer must not kill the source silently
                self.error = exc
                return

    def _end_of_stream(self) -> None:
        """Called on the worker thread after the last chunk of a finite source."""

    def _stop_worker(self, timeout: float = 2.0) -> None:
        worker = self._worker
        if worker is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        worker.join(timeout)
        self._worker = None


def _import_sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise ModelLoadError(f'audio capture needs the PortAudio library ({exc}); install it, '
                             f'e.g. apt-get install libportaudio2') from exc
    except ImportError as exc:
        raise ModelLoadError('audio capture needs the sounddevice package '
                             '(pip install sounddevice)') from exc
    return sounddevice


def _input_devices(sd: Any) -> List[Tuple[int, dict]]:
    try:
        devices = sd.query_devices()
    except Exception as exc:  # PortAudioError when the host API is broken
        raise ModelLoadError(f'cannot list audio devices: {exc}') from exc
    return [(i, d) for i, d in enumerate(devices) if d.get('max_input_channels', 0) > 0]


def list_input_devices() -> List[str]:
    """Describe the capture devices PortAudio sees, e.g. ``'2: USB Mic (1 ch, 48000 Hz)'``.

    Raises:
        ModelLoadError: if sounddevice or the PortAudio library is missing.
    """
    sd = _import_sounddevice()
    return [f'{i}: {d["name"]} ({d["max_input_channels"]} ch, '
            f'{int(d["default_samplerate"])} Hz)' for i, d in _input_devices(sd)]


class SoundDeviceSource(AudioSource):
    """Captures a sound card through PortAudio (the ``sounddevice`` package)."""

    def __init__(self, device: Union[str, int, None], sample_rate: int, channels: int,
                 chunk_frames: int, clock: Clock = time.time) -> None:
        """Pick and check the capture device.

        Args:
            device: index, (part of) a name, or None/'' for the default input.
            sample_rate: capture rate in Hz.
            channels: channels to capture.
            chunk_frames: frames per delivered chunk.
            clock: time base of the stamps (seconds).

        Raises:
            ConfigError: if the device does not exist (listing the available
                ones) or cannot capture at this rate / channel count.
            ModelLoadError: if sounddevice or PortAudio is missing.
        """
        super().__init__()
        try:
            check_rate_channels(sample_rate, channels)
        except InputError as exc:
            raise ConfigError(f'microphone: {exc}') from exc
        if chunk_frames <= 0:
            raise ConfigError(f'microphone chunk_frames must be > 0, got {chunk_frames}')
        self._sd = _import_sounddevice()
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.chunk_frames = int(chunk_frames)
        self._clock = clock
        self._stream: Any = None
        self._stopping = False
        if device == '':
            device = None
        available = list_input_devices()
        listing = '; '.join(available) if available else 'none found'
        try:
            info = self._sd.query_devices(device, 'input')
        except (ValueError, self._sd.PortAudioError) as exc:
            what = 'the default input device' if device is None else f'input device {device!r}'
            raise ConfigError(f'microphone: {what} is not available ({exc}); '
                              f'available input devices: {listing}') from exc
        self.device_name = str(info['name'])
        self.device = device
        try:
            self._sd.check_input_settings(device=device, channels=self.channels,
                                          samplerate=self.sample_rate, dtype='float32')
        except Exception as exc:
            raise ConfigError(f'microphone: {self.device_name!r} cannot capture {self.channels} '
                              f'channel(s) at {self.sample_rate} Hz ({exc}); available input '
                              f'devices: {listing}') from exc

    def start(self, callback: Callback) -> None:
        """Open the input stream and start delivering chunks.

        Raises:
            ModelLoadError: if PortAudio fails to open the device.
        """
        self._stopping = False
        self._start_worker(callback)

        def on_audio(indata: np.ndarray, frames: int, times: Any, status: Any) -> None:
            try:
                now = self._clock()
                if status and getattr(status, 'input_overflow', False):
                    self.overflows += 1
                # PortAudio's ADC time of the first frame, moved onto our clock;
                # drivers that do not report it give 0, then assume no latency.
                latency = times.currentTime - times.inputBufferAdcTime
                if not (times.inputBufferAdcTime > 0 and 0 <= latency < 1.0):
                    latency = frames / self.sample_rate
                self._enqueue(indata.copy(), now - latency)
            except Exception as exc:  # noqa: B902 - kept for the supervisor, stream aborted
                self.error = exc
                raise self._sd.CallbackAbort from exc

        def on_finished() -> None:
            # PortAudio ends the stream on its own when the device goes away.
            if not self._stopping and self.error is None:
                self.error = ModelLoadError(
                    f'microphone: the capture stream of {self.device_name!r} stopped '
                    'unexpectedly (device unplugged or driver error)')

        try:
            self._stream = self._sd.InputStream(
                device=self.device, channels=self.channels, samplerate=self.sample_rate,
                blocksize=self.chunk_frames, dtype='float32', callback=on_audio,
                finished_callback=on_finished)
            self._stream.start()
        except Exception as exc:
            self._stop_worker()
            raise ModelLoadError(f'microphone: cannot open {self.device_name!r}: {exc}') from exc

    def stop(self) -> None:
        """Close the stream and the delivery thread."""
        self._stopping = True
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            finally:
                self._stream = None
        self._stop_worker()


class WavFileSource(AudioSource):
    """Plays a WAV file as if it were a microphone (demos, tests, robots without audio).

    Chunks of ``chunk_frames`` frames (the last one may be shorter) are
    stamped ``t0 + index / rate`` where ``t0`` is the clock at ``start()``; in
    real time each chunk is delivered when its last sample "was recorded".
    """

    def __init__(self, path: Union[str, os.PathLike], chunk_frames: int, loop: bool = False,
                 realtime: bool = True, resample_to: Optional[int] = None,
                 clock: Clock = time.time) -> None:
        """Read the file now, so a bad file fails at configuration time.

        Args:
            path: WAV file (integer or float PCM).
            chunk_frames: frames per chunk.
            loop: start over at the end instead of stopping.
            realtime: pace the chunks at the file's rate (False: as fast as
                the consumer takes them, stamps still advance by the audio
                duration).
            resample_to: deliver at this rate instead of the file's.
            clock: time base of the stamps (seconds).

        Raises:
            InputError: for a missing or malformed file.
            ConfigError: for a bad chunk size or target rate.
        """
        super().__init__()
        if chunk_frames <= 0:
            raise ConfigError(f'chunk_frames must be > 0, got {chunk_frames}')
        samples, rate = read_wav(path)
        if resample_to is not None and resample_to != rate:
            try:
                check_rate_channels(resample_to, 1)
            except InputError as exc:
                raise ConfigError(f'resample_to: {exc}') from exc
            samples = resample(samples, rate, int(resample_to))
            rate = int(resample_to)
        self.path = os.fspath(path)
        self.samples = np.ascontiguousarray(samples, dtype=np.float32)
        self.sample_rate = rate
        self.channels = int(samples.shape[1])
        self.chunk_frames = int(chunk_frames)
        self.loop = loop
        self.realtime = realtime
        self._clock = clock
        self._stop = threading.Event()
        self.finished = threading.Event()  # set when a non-looping file has been delivered
        self._producer: Optional[threading.Thread] = None

    def start(self, callback: Callback) -> None:
        """Start playing on a background thread."""
        self._stop.clear()
        self.finished.clear()
        self._start_worker(callback)
        self._producer = threading.Thread(target=self._play, name='WavFileSource.play',
                                          daemon=True)
        self._producer.start()

    def _play(self) -> None:
        try:
            self._produce()
        except Exception as exc:  # noqa: B902 - kept for the supervisor; delivery ends
            self.error = exc
            self._put(None)

    def _produce(self) -> None:
        t0 = self._clock()
        wall0 = time.monotonic()
        position = 0  # frames delivered since start, across loops
        total = self.samples.shape[0]
        while not self._stop.is_set():
            offset = position % total
            if not self.loop and position >= total:
                # Tell the worker, so `finished` is set once the consumer has it all.
                self._put(_END)
                return
            n = min(self.chunk_frames, total - offset)
            chunk = self.samples[offset:offset + n].copy()
            stamp = t0 + position / self.sample_rate
            position += n
            if self.realtime:
                # A microphone hands a chunk over once its last sample is recorded.
                delay = wall0 + position / self.sample_rate - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                self._enqueue(chunk, stamp)
            else:
                self._put((chunk, stamp))

    def _put(self, item: Any) -> None:
        """Queue without dropping (offline replay waits for the consumer instead)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _end_of_stream(self) -> None:
        self.finished.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until a non-looping file has been fully handed over (True) or timeout."""
        return self.finished.wait(timeout)

    def stop(self) -> None:
        """Stop playing and join the threads. Safe to call twice."""
        self._stop.set()
        if self._producer is not None:
            self._producer.join(2.0)
            self._producer = None
        self._stop_worker()


class SourceSupervisor:
    """Keeps audio coming: notices a dead source and starts a new one with backoff.

    ``factory()`` builds a source (e.g. from the current config); ``callback(samples,
    stamp, source)`` receives its chunks. :meth:`poll` (call it periodically, e.g.
    from a node timer) checks the running source; when it has failed it is stopped,
    ``on_failure(error)`` is called, and a new source is started after a backoff of
    ``min_backoff_s`` doubling per consecutive failure up to ``max_backoff_s``. The
    count of consecutive failures resets once a source has run for ``stable_s``.
    Thread-safe.
    """

    def __init__(self, factory: Callable[[], AudioSource],
                 callback: Callable[[np.ndarray, float, AudioSource], None],
                 on_failure: Optional[Callable[[BaseException], None]] = None,
                 min_backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 stable_s: float = 30.0, clock: Clock = time.monotonic) -> None:
        """Keep the factory; nothing starts before :meth:`start`."""
        self._factory = factory
        self._callback = callback
        self._on_failure = on_failure
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_s = stable_s
        self._clock = clock
        self._lock = threading.RLock()
        self.source: Optional[AudioSource] = None
        self.failures = 0  # sources that died + restarts that failed
        self.restarts = 0  # sources started again after a failure
        self.last_error = ''
        self.retry_in_s = 0.0
        self._consecutive = 0
        self._retry_at: Optional[float] = None
        self._started_at = 0.0

    @property
    def state(self) -> str:
        """'capturing', 'restarting' (waiting to retry) or 'stopped'."""
        with self._lock:
            if self.source is not None:
                return 'capturing'
            return 'restarting' if self._retry_at is not None else 'stopped'

    def start(self, source: Optional[AudioSource] = None) -> AudioSource:
        """Start ``source`` (or a new one from the factory); errors propagate."""
        with self._lock:
            source = source if source is not None else self._factory()
            self._start(source)
            return source

    def _start(self, source: AudioSource) -> None:
        source.start(lambda samples, stamp: self._callback(samples, stamp, source))
        self.source = source
        self._retry_at = None
        self._started_at = self._clock()

    def replace(self, factory: Callable[[], AudioSource]) -> None:
        """Use ``factory`` from now on and switch to a new source built by it.

        The new source is built before the old one stops, so a factory that raises
        (a device that does not exist) leaves the running source as it was.
        """
        with self._lock:
            new = factory()
            self._factory = factory
            running = self.source is not None or self._retry_at is not None
            self._stop_source()
            if running:
                self._start(new)

    def poll(self) -> None:
        """Restart a failed source when its backoff has passed (call periodically)."""
        with self._lock:
            now = self._clock()
            source = self.source
            if source is not None:
                if not source.failed:
                    if self._consecutive and now - self._started_at >= self.stable_s:
                        self._consecutive = 0
                    return
                error = source.error or RuntimeError('the audio delivery thread ended')
                self._stop_source()
                self._failed(error, now)
                return
            if self._retry_at is None or now < self._retry_at:
                return
            try:
                self._start(self._factory())
            except Exception as exc:  # noqa: B902 - retried with a longer backoff
                self._failed(exc, now)
                return
            self.restarts += 1

    def _failed(self, error: BaseException, now: float) -> None:
        self.failures += 1
        self._consecutive += 1
        self.last_error = f'{type(error).__name__}: {error}'
        self.retry_in_s = min(self.max_backoff_s,
                              self.min_backoff_s * 2 ** (self._consecutive - 1))
        self._retry_at = now + self.retry_in_s
        if self._on_failure is not None:
            self._on_failure(error)

    def _stop_source(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            try:
                source.stop()
            except Exception:  # noqa: B902 - a broken device must not block the restart
                pass

    def stop(self) -> None:
        """Stop capturing and retrying."""
        with self._lock:
            self._retry_at = None
            self._stop_source()

"""Call-for-help detectors: one decoded utterance in, a transcript with a help flag out.

Every detector implements :class:`HelpDetector`: ``decode(audio)`` gets the
16 kHz samples of ONE utterance (pre-roll included) and must answer from
that audio alone: no state may carry over from one utterance to the next,
so whether a call is heard cannot depend on what came before it in the
stream. Backends:

- ``whisper`` (default): Whisper ASR, text matched against help phrases per
  language (:mod:`emotion_ros.audio.phrases`); engines: CTranslate2 with the
  bundled tiny.en, offline on CPU (:mod:`emotion_ros.audio.whisper_ct2`), or
  transformers (:mod:`emotion_ros.audio.whisper`).
- ``keyphrase`` (light fallback, offline, CPU): pocketsphinx keyphrase search
  with its bundled US-English model (:mod:`emotion_ros.audio.keywords`).

:class:`DetectorRunner` runs a detector on a worker thread with a watchdog:
a decode that takes longer than ``timeout_s`` is abandoned, the detector is
rebuilt and loaded again, and ``restarts`` counts it, so one stuck decode
cannot silence the robot's hearing for the rest of a mission.

For tests, the environment variable ``EMOTION_ROS_TEST_STALL_DETECTOR=N``
wraps the configured detector so that every decode after the N-th blocks
forever (a stalled decoder, as a hung library or a lost GPU would look);
the rebuilt detector after a watchdog restart decodes normally again.
``EMOTION_ROS_TEST_SLOW_DETECTOR=S`` makes every decode take S seconds longer (a
detector slower than the audio comes in: the audio node's decode queue then drops).
"""

from __future__ import annotations

import abc
import dataclasses
import os
import queue
import threading
import time
from typing import Callable, Optional, Tuple

import numpy as np

from emotion_ros.errors import EmotionRosError

#: Environment variable of the test-only stalling detector (see the module docstring).
STALL_ENV = 'EMOTION_ROS_TEST_STALL_DETECTOR'
#: Environment variable of the test-only slow detector (see the module docstring).
SLOW_ENV = 'EMOTION_ROS_TEST_SLOW_DETECTOR'


@dataclasses.dataclass(frozen=True)
class Decoded:
    """What a detector made of one utterance."""

    text: str = ''
    language: str = ''
    confidence: float = 0.0
    help_detected: bool = False
    help_phrase: str = ''
    help_score: float = 0.0
    #: Whisper's probability that the utterance holds no speech (0 when not known).
    no_speech_prob: float = 0.0
    #: Mean log-probability of the decoded tokens (0 when not known).
    avg_logprob: float = 0.0
    #: Where the trusted help phrases lie, ``(start, end)`` in seconds from the start of
    #: the decoded audio (word alignment); empty when not known (the whole utterance).
    help_spans: Tuple[Tuple[float, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Transcript:
    """One decoded utterance (the ROS-free twin of ``emotion_ros_msgs/Transcript``).

    ``start``/``end`` are stream times in seconds of the first and last voiced
    sample; ``status`` is ``ok``, ``timeout`` (the watchdog gave up on the
    decode), ``error`` (the detector raised; ``text`` holds the reason) or
    ``partial`` (an early decode of an utterance still open, kept only when it heard
    a call; the utterance's own transcript follows when it closes).
    ``help_spans``: stream times ``(start, end)`` of the help phrases when the
    detector located them (word alignment, plus a margin), else empty (then the whole
    utterance, ``start``-``end``, is the call).
    """

    start: float
    end: float
    text: str
    language: str
    confidence: float
    help_detected: bool
    help_phrase: str
    help_score: float
    detector: str
    model_id: str
    decode_s: float
    status: str = 'ok'
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    help_spans: Tuple[Tuple[float, float], ...] = ()

    @property
    def call_spans(self) -> Tuple[Tuple[float, float], ...]:
        """Stream times of the calls heard: the located phrases, or the whole utterance."""
        return self.help_spans or ((self.start, self.end),)


class HelpDetector(abc.ABC):
    """Decodes one utterance at a time; stateless between utterances."""

    #: Backend name published in ``Transcript.detector``.
    name = ''

    @property
    def model_id(self) -> str:
        """The model (id or path) this detector runs."""
        return ''

    def load(self) -> None:
        """Load the model. Raises ModelLoadError / ConfigError naming what is wrong."""

    @abc.abstractmethod
    def decode(self, audio: np.ndarray) -> Decoded:
        """Decode one utterance of 16 kHz float32 samples in [-1, 1]."""

    def close(self) -> None:
        """Free the model. Safe to call twice."""


class _WrappedDetector(HelpDetector):
    """Test-only base: a detector that behaves like ``inner`` except for its decodes."""

    def __init__(self, inner: HelpDetector) -> None:
        """Wrap ``inner`` (its name, model, loading and closing)."""
        self._inner = inner
        self.name = inner.name

    @property
    def model_id(self) -> str:
        """The wrapped detector's model."""
        return self._inner.model_id

    def load(self) -> None:
        """Load the wrapped detector."""
        self._inner.load()

    def close(self) -> None:
        """Close the wrapped detector."""
        self._inner.close()


class StallingDetector(_WrappedDetector):
    """Test-only: behaves like ``inner`` for ``after`` decodes, then blocks forever."""

    def __init__(self, inner: HelpDetector, after: int) -> None:
        """Wrap ``inner``; decode number ``after + 1`` and later never return (closing
        releases nothing: a stalled decode stays stalled)."""
        super().__init__(inner)
        self._after = after
        self._count = 0
        self._never = threading.Event()

    def decode(self, audio: np.ndarray) -> Decoded:
        """Decode, or block forever once ``after`` decodes have been made."""
        self._count += 1
        if self._count > self._after:
            self._never.wait()
        return self._inner.decode(audio)


class SlowDetector(_WrappedDetector):
    """Test-only: decodes like ``inner``, then waits ``delay_s`` more (a slow detector)."""

    def __init__(self, inner: HelpDetector, delay_s: float) -> None:
        """Wrap ``inner``; each decode takes ``delay_s`` seconds longer."""
        super().__init__(inner)
        self.delay_s = float(delay_s)

    def decode(self, audio: np.ndarray) -> Decoded:
        """The wrapped detector's answer, ``delay_s`` later."""
        result = self._inner.decode(audio)
        time.sleep(self.delay_s)
        return result


def slow_seconds_from_env() -> Optional[float]:
    """The S of ``EMOTION_ROS_TEST_SLOW_DETECTOR=S``, or None when unset/empty."""
    value = os.environ.get(SLOW_ENV, '').strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        raise EmotionRosError(f'{SLOW_ENV}={value!r}: expected seconds (a number)') from None


def stall_after_from_env() -> Optional[int]:
    """The N of ``EMOTION_ROS_TEST_STALL_DETECTOR=N``, or None when unset/empty."""
    value = os.environ.get(STALL_ENV, '').strip()
    if not value:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        raise EmotionRosError(f'{STALL_ENV}={value!r}: expected a non-negative integer') from None


class DetectorRunner:
    """Runs a detector on a worker thread; a watchdog restarts it when a decode hangs.

    ``decode()`` blocks the caller until the worker answers or ``timeout_s``
    passes. On timeout the worker thread is abandoned (a Python thread cannot
    be killed; it is a daemon and holds only the old detector), a fresh
    detector is built by ``factory`` and loaded, ``restarts`` is incremented
    and ``decode()`` returns None for that utterance. With ``timeout_s`` 0 the
    detector runs on the caller's thread (no watchdog): benchmarks use that to
    measure CPU time.
    """

    def __init__(self, factory: Callable[[int], HelpDetector], timeout_s: float) -> None:
        """``factory(generation)`` builds an unloaded detector; generation 0 is the first."""
        self._factory = factory
        self.timeout_s = float(timeout_s)
        self.restarts = 0
        self.busy_since: Optional[float] = None  # monotonic start of the running decode
        self.last_latency_s = 0.0
        self._generation = 0
        self.detector = factory(0)
        self._jobs: Optional['queue.Queue'] = None
        self._thread: Optional[threading.Thread] = None

    def load(self) -> None:
        """Load the detector and start the worker thread."""
        self.detector.load()
        if self.timeout_s > 0:
            self._start_worker()

    def _start_worker(self) -> None:
        self._jobs = queue.Queue(maxsize=1)
        jobs, detector = self._jobs, self.detector
        self._thread = threading.Thread(target=self._work, args=(jobs, detector),
                                        name=f'help-detector-{self._generation}', daemon=True)
        self._thread.start()

    @staticmethod
    def _work(jobs: 'queue.Queue', detector: HelpDetector) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            audio, box, done = job
            try:
                box.append(detector.decode(audio))
            except BaseException as exc:  # handed to the caller, never lost
                box.append(exc)
            done.set()

    def decode(self, audio: np.ndarray) -> Optional[Decoded]:
        """Decode one utterance; None when the watchdog had to restart the detector.

        Raises:
            Exception: whatever the detector raised (the caller counts it).
        """
        t0 = time.monotonic()
        self.busy_since = t0
        try:
            if self.timeout_s <= 0:
                return self.detector.decode(audio)
            box: list = []
            done = threading.Event()
            assert self._jobs is not None
            self._jobs.put((audio, box, done))
            if not done.wait(self.timeout_s):
                self._restart()
                return None
            result = box[0]
            if isinstance(result, BaseException):
                raise result
            return result
        finally:
            self.busy_since = None
            self.last_latency_s = time.monotonic() - t0

    def _restart(self) -> None:
        """Abandon the stuck worker; build, load and start a fresh detector."""
        self.restarts += 1
        self._generation += 1
        old_jobs = self._jobs
        self._jobs = None
        if old_jobs is not None:
            try:
                old_jobs.put_nowait(None)  # the worker exits if it ever wakes up
            except queue.Full:
                pass
        self.detector = self._factory(self._generation)
        self.detector.load()
        self._start_worker()

    def busy_s(self) -> float:
        """How long the running decode has taken so far (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self) -> None:
        """Stop the worker and free the detector."""
        if self._jobs is not None:
            try:
                self._jobs.put_nowait(None)
            except queue.Full:
                pass
            self._jobs = None
        self.detector.close()

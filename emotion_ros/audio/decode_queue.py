"""A bounded queue of utterances waiting for the call-for-help detector, decoded off the
caller's thread.

The audio node's processing thread runs voice activity, features and the cue windows
(scream, arousal) of every chunk; decoding an utterance with Whisper takes much longer
than a chunk lasts. :class:`DecodeQueue` takes each closed utterance (and each partial
snapshot of an open one) as a :class:`DecodeJob`, decodes the jobs one at a time, in
the order queued, on a worker thread (CTranslate2 releases the GIL while it decodes),
and hands the finished jobs back in that order (:meth:`DecodeQueue.take_done`), so a
slow decode never holds up the cue windows of the audio after it.

The queue is bounded (``max_size`` jobs waiting, the running one not counted):

- a partial snapshot is superseded (dropped, ``partials_superseded``) when a newer
  partial or the final utterance of the same utterance is queued;
- when the queue is full, the oldest waiting partial is dropped first
  (``partials_dropped``), else the oldest waiting utterance (``utterances_dropped``).

The decode function is the detector runner's (``DetectorRunner.decode``), so its
watchdog stays in force. Offline evaluation decodes inline instead (deterministic);
see ``AudioCueExtractor(background_decode=...)``.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Callable, Deque, List, Optional, Tuple

import numpy as np

from emotion_ros.audio.detectors import Decoded
from emotion_ros.audio.segmenter import Utterance


@dataclasses.dataclass(eq=False)
class DecodeJob:
    """One utterance (or partial snapshot) to decode, and what came of it (compared by
    identity)."""

    utterance: Utterance
    partial: bool
    origin: float             # stream time of sample 0 when it was queued
    epoch: int                # stream (restarts count up) it belongs to
    queued_at: float = 0.0    # time.monotonic() when queued
    started_at: float = 0.0   # time.monotonic() when the worker took it
    decoded: Optional[Decoded] = None   # None with error None: the watchdog gave up
    error: Optional[BaseException] = None
    elapsed: float = 0.0      # seconds the decode took

    @property
    def key(self) -> Tuple[int, int]:
        """Which utterance this is: (epoch, first voiced sample)."""
        return (self.epoch, self.utterance.start)


class DecodeQueue:
    """Decodes queued jobs in order on one worker thread (see the module docstring)."""

    def __init__(self, decode: Callable[[np.ndarray], Optional[Decoded]],
                 max_size: int) -> None:
        """``decode(audio)`` decodes one utterance; ``max_size`` (>= 1) jobs may wait."""
        if max_size < 1:
            raise ValueError(f'decode queue size must be >= 1, got {max_size}')
        self._decode = decode
        self.max_size = int(max_size)
        self._cond = threading.Condition()
        self._pending: Deque[DecodeJob] = collections.deque()
        self._done: List[DecodeJob] = []
        self._running: Optional[DecodeJob] = None
        self._closing = False
        self._thread: Optional[threading.Thread] = None
        self.utterances_dropped = 0
        self.partials_dropped = 0
        self.partials_superseded = 0
        self.last_wait_s = 0.0     # queue wait of the last job the worker took

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._work, name='help-decode-queue',
                                        daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closing

    def __len__(self) -> int:
        """Jobs waiting (the running one not counted)."""
        with self._cond:
            return len(self._pending)

    def put(self, job: DecodeJob) -> List[DecodeJob]:
        """Queue ``job``; returns the jobs dropped to make room or superseded by it."""
        job.queued_at = time.monotonic()
        dropped: List[DecodeJob] = []
        with self._cond:
            superseded = [j for j in self._pending if j.partial and j.key == job.key]
            for old in superseded:
                self._pending.remove(old)
                self.partials_superseded += 1
            dropped += superseded
            while len(self._pending) >= self.max_size:
                victim = next((j for j in self._pending if j.partial), self._pending[0])
                self._pending.remove(victim)
                if victim.partial:
                    self.partials_dropped += 1
                else:
                    self.utterances_dropped += 1
                dropped.append(victim)
            self._pending.append(job)
            self._cond.notify_all()
        return dropped

    def take_done(self) -> List[DecodeJob]:
        """The jobs decoded since the last call, in the order they were queued."""
        with self._cond:
            out, self._done = self._done, []
        return out

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Wait until nothing is waiting or running; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending or self._running is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (waiting jobs are discarded). Safe to call twice."""
        with self._cond:
            self._closing = True
            self._pending.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)  # a stuck decode: the daemon thread is left behind
            self._thread = None

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                job = self._pending.popleft()
                self._running = job
            job.started_at = time.monotonic()
            self.last_wait_s = job.started_at - job.queued_at
            t0 = time.perf_counter()
            try:
                job.decoded = self._decode(job.utterance.audio)
            except Exception as exc:  # counted by the extractor, never fatal
                job.error = exc
            job.elapsed = time.perf_counter() - t0
            with self._cond:
                self._running = None
                self._done.append(job)
                self._cond.notify_all()

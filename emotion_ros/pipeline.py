"""The whole pipeline offline: the node graph's stages, run in message-time order.

The stages and the order of their work are the node graph's, with the same code:

=============  ==================================  =========================================
stage          on the robot                        here
=============  ==================================  =========================================
decode audio   ``audio_node`` (``AudioDecoder``)    the bag evaluation (``AudioDecoder``)
audio          ``audio_node``: ``AudioCueExtractor.push`` -> cue windows; each decoded
               utterance -> ``transcript_of`` (:func:`run_audio_stage`)
perception     ``perception_node``: ``PerceptionPipeline.process`` at ``max_rate_hz``
               (``RateLimiter``); audio_visual: fed the audio and every transcript
fusion         ``distress_node``: :class:`~emotion_ros.fusion.ordering.OrderedFusion`, inputs
               held ``input_hold_s`` after arrival and fused in stamp order
=============  ==================================  =========================================

Arrival times offline are message times: a frame arrives at its stamp, an audio
chunk's cues and transcripts when the chunk ends. The fusion's inputs go
through one queue of events in the bag's order, so the fusion sees the same
sequence whether the audio stage runs inline (serial) or in a worker process
next to perception (:meth:`OfflinePipeline.use_audio_worker`: two cores; the
results, alerts included, are identical). The audio_visual backend hears the
audio and the transcripts in perception, so its frames depend on the audio
stage: it always runs serially.

``OfflinePipeline`` is driven by the bag evaluation and the benchmarks with the
configuration read from ``config/robot.yaml``, so what is measured is what
runs on the robot.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import pickle
import queue
import threading
import time
from typing import Any, Deque, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from emotion_ros.audio.cues import AudioCueConfig, AudioCueExtractor
from emotion_ros.audio.detectors import Transcript as DecodedUtterance
from emotion_ros.audio.messages import transcript_of
from emotion_ros.fusion.distress import DistressFusion
from emotion_ros.fusion.ordering import OrderedFusion
from emotion_ros.perception.localization import CameraModel
from emotion_ros.perception.pipeline import PerceptionPipeline, RateLimiter
from emotion_ros.types import Alert, AudioCueResult, FrameResult

log = logging.getLogger('emotion_ros.pipeline')

#: Audio chunks the worker may be behind before the pipeline waits for it.
MAX_AUDIO_PENDING = 200


class AudioOutput(NamedTuple):
    """What the audio stage made of one chunk."""

    cues: List[AudioCueResult]
    utterances: List[DecodedUtterance]   # decoded since the previous chunk (any status)
    ms: float                            # processing time


def run_audio_stage(extractor: AudioCueExtractor, samples: np.ndarray, sample_rate: int,
                    stamp: float) -> AudioOutput:
    """The audio stage on one chunk (first sample at ``stamp``): cue windows and utterances."""
    t0 = time.perf_counter()
    cues = extractor.push(samples, sample_rate, stamp)
    return AudioOutput(cues, extractor.pop_transcripts(), (time.perf_counter() - t0) * 1e3)


# ------------------------------------------------------------ audio worker
def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError naming it."""
    try:
        return pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: B902 - any pickling problem
        return RuntimeError(f'audio worker: {type(exc).__name__}: {exc}')


def _audio_worker_main(config: AudioCueConfig, requests: Any, replies: Any) -> None:
    """The worker process: load the extractor, answer ``push``/``flush`` until ``close``."""
    extractor = AudioCueExtractor(config)
    try:
        extractor.load()
    except BaseException as exc:  # noqa: B902 - reported to the parent, which raises it
        replies.send(('error', _portable(exc)))
        return
    replies.send(('ready', None))
    try:
        while True:
            request = requests.recv()
            try:
                if request[0] == 'push':
                    replies.send(('ok', run_audio_stage(extractor, *request[1:])))
                elif request[0] == 'flush':
                    replies.send(('ok', extractor.flush()))
                else:
                    return
            except Exception as exc:  # noqa: B902 - the parent raises it where serial would
                replies.send(('error', _portable(exc)))
    except (EOFError, OSError, KeyboardInterrupt):
        return
    finally:
        extractor.close()


class AudioWorker:
    """The audio stage in a process of its own, answering chunks in the order sent."""

    def __init__(self, config: AudioCueConfig) -> None:
        self.config = config
        self._proc: Any = None
        self._requests: Any = None
        self._replies: 'queue.Queue[Tuple[str, Any]]' = queue.Queue()
        self._reader: Optional[threading.Thread] = None
        self.pending = 0

    def start(self) -> None:
        """Start the process and load the models there (raises what loading raised)."""
        ctx = multiprocessing.get_context('spawn')  # no forked copy of loaded models/threads
        child_requests, requests = ctx.Pipe(duplex=False)   # (receive end, send end)
        replies, child_replies = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_audio_worker_main, name='emotion_ros-audio',
                                 args=(self.config, child_requests, child_replies), daemon=True)
        self._proc.start()
        child_requests.close()
        child_replies.close()
        self._requests = requests
        # A reader thread takes the replies as they come, so neither side blocks on a
        # full pipe while the other does.
        self._reader = threading.Thread(target=self._read, args=(replies,), daemon=True,
                                        name='emotion_ros-audio-replies')
        self._reader.start()
        kind, value = self._replies.get()
        if kind != 'ready':
            self.close()
            raise value if isinstance(value, BaseException) else RuntimeError(str(value))

    def _read(self, conn: Any) -> None:
        while True:
            try:
                self._replies.put(conn.recv())
            except (EOFError, OSError):
                self._replies.put(('dead', None))
                return

    def submit(self, samples: np.ndarray, sample_rate: int, stamp: float) -> None:
        """Send one chunk."""
        self._requests.send(('push', samples, int(sample_rate), float(stamp)))
        self.pending += 1

    def ready(self) -> bool:
        """A reply is waiting."""
        return not self._replies.empty()

    def get(self) -> Any:
        """The next reply (waits); raises the worker's error."""
        kind, value = self._replies.get()
        if kind == 'dead':
            self._replies.put((kind, value))
            code = self._proc.exitcode if self._proc is not None else None
            raise RuntimeError(f'the audio worker process ended (exit code {code})')
        self.pending -= 1
        if kind == 'error':
            raise value
        return value

    def flush(self) -> List[DecodedUtterance]:
        """End of the stream: the utterance still open, decoded (after all pending chunks)."""
        self._requests.send(('flush',))
        self.pending += 1
        return self.get()

    def close(self) -> None:
        """Stop the process (safe to call twice)."""
        if self._proc is None:
            return
        try:
            self._requests.send(('close',))
        except (OSError, ValueError):
            pass
        self._proc.join(timeout=10.0)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5.0)
        self._requests.close()
        self._proc = None


# ------------------------------------------------------------------ pipeline
class _Event:
    """One input in the bag's order, waiting for its stage's output."""

    __slots__ = ('kind', 'value', 'arrival')

    def __init__(self, kind: str, value: Any, arrival: float) -> None:
        self.kind, self.value, self.arrival = kind, value, arrival


class OfflinePipeline:
    """Perception + audio cues + distress fusion, driven in message-time order."""

    def __init__(self, robot: 'RobotConfig') -> None:  # noqa: F821 (avoid import cycle)
        self.robot = robot
        self.perception = PerceptionPipeline(robot.perception)
        self.audio = AudioCueExtractor(robot.audio)
        self.fusion = DistressFusion(robot.fusion)
        self.ordered = OrderedFusion(self.fusion)
        self._limiter = RateLimiter(robot.perception.max_rate_hz)
        self._admitted: Optional[float] = None  # stamp frame_due let through
        self.frames_skipped = 0
        # Utterances decoded since the driver last took them (the bag evaluation records them).
        self.transcripts: List[Any] = []
        self.worker: Optional[AudioWorker] = None
        self._events: Deque[_Event] = collections.deque()
        self._clock = -float('inf')  # arrival (message) time of the newest input
        self._cues: List[AudioCueResult] = []  # fused, not yet returned by on_audio/finish
        #: Processing time (ms) of each audio chunk in the audio stage, wherever it ran.
        self.audio_stage_ms: List[float] = []

    @property
    def audio_depends_on_perception(self) -> bool:
        """True when perception hears the audio (audio_visual): the stages run serially."""
        return callable(getattr(self.perception.backend, 'make_context', None))

    def use_audio_worker(self) -> bool:
        """Run the audio stage in a worker process (call before ``load``).

        Returns False (and stays serial) when perception depends on the audio stage.
        """
        if self.audio_depends_on_perception:
            log.info('audio_visual backend: perception hears the audio; stages run serially')
            return False
        self.worker = AudioWorker(self.robot.audio)
        return True

    def load(self) -> None:
        """Load all models (the audio stage's in its worker when there is one)."""
        if self.worker is not None:
            self.worker.start()
        else:
            self.audio.load()
        try:
            self.perception.load()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Free all models."""
        self.perception.close()
        self.audio.close()
        if self.worker is not None:
            self.worker.close()

    # ------------------------------------------------------------- inputs
    def on_image(self, rgb: np.ndarray, stamp: float, frame_id: str = '',
                 camera_model: Optional[CameraModel] = None,
                 depth_m: Optional[np.ndarray] = None
                 ) -> Tuple[Optional[FrameResult], List[Alert]]:
        """Process a frame (unless rate-limited, as the live node would) and queue it.

        With the camera's ``camera_model`` (and an aligned ``depth_m`` in metres) the
        persons get positions, as in the perception node. Returns the frame's result
        (None when rate-limited) and the alerts of the inputs fused meanwhile.
        """
        admitted, self._admitted = self._admitted, None
        if admitted != stamp and not self._limiter.ready(stamp):
            self.frames_skipped += 1
            return None, self._consume(block=False)
        result = self.perception.process(rgb, stamp, frame_id, '', camera_model, depth_m)
        self._events.append(_Event('frame', result, stamp))
        return result, self._consume(block=False)

    def frame_due(self, stamp: float) -> bool:
        """Whether the rate limit takes a frame at ``stamp`` (then ``on_image`` processes
        it without asking again); False counts it as skipped. Lets a driver skip decoding
        the frames the limit drops, as perception_node does."""
        if self._limiter.ready(stamp):
            self._admitted = stamp
            return True
        self.frames_skipped += 1
        return False

    def on_audio(self, samples: np.ndarray, sample_rate: int, stamp: float
                 ) -> Tuple[List[AudioCueResult], List[Alert]]:
        """Feed mono float32 audio whose first sample is at ``stamp``.

        Returns the cue windows and alerts of the inputs fused meanwhile: with the audio
        worker, those of earlier chunks as the worker answers (``finish`` gives the rest).
        """
        alerts = self._feed_audio(samples, sample_rate, stamp)
        cues, self._cues = self._cues, []
        return cues, alerts

    def _feed_audio(self, samples: np.ndarray, sample_rate: int, stamp: float) -> List[Alert]:
        end = stamp + len(samples) / float(sample_rate)
        if self.perception.av_context is not None:  # the audio_visual backend hears it too
            self.perception.feed_audio(samples, end, int(sample_rate))
        if self.worker is not None:
            self.worker.submit(samples, sample_rate, stamp)
            self._events.append(_Event('audio', None, end))
            # Wait for the worker only when it is far behind (bounded memory).
            return self._consume(block='some' if self.worker.pending > MAX_AUDIO_PENDING
                                 else False)
        output = run_audio_stage(self.audio, samples, sample_rate, stamp)
        self._events.append(_Event('audio', output, end))
        return self._consume(block=False)

    def finish(self) -> Tuple[List[AudioCueResult], List[Alert]]:
        """End of the input: wait for the audio stage, fuse everything still held."""
        alerts = self._consume(block=True) + self.ordered.finish()
        cues, self._cues = self._cues, []
        return cues, alerts

    def take_transcripts(self, flush: bool = False) -> List[DecodedUtterance]:
        """Utterances decoded since the last call; ``flush``: the one still open too (end)."""
        out, self.transcripts = self.transcripts, []
        if flush:
            self.finish_pending()
            if self.worker is not None:
                out += self.worker.flush()
            elif self.audio.loaded:
                out += self.audio.flush()
        return out

    def finish_pending(self) -> None:
        """Wait for the audio worker's outstanding chunks (their results stay queued)."""
        for event in self._events:
            if event.kind == 'audio' and event.value is None:
                event.value = self.worker.get()

    def distress_scores(self) -> Dict[int, float]:
        """Current fused score per track (0 = audio-only channel)."""
        return self.fusion.scores()

    # ------------------------------------------------------------- fusion
    def _consume(self, block: Any) -> List[Alert]:
        """Fuse queued events in order, as far as their outputs are there (``block``
        True: all of them; 'some': until the worker is at most half its bound behind);
        the cue windows fused wait in ``_cues``."""
        alerts: List[Alert] = []
        while self._events:
            event = self._events[0]
            if event.value is None:  # an audio chunk the worker has not answered yet
                if not (block or self.worker.ready()):
                    break
                if block == 'some' and self.worker.pending <= MAX_AUDIO_PENDING // 2 \
                        and not self.worker.ready():
                    break
                event.value = self.worker.get()
            self._events.popleft()
            self._clock = max(self._clock, event.arrival)
            inputs = []
            if event.kind == 'frame':
                result: FrameResult = event.value
                inputs.append(OrderedFusion.frame(result))
                if result.voice is not None:  # as distress_node does with voice_emotions
                    inputs.append(OrderedFusion.voice(result.voice, result.stamp,
                                                      result.frame_id))
            else:
                output: AudioOutput = event.value
                self.audio_stage_ms.append(output.ms)
                for heard in output.utterances:
                    self.transcripts.append(heard)
                    if heard.status != 'ok':
                        continue
                    if heard.text and self.perception.av_context is not None:
                        # As perception_node subscribes audio_node's transcripts.
                        self.perception.feed_transcript(heard.text, heard.end)
                    inputs.append(OrderedFusion.transcript(transcript_of(heard)))
                inputs += [OrderedFusion.cues(cue, '') for cue in output.cues]
                self._cues += output.cues
            alerts += self.ordered.receive(inputs, self._clock)
        return alerts


__all__ = ['AudioOutput', 'AudioWorker', 'MAX_AUDIO_PENDING', 'OfflinePipeline',
           'run_audio_stage']

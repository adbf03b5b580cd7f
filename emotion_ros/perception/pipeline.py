"""The perception pipeline: one RGB frame -> tracked per-person emotion estimates.

``PerceptionPipeline`` runs decode -> detect -> track -> emotion backend (all
persons of a frame in one batch) -> position, skipping the detector on frames whose
scene did not change and the emotion model for persons whose crop did not change
(:mod:`emotion_ros.perception.reuse`, ``reuse.*``); ``perception_node`` runs it live
and :class:`emotion_ros.pipeline.OfflinePipeline` runs it for the bag
evaluation and the benchmarks. ``RateLimiter`` is the live node's frame-rate cap.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.audio.pcm import SAMPLE_RATE
from emotion_ros.backends.audio_visual import AudioVisualOptions
from emotion_ros.backends.base import EmotionBackend
from emotion_ros.backends.factory import create_backend
from emotion_ros.backends.light import LightOptions
from emotion_ros.backends.llava import LlavaOptions
from emotion_ros.config.schema import field
from emotion_ros.perception.detectors.base import DetectorConfig, PersonDetector
from emotion_ros.perception.detectors.factory import create_detector
from emotion_ros.errors import EmotionRosError
from emotion_ros.perception.appearance import describe
from emotion_ros.perception.image_codec import crop, encode_jpeg
from emotion_ros.perception.localization import CameraModel, LocalizationConfig, locate
from emotion_ros.perception.reuse import (crop_thumbnail, EmotionCache, ReuseConfig,
                                          SceneChangeGate)
from emotion_ros.perception.tracking import PersonTracker, TrackerConfig
from emotion_ros.types import FrameResult, PersonEstimate

STAGES = ('decode', 'detect', 'track', 'emotion', 'persons')


@dataclasses.dataclass(frozen=True)
class EmotionConfig:
    """Which emotion backend runs, and each backend's options."""

    backend: str = field('light', 'Emotion model backend: light (CPU, face expression), '
                         'llava (fine-tuned LLaVA bundle, GPU) or audio_visual (sees and hears '
                         'each person, docs/audio_visual.md).',
                         choices=('light', 'llava', 'audio_visual'))
    light: LightOptions = field(LightOptions(), 'Options of the light backend.')
    llava: LlavaOptions = field(LlavaOptions(), 'Options of the llava backend.')
    audio_visual: AudioVisualOptions = field(AudioVisualOptions(),
                                             'Options of the audio_visual backend.')

    def options(self) -> object:
        """The options dataclass of the selected backend."""
        return getattr(self, self.backend)


@dataclasses.dataclass(frozen=True)
class PerceptionConfig:
    """Everything the perception pipeline needs (perception node parameters)."""

    detector: DetectorConfig = field(DetectorConfig(), 'Person detector.')
    tracker: TrackerConfig = field(TrackerConfig(), 'Person tracker.')
    emotion: EmotionConfig = field(EmotionConfig(), 'Emotion model.')
    max_rate_hz: float = field(
        5.0, 'At most this many frames per second are processed; newer frames replace older '
        'ones and the skipped ones are counted.', positive=True)
    thumbnails: bool = field(True, 'Attach a JPEG thumbnail of each person to its estimate.')
    thumbnail_px: int = field(96, 'Longest side of person thumbnails in pixels.', min=16,
                              max=512)
    localization: LocalizationConfig = field(LocalizationConfig(),
                                             'Person positions (CameraInfo, depth, tf2).')
    reuse: ReuseConfig = field(ReuseConfig(), 'Work skipped on frames that did not change '
                               '(detect on change, emotion reuse).')


class PerceptionPipeline:
    """detect -> track -> emotion for one frame at a time (thread-compatible, not reentrant)."""

    def __init__(self, config: PerceptionConfig) -> None:
        self.config = config
        self.detector: PersonDetector = create_detector(config.detector)
        self.tracker = PersonTracker(config.tracker)
        self.backend: EmotionBackend = create_backend(config.emotion.backend,
                                                      config.emotion.options())
        self._loaded = False
        self._last: Optional[Tuple[np.ndarray, FrameResult]] = None
        self._lock = threading.Lock()
        self.gate = SceneChangeGate(config.reuse)
        self.emotions = EmotionCache(config.reuse)
        self._model_id = ''
        # audio_visual backend only: crop buffers, latest voice/words, audio-only estimate.
        self.av_context = None
        self.audio_only_estimate = None

    @property
    def loaded(self) -> bool:
        """True between load() and close()."""
        return self._loaded

    def load(self) -> None:
        """Load detector and emotion model weights (ModelLoadError on failure)."""
        # The tracker and the scene gate match boxes with scipy, imported on first use: do it
        # now, not on the first frame with a person (it took ~1 s there on a loaded machine).
        import scipy.optimize  # noqa: F401

        self.detector.load()
        try:
            self.backend.load()
        except BaseException:
            self.detector.close()
            raise
        make_context = getattr(self.backend, 'make_context', None)
        self.av_context = make_context() if callable(make_context) else None
        self._model_id = self.backend.model_id
        self.gate.reset()
        self.emotions.reset()
        self._loaded = True

    def close(self) -> None:
        """Free the models (and GPU memory). Safe to call twice."""
        with self._lock:
            self.detector.close()
            self.backend.close()
            self.tracker.reset()
            self.gate.reset()
            self.emotions.reset()
            self._last = None
            self.av_context = None
            self.audio_only_estimate = None
            self._loaded = False

    @property
    def model_id(self) -> str:
        """Identifies the detector and emotion model that produce the estimates."""
        return f'{self.backend.model_id} | {self.detector.name}'

    def process(self, rgb: np.ndarray, stamp: float, frame_id: str = '', camera: str = '',
                camera_model: Optional[CameraModel] = None,
                depth_m: Optional[np.ndarray] = None) -> FrameResult:
        """Run detection, tracking and the emotion model on one RGB uint8 frame.

        ``camera`` qualifies the track ids; with ``camera_model`` (from CameraInfo) every
        person gets a position (3D with ``depth_m``, an aligned depth image in metres).
        """
        if not self._loaded:
            raise EmotionRosError('perception pipeline is not loaded (call load() first)')
        with self._lock:
            timings: Dict[str, float] = {}
            t0 = time.perf_counter()
            run, thumb = self.gate.check(rgb, stamp)
            if run:
                detections = self.detector.detect(rgb)
                self.gate.detected(thumb, stamp, detections)
            else:
                detections = self.gate.reused()
            t1 = time.perf_counter()
            tracks = self.tracker.update(detections, stamp)
            t2 = time.perf_counter()
            if self.av_context is not None:
                self._give_av_context(rgb, tracks, stamp)
            outputs, reused, pending = self._emotions(rgb, tracks, stamp)
            t3 = time.perf_counter()
            persons: List[PersonEstimate] = []
            model_id = self._model_id or self.backend.model_id
            for track, output, entry in zip(tracks, outputs, reused):
                box = tuple(float(v) for v in track.box)
                if entry is not None:
                    thumb_jpeg, appearance = entry['thumb'], entry['appearance']
                else:
                    thumb_jpeg = self._thumbnail(rgb, track.box) if self.config.thumbnails \
                        else b''
                    appearance = describe(rgb, box)
                position = None
                if camera_model is not None and self.config.localization.enabled:
                    position = locate(camera_model, box, (int(rgb.shape[1]), int(rgb.shape[0])),
                                      self.config.localization, depth_m)
                persons.append(PersonEstimate(
                    track_id=track.track_id, box=box,
                    detection_confidence=float(track.score), emotion=output,
                    model_id=model_id, crop_jpeg=thumb_jpeg, camera=camera,
                    evidence_weight=self.backend.visual_evidence_weight, position=position,
                    appearance=appearance))
            t4 = time.perf_counter()
            self._remember(tracks, persons, pending, stamp)
            timings['detect'] = (t1 - t0) * 1e3
            timings['track'] = (t2 - t1) * 1e3
            timings['emotion'] = (t3 - t2) * 1e3
            timings['persons'] = (t4 - t3) * 1e3
            voice = None
            if self.audio_only_estimate is not None and not tracks:
                voice = PersonEstimate(
                    track_id=0, box=(0.0, 0.0, 0.0, 0.0), detection_confidence=0.0,
                    emotion=self.audio_only_estimate, model_id=model_id,
                    camera=camera, evidence_weight=self.backend.visual_evidence_weight)
            result = FrameResult(stamp=stamp, frame_id=frame_id, width=int(rgb.shape[1]),
                                 height=int(rgb.shape[0]), persons=persons, timings_ms=timings,
                                 camera=camera, voice=voice)
            self._last = (rgb, result)
            return result

    def set_reuse(self, cfg: ReuseConfig) -> None:
        """Change the ``reuse.*`` rules at run time (the next frame is detected and scored)."""
        with self._lock:
            self.config = dataclasses.replace(self.config, reuse=cfg)
            self.gate.cfg = cfg
            self.emotions.cfg = cfg
            self.gate.reset()
            self.emotions.reset()

    def reuse_counts(self) -> Dict[str, int]:
        """Detector runs and skips, persons scored and reused since start (diagnostics)."""
        return {'detector_runs': self.gate.runs, 'detector_skips': self.gate.skips,
                'persons_scored': self.emotions.scored,
                'persons_reused': self.emotions.reused}

    @property
    def reuses_emotions(self) -> bool:
        """True when persons' emotions may be reused (``reuse.reuse_emotion`` and a backend
        whose output depends on the person's pixels only)."""
        return self.config.reuse.reuse_emotion and bool(
            getattr(self.backend, 'pixels_only', False)) and self.av_context is None

    def _emotions(self, rgb: np.ndarray, tracks: Sequence, stamp: float
                  ) -> Tuple[List, List[Optional[Dict]], List]:
        """Each track's emotion (the ones to score in one batch), the reused cache extras
        (thumbnail, appearance; None: scored now) and what to store once the persons are
        built (None: nothing)."""
        none: List = [None] * len(tracks)
        if not tracks:
            return [], [], []
        if not self.reuses_emotions:
            self.emotions.scored += len(tracks)
            return list(self.backend.estimate(rgb, [t.box for t in tracks])), none, none
        margin = float(getattr(self.backend, 'context_margin', 0.1))
        thumbs = [crop_thumbnail(rgb, t.box, margin) for t in tracks]
        entries = [self.emotions.lookup(t.track_id, t.box, th, stamp)
                   for t, th in zip(tracks, thumbs)]
        todo = [i for i, e in enumerate(entries) if e is None]
        fresh = list(self.backend.estimate(rgb, [tracks[i].box for i in todo])) if todo else []
        outputs: List = [None] * len(tracks)
        for i, out in zip(todo, fresh):
            outputs[i] = out
        reused: List[Optional[Dict]] = [None] * len(tracks)
        for i, entry in enumerate(entries):
            if entry is not None:
                outputs[i] = copy.copy(entry.output)
                reused[i] = entry.extras
        self.emotions.scored += len(todo)
        self.emotions.reused += len(tracks) - len(todo)
        # Stored after the persons are built (their thumbnails and appearance go along).
        scored = set(todo)
        pending = [(thumbs[i], outputs[i]) if i in scored else None for i in range(len(tracks))]
        return outputs, reused, pending

    def _remember(self, tracks: Sequence, persons: Sequence[PersonEstimate], pending: List,
                  stamp: float) -> None:
        """Keep the newly scored persons' emotions for reuse; forget tracks not in view."""
        if not self.reuses_emotions:
            return
        for track, person, item in zip(tracks, persons, pending):
            if item is not None:
                thumb, output = item
                self.emotions.store(track.track_id, track.box, thumb, stamp, output,
                                    {'thumb': person.crop_jpeg,
                                     'appearance': person.appearance})
        self.emotions.keep_only([t.track_id for t in tracks])

    def _give_av_context(self, rgb: np.ndarray, tracks: Sequence, stamp: float) -> None:
        """audio_visual: buffer crops, give each track its context; nobody seen: audio only."""
        pairs = [(t.track_id, t.box) for t in tracks]
        self.av_context.add_frame(rgb, pairs, stamp)
        if pairs:
            self.backend.set_context(self.av_context.inputs_for(pairs, stamp))
            self.audio_only_estimate = None
        else:
            heard = self.av_context.audio_only(stamp)
            self.audio_only_estimate = self.backend.estimate_audio_only(heard) \
                if heard is not None else None

    def feed_audio(self, samples: np.ndarray, end_stamp: float, rate: int = SAMPLE_RATE) -> None:
        """Give the audio_visual backend microphone audio (mono, ``rate`` Hz); others ignore it.

        The context resamples it to the models' 16 kHz (:mod:`emotion_ros.audio.preprocess`).
        """
        context = self.av_context
        if context is not None:
            context.feed_audio(samples, end_stamp, rate)

    def feed_transcript(self, text: str, stamp: float) -> None:
        """Give the audio_visual backend the latest transcript; others ignore it."""
        context = self.av_context
        if context is not None:
            context.feed_transcript(text, stamp)

    def explain(self, track_id: int, max_new_tokens: int) -> str:
        """Explain one person of the last processed frame in words (llava backend only).

        Raises:
            EmotionRosError: when the track is not in the last frame.
            NotImplementedError: when the backend cannot generate text.
        """
        if not self.backend.can_explain:
            raise NotImplementedError(
                f'the {self.backend.name!r} backend cannot explain; use emotion.backend: llava')
        last = self._last
        if last is None:
            raise EmotionRosError('no frame processed yet')
        rgb, result = last
        for person in result.persons:
            if person.track_id == track_id:
                with self._lock:
                    return self.backend.explain(rgb, person.box, max_new_tokens)
        raise EmotionRosError(f'track {track_id} is not in the last frame '
                              f'(tracks: {[p.track_id for p in result.persons]})')

    def explain_box(self, rgb: np.ndarray, box: Sequence[float], max_new_tokens: int) -> str:
        """Explain the person in ``box`` of ``rgb`` (llava backend only), serialised with
        :meth:`process` and :meth:`explain` by the pipeline lock.

        Raises:
            NotImplementedError: when the backend cannot generate text.
        """
        if not self.backend.can_explain:
            raise NotImplementedError(
                f'the {self.backend.name!r} backend cannot explain; use emotion.backend: llava')
        with self._lock:
            return self.backend.explain(rgb, box, max_new_tokens)

    def _thumbnail(self, rgb: np.ndarray, box: Sequence[float]) -> bytes:
        patch = crop(rgb, box, margin=0.05)
        if patch.size == 0:
            return b''
        h, w = patch.shape[:2]
        scale = self.config.thumbnail_px / max(h, w)
        if scale < 1:
            import cv2  # local: cv2 is heavy and only needed for thumbnails
            patch = cv2.resize(patch, (max(1, int(w * scale)), max(1, int(h * scale))),
                               interpolation=cv2.INTER_AREA)
        return encode_jpeg(patch, quality=80)


class RateLimiter:
    """Lets through at most ``rate_hz`` events per second of message time.

    Keeps the average rate even when stamps jitter around the period, and
    starts over when time goes backwards (a looping bag).
    """

    def __init__(self, rate_hz: float) -> None:
        self.period = 1.0 / rate_hz
        self._next: Optional[float] = None
        self._prev = -np.inf

    def ready(self, stamp: float) -> bool:
        """True (and consume the slot) when an event at ``stamp`` may be processed."""
        if self._next is None or stamp < self._prev:
            self._next = stamp
        self._prev = stamp
        if stamp + 1e-6 < self._next:
            return False
        self._next = max(self._next + self.period, stamp + 0.5 * self.period)
        return True


__all__ = ['EmotionConfig', 'PerceptionConfig', 'PerceptionPipeline', 'RateLimiter', 'STAGES']

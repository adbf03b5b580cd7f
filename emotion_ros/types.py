"""Plain data types passed between the pipeline stages (no ROS)."""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from emotion_ros.llm.contract import NUM_CATEGORIES

Box = Tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in pixels


@dataclasses.dataclass(frozen=True)
class Detection:
    """A person found in one image."""

    box: Box
    score: float


@dataclasses.dataclass
class EmotionOutput:
    """What an emotion backend says about one person.

    ``scores`` holds the 26 category scores in contract order, each in [0, 1];
    ``vad`` holds valence, arousal, dominance on 1-10 (NaN when unknown).
    ``class_names``/``class_scores``: a discrete head's classes and their
    probabilities (audio_visual bundles with a label set), else empty.
    """

    scores: np.ndarray
    vad: Tuple[float, float, float]
    face_visible: bool = True
    explanation: str = ''
    class_names: Tuple[str, ...] = ()
    class_scores: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float32)
        if self.scores.shape != (NUM_CATEGORIES,):
            raise ValueError(f'expected {NUM_CATEGORIES} category scores, '
                             f'got shape {self.scores.shape}')
        self.class_names = tuple(self.class_names)
        if self.class_scores is not None or self.class_names:
            self.class_scores = np.asarray(
                self.class_scores if self.class_scores is not None else (), np.float32)
            if self.class_scores.shape != (len(self.class_names),):
                raise ValueError(f'{len(self.class_names)} class names but class scores of '
                                 f'shape {self.class_scores.shape}')

    @classmethod
    def unknown(cls) -> 'EmotionOutput':
        """An estimate for a person the model could not judge (no face, ...)."""
        return cls(scores=np.zeros(NUM_CATEGORIES, np.float32),
                   vad=(math.nan, math.nan, math.nan), face_visible=False)


@dataclasses.dataclass
class Position:
    """Where a person is: a bearing in the camera's optical frame and, when known, a 3D point.

    ``azimuth``/``elevation`` (radians) are measured in ``camera_frame`` (optical
    convention: x right, y down, z forward): azimuth positive to the right of
    the optical axis, elevation positive above it. ``xyz`` is in ``frame_id``
    (the optical frame, or a fixed frame after a tf2 transform), NaN when only
    the bearing is known; ``covariance`` is its row-major 3x3 covariance (m^2).
    ``source`` says how the range was found: 'depth', 'size' (assumed person
    height) or 'bearing' (no range).
    """

    frame_id: str
    xyz: Tuple[float, float, float]
    covariance: Tuple[float, ...]
    azimuth: float
    elevation: float
    camera_frame: str
    source: str = 'bearing'

    @property
    def has_point(self) -> bool:
        """True when ``xyz`` is a 3D point (not only a bearing)."""
        return all(math.isfinite(v) for v in self.xyz)

    @property
    def sigma_m(self) -> float:
        """Largest standard deviation (m) along x, y or z (inf without a point)."""
        if not self.has_point:
            return math.inf
        return math.sqrt(max(self.covariance[0], self.covariance[4], self.covariance[8]))


@dataclasses.dataclass
class PersonEstimate:
    """One tracked person in one frame with their emotion estimate.

    ``camera`` names the camera (its namespace) so that track ids of several
    cameras do not collide; ``evidence_weight`` is how much the backend's
    visual evidence may weigh in the distress fusion (declared by the backend,
    see EmotionBackend.visual_evidence_weight).
    """

    track_id: int
    box: Box
    detection_confidence: float
    emotion: EmotionOutput
    model_id: str
    crop_jpeg: bytes = b''
    camera: str = ''
    evidence_weight: float = 1.0
    position: Optional[Position] = None
    #: Clothing colour descriptor (emotion_ros.perception.appearance); empty when unknown.
    appearance: Tuple[float, ...] = ()


@dataclasses.dataclass
class FrameResult:
    """The perception pipeline's output for one frame."""

    stamp: float  # seconds, the image's timestamp
    frame_id: str
    width: int
    height: int
    persons: List[PersonEstimate]
    timings_ms: Dict[str, float]  # per stage: decode, detect, track, emotion
    camera: str = ''  # camera name (namespace); qualifies the track ids of its persons
    # audio_visual backend, nobody visible: the voice (and words) scored alone. track_id
    # 0, an empty box, emotion.face_visible False. None otherwise.
    voice: Optional[PersonEstimate] = None


@dataclasses.dataclass
class AudioCueResult:
    """Cues extracted from one analysis window of audio."""

    stamp: float  # seconds, end of the window
    window_s: float
    speech_probability: float
    voice_active: bool
    help_detected: bool
    keywords: List[str]
    keyword_confidence: float
    scream_score: float
    loudness_dbfs: float
    pitch_hz: float
    spectral_centroid_hz: float
    vocal_arousal: float  # 1-10, NaN without voice


# Distress levels, defined here once: the fusion, DistressAlert.msg / Incident.msg constants
# (checked by test_incidents.py) and docs/messages.md use these.
#: Worth a look: some visual or audio evidence, not yet enough to act on.
LEVEL_WATCH = 1
#: Likely needs help: sustained, corroborated evidence, or a call for help heard.
LEVEL_DISTRESS = 2
#: Act now: a call for help with a distressed person in view, or very strong fused evidence.
LEVEL_EMERGENCY = 3
LEVEL_NAMES = {LEVEL_WATCH: 'WATCH', LEVEL_DISTRESS: 'DISTRESS', LEVEL_EMERGENCY: 'EMERGENCY'}


@dataclasses.dataclass
class Transcript:
    """One decoded utterance (plain form of emotion_ros_msgs/Transcript)."""

    stamp: float  # start of the utterance
    end: float
    frame_id: str
    text: str
    help_detected: bool = False
    help_phrase: str = ''
    help_score: float = 0.0
    language: str = ''
    confidence: float = 0.0
    detector: str = ''
    model_id: str = ''  # the model the detector ran (name and version, or a path)


@dataclasses.dataclass
class Alert:
    """A distress alert raised by the fusion: an incident was created or changed level.

    ``stamp``/``frame_id`` are those of the evidence that raised it (the image
    for visual evidence, the audio message for audio evidence); the person
    evidence keeps its own image stamp and frame in ``person_stamp`` and
    ``person_frame_id``.
    """

    stamp: float
    track_id: int  # 0: audio only
    level: int  # LEVEL_WATCH, LEVEL_DISTRESS, LEVEL_EMERGENCY
    score: float
    reasons: List[str]
    person: Optional[PersonEstimate] = None
    audio: Optional[AudioCueResult] = None
    frame_id: str = ''
    incident_id: int = 0
    camera: str = ''
    person_stamp: float = math.nan
    person_frame_id: str = ''
    transcript: Optional[Transcript] = None

    LEVEL_WATCH = LEVEL_WATCH
    LEVEL_DISTRESS = LEVEL_DISTRESS
    LEVEL_EMERGENCY = LEVEL_EMERGENCY
    AUDIO_ONLY = 0

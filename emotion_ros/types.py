"""Plain data types passed between the pipeline stages (no ROS)."""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from emotion_ros.contract import NUM_CATEGORIES

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
    """

    scores: np.ndarray
    vad: Tuple[float, float, float]
    face_visible: bool = True
    explanation: str = ''

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float32)
        if self.scores.shape != (NUM_CATEGORIES,):
            raise ValueError(f'expected {NUM_CATEGORIES} category scores, '
                             f'got shape {self.scores.shape}')

    @classmethod
    def unknown(cls) -> 'EmotionOutput':
        """An estimate for a person the model could not judge (no face, ...)."""
        return cls(scores=np.zeros(NUM_CATEGORIES, np.float32),
                   vad=(math.nan, math.nan, math.nan), face_visible=False)


@dataclasses.dataclass
class PersonEstimate:
    """One tracked person in one frame with their emotion estimate."""

    track_id: int
    box: Box
    detection_confidence: float
    emotion: EmotionOutput
    model_id: str
    crop_jpeg: bytes = b''


@dataclasses.dataclass
class FrameResult:
    """The perception pipeline's output for one frame."""

    stamp: float  # seconds, the image's timestamp
    frame_id: str
    width: int
    height: int
    persons: List[PersonEstimate]
    timings_ms: Dict[str, float]  # per stage: decode, detect, track, emotion


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


@dataclasses.dataclass
class Alert:
    """A distress alert raised by the fusion."""

    stamp: float
    track_id: int  # 0: audio only
    level: int  # 1 watch, 2 distress, 3 emergency
    score: float
    reasons: List[str]
    person: Optional[PersonEstimate] = None
    audio: Optional[AudioCueResult] = None

    LEVEL_WATCH = 1
    LEVEL_DISTRESS = 2
    LEVEL_EMERGENCY = 3
    AUDIO_ONLY = 0

"""Skip work on frames that did not change: detect on change, reuse a person's emotion.

A camera on a robot that stands still, or a bag of a mission, sees the same scene
for many frames in a row; detecting and scoring every one of them costs ~100 ms a
frame on a CPU core and gives the same answer. Two rules, both on cheap grey
thumbnails (an area-averaged downscale, so that sensor noise averages out):

- :class:`SceneChangeGate` (detect on change): the detector runs when the frame's
  ``32 x 24`` grey thumbnail differs from the thumbnail of the frame of the last
  detection by more than ``scene_change_threshold`` grey levels in some cell (the
  largest absolute cell difference: a person appearing or moving anywhere changes
  some cell a lot, noise changes none much), and at least every
  ``max_detect_interval_s`` of frame time anyway. It is skipped only after two
  detections in a row found the same persons (same count, boxes overlapping by IoU
  >= 0.5), so that one unlucky frame (a face the detector missed under noise) is not
  held on to. In between, the last detections are given to the tracker again, so
  tracks keep their ids.
- :class:`EmotionCache` (reuse a person's emotion): a track whose box has not moved
  (every side within 5 % of the box size) and whose ``16 x 16`` crop thumbnail (the
  box widened by the backend's context margin: the light backend's face-search
  ``box_margin``, 10 %) differs from the one
  it was scored on by at most ``crop_change_threshold`` grey levels in every cell
  keeps its emotion, thumbnail and appearance, for at most ``max_emotion_age_s``.

Comparing against the frame of the last detection (or scoring), not the previous
frame, keeps a slow drift from creeping past the thresholds. Time is frame time
(stamps), so a bag replay skips exactly what the live node would; a stamp going
backwards (a looping bag) starts over. No ROS here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.config.schema import field
from emotion_ros.types import Box, Detection

#: Scene thumbnail size (width, height): 20 x 20 pixel cells at 640 x 480.
SCENE_THUMB = (32, 24)
#: Person crop thumbnail size (width, height).
CROP_THUMB = (16, 16)
#: The crop compared is the person box widened by this fraction on each side (default).
CROP_MARGIN = 0.1
#: A box whose sides moved by more than this fraction of its width/height is re-scored.
BOX_TOLERANCE = 0.05
#: Two detections agree when their boxes pair up with at least this IoU.
AGREE_IOU = 0.5


@dataclasses.dataclass(frozen=True)
class ReuseConfig:
    """What the pipeline may skip on unchanged frames (``reuse.*`` parameters)."""

    detect_on_change: bool = field(
        True, 'Run the person detector only when the scene changed since the frame of the last '
        'detection (or max_detect_interval_s passed); in between the tracker gets the last '
        'detections again. false: detect on every processed frame.')
    scene_change_threshold: float = field(
        6.0, 'Scene change that makes the detector run: the largest absolute difference, in '
        "grey levels (0-255), between a cell of the frame's 32x24 grey thumbnail and the "
        'same cell at the last detection (a cell is 20x20 pixels of a 640x480 frame; sensor '
        'noise stays under ~2, a person appearing or moving changes a cell by tens).',
        min=0.0, max=255.0)
    max_detect_interval_s: float = field(
        4.0, 'The detector runs at least this often (seconds of frame time), changed or not '
        '(a backstop: a person appearing or moving 2 pixels already changes the scene).',
        min=0.0, max=3600.0)
    reuse_emotion: bool = field(
        True, "Keep a person's emotion estimate (and thumbnail) while their box has not "
        'moved and their crop has not changed (backends that see only pixels: light); '
        'false: score every person on every processed frame.')
    crop_change_threshold: float = field(
        4.0, "Crop change that makes a person's emotion be scored again: the largest absolute "
        'difference, in grey levels, between a cell of the 16x16 grey thumbnail of the person '
        "box (widened by the backend's face-search margin, light: box_margin) and the one it "
        'was last scored on (sensor noise stays under ~2 for a person 100 pixels wide).',
        min=0.0, max=255.0)
    max_emotion_age_s: float = field(
        3.0, "A person's emotion is scored again at least this often (seconds of frame time), "
        'even when their crop did not change beyond crop_change_threshold.',
        min=0.0, max=3600.0)


def grey_thumbnail(rgb: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Area-averaged ``size`` (width, height) grey thumbnail of an RGB image, float32."""
    import cv2

    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return small.astype(np.float32).mean(axis=2)


def thumbnail_change(a: np.ndarray, b: np.ndarray) -> float:
    """The largest absolute cell difference of two thumbnails (inf when their shapes differ)."""
    if a.shape != b.shape:
        return float('inf')
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def crop_thumbnail(rgb: np.ndarray, box: Sequence[float],
                   margin: float = CROP_MARGIN) -> Optional[np.ndarray]:
    """The grey thumbnail of ``box`` widened by ``margin`` on each side (None when empty)."""
    from emotion_ros.perception.image_codec import clip_box

    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = clip_box(box, width, height, margin)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return grey_thumbnail(rgb[y0:y1, x0:x1], CROP_THUMB)


def same_detections(a: Sequence[Detection], b: Sequence[Detection]) -> bool:
    """True when ``a`` and ``b`` found the same persons: same count, boxes paired by IoU."""
    if len(a) != len(b):
        return False
    if not a:
        return True
    from scipy.optimize import linear_sum_assignment

    from emotion_ros.geometry import iou_matrix
    iou = iou_matrix(np.array([d.box for d in a], np.float64),
                     np.array([d.box for d in b], np.float64))
    rows, cols = linear_sum_assignment(-iou)
    return bool(np.all(iou[rows, cols] >= AGREE_IOU))


def same_box(a: Sequence[float], b: Sequence[float], tolerance: float = BOX_TOLERANCE) -> bool:
    """True when every side of ``b`` is within ``tolerance`` of ``a``'s width/height."""
    w = max(float(a[2]) - float(a[0]), 1.0)
    h = max(float(a[3]) - float(a[1]), 1.0)
    return (abs(float(a[0]) - float(b[0])) <= tolerance * w
            and abs(float(a[2]) - float(b[2])) <= tolerance * w
            and abs(float(a[1]) - float(b[1])) <= tolerance * h
            and abs(float(a[3]) - float(b[3])) <= tolerance * h)


class SceneChangeGate:
    """Decides per frame whether the detector must run (see the module docstring)."""

    def __init__(self, cfg: ReuseConfig) -> None:
        """Start with no detection: the first frame is always detected."""
        self.cfg = cfg
        self._thumb: Optional[np.ndarray] = None
        self._shape: Tuple[int, ...] = ()
        self._checked_shape: Tuple[int, ...] = ()
        self._stamp = -np.inf
        self._detections: List[Detection] = []
        #: The last two detections found the same persons.
        self.stable = False
        #: The change measure of the last frame checked (grey levels; inf: first or forced).
        self.last_change = float('inf')
        self.runs = 0
        self.skips = 0

    def reset(self) -> None:
        """Forget the last detection (the next frame is detected)."""
        self._thumb = None
        self._shape = ()
        self._stamp = -np.inf
        self._detections = []
        self.stable = False

    def check(self, rgb: np.ndarray, stamp: float) -> Tuple[bool, np.ndarray]:
        """(must the detector run on this frame, the frame's thumbnail).

        It must on the first frame, after a stamp going back, for a new image size, after
        ``max_detect_interval_s``, until two detections in a row agree, and when the scene
        changed by more than ``scene_change_threshold``; always when ``detect_on_change``
        is off.
        """
        thumb = grey_thumbnail(rgb, SCENE_THUMB)
        self._checked_shape = tuple(rgb.shape)
        if self._thumb is None or stamp < self._stamp or rgb.shape != self._shape:
            self.last_change = float('inf')
            return True, thumb
        self.last_change = thumbnail_change(thumb, self._thumb)
        if not self.cfg.detect_on_change or not self.stable:
            return True, thumb
        if stamp - self._stamp >= self.cfg.max_detect_interval_s:
            return True, thumb
        return self.last_change > self.cfg.scene_change_threshold, thumb

    def detected(self, thumb: np.ndarray, stamp: float, detections: Sequence[Detection]) -> None:
        """Remember the frame last checked (the detector ran on it) and what it found."""
        self._thumb = thumb
        self._shape = self._checked_shape
        self.stable = self._stamp > -np.inf and same_detections(detections, self._detections)
        self._stamp = float(stamp)
        self._detections = list(detections)
        self.runs += 1

    def reused(self) -> List[Detection]:
        """The last detections, for a frame the detector skips."""
        self.skips += 1
        return list(self._detections)


@dataclasses.dataclass
class _Entry:
    box: Box
    thumb: np.ndarray
    stamp: float
    output: Any  # EmotionOutput
    extras: Dict[str, Any]


class EmotionCache:
    """Per-track emotion outputs that may be reused (see the module docstring)."""

    def __init__(self, cfg: ReuseConfig) -> None:
        """Start empty."""
        self.cfg = cfg
        self._entries: Dict[int, _Entry] = {}
        self.scored = 0
        self.reused = 0

    def reset(self) -> None:
        """Forget every track."""
        self._entries.clear()

    def lookup(self, track_id: int, box: Box, thumb: Optional[np.ndarray],
               stamp: float) -> Optional[_Entry]:
        """The entry to reuse for this track now, or None (score it)."""
        entry = self._entries.get(track_id)
        if not self.cfg.reuse_emotion or entry is None or thumb is None:
            return None
        if not 0.0 <= stamp - entry.stamp < self.cfg.max_emotion_age_s:
            return None
        if not same_box(entry.box, box):
            return None
        if thumbnail_change(thumb, entry.thumb) > self.cfg.crop_change_threshold:
            return None
        return entry

    def store(self, track_id: int, box: Box, thumb: Optional[np.ndarray], stamp: float,
              output: Any, extras: Dict[str, Any]) -> None:
        """Remember what a track was scored as (nothing without a thumbnail)."""
        if thumb is not None:
            self._entries[track_id] = _Entry(tuple(box), thumb, float(stamp), output,
                                             extras)  # type: ignore[arg-type]

    def keep_only(self, track_ids: Sequence[int]) -> None:
        """Drop the tracks not in this frame (a person seen again is scored again)."""
        keep = set(track_ids)
        for tid in [t for t in self._entries if t not in keep]:
            del self._entries[tid]


__all__ = ['AGREE_IOU', 'BOX_TOLERANCE', 'CROP_MARGIN', 'CROP_THUMB', 'EmotionCache',
           'ReuseConfig', 'SCENE_THUMB', 'SceneChangeGate', 'crop_thumbnail', 'grey_thumbnail',
           'same_box', 'same_detections',
           'thumbnail_change']

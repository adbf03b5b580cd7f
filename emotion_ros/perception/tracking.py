"""Multi-person tracking by IoU with Hungarian assignment (no ROS).

Each frame's detections are matched to the existing tracks by the IoU of the
detection box with the track's predicted box (last box moved by a smoothed
constant velocity), using ``scipy.optimize.linear_sum_assignment``. Matches
below ``iou_threshold`` are rejected. Unmatched detections start new tracks;
tracks unseen for longer than ``max_missed_s`` are dropped. Track ids start at
1 and are never reused, not even after :meth:`PersonTracker.reset`, so that
per-track state downstream (emotion smoothing, alert cooldowns) can never be
inherited by a different person.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from emotion_ros.config.schema import field
from emotion_ros.geometry import iou_matrix
from emotion_ros.errors import InputError
from emotion_ros.types import Box, Detection


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """How detections are linked over time (``tracker.*`` parameters)."""

    iou_threshold: float = field(0.3, "Minimum IoU between a detection and a track's predicted "
                                 'box to continue that track', min=0.0, max=1.0)
    # 2 s: at the 2-5 processed frames per second of a CPU robot, a busy moment that skips
    # a few frames must not hand everyone new ids.
    max_missed_s: float = field(2.0, 'A track not seen for longer than this (seconds) is '
                                'dropped; a person seen again later gets a new id', min=0.0,
                                max=3600.0)
    min_hits: int = field(1, 'Detections needed before a track is reported (1: at once)',
                          min=1, max=100)
    use_velocity: bool = field(True, "Predict each track's box with a constant velocity "
                               'before matching (helps with walking people and low frame rates)')
    velocity_smoothing: float = field(0.5, 'Weight of the newest velocity estimate in the '
                                      'exponential moving average (1: newest only)',
                                      min=0.0, max=1.0)


@dataclasses.dataclass
class Track:
    """A tracked person as reported for one frame."""

    track_id: int
    box: Box
    score: float
    hits: int
    last_seen: float


@dataclasses.dataclass
class _State:
    track_id: int
    box: np.ndarray
    score: float
    hits: int
    last_seen: float
    velocity: np.ndarray  # pixels per second, per box coordinate

    def predict(self, stamp: float, use_velocity: bool) -> np.ndarray:
        if not use_velocity:
            return self.box
        return self.box + self.velocity * max(0.0, stamp - self.last_seen)


class PersonTracker:
    """Gives persons stable ids across frames."""

    def __init__(self, cfg: TrackerConfig) -> None:
        """Start with no tracks; the first id handed out is 1."""
        self.cfg = cfg
        self._tracks: Dict[int, _State] = {}
        self._next_id = 1
        self._last_stamp: Optional[float] = None

    @property
    def num_tracks(self) -> int:
        """Tracks currently alive (confirmed or not)."""
        return len(self._tracks)

    def reset(self) -> None:
        """Forget all tracks (ids keep counting up, they are never reused)."""
        self._tracks.clear()
        self._last_stamp = None

    def update(self, detections: Sequence[Detection], stamp: float) -> List[Track]:
        """Match one frame's detections to the tracks.

        A stamp earlier than the previous one (bag replayed from the start,
        simulated clock reset) resets the tracker first.

        Args:
            detections: this frame's person detections.
            stamp: the frame's time in seconds.

        Returns:
            The confirmed tracks (``hits >= min_hits``) matched in this frame,
            in the order of the detections they matched.

        Raises:
            InputError: ``kind='tracker_input'`` for a non-finite stamp, or a
                detection box with NaN/inf or x_max < x_min.
        """
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise InputError(f'tracker stamp must be finite, got {stamp}', kind='tracker_input')
        boxes = np.zeros((len(detections), 4), np.float64)
        for i, det in enumerate(detections):
            box = np.asarray(det.box, np.float64)
            if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] < box[0] \
                    or box[3] < box[1] or not math.isfinite(det.score):
                raise InputError(f'detection {i} has an invalid box or score: {det}',
                                 kind='tracker_input')
            boxes[i] = box
        if self._last_stamp is not None and stamp < self._last_stamp:
            self.reset()
        self._last_stamp = stamp

        # Drop tracks that have been gone too long.
        for tid in [t for t, s in self._tracks.items()
                    if stamp - s.last_seen > self.cfg.max_missed_s]:
            del self._tracks[tid]

        states = list(self._tracks.values())
        matched_state: List[Optional[_State]] = [None] * len(detections)
        if states and len(detections):
            predicted = np.stack([s.predict(stamp, self.cfg.use_velocity) for s in states])
            iou = iou_matrix(boxes, predicted)
            from scipy.optimize import linear_sum_assignment

            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.cfg.iou_threshold and iou[r, c] > 0.0:
                    matched_state[r] = states[c]

        out: List[Track] = []
        for i, det in enumerate(detections):
            state = matched_state[i]
            if state is None:
                state = _State(track_id=self._next_id, box=boxes[i].copy(),
                               score=float(det.score), hits=1, last_seen=stamp,
                               velocity=np.zeros(4))
                self._next_id += 1
                self._tracks[state.track_id] = state
            else:
                dt = stamp - state.last_seen
                if dt > 1e-6:
                    measured = (boxes[i] - state.box) / dt
                    alpha = self.cfg.velocity_smoothing if state.hits > 1 else 1.0
                    state.velocity = alpha * measured + (1.0 - alpha) * state.velocity
                state.box = boxes[i].copy()
                state.score = float(det.score)
                state.hits += 1
                state.last_seen = stamp
            if state.hits >= self.cfg.min_hits:
                out.append(Track(track_id=state.track_id,
                                 box=tuple(float(v) for v in state.box),  # type: ignore[arg-type]
                                 score=state.score, hits=state.hits, last_seen=state.last_seen))
        return out

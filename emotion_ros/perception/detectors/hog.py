"""``hog``: OpenCV's HOG + linear SVM people detector (built into OpenCV 4.x).

Finds upright, whole, reasonably large people; slow and weak, kept as a
face-independent baseline.
"""

from __future__ import annotations

import math
from typing import Any, List

import numpy as np

from emotion_ros.errors import ModelLoadError
from emotion_ros.perception.detectors.base import DetectorConfig, nms, PersonDetector
from emotion_ros.types import Detection


class HogDetector(PersonDetector):
    """OpenCV's HOG people detector (Dalal-Triggs, 64 x 128 windows)."""

    name = 'hog:opencv-default-people'

    def __init__(self, cfg: DetectorConfig) -> None:
        """Keep the config; ``load()`` builds the descriptor."""
        super().__init__(cfg)
        self._hog: Any = None

    @property
    def loaded(self) -> bool:
        """True between a successful ``load()`` and ``close()``."""
        return self._hog is not None

    def load(self) -> None:
        """Build the HOG descriptor with OpenCV's default people SVM.

        Raises:
            ModelLoadError: on OpenCV builds without HOG (5.x).
        """
        import cv2

        if not hasattr(cv2, 'HOGDescriptor'):
            raise ModelLoadError(f'OpenCV {cv2.__version__} has no HOGDescriptor (removed in '
                                 '5.x): install opencv-python-headless<5')
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self._hog = hog

    def close(self) -> None:
        """Drop the descriptor."""
        self._hog = None

    def _detect(self, rgb: np.ndarray) -> List[Detection]:
        rects, weights = self._hog.detectMultiScale(
            rgb, hitThreshold=self.cfg.hog_hit_threshold, winStride=(8, 8), padding=(8, 8),
            scale=1.05)
        if len(rects) == 0:
            return []
        weights = np.asarray(weights, np.float64).reshape(-1)
        dets = []
        for (x, y, w, h), margin in zip(rects, weights):
            # The 64x128 window has ~8 px of context around the person on each side.
            dx, dy = 0.125 * w, 0.0625 * h
            score = 1.0 / (1.0 + math.exp(-2.0 * float(margin)))  # SVM margin -> (0, 1)
            if score >= self.cfg.confidence:
                dets.append(Detection(box=(x + dx, y + dy, x + w - dx, y + h - dy), score=score))
        if not dets:
            return []
        keep = nms(np.array([d.box for d in dets]), np.array([d.score for d in dets]),
                   self.cfg.nms_iou)
        return [dets[i] for i in keep]

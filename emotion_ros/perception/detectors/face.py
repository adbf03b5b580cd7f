"""``face``: a face-anchored detector that needs no download.

mediapipe 0.10.21's BlazeFace models (shipped in the wheel) find faces on the
whole image and on overlapping tiles, and a body box is extrapolated from each
face (:func:`emotion_ros.perception.detectors.base.body_box_from_face`). It
finds people whose face is visible, which is what the emotion models need anyway.
"""

from __future__ import annotations

from typing import List

import numpy as np

from emotion_ros.perception.detectors.base import (body_box_from_face, DetectorConfig, nms,
                                                   PersonDetector)
from emotion_ros.perception.detectors.faces import FaceFinder
from emotion_ros.types import Detection


class FaceAnchoredDetector(PersonDetector):
    """Persons from faces (mediapipe BlazeFace) with an extrapolated body box."""

    name = 'face:mediapipe-blazeface'

    def __init__(self, cfg: DetectorConfig) -> None:
        """Keep the config; ``load()`` builds the face models."""
        super().__init__(cfg)
        self.faces = FaceFinder(confidence=cfg.face_confidence, tiles=cfg.face_tiles,
                                tile_overlap=cfg.face_tile_overlap)

    @property
    def loaded(self) -> bool:
        """True between a successful ``load()`` and ``close()``."""
        return self.faces.loaded

    def load(self) -> None:
        """Build the face models. Raises ModelLoadError when mediapipe is unusable."""
        self.faces.load()

    def close(self) -> None:
        """Free the face models."""
        self.faces.close()

    def _detect(self, rgb: np.ndarray) -> List[Detection]:
        height, width = rgb.shape[:2]
        found = self.faces.find(rgb)
        bodies = [Detection(box=body_box_from_face(box, width, height,
                                                   self.cfg.body_width_faces,
                                                   self.cfg.body_height_faces), score=score)
                  for box, score in found]
        if not bodies:
            return []
        # Body boxes of neighbours overlap a lot; only merge near-duplicates of
        # one face found twice (the face NMS already removed most).
        keep = nms(np.array([d.box for d in bodies]), np.array([d.score for d in bodies]),
                   max(self.cfg.nms_iou, 0.7))
        return [bodies[i] for i in keep]

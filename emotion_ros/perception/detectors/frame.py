"""``frame``: no detection, the whole image is one person.

For images that are already person crops (a camera that follows one person, a
stream of crops from another detector, a dataset of person images such as the
audio-visual training clips, which the node then scores exactly as training did).
"""

from __future__ import annotations

from typing import List

import numpy as np

from emotion_ros.perception.detectors.base import DetectorConfig, PersonDetector
from emotion_ros.types import Detection


class WholeFrameDetector(PersonDetector):
    """``frame``: every image is one person filling it (images that are person crops)."""

    name = 'frame:whole-image'
    downscales = False  # the box is the image: exact, no downscaling round trip

    def __init__(self, cfg: DetectorConfig) -> None:
        """Keep the config; there is no model."""
        super().__init__(cfg)
        self._loaded = False

    @property
    def loaded(self) -> bool:
        """True between ``load()`` and ``close()``."""
        return self._loaded

    def load(self) -> None:
        """Nothing to load."""
        self._loaded = True

    def close(self) -> None:
        """Nothing to free."""
        self._loaded = False

    def _detect(self, rgb: np.ndarray) -> List[Detection]:
        height, width = rgb.shape[:2]
        return [Detection(box=(0.0, 0.0, float(width), float(height)), score=1.0)]

"""Faces with mediapipe 0.10.21's shipped BlazeFace models (also for the light emotion backend)."""

from __future__ import annotations

import math
import threading
from typing import Any, List, Sequence, Tuple

import numpy as np

from emotion_ros.errors import ConfigError, ModelLoadError
from emotion_ros.perception.detectors.base import check_rgb, nms
from emotion_ros.types import Box


FACE_MODELS = ('full', 'short')


class FaceFinder:
    """Finds faces with the BlazeFace models that mediapipe 0.10.21 ships.

    ``full`` is the full-range model (192 x 192 input, faces up to about 5 m),
    ``short`` the short-range one (128 x 128, faces within about 2 m; it also
    catches large profile faces the full-range model misses). With ``tiles``
    > 1 both also run on an n x n grid of overlapping tiles, so that small
    faces in a large image cover enough input pixels. Results of all runs are
    merged by non-maximum suppression. With ``first_hit`` the models run in the
    given order and the later ones only when the earlier found no face (the
    light backend searches person crops this way). Thread-safe (one lock).
    """

    def __init__(self, confidence: float = 0.5, models: Sequence[str] = FACE_MODELS,
                 tiles: int = 1, tile_overlap: float = 0.3, merge_iou: float = 0.3,
                 first_hit: bool = False) -> None:
        """Store settings; ``load()`` builds the models.

        Raises:
            ConfigError: for an unknown model name or a tile count below 1.
        """
        bad = [m for m in models if m not in FACE_MODELS]
        if bad or not models:
            raise ConfigError(f'face models must be a non-empty subset of {FACE_MODELS}, '
                              f'got {list(models)}')
        if tiles < 1:
            raise ConfigError(f'face tiles must be >= 1, got {tiles}')
        self.confidence = float(confidence)
        self.models = tuple(models)
        self.tiles = int(tiles)
        self.tile_overlap = float(tile_overlap)
        self.merge_iou = float(merge_iou)
        self.first_hit = bool(first_hit)
        self._detectors: List[Any] = []
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """True between ``load()`` and ``close()``."""
        return bool(self._detectors)

    def load(self) -> None:
        """Build the mediapipe face detection graphs.

        Raises:
            ModelLoadError: when mediapipe (0.10.21, which ships the models) is
                missing or its models cannot be loaded.
        """
        if self._detectors:
            return
        try:
            from mediapipe.python.solutions import face_detection
        except Exception as exc:  # ImportError, or a broken native library
            raise ModelLoadError(
                'the face detector needs mediapipe 0.10.21 (later versions ship no .tflite '
                f'models): pip install --no-deps mediapipe==0.10.21 ({exc})') from exc
        # mediapipe wants a threshold strictly above 0.
        threshold = min(max(self.confidence, 1e-3), 1.0)
        try:
            self._detectors = [
                face_detection.FaceDetection(min_detection_confidence=threshold,
                                             model_selection=1 if name == 'full' else 0)
                for name in self.models]
            # One pass at load: the first real image then does not pay the graphs' set-up.
            for det in self._detectors:
                det.process(np.zeros((64, 64, 3), np.uint8))
        except Exception as exc:
            self._detectors = []
            raise ModelLoadError(f'cannot load mediapipe face detection models: {exc}') from exc

    def close(self) -> None:
        """Free the graphs. Safe to call twice."""
        with self._lock:
            for det in self._detectors:
                try:
                    det.close()
                except Exception:  # already closed; nothing to free
                    pass
            self._detectors = []

    def _views(self, width: int, height: int) -> List[Tuple[int, int, int, int]]:
        views = [(0, 0, width, height)]
        n = self.tiles
        if n > 1:
            tw = min(width, int(math.ceil(width / n * (1.0 + self.tile_overlap))))
            th = min(height, int(math.ceil(height / n * (1.0 + self.tile_overlap))))
            for i in range(n):
                for j in range(n):
                    x0 = int(round((width - tw) * j / (n - 1)))
                    y0 = int(round((height - th) * i / (n - 1)))
                    views.append((x0, y0, x0 + tw, y0 + th))
        return views

    def find(self, rgb: np.ndarray) -> List[Tuple[Box, float]]:
        """Faces in an RGB image as ``(box, score)``, best first, boxes in its pixels.

        Raises:
            InputError: for an image that is not H x W x 3 uint8.
            RuntimeError: when called before ``load()``.
        """
        check_rgb(rgb)
        if not self._detectors:
            raise RuntimeError('FaceFinder.find() called before load()')
        height, width = rgb.shape[:2]
        boxes: List[Box] = []
        scores: List[float] = []
        views = [(v, np.ascontiguousarray(rgb[v[1]:v[3], v[0]:v[2]]))
                 for v in self._views(width, height)]
        with self._lock:
            for det in self._detectors:
                if self.first_hit and any(s >= self.confidence for s in scores):
                    break
                for (x0, y0, x1, y1), view in views:
                    vh, vw = view.shape[:2]
                    result = det.process(view)
                    for found in result.detections or []:
                        rel = found.location_data.relative_bounding_box
                        bx0 = x0 + rel.xmin * vw
                        by0 = y0 + rel.ymin * vh
                        box = (max(0.0, bx0), max(0.0, by0),
                               min(float(width), bx0 + rel.width * vw),
                               min(float(height), by0 + rel.height * vh))
                        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                            continue
                        boxes.append(box)
                        scores.append(float(found.score[0]))
        if not boxes:
            return []
        keep = nms(np.array(boxes), np.array(scores), self.merge_iou)
        return [(boxes[i], scores[i]) for i in keep if scores[i] >= self.confidence]

"""Person detection: the detector interface, its configuration and the shared box helpers.

``detector.type`` picks one of the detectors in this package (see
:func:`emotion_ros.perception.detectors.factory.create_detector`); heavy
libraries are imported in each detector's ``load()``.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, List

import numpy as np

from emotion_ros.config.schema import field
from emotion_ros.errors import ConfigError, InputError
from emotion_ros.geometry import iou_matrix
from emotion_ros.types import Box, Detection


DETECTOR_TYPES = ('auto', 'yolo', 'face', 'hog', 'frame')


DEFAULT_YOLO_WEIGHTS = 'yolo11n.pt'


#: What the face-anchored detector cannot see (said wherever the auto fallback is reported).
FALLBACK_BLIND_SPOT = ('people whose face is hidden (back turned, masked, face down, too far '
                       'or too dark for the face finder) are NOT detected')


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """Which person detector runs and how (``detector.*`` parameters)."""

    type: str = field('auto', 'Person detector: auto (YOLO when its weights load, else face; '
                      'no fallback when device is cuda or yolo_weights is not the default), '
                      'yolo, face (face-anchored, offline), hog (OpenCV people detector), '
                      'frame (the whole image is one person: images that are person crops)',
                      choices=DETECTOR_TYPES)
    yolo_weights: str = field(DEFAULT_YOLO_WEIGHTS, 'YOLO weights: a file path or an '
                              'ultralytics model name (downloaded by ultralytics unless '
                              'YOLO_OFFLINE=1); a .yaml builds an untrained model (tests only)')
    device: str = field('auto', 'Device for YOLO: auto (cuda when available), cpu or cuda',
                        choices=('auto', 'cpu', 'cuda'))
    confidence: float = field(0.35, 'Minimum person score for the yolo and hog detectors',
                              min=0.0, max=1.0)
    max_persons: int = field(20, 'At most this many persons per image (highest scores kept)',
                             min=1, max=1000)
    max_side: int = field(640, 'Images are downscaled so that their longest side is at most '
                          'this many pixels before detection', min=64, max=8192)
    nms_iou: float = field(0.5, 'Boxes overlapping more than this IoU are merged (non-maximum '
                           'suppression)', min=0.05, max=1.0)
    face_confidence: float = field(0.6, 'Minimum face score for the face-anchored detector',
                                   min=0.0, max=1.0)
    face_tiles: int = field(2, 'Face-anchored detector: also search an n x n grid of '
                            'overlapping tiles for small faces (1: whole image only)',
                            min=1, max=4)
    face_tile_overlap: float = field(0.3, 'Face-anchored detector: tiles are enlarged by this '
                                     'fraction so that faces on tile borders are seen whole',
                                     min=0.0, max=1.0)
    body_width_faces: float = field(3.0, 'Face-anchored detector: body box width in face widths',
                                    min=1.0, max=10.0)
    body_height_faces: float = field(8.5, 'Face-anchored detector: body box bottom below the '
                                     'face top, in face heights (standing adult: about 8.5)',
                                     min=1.0, max=20.0)
    hog_hit_threshold: float = field(0.0, 'HOG detector: SVM margin a window needs to count as '
                                     'a person (higher: fewer, surer detections)',
                                     min=-2.0, max=5.0)

    def validate(self) -> None:
        """Cross-check fields.

        Raises:
            ConfigError: naming the parameter.
        """
        if self.type in ('auto', 'yolo') and not self.yolo_weights.strip():
            raise ConfigError('detector.yolo_weights: must name a weights file or model '
                              f'when detector.type is {self.type!r}')


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> List[int]:
    """Greedy non-maximum suppression; indices of the kept boxes, best first."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = list(np.argsort(-np.asarray(scores, np.float64), kind='stable'))
    keep: List[int] = []
    while order:
        best = order.pop(0)
        keep.append(int(best))
        if not order:
            break
        overlaps = iou_matrix(boxes[best:best + 1], boxes[order])[0]
        order = [i for i, o in zip(order, overlaps) if o <= iou_threshold]
    return keep


def body_box_from_face(face: Box, width: int, height: int,
                       width_faces: float = 3.0, height_faces: float = 8.5) -> Box:
    """Extrapolate a person box from a face box, clipped to the image.

    Geometry (face box of width ``fw`` and height ``fh`` as BlazeFace draws it,
    roughly brows to chin): the head top is ``0.35 fh`` above the face box;
    the body is ``width_faces * fw`` wide, centred on the face; it ends
    ``height_faces * fh`` below the face top (about 8.5 for a standing adult,
    measured on the people in ultralytics' bus.jpg). It assumes an upright
    person; for a seated or lying person the lower part is a guess, which only
    matters for the crop shown to the operator.
    """
    x0, y0, x1, y1 = face
    fw, fh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    cx = 0.5 * (x0 + x1)
    half = 0.5 * width_faces * fw
    return (float(max(0.0, cx - half)), float(max(0.0, y0 - 0.35 * fh)),
            float(min(float(width), cx + half)), float(min(float(height), y0 + height_faces * fh)))


def check_rgb(rgb: Any, what: str = 'image') -> None:
    """Check that ``rgb`` is a non-empty H x W x 3 uint8 array.

    Raises:
        InputError: ``kind='image_format'`` or ``'image_empty'``.
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3:
        raise InputError(f'{what} must be an H x W x 3 uint8 RGB array, got shape '
                         f'{getattr(rgb, "shape", None)} dtype '
                         f'{getattr(rgb, "dtype", type(rgb).__name__)}', kind='image_format')
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError(f'{what} is empty ({rgb.shape[1]}x{rgb.shape[0]})', kind='image_empty')


class PersonDetector(abc.ABC):
    """Finds people in RGB images.

    Lifecycle: construct (cheap), ``load()`` (reads weights), ``detect()`` any
    number of times, ``close()``. ``detect`` downscales the image to
    ``max_side``, runs the model and returns boxes in the input image's
    pixels, best first, at most ``max_persons``.
    """

    #: What actually runs, e.g. 'yolo:yolo11n.pt', 'face:mediapipe-blazeface'.
    name: str = ''
    #: Images larger than ``cfg.max_side`` are detected on a downscaled copy.
    downscales: bool = True

    def __init__(self, cfg: DetectorConfig) -> None:
        """Keep the config; nothing is loaded yet."""
        self.cfg = cfg

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model. Raises ModelLoadError with a clear message on failure."""

    @property
    @abc.abstractmethod
    def loaded(self) -> bool:
        """True between a successful ``load()`` and ``close()``."""

    @abc.abstractmethod
    def _detect(self, rgb: np.ndarray) -> List[Detection]:
        """Detect on an image already downscaled to ``max_side``."""

    def close(self) -> None:
        """Free the model. Safe to call twice."""

    def detect(self, rgb: np.ndarray) -> List[Detection]:
        """Person boxes in ``rgb`` (H x W x 3 uint8), in its pixels, best first.

        Raises:
            InputError: for an image that is not H x W x 3 uint8 or is empty.
            RuntimeError: when called before ``load()``.
        """
        check_rgb(rgb)
        if not self.loaded:
            raise RuntimeError(f'{type(self).__name__}.detect() called before load()')
        height, width = rgb.shape[:2]
        scale = min(1.0, self.cfg.max_side / float(max(height, width))) if self.downscales \
            else 1.0
        if scale < 1.0:
            import cv2

            small = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA)
        else:
            small = rgb
        found = self._detect(small)
        out: List[Detection] = []
        for det in found:
            x0, y0, x1, y1 = (v / scale for v in det.box)
            box = (float(min(max(x0, 0.0), width)), float(min(max(y0, 0.0), height)),
                   float(min(max(x1, 0.0), width)), float(min(max(y1, 0.0), height)))
            if box[2] - box[0] >= 1.0 and box[3] - box[1] >= 1.0 and math.isfinite(det.score):
                out.append(Detection(box=box, score=float(det.score)))
        out.sort(key=lambda d: -d.score)
        return out[:self.cfg.max_persons]

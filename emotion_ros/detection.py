"""Person detection: YOLO (ultralytics) on robots with its weights, offline fallbacks otherwise.

Detectors (``detector.type``):

- ``yolo``: ``ultralytics.YOLO(weights)``, person class only, on the GPU when
  one is available. Weights ending in ``.yaml`` build a randomly initialised
  model (real code path, meaningless boxes: for tests only).
- ``face``: face-anchored detector that needs no download: mediapipe 0.10.21's
  BlazeFace models (shipped in the wheel) find faces on the whole image and on
  overlapping tiles, and a body box is extrapolated from each face (geometry
  in :func:`body_box_from_face`). It finds people whose face is visible,
  which is what the emotion models need anyway.
- ``hog``: OpenCV's HOG + linear SVM people detector (built into OpenCV 4.x):
  finds upright, whole, reasonably large people; slow and weak, kept as a
  face-independent baseline.
- ``frame``: no detection: the whole image is one person. For images that are
  already person crops (a camera that follows one person, a stream of crops
  from another detector, a dataset of person images such as the audio-visual
  training clips, which the node then scores exactly as training did).
- ``auto``: YOLO when its weights load, else ``face`` (the reason is logged
  and kept in :attr:`AutoDetector.fallback_reason`; the node shows it as a
  WARN in /diagnostics for as long as the fallback runs). Only when the user
  did not ask for YOLO explicitly: with ``detector.device: cuda`` or
  ``detector.yolo_weights`` set to anything but the default, a YOLO that does
  not load fails ``load()`` with a message naming the weights.

Heavy libraries (torch, ultralytics, mediapipe) are imported in ``load()``.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import math
import os
from pathlib import Path
import threading
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.config import field
from emotion_ros.errors import ConfigError, InputError, ModelLoadError
from emotion_ros.geometry import iou_matrix  # noqa: F401 (also re-exported)
from emotion_ros.types import Box, Detection

_LOG = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------
# Box helpers


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


# ---------------------------------------------------------------------------
# Faces (mediapipe), shared with the light emotion backend


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


# ---------------------------------------------------------------------------
# Detectors


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


def _env_true(name: str) -> bool:
    return os.environ.get(name, '').strip().lower() in ('1', 'true', 'yes', 'on')


def _ultralytics_weights_dir() -> Path:
    """ultralytics' weights cache, read from its settings file without importing it."""
    import json
    import os

    config_dir = Path(os.environ.get('YOLO_CONFIG_DIR', Path.home() / '.config' / 'Ultralytics'))
    try:
        settings = json.loads((config_dir / 'settings.json').read_text())
        return Path(settings.get('weights_dir', 'weights'))
    except (OSError, ValueError):
        return Path('weights')


def resolve_device(requested: str) -> str:
    """Map ``auto|cpu|cuda`` to the torch device to use.

    Raises:
        ModelLoadError: when ``cuda`` is requested but torch sees no GPU.
    """
    import torch

    if requested == 'cpu':
        return 'cpu'
    available = torch.cuda.is_available()
    if requested == 'cuda' and not available:
        raise ModelLoadError("detector.device is 'cuda' but torch.cuda.is_available() is False "
                             '(no GPU, or a CPU-only torch build)')
    return 'cuda:0' if available else 'cpu'


class YoloDetector(PersonDetector):
    """ultralytics YOLO restricted to the person class."""

    def __init__(self, cfg: DetectorConfig) -> None:
        """Keep the config; ``load()`` builds the model."""
        super().__init__(cfg)
        self._model: Any = None
        self._device = 'cpu'
        self._person_class = 0
        self.name = f'yolo:{Path(cfg.yolo_weights).name}'

    @property
    def loaded(self) -> bool:
        """True between a successful ``load()`` and ``close()``."""
        return self._model is not None

    @property
    def model(self) -> Any:
        """The underlying ``ultralytics.YOLO`` object (None before ``load()``)."""
        return self._model

    @property
    def device(self) -> str:
        """The torch device the model runs on."""
        return self._device

    def _resolve_weights(self) -> str:
        weights = self.cfg.yolo_weights.strip()
        if weights.lower().endswith(('.yaml', '.yml')):
            _LOG.warning('detector.yolo_weights %r builds an UNTRAINED model: its detections '
                         'are meaningless (use it for tests only)', weights)
            return weights
        path = Path(weights).expanduser()
        if path.is_file():
            return str(path)
        if weights.lower().startswith(('http://', 'https://')) and not _env_true('YOLO_OFFLINE'):
            return weights  # ultralytics downloads URLs itself
        cached = _ultralytics_weights_dir() / weights
        if cached.is_file():
            return str(cached)
        # A bare model name may be downloaded by ultralytics; a path with folders
        # that does not exist is a mistake, and offline nothing can be fetched.
        if _env_true('YOLO_OFFLINE') or path.parent != Path('.'):
            raise ModelLoadError(
                f'YOLO weights {weights!r} not found (looked at {path.resolve()} and '
                f'{cached})'
                + (' and downloads are disabled (YOLO_OFFLINE=1)' if _env_true('YOLO_OFFLINE')
                   else '')
                + '; copy the file there, set detector.yolo_weights to its path, or use '
                'detector.type face')
        return weights  # a model name: ultralytics downloads it

    def load(self) -> None:
        """Load the weights and warm the model up on one blank image.

        Raises:
            ModelLoadError: for missing/unreadable weights, a model that is
                not a detector, or a cuda device that is not there.
        """
        if self._model is not None:
            return
        # Resolve first: when the weights are missing offline, fail before importing torch
        # and ultralytics (half a gigabyte of memory the fallback detector does not need).
        weights = self._resolve_weights()
        try:
            import torch  # noqa: F401  (fail early with a clear message)
            import ultralytics  # noqa: F401
        except ImportError as exc:
            raise ModelLoadError(f'the yolo detector needs torch and ultralytics: {exc} '
                                 '(or use detector.type face)') from exc
        self._device = resolve_device(self.cfg.device)
        try:
            from ultralytics import YOLO

            model = YOLO(weights)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f'cannot load YOLO weights {weights!r}: '
                                 f'{type(exc).__name__}: {exc}') from exc
        if getattr(model, 'task', 'detect') != 'detect':
            raise ModelLoadError(f'YOLO weights {weights!r} are a {model.task!r} model; '
                                 'a detection model is needed')
        names = dict(getattr(model, 'names', {}) or {})
        persons = [i for i, n in names.items() if str(n).lower() == 'person']
        if persons:
            self._person_class = int(persons[0])
        else:
            # Custom or untrained models: COCO order puts person first.
            self._person_class = 0
            _LOG.warning('YOLO model %r has no class named "person"; using class 0', weights)
        self._model = model
        try:
            self._predict(np.zeros((64, 64, 3), np.uint8))
        except Exception as exc:
            self._model = None
            raise ModelLoadError(f'YOLO model {weights!r} failed on a test image: '
                                 f'{type(exc).__name__}: {exc}') from exc
        _LOG.info('person detector %s on %s (person class %d)', self.name, self._device,
                  self._person_class)

    def _imgsz(self, rgb: np.ndarray) -> int:
        longest = max(rgb.shape[:2])
        return int(max(32, math.ceil(longest / 32.0) * 32))

    def _precision_args(self) -> dict:
        if not self._device.startswith('cuda'):
            return {}
        # FP16 on the GPU; ultralytics 8.4 renamed 'half' to 'quantize'.
        from ultralytics.cfg import DEFAULT_CFG_DICT

        return {'quantize': 16} if 'quantize' in DEFAULT_CFG_DICT else {'half': True}

    def _predict(self, rgb: np.ndarray) -> Any:
        # ultralytics treats numpy input as BGR (OpenCV order).
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        return self._model.predict(
            source=bgr, imgsz=self._imgsz(rgb), conf=self.cfg.confidence,
            iou=self.cfg.nms_iou, classes=[self._person_class], max_det=self.cfg.max_persons,
            device=self._device, verbose=False, **self._precision_args())[0]

    def _detect(self, rgb: np.ndarray) -> List[Detection]:
        result = self._predict(rgb)
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return []
        xyxy = boxes.xyxy.detach().cpu().numpy().astype(np.float64)
        conf = boxes.conf.detach().cpu().numpy().astype(np.float64)
        cls = boxes.cls.detach().cpu().numpy().astype(int)
        return [Detection(box=tuple(float(v) for v in b), score=float(s))  # type: ignore[arg-type]
                for b, s, c in zip(xyxy, conf, cls) if c == self._person_class]

    def close(self) -> None:
        """Drop the model and free GPU memory. Safe to call twice."""
        if self._model is None:
            return
        self._model = None
        if self._device.startswith('cuda'):
            import torch

            torch.cuda.empty_cache()


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


class AutoDetector(PersonDetector):
    """YOLO when its weights load, else the face-anchored detector."""

    def __init__(self, cfg: DetectorConfig) -> None:
        """Keep the config; ``load()`` decides which detector runs."""
        super().__init__(cfg)
        self._inner: Optional[PersonDetector] = None
        #: Why YOLO was not used ('' when it was).
        self.fallback_reason = ''

    @property
    def name(self) -> str:  # type: ignore[override]
        """What actually runs (``'auto'`` before ``load()``)."""
        return self._inner.name if self._inner is not None else 'auto'

    @property
    def inner(self) -> Optional[PersonDetector]:
        """The detector chosen by ``load()``."""
        return self._inner

    @property
    def loaded(self) -> bool:
        """True between a successful ``load()`` and ``close()``."""
        return self._inner is not None and self._inner.loaded

    def explicit_yolo_request(self) -> List[str]:
        """The settings by which the user asked for YOLO explicitly (no fallback then)."""
        asked = []
        if self.cfg.device == 'cuda':
            asked.append("detector.device is 'cuda'")
        if self.cfg.yolo_weights.strip() != DEFAULT_YOLO_WEIGHTS:
            asked.append(f'detector.yolo_weights is set to {self.cfg.yolo_weights!r}')
        return asked

    def load(self) -> None:
        """Try YOLO, fall back to the face-anchored detector (logging why).

        The fallback happens only when YOLO was not asked for explicitly (see
        :meth:`explicit_yolo_request`).

        Raises:
            ModelLoadError: when YOLO was asked for explicitly and does not load
                (naming the weights), or when neither can be loaded.
        """
        if self.loaded:
            return
        yolo = YoloDetector(self.cfg)
        try:
            yolo.load()
            self._inner = yolo
            self.fallback_reason = ''
            return
        except ModelLoadError as exc:
            asked = self.explicit_yolo_request()
            if asked:
                raise ModelLoadError(
                    f'detector.type auto: YOLO was asked for explicitly ({"; ".join(asked)}), '
                    f'so there is no fallback, and YOLO weights {self.cfg.yolo_weights!r} '
                    f'could not be loaded: {exc}. Put the weights there (or fix '
                    'detector.device), or choose detector.type face on purpose (then '
                    f'{FALLBACK_BLIND_SPOT})') from exc
            self.fallback_reason = str(exc)
        face = FaceAnchoredDetector(self.cfg)
        try:
            face.load()
        except ModelLoadError as exc:
            raise ModelLoadError(f'no person detector could be loaded; YOLO: '
                                 f'{self.fallback_reason}; face: {exc}') from exc
        _LOG.warning('detector.type auto: using the offline face-anchored detector because '
                     'YOLO could not be loaded: %s; %s', self.fallback_reason,
                     FALLBACK_BLIND_SPOT)
        self._inner = face

    def _detect(self, rgb: np.ndarray) -> List[Detection]:
        assert self._inner is not None
        return self._inner._detect(rgb)

    def close(self) -> None:
        """Close the chosen detector."""
        if self._inner is not None:
            self._inner.close()
            self._inner = None


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


def create_detector(cfg: DetectorConfig) -> PersonDetector:
    """Build (not load) the detector ``cfg.type`` names.

    Raises:
        ConfigError: for an unknown type.
    """
    factories = {'auto': AutoDetector, 'yolo': YoloDetector, 'face': FaceAnchoredDetector,
                 'hog': HogDetector, 'frame': WholeFrameDetector}
    if cfg.type not in factories:
        raise ConfigError(f'detector.type: unknown detector {cfg.type!r}; known: '
                          f'{list(factories)}')
    return factories[cfg.type](cfg)

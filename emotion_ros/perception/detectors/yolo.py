"""``yolo``: ultralytics YOLO, person class only, on the GPU when one is available.

Weights ending in ``.yaml`` build a randomly initialised model (real code path,
meaningless boxes: for tests only).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, List

import numpy as np

from emotion_ros.devices import resolve_device
from emotion_ros.errors import ModelLoadError
from emotion_ros.perception.detectors.base import DetectorConfig, PersonDetector
from emotion_ros.types import Detection

_LOG = logging.getLogger(__name__)


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
        self._device = resolve_device(self.cfg.device, 'detector.device')
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

"""``auto``: YOLO when its weights load, else the face-anchored detector.

The reason is logged and kept in :attr:`AutoDetector.fallback_reason` (the node
shows it as a WARN in /diagnostics for as long as the fallback runs). Only when
the user did not ask for YOLO explicitly: with ``detector.device: cuda`` or
``detector.yolo_weights`` set to anything but the default, a YOLO that does not
load fails ``load()`` with a message naming the weights.
"""

from __future__ import annotations

import logging
from typing import List, Optional

import numpy as np

from emotion_ros.errors import ModelLoadError
from emotion_ros.perception.detectors.base import (DEFAULT_YOLO_WEIGHTS, DetectorConfig,
                                                   FALLBACK_BLIND_SPOT, PersonDetector)
from emotion_ros.perception.detectors.face import FaceAnchoredDetector
from emotion_ros.perception.detectors.yolo import YoloDetector
from emotion_ros.types import Detection

_LOG = logging.getLogger(__name__)


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

"""Build the person detector that ``detector.type`` names."""

from __future__ import annotations

from emotion_ros.errors import ConfigError
from emotion_ros.perception.detectors.auto import AutoDetector
from emotion_ros.perception.detectors.base import DetectorConfig, PersonDetector
from emotion_ros.perception.detectors.face import FaceAnchoredDetector
from emotion_ros.perception.detectors.frame import WholeFrameDetector
from emotion_ros.perception.detectors.hog import HogDetector
from emotion_ros.perception.detectors.yolo import YoloDetector


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

"""Real photos that installed Python packages carry, for the demo and the tests.

Nothing is downloaded: the ultralytics wheel ships ``assets/bus.jpg`` (four
people) and ``assets/zidane.jpg`` (two people), scikit-image ships
``data/astronaut.png`` (a NASA portrait of a smiling woman). The packages are
located without importing them (importing ultralytics takes seconds).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from emotion_ros.errors import EmotionRosError

# name -> (package, path inside the package, what it shows)
_SAMPLES = {
    'bus': ('ultralytics', 'assets/bus.jpg', 'street scene, 4 people, 810x1080'),
    'zidane': ('ultralytics', 'assets/zidane.jpg', 'two men, one shouting, 1280x720'),
    'astronaut': ('skimage', 'data/astronaut.png', 'smiling woman, portrait, 512x512'),
}
#: Samples the demo and tests can always rely on (ultralytics is a dependency).
REQUIRED_SAMPLES = ('bus', 'zidane')


class SampleMediaMissing(EmotionRosError, FileNotFoundError):
    """A sample photo's package is not installed or does not carry the file."""


def _package_dir(package: str) -> Optional[Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def sample_images(require: Sequence[str] = REQUIRED_SAMPLES) -> Dict[str, Path]:
    """Paths of the sample photos that installed packages carry, by name.

    Names: ``'bus'``, ``'zidane'`` (ultralytics) and ``'astronaut'``
    (scikit-image, listed only when installed).

    Args:
        require: names that must be present; by default the ultralytics ones.

    Raises:
        SampleMediaMissing: naming the package to install when a required
            photo cannot be found.
    """
    unknown = [name for name in require if name not in _SAMPLES]
    if unknown:
        raise SampleMediaMissing(f'unknown sample names {unknown}; known: {sorted(_SAMPLES)}')
    found: Dict[str, Path] = {}
    for name, (package, rel, _) in _SAMPLES.items():
        base = _package_dir(package)
        if base is not None and (base / rel).is_file():
            found[name] = base / rel
    missing = [name for name in require if name not in found]
    if missing:
        hints = sorted({_SAMPLES[name][0] for name in missing})
        raise SampleMediaMissing(
            f'sample photos {missing} not found: install '
            + ' and '.join('scikit-image' if h == 'skimage' else h for h in hints)
            + ' (they ship the files; nothing is downloaded)')
    return found


def load_sample(name: str) -> np.ndarray:
    """Read one sample photo as an H x W x 3 uint8 RGB array.

    Raises:
        SampleMediaMissing: when the photo is not installed or unreadable.
    """
    import cv2

    path = sample_images(require=(name,))[name]
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SampleMediaMissing(f'cannot read sample photo {path}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

"""The emotion backend interface shared by every model (light, llava, audio_visual)."""

from __future__ import annotations

import abc
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

from emotion_ros.errors import ConfigError
from emotion_ros.types import Box, EmotionOutput


class EmotionBackend(abc.ABC):
    """Scores the 26 EMOTIC categories and VAD for the people in an image.

    Lifecycle: construct with the backend's options dataclass (cheap), then
    ``load()`` (reads weights; may take seconds), ``estimate()`` any number of
    times, ``close()`` to free memory (GPU included). The perception node maps
    these onto its configure / cleanup transitions.
    """

    #: Registry name, used in ``emotion.backend`` config.
    name: str = ''

    #: How much this backend's visual evidence may weigh in the distress fusion, in (0, 1]:
    #: its distress evidence is multiplied by this. A model that cannot tell a neutral face
    #: from a sad one declares less than the DISTRESS threshold (0.6), so that alone it never
    #: raises more than WATCH; audio or corroborated evidence still can (docs/messages.md).
    visual_evidence_weight: float = 1.0

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights. Raises ModelLoadError naming what was missing or wrong."""

    @abc.abstractmethod
    def estimate(self, image_rgb: np.ndarray, boxes: Sequence[Box]) -> List[EmotionOutput]:
        """Score every person box of one RGB uint8 image in one batch.

        Returns one EmotionOutput per box, in the same order.
        """

    def explain(self, image_rgb: np.ndarray, box: Box, max_new_tokens: int) -> str:
        """Generate a short free-text explanation for one person.

        Backends that cannot generate text raise NotImplementedError.
        """
        raise NotImplementedError(f'the {self.name!r} backend cannot generate explanations')

    @property
    def can_explain(self) -> bool:
        """True when ``explain`` is supported."""
        return False

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """Identifies backend and weights, e.g. 'light:facex-1.1.0'."""

    @property
    def loaded(self) -> bool:
        """True between a successful load() and close()."""
        return False

    def close(self) -> None:
        """Free the model (and GPU memory). Safe to call twice."""


BackendFactory = Callable[[Any], EmotionBackend]
_REGISTRY: Dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make a backend selectable by ``emotion.backend: <name>`` in config."""
    _REGISTRY[name] = factory


def create_backend(name: str, options: Any) -> EmotionBackend:
    """Build (not load) the backend registered under ``name``.

    ``options`` is the backend's own frozen options dataclass (``LightOptions``,
    ``LlavaOptions``, ``AudioVisualOptions``), read from ``emotion.<name>.*`` parameters.

    Raises:
        ConfigError: for an unknown name, listing the known ones.
    """
    _register_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f'emotion.backend: unknown backend {name!r}; '
                          f'known: {sorted(_REGISTRY)}')
    return _REGISTRY[name](options)


def _register_builtin() -> None:
    # Imported lazily so that choosing the light backend never imports torch
    # or transformers, and vice versa.
    if 'light' not in _REGISTRY:
        def _light(options: Any) -> EmotionBackend:
            from emotion_ros.backends.light import LightBackend
            return LightBackend(options)
        register_backend('light', _light)
    if 'llava' not in _REGISTRY:
        def _llava(options: Any) -> EmotionBackend:
            from emotion_ros.backends.llava import LlavaBackend
            return LlavaBackend(options)
        register_backend('llava', _llava)
    if 'audio_visual' not in _REGISTRY:
        def _audio_visual(options: Any) -> EmotionBackend:
            from emotion_ros.backends.audio_visual import AudioVisualBackend
            return AudioVisualBackend(options)
        register_backend('audio_visual', _audio_visual)

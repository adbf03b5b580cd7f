"""The registry of emotion backends: ``emotion.backend: <name>`` -> a backend instance.

The built-in backends are registered lazily, so that choosing the light backend
never imports torch or transformers, and vice versa.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from emotion_ros.backends.base import EmotionBackend
from emotion_ros.errors import ConfigError


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

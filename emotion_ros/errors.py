"""The package's exception hierarchy.

Third-party errors are wrapped where they enter, so callers (nodes, the
evaluation command) catch one family and can report what was wrong.
"""


class EmotionRosError(Exception):
    """Base class of every error raised on purpose by emotion_ros."""


class InputError(EmotionRosError, ValueError):
    """An input message or file is malformed (encoding, size, NaN, corrupt data).

    ``kind`` is a short stable key (e.g. ``'image_encoding'``) used to count
    the error in diagnostics.
    """

    def __init__(self, message: str, kind: str = 'input') -> None:
        super().__init__(message)
        self.kind = kind


class ConfigError(EmotionRosError, ValueError):
    """A configuration value is invalid; the message names the parameter."""


class ModelLoadError(EmotionRosError, RuntimeError):
    """Model weights are missing, unreadable or do not fit the model."""


class BundleMismatchError(ModelLoadError):
    """A weights bundle was trained for another contract version or base model."""

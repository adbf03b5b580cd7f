"""Validated, frozen configuration objects built from plain mappings.

Nodes read ROS parameters into a flat ``{'detector.type': 'auto', ...}``
mapping; the evaluation and benchmarks read the same keys from
``config/robot.yaml``. Both go through :func:`from_mapping`, so one set of
rules validates them and errors name the offending parameter.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Dict, Mapping, Type, TypeVar

from emotion_ros.errors import ConfigError

T = TypeVar('T')


def field(default: Any, description: str, **constraints: Any) -> Any:
    """Declare a config field with a description and optional constraints.

    Constraints: ``min``/``max`` (inclusive bounds for numbers), ``choices``
    (allowed values), ``positive`` (> 0). The description becomes the ROS
    parameter description.
    """
    metadata = {'description': description, **constraints}
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default),
                                 metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'{name}: expected a number, got {value!r}')
        value = float(value)
        if math.isnan(value):
            raise ConfigError(f'{name}: must not be NaN')
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f'{name}: expected an integer, got {value!r}')
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f'{name}: expected true or false, got {value!r}')
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f'{name}: expected a string, got {value!r}')
        return value
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'{name}: expected a list, got {value!r}')
        args = typing.get_args(hint)
        item_hint = args[0] if args else Any
        items = [_coerce(f'{name}[{i}]', v, item_hint) if item_hint is not Any else v
                 for i, v in enumerate(value)]
        return tuple(items)
    return value


def inline(cls: Type[Any], description: str = '') -> Any:
    """Embed another config dataclass whose keys are read without a prefix.

    Lets a node config reuse a pipeline config: ``AudioNodeConfig`` inlines
    ``AudioCueConfig`` so ``window_s`` stays ``window_s``, not ``cues.window_s``.
    """
    return dataclasses.field(default_factory=cls,
                             metadata={'description': description, 'inline': True})


#: Parameters that were removed, by (config class, key): why, and what to use instead.
REMOVED_PARAMETERS = {
    ('AudioNodeConfig', 'scream_threshold'):
        ' (removed from audio_node, where nothing read it: the scream cue is judged by '
        "distress_node's scream_threshold)",
}


def from_mapping(cls: Type[T], values: Mapping[str, Any], prefix: str = '') -> T:
    """Build a frozen config dataclass from a flat mapping and validate it.

    Keys are the dotted field names (under ``prefix + '.'`` when a prefix is
    given). Unknown keys under the prefix are rejected so that typos in YAML
    files do not pass silently. Nested dataclass fields read the keys under
    ``<field>.``; fields declared with :func:`inline` read theirs unprefixed.

    Raises:
        ConfigError: naming the parameter that is unknown, of the wrong type or
            out of range.
    """
    full = (prefix + '.') if prefix else ''
    known = set(flatten(cls, prefix))
    for key in values:
        if key.startswith(full) and key not in known:
            close = sorted(k for k in known if k.split('.')[-1] == key.split('.')[-1])
            hint = f'; did you mean {close}?' if close else ''
            hint += REMOVED_PARAMETERS.get((cls.__name__, key[len(full):]), '')
            raise ConfigError(f'{key}: unknown parameter{hint}')
    return _build(cls, values, prefix)


def _build(cls: Type[T], values: Mapping[str, Any], prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    kwargs: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            sub = prefix if f.metadata.get('inline') else (
                f'{prefix}.{f.name}' if prefix else f.name)
            kwargs[f.name] = _build(hint, values, sub)
            continue
        key = f'{prefix}.{f.name}' if prefix else f.name
        if key not in values:
            continue
        value = _coerce(key, values[key], hint)
        _check(key, value, f.metadata)
        kwargs[f.name] = value
    try:
        config = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f'{prefix or cls.__name__}: {exc}') from exc
    validate = getattr(config, 'validate', None)
    if validate is not None:
        validate()
    return config


def _check(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    if 'choices' in meta and value not in meta['choices']:
        raise ConfigError(f'{key}: {value!r} is not one of {list(meta["choices"])}')
    if meta.get('positive') and not value > 0:
        raise ConfigError(f'{key}: must be > 0, got {value!r}')
    if 'min' in meta and value < meta['min']:
        raise ConfigError(f'{key}: must be >= {meta["min"]}, got {value!r}')
    if 'max' in meta and value > meta['max']:
        raise ConfigError(f'{key}: must be <= {meta["max"]}, got {value!r}')


def flatten(cls: Type[Any], prefix: str = '') -> Dict[str, dataclasses.Field]:
    """All leaf fields of a config dataclass by their dotted parameter name."""
    hints = typing.get_type_hints(cls)
    out: Dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(cls):
        key = f'{prefix}.{f.name}' if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(flatten(hints[f.name], prefix if f.metadata.get('inline') else key))
        else:
            out[key] = f
    return out


def defaults(cls: Type[Any]) -> Dict[str, Any]:
    """Default value of every leaf parameter of a config dataclass."""
    out = {}
    for key, f in flatten(cls).items():
        if f.default is not dataclasses.MISSING:
            out[key] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[key] = f.default_factory()  # type: ignore[misc]
    return out


def nested_to_flat(tree: Mapping[str, Any], prefix: str = '') -> Dict[str, Any]:
    """Turn ``{'detector': {'type': 'face'}}`` into ``{'detector.type': 'face'}``."""
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        name = f'{prefix}.{key}' if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(nested_to_flat(value, name))
        else:
            out[name] = value
    return out

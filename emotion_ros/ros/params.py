"""ROS parameters from configuration dataclasses.

:func:`declare_config` declares one parameter per config field (with its
description and constraints). With ``on_change`` a change is validated against
the full new set and the node receives the rebuilt frozen config; without it
the parameters are read-only. Nothing is accepted and ignored.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Dict, Iterable, Optional, Type, TypeVar

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node

from emotion_ros.config.schema import defaults, flatten, from_mapping
from emotion_ros.errors import ConfigError
from emotion_ros.ros.health import describe_error


T = TypeVar('T')


READ_ONLY_NOTE = ' Read-only at run time (set it at start-up: YAML or --ros-args).'


AT_CONFIGURE_NOTE = (' Takes effect at the next configure; refused while the node is '
                     'configured (deactivate and clean up first).')


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """True when ``name`` is one of ``patterns`` or under one ending in '.'."""
    return any(name == p or (p.endswith('.') and name.startswith(p)) for p in patterns)


def declare_config(node: Node, cls: Type[T], on_change: Optional[Callable[[T], None]] = None,
                   *, read_only: Iterable[str] = (), at_configure: Iterable[str] = (),
                   is_configured: Optional[Callable[[], bool]] = None) -> T:
    """Declare one ROS parameter per config field (with its description) and read them.

    Run-time changes are never accepted and ignored:

    - without ``on_change`` every parameter is declared read-only (rclpy refuses
      a change with "Trying to set a read-only parameter");
    - with ``on_change`` a change (one parameter, or several in one
      ``set_parameters_atomically`` call) is validated against the FULL new set
      (current values + every change of the call), so cross-field rules see the
      related values together; when valid, ``on_change(new_config)`` receives the
      rebuilt frozen config and the node swaps it in. If ``on_change`` raises,
      the change is refused with that reason and nothing is changed;
    - names in ``read_only`` (exact, or prefixes ending in '.') stay read-only;
    - names in ``at_configure`` are only read at (re)configure by a lifecycle
      node: they are refused while ``is_configured()`` is true and accepted when
      it is false (the node picks them up with :func:`reload_config`).

    The descriptor's description says which kind each parameter is.

    Raises:
        ConfigError: when the start-up values are invalid (naming the parameter).
    """
    fields = flatten(cls)
    values = defaults(cls)
    read_only = tuple(read_only)
    at_configure = tuple(at_configure)
    kinds: Dict[str, str] = {}
    for name, f in fields.items():
        default = values.get(name)
        if isinstance(default, tuple):
            default = list(default)
        description = f.metadata.get('description', '')
        if on_change is None or _matches(name, read_only):
            kinds[name] = 'read_only'
            description += READ_ONLY_NOTE
        elif _matches(name, at_configure):
            kinds[name] = 'at_configure'
            description += AT_CONFIGURE_NOTE
        else:
            kinds[name] = 'live'
        # Dynamic typing: our validation gives a clearer error than rclpy's type check.
        descriptor = ParameterDescriptor(description=description, dynamic_typing=True,
                                         read_only=kinds[name] == 'read_only')
        if 'choices' in f.metadata:
            descriptor.additional_constraints = f'one of {list(f.metadata["choices"])}'
        node.declare_parameter(name, default, descriptor)
    config = from_mapping(cls, read_parameters(node, fields))
    if on_change is None:
        return config
    lock = threading.Lock()

    def validate(params: Any) -> SetParametersResult:
        ours = [p for p in params if p.name in fields]
        if not ours:
            return SetParametersResult(successful=True)
        names = [p.name for p in ours]
        deferred = [n for n in names if kinds[n] == 'at_configure']
        if deferred and is_configured is not None and is_configured():
            reason = (f'{", ".join(deferred)}: take(s) effect at configure; the node is '
                      'configured: deactivate and clean it up first, then set and configure')
            node.get_logger().warning(f'refused parameter change: {reason}')
            return SetParametersResult(successful=False, reason=reason)
        with lock:
            current = read_parameters(node, fields)
            for p in ours:
                if p.type_ == p.Type.NOT_SET:
                    return SetParametersResult(successful=False,
                                               reason=f'{p.name}: cannot be undeclared')
                current[p.name] = _plain(p.value)
            try:
                new_config = from_mapping(cls, current)
            except ConfigError as exc:
                node.get_logger().error(f'rejected parameter change: {exc}')
                return SetParametersResult(successful=False, reason=str(exc))
            try:
                on_change(new_config)
            except Exception as exc:  # noqa: B902 - refuse the change with the reason
                reason = f'{", ".join(names)}: could not apply: {describe_error(exc)}'
                node.get_logger().error(f'rejected parameter change: {reason}')
                return SetParametersResult(successful=False, reason=reason)
        changes = ', '.join(f'{p.name}={_plain(p.value)!r}' for p in ours)
        when = ' (takes effect at the next configure)' if deferred else ''
        node.get_logger().info(f'parameters changed: {changes}{when}')
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(validate)
    return config


def reload_config(node: Node, cls: Type[T]) -> T:
    """Read the already declared parameters of ``cls`` again (at configure)."""
    return from_mapping(cls, read_parameters(node, flatten(cls)))


def read_parameters(node: Node, fields: Dict[str, dataclasses.Field]) -> Dict[str, Any]:
    """Current values of the declared parameters as a flat mapping."""
    values = {}
    for name, f in fields.items():
        value = _plain(node.get_parameter(name).value)
        if value is None and isinstance(f.default, tuple):
            value = []  # an empty list ('[]' in a YAML params file) reads back as not set
        values[name] = value
    return values


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == 'array':
        return list(value)
    return value

"""Helpers every node uses: parameters from config dataclasses, bad-input log, diagnostics."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Dict, Optional, Type, TypeVar

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from emotion_ros.config import defaults, flatten, from_mapping
from emotion_ros.errors import ConfigError, EmotionRosError

T = TypeVar('T')


def declare_config(node: Node, cls: Type[T]) -> T:
    """Declare one ROS parameter per config field (with its description) and read them.

    Parameters set at run time are validated the same way; invalid values are
    rejected with a reason naming the parameter, and valid ones take effect at
    the next (re)configure.

    Raises:
        ConfigError: when the start-up values are invalid (naming the parameter).
    """
    fields = flatten(cls)
    values = defaults(cls)
    for name, f in fields.items():
        default = values.get(name)
        if isinstance(default, tuple):
            default = list(default)
        # Dynamic typing: our validation gives a clearer error than rclpy's type check.
        descriptor = ParameterDescriptor(description=f.metadata.get('description', ''),
                                         dynamic_typing=True)
        if 'choices' in f.metadata:
            descriptor.additional_constraints = f'one of {list(f.metadata["choices"])}'
        node.declare_parameter(name, default, descriptor)

    def validate(params: Any) -> SetParametersResult:
        current = read_parameters(node, fields)
        current.update({p.name: _plain(p.value) for p in params})
        try:
            from_mapping(cls, current)
        except ConfigError as exc:
            node.get_logger().error(f'rejected parameter change: {exc}')
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(validate)
    return from_mapping(cls, read_parameters(node, fields))


def reload_config(node: Node, cls: Type[T]) -> T:
    """Read the already declared parameters of ``cls`` again (at configure)."""
    return from_mapping(cls, read_parameters(node, flatten(cls)))


def read_parameters(node: Node, fields: Dict[str, dataclasses.Field]) -> Dict[str, Any]:
    """Current values of the declared parameters as a flat mapping."""
    return {name: _plain(node.get_parameter(name).value) for name in fields}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == 'array':
        return list(value)
    return value


def reliability_qos(reliability: str, depth: int) -> QoSProfile:
    """A QoS profile with the named reliability ('reliable' or 'best_effort')."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=DurabilityPolicy.VOLATILE)


class BadInputLog:
    """Counts bad inputs per kind and logs each kind at most once per ``period_s``."""

    def __init__(self, node: Node, period_s: float = 5.0) -> None:
        self._node = node
        self._period = period_s
        self.counts: Dict[str, int] = {}
        self._last_log: Dict[str, float] = {}

    def report(self, kind: str, message: str) -> None:
        """Count one bad input of ``kind`` and log it (rate-limited per kind)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last_log.get(kind, -1e9) >= self._period:
            self._last_log[kind] = now
            self._node.get_logger().warning(
                f'bad input ({kind}, {self.counts[kind]} so far): {message}')

    @property
    def total(self) -> int:
        """All bad inputs counted so far."""
        return sum(self.counts.values())


class RateMeter:
    """Events per second over a sliding window of wall-clock time."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._window = window_s
        self._times: list = []

    def tick(self) -> None:
        """Record one event now."""
        now = time.monotonic()
        self._times.append(now)
        cutoff = now - self._window
        while self._times and self._times[0] < cutoff:
            self._times.pop(0)

    @property
    def rate(self) -> float:
        """Events per second in the window."""
        now = time.monotonic()
        recent = [t for t in self._times if t >= now - self._window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


class Diagnostics:
    """Publishes one DiagnosticStatus of a node on /diagnostics."""

    def __init__(self, node: Node, name: str) -> None:
        self._node = node
        self._name = name
        self._pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)

    def publish(self, values: Dict[str, Any], level: int = DiagnosticStatus.OK,
                message: str = 'ok', bad_inputs: Optional[BadInputLog] = None) -> None:
        """Publish the given key/values (plus bad-input counters)."""
        items = dict(values)
        if bad_inputs is not None:
            items['bad_inputs_total'] = bad_inputs.total
            for kind, count in sorted(bad_inputs.counts.items()):
                items[f'bad_input.{kind}'] = count
            if bad_inputs.total and level == DiagnosticStatus.OK:
                message = f'ok ({bad_inputs.total} bad inputs dropped)'
        status = DiagnosticStatus(
            level=level, name=self._name, message=message,
            hardware_id=self._node.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=_fmt(v)) for k, v in items.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(array)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.3f}'
    return str(value)


def run_node(factory, num_threads: int = 2, before_spin=None) -> None:
    """Spin a node built by ``factory`` with a multi-threaded executor; exit 2 on bad config.

    ``before_spin(node)`` runs once the node is in the executor (e.g. lifecycle autostart).
    """
    rclpy.init()
    try:
        node = factory()
    except EmotionRosError as exc:
        rclpy.logging.get_logger('emotion_ros').fatal(f'{factory.__name__} cannot start: {exc}')
        rclpy.try_shutdown()
        sys.exit(2)
    executor = MultiThreadedExecutor(num_threads=num_threads)
    executor.add_node(node)
    try:
        if before_spin is not None:
            before_spin(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()

"""The /diagnostics status every node publishes, and the rate meters it reports."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from emotion_ros.ros.health import BadInputLog, NodeHealth


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
    """Publishes one DiagnosticStatus of a node on /diagnostics.

    With a :class:`NodeHealth` (given, or the node's ``health`` attribute) the
    published level is raised to what the health says (ERROR with the reason
    after an error, WARN for standing conditions) and its counters are added.
    """

    def __init__(self, node: Node, name: str, health: Optional[NodeHealth] = None) -> None:
        self._node = node
        self._name = name
        self._health = health
        self._pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)

    def publish(self, values: Dict[str, Any], level: int = DiagnosticStatus.OK,
                message: str = 'ok', bad_inputs: Optional[BadInputLog] = None) -> None:
        """Publish the given key/values (plus bad-input and error counters)."""
        items = dict(values)
        if bad_inputs is not None:
            items['bad_inputs_total'] = bad_inputs.total
            for kind, count in sorted(bad_inputs.counts.items()):
                items[f'bad_input.{kind}'] = count
            if bad_inputs.total and level == DiagnosticStatus.OK:
                message = f'ok ({bad_inputs.total} bad inputs dropped)'
        health = self._health or getattr(self._node, 'health', None)
        if isinstance(health, NodeHealth):
            items.update(health.values())
            level, message = health.status(level, message)
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

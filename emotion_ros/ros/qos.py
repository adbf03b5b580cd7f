"""QoS profiles from the nodes' ``*_reliability`` / ``*_depth`` parameters."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def reliability_qos(reliability: str, depth: int) -> QoSProfile:
    """A QoS profile with the named reliability ('reliable' or 'best_effort')."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=DurabilityPolicy.VOLATILE)

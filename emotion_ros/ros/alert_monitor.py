"""alert_monitor: prints every distress alert as a readable line and appends it to a JSONL file."""

from __future__ import annotations

import json
import os

from emotion_ros_msgs.msg import DistressAlert
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from emotion_ros.ros import conversions
from emotion_ros.ros.node_utils import reliability_qos, run_node


class AlertMonitor(Node):
    """Operator-side view of the alert stream (used by the demo and for debugging)."""

    def __init__(self) -> None:
        super().__init__('alert_monitor')
        self.output = self.declare_parameter(
            'output_jsonl', '', ParameterDescriptor(
                description='Append every alert as one JSON line to this file (empty: off).')
        ).value
        self.count = 0
        self.create_subscription(DistressAlert, 'distress_alerts', self._on_alert,
                                 reliability_qos('reliable', depth=50))

    def _on_alert(self, msg: DistressAlert) -> None:
        self.count += 1
        print(conversions.format_alert(msg), flush=True)
        if self.output:
            os.makedirs(os.path.dirname(os.path.abspath(self.output)), exist_ok=True)
            with open(self.output, 'a', encoding='utf-8') as f:
                f.write(json.dumps(conversions.alert_to_dict(msg)) + '\n')


def main(args=None) -> None:
    """Run the alert monitor."""
    run_node(AlertMonitor)


if __name__ == '__main__':
    main()

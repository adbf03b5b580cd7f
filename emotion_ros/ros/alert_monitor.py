"""alert_monitor: the operator's view of alerts and incidents, and their commands.

    alert_monitor                        # print alerts and incident changes as they come
    alert_monitor list                   # print the open incidents once
    alert_monitor history 3              # every command on incident 3 (who, when, outcome)
    alert_monitor --operator alice acknowledge 3 "on my way"
    alert_monitor confirm 3 | reject 3 "a poster" | resolve 3

Monitoring prints every alert as a readable line (and appends it to
``output_jsonl``), one line per incident whenever its state or level
changes, and one line per operator command it records; the incident list is
subscribed reliable + transient_local, so a monitor started late (or
reconnecting) shows every open incident at once.

Commands name their operator: ``--operator``, else ``$EMOTION_ROS_OPERATOR``,
else ``user@host`` of this shell; distress_node may accept only some ids
(its ``accepted_operators`` parameter).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
from typing import Dict, Optional, Sequence, Tuple

from emotion_ros_msgs.msg import DistressAlert, IncidentArray
from emotion_ros_msgs.srv import IncidentCommand, ListIncidents
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from emotion_ros.config.nodes import AlertMonitorConfig
from emotion_ros.fusion.incidents import COMMANDS
from emotion_ros.ros import conversions
from emotion_ros.ros.diagnostics import Diagnostics
from emotion_ros.ros.executor import run_node
from emotion_ros.ros.health import boundary, NodeHealth
from emotion_ros.ros.params import declare_config
from emotion_ros.ros.qos import reliability_qos

INCIDENTS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


class AlertMonitor(Node):
    """Operator-side view of the alert stream and the incident list.

    Has the error boundary of every node: a failing callback (e.g. ``output_jsonl``
    not writable) is counted, logged once with its reason and turns its /diagnostics
    status (``emotion_ros: <namespace>/alert_monitor``) to ERROR; it keeps monitoring.
    """

    def __init__(self) -> None:
        super().__init__('alert_monitor')
        self.health = NodeHealth(self)
        self.config = declare_config(self, AlertMonitorConfig)
        self.output = self.config.output_jsonl
        self.show_incidents = self.config.show_incidents
        self.count = 0
        self.incident_updates = 0
        self._seen: Dict[int, Tuple] = {}
        self.create_subscription(DistressAlert, 'distress_alerts', self._on_alert,
                                 reliability_qos('reliable', depth=50))
        if self.show_incidents:
            self.create_subscription(IncidentArray, 'incidents', self._on_incidents,
                                     INCIDENTS_QOS)
        self.diagnostics = Diagnostics(
            self, f'emotion_ros: {self.get_fully_qualified_name().lstrip("/")}')
        self.create_timer(self.config.diagnostics_period_s, self._publish_diagnostics)

    @boundary('timer', 'diagnostics')
    def _publish_diagnostics(self) -> None:
        self.diagnostics.publish({'alerts_shown': self.count,
                                  'incident_updates_shown': self.incident_updates,
                                  'output_jsonl': self.output or '(off)'})

    @boundary('subscription', 'distress_alerts')
    def _on_alert(self, msg: DistressAlert) -> None:
        self.count += 1
        print(conversions.format_alert(msg), flush=True)
        if self.output:
            os.makedirs(os.path.dirname(os.path.abspath(self.output)), exist_ok=True)
            with open(self.output, 'a', encoding='utf-8') as f:
                f.write(json.dumps(conversions.alert_to_dict(msg)) + '\n')

    @boundary('subscription', 'incidents')
    def _on_incidents(self, msg: IncidentArray) -> None:
        for incident in msg.incidents:
            key = (incident.state, incident.level, incident.acknowledged, incident.confirmed,
                   incident.rejected, tuple(incident.tracks))
            seen = self._seen.get(incident.id)
            if seen is None or seen[0] != key:
                self.incident_updates += 1
                print('incident ' + conversions.format_incident(incident), flush=True)
            shown = seen[1] if seen is not None else 0
            for entry in incident.history[shown:]:
                print(f'incident #{incident.id} command: '
                      + conversions.format_history_entry(entry), flush=True)
            self._seen[incident.id] = (key, len(incident.history))


def default_operator() -> str:
    """$EMOTION_ROS_OPERATOR, else user@host of this shell."""
    name = os.environ.get('EMOTION_ROS_OPERATOR', '').strip()
    if name:
        return name
    try:
        user = getpass.getuser()
    except Exception:  # noqa: B902 - no login name (a container): the host alone
        user = 'operator'
    return f'{user}@{socket.gethostname()}'


def command(action: str, incident_id: Optional[int], note: str, timeout_s: float,
            ros_args: Sequence[str] = (), operator: str = '') -> int:
    """Run one operator command against the distress node; print the result; exit code."""
    rclpy.init(args=['alert_monitor', *ros_args])
    node = rclpy.create_node('alert_monitor_cli')
    try:
        if action in ('list', 'history'):
            client = node.create_client(ListIncidents, 'list_incidents')
            request = ListIncidents.Request(include_closed=action == 'history')
        else:
            client = node.create_client(IncidentCommand, f'{action}_incident')
            request = IncidentCommand.Request(id=incident_id, note=note,
                                              operator_id=operator or default_operator())
        if not client.wait_for_service(timeout_sec=timeout_s):
            print(f'no {client.srv_name} service (is distress_node running, same '
                  'ROS_DOMAIN_ID and namespace?)', file=sys.stderr)
            return 1
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout_s)
        reply = future.result()
        if reply is None:
            print(f'{client.srv_name}: no answer within {timeout_s} s', file=sys.stderr)
            return 1
        if action == 'history':
            found = [i for i in reply.incidents if i.id == incident_id]
            if not found:
                print(f'no incident {incident_id} (listed: '
                      f'{[i.id for i in reply.incidents]})')
                return 1
            print(conversions.format_incident(found[0]))
            for entry in found[0].history:
                print('  ' + conversions.format_history_entry(entry))
            if not found[0].history:
                print('  no operator commands yet')
            return 0
        if action == 'list':
            for incident in reply.incidents:
                print(conversions.format_incident(incident))
            if not reply.incidents:
                print('no open incidents')
            return 0
        print(reply.message)
        if reply.success:
            print(conversions.format_incident(reply.incident))
        return 0 if reply.success else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def main(args: Optional[Sequence[str]] = None) -> None:
    """Monitor alerts and incidents, or run one operator command (see --help)."""
    argv = list(sys.argv[1:] if args is None else args)
    ros_args = []
    if '--ros-args' in argv:
        i = argv.index('--ros-args')
        argv, ros_args = argv[:i], argv[i:]
    parser = argparse.ArgumentParser(
        prog='alert_monitor', description='Print distress alerts and incidents as they come; '
        'or list incidents, show the command history of one, acknowledge, confirm, reject or '
        'resolve one.')
    parser.add_argument('action', nargs='?', choices=['list', 'history', *COMMANDS],
                        help='operator command (default: monitor)')
    parser.add_argument('id', nargs='?', type=int, help='incident id (for the commands)')
    parser.add_argument('note', nargs='?', default='', help='note kept with the incident')
    parser.add_argument('--operator', default='',
                        help='who commands (kept in the incident history; distress_node may '
                        'accept only some ids); default: $EMOTION_ROS_OPERATOR, else '
                        'user@host')
    parser.add_argument('--timeout', type=float, default=10.0,
                        help='seconds to wait for the service (default: %(default)s)')
    opts = parser.parse_args(argv)
    if opts.action is None:
        run_node(AlertMonitor, args=['alert_monitor', *ros_args])
        return
    if opts.action != 'list' and opts.id is None:
        parser.error(f'{opts.action} needs an incident id')
    sys.exit(command(opts.action, opts.id, opts.note, opts.timeout, ros_args, opts.operator))


if __name__ == '__main__':
    main()

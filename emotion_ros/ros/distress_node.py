"""distress_node: person estimates + audio cues + transcripts in; incidents, alerts, markers out.

Inputs are fused in stamp order, not in the order the executor runs the
subscriptions' callbacks: each waits ``fusion.input_hold_s`` after it arrives
(``emotion_ros.fusion.ordering.OrderedFusion``, the same code the bag
evaluation runs; a 20 ms timer fuses what became due).

Outputs and their QoS (docs/messages.md):
- ``incidents`` (IncidentArray): state, reliable + transient_local, depth
  ``incidents_depth``; published when an incident changes state or level and
  every ``incidents_period_s``.
- ``distress_alerts`` (DistressAlert): events (creation, level rise), reliable
  + volatile by default (``alerts_*`` parameters).
- ``incident_markers`` (MarkerArray): reliable + transient_local, depth 1.
- services ``list_incidents``, ``acknowledge_incident``, ``confirm_incident``,
  ``reject_incident``, ``resolve_incident``: each command names its operator
  (``operator_id``; only ``accepted_operators`` when set), the lifecycle table
  (``emotion_ros.fusion.incidents.TRANSITIONS``) decides, refusals carry the
  reason and are counted in /diagnostics (``commands_refused.<kind>``).
"""

from __future__ import annotations

import threading
import time
from typing import List

from diagnostic_msgs.msg import DiagnosticStatus
from emotion_ros_msgs.msg import (AudioCues, DistressAlert, IncidentArray, PersonEmotionArray,
                                  Transcript)
from emotion_ros_msgs.srv import IncidentCommand, ListIncidents
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from visualization_msgs.msg import MarkerArray

from emotion_ros.errors import InputError
from emotion_ros.fusion.distress import DistressFusion
from emotion_ros.fusion.incidents import check_request, COMMANDS
from emotion_ros.fusion.ordering import OrderedFusion
from emotion_ros.config.nodes import DistressNodeConfig
from emotion_ros.ros import conversions
from emotion_ros.ros.markers import incident_markers
from emotion_ros.ros.diagnostics import Diagnostics, RateMeter
from emotion_ros.ros.executor import run_node
from emotion_ros.ros.health import BadInputLog, boundary, NodeHealth
from emotion_ros.ros.params import declare_config
from emotion_ros.ros.qos import reliability_qos
from emotion_ros.types import Alert

#: /diagnostics stay WARN this long (s) after a command from an operator not accepted.
GUARD_WARN_S = 30.0

#: How often held inputs are checked for the end of their hold time (s).
RELEASE_PERIOD_S = 0.02

#: Parameters that shape publishers, timers and QoS: set them at start-up.
READ_ONLY = ('diagnostics_period_s', 'incidents_period_s', 'incidents_depth', 'alerts_',
             'publish_markers')


def qos(reliability: str, durability: str, depth: int) -> QoSProfile:
    """A keep-last QoS profile from parameter words."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if durability == 'transient_local'
                    else DurabilityPolicy.VOLATILE))


class DistressNode(Node):
    """Fuses per-person emotions, audio cues and transcripts into incidents and alerts."""

    def __init__(self) -> None:
        super().__init__('distress_node')
        self.health = NodeHealth(self)
        self._lock = threading.RLock()
        self.config = declare_config(self, DistressNodeConfig, on_change=self._apply_config,
                                     read_only=READ_ONLY)
        cfg = self.config
        self.fusion = DistressFusion(cfg.fusion)
        # Inputs wait fusion.input_hold_s and are fused in stamp order (as in the bag
        # evaluation), not in the order the executor runs the subscriptions' callbacks.
        self.ordered = OrderedFusion(self.fusion)
        self.bad_inputs = BadInputLog(self)
        self._alert_pub = self.create_publisher(
            DistressAlert, 'distress_alerts',
            qos(cfg.alerts_reliability, cfg.alerts_durability, cfg.alerts_depth))
        self._incident_pub = self.create_publisher(
            IncidentArray, 'incidents', qos('reliable', 'transient_local', cfg.incidents_depth))
        self._marker_pub = None
        if cfg.publish_markers:
            self._marker_pub = self.create_publisher(
                MarkerArray, 'incident_markers', qos('reliable', 'transient_local', 1))
        # Depth 50: several cameras at 5 Hz, and the burst that follows a stall of this node.
        self.create_subscription(PersonEmotionArray, 'persons', self._on_persons,
                                 reliability_qos('reliable', depth=50))
        # The order of these subscriptions does not matter: inputs are fused in stamp order.
        self.create_subscription(Transcript, 'transcripts', self._on_transcript,
                                 reliability_qos('reliable', depth=20))
        self.create_subscription(AudioCues, 'audio_cues', self._on_cues,
                                 reliability_qos('reliable', depth=20))
        # audio_visual perception, nobody visible: the voice scored alone.
        self.create_subscription(PersonEmotionArray, 'voice_emotions', self._on_voice,
                                 reliability_qos('reliable', depth=20))
        self.create_service(ListIncidents, 'list_incidents', self._on_list)
        for action in COMMANDS:
            self.create_service(IncidentCommand, f'{action}_incident',
                                self._command_handler(action))
        self._frame_rate = RateMeter()
        self._cue_rate = RateMeter()
        self._last_persons_t = time.monotonic()
        self._last_cues_t = time.monotonic()
        self._cues_seen = 0
        self._frames = 0
        self._transcripts = 0
        self._voices = 0
        self._alerts_by_level = {}
        self._latency_ms: List[float] = []  # evidence stamp -> alert published (bounded)
        self._last_model = ''
        self._last_persons = 0
        self._signature = None
        self._last_input_clock = self._clock_s()
        self._marker_ids: set = set()
        # Commands refused before reaching the lifecycle (no/bad operator id, not accepted).
        self._guard_refusals: dict = {}
        self._last_guard_refusal = None  # (monotonic time, what) of the newest not accepted
        # Unique per namespace: 'emotion_ros: distress_node', 'emotion_ros: robot1/distress_node'.
        self.diagnostics = Diagnostics(
            self, f'emotion_ros: {self.get_fully_qualified_name().lstrip("/")}')
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)
        # Fuses held inputs once their hold time is over, also when nothing else arrives.
        self.create_timer(RELEASE_PERIOD_S, self._release_due)
        # The republish timer also ages incidents while no input arrives (at least 1 Hz).
        self.create_timer(cfg.incidents_period_s if cfg.incidents_period_s > 0 else 1.0,
                          self._republish if cfg.incidents_period_s > 0 else self._age)
        self._publish_incidents()  # an empty latched list: listeners know the node is up

    # ----------------------------------------------------------- parameters
    def _apply_config(self, config: DistressNodeConfig) -> None:
        with self._lock:
            self.ordered.reconfigure(config.fusion)
            self.config = config

    # --------------------------------------------------------------- inputs
    def _now(self):
        if not self.config.use_node_clock:
            return None
        return self.get_clock().now().nanoseconds * 1e-9

    @boundary('subscription', 'persons')
    def _on_persons(self, msg: PersonEmotionArray) -> None:
        self._frame_rate.tick()
        self._frames += 1
        self._last_persons_t = time.monotonic()
        try:
            frame = conversions.msg_to_frame(msg)
        except InputError as exc:
            self.bad_inputs.report(exc.kind, str(exc))
            return
        self._last_persons = len(frame.persons)
        if frame.persons:
            self._last_model = frame.persons[0].model_id
        with self._lock:
            self._receive([OrderedFusion.frame(frame)])

    @boundary('subscription', 'audio_cues')
    def _on_cues(self, msg: AudioCues) -> None:
        self._cue_rate.tick()
        self._last_cues_t = time.monotonic()
        self._cues_seen += 1
        with self._lock:
            self._receive([OrderedFusion.cues(conversions.msg_to_cues(msg),
                                              msg.header.frame_id)])

    @boundary('subscription', 'voice_emotions')
    def _on_voice(self, msg: PersonEmotionArray) -> None:
        self._voices += 1
        try:
            frame = conversions.msg_to_frame(msg)
        except InputError as exc:
            self.bad_inputs.report(exc.kind, str(exc))
            return
        with self._lock:
            self._receive([OrderedFusion.voice(voice, frame.stamp, frame.frame_id)
                           for voice in frame.persons])

    @boundary('subscription', 'transcripts')
    def _on_transcript(self, msg: Transcript) -> None:
        self._transcripts += 1
        with self._lock:
            self._receive([OrderedFusion.transcript(conversions.msg_to_transcript(msg))])

    def _receive(self, inputs) -> None:
        # Under self._lock: hold the inputs, fuse what is due (stamp order), publish.
        self._after_update(self.ordered.receive(inputs, time.monotonic(), self._now()))

    @boundary('timer', 'release')
    def _release_due(self) -> None:
        with self._lock:
            if len(self.ordered.buffer):
                self._after_update(self.ordered.release(time.monotonic(), self._now()))

    def _after_update(self, alerts: List[Alert]) -> None:
        self._last_input_clock = self._clock_s()
        for kind, message in self.fusion.clock.drain_events():
            if kind in ('future_stamp', 'bad_stamp'):
                self.bad_inputs.report(kind, message)
            else:
                self.get_logger().warning(message)
        for alert in alerts:
            self._publish_alert(alert)
        signature = self._incident_signature()
        if alerts or signature != self._signature:
            self._publish_incidents()

    def _publish_alert(self, alert: Alert) -> None:
        msg = conversions.alert_to_msg(alert)
        incident = self.fusion.get(alert.incident_id)
        if incident is not None and incident.position is not None and not msg.has_position:
            msg.has_position = True
            msg.position = conversions.position_to_msg(incident.position, msg.header.stamp)
        self._alert_pub.publish(msg)
        self._alerts_by_level[alert.level] = self._alerts_by_level.get(alert.level, 0) + 1
        # From the evidence's stamp to now on the node clock: live sensors and bag_player
        # (restamped) give wall-clock stamps; a bag played with /clock and use_sim_time, bag time.
        latency = (self._clock_s() - alert.stamp) * 1e3
        self._latency_ms = (self._latency_ms + [latency])[-100:]
        self.get_logger().info(conversions.format_alert(msg))

    # -------------------------------------------------------------- outputs
    def _incident_signature(self):
        return tuple((i.id, i.state, i.level, i.acknowledged, i.confirmed, i.rejected,
                      len(i.tracks), len(i.history)) for i in self.fusion.incidents())

    def _publish_incidents(self) -> None:
        incidents = self.fusion.incidents()
        self._signature = self._incident_signature()
        array = IncidentArray(incidents=[conversions.incident_to_msg(i) for i in incidents])
        array.header.stamp = self.get_clock().now().to_msg()
        self._incident_pub.publish(array)
        if self._marker_pub is not None:
            markers, self._marker_ids = incident_markers(array, self._marker_ids)
            self._marker_pub.publish(markers)

    @boundary('timer', 'republish')
    def _republish(self) -> None:
        with self._lock:
            now = self._clock_s()
            idle = now - self._last_input_clock
            # Nothing arrives (cameras off, link down): incidents still age. The clock also
            # times how long resolved incidents stay listed after an operator's resolve.
            self.fusion.idle(idle if idle > 1.0 else 0.0, clock=now)
            self._publish_incidents()

    @boundary('timer', 'age')
    def _age(self) -> None:
        with self._lock:
            now = self._clock_s()
            idle = now - self._last_input_clock
            self.fusion.idle(idle if idle > 1.0 else 0.0, clock=now)
            if self._incident_signature() != self._signature:
                self._publish_incidents()

    def _clock_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------- services
    @boundary('service', 'list_incidents')
    def _on_list(self, request: ListIncidents.Request,
                 response: ListIncidents.Response) -> ListIncidents.Response:
        with self._lock:
            incidents = self.fusion.incidents(include_closed=request.include_closed)
            response.incidents = [conversions.incident_to_msg(i) for i in incidents]
        return response

    def _command_handler(self, action: str):
        def handle(request: IncidentCommand.Request,
                   response: IncidentCommand.Response) -> IncidentCommand.Response:
            with self._lock:
                operator, note = str(request.operator_id), str(request.note)
                refusal = check_request(operator, note, self.config.accepted_operators)
                if refusal is not None:
                    kind, reason = refusal
                    self._guard_refusals[kind] = self._guard_refusals.get(kind, 0) + 1
                    if kind == 'operator_not_accepted':
                        self._last_guard_refusal = (time.monotonic(), f'{operator!r} on '
                                                    f'{action}_incident {request.id}')
                    response.success = False
                    response.message = f'{action} incident {request.id} refused: {reason}'
                    self.get_logger().warning(f'operator command refused: {response.message}')
                    return response
                now = self._clock_s()
                ok, message, incident = self.fusion.command(
                    int(request.id), action, note, operator, stamp=now,
                    idle_s=now - self._last_input_clock)
                response.success, response.message = ok, message
                if incident is not None:
                    response.incident = conversions.incident_to_msg(incident)
                if ok:
                    self.get_logger().info(f'operator: {message}'
                                           + (f' ({note})' if note else ''))
                else:
                    self.get_logger().warning(f'operator command refused: {message}')
                if incident is not None:
                    self._publish_incidents()  # the history changed, refused or not
            return response
        return self.health.wrap(handle, 'service', f'{action}_incident')

    def _command_values(self) -> dict:
        """Accepted and refused operator commands for /diagnostics."""
        refused = dict(self.fusion.refusals)
        for kind, count in self._guard_refusals.items():
            refused[kind] = refused.get(kind, 0) + count
        values = {'commands_accepted': self.fusion.counters['commands_accepted'],
                  'commands_refused': sum(refused.values())}
        for kind, count in sorted(refused.items()):
            values[f'commands_refused.{kind}'] = count
        if self.config.accepted_operators:
            values['accepted_operators'] = ', '.join(self.config.accepted_operators)
        return values

    # ---------------------------------------------------------- diagnostics
    @boundary('timer', 'diagnostics')
    def _publish_diagnostics(self) -> None:
        cfg = self.config
        with self._lock:
            incidents = self.fusion.incidents(include_closed=False)
            values = {'person_frames_rate_hz': self._frame_rate.rate,
                      'person_frames_total': self._frames, 'audio_cues_total': self._cues_seen,
                      'audio_cues_rate_hz': self._cue_rate.rate,
                      'transcripts_total': self._transcripts,
                      'voice_estimates_total': self._voices,
                      'alerts_total': self.fusion.counters['alerts'],
                      'incidents_open': len(incidents),
                      'incidents_created_total': self.fusion.counters['incidents_created'],
                      'alerts_suppressed_rejected': self.fusion.counters['suppressed_rejected'],
                      'clock_steps_back': self.fusion.clock.clock_steps,
                      'future_stamps_rejected': self.fusion.clock.future_rejected,
                      'persons_in_last_frame': self._last_persons,
                      'tracks_followed': self.fusion.tracks_followed,
                      'model': self._last_model or 'no estimates yet'}
            values.update(self._command_values())
        for level, name in conversions.LEVEL_NAMES.items():
            values[f'alerts.{name}'] = self._alerts_by_level.get(level, 0)
            values[f'incidents_open.{name}'] = sum(1 for i in incidents if i.level == level)
        if self._latency_ms:
            ordered = sorted(self._latency_ms)
            values['alert_latency_ms.p50'] = ordered[len(ordered) // 2]
            values['alert_latency_ms.max'] = ordered[-1]
        level, problems = DiagnosticStatus.OK, []
        now = time.monotonic()
        if now - self._last_persons_t > cfg.input_timeout_s:
            problems.append(f'no person estimates for {now - self._last_persons_t:.0f} s')
        if cfg.expect_audio and now - self._last_cues_t > cfg.input_timeout_s:
            what = 'stopped' if self._cues_seen else 'never arrived'
            problems.append(f'audio cues {what} ({now - self._last_cues_t:.0f} s; is '
                            'audio_node running? expect_audio: false if there is no audio)')
        if (self._last_guard_refusal is not None
                and now - self._last_guard_refusal[0] <= GUARD_WARN_S):
            problems.append(f'refused a command from an operator not in accepted_operators '
                            f'{now - self._last_guard_refusal[0]:.0f} s ago '
                            f'({self._last_guard_refusal[1]})')
        if self.fusion.clock.future_rejected or self.fusion.clock.clock_steps:
            values['time'] = (f'{self.fusion.clock.clock_steps} clock steps back, '
                              f'{self.fusion.clock.future_rejected} future stamps rejected')
        if problems:
            level = DiagnosticStatus.WARN
        self.diagnostics.publish(values, level, '; '.join(problems) or 'ok', self.bad_inputs)


def main(args=None) -> None:
    """Run the distress node."""
    run_node(DistressNode, args=args)


if __name__ == '__main__':
    main()

"""distress_node: person estimates + audio cues in, distress alerts and /diagnostics out."""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticStatus
from emotion_ros_msgs.msg import AudioCues, DistressAlert, PersonEmotionArray
from rclpy.node import Node

from emotion_ros.errors import InputError
from emotion_ros.fusion import DistressFusion
from emotion_ros.node_config import DistressNodeConfig
from emotion_ros.ros import conversions
from emotion_ros.ros.node_utils import (BadInputLog, declare_config, Diagnostics, RateMeter,
                                        reliability_qos, run_node)


class DistressNode(Node):
    """Fuses per-person emotions and audio cues over time into distress alerts."""

    def __init__(self) -> None:
        super().__init__('distress_node')
        self.config = declare_config(self, DistressNodeConfig)
        self.fusion = DistressFusion(self.config.fusion)
        self.bad_inputs = BadInputLog(self)
        # Alerts are few and must not be lost: reliable, with history for late readers.
        self._pub = self.create_publisher(DistressAlert, 'distress_alerts',
                                          reliability_qos('reliable', depth=50))
        self.create_subscription(PersonEmotionArray, 'persons', self._on_persons,
                                 reliability_qos('reliable', depth=10))
        self.create_subscription(AudioCues, 'audio_cues', self._on_cues,
                                 reliability_qos('reliable', depth=20))
        self._frame_rate = RateMeter()
        self._cue_rate = RateMeter()
        self._alerts = 0
        self._alerts_by_level = {}
        self._latency_ms = []  # image stamp -> alert published, wall clock (bounded)
        self._last_model = ''
        self._last_persons = 0
        self.diagnostics = Diagnostics(self, f'emotion_ros: {self.get_name()}')
        self.create_timer(self.config.diagnostics_period_s, self._publish_diagnostics)

    def _on_persons(self, msg: PersonEmotionArray) -> None:
        self._frame_rate.tick()
        try:
            frame = conversions.msg_to_frame(msg)
        except InputError as exc:
            self.bad_inputs.report(exc.kind, str(exc))
            return
        self._last_persons = len(frame.persons)
        if frame.persons:
            self._last_model = frame.persons[0].model_id
        self._publish(self.fusion.update_frame(frame), msg.header.frame_id)

    def _on_cues(self, msg: AudioCues) -> None:
        self._cue_rate.tick()
        self._publish(self.fusion.update_audio(conversions.msg_to_cues(msg)),
                      msg.header.frame_id)

    def _publish(self, alerts, frame_id: str) -> None:
        for alert in alerts:
            msg = conversions.alert_to_msg(alert, frame_id)
            self._pub.publish(msg)
            self._alerts += 1
            self._alerts_by_level[alert.level] = self._alerts_by_level.get(alert.level, 0) + 1
            # Latency from the evidence's stamp, meaningful when stamps are wall-clock time.
            latency = (time.time() - alert.stamp) * 1e3
            self._latency_ms = (self._latency_ms + [latency])[-100:]
            self.get_logger().info(conversions.format_alert(msg))

    def _publish_diagnostics(self) -> None:
        values = {'person_frames_rate_hz': self._frame_rate.rate,
                  'audio_cues_rate_hz': self._cue_rate.rate, 'alerts_total': self._alerts,
                  'persons_in_last_frame': self._last_persons,
                  'tracks_followed': len(self.fusion.scores()) - 1,
                  'model': self._last_model or 'no estimates yet'}
        for level, name in conversions.LEVEL_NAMES.items():
            values[f'alerts.{name}'] = self._alerts_by_level.get(level, 0)
        if self._latency_ms:
            ordered = sorted(self._latency_ms)
            values['alert_latency_ms.p50'] = ordered[len(ordered) // 2]
            values['alert_latency_ms.max'] = ordered[-1]
        level = DiagnosticStatus.OK
        message = 'ok'
        if self._frame_rate.rate == 0.0:
            level, message = DiagnosticStatus.WARN, 'no person estimates received recently'
        self.diagnostics.publish(values, level, message, self.bad_inputs)


def main(args=None) -> None:
    """Run the distress node."""
    run_node(DistressNode)


if __name__ == '__main__':
    main()

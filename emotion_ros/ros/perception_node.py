"""perception_node: camera frames in, tracked per-person emotion estimates out.

A managed (lifecycle) node: models load on configure and are freed on cleanup.
The image callback only keeps the latest frame; a timer in its own callback
group processes it at up to ``max_rate_hz`` and counts the frames it skipped.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

from diagnostic_msgs.msg import DiagnosticStatus
from emotion_ros_msgs.msg import PersonEmotionArray
from emotion_ros_msgs.srv import ExplainPerson
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image

from emotion_ros.errors import EmotionRosError, InputError
from emotion_ros.node_config import PerceptionNodeConfig
from emotion_ros.pipeline import PerceptionPipeline
from emotion_ros.ros import conversions
from emotion_ros.ros.node_utils import (BadInputLog, declare_config, Diagnostics, RateMeter,
                                        reliability_qos, reload_config, run_node)
from emotion_ros.visualize import draw_persons


class PerceptionNode(LifecycleNode):
    """Detects, tracks and estimates the emotions of people in camera frames."""

    def __init__(self) -> None:
        super().__init__('perception_node')
        self.config: Optional[PerceptionNodeConfig] = None
        try:
            self.config = declare_config(self, PerceptionNodeConfig)
        except EmotionRosError as exc:
            # Stay alive and unconfigured; configure reports the error again.
            self.get_logger().error(f'invalid parameters: {exc}')
        self.pipeline: Optional[PerceptionPipeline] = None
        self.bad_inputs = BadInputLog(self)
        self._latest = None  # (msg, receipt monotonic time)
        self._latest_lock = threading.Lock()
        self._received = 0
        self._processed = 0
        self._skipped = 0
        self._in_rate = RateMeter()
        self._out_rate = RateMeter()
        self._stage_ms = {}
        self._state = 'unconfigured'
        self._sub = None
        self._pub = None
        self._debug_pub = None
        self._timer = None
        self._worker_group = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self.diagnostics = Diagnostics(self, f'emotion_ros: {self.get_name()}')
        self.create_timer(self.config.diagnostics_period_s if self.config else 2.0,
                          self._publish_diagnostics)

    # ------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read parameters, load the models; FAILURE (stay unconfigured) on bad config/weights."""
        try:
            self.config = reload_config(self, PerceptionNodeConfig)
            pipeline = PerceptionPipeline(self.config.pipeline)
            started = time.monotonic()
            pipeline.load()
        except EmotionRosError as exc:
            self.get_logger().error(f'configure failed: {exc}')
            self._state = f'configure failed: {exc}'
            return TransitionCallbackReturn.FAILURE
        self.pipeline = pipeline
        self.get_logger().info(f'models loaded in {time.monotonic() - started:.1f} s: '
                               f'{pipeline.model_id}')
        cfg = self.config
        qos = reliability_qos(cfg.reliability, depth=1)
        msg_type = Image if cfg.image_transport == 'raw' else CompressedImage
        self._sub = self.create_subscription(msg_type, 'image', self._on_image, qos)
        self._pub = self.create_lifecycle_publisher(PersonEmotionArray, 'persons', 10)
        if cfg.publish_debug_image:
            self._debug_pub = self.create_lifecycle_publisher(Image, 'debug_image', 2)
        self._explain = self.create_service(ExplainPerson, 'explain_person', self._on_explain,
                                            callback_group=self._service_group)
        self._state = 'inactive'
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start processing frames."""
        self._timer = self.create_timer(1.0 / self.config.pipeline.max_rate_hz, self._process,
                                        callback_group=self._worker_group)
        self._state = 'active'
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop processing frames (models stay loaded)."""
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        self._state = 'inactive'
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the models (and GPU memory) and the topics."""
        self._release()
        self._state = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free everything."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        for entity in (self._sub,):
            if entity is not None:
                self.destroy_subscription(entity)
        self._sub = None
        for pub in (self._pub, self._debug_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._pub = self._debug_pub = None
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None
        with self._latest_lock:
            self._latest = None

    # ------------------------------------------------------------- data path
    def _on_image(self, msg) -> None:
        # Only store: inference never runs in a subscription callback.
        with self._latest_lock:
            if self._latest is not None:
                self._skipped += 1
            self._latest = (msg, time.monotonic())
        self._received += 1
        self._in_rate.tick()

    def _process(self) -> None:
        with self._latest_lock:
            item, self._latest = self._latest, None
        if item is None or self.pipeline is None:
            return
        msg, received = item
        t0 = time.perf_counter()
        try:
            if isinstance(msg, Image):
                rgb = conversions.image_to_rgb(msg)
            else:
                rgb = conversions.compressed_to_rgb(msg)
        except InputError as exc:
            self.bad_inputs.report(exc.kind, str(exc))
            return
        decode_ms = (time.perf_counter() - t0) * 1e3
        stamp = conversions.stamp_to_sec(msg.header.stamp)
        try:
            result = self.pipeline.process(rgb, stamp, msg.header.frame_id)
        except InputError as exc:
            self.bad_inputs.report(exc.kind, str(exc))
            return
        except EmotionRosError as exc:
            self.bad_inputs.report('pipeline', str(exc))
            return
        result.timings_ms['decode'] = decode_ms
        if self.config.explain_all_persons and self.pipeline.backend.can_explain:
            for person in result.persons:
                person.emotion.explanation = self.pipeline.backend.explain(
                    rgb, person.box, self.config.explanation_max_new_tokens)
        t_pub = time.perf_counter()
        total_ms = (time.monotonic() - received) * 1e3
        self._pub.publish(conversions.frame_to_msg(result, total_ms))
        if self._debug_pub is not None:
            annotated = draw_persons(rgb, result.persons)
            self._debug_pub.publish(conversions.rgb_to_image(annotated, msg.header))
        result.timings_ms['publish'] = (time.perf_counter() - t_pub) * 1e3
        self._stage_ms = {k: 0.8 * self._stage_ms.get(k, v) + 0.2 * v
                          for k, v in result.timings_ms.items()}
        self._processed += 1
        self._out_rate.tick()

    def _on_explain(self, request: ExplainPerson.Request,
                    response: ExplainPerson.Response) -> ExplainPerson.Response:
        if self.pipeline is None:
            response.success, response.message = False, 'node is not configured'
            return response
        budget = request.max_new_tokens or self.config.explanation_max_new_tokens
        try:
            response.explanation = self.pipeline.explain(request.track_id, budget)
            response.success = True
        except (EmotionRosError, NotImplementedError) as exc:
            response.success, response.message = False, str(exc)
        return response

    def _publish_diagnostics(self) -> None:
        level = DiagnosticStatus.OK if self._state in ('active', 'inactive') else \
            DiagnosticStatus.WARN
        if self._state.startswith('configure failed'):
            level = DiagnosticStatus.ERROR
        values = {'state': self._state, 'frames_received': self._received,
                  'frames_processed': self._processed, 'frames_skipped': self._skipped,
                  'input_rate_hz': self._in_rate.rate, 'output_rate_hz': self._out_rate.rate,
                  'model': self.pipeline.model_id if self.pipeline else 'not loaded'}
        values.update({f'stage_ms.{k}': v for k, v in self._stage_ms.items()})
        self.diagnostics.publish(values, level, self._state, self.bad_inputs)


def _autostart(node: PerceptionNode) -> None:
    if node.get_parameter('autostart').value is True:
        if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()


def main(args=None) -> None:
    """Run the perception node (configures and activates itself when autostart is set)."""
    run_node(PerceptionNode, num_threads=3, before_spin=_autostart)


if __name__ == '__main__':
    main()

"""perception_node: camera frames in, tracked per-person emotion estimates out.

A managed (lifecycle) node: models load on configure and are freed on cleanup.
The image callback only keeps the latest frame; a timer in its own callback
group processes it at up to ``max_rate_hz`` and counts the frames it skipped.

Every transition, timer, service and subscription sits behind the node's error
boundary (``NodeHealth``): an exception is logged with its traceback once,
counted, and turns /diagnostics to ERROR with the reason (a failed configure
holds ERROR until a configure succeeds). Run-time parameters: those in
``AT_CONFIGURE`` are read at configure (refused while configured),
``autostart`` is read-only, the others take effect at once.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

from diagnostic_msgs.msg import DiagnosticStatus
from emotion_ros_msgs.msg import AudioFrame, PersonEmotionArray, Transcript
from emotion_ros_msgs.srv import ExplainPerson
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks
from sensor_msgs.msg import CompressedImage, Image

from emotion_ros.perception.detectors.base import FALLBACK_BLIND_SPOT
from emotion_ros.errors import EmotionRosError, InputError
from emotion_ros.config.nodes import PerceptionNodeConfig
from emotion_ros.perception.pipeline import PerceptionPipeline
from emotion_ros.ros import conversions
from emotion_ros.ros.camera_inputs import camera_name, CameraInputs
from emotion_ros.ros.diagnostics import Diagnostics, RateMeter
from emotion_ros.ros.executor import run_node
from emotion_ros.ros.health import BadInputLog, boundary, NodeHealth
from emotion_ros.ros.params import declare_config, reload_config
from emotion_ros.ros.qos import reliability_qos
from emotion_ros.perception.visualize import draw_persons

#: Parameters read at configure: refused while the node is configured (clean up first).
AT_CONFIGURE = ('image_transport', 'reliability', 'detector.', 'tracker.', 'emotion.',
                'thumbnails', 'thumbnail_px', 'localization.', 'camera_name')


class PerceptionNode(LifecycleNode):
    """Detects, tracks and estimates the emotions of people in camera frames."""

    def __init__(self) -> None:
        super().__init__('perception_node')
        self.health = NodeHealth(self)
        self._state = 'unconfigured'
        self._timer = None
        self._debug_pub = None
        self.config: Optional[PerceptionNodeConfig] = None
        try:
            self.config = declare_config(
                self, PerceptionNodeConfig, on_change=self._apply_config,
                read_only=('autostart',), at_configure=AT_CONFIGURE,
                is_configured=lambda: self._state != 'unconfigured')
        except EmotionRosError as exc:
            # Stay alive and unconfigured (ERROR in diagnostics); configure checks again.
            self.health.set_fatal('parameters', f'invalid parameters: {exc}')
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
        self._lost = 0
        self._lost_reported = 0
        self._audio_late = 0  # audio_visual: frames scored before their audio arrived
        self._sub = None
        self._pub = None
        self._voice_pub = None
        self._explain = None
        self._worker_group = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        # Unique per namespace (several cameras): 'emotion_ros: cam_left/perception_node'.
        self.diagnostics = Diagnostics(
            self, f'emotion_ros: {self.get_fully_qualified_name().lstrip("/")}')
        self._diag_timer = self.create_timer(
            self.config.diagnostics_period_s if self.config else 2.0, self._publish_diagnostics)

    def _apply_config(self, new: PerceptionNodeConfig) -> None:
        """Take a run-time parameter change (validated as a whole) into effect."""
        old = self.config
        if old is not None and self._state != 'unconfigured':
            if new.diagnostics_period_s != old.diagnostics_period_s:
                self._diag_timer.timer_period_ns = int(new.diagnostics_period_s * 1e9)
                self._diag_timer.reset()
            if self._timer is not None and new.pipeline.max_rate_hz != old.pipeline.max_rate_hz:
                self._timer.timer_period_ns = int(1e9 / new.pipeline.max_rate_hz)
                self._timer.reset()
            if new.publish_debug_image != old.publish_debug_image:
                self._set_debug_publisher(new.publish_debug_image)
            if self.pipeline is not None and new.pipeline.reuse != old.pipeline.reuse:
                self.pipeline.set_reuse(new.pipeline.reuse)
        elif old is not None and new.diagnostics_period_s != old.diagnostics_period_s:
            self._diag_timer.timer_period_ns = int(new.diagnostics_period_s * 1e9)
            self._diag_timer.reset()
        self.config = new  # one reference swap: callbacks see the old or the new config

    def _set_debug_publisher(self, enabled: bool) -> None:
        if enabled and self._debug_pub is None:
            pub = self.create_lifecycle_publisher(Image, 'debug_image', 2)
            if self._state == 'active':
                pub.on_activate(None)
            self._debug_pub = pub
        elif not enabled and self._debug_pub is not None:
            pub, self._debug_pub = self._debug_pub, None
            self.destroy_lifecycle_publisher(pub)

    # ------------------------------------------------------------- lifecycle
    @boundary('transition')
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read parameters, load the models, create the topics and the explain service.

        Any error (bad parameters, missing weights, a missing package) returns FAILURE: the
        node stays unconfigured and /diagnostics hold ERROR with the reason until a
        configure succeeds.
        """
        self._state = 'unconfigured'
        self.config = reload_config(self, PerceptionNodeConfig)
        pipeline = PerceptionPipeline(self.config.pipeline)
        started = time.monotonic()
        pipeline.load()
        self.pipeline = pipeline
        try:
            self.get_logger().info(f'models loaded in {time.monotonic() - started:.1f} s: '
                                   f'{pipeline.model_id}')
            cfg = self.config
            qos = reliability_qos(cfg.reliability, depth=1)
            msg_type = Image if cfg.image_transport == 'raw' else CompressedImage
            events = SubscriptionEventCallbacks(message_lost=self._on_message_lost)
            self._sub = self.create_subscription(msg_type, 'image', self._on_image, qos,
                                                 event_callbacks=events)
            self._pub = self.create_lifecycle_publisher(PersonEmotionArray, 'persons', 10)
            # audio_visual, nobody visible: the voice scored alone (docs/audio_visual.md).
            self._voice_pub = self.create_lifecycle_publisher(PersonEmotionArray,
                                                              'voice_emotions', 10)
            if cfg.publish_debug_image:
                self._set_debug_publisher(True)
            self._explain = self.create_service(ExplainPerson, 'explain_person',
                                                self._on_explain,
                                                callback_group=self._service_group)
            self._report_detector()
            self._av_subs = []
            if pipeline.av_context is not None:  # audio_visual: also hear the persons
                self._av_subs = [
                    self.create_subscription(AudioFrame, 'audio', self._on_audio, 50),
                    self.create_subscription(Transcript, 'transcripts', self._on_transcript, 10)]
            self._camera = CameraInputs(self, cfg.pipeline.localization,
                                        camera_name(self, cfg.camera_name), self.bad_inputs)
        except BaseException:
            self._release()
            raise
        self.health.clear_fatal()
        self._state = 'inactive'
        return TransitionCallbackReturn.SUCCESS

    def _report_detector(self) -> None:
        """WARN for as long as the auto detector runs its face-anchored fallback."""
        reason = getattr(self.pipeline.detector, 'fallback_reason', '')
        if reason:
            self.health.set_condition(
                'detector', DiagnosticStatus.WARN,
                f'detector.type auto fell back to the face-anchored detector ({reason}): '
                f'{FALLBACK_BLIND_SPOT}')
        else:
            self.health.clear_condition('detector')

    @boundary('transition')
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start processing frames."""
        self._timer = self.create_timer(1.0 / self.config.pipeline.max_rate_hz, self._process,
                                        callback_group=self._worker_group)
        self._state = 'active'
        return super().on_activate(state)

    @boundary('transition')
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop processing frames (models stay loaded)."""
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        self._state = 'inactive'
        return super().on_deactivate(state)

    @boundary('transition')
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the models (and GPU memory) and the topics."""
        self._release()
        self._state = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    @boundary('transition')
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
        if getattr(self, '_camera', None) is not None:
            self._camera.destroy()
        self._camera = None
        for pub in (self._pub, self._debug_pub, self._voice_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._pub = self._debug_pub = self._voice_pub = None
        if self._explain is not None:
            self.destroy_service(self._explain)
            self._explain = None
        for sub in getattr(self, '_av_subs', []):
            self.destroy_subscription(sub)
        self._av_subs = []
        self.health.clear_condition('detector')
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None
        with self._latest_lock:
            self._latest = None

    # ------------------------------------------------------------- data path
    @boundary('subscription')
    def _on_image(self, msg) -> None:
        # Only store: inference never runs in a subscription callback.
        with self._latest_lock:
            if self._latest is not None:
                self._skipped += 1
            self._latest = (msg, time.monotonic())
        self._received += 1
        self._in_rate.tick()

    @boundary('subscription', 'audio')
    def _on_audio(self, msg: AudioFrame) -> None:
        # audio_visual backend: the latest audio window (header stamp = first sample).
        pipeline = self.pipeline
        if pipeline is None:
            return
        try:
            samples = conversions.audio_frame_to_samples(msg)
        except InputError as exc:
            self.bad_inputs.report(exc.kind, str(exc))
            return
        end = conversions.stamp_to_sec(msg.header.stamp) + samples.shape[0] / msg.sample_rate
        try:
            pipeline.feed_audio(samples, end, int(msg.sample_rate))
        except InputError as exc:
            self.bad_inputs.report(exc.kind, str(exc))

    @boundary('subscription', 'transcripts')
    def _on_transcript(self, msg: Transcript) -> None:
        pipeline = self.pipeline
        if pipeline is not None and msg.text:
            pipeline.feed_transcript(msg.text, conversions.stamp_to_sec(msg.end))

    @boundary('subscription', 'message_lost')
    def _on_message_lost(self, info) -> None:
        # The middleware saw sequence gaps: frames that never arrived (e.g. larger than the
        # shared-memory segment; see docs/architecture.md "Large frames").
        self._lost += int(info.total_count_change)
        self.bad_inputs.report(
            'frames_lost_in_transport',
            f'{info.total_count_change} image message(s) lost in transport ({self._lost} so '
            'far): frames larger than the DDS shared-memory segment or a saturated link; '
            'see "Large frames" in docs/architecture.md')

    @boundary('timer')
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
        context = self.pipeline.av_context
        sync_s = self.config.pipeline.emotion.audio_visual.audio_sync_s
        if context is not None and sync_s > 0 and not context.wait_for_audio(stamp, sync_s):
            self._audio_late += int(context.audio_live())
        try:
            camera = getattr(self, '_camera', None)
            result = self.pipeline.process(
                rgb, stamp, msg.header.frame_id, camera.name if camera else '',
                camera.model if camera else None, camera.depth_for(stamp) if camera else None)
            if camera is not None:
                camera.to_fixed(result)
        except InputError as exc:
            self.bad_inputs.report(exc.kind, str(exc))
            return
        except EmotionRosError as exc:
            # Not the input's fault (a model or processing failure): an error, counted in
            # errors_total, /diagnostics ERROR with the reason; the next frame is tried.
            self.health.record('timer', 'process', exc)
            return
        result.timings_ms['decode'] = decode_ms
        cfg = self.config
        if cfg.explain_all_persons and self.pipeline.backend.can_explain:
            self._explain_all(rgb, result, cfg.explanation_max_new_tokens)
        t_pub = time.perf_counter()
        total_ms = (time.monotonic() - received) * 1e3
        self._pub.publish(conversions.frame_to_msg(result, total_ms))
        if result.voice is not None:
            self._voice_pub.publish(conversions.voice_to_msg(result, total_ms))
        debug_pub = self._debug_pub
        if debug_pub is not None:
            annotated = draw_persons(rgb, result.persons)
            debug_pub.publish(conversions.rgb_to_image(annotated, msg.header))
        result.timings_ms['publish'] = (time.perf_counter() - t_pub) * 1e3
        self._stage_ms = {k: 0.8 * self._stage_ms.get(k, v) + 0.2 * v
                          for k, v in result.timings_ms.items()}
        self._processed += 1
        self._out_rate.tick()

    def _explain_all(self, rgb, result, max_new_tokens: int) -> None:
        # Under the pipeline lock (no race with the service); one person's failure is counted
        # and the estimates are published without that explanation.
        for person in result.persons:
            try:
                person.emotion.explanation = self.pipeline.explain_box(
                    rgb, person.box, max_new_tokens)
            except Exception as exc:  # noqa: B902 - counted in diagnostics, frame still out
                self.health.record('timer', 'explain_all_persons', exc)

    @boundary('service')
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

    @boundary('timer')
    def _publish_diagnostics(self) -> None:
        level = DiagnosticStatus.OK if self._state in ('active', 'inactive') else \
            DiagnosticStatus.WARN
        message = self._state
        if self._lost > self._lost_reported:
            level = max(level, DiagnosticStatus.WARN)
            message = (f'{self._state}; {self._lost - self._lost_reported} frame(s) lost in '
                       'transport since the last report')
            self._lost_reported = self._lost
        values = {'state': self._state, 'frames_received': self._received,
                  'frames_processed': self._processed, 'frames_skipped': self._skipped,
                  'frames_lost_in_transport': self._lost,
                  'frames_scored_before_their_audio': self._audio_late,
                  'input_rate_hz': self._in_rate.rate, 'output_rate_hz': self._out_rate.rate,
                  'model': self.pipeline.model_id if self.pipeline else 'not loaded'}
        values.update({f'stage_ms.{k}': v for k, v in self._stage_ms.items()})
        if self.pipeline is not None:  # reuse.*: work skipped on unchanged frames
            values.update(self.pipeline.reuse_counts())
        if getattr(self, '_camera', None) is not None:
            values.update(self._camera.values())
        self.diagnostics.publish(values, level, message, self.bad_inputs)


def _autostart(node: PerceptionNode) -> None:
    if node.get_parameter('autostart').value is True:
        if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()


def main(args=None) -> None:
    """Run the perception node (configures and activates itself when autostart is set)."""
    run_node(PerceptionNode, num_threads=3, before_spin=_autostart, args=args)


if __name__ == '__main__':
    main()

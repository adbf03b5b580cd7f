"""audio_node: audio frames in; audio cues and one transcript per utterance out.

The subscription callback decodes and queues the samples (bounded); a timer
in its own callback group runs the cue extractor (voice activity,
utterances, scream/cry, arousal), so decoding never blocks message reception.
Each closed utterance goes to the extractor's bounded decode queue, decoded on
a worker thread by the call-for-help detector behind its watchdog, so a slow
decode never delays the cue windows of later audio; a full queue drops the
oldest partial snapshot first, then the oldest utterance (counted,
``utterances_dropped``, WARN). /diagnostics reports
the stream's continuity (frames received vs expected from their stamps,
gaps, jumps, restarts) and the detector's health (utterances decoded,
latency, time since the last decoded utterance while voice is active,
watchdog restarts), at WARN/ERROR when the detector stops answering, and at WARN
when the second opinion (help_verifier) could not load and Whisper decides alone.
"""

from __future__ import annotations

import collections
import importlib
import threading
import time
from typing import Optional

from diagnostic_msgs.msg import DiagnosticStatus
from emotion_ros_msgs.msg import AudioCues, AudioFrame, Transcript
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from emotion_ros.audio.cues import AudioCueExtractor
from emotion_ros.audio.detectors import Transcript as DecodedUtterance
from emotion_ros.audio.messages import AudioDecoder, RawAudioFormat, transcript_of
from emotion_ros.audio.stream_monitor import StreamMonitor
from emotion_ros.errors import ConfigError, EmotionRosError, InputError
from emotion_ros.pipeline import run_audio_stage
from emotion_ros.config.nodes import AudioNodeConfig
from emotion_ros.ros import conversions
from emotion_ros.ros.diagnostics import Diagnostics, RateMeter
from emotion_ros.ros.executor import run_node
from emotion_ros.ros.health import BadInputLog, boundary, NodeHealth
from emotion_ros.ros.params import declare_config
from emotion_ros.ros.qos import reliability_qos

QUEUE_CHUNKS = 200  # bounded: ~20 s of 100 ms chunks
#: After a watchdog restart the node stays at WARN this long (or until a decode succeeds).
RESTART_WARN_S = 30.0


class AudioNode(Node):
    """Extracts audio cues and transcripts from a stream of audio frames."""

    def __init__(self) -> None:
        super().__init__('audio_node')
        self.health = NodeHealth(self)
        # Read-only parameters: the extractor's models are built from them at start-up.
        self.config = declare_config(self, AudioNodeConfig)
        self.extractor = AudioCueExtractor(self.config.cues,
                                           background_decode=self.config.cues.background_decode)
        # A help detector that cannot be loaded (missing wheel or model folder) leaves the
        # node running with the other cues; /diagnostics reports it at ERROR.
        self.extractor.load(keep_going_without_detector=True)
        if self.extractor.detector_error:
            self.get_logger().error(f'help detector not loaded, calls for help are NOT '
                                    f'detected: {self.extractor.detector_error}')
        elif self.extractor.verifier_error:
            self.get_logger().warning(f'help_verifier not loaded, calls are decided by Whisper '
                                      f'alone: {self.extractor.verifier_error}')
        self._detector_info = self._describe_detector()
        self.bad_inputs = BadInputLog(self)
        self.monitor = StreamMonitor()
        cfg = self.config
        self._decoder = AudioDecoder(RawAudioFormat(
            cfg.audio_common_sample_rate, cfg.audio_common_channels,
            cfg.audio_common_sample_format))
        self._queue = collections.deque()
        self._queue_lock = threading.Lock()
        self._dropped = 0
        self._cues = 0
        self._helps = 0
        self._transcripts = 0
        self._in_rate = RateMeter()
        self._proc_ms = 0.0
        self._latency_ms = 0.0
        self._frame_id = 'microphone'
        now = time.monotonic()
        self._last_decoded = now
        self._voice_since: Optional[float] = None   # voice heard, not yet decoded, since
        self._last_restart_t = -1e18
        self._restarts_seen = 0
        self._drops_seen = 0
        self._last_drop_t = -1e18
        self._pub = self.create_publisher(AudioCues, 'audio_cues', 10)
        self._transcript_pub = self.create_publisher(
            Transcript, 'transcripts', reliability_qos('reliable', depth=20))
        msg_type = self._input_type()
        # Depth 200 (20 s of 100 ms frames): audio keeps coming in while the executor is
        # busy, e.g. while the watchdog rebuilds a stalled detector on a loaded CPU.
        self.create_subscription(msg_type, 'audio', self._on_audio,
                                 reliability_qos('reliable', depth=200))
        self.create_timer(0.05, self._process, callback_group=MutuallyExclusiveCallbackGroup())
        self.diagnostics = Diagnostics(
            self, f'emotion_ros: {self.get_fully_qualified_name().lstrip("/")}')
        self.create_timer(self.config.diagnostics_period_s, self._publish_diagnostics)
        info = self._detector_info
        self.get_logger().info(f'listening on {self.resolve_topic_name("audio")} '
                               f'({self.config.audio_msg_type}); help detector: '
                               f'{info["help_detector"]} ({info["help_engine"]}, '
                               f'{info["help_model"]})')

    def _describe_detector(self) -> dict:
        """Detector, engine and model in use (or configured, when it failed to load)."""
        cues = self.config.cues
        runner = self.extractor.runner
        if not cues.keyword_spotting:
            return {'help_detector': 'off', 'help_engine': '', 'help_model': '',
                    'help_model_path': ''}
        detector = runner.detector if runner is not None else None
        engine = (cues.whisper_engine if cues.help_detector == 'whisper' else 'pocketsphinx')
        model = detector.model_id if detector is not None else (
            cues.whisper_model if cues.help_detector == 'whisper' else 'en-us')
        return {'help_detector': cues.help_detector, 'help_engine': engine,
                'help_model': model or 'en-us',
                'help_model_path': getattr(detector, 'model_path', '') or ''}

    def _input_type(self) -> type:
        if self.config.audio_msg_type == 'emotion_ros':
            return AudioFrame
        name = 'AudioData' if self.config.audio_msg_type == 'audio_common' else \
            'AudioDataStamped'
        try:
            return getattr(importlib.import_module('audio_common_msgs.msg'), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f'audio_msg_type: {self.config.audio_msg_type} needs '
                              f'audio_common_msgs.msg.{name}, which is not installed') from exc

    @boundary('subscription', 'audio')
    def _on_audio(self, msg) -> None:
        self._in_rate.tick()
        try:
            samples, rate, stamp = self._decode(msg)
        except InputError as exc:
            self.bad_inputs.report(exc.kind, str(exc))
            return
        header = getattr(msg, 'header', None)
        if header is not None and header.frame_id:
            self._frame_id = header.frame_id
        self.monitor.feed(stamp, samples.size, rate)
        with self._queue_lock:
            if len(self._queue) >= QUEUE_CHUNKS:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append((samples, rate, stamp, self._frame_id))

    def _decode(self, msg):
        # The decoder the bag evaluation uses; a message without a header (or a zero
        # stamp) is stamped with the node clock on arrival.
        return self._decoder.decode(msg, self.config.audio_msg_type,
                                    self.get_clock().now().nanoseconds * 1e-9)

    @boundary('timer', 'process')
    def _process(self) -> None:
        while True:
            with self._queue_lock:
                if not self._queue:
                    break
                samples, rate, stamp, frame_id = self._queue.popleft()
            try:
                # The stage the bag evaluation runs (OfflinePipeline), chunk by chunk.
                output = run_audio_stage(self.extractor, samples, rate, stamp)
            except InputError as exc:
                self.bad_inputs.report(exc.kind, str(exc))
                continue
            except EmotionRosError as exc:
                self.bad_inputs.report('extractor', str(exc))
                self.extractor.reset()
                continue
            self._proc_ms = 0.8 * self._proc_ms + 0.2 * output.ms
            for utterance in output.utterances:
                self._publish_transcript(utterance, frame_id)
            now = time.monotonic()
            if self.extractor.in_speech and self._voice_since is None:
                self._voice_since = now
            for cues in output.cues:
                self._cues += 1
                self._helps += int(cues.help_detected)
                self._pub.publish(conversions.cues_to_msg(cues, frame_id))
        # Transcripts the background decoder finished while no audio came in.
        self.extractor.poll()
        for utterance in self.extractor.pop_transcripts():
            self._publish_transcript(utterance, self._frame_id)

    def _publish_transcript(self, t: DecodedUtterance, frame_id: str) -> None:
        now = time.monotonic()
        if t.status != 'ok':
            return  # counted by the extractor (decode_errors / decode_timeouts)
        self._last_decoded = now
        self._voice_since = now if self.extractor.in_speech else None
        self._latency_ms = t.decode_s * 1e3
        msg = conversions.transcript_to_msg(transcript_of(t, frame_id))
        msg.model_id = t.model_id
        self._transcript_pub.publish(msg)
        self._transcripts += 1

    @boundary('timer', 'diagnostics')
    def _publish_diagnostics(self) -> None:
        ex = self.extractor
        runner = ex.runner
        now = time.monotonic()
        busy = runner.busy_s() if runner is not None else 0.0
        pending = now - self._voice_since if self._voice_since is not None else 0.0
        restarts = runner.restarts if runner is not None else 0
        if restarts > self._restarts_seen:
            self._restarts_seen = restarts
            self._last_restart_t = now
        dropped = ex.utterances_dropped
        if dropped > self._drops_seen:
            self._drops_seen = dropped
            self._last_drop_t = now
        verifier_decodes, verifier_accepted = ex.verifier_counts
        values = {
            'frames_received': self.monitor.frames, 'input_rate_hz': self._in_rate.rate,
            **self.monitor.values(),
            'stream_restarts': ex.stream_restarts,
            'cues_published': self._cues, 'help_detections': self._helps,
            'chunks_dropped': self._dropped, 'processing_ms_per_chunk': self._proc_ms,
            'queue_length': len(self._queue),
            **self._detector_info,
            'help_detector_error': ex.detector_error,
            'utterances': ex.utterances, 'utterances_decoded': ex.utterances_decoded,
            'partial_decodes': ex.partial_decodes, 'partial_helps': ex.partial_helps,
            'transcripts_published': self._transcripts,
            'decode_errors': ex.decode_errors, 'decode_timeouts': ex.decode_timeouts,
            'detector_restarts': restarts,
            'detector_latency_ms': self._latency_ms, 'detector_busy_s': busy,
            'since_decoded_while_voiced_s': pending,
            'decode_queue_length': ex.decode_queue_length,
            'decode_queue_size': self.config.cues.decode_queue_size,
            'decode_queue_wait_ms': ex.decode_queue_wait_s * 1e3,
            'utterances_dropped': dropped, 'partials_dropped': ex.partials_dropped,
            'partials_superseded': ex.partials_superseded,
            'help_verifier': self.config.cues.help_verifier,
            'help_verifier_error': ex.verifier_error,
            'help_verifier_decodes': verifier_decodes,
            'help_verifier_accepted': verifier_accepted,
        }
        level, message = DiagnosticStatus.OK, 'ok'
        if ex.detector_error:
            level, message = DiagnosticStatus.ERROR, (
                f'help detector not loaded, calls for help are not detected: '
                f'{ex.detector_error}')
        elif runner is not None:
            timeout = self.config.cues.detector_timeout_s
            # Voice can legitimately wait for a decode as long as the longest
            # utterance plus its hangover; beyond that the detector is not answering.
            allowed = (self.config.cues.utterance_max_s + self.config.cues.utterance_hangover_s
                       + max(2.0, 0.5 * timeout))
            if busy > max(1.0, 0.5 * timeout) if timeout > 0 else busy > allowed:
                level, message = DiagnosticStatus.ERROR, (
                    f'help detector stalled: one decode running for {busy:.1f} s'
                    + (f' (watchdog restarts it at {timeout:.0f} s)' if timeout > 0 else ''))
            elif pending > allowed:
                level, message = DiagnosticStatus.ERROR, (
                    f'help detector silent: voice heard {pending:.1f} s ago, no utterance '
                    f'decoded since')
            elif now - self._last_restart_t < RESTART_WARN_S and \
                    self._last_decoded < self._last_restart_t:
                level, message = DiagnosticStatus.WARN, (
                    f'help detector restarted by the watchdog ({restarts} so far): '
                    f'{ex.last_error}')
            elif ex.decode_errors and ex.last_error and level == DiagnosticStatus.OK and \
                    now - self._last_decoded > RESTART_WARN_S and pending > 0:
                level, message = DiagnosticStatus.WARN, f'help detector errors: {ex.last_error}'
            elif now - self._last_drop_t < RESTART_WARN_S:
                level, message = DiagnosticStatus.WARN, (
                    f'help detector behind: {dropped} utterance(s) dropped undecoded from '
                    f'the full decode queue (decode_queue_size '
                    f'{self.config.cues.decode_queue_size})')
        if level == DiagnosticStatus.OK and ex.verifier_error:
            level, message = DiagnosticStatus.WARN, (
                f'help_verifier {self.config.cues.help_verifier} not loaded, calls are decided '
                f'by Whisper alone: {ex.verifier_error}')
        if level == DiagnosticStatus.OK and self._dropped:
            message = f'ok ({self._dropped} chunks dropped: processing fell behind)'
        self.diagnostics.publish(values, level=level, message=message,
                                 bad_inputs=self.bad_inputs)

    def destroy_node(self) -> None:
        """Free the cue extractor's models."""
        # Also called on a half-built node (bad parameters) by rclpy's shutdown.
        if getattr(self, 'extractor', None) is not None:
            self.extractor.close()
        super().destroy_node()


def main(args=None) -> None:
    """Run the audio node."""
    run_node(AudioNode, args=args)


if __name__ == '__main__':
    main()

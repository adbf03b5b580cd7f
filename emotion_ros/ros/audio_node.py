"""audio_node: audio frames in, audio cues (voice, calls for help, scream/cry) out.

The subscription callback decodes and queues the samples (bounded); a timer
in its own callback group runs the cue extractor, so keyword spotting never
blocks message reception.
"""

from __future__ import annotations

import collections
import importlib
import threading
import time

from emotion_ros_msgs.msg import AudioCues, AudioFrame
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from emotion_ros.audio.cues import AudioCueExtractor
from emotion_ros.audio.pcm import decode_pcm
from emotion_ros.errors import ConfigError, EmotionRosError, InputError
from emotion_ros.node_config import AudioNodeConfig
from emotion_ros.ros import conversions
from emotion_ros.ros.node_utils import (BadInputLog, declare_config, Diagnostics, RateMeter,
                                        reliability_qos, run_node)

QUEUE_CHUNKS = 200  # bounded: ~20 s of 100 ms chunks


class AudioNode(Node):
    """Extracts audio cues from a stream of audio frames."""

    def __init__(self) -> None:
        super().__init__('audio_node')
        self.config = declare_config(self, AudioNodeConfig)
        self.extractor = AudioCueExtractor(self.config.cues)
        self.extractor.load()
        self.bad_inputs = BadInputLog(self)
        self._queue = collections.deque()
        self._queue_lock = threading.Lock()
        self._dropped = 0
        self._frames = 0
        self._cues = 0
        self._helps = 0
        self._in_rate = RateMeter()
        self._proc_ms = 0.0
        self._pub = self.create_publisher(AudioCues, 'audio_cues', 10)
        msg_type = self._input_type()
        self.create_subscription(msg_type, 'audio', self._on_audio,
                                 reliability_qos('reliable', depth=50))
        self.create_timer(0.05, self._process, callback_group=MutuallyExclusiveCallbackGroup())
        self.diagnostics = Diagnostics(self, f'emotion_ros: {self.get_name()}')
        self.create_timer(self.config.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(f'listening on {self.resolve_topic_name("audio")} '
                               f'({self.config.audio_msg_type})')

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

    def _on_audio(self, msg) -> None:
        self._frames += 1
        self._in_rate.tick()
        try:
            samples, rate, stamp = self._decode(msg)
        except InputError as exc:
            self.bad_inputs.report(exc.kind, str(exc))
            return
        with self._queue_lock:
            if len(self._queue) >= QUEUE_CHUNKS:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append((samples, rate, stamp))

    def _decode(self, msg):
        cfg = self.config
        if isinstance(msg, AudioFrame):
            samples = conversions.audio_frame_to_samples(msg)
            return samples, msg.sample_rate, conversions.stamp_to_sec(msg.header.stamp)
        # audio_common: AudioData has only bytes; AudioDataStamped adds a header.
        data = msg.audio.data if hasattr(msg, 'audio') else msg.data
        stamp = (conversions.stamp_to_sec(msg.header.stamp) if hasattr(msg, 'header')
                 else self.get_clock().now().nanoseconds * 1e-9)
        samples = decode_pcm(bytes(data), cfg.audio_common_sample_format,
                             cfg.audio_common_channels, cfg.audio_common_sample_rate)
        return samples, cfg.audio_common_sample_rate, stamp

    def _process(self) -> None:
        while True:
            with self._queue_lock:
                if not self._queue:
                    return
                samples, rate, stamp = self._queue.popleft()
            t0 = time.perf_counter()
            try:
                results = self.extractor.push(samples, rate, stamp)
            except InputError as exc:
                self.bad_inputs.report(exc.kind, str(exc))
                continue
            except EmotionRosError as exc:
                self.bad_inputs.report('extractor', str(exc))
                self.extractor.reset()
                continue
            self._proc_ms = 0.8 * self._proc_ms + 0.2 * (time.perf_counter() - t0) * 1e3
            for cues in results:
                self._cues += 1
                self._helps += int(cues.help_detected)
                self._pub.publish(conversions.cues_to_msg(cues, 'microphone'))

    def _publish_diagnostics(self) -> None:
        self.diagnostics.publish({
            'frames_received': self._frames, 'input_rate_hz': self._in_rate.rate,
            'cues_published': self._cues, 'help_detections': self._helps,
            'chunks_dropped': self._dropped, 'processing_ms_per_chunk': self._proc_ms,
            'queue_length': len(self._queue)}, bad_inputs=self.bad_inputs)

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

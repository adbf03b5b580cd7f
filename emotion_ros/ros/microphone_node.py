"""microphone_node: captures audio (sounddevice) or plays a WAV file, publishes AudioFrame."""

from __future__ import annotations

import threading

import numpy as np
from emotion_ros_msgs.msg import AudioFrame
from rclpy.node import Node

from emotion_ros.audio.sources import SoundDeviceSource, WavFileSource
from emotion_ros.node_config import MicrophoneNodeConfig
from emotion_ros.ros import conversions
from emotion_ros.ros.node_utils import declare_config, Diagnostics, reliability_qos, run_node


class MicrophoneNode(Node):
    """Publishes audio frames from a sound card or a WAV file."""

    def __init__(self) -> None:
        super().__init__('microphone_node')
        cfg = self.config = declare_config(self, MicrophoneNodeConfig)
        chunk = max(1, cfg.sample_rate * cfg.chunk_ms // 1000)
        if cfg.source == 'wav':
            self.source = WavFileSource(cfg.wav_path, chunk_frames=chunk, loop=cfg.wav_loop,
                                        realtime=True, resample_to=cfg.sample_rate)
        else:
            device = int(cfg.device) if cfg.device.isdigit() else (cfg.device or None)
            self.source = SoundDeviceSource(device, cfg.sample_rate, cfg.channels, chunk)
        self._pub = self.create_publisher(AudioFrame, 'audio',
                                          reliability_qos(cfg.reliability, depth=50))
        self._published = 0
        self._lock = threading.Lock()
        self.diagnostics = Diagnostics(self, f'emotion_ros: {self.get_name()}')
        self.create_timer(2.0, self._publish_diagnostics)
        if cfg.wav_start_delay_s > 0:
            self._start_timer = self.create_timer(cfg.wav_start_delay_s, self._start)
        else:
            self._start_timer = None
            self._start()

    def _start(self) -> None:
        if self._start_timer is not None:
            self.destroy_timer(self._start_timer)
            self._start_timer = None
        self.get_logger().info(f'publishing audio from {self.config.source} '
                               f'{self.config.wav_path or self.config.device or "(default)"}')
        self.source.start(self._on_samples)

    def _on_samples(self, samples: np.ndarray, capture_time: float) -> None:
        # Called from the source's thread; rclpy publishers are thread-safe.
        header = conversions.make_header(capture_time, self.config.frame_id)
        msg = conversions.samples_to_audio_frame(samples, self.source.sample_rate,
                                                 self.config.sample_format, header)
        self._pub.publish(msg)
        with self._lock:
            self._published += 1

    def _publish_diagnostics(self) -> None:
        self.diagnostics.publish({'frames_published': self._published,
                                  'source': self.config.source,
                                  'sample_rate': self.source.sample_rate})

    def destroy_node(self) -> None:
        """Stop capturing."""
        # Also called on a half-built node (bad parameters) by rclpy's shutdown.
        if getattr(self, 'source', None) is not None:
            self.source.stop()
        super().destroy_node()


def main(args=None) -> None:
    """Run the microphone node."""
    run_node(MicrophoneNode, args=args)


if __name__ == '__main__':
    main()

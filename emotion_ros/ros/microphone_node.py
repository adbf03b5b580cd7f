"""microphone_node: captures audio (sounddevice) or plays a WAV file, publishes AudioFrame.

Capture is supervised: when the source dies (device unplugged, driver error, a
failing delivery thread) the node logs why, counts it, shows ERROR in
/diagnostics and starts a new source with exponential backoff (0.5 s doubling
to 30 s); after a restart it shows WARN until capture has been stable for a
minute. Run-time parameter changes take effect at once (the source is rebuilt
from the full new set; a change whose source cannot be built is refused and
capture continues as before), except ``reliability``, ``wav_wait_for_subscribers``
and ``wav_start_delay_s``, which are read-only.

A WAV file is a recording with a beginning: by default it starts playing only
once a subscriber of ``audio`` is matched (``wav_wait_for_subscribers``), so
an audio node that starts after this one still hears it from its first
sample (messages published before a subscriber is matched are lost, even on
a reliable topic). A live microphone never waits.
"""

from __future__ import annotations

import threading
import time

from diagnostic_msgs.msg import DiagnosticStatus
import numpy as np
from emotion_ros_msgs.msg import AudioFrame
from rclpy.node import Node

from emotion_ros.audio.sources import (AudioSource, SoundDeviceSource, SourceSupervisor,
                                       WavFileSource)
from emotion_ros.config.nodes import MicrophoneNodeConfig
from emotion_ros.ros import conversions
from emotion_ros.ros.diagnostics import Diagnostics
from emotion_ros.ros.executor import run_node
from emotion_ros.ros.health import boundary, NodeHealth
from emotion_ros.ros.params import declare_config
from emotion_ros.ros.qos import reliability_qos

#: After a restart, diagnostics stay WARN until capture has run this long without failing.
RECOVERED_WARN_S = 60.0
#: Settings that only matter when the source is built: a change rebuilds it.
SOURCE_KEYS = ('source', 'device', 'sample_rate', 'channels', 'chunk_ms', 'wav_path',
               'wav_loop')


def make_source(cfg: MicrophoneNodeConfig) -> AudioSource:
    """The audio source ``cfg`` describes (raises ConfigError/InputError/ModelLoadError)."""
    chunk = max(1, cfg.sample_rate * cfg.chunk_ms // 1000)
    if cfg.source == 'wav':
        return WavFileSource(cfg.wav_path, chunk_frames=chunk, loop=cfg.wav_loop,
                             realtime=True, resample_to=cfg.sample_rate)
    device = int(cfg.device) if cfg.device.isdigit() else (cfg.device or None)
    return SoundDeviceSource(device, cfg.sample_rate, cfg.channels, chunk)


class MicrophoneNode(Node):
    """Publishes audio frames from a sound card or a WAV file."""

    def __init__(self) -> None:
        super().__init__('microphone_node')
        self.health = NodeHealth(self)
        cfg = self.config = declare_config(
            self, MicrophoneNodeConfig, on_change=self._apply_config,
            read_only=('reliability', 'wav_wait_for_subscribers', 'wav_start_delay_s'))
        first = make_source(cfg)  # a bad device/file stops the node here (exit 2)
        self.supervisor = SourceSupervisor(lambda: make_source(self.config), self._on_samples,
                                           on_failure=self._on_capture_failure)
        self._pub = self.create_publisher(AudioFrame, 'audio',
                                          reliability_qos(cfg.reliability, depth=50))
        self._published = 0
        self._sample_rate = first.sample_rate
        self._last_failure = -1e18
        self._lock = threading.Lock()
        # Unique per namespace: 'emotion_ros: microphone_node', 'emotion_ros: robot1/...'.
        self.diagnostics = Diagnostics(
            self, f'emotion_ros: {self.get_fully_qualified_name().lstrip("/")}')
        self.create_timer(2.0, self._publish_diagnostics)
        self.create_timer(0.25, self._watch)
        self._first = first
        self._start_timer = None
        self._waiting = ''  # why the WAV file is not playing yet ('' once started)
        if cfg.source == 'wav' and cfg.wav_wait_for_subscribers > 0:
            self._waiting = 'waiting_for_subscribers'
            self.get_logger().info(self._waiting_for_subscribers())
            self._start_timer = self.create_timer(0.1, self._wait_for_subscribers)
        else:
            self._schedule_start()

    def _waiting_for_subscribers(self) -> str:
        return (f'waiting for {self.config.wav_wait_for_subscribers} subscriber(s) of '
                f'{self._pub.topic_name} before playing the WAV file')

    def _schedule_start(self) -> None:
        """Start now, or after ``wav_start_delay_s`` for a WAV file."""
        delay = self.config.wav_start_delay_s if self.config.source == 'wav' else 0.0
        if delay > 0:
            self._waiting = 'start_delay'
            self._start_timer = self.create_timer(delay, self._start)
        else:
            self._start()

    @boundary('timer', 'start')
    def _wait_for_subscribers(self) -> None:
        cfg = self.config  # a live microphone (source changed while waiting) never waits
        if cfg.source == 'wav' and \
                self._pub.get_subscription_count() < cfg.wav_wait_for_subscribers:
            return
        self.destroy_timer(self._start_timer)
        self._start_timer = None
        self._schedule_start()

    @property
    def source(self):
        """The running audio source (None while restarting)."""
        return self.supervisor.source

    def _apply_config(self, new: MicrophoneNodeConfig) -> None:
        """Take a run-time change into effect; rebuild the source when its settings change."""
        old = self.config
        self.config = new  # frame_id and sample_format apply to the next chunk
        if any(getattr(new, k) != getattr(old, k) for k in SOURCE_KEYS):
            try:
                # Builds the new source first: if it cannot be built the change is refused
                # and the running source keeps capturing.
                self.supervisor.replace(lambda: make_source(self.config))
            except Exception:
                self.config = old
                raise
            self._first = None  # not started yet: start from the new settings
            self.get_logger().info(f'audio source rebuilt: {self._describe(new)}')

    @boundary('timer', 'start')
    def _start(self) -> None:
        if self._start_timer is not None:
            self.destroy_timer(self._start_timer)
            self._start_timer = None
        self._waiting = ''
        self.get_logger().info(f'publishing audio from {self._describe(self.config)}')
        first, self._first = self._first, None
        self.supervisor.start(first)  # None (source changed while waiting): a new one

    @staticmethod
    def _describe(cfg: MicrophoneNodeConfig) -> str:
        return f'{cfg.source} {cfg.wav_path or cfg.device or "(default)"}'

    @boundary('timer')
    def _watch(self) -> None:
        self.supervisor.poll()

    def _on_capture_failure(self, error: BaseException) -> None:
        self._last_failure = time.monotonic()
        self.health.record('worker', 'capture', error)
        self.get_logger().warning(
            f'audio capture stopped ({self.supervisor.failures} failure(s) so far); '
            f'restarting in {self.supervisor.retry_in_s:.1f} s')

    def _on_samples(self, samples: np.ndarray, capture_time: float,
                    source: AudioSource) -> None:
        # Called from the source's thread; rclpy publishers are thread-safe. An exception
        # here ends the source's delivery thread: the supervisor reports and restarts it.
        cfg = self.config
        header = conversions.make_header(capture_time, cfg.frame_id)
        msg = conversions.samples_to_audio_frame(samples, source.sample_rate,
                                                 cfg.sample_format, header)
        self._pub.publish(msg)
        with self._lock:
            self._published += 1
            self._sample_rate = source.sample_rate

    @boundary('timer')
    def _publish_diagnostics(self) -> None:
        sup = self.supervisor
        state = sup.state
        source = sup.source
        waiting = self._waiting
        values = {'frames_published': self._published, 'source': self.config.source,
                  'sample_rate': self._sample_rate, 'capture_state': waiting or state,
                  'audio_subscribers': self._pub.get_subscription_count(),
                  'capture_failures': sup.failures, 'capture_restarts': sup.restarts,
                  'chunks_dropped': source.dropped if source is not None else 0,
                  'input_overflows': source.overflows if source is not None else 0}
        if sup.last_error:
            values['last_capture_error'] = sup.last_error
        level, message = DiagnosticStatus.OK, 'ok'
        if waiting == 'waiting_for_subscribers':
            message = f'{self._waiting_for_subscribers()} ({values["audio_subscribers"]} so far)'
        elif waiting:
            message = f'playing the WAV file in at most {self.config.wav_start_delay_s:g} s'
        elif state == 'restarting':
            level = DiagnosticStatus.ERROR
            message = (f'audio capture stopped ({sup.last_error}); restart attempt in '
                       f'{sup.retry_in_s:.1f} s, {sup.failures} failure(s) so far')
        elif time.monotonic() - self._last_failure < RECOVERED_WARN_S:
            level = DiagnosticStatus.WARN
            message = (f'audio capture restarted {sup.restarts} time(s); last failure: '
                       f'{sup.last_error}')
        self.diagnostics.publish(values, level, message)

    def destroy_node(self) -> None:
        """Stop capturing."""
        # Also called on a half-built node (bad parameters) by rclpy's shutdown.
        if getattr(self, 'supervisor', None) is not None:
            self.supervisor.stop()
        super().destroy_node()


def main(args=None) -> None:
    """Run the microphone node."""
    run_node(MicrophoneNode, args=args)


if __name__ == '__main__':
    main()

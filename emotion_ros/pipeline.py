"""The whole pipeline offline: perception + audio cues + distress fusion in message-time order.

``OfflinePipeline`` is driven by the bag evaluation and the benchmarks with the
configuration read from ``config/robot.yaml`` and the same rate limit the live
perception node applies, so what is measured is what runs on the robot.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from emotion_ros.audio.cues import AudioCueExtractor
from emotion_ros.fusion.distress import DistressFusion
from emotion_ros.perception.localization import CameraModel
from emotion_ros.perception.pipeline import PerceptionPipeline, RateLimiter
from emotion_ros.types import Alert, AudioCueResult, FrameResult, Transcript


class OfflinePipeline:
    """Perception + audio cues + distress fusion, driven in message-time order."""

    def __init__(self, robot: 'RobotConfig') -> None:  # noqa: F821 (avoid import cycle)
        self.robot = robot
        self.perception = PerceptionPipeline(robot.perception)
        self.audio = AudioCueExtractor(robot.audio)
        self.fusion = DistressFusion(robot.fusion)
        self._limiter = RateLimiter(robot.perception.max_rate_hz)
        self.frames_skipped = 0
        # Utterances decoded since the driver last took them (the bag evaluation records them).
        self.transcripts: List[Any] = []

    def load(self) -> None:
        """Load all models."""
        self.perception.load()
        self.audio.load()

    def close(self) -> None:
        """Free all models."""
        self.perception.close()
        self.audio.close()

    def on_image(self, rgb: np.ndarray, stamp: float, frame_id: str = '',
                 camera_model: Optional[CameraModel] = None,
                 depth_m: Optional[np.ndarray] = None
                 ) -> Tuple[Optional[FrameResult], List[Alert]]:
        """Process a frame (unless rate-limited, as the live node would) and fuse it.

        With the camera's ``camera_model`` (and an aligned ``depth_m`` in metres) the
        persons get positions, as in the perception node.
        """
        if not self._limiter.ready(stamp):
            self.frames_skipped += 1
            return None, []
        result = self.perception.process(rgb, stamp, frame_id, '', camera_model, depth_m)
        alerts = self.fusion.update_frame(result)
        if result.voice is not None:  # as distress_node does with voice_emotions
            alerts += self.fusion.update_voice(result.voice, result.stamp, frame_id)
        return result, alerts

    def on_audio(self, samples: np.ndarray, sample_rate: int, stamp: float
                 ) -> Tuple[List[AudioCueResult], List[Alert]]:
        """Feed mono float32 audio whose first sample is at ``stamp``; fuse the cues."""
        if self.perception.av_context is not None:  # the audio_visual backend hears it too
            self.perception.feed_audio(samples, stamp + len(samples) / float(sample_rate),
                                       int(sample_rate))
        cues = self.audio.push(samples, sample_rate, stamp)
        alerts: List[Alert] = []
        # As on the robot: audio_node publishes an utterance's transcript before the cue
        # windows of the same chunk, and distress_node folds both in.
        for heard in self.audio.pop_transcripts():
            self.transcripts.append(heard)
            if heard.status == 'ok' and heard.text:
                # As perception_node subscribes audio_node's transcripts.
                self.perception.feed_transcript(heard.text, heard.end)
            if heard.status == 'ok':
                alerts.extend(self.fusion.update_transcript(Transcript(
                    stamp=heard.start, end=heard.end, frame_id='', text=heard.text,
                    help_detected=heard.help_detected, help_phrase=heard.help_phrase,
                    help_score=heard.help_score, language=heard.language,
                    confidence=heard.confidence, detector=heard.detector)))
        for cue in cues:
            alerts.extend(self.fusion.update_audio(cue))
        return cues, alerts

    def distress_scores(self) -> Dict[int, float]:
        """Current fused score per track (0 = audio-only channel)."""
        return self.fusion.scores()


__all__ = ['OfflinePipeline']

"""Voice activity -> utterances: the unit the call-for-help detectors decode.

:class:`UtteranceSegmenter` takes the speech probability of each 32 ms VAD
frame of a 16 kHz stream (with the frame's samples) in stream order and cuts
the stream into utterances: speech starts at a frame at or above the
threshold, and ends once ``hangover_s`` of frames stay below it. Each
utterance carries its audio with ``preroll_s`` before the first voiced frame
and ``postroll_s`` after the last one, so a detector can decode it from its
own start, without any state from earlier audio. An utterance longer than
``max_utterance_s`` is cut there (memory and latency stay bounded) and the
next one starts at once.

Everything is counted in samples from the stream start, so the utterances do
not depend on how the caller chunked the audio.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import numpy as np

from emotion_ros.audio.pcm import SAMPLE_RATE

SEGMENT_RATE = SAMPLE_RATE
#: Utterance audio starts and ends on this grid of stream samples (200 ms), so that a
#: voice onset found a VAD frame earlier or later usually gives the detector the very
#: same samples (its features are computed on 10 ms frames from the audio's start).
AUDIO_GRID = 3200


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One voiced stretch of a 16 kHz stream. Indices count samples from the stream start."""

    start: int          # first sample of the first voiced frame
    end: int            # end of the last voiced frame (exclusive)
    audio_start: int    # stream index of audio[0] (start - pre-roll, or the stream start)
    audio: np.ndarray   # float32 samples: pre-roll + utterance + post-roll
    closed_at: int      # stream position at which the segmenter decided it had ended
    truncated: bool = False  # cut at max_utterance_s

    @property
    def duration_s(self) -> float:
        """Voiced duration in seconds (pre/post-roll excluded)."""
        return (self.end - self.start) / SEGMENT_RATE


class UtteranceSegmenter:
    """Cuts a stream of VAD frames into utterances (see the module docstring)."""

    def __init__(self, threshold: float = 0.5, preroll_s: float = 0.3,
                 postroll_s: float = 0.2, hangover_s: float = 0.5,
                 min_speech_s: float = 0.1, max_utterance_s: float = 10.0) -> None:
        """Configure the segmentation (all durations in seconds)."""
        self.threshold = float(threshold)
        self._preroll = int(round(preroll_s * SEGMENT_RATE))
        self._postroll = int(round(postroll_s * SEGMENT_RATE))
        self._hangover = int(round(hangover_s * SEGMENT_RATE))
        self._min_speech = int(round(min_speech_s * SEGMENT_RATE))
        self._max = int(round(max_utterance_s * SEGMENT_RATE))
        self.reset()

    def reset(self) -> None:
        """Forget the stream (the next frame starts a new one at index ``frame_start``)."""
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0
        self._start: Optional[int] = None   # open utterance: first voiced sample
        self._last_voiced_end = 0           # end of its last voiced frame
        self._voiced_samples = 0

    @property
    def open_start(self) -> Optional[int]:
        """First voiced sample of the open utterance, None when none is open."""
        return self._start

    @property
    def in_speech(self) -> bool:
        """True while an utterance is open."""
        return self._start is not None

    def feed(self, frame_start: int, frames: np.ndarray, probs: np.ndarray) -> List[Utterance]:
        """Add consecutive VAD frames (``(n, L)`` samples and ``n`` probabilities).

        Returns:
            the utterances that ended within these frames, in order.
        """
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 2 or frames.shape[0] != len(probs):
            raise ValueError('feed(): frames must be (n, L) with one probability per frame')
        n, length = frames.shape
        if n == 0:
            return []
        if not self._buf.size:
            self._buf_start = frame_start
        elif frame_start != self._buf_start + self._buf.size:
            raise ValueError(f'feed(): frame at {frame_start} does not follow the buffer end '
                             f'{self._buf_start + self._buf.size}')
        self._buf = np.concatenate([self._buf, frames.reshape(-1)])
        out: List[Utterance] = []
        for i in range(n):
            s = frame_start + i * length
            e = s + length
            voiced = probs[i] >= self.threshold
            if self._start is None:
                if voiced:
                    self._start = s
                    self._last_voiced_end = e
                    self._voiced_samples = length
            else:
                if voiced:
                    self._last_voiced_end = e
                    self._voiced_samples += length
                if e - self._start >= self._max:
                    out.extend(self._close(e, truncated=True))
                    if voiced:  # keep listening: the next utterance starts right here
                        self._start, self._last_voiced_end, self._voiced_samples = e, e, 0
                elif e - self._last_voiced_end >= self._hangover:
                    out.extend(self._close(e, truncated=False))
        self._trim(frame_start + n * length)
        return out

    def open_utterance(self, position: int) -> Optional[Utterance]:
        """The open utterance as heard up to ``position`` (a snapshot; it stays open).

        None when no utterance is open or it has less voiced time than an utterance
        needs. The audio runs from the pre-roll to ``position`` (the grid is not
        applied at the end: the snapshot ends where the stream is).
        """
        start = self._start
        if start is None or self._voiced_samples < self._min_speech:
            return None
        a = max(self._buf_start, (start - self._preroll) // AUDIO_GRID * AUDIO_GRID)
        b = min(self._buf_start + self._buf.size, position)
        audio = self._buf[a - self._buf_start:b - self._buf_start].copy()
        return Utterance(start=start, end=self._last_voiced_end, audio_start=a, audio=audio,
                         closed_at=position, truncated=False)

    def flush(self, position: int) -> List[Utterance]:
        """Close the open utterance (end of stream) and return it, if long enough."""
        if self._start is None:
            return []
        return self._close(position, truncated=False)

    def _close(self, position: int, truncated: bool) -> List[Utterance]:
        start, end = self._start, self._last_voiced_end
        assert start is not None
        voiced = self._voiced_samples
        self._start = None
        self._voiced_samples = 0
        if voiced < self._min_speech:
            return []
        if truncated:
            end = position
        a = max(self._buf_start, (start - self._preroll) // AUDIO_GRID * AUDIO_GRID)
        b = min(self._buf_start + self._buf.size,
                -(-(end + self._postroll) // AUDIO_GRID) * AUDIO_GRID)
        audio = self._buf[a - self._buf_start:b - self._buf_start].copy()
        return [Utterance(start=start, end=end, audio_start=a, audio=audio,
                          closed_at=position, truncated=truncated)]

    def _trim(self, position: int) -> None:
        """Keep the open utterance and the pre-roll of the next one (bounded memory)."""
        keep = position - self._preroll if self._start is None else self._start - self._preroll
        keep = max(keep // AUDIO_GRID * AUDIO_GRID - AUDIO_GRID, self._buf_start)
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start:]
            self._buf_start = keep

"""The fusion's inputs in stamp order, for distress_node and the offline pipeline alike (no ROS).

Person estimates, voices, audio cues and transcripts reach the fusion from
different streams: on the robot from four subscriptions whose callbacks the
executor runs in an order of its own (when a transcript and the cue windows
of the same audio chunk wait together, in the order the subscriptions were
created), offline from the bag's message order and the stages' outputs. The
fusion is not commutative (the first call-for-help evidence decides which
incident a call joins and which reasons an alert carries), so
:class:`OrderedFusion` defines one order for both: every input waits
``input_hold_s`` after it arrives (on the receiver's clock: the node's
monotonic clock, or message time in the bag evaluation) in a
:class:`StampBuffer`, and inputs are handed to the fusion in stamp order
(one with a newer stamp waits behind an older one still held). Inputs that
arrive together, or within the hold time of each other, are therefore fused
in the same order whichever arrived first; one that arrives more than that
after a newer one was fused is fused late, not held back for ever.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any, List, Optional, Sequence, Tuple

from emotion_ros.fusion.distress import DistressFusion
from emotion_ros.types import Alert, AudioCueResult, FrameResult, PersonEstimate, Transcript

#: Input kinds (the ``kind`` of :meth:`OrderedFusion.push`).
FRAME, VOICE, CUES, TRANSCRIPT = 'frame', 'voice', 'cues', 'transcript'

#: One fusion input: (the stamp it is ordered by, (kind, value, frame_id)).
Input = Tuple[float, Tuple[str, Any, str]]


def transcript_time(transcript: Transcript) -> float:
    """The time a transcript is fused at (its end, as DistressFusion.update_transcript)."""
    end = transcript.end
    return end if math.isfinite(end) and end > 0 else transcript.stamp


class StampBuffer:
    """Items held up to ``hold_s`` after their arrival, released in stamp order.

    ``release(now)`` hands out the item with the smallest stamp (ties: first
    pushed first) once it has waited ``hold_s`` (``now - arrival >=
    hold_s``), then the next, and so on; an item with a newer stamp waits
    behind it. So items pushed within ``hold_s`` of each other leave in stamp
    order whatever order they were pushed in. With ``hold_s`` 0 every item
    leaves at once, in arrival order.
    """

    def __init__(self, hold_s: float) -> None:
        self.hold_s = float(hold_s)
        self._heap: List[Tuple[float, int, float, Any]] = []   # (stamp, seq, arrival, item)
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, stamp: float, arrival: float, item: Any) -> None:
        """Hold ``item`` (fused at ``stamp``), which arrived at ``arrival``."""
        heapq.heappush(self._heap, (float(stamp), next(self._seq), float(arrival), item))

    def release(self, now: float) -> List[Any]:
        """The items due at ``now``, in stamp order."""
        out: List[Any] = []
        while self._heap and now - self._heap[0][2] >= self.hold_s:
            out.append(heapq.heappop(self._heap)[3])
        return out

    def drain(self) -> List[Any]:
        """All items, in stamp order (end of the input)."""
        out = [e[3] for e in sorted(self._heap)]
        self._heap = []
        return out


class OrderedFusion:
    """DistressFusion fed through a StampBuffer (``fusion.config.input_hold_s``).

    Build inputs with :meth:`frame`, :meth:`voice`, :meth:`cues` and
    :meth:`transcript`; :meth:`receive` the inputs that arrive together and
    returns the alerts of what it fused; :meth:`release` (a timer) fuses what
    became due meanwhile; :meth:`finish` fuses the rest.
    """

    def __init__(self, fusion: DistressFusion) -> None:
        self.fusion = fusion
        self.buffer = StampBuffer(fusion.config.input_hold_s)

    def reconfigure(self, config: Any) -> None:
        """Swap the fusion's config; the hold time follows ``input_hold_s``."""
        self.fusion.reconfigure(config)
        self.buffer.hold_s = float(config.input_hold_s)

    @staticmethod
    def frame(frame: FrameResult) -> Input:
        """One frame's person estimates."""
        return frame.stamp, (FRAME, frame, frame.frame_id)

    @staticmethod
    def voice(voice: PersonEstimate, stamp: float, frame_id: str) -> Input:
        """An audio-only estimate (audio_visual backend, nobody in view)."""
        return stamp, (VOICE, (voice, stamp), frame_id)

    @staticmethod
    def cues(cues: AudioCueResult, frame_id: str) -> Input:
        """One window of audio cues from the microphone ``frame_id``."""
        return cues.stamp, (CUES, cues, frame_id)

    @staticmethod
    def transcript(transcript: Transcript) -> Input:
        """One decoded utterance."""
        return transcript_time(transcript), (TRANSCRIPT, transcript, transcript.frame_id)

    def receive(self, inputs: Sequence[Input], now: float,
                clock: Optional[float] = None) -> List[Alert]:
        """Inputs that arrived together at ``now`` (arrival clock).

        What became due before they arrived is fused first (as the node's timer would
        have), then they are held with the rest and what is due is fused.
        ``clock``: the receiver's clock for the fusion's future-stamp check (None:
        message time only).
        """
        alerts = self.release(now, clock)
        for stamp, item in inputs:
            self.buffer.push(stamp, now, item)
        return alerts + self.release(now, clock)

    def release(self, now: float, clock: Optional[float] = None) -> List[Alert]:
        """Fuse the inputs due at ``now`` (arrival clock)."""
        return self._fuse(self.buffer.release(now), clock)

    def finish(self, clock: Optional[float] = None) -> List[Alert]:
        """Fuse everything still held (end of a bag)."""
        return self._fuse(self.buffer.drain(), clock)

    def _fuse(self, items: List[Any], clock: Optional[float]) -> List[Alert]:
        fusion = self.fusion
        alerts: List[Alert] = []
        for kind, value, frame_id in items:
            if kind == FRAME:
                alerts += fusion.update_frame(value, clock)
            elif kind == VOICE:
                alerts += fusion.update_voice(value[0], value[1], frame_id, clock)
            elif kind == CUES:
                alerts += fusion.update_audio(value, frame_id, clock)
            else:
                alerts += fusion.update_transcript(value, clock)
        return alerts


__all__ = ['CUES', 'FRAME', 'Input', 'OrderedFusion', 'StampBuffer', 'TRANSCRIPT', 'VOICE',
           'transcript_time']

"""Bookkeeping of an audio stream's continuity from its chunk stamps (no ROS).

:class:`StreamMonitor` compares what arrived with what the stamps say should
have arrived: each chunk should start where the previous one ended. A chunk
that starts later than that by more than ``tolerance_s`` is a gap (audio
lost upstream: dropped messages, a stalled driver), one that starts earlier
is a jump back (a restarted source, a looping bag, a clock step). The audio
node publishes these counters in /diagnostics.
"""

from __future__ import annotations

from typing import Dict, Optional


class StreamMonitor:
    """Counts audio received vs expected from chunk stamps, gaps and jumps back."""

    def __init__(self, tolerance_s: float = 0.05) -> None:
        """``tolerance_s``: stamp jitter that is neither a gap nor a jump."""
        self.tolerance_s = tolerance_s
        self.frames = 0
        self.received_s = 0.0   # audio duration that arrived
        self.expected_s = 0.0   # audio duration the stamps span (continuous stretches)
        self.gaps = 0
        self.gap_s = 0.0
        self.jumps_back = 0
        self.rate_changes = 0
        self._next: Optional[float] = None
        self._rate: Optional[int] = None

    def feed(self, stamp: float, samples: int, rate: int) -> str:
        """Account one chunk; return '' or what was wrong ('gap', 'jump_back', 'rate')."""
        duration = samples / float(rate)
        self.frames += 1
        self.received_s += duration
        event = ''
        if self._next is None:
            self.expected_s += duration
        else:
            if self._rate is not None and rate != self._rate:
                self.rate_changes += 1
                event = 'rate'
            delta = stamp - self._next
            if delta > self.tolerance_s:
                self.gaps += 1
                self.gap_s += delta
                self.expected_s += delta + duration
                event = event or 'gap'
            elif delta < -self.tolerance_s:
                self.jumps_back += 1
                self.expected_s += duration   # a new stretch starts here
                event = event or 'jump_back'
            else:
                self.expected_s += duration
        self._next = stamp + duration
        self._rate = rate
        return event

    def values(self) -> Dict[str, float]:
        """Counters for /diagnostics."""
        return {'audio_received_s': self.received_s, 'audio_expected_s': self.expected_s,
                'audio_missing_s': max(0.0, self.expected_s - self.received_s),
                'stream_gaps': self.gaps, 'stream_gap_s': self.gap_s,
                'stream_jumps_back': self.jumps_back, 'sample_rate_changes': self.rate_changes}

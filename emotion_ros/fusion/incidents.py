"""Incidents: one per person in distress, with a stable id, a state and its evidence (no ROS).

The distress fusion (``emotion_ros.fusion.distress``) creates and updates incidents;
this module holds what an incident is, its states and the operator commands
that change them, and the guard that turns message stamps of several sources
into one monotonic time line (clock steps back, stamps far in the future).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Set, Tuple

from emotion_ros.types import (AudioCueResult, LEVEL_NAMES, PersonEstimate, Position,
                               Transcript)

# States (values equal the Incident.msg STATE_* constants; test_incidents checks).
NEW = 0            # just created (first alert)
UPDATED = 1        # new evidence, same level
ESCALATED = 2      # level rose (an alert was published)
ACKNOWLEDGED = 3   # an operator has seen it
CONFIRMED = 4      # an operator confirmed a person in distress
REJECTED = 5       # an operator rejected it: the person does not re-alert for reject_hold_s
RESOLVED = 6       # closed: by an operator, or cleared (calm, or not seen for expire_s)
STALE = 7          # no evidence for stale_after_s (still open, position is the last known)

STATE_NAMES = {NEW: 'NEW', UPDATED: 'UPDATED', ESCALATED: 'ESCALATED',
               ACKNOWLEDGED: 'ACKNOWLEDGED', CONFIRMED: 'CONFIRMED', REJECTED: 'REJECTED',
               RESOLVED: 'RESOLVED', STALE: 'STALE'}
#: Operator commands and the state each one sets.
COMMANDS = {'acknowledge': ACKNOWLEDGED, 'confirm': CONFIRMED, 'reject': REJECTED,
            'resolve': RESOLVED}


@dataclasses.dataclass
class Incident:
    """A person (or an unseen voice) in distress, followed over time.

    Times ending in ``_t`` are the fusion's internal monotonic time line;
    ``stamp``/``frame_id`` are those of the newest evidence (message time),
    ``first_seen``/``last_seen`` the message stamps of the first and newest
    evidence.
    """

    id: int
    created_t: float
    stamp: float
    frame_id: str
    first_seen: float
    last_seen: float
    last_seen_t: float
    person_seen_t: float = -math.inf
    level: int = 0
    score: float = 0.0
    state: int = NEW
    reasons: List[str] = dataclasses.field(default_factory=list)
    person: Optional[PersonEstimate] = None
    person_stamp: float = math.nan
    person_frame_id: str = ''
    audio: Optional[AudioCueResult] = None
    transcript: Optional[Transcript] = None
    position: Optional[Position] = None
    cameras: Set[str] = dataclasses.field(default_factory=set)
    tracks: Set[Tuple[str, int]] = dataclasses.field(default_factory=set)
    help_heard: bool = False
    acknowledged: bool = False
    confirmed: bool = False
    rejected: bool = False
    note: str = ''
    alerts: int = 0
    last_alert_t: float = -math.inf
    evidence_since_t: Optional[float] = None
    calm_since_t: Optional[float] = None
    closed_t: Optional[float] = None
    resolution: str = ''
    visual: float = 0.0
    #: Where each camera last saw the person: camera -> (internal time, box, image width).
    last_box: Dict[str, Tuple[float, Tuple[float, float, float, float], int]] = \
        dataclasses.field(default_factory=dict)

    @property
    def open(self) -> bool:
        """True until resolved (rejected incidents stay open to suppress re-alerts)."""
        return self.state != RESOLVED

    @property
    def track_names(self) -> List[str]:
        """Contributing tracks as 'camera/track_id' (sorted)."""
        return sorted(f'{c}/{t}' if c else str(t) for c, t in self.tracks)

    @property
    def audio_only(self) -> bool:
        """True while no person was ever linked to it."""
        return not self.tracks

    def summary(self) -> str:
        """One readable line for logs and the alert monitor."""
        where = ''
        if self.position is not None and self.position.has_point:
            x, y, z = self.position.xyz
            where = f' at ({x:.1f}, {y:.1f}, {z:.1f}) m in {self.position.frame_id}'
        who = ', '.join(self.track_names) or 'audio only'
        return (f'incident {self.id} {LEVEL_NAMES.get(self.level, self.level)} '
                f'{STATE_NAMES[self.state]} ({who}){where}: ' + '; '.join(self.reasons))


@dataclasses.dataclass
class _Source:
    last: Optional[float] = None      # newest accepted raw stamp
    offset: float = 0.0               # internal time = raw stamp + offset
    last_t: float = -math.inf         # newest internal time
    pending_future: Optional[float] = None


class TimeGuard:
    """Maps each source's stamps onto one monotonic internal time line.

    - A stamp more than ``step_tolerance_s`` older than the source's previous
      one is a clock step back (NTP correction, a looping bag): it is counted,
      the source's offset is moved so that its internal time continues where
      it was, and the caller resets that source's state.
    - A stamp more than ``max_future_s`` ahead of ``now`` (when the caller
      knows the clock) or, without a clock, of the newest stamp of any source,
      is rejected as bad input; without a clock, a second stamp of the same
      source consistent with the first is taken as a real jump forward.
    - Smaller jitter backwards is clamped (internal time never decreases).
    """

    def __init__(self, step_tolerance_s: float, max_future_s: float) -> None:
        self.step_tolerance_s = step_tolerance_s
        self.max_future_s = max_future_s
        self._sources: Dict[str, _Source] = {}
        self._newest_raw: Optional[float] = None
        self.clock_steps = 0
        self.future_rejected = 0
        self.events: List[Tuple[str, str]] = []

    def accept(self, source: str, stamp: float, now: Optional[float] = None
               ) -> Tuple[Optional[float], bool]:
        """(internal time or None when rejected, True when the source's clock stepped back)."""
        src = self._sources.setdefault(source, _Source())
        if not math.isfinite(stamp):
            self.future_rejected += 1
            self.events.append(('bad_stamp', f'{source}: stamp {stamp} is not finite'))
            return None, False
        if now is not None:
            if stamp > now + self.max_future_s:
                return self._reject_future(source, stamp, f'now {now:.3f}'), False
        elif self._newest_raw is not None and stamp > self._newest_raw + self.max_future_s:
            pending = src.pending_future
            if pending is None or not (pending <= stamp <= pending + self.max_future_s):
                src.pending_future = stamp
                return self._reject_future(source, stamp,
                                           f'newest stamp {self._newest_raw:.3f}'), False
            self.events.append(('time_jump', f'{source}: stamps jumped forward to {stamp:.3f}'))
        src.pending_future = None
        stepped = False
        if src.last is not None and stamp < src.last - self.step_tolerance_s:
            stepped = True
            self.clock_steps += 1
            self.events.append(('clock_step', f'{source}: clock stepped back '
                                f'{src.last - stamp:.3f} s (from {src.last:.3f} to '
                                f'{stamp:.3f}); its state was reset'))
            src.offset = src.last_t + 1e-3 - stamp
        src.last = stamp
        t = max(stamp + src.offset, src.last_t)
        src.last_t = t
        if self._newest_raw is None or stamp > self._newest_raw or stepped:
            self._newest_raw = stamp if not stepped else max(stamp, self._newest_raw or stamp)
        return t, stepped

    def _reject_future(self, source: str, stamp: float, reference: str) -> None:
        self.future_rejected += 1
        self.events.append(('future_stamp', f'{source}: stamp {stamp:.3f} is more than '
                            f'{self.max_future_s} s ahead of {reference}; message ignored'))
        return None

    def drain_events(self) -> List[Tuple[str, str]]:
        """(kind, message) of what happened since the last call (for logging)."""
        events, self.events = self.events, []
        return events

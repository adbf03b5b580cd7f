"""Incidents: one per person in distress, with a stable id, a state and its evidence (no ROS).

The distress fusion (``emotion_ros.fusion.distress``) creates and updates incidents;
this module holds what an incident is, its states, the operator lifecycle (the
one table of which command moves an incident where, :data:`TRANSITIONS`, with
the history every command leaves), the checks on who may command, and the guard
that turns message stamps of several sources into one monotonic time line
(clock steps back, stamps far in the future).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Set, Tuple

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
#: Operator commands and the state each one sets when accepted.
COMMANDS = {'acknowledge': ACKNOWLEDGED, 'confirm': CONFIRMED, 'reject': REJECTED,
            'resolve': RESOLVED}

# ------------------------------------------------------------------ lifecycle
# Where an incident stands for an operator. The evidence-driven states (NEW,
# UPDATED, ESCALATED, STALE) say what happened last; the phase says what
# operators have decided so far and is what the commands act on. It follows
# from the flags (acknowledged, confirmed, rejected) and whether it is closed.
PHASE_OPEN = 'open'                  # no command accepted yet
PHASE_ACKNOWLEDGED = 'acknowledged'  # someone has seen it (or a robot claimed it)
PHASE_CONFIRMED = 'confirmed'        # verdict: a person in distress
PHASE_REJECTED = 'rejected'          # verdict: not a person in distress (no alerts)
PHASE_RESOLVED = 'resolved'          # closed (by an operator or automatically)
PHASES = (PHASE_OPEN, PHASE_ACKNOWLEDGED, PHASE_CONFIRMED, PHASE_REJECTED, PHASE_RESOLVED)

#: The phase each accepted command leads to.
COMMAND_PHASE = {'acknowledge': PHASE_ACKNOWLEDGED, 'confirm': PHASE_CONFIRMED,
                 'reject': PHASE_REJECTED, 'resolve': PHASE_RESOLVED}


@dataclasses.dataclass(frozen=True)
class Rule:
    """One cell of the transition table: the phase a command leads to, or None (refused),
    and why (shown to the operator in the reply and kept in the history)."""

    target: Optional[str]
    why: str


def _allow(command: str, why: str) -> Rule:
    return Rule(COMMAND_PHASE[command], why)


def _refuse(why: str) -> Rule:
    return Rule(None, why)


#: The operator lifecycle: (phase, command) -> Rule. docs/integration.md shows this
#: table (test_lifecycle checks both agree); every pair is listed.
TRANSITIONS: Dict[Tuple[str, str], Rule] = {
    (PHASE_OPEN, 'acknowledge'): _allow('acknowledge', 'seen'),
    (PHASE_OPEN, 'confirm'): _allow('confirm', 'a person in distress'),
    (PHASE_OPEN, 'reject'): _allow('reject', 'no alerts for reject_hold_s, then closed'),
    (PHASE_OPEN, 'resolve'): _allow('resolve', 'closed'),
    (PHASE_ACKNOWLEDGED, 'acknowledge'): _refuse('already acknowledged'),
    (PHASE_ACKNOWLEDGED, 'confirm'): _allow('confirm', 'a person in distress'),
    (PHASE_ACKNOWLEDGED, 'reject'): _allow('reject', 'no alerts for reject_hold_s, then '
                                           'closed'),
    (PHASE_ACKNOWLEDGED, 'resolve'): _allow('resolve', 'closed'),
    (PHASE_CONFIRMED, 'acknowledge'): _refuse('already confirmed (acknowledge never moves a '
                                              'verdict back)'),
    (PHASE_CONFIRMED, 'confirm'): _refuse('already confirmed'),
    (PHASE_CONFIRMED, 'reject'): _allow('reject', 'verdict revised: confirmed cleared, no '
                                        'alerts for reject_hold_s, then closed'),
    (PHASE_CONFIRMED, 'resolve'): _allow('resolve', 'closed'),
    (PHASE_REJECTED, 'acknowledge'): _refuse('already rejected (acknowledge never moves a '
                                             'verdict back)'),
    (PHASE_REJECTED, 'confirm'): _allow('confirm', 'verdict revised: rejected cleared, alerts '
                                        'resume, not closed after reject_hold_s'),
    (PHASE_REJECTED, 'reject'): _refuse('already rejected'),
    (PHASE_REJECTED, 'resolve'): _allow('resolve', 'closed'),
    (PHASE_RESOLVED, 'acknowledge'): _refuse('already resolved (a closed incident does not '
                                             'reopen)'),
    (PHASE_RESOLVED, 'confirm'): _refuse('already resolved (a closed incident does not '
                                         'reopen)'),
    (PHASE_RESOLVED, 'reject'): _refuse('already resolved (a closed incident does not '
                                        'reopen)'),
    (PHASE_RESOLVED, 'resolve'): _refuse('already resolved'),
}

#: At most this many history entries per incident; beyond, the oldest refused entry
#: (else the oldest entry) makes room.
HISTORY_LIMIT = 50
#: Longest accepted operator id and note (characters).
MAX_OPERATOR_ID = 64
MAX_NOTE = 500


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    """One operator command as it was handled (accepted or refused)."""

    stamp: float        # when it was handled (the caller's clock, seconds)
    operator_id: str
    action: str
    note: str
    accepted: bool
    message: str        # what happened, or why it was refused
    state: int          # the incident's state after it


def check_request(operator_id: str, note: str, accepted: Sequence[str] = ()
                  ) -> Optional[Tuple[str, str]]:
    """Why a command request may not reach the lifecycle at all, as (kind, reason); None
    when it may.

    ``accepted`` lists the operator ids that may command (empty: anyone who names
    themselves). This is a guard against another robot's operator UI on a shared ROS
    domain commanding this robot's incidents, not a security boundary: anyone can claim
    any id (docs/security.md).
    """
    if not operator_id.strip():
        return ('no_operator', 'operator_id is empty: every command names its operator '
                '(alert_monitor --operator NAME)')
    if len(operator_id) > MAX_OPERATOR_ID or not operator_id.isprintable():
        return ('bad_operator', f'operator_id must be at most {MAX_OPERATOR_ID} printable '
                f'characters, got {operator_id[:MAX_OPERATOR_ID]!r}'
                + ('...' if len(operator_id) > MAX_OPERATOR_ID else ''))
    if len(note) > MAX_NOTE or not note.isprintable():
        return ('bad_note', f'note must be at most {MAX_NOTE} printable characters (no '
                f'newlines), got {len(note)} characters')
    if accepted and operator_id not in accepted:
        return ('operator_not_accepted', f'operator {operator_id!r} is not among the accepted '
                f'operators of this distress node (accepted_operators: {list(accepted)})')
    return None


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
    #: Running clothing descriptor of the person (re-identification); empty when unknown.
    appearance: Tuple[float, ...] = ()
    #: Incidents that may be the same person (re-identification was unsure).
    related_ids: Set[int] = dataclasses.field(default_factory=set)
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
    #: The caller's clock when an operator resolved it (closed_keep_s counts on it too).
    closed_clock: Optional[float] = None
    #: A rejected incident closes at this internal time (reject_hold_s after the reject).
    reject_until_t: Optional[float] = None
    resolution: str = ''
    #: Every operator command on it, oldest first (accepted and refused).
    history: List[HistoryEntry] = dataclasses.field(default_factory=list)
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

    @property
    def phase(self) -> str:
        """Where it stands for an operator (PHASE_*): what the commands act on."""
        if not self.open:
            return PHASE_RESOLVED
        if self.rejected:
            return PHASE_REJECTED
        if self.confirmed:
            return PHASE_CONFIRMED
        if self.acknowledged:
            return PHASE_ACKNOWLEDGED
        return PHASE_OPEN

    def summary(self) -> str:
        """One readable line for logs and the alert monitor."""
        where = ''
        if self.position is not None and self.position.has_point:
            x, y, z = self.position.xyz
            where = f' at ({x:.1f}, {y:.1f}, {z:.1f}) m in {self.position.frame_id}'
        who = ', '.join(self.track_names) or 'audio only'
        return (f'incident {self.id} {LEVEL_NAMES.get(self.level, self.level)} '
                f'{STATE_NAMES[self.state]} ({who}){where}: ' + '; '.join(self.reasons))


def apply_command(incident: Incident, action: str, operator_id: str, note: str,
                  stamp: float) -> Tuple[bool, str]:
    """Move ``incident`` through the lifecycle by one command (:data:`TRANSITIONS`).

    Accepted: the flags, the state and (when the command has one) the note change,
    and the command is added to the history. Refused: nothing but the history
    changes (the earlier note stays). Closing a resolved incident and holding a
    rejected one are the fusion's side of it. Returns (accepted, message).

    Raises:
        KeyError: for an action not in :data:`COMMANDS`.
    """
    before = incident.phase
    rule = TRANSITIONS[(before, action)]
    if rule.target is None:
        last = next((e for e in reversed(incident.history) if e.accepted), None)
        by = f' by {last.operator_id}' if last is not None and last.operator_id else ''
        if before == PHASE_RESOLVED and incident.resolution:
            by = f' ({incident.resolution})'
        message = f'incident {incident.id}: {action} refused: {rule.why}{by}'
        _record(incident, HistoryEntry(stamp, operator_id, action, note, False, message,
                                       incident.state))
        return False, message
    target = rule.target
    incident.acknowledged = True  # any accepted command: someone has seen it
    if target == PHASE_CONFIRMED:
        incident.confirmed, incident.rejected = True, False
    elif target == PHASE_REJECTED:
        incident.confirmed, incident.rejected = False, True
    incident.state = COMMANDS[action]
    if note:
        incident.note = note
    who = f' by {operator_id}' if operator_id else ''
    message = f'incident {incident.id} {STATE_NAMES[incident.state].lower()}{who}'
    if before != PHASE_OPEN and before != target:
        message += f' (was {before}: {rule.why})'
    _record(incident, HistoryEntry(stamp, operator_id, action, note, True, message,
                                   incident.state))
    return True, message


def _record(incident: Incident, entry: HistoryEntry) -> None:
    history = incident.history
    history.append(entry)
    while len(history) > HISTORY_LIMIT:
        refused = next((i for i, e in enumerate(history) if not e.accepted), 0)
        del history[refused]


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

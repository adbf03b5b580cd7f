"""Distress fusion: person estimates + audio cues + transcripts -> incidents and alerts (no ROS).

Evidence
    Visual evidence of one estimate is the strongest of (a) weighted scores
    of the distress-related EMOTIC categories and (b) low valence, times the
    ``evidence_weight`` its backend declares. A backend declaring less than
    ``weak_evidence_weight`` is weak (the light 7-class face model cannot tell a
    neutral face from a sad one: it declares 0.55): its visual evidence alone
    never takes an incident above WATCH, whatever the thresholds. It is
    smoothed per track (``smoothing_tau_s``);
    while the face is not visible it fades with ``visual_fade_s``. Audio
    evidence is a call for help (AudioCues or Transcript, held for
    ``help_hold_s``) or a scream cue at or above ``scream_threshold``.
    Visual and audio evidence agreeing (both above ``visibly_distressed``) is
    stronger than either alone. Each reason is a :class:`Reason`: text for
    people with a code (``REASON_*``) the fusion decides by.

Incidents
    One incident per person in distress, with a stable id. A track with
    evidence at WATCH creates one; a track that is re-acquired, another
    camera's track of the same person, or a call for help overlapping in
    time joins the existing incident (by 3D position when both are known in
    the same frame, else by camera, image region and time). An alert is
    returned when an incident is created or its level rises (at once, no
    cooldown). Going above WATCH needs ``min_evidence_s`` of evidence at
    WATCH or more, unless a call for help was heard. Operators acknowledge,
    confirm, reject or resolve incidents (the allowed transitions:
    ``incidents.TRANSITIONS``; each command kept in the incident's history); a
    rejected person does not re-alert for ``reject_hold_s`` after the reject.
    Incidents go STALE without evidence for ``stale_after_s`` and are resolved
    after ``expire_s`` without evidence or ``clear_after_s`` of calm evidence;
    a resolved incident stays listed ``closed_keep_s`` after it closed (after
    the operator's command for a resolve).

Time
    Every message's stamp goes through a TimeGuard: a clock step back of one
    source resets that source's state and the internal time line continues;
    stamps far in the future are rejected and counted. Callers feed the fusion
    through :class:`emotion_ros.fusion.ordering.OrderedFusion`, which holds
    inputs ``input_hold_s`` and hands them over in stamp order.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from emotion_ros.config.schema import field
from emotion_ros.llm.contract import CATEGORY_INDEX, DISTRESS_CATEGORIES, vad_to_word
from emotion_ros.errors import ConfigError
from emotion_ros.perception.appearance import blend, similarity
from emotion_ros.fusion.incidents import (ACKNOWLEDGED, apply_command, COMMANDS, CONFIRMED,
                                          ESCALATED, Incident, NEW, PHASE_CONFIRMED,
                                          PHASE_REJECTED, REJECTED, RESOLVED, STALE, TimeGuard,
                                          UPDATED)
from emotion_ros.types import (Alert, AudioCueResult, FrameResult, LEVEL_DISTRESS,
                               LEVEL_EMERGENCY, LEVEL_WATCH, PersonEstimate, Transcript)


#: Reason codes (``Reason.code``): what kind of evidence a reason stands for.
REASON_CATEGORY = 'visual.category'      # a distress-related EMOTIC category scored high
REASON_VALENCE = 'visual.valence'        # low valence
REASON_AROUSAL = 'visual.arousal'        # high arousal (with other visual evidence)
REASON_HELP = 'audio.help'               # a spoken call for help (keyword or transcript)
REASON_SCREAM = 'audio.scream'           # the scream/cry cue at or above scream_threshold
REASON_VOICE = 'audio.voice'             # an audio-only estimate: a voice, nobody in view
REASON_HEARD = 'audio.transcript'        # the words heard with a call for help
REASON_NOBODY_VISIBLE = 'nobody_visible'  # an audio-only incident
REASON_SCORE = 'score'                   # no other reason: the score itself
REASON_CODES = (REASON_CATEGORY, REASON_VALENCE, REASON_AROUSAL, REASON_HELP, REASON_SCREAM,
                REASON_VOICE, REASON_HEARD, REASON_NOBODY_VISIBLE, REASON_SCORE)


class Reason(str):
    """One reason of an incident or alert: text for people, with a code for programs.

    The text is the string itself, so reasons go into messages (``string[] reasons``),
    logs and JSON as they are; ``code`` (one of :data:`REASON_CODES`) is what the
    fusion decides by. Codes stay inside the process: messages carry the text only,
    so bags recorded before codes existed still read the same (docs/messages.md).
    """

    code: str

    def __new__(cls, code: str, text: str) -> 'Reason':
        """A reason with ``code`` and the human-readable ``text``."""
        if code not in REASON_CODES:
            raise ValueError(f'unknown reason code {code!r}; known: {REASON_CODES}')
        obj = super().__new__(cls, text)
        obj.code = code
        return obj

    def __getnewargs__(self) -> Tuple[str, str]:  # copy/pickle keep the code
        return self.code, str(self)


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """Tunables of the distress fusion (distress node parameters)."""

    distress_categories: Tuple[str, ...] = field(
        DISTRESS_CATEGORIES, 'EMOTIC categories that count as visual distress evidence.')
    category_weights: Tuple[float, ...] = field(
        (1.0, 1.0, 1.0, 0.7, 0.6, 0.4),
        'Weight of each distress category (same order and length as distress_categories).')
    valence_weight: float = field(
        0.8, 'Weight of low valence: valence 1 gives this much evidence, valence >= 5.5 none.',
        min=0.0, max=1.0)
    default_evidence_weight: float = field(
        1.0, 'Weight of visual evidence from estimates whose backend declares none '
        '(PersonEmotion.evidence_weight 0).', min=0.0, max=1.0)
    min_detection_confidence: float = field(
        0.3, 'Persons detected with less confidence are ignored.', min=0.0, max=1.0)
    smoothing_tau_s: float = field(
        0.7, 'Time constant (s) of the per-track moving average of the visual evidence.',
        positive=True)
    visual_fade_s: float = field(
        2.0, 'While a person is seen without a face, their visual evidence fades with this '
        'time constant (s) instead of being kept.', positive=True)
    watch_threshold: float = field(
        0.45, 'Score at which a person gets an incident at WATCH.', min=0.0, max=1.0)
    distress_threshold: float = field(
        0.6, 'Score for DISTRESS (after min_evidence_s of evidence).', min=0.0, max=1.0)
    emergency_threshold: float = field(
        0.8, 'Score for EMERGENCY (after min_evidence_s of evidence).', min=0.0, max=1.0)
    clear_threshold: float = field(
        0.3, 'Below this score an incident counts as calm (see clear_after_s).',
        min=0.0, max=1.0)
    min_evidence_s: float = field(
        1.0, 'Evidence at WATCH or more needed for this long before an incident goes above '
        'WATCH (a call for help needs none).', min=0.0)
    visibly_distressed: float = field(
        0.3, 'Visual evidence above this counts as a visibly distressed person: a call for help '
        'from them is EMERGENCY (else DISTRESS), and visual and audio evidence both above it '
        'corroborate each other (corroboration_boost).', min=0.0, max=1.0)
    corroboration_boost: float = field(
        0.5, 'When visual and audio evidence both exceed visibly_distressed, the score gains '
        'this fraction of the weaker one.', min=0.0, max=1.0)
    weak_evidence_weight: float = field(
        0.6, 'Estimates whose backend declares an evidence weight below this are weak (the '
        "light backend declares 0.55: its 7 face classes read neutral faces as 'sadness'): "
        'their visual evidence alone raises at most WATCH, whatever the thresholds; a call for '
        'help, audio evidence or visual and audio evidence corroborating each other still can '
        'go higher.', min=0.0, max=1.0)
    cooldown_s: float = field(
        0.0, 'Re-announce an open, unacknowledged incident at DISTRESS or above (a new alert at '
        'the same level) at most this often; 0: alerts only on creation and escalation.',
        min=0.0)
    help_weight: float = field(
        1.0, 'Evidence a spoken call for help gives.', min=0.0, max=1.0)
    help_hold_s: float = field(
        3.0, 'How long (s) a heard call for help keeps counting as evidence.', min=0.0)
    scream_weight: float = field(
        0.8, 'Weight of the scream/cry cue.', min=0.0, max=1.0)
    scream_threshold: float = field(
        0.5, 'scream_score of AudioCues at or above which the scream cue counts as evidence '
        '(below it: none).', min=0.0, max=1.0)
    voice_weight: float = field(
        0.8, 'Weight of an audio-only estimate (voice_emotions: the audio_visual model scoring '
        'a voice with nobody visible): its distress evidence, computed as for a visible '
        'person, times this. It counts once it reaches watch_threshold.', min=0.0, max=1.0)
    voice_hold_s: float = field(
        2.0, 'How long (s) an audio-only estimate keeps counting as evidence.', min=0.0)
    audio_attach_s: float = field(
        1.5, 'A person seen within this many seconds counts as visible for audio attribution.',
        min=0.0)
    help_join_s: float = field(
        2.0, 'A call for help with nobody visible joins the incident seen within this many '
        'seconds instead of opening an audio-only one.', min=0.0)
    audio_person_join_s: float = field(
        6.0, "A person appearing within this many seconds of an audio-only incident's call "
        'joins it.', min=0.0)
    association_distance_m: float = field(
        1.0, "A track whose 3D position is this close to an incident's (same frame) joins it.",
        positive=True)
    reacquire_s: float = field(
        10.0, 'A new track of the same camera joins an incident seen there within this many '
        'seconds when it appears in the same image region; a call for help with nobody '
        'visible joins an audio-only incident heard within this many seconds.', min=0.0)
    region_match: float = field(
        0.35, 'Same image region: box centres closer than this fraction of the image width.',
        min=0.0, max=1.0)
    reid_reject_similarity: float = field(
        0.7, 'Re-identification: a returning person whose clothing colours '
        '(perception.appearance similarity, 0-1) match an incident less than this is someone '
        'else. Tuned on the dev people of bench_incidents --reid (lowest same-person value '
        'under exposure and scale changes 0.75).', min=0.0, max=1.0)
    reid_margin: float = field(
        0.03, 'Re-identification: another person recently seen there who is out of view now '
        'and looks at least this similar (similarity within this margin) makes the match '
        'unsure: a new incident is opened and linked to the earlier one instead.',
        min=0.0, max=1.0)
    reid_memory_s: float = field(
        60.0, 'Re-identification: how long who stood where (box, 3D point, clothing) is '
        'remembered after a person left the view, so that a returning look-alike makes a '
        'match unsure rather than wrong.', min=0.0)
    track_timeout_s: float = field(
        5.0, 'Forget a track after this long without estimates.', positive=True)
    stale_after_s: float = field(
        10.0, 'An incident without new evidence for this long becomes STALE.', positive=True)
    expire_s: float = field(
        120.0, 'A STALE incident is resolved after this long without evidence.', positive=True)
    clear_after_s: float = field(
        30.0, 'An incident whose person is seen calm (score below clear_threshold) for this '
        'long is resolved (cleared).', positive=True)
    reject_hold_s: float = field(
        300.0, "A rejected incident keeps absorbing its person's evidence (no new alerts) for "
        'this long after the reject command before it is closed.', min=0.0)
    closed_keep_s: float = field(
        30.0, 'Resolved incidents stay in the incident list this long after they closed '
        "(after the operator's command when resolved by one), so listeners see the final "
        'state.', min=0.0)
    max_open_incidents: int = field(
        100, 'At most this many open incidents; the oldest calm one is closed beyond.', min=1)
    clock_step_tolerance_s: float = field(
        0.5, "A stamp this much older than its source's previous one is a clock step back "
        "(counted, that source's state reset).", positive=True)
    max_future_s: float = field(
        10.0, 'Stamps more than this far ahead of the clock (or of the newest stamp) are '
        'rejected as bad input.', positive=True)
    input_hold_s: float = field(
        0.1, 'Inputs (person estimates, voices, audio cues, transcripts) wait this long after '
        'they arrive (receiver clock; message time in the bag evaluation) and are fused in '
        'stamp order, whatever order the subscriptions deliver them in; 0 fuses each on '
        'arrival. Adds up to this much to the alert latency.', min=0.0)

    def validate(self) -> None:
        """Cross-check fields; raise ConfigError naming the parameter."""
        if len(self.distress_categories) != len(self.category_weights):
            raise ConfigError(
                f'category_weights: needs one weight per distress category '
                f'({len(self.distress_categories)}), got {len(self.category_weights)}')
        unknown = [c for c in self.distress_categories if c not in CATEGORY_INDEX]
        if unknown:
            raise ConfigError(f'distress_categories: unknown EMOTIC categories {unknown}')
        if not (self.clear_threshold < self.watch_threshold <= self.distress_threshold
                <= self.emergency_threshold):
            raise ConfigError(
                'thresholds: need clear_threshold < watch_threshold <= distress_threshold '
                f'<= emergency_threshold, got {self.clear_threshold}, {self.watch_threshold}, '
                f'{self.distress_threshold}, {self.emergency_threshold}')
        if self.expire_s < self.stale_after_s:
            raise ConfigError(f'expire_s: must be >= stale_after_s ({self.stale_after_s}), '
                              f'got {self.expire_s}')


@dataclasses.dataclass
class _Track:
    key: Tuple[str, int]
    score: float = 0.0
    visual: float = 0.0
    reasons: List[Reason] = dataclasses.field(default_factory=list)
    seen_t: float = -math.inf
    first_t: float = -math.inf
    person: Optional[PersonEstimate] = None
    stamp: float = 0.0
    frame_id: str = ''
    width: int = 0
    incident: Optional[int] = None
    face_t: float = -math.inf
    #: Incidents re-identification could neither match nor rule out (linked if one opens).
    unsure: Set[int] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class _Audio:
    cues: Optional[AudioCueResult] = None
    cues_t: float = -math.inf
    help_until_t: float = -math.inf
    help_words: List[str] = dataclasses.field(default_factory=list)
    target: Optional[int] = None   # incident the current call/scream is attributed to
    help_cues: Optional[AudioCueResult] = None  # the cue window that heard the current call
    # End of the newest help transcript (fusion time): the words' own time, which a cue
    # window reporting a call after its decode finished (stamped later) does not give.
    help_words_end_t: float = -math.inf
    transcript: Optional[Transcript] = None
    frame_id: str = ''
    stamp: float = 0.0
    voice: float = 0.0             # weighted evidence of the newest audio-only estimate
    voice_reasons: List[Reason] = dataclasses.field(default_factory=list)
    voice_t: float = -math.inf


class DistressFusion:
    """Turns person estimates, audio cues and transcripts into incidents and alerts."""

    def __init__(self, config: FusionConfig) -> None:
        self.config = config
        self._indices = [CATEGORY_INDEX[c] for c in config.distress_categories]
        self._weights = np.asarray(config.category_weights, dtype=np.float32)
        self.clock = TimeGuard(config.clock_step_tolerance_s, config.max_future_s)
        self._tracks: Dict[Tuple[str, int], _Track] = {}
        #: Tracks forgotten (track_timeout_s) but seen within reid_memory_s: who stood where.
        self._departed: Dict[Tuple[str, int], _Track] = {}
        self._audio: Dict[str, _Audio] = {}
        self._incidents: Dict[int, Incident] = {}
        self._next_id = 1
        self._now = -math.inf
        self._clock = -math.inf  # the receiver's clock, as told by command() and idle()
        self.changed = False  # set whenever an incident's state, level or evidence changed
        self.counters: Dict[str, int] = {'incidents_created': 0, 'alerts': 0,
                                         'suppressed_rejected': 0, 'commands_accepted': 0,
                                         'reid_unsure': 0}
        #: Refused operator commands by kind (unknown_action, unknown_incident, transition).
        self.refusals: Dict[str, int] = {}

    # ---------------------------------------------------------------- config
    def reconfigure(self, config: FusionConfig) -> None:
        """Swap in a new (validated) config; incidents, tracks and clocks are kept."""
        config.validate()
        self.config = config
        self._indices = [CATEGORY_INDEX[c] for c in config.distress_categories]
        self._weights = np.asarray(config.category_weights, dtype=np.float32)
        self.clock.step_tolerance_s = config.clock_step_tolerance_s
        self.clock.max_future_s = config.max_future_s

    # ----------------------------------------------------------------- evidence
    def visual_evidence(self, person: PersonEstimate) -> Tuple[float, List[Reason]]:
        """Weighted visual distress evidence in [0, 1] of one estimate, with reasons."""
        emotion = person.emotion
        terms: List[Tuple[float, str]] = []
        scores = emotion.scores[self._indices] * self._weights
        for name, raw, weighted in zip(self.config.distress_categories,
                                       emotion.scores[self._indices], scores):
            if weighted > 0.05:
                terms.append((float(weighted),
                              Reason(REASON_CATEGORY, f'{name.lower()} {raw:.2f}')))
        valence = emotion.vad[0]
        if not math.isnan(valence):
            low = min(max((5.5 - valence) / 4.5, 0.0), 1.0)
            if low > 0:
                terms.append((self.config.valence_weight * low, Reason(
                    REASON_VALENCE, f'valence {vad_to_word(valence)} ({valence:.1f})')))
        arousal = emotion.vad[1]
        terms.sort(key=lambda t: -t[0])
        reasons = [t[1] for t in terms[:3]]
        if terms and not math.isnan(arousal) and arousal >= 7:
            reasons.append(Reason(REASON_AROUSAL,
                                  f'arousal {vad_to_word(arousal)} ({arousal:.1f})'))
        weight = person.evidence_weight if person.evidence_weight > 0 else \
            self.config.default_evidence_weight
        return (weight * terms[0][0] if terms else 0.0), reasons

    def _audio_evidence(self, incident_id: int, t: float
                        ) -> Tuple[float, List[Reason], bool, Optional[_Audio]]:
        """(evidence, reasons, call for help held now, audio source) for one incident."""
        best: Tuple[float, List[Reason], bool, Optional[_Audio]] = (0.0, [], False, None)
        for audio in self._audio.values():
            if audio.target != incident_id:
                continue
            terms: List[Tuple[float, Reason]] = []
            help_now = t <= audio.help_until_t
            if help_now:
                words = ', '.join(repr(w) for w in audio.help_words) or "'help'"
                terms.append((self.config.help_weight,
                              Reason(REASON_HELP, f'spoken call for help ({words})')))
            cues = audio.cues
            if (cues is not None and t - audio.cues_t <= max(cues.window_s, 0.5) + 0.5
                    and cues.scream_score >= self.config.scream_threshold):
                terms.append((self.config.scream_weight * cues.scream_score,
                              Reason(REASON_SCREAM, f'scream/cry cue {cues.scream_score:.2f}')))
            if audio.voice > 0 and t - audio.voice_t <= self.config.voice_hold_s:
                terms.append((audio.voice, Reason(
                    REASON_VOICE, 'voice heard, nobody in view (audio-visual model): '
                    + ', '.join(audio.voice_reasons))))
            if audio.transcript is not None and audio.transcript.text and help_now:
                terms.append((0.0, Reason(REASON_HEARD,
                                          f'heard: "{audio.transcript.text[:80]}"')))
            terms.sort(key=lambda x: -x[0])
            value = terms[0][0] if terms else 0.0
            if value > best[0] or (help_now and not best[2]):
                best = (value, [x[1] for x in terms], help_now, audio)
        return best

    # ------------------------------------------------------------------- inputs
    def update_frame(self, frame: FrameResult, now: Optional[float] = None) -> List[Alert]:
        """Fold one frame's person estimates in; return the alerts it raises.

        ``now`` is the receiver's clock (seconds) when known: stamps more than
        ``max_future_s`` ahead of it are rejected.
        """
        camera = _camera_of(frame)
        t, stepped = self.clock.accept(f'camera:{camera}', frame.stamp, now)
        if t is None:
            return []
        if stepped:
            self._reset_camera(camera)
        self._now = max(self._now, t)
        cfg = self.config
        alerts: List[Alert] = []
        # Tracks of this frame: one of them is never the re-acquired form of another.
        in_frame = {(p.camera or camera, int(p.track_id)) for p in frame.persons
                    if p.detection_confidence >= cfg.min_detection_confidence}
        for person in frame.persons:
            if person.detection_confidence < cfg.min_detection_confidence:
                continue
            key = (person.camera or camera, int(person.track_id))
            track = self._tracks.get(key)
            if track is None:
                track = self._tracks[key] = _Track(key=key, first_t=t, seen_t=t)
            dt = max(t - track.seen_t, 0.0)
            if person.emotion.face_visible:
                raw, track.reasons = self.visual_evidence(person)
                track.visual = raw
                track.face_t = t
                if track.person is None:
                    track.score = raw * (1.0 - math.exp(-0.2 / cfg.smoothing_tau_s))
                else:
                    track.score += (1.0 - math.exp(-dt / cfg.smoothing_tau_s)) * (
                        raw - track.score)
            else:
                # No face: the evidence fades rather than being kept forever.
                fade = math.exp(-dt / cfg.visual_fade_s)
                track.score *= fade
                track.visual *= fade
            track.person = person
            track.seen_t = t
            track.stamp = frame.stamp
            track.frame_id = frame.frame_id
            track.width = frame.width
            if track.incident is not None and (track.incident not in self._incidents or
                                               not self._incidents[track.incident].open):
                track.incident = None
            if track.incident is None:
                match = self._associate(track, t, in_frame)
                if match is not None:
                    self._link(track, match)
            if track.incident is None and track.score >= cfg.watch_threshold:
                incident = self._create(t, frame.stamp, frame.frame_id)
                self._link(track, incident)
                # Re-identification was unsure: the new incident and the earlier one(s)
                # this person may be point at each other (an operator decides).
                for other_id in track.unsure & set(self._incidents):
                    incident.related_ids.add(other_id)
                    self._incidents[other_id].related_ids.add(incident.id)
            if track.incident is not None:
                incident = self._incidents[track.incident]
                self._add_person(incident, track, t)
                alert = self._evaluate(incident, t, frame.stamp, frame.frame_id)
                if alert is not None:
                    alerts.append(alert)
        # Audio attributed to someone who is still held (call for help) re-evaluates too.
        self._housekeeping(t)
        return alerts

    def update_audio(self, cues: AudioCueResult, frame_id: str = '',
                     now: Optional[float] = None) -> List[Alert]:
        """Fold one window of audio cues (from the source ``frame_id``) in; return alerts."""
        t, audio = self._audio_source(f'audio:{frame_id}', frame_id, cues.stamp, now)
        if audio is None:
            return []
        audio.cues, audio.cues_t = cues, t
        audio.frame_id, audio.stamp = frame_id, cues.stamp
        if cues.help_detected:
            self._hear_help(audio, t, list(cues.keywords))
            audio.help_cues = cues
        scream = cues.scream_score >= self.config.scream_threshold
        alerts = self._attribute_audio(audio, t, cues.stamp, frame_id,
                                       cues.help_detected or scream)
        self._housekeeping(t)
        return alerts

    def update_voice(self, voice: PersonEstimate, stamp: float, frame_id: str = '',
                     now: Optional[float] = None) -> List[Alert]:
        """Fold one audio-only estimate in (the audio_visual backend scoring a voice while
        nobody is visible); return the alerts it raises.

        Its distress evidence is computed like a visible person's, times ``voice_weight``;
        at ``watch_threshold`` or more it is audio evidence, attributed like a call for
        help (a person visible elsewhere, a recent incident, else an audio-only incident).
        """
        source = f'voice:{voice.camera or frame_id}'
        t, audio = self._audio_source(source, source, stamp, now)
        if audio is None:
            return []
        evidence, reasons = self.visual_evidence(voice)
        audio.voice = self.config.voice_weight * evidence
        audio.voice_reasons, audio.voice_t = reasons, t
        audio.frame_id, audio.stamp = frame_id, stamp
        alerts = self._attribute_audio(audio, t, stamp, frame_id,
                                       audio.voice >= self.config.watch_threshold)
        self._housekeeping(t)
        return alerts

    def update_transcript(self, transcript: Transcript, now: Optional[float] = None
                          ) -> List[Alert]:
        """Fold one decoded utterance in (help flag and text); return alerts."""
        frame_id = transcript.frame_id
        stamp = transcript.end if math.isfinite(transcript.end) and transcript.end > 0 else \
            transcript.stamp
        # Own clock source: transcripts arrive after decoding, older than the newest cues.
        t, audio = self._audio_source(f'transcript:{frame_id}', frame_id, stamp, now,
                                      reset_on_step=False)
        if audio is None:
            return []
        audio.transcript = transcript
        audio.frame_id, audio.stamp = frame_id, stamp
        if transcript.help_detected:
            # Words spoken more than help_hold_s after the previous call's words are a new
            # call, even when a late-stamped cue window of that call still holds it.
            start_t = t - max(0.0, stamp - transcript.stamp) if math.isfinite(
                transcript.stamp) else t
            if start_t - audio.help_words_end_t > self.config.help_hold_s:
                audio.help_until_t = -math.inf
            audio.help_words_end_t = t
            self._hear_help(audio, t, [transcript.help_phrase] if transcript.help_phrase
                            else [])
        alerts = self._attribute_audio(audio, t, stamp, frame_id, transcript.help_detected)
        if audio.target is not None and audio.target in self._incidents:
            self._incidents[audio.target].transcript = transcript
            self.changed = True
        return alerts

    def idle(self, seconds: float, clock: Optional[float] = None) -> None:
        """No input for ``seconds`` (receiver's clock): let incidents go stale or expire.

        The node calls this from its timer, so that incidents age even when every
        camera and microphone has gone quiet; message time stays untouched.
        ``clock`` is the receiver's clock now (seconds, as the ``stamp`` of
        :meth:`command`): an incident an operator resolved stays listed until
        ``closed_keep_s`` have passed on it too, even when message time runs ahead
        (a burst of queued frames, a bag played fast).
        """
        if clock is not None and math.isfinite(clock):
            self._clock = max(self._clock, float(clock))
        if seconds >= 0 and math.isfinite(self._now):
            self._housekeeping(self._now + seconds)

    # --------------------------------------------------------------- operators
    def command(self, incident_id: int, action: str, note: str = '', operator_id: str = '',
                stamp: Optional[float] = None, idle_s: float = 0.0
                ) -> Tuple[bool, str, Optional[Incident]]:
        """Apply an operator command (acknowledge, confirm, reject, resolve).

        Which command is allowed in which phase is the table
        ``emotion_ros.fusion.incidents.TRANSITIONS``; a refused one changes nothing
        but the incident's history, where every command on a known incident is kept
        (``operator_id``, ``stamp``, action, note, accepted, the resulting state).

        Args:
            stamp: when the command was handled on the caller's clock (seconds), kept
                in the history; default: the fusion's time line. A resolved incident
                stays listed until ``closed_keep_s`` passed on this clock too (see
                :meth:`idle`).
            idle_s: how long the caller's clock ran since the last input arrived. The
                command happens at the newest evidence time plus this, so that
                ``closed_keep_s`` (resolve) and ``reject_hold_s`` (reject) count from
                the command, not from the last evidence.

        Returns (success, message, incident).
        """
        if action not in COMMANDS:
            self.refusals['unknown_action'] = self.refusals.get('unknown_action', 0) + 1
            return False, f'unknown action {action!r}; known: {sorted(COMMANDS)}', None
        incident = self._incidents.get(incident_id)
        if incident is None or incident.level == 0:
            self.refusals['unknown_incident'] = self.refusals.get('unknown_incident', 0) + 1
            known = sorted(i for i, inc in self._incidents.items() if inc.open and inc.level)
            return False, f'no incident {incident_id} (open incidents: {known})', None
        t = self._now + max(float(idle_s), 0.0) if math.isfinite(idle_s) else self._now
        ok, message = apply_command(incident, action, operator_id, note,
                                    t if stamp is None else float(stamp))
        self.changed = True
        if not ok:
            self.refusals['transition'] = self.refusals.get('transition', 0) + 1
            return False, message, incident
        self.counters['commands_accepted'] += 1
        if incident.phase == PHASE_REJECTED:
            incident.reject_until_t = t + self.config.reject_hold_s  # when it will close
        elif incident.phase == PHASE_CONFIRMED:
            incident.reject_until_t = None
        elif action == 'resolve':
            self._close(incident, t, 'resolved by operator')
            if stamp is not None and math.isfinite(stamp):
                incident.closed_clock = float(stamp)
                self._clock = max(self._clock, float(stamp))
        return True, message, incident

    # ----------------------------------------------------------------- queries
    def incidents(self, include_closed: bool = True) -> List[Incident]:
        """Incidents by id: open ones, plus recently resolved ones when asked."""
        return [inc for _, inc in sorted(self._incidents.items())
                if inc.level > 0 and (include_closed or inc.open)]

    def get(self, incident_id: int) -> Optional[Incident]:
        """One incident by id (None when unknown or forgotten)."""
        return self._incidents.get(incident_id)

    def scores(self) -> Dict[int, float]:
        """Current score per open incident."""
        return {i: inc.score for i, inc in self._incidents.items() if inc.open}

    @property
    def tracks_followed(self) -> int:
        """Tracks the fusion currently remembers."""
        return len(self._tracks)

    def reset(self) -> None:
        """Forget all tracks, audio evidence and incidents."""
        self.__init__(self.config)

    # ---------------------------------------------------------------- internals
    def _audio_source(self, clock_source: str, key: str, stamp: float, now: Optional[float],
                      reset_on_step: bool = True) -> Tuple[float, Optional[_Audio]]:
        """Accept ``stamp`` on ``clock_source``; the audio state ``key`` (fresh after a clock
        step back when ``reset_on_step``), or None for a rejected stamp."""
        t, stepped = self.clock.accept(clock_source, stamp, now)
        if t is None:
            return 0.0, None
        audio = self._audio.setdefault(key, _Audio())
        if stepped and reset_on_step:
            self._audio[key] = audio = _Audio()
        self._now = max(self._now, t)
        return t, audio

    def _hear_help(self, audio: _Audio, t: float, words: List[str]) -> None:
        if t > audio.help_until_t:
            audio.target = None  # a new call: attribute it afresh
            audio.help_cues = None
        audio.help_until_t = t + self.config.help_hold_s
        if words:
            audio.help_words = words

    def _attribute_audio(self, audio: _Audio, t: float, stamp: float, frame_id: str,
                         evidence: bool) -> List[Alert]:
        cfg = self.config
        held = t <= audio.help_until_t
        if not (evidence or held):
            if audio.target is not None and audio.target in self._incidents:
                alert = self._evaluate(self._incidents[audio.target], t, stamp, frame_id)
                audio.target = None
                return [alert] if alert else []
            audio.target = None
            return []
        target = self._incidents.get(audio.target) if audio.target is not None else None
        if target is None or not target.open:
            visible = [tr for tr in self._tracks.values() if t - tr.seen_t <= cfg.audio_attach_s]
            if visible:
                # One microphone cannot tell who called: the most visibly distressed person.
                track = max(visible, key=lambda tr: (tr.score, tr.seen_t))
                if track.incident is None or track.incident not in self._incidents or \
                        not self._incidents[track.incident].open:
                    incident = self._create(t, stamp, frame_id)
                    self._link(track, incident)
                    self._add_person(incident, track, track.seen_t)
                target = self._incidents[track.incident]
            else:
                # The caller may have just left the view (a person seen within help_join_s),
                # or be the unseen voice of an earlier call (audio-only, within reacquire_s).
                recent = [inc for inc in self._incidents.values() if inc.open and (
                    t - inc.person_seen_t <= cfg.help_join_s
                    or (inc.audio_only and t - inc.last_seen_t <= cfg.reacquire_s))]
                if recent:
                    target = max(recent, key=lambda inc: (inc.level, inc.last_seen_t))
                else:
                    target = self._create(t, stamp, frame_id)
        audio.target = target.id
        if audio.cues is not None or not audio.voice_reasons:  # a voice source has no cues
            target.audio = audio.cues
        if audio.transcript is not None:
            target.transcript = audio.transcript
        if held:
            target.help_heard = True
        target.last_seen_t = max(target.last_seen_t, t)
        target.last_seen = stamp
        alert = self._evaluate(target, t, stamp, frame_id)
        return [alert] if alert else []

    def _associate(self, track: _Track, t: float, in_frame=frozenset()) -> Optional[Incident]:
        """The open incident this (new) track's person belongs to, if any.

        Re-identification, in order: a track that was in view of this camera while an
        incident's person was is someone else; clothing colours that differ
        (``reid_reject_similarity``) rule an incident out; then 3D position, or the same
        image region within ``reacquire_s``, must agree. A match that another person,
        seen there recently and out of view now, could equally be (``reid_margin``) is
        unsure: no incident is joined, and the one this track may open is linked to it
        (``track.unsure``).
        """
        cfg = self.config
        camera = track.key[0]
        person = track.person
        pos = person.position if person is not None else None
        look = person.appearance if person is not None else ()
        best: Tuple[float, Optional[Incident]] = (math.inf, None)
        for incident in self._incidents.values():
            if not incident.open or incident.id in track.unsure:
                continue  # closed, or once unsure always unsure (the rival may be forgotten)
            # Someone else this camera sees right now (in this frame, or within 0.5 s) is a
            # different person.
            if self._in_view(incident, track, t, in_frame):
                continue
            # So is a track that was already in view while this camera saw the incident's
            # person (the bystander who stayed when the person in distress left).
            if camera in incident.last_box and track.first_t <= incident.last_box[camera][0]:
                continue
            sim = similarity(look, incident.appearance)
            if sim is not None and sim < cfg.reid_reject_similarity:
                continue
            cost = math.inf
            ipos = incident.position
            if (pos is not None and ipos is not None and pos.has_point and ipos.has_point
                    and pos.frame_id == ipos.frame_id):
                dist = math.dist(pos.xyz, ipos.xyz)
                if dist <= cfg.association_distance_m:
                    cost = dist / cfg.association_distance_m
            elif camera in incident.last_box and person is not None:
                seen_t, box, width = incident.last_box[camera]
                if t - seen_t <= cfg.reacquire_s and width > 0:
                    offset = _centre_offset(person.box, box, width)
                    if offset <= cfg.region_match:
                        cost = 1.0 + offset / max(cfg.region_match, 1e-6)
            elif incident.audio_only and t - incident.last_seen_t <= cfg.audio_person_join_s:
                cost = 2.5
            if math.isfinite(cost) and (
                    self._rival(track, incident, sim, t, in_frame)
                    or any(self._in_view(self._incidents[r], track, t, in_frame)
                           for r in incident.related_ids if r in self._incidents)):
                # Someone else could be this track, or the person of this incident may be
                # the one of a linked incident who is in view now.
                track.unsure.add(incident.id)
                self.counters['reid_unsure'] += 1
                continue
            if cost < best[0]:
                best = (cost, incident)
        return best[1]

    def _in_view(self, incident: Incident, track: _Track, t: float, in_frame) -> bool:
        """Is a track of ``incident`` (other than ``track``) seen by its camera right now?"""
        camera = track.key[0]
        return any(k[0] == camera and k != track.key and (k in in_frame or (
            k in self._tracks and self._tracks[k].seen_t >= t - 0.5)) for k in incident.tracks)

    def _rival(self, track: _Track, incident: Incident, sim: Optional[float], t: float,
               in_frame) -> bool:
        """Could another person, seen where the incident's person was, be this track?"""
        cfg = self.config
        camera = track.key[0]
        person = track.person
        if person is None:
            return False
        for key, other in itertools.chain(self._tracks.items(), self._departed.items()):
            if (key[0] != camera or key == track.key or key in incident.tracks
                    or key in in_frame or other.person is None or other.width <= 0
                    or other.seen_t >= t - 0.5 or t - other.seen_t > cfg.reid_memory_s):
                continue  # in view now (so not this track), or long gone, or another camera
            if other.incident is not None and other.incident != incident.id:
                continue  # already someone else's incident: that one competes on its own
            near = _centre_offset(person.box, other.person.box, other.width) <= cfg.region_match
            p, q = person.position, other.person.position
            if (p is not None and q is not None and p.has_point and q.has_point
                    and p.frame_id == q.frame_id):
                near = near or math.dist(p.xyz, q.xyz) <= cfg.association_distance_m
            if not near:
                continue
            other_sim = similarity(person.appearance, other.person.appearance)
            if other_sim is None or sim is None or other_sim >= sim - cfg.reid_margin:
                return True
        return False

    def _link(self, track: _Track, incident: Incident) -> None:
        if track.key not in incident.tracks and incident.tracks:
            # A re-acquired or other camera's track carries the incident's visual evidence on.
            track.score = max(track.score, incident.visual)
        track.incident = incident.id
        incident.tracks.add(track.key)
        if track.key[0]:
            incident.cameras.add(track.key[0])
        self.changed = True

    def _create(self, t: float, stamp: float, frame_id: str) -> Incident:
        incident = Incident(id=self._next_id, created_t=t, stamp=stamp, frame_id=frame_id,
                            first_seen=stamp, last_seen=stamp, last_seen_t=t)
        self._next_id += 1
        self._incidents[incident.id] = incident
        self.counters['incidents_created'] += 1
        self.changed = True
        self._limit_open(incident)
        return incident

    def _add_person(self, incident: Incident, track: _Track, t: float) -> None:
        person = track.person
        incident.person = person
        incident.person_stamp, incident.person_frame_id = track.stamp, track.frame_id
        incident.last_box[track.key[0]] = (t, tuple(person.box), track.width)
        if person.appearance:
            incident.appearance = blend(incident.appearance, person.appearance)
        if person.position is not None and (
                incident.position is None or person.position.has_point
                or not incident.position.has_point):
            incident.position = person.position
        incident.last_seen_t = max(incident.last_seen_t, t)
        incident.person_seen_t = max(incident.person_seen_t, t)
        incident.last_seen = track.stamp
        if incident.state == STALE:
            incident.state = UPDATED
        live = [self._tracks[k] for k in incident.tracks if k in self._tracks
                and t - self._tracks[k].seen_t <= self.config.audio_attach_s]
        incident.visual = max((tr.score for tr in live), default=0.0)

    def _evaluate(self, incident: Incident, t: float, stamp: float, frame_id: str
                  ) -> Optional[Alert]:
        """Recompute score and level of one incident with evidence at ``t``; maybe alert."""
        cfg = self.config
        audio, audio_reasons, help_now, source = self._audio_evidence(incident.id, t)
        visual = incident.visual
        visibly = cfg.visibly_distressed
        if help_now:
            # A call for help is explicit: DISTRESS at once (help_weight 1), EMERGENCY with a
            # visibly distressed person; its own evidence is not boosted further.
            audio = cfg.help_weight * (cfg.emergency_threshold if visual > visibly
                                       else cfg.distress_threshold)
        score = max(visual, audio)
        corroborated = visual > visibly and audio > visibly and not help_now
        if corroborated:
            # Independent channels agreeing is stronger than either alone.
            score = min(1.0, score + cfg.corroboration_boost * min(visual, audio))
        incident.score = score
        incident.stamp, incident.frame_id = stamp, frame_id
        if score >= cfg.watch_threshold or help_now:
            if incident.evidence_since_t is None:
                incident.evidence_since_t = t
            incident.calm_since_t = None
        elif score < cfg.clear_threshold:
            incident.evidence_since_t = None
            if incident.calm_since_t is None:
                incident.calm_since_t = t
        # Weak backends' visual evidence alone never goes above WATCH (weak_evidence_weight),
        # whatever the thresholds; audio, a call for help or corroboration may.
        level = max(self._level_of(score if corroborated else audio),
                    self._level_of(min(visual, self._strong_visual(incident))),
                    min(self._level_of(visual), LEVEL_WATCH))
        accumulated = (incident.evidence_since_t is not None
                       and t - incident.evidence_since_t >= cfg.min_evidence_s)
        if level > LEVEL_WATCH and not help_now and not accumulated:
            level = LEVEL_WATCH  # evidence accumulates before going above WATCH
        reasons: List[Reason] = []
        if help_now:
            reasons += [r for r in audio_reasons if r.code in (REASON_HELP, REASON_HEARD)]
        if not incident.audio_only:
            track_reasons = [self._tracks[k].reasons for k in incident.tracks
                             if k in self._tracks and self._tracks[k].reasons]
            if track_reasons:
                reasons += [r for r in max(track_reasons, key=len) if r not in reasons]
        reasons += [r for r in audio_reasons if r not in reasons]
        if incident.audio_only:
            reasons.append(Reason(REASON_NOBODY_VISIBLE, 'nobody visible'))
        if level:
            incident.reasons = reasons or [Reason(REASON_SCORE, f'distress score {score:.2f}')]
        self.changed = True
        if incident.state == NEW and incident.alerts:
            incident.state = UPDATED
        rising = level > incident.level
        first = incident.level == 0 and level > 0
        reannounce = (cfg.cooldown_s > 0 and not incident.acknowledged and level >= LEVEL_DISTRESS
                      and level == incident.level and t - incident.last_alert_t >= cfg.cooldown_s)
        if not (rising or reannounce):
            if incident.state in (ESCALATED, NEW) and incident.alerts:
                incident.state = UPDATED if not incident.acknowledged else incident.state
            return None
        incident.level = max(incident.level, level)
        if incident.rejected:
            self.counters['suppressed_rejected'] += 1
            return None
        if not first and rising:
            incident.state = ESCALATED
        elif first:
            incident.state = NEW
        incident.alerts += 1
        incident.last_alert_t = t
        self.counters['alerts'] += 1
        person = incident.person if not incident.audio_only else None
        track_id = 0
        camera = ''
        if person is not None:
            track_id, camera = int(person.track_id), person.camera
            for k in incident.tracks:
                if k in self._tracks and self._tracks[k].person is person:
                    camera = k[0]
        # The audio evidence: the window that heard the call (a call known only from its
        # transcript carries the transcript instead), or the window whose scream counted.
        cues = None
        if source is not None and help_now:
            cues = source.help_cues
        elif source is not None and audio > 0:
            cues = source.cues
        return Alert(stamp=stamp, track_id=track_id, level=level, score=float(score),
                     reasons=list(incident.reasons), person=person, audio=cues,
                     frame_id=frame_id, incident_id=incident.id, camera=camera,
                     person_stamp=incident.person_stamp,
                     person_frame_id=incident.person_frame_id,
                     transcript=source.transcript if source is not None and help_now else None)

    def _level_of(self, score: float) -> int:
        """The level a score reaches on its own (0: below WATCH)."""
        cfg = self.config
        if score >= cfg.emergency_threshold:
            return LEVEL_EMERGENCY
        if score >= cfg.distress_threshold:
            return LEVEL_DISTRESS
        if score >= cfg.watch_threshold:
            return LEVEL_WATCH
        return 0

    def is_weak(self, person: Optional[PersonEstimate]) -> bool:
        """True when ``person``'s backend declares an evidence weight below
        ``weak_evidence_weight`` (its visual evidence alone stays at WATCH or below)."""
        if person is None:
            return False
        weight = person.evidence_weight if person.evidence_weight > 0 else \
            self.config.default_evidence_weight
        return weight < self.config.weak_evidence_weight

    def _strong_visual(self, incident: Incident) -> float:
        """The incident's visual evidence from estimates of backends that are not weak."""
        tracks = [self._tracks[k] for k in incident.tracks
                  if k in self._tracks and self._tracks[k].person is not None]
        if not tracks:
            return 0.0 if self.is_weak(incident.person) else incident.visual
        return max((tr.score for tr in tracks if not self.is_weak(tr.person)), default=0.0)

    def _housekeeping(self, t: float) -> None:
        cfg = self.config
        for key in [k for k, tr in self._tracks.items() if t - tr.seen_t > cfg.track_timeout_s]:
            # Who was seen where stays known for reid_memory_s (re-identification's rivals).
            self._departed[key] = self._tracks.pop(key)
        for key in [k for k, tr in self._departed.items() if t - tr.seen_t > cfg.reid_memory_s]:
            del self._departed[key]
        for incident in list(self._incidents.values()):
            if incident.level == 0 and t - incident.last_seen_t > cfg.audio_attach_s:
                # A candidate that never reached WATCH (e.g. a short scream): no incident.
                for key in incident.tracks:
                    if key in self._tracks and self._tracks[key].incident == incident.id:
                        self._tracks[key].incident = None
                del self._incidents[incident.id]
                continue
            if not incident.open:
                if (incident.closed_t is not None and t - incident.closed_t > cfg.closed_keep_s
                        and (incident.closed_clock is None
                             or self._clock - incident.closed_clock > cfg.closed_keep_s)):
                    del self._incidents[incident.id]
                continue
            if incident.rejected:
                if incident.reject_until_t is not None and t >= incident.reject_until_t:
                    self._close(incident, t, 'rejected by operator')
                continue
            quiet = t - incident.last_seen_t
            if quiet > cfg.expire_s:
                self._close(incident, t, f'no evidence for {cfg.expire_s:.0f} s')
            elif quiet > cfg.stale_after_s and incident.state != STALE:
                incident.state = STALE
                self.changed = True
            elif (incident.calm_since_t is not None and quiet <= cfg.audio_attach_s
                  and t - incident.calm_since_t > cfg.clear_after_s):
                self._close(incident, t, f'calm for {cfg.clear_after_s:.0f} s')

    def _close(self, incident: Incident, t: float, why: str) -> None:
        incident.state = RESOLVED
        incident.resolution = why
        incident.closed_t = t
        for key in incident.tracks:
            if key in self._tracks and self._tracks[key].incident == incident.id:
                self._tracks[key].incident = None
        for audio in self._audio.values():
            if audio.target == incident.id:
                audio.target = None
        self.changed = True

    def _limit_open(self, newest: Incident) -> None:
        open_ = [inc for inc in self._incidents.values() if inc.open and inc is not newest]
        limit = self.config.max_open_incidents - 1
        while len(open_) > limit:
            victim = min(open_, key=lambda inc: (inc.level, inc.last_seen_t))
            self._close(victim, self._now, 'too many open incidents')
            open_.remove(victim)

    def _reset_camera(self, camera: str) -> None:
        """A camera's clock stepped back: its tracks start over (incidents stay)."""
        for key in [k for k in self._tracks if k[0] == camera]:
            del self._tracks[key]
        for key in [k for k in self._departed if k[0] == camera]:
            del self._departed[key]


def _centre_offset(a, b, width: float) -> float:
    """Distance between two boxes' centres, as a fraction of the image width."""
    return math.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2) / width


def _camera_of(frame: FrameResult) -> str:
    camera = getattr(frame, 'camera', '')
    if camera:
        return camera
    for person in frame.persons:
        if person.camera:
            return person.camera
    return frame.frame_id


__all__ = ['ACKNOWLEDGED', 'CONFIRMED', 'DistressFusion', 'FusionConfig', 'Incident',
           'Reason', 'REASON_CODES', 'REJECTED', 'RESOLVED']

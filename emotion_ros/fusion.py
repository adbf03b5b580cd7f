"""Distress fusion: per-track evidence over time -> distress alerts (no ROS).

Visual evidence per person is the strongest of (a) weighted scores of the
distress-related EMOTIC categories and (b) low valence. Audio evidence is a
spoken call for help (held for ``help_hold_s``) or the scream cue. Scores are
smoothed per track with an exponential moving average (time constant
``smoothing_tau_s``, so single-frame glitches do not alert), and alerts obey
hysteresis (raise above ``watch_threshold``, re-arm only after falling below
``clear_threshold``) and a per-track cooldown (no alert storms). Audio is
attributed to the visible person with the highest visual score; with nobody
visible it raises an audio-only alert (track 0).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from emotion_ros.config import field
from emotion_ros.contract import CATEGORY_INDEX, DISTRESS_CATEGORIES, vad_to_word
from emotion_ros.errors import ConfigError
from emotion_ros.types import Alert, AudioCueResult, FrameResult, PersonEstimate


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
    min_detection_confidence: float = field(
        0.3, 'Persons detected with less confidence are ignored.', min=0.0, max=1.0)
    smoothing_tau_s: float = field(
        0.7, 'Time constant (s) of the per-track moving average of the evidence.', positive=True)
    watch_threshold: float = field(
        0.45, 'Smoothed score that raises a WATCH alert (and arms hysteresis).', min=0.0, max=1.0)
    distress_threshold: float = field(
        0.6, 'Smoothed score for a DISTRESS alert.', min=0.0, max=1.0)
    emergency_threshold: float = field(
        0.8, 'Smoothed score for an EMERGENCY alert.', min=0.0, max=1.0)
    clear_threshold: float = field(
        0.3, 'A track re-arms only after its score falls below this (hysteresis).',
        min=0.0, max=1.0)
    cooldown_s: float = field(
        10.0, 'Minimum time between two alerts of the same track unless the level rises.',
        min=0.0)
    help_weight: float = field(
        1.0, 'Evidence a spoken call for help gives (1: alerts at once).',
        min=0.0, max=1.0)
    help_hold_s: float = field(
        3.0, 'How long (s) a heard call for help keeps counting as evidence.', min=0.0)
    scream_weight: float = field(
        0.8, 'Weight of the scream/cry cue.', min=0.0, max=1.0)
    audio_attach_s: float = field(
        1.5, 'A person seen within this many seconds counts as visible for audio attribution.',
        min=0.0)
    track_timeout_s: float = field(
        5.0, 'Forget a track after this long without estimates.', positive=True)

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


@dataclasses.dataclass
class _TrackState:
    score: float = 0.0
    stamp: float = -math.inf
    armed: bool = True
    last_alert_stamp: float = -math.inf
    last_alert_level: int = 0
    person: Optional[PersonEstimate] = None
    visual: float = 0.0
    visual_reasons: List[str] = dataclasses.field(default_factory=list)
    last_seen: float = -math.inf


class DistressFusion:
    """Turns per-frame person estimates and audio cues into distress alerts."""

    def __init__(self, config: FusionConfig) -> None:
        self.config = config
        self._indices = [CATEGORY_INDEX[c] for c in config.distress_categories]
        self._weights = np.asarray(config.category_weights, dtype=np.float32)
        self._tracks: Dict[int, _TrackState] = {}
        self._audio = _TrackState()  # track 0: audio evidence / audio-only alerts
        self._audio_cues: Optional[AudioCueResult] = None
        self._help_until = -math.inf
        self._help_words: List[str] = []
        self._audio_track = Alert.AUDIO_ONLY  # who the latest audio evidence is attributed to
        self._now = -math.inf

    # ----------------------------------------------------------------- evidence
    def visual_evidence(self, person: PersonEstimate) -> Tuple[float, List[str]]:
        """Visual distress evidence in [0, 1] of one estimate, with reasons (strongest first)."""
        emotion = person.emotion
        terms: List[Tuple[float, str]] = []
        scores = emotion.scores[self._indices] * self._weights
        for name, raw, weighted in zip(self.config.distress_categories,
                                       emotion.scores[self._indices], scores):
            if weighted > 0.05:
                terms.append((float(weighted), f'{name.lower()} {raw:.2f}'))
        valence = emotion.vad[0]
        if not math.isnan(valence):
            low = min(max((5.5 - valence) / 4.5, 0.0), 1.0)
            if low > 0:
                terms.append((self.config.valence_weight * low,
                              f'valence {vad_to_word(valence)} ({valence:.1f})'))
        arousal = emotion.vad[1]
        terms.sort(key=lambda t: -t[0])
        reasons = [t[1] for t in terms[:3]]
        if terms and not math.isnan(arousal) and arousal >= 7:
            reasons.append(f'arousal {vad_to_word(arousal)} ({arousal:.1f})')
        return (terms[0][0] if terms else 0.0), reasons

    def audio_evidence(self, stamp: float) -> Tuple[float, List[str]]:
        """Audio distress evidence in [0, 1] at ``stamp``, with reasons."""
        cues = self._audio_cues
        terms: List[Tuple[float, str]] = []
        if stamp <= self._help_until:
            words = ', '.join(repr(w) for w in self._help_words) or "'help'"
            terms.append((self.config.help_weight, f'spoken call for help ({words})'))
        if cues is not None and cues.scream_score > 0:
            weighted = self.config.scream_weight * cues.scream_score
            if weighted > 0.05:
                terms.append((weighted, f'scream/cry cue {cues.scream_score:.2f}'))
        terms.sort(key=lambda t: -t[0])
        return (terms[0][0] if terms else 0.0), [t[1] for t in terms]

    # ------------------------------------------------------------------- update
    def update_frame(self, frame: FrameResult) -> List[Alert]:
        """Fold one frame's person estimates in; return the alerts it raises."""
        stamp = frame.stamp
        self._now = max(self._now, stamp)
        alerts: List[Alert] = []
        for person in frame.persons:
            if person.detection_confidence < self.config.min_detection_confidence:
                continue
            state = self._tracks.setdefault(person.track_id, _TrackState())
            state.person = person
            state.last_seen = stamp
            if person.emotion.face_visible:
                state.visual, state.visual_reasons = self.visual_evidence(person)
            alert = self._step(person.track_id, state, stamp)
            if alert:
                alerts.append(alert)
        self._forget(stamp)
        return alerts

    def update_audio(self, cues: AudioCueResult) -> List[Alert]:
        """Fold one window of audio cues in; return the alerts it raises."""
        stamp = cues.stamp
        self._now = max(self._now, stamp)
        self._audio_cues = cues
        if cues.help_detected:
            self._help_until = stamp + self.config.help_hold_s
            self._help_words = list(cues.keywords)
        visible = [(tid, s) for tid, s in self._tracks.items()
                   if stamp - s.last_seen <= self.config.audio_attach_s]
        alerts: List[Alert] = []
        if visible:
            track_id, state = max(visible, key=lambda item: item[1].visual)
        else:
            track_id, state = Alert.AUDIO_ONLY, self._audio
        self._audio_track = track_id
        alert = self._step(track_id, state, stamp)
        if alert:
            alerts.append(alert)
        return alerts

    def scores(self) -> Dict[int, float]:
        """Current smoothed score per track (0 is the audio-only channel)."""
        out = {tid: s.score for tid, s in self._tracks.items()}
        out[Alert.AUDIO_ONLY] = self._audio.score
        return out

    def reset(self) -> None:
        """Forget all tracks and audio evidence."""
        self.__init__(self.config)

    # ---------------------------------------------------------------- internals
    def _step(self, track_id: int, state: _TrackState, stamp: float) -> Optional[Alert]:
        cfg = self.config
        # One microphone cannot tell who called: audio counts only for the one track it was
        # attributed to (the most visibly distressed person, or the audio-only channel).
        if track_id == self._audio_track:
            audio, audio_reasons = self.audio_evidence(stamp)
        else:
            audio, audio_reasons = 0.0, []
        visual = state.visual if track_id != Alert.AUDIO_ONLY else 0.0
        raw = max(visual, audio)
        if visual > 0.3 and audio > 0.3:
            # Independent channels agreeing is stronger than either alone.
            raw = min(1.0, raw + 0.5 * min(visual, audio))
        if state.stamp == -math.inf:
            dt = 0.0
        else:
            dt = max(stamp - state.stamp, 0.0)
        alpha = 1.0 - math.exp(-dt / cfg.smoothing_tau_s) if dt > 0 else 0.0
        if state.stamp == -math.inf:
            alpha = 1.0 - math.exp(-0.2 / cfg.smoothing_tau_s)  # first sample counts ~0.2 s
        state.score += alpha * (raw - state.score)
        state.stamp = max(state.stamp, stamp)
        # A call for help is explicit: it alerts at once, without waiting for the average.
        help_now = stamp <= self._help_until and track_id == self._audio_track
        score = max(state.score, audio if help_now else 0.0)
        if score < cfg.clear_threshold:
            state.armed = True
        level = 0
        if score >= cfg.emergency_threshold or (help_now and visual > 0.3):
            level = Alert.LEVEL_EMERGENCY
        elif score >= cfg.distress_threshold or help_now:
            level = Alert.LEVEL_DISTRESS
        elif score >= cfg.watch_threshold:
            level = Alert.LEVEL_WATCH
        if level == 0:
            return None
        cooled = stamp - state.last_alert_stamp >= cfg.cooldown_s
        escalated = level > state.last_alert_level and not state.armed
        if not (state.armed and cooled) and not escalated:
            return None
        state.armed = False
        state.last_alert_stamp = stamp
        state.last_alert_level = level
        reasons = []
        if help_now:
            reasons += [r for r in audio_reasons if 'help' in r]
        if track_id != Alert.AUDIO_ONLY:
            reasons += state.visual_reasons
        reasons += [r for r in audio_reasons if r not in reasons]
        if track_id == Alert.AUDIO_ONLY:
            reasons.append('nobody visible')
        return Alert(stamp=stamp, track_id=track_id, level=level, score=float(score),
                     reasons=reasons or [f'distress score {score:.2f}'],
                     person=state.person if track_id != Alert.AUDIO_ONLY else None,
                     audio=self._audio_cues if audio > 0 else None)

    def _forget(self, stamp: float) -> None:
        stale = [tid for tid, s in self._tracks.items()
                 if stamp - s.last_seen > self.config.track_timeout_s]
        for tid in stale:
            del self._tracks[tid]

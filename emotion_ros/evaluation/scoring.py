"""Turn recorded predictions and labels into metrics.

* **Emotions**: in every processed frame, predicted people are matched one to
  one to the labelled people in view (maximum total IoU, pairs under
  ``iou_threshold`` dropped). Each matched pair whose label has categories
  gives one sample for per-category AP / mAP; each with VAD one sample for
  the VAD mean absolute error. Unmatched predictions and labelled people give
  the detection precision and recall.
* **Distress**: an alert (of at least ``min_alert_level``) *explains* an
  episode when it falls inside it (widened by ``early_tolerance_s`` before and
  ``late_tolerance_s`` after) and concerns the right person: its box matches
  the labelled person then, or its track was matched to that person most of
  the time, or it is an audio-only alert (``audio_alerts_match_persons``).
  An episode with at least one explaining alert is detected; its time to
  alert is the first such alert's time minus the episode start. Alerts that
  explain nothing are false alerts; those of one track closer than
  ``false_alert_merge_s`` to the previous one count once. Precision is
  detected episodes / (detected episodes + false alerts), recall is detected
  episodes / episodes.
"""

from __future__ import annotations

import array
import collections
import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.config.schema import field
from emotion_ros.llm.contract import CATEGORIES, CATEGORY_INDEX, NUM_CATEGORIES
from emotion_ros.evaluation.labels import Labels
from emotion_ros.types import LEVEL_DISTRESS, LEVEL_EMERGENCY, LEVEL_NAMES, LEVEL_WATCH
from emotion_ros.evaluation.matching import match_boxes
from emotion_ros.evaluation.records import AlertRecord, FrameRecord


def parse_level(text: Any) -> int:
    """An alert level from its name (watch, distress, emergency; any case) or number.

    Raises:
        ValueError: naming the known levels.
    """
    by_name = {name.lower(): level for level, name in LEVEL_NAMES.items()}
    word = str(text).strip().lower()
    if word in by_name:
        return by_name[word]
    if word.isdigit() and int(word) in LEVEL_NAMES:
        return int(word)
    raise ValueError(f'unknown alert level {text!r}; known: '
                     + ', '.join(f'{n.lower()} ({v})' for v, n in sorted(LEVEL_NAMES.items())))


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """How predictions are matched to labels and alerts to episodes."""

    iou_threshold: float = field(
        0.3, 'A predicted person matches a labelled one when their boxes overlap at least this '
        'much (IoU). Lenient by default because the CPU detector extrapolates body boxes from '
        'faces.', min=0.01, max=1.0)
    min_alert_level: int = field(
        LEVEL_DISTRESS, 'Alerts below this level are ignored ('
        + ', '.join(f'{level} {LEVEL_NAMES[level]}' for level in sorted(LEVEL_NAMES)) + ').',
        choices=(LEVEL_WATCH, LEVEL_DISTRESS, LEVEL_EMERGENCY))
    early_tolerance_s: float = field(
        0.5, 'An alert up to this long before a labelled episode start still counts '
        '(labels are not frame-exact).', min=0.0)
    late_tolerance_s: float = field(
        2.0, 'An alert up to this long after a labelled episode end still counts.', min=0.0)
    false_alert_merge_s: float = field(
        10.0, 'False alerts of one track closer than this to its previous one count once.',
        min=0.0)
    audio_alerts_match_persons: bool = field(
        True, "An audio-only alert (track 0) may explain a person's episode (the person may "
        'call for help before being detected).')
    label_time_tolerance_s: float = field(
        1.0, 'Labels may reach this far past the last message of the bag.', min=0.0)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _nan_to_none(value.item())
    return value


def to_json_safe(value: Any) -> Any:
    """Replace NaN/inf by None (strict JSON) and numpy scalars by Python numbers."""
    return _nan_to_none(value)


def summarize(values: Sequence[float]) -> Dict[str, Any]:
    """Count, mean, median, p95 and max of the finite values (NaN when there are none)."""
    arr = np.asarray(values, np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {'count': 0, 'mean': math.nan, 'median': math.nan, 'p95': math.nan,
                'max': math.nan}
    return {'count': int(arr.size), 'mean': float(arr.mean()), 'median': float(np.median(arr)),
            'p95': float(np.percentile(arr, 95)), 'max': float(arr.max())}


def categories_to_vector(categories: Sequence[str]) -> np.ndarray:
    """26-dim 0/1 vector of a list of category names."""
    vec = np.zeros(NUM_CATEGORIES, np.float32)
    for name in categories:
        vec[CATEGORY_INDEX[name]] = 1.0
    return vec


class Scorer:
    """Accumulates frames and alerts (streamed, in time order) and computes the metrics."""

    def __init__(self, labels: Labels, config: EvalConfig = EvalConfig()) -> None:
        """Score against ``labels`` (times already relative to the bag start)."""
        self.labels = labels
        self.config = config
        # Flat typed arrays (not lists of objects): ~180 bytes per sample, so
        # hours of mission stay a few MB.
        self._y_true = array.array('B')
        self._y_score = array.array('f')
        self._vad_true = array.array('d')
        self._vad_pred = array.array('d')
        self._samples = 0
        self._tp = self._fp = self._fn = 0
        self._frames = 0
        self._face_visible = 0
        self._matched_persons = 0
        self._track_votes: Dict[int, collections.Counter] = collections.defaultdict(
            collections.Counter)
        self._alerts: List[AlertRecord] = []
        self._alert_person: List[Optional[str]] = []
        self._first_seen: Dict[str, float] = {}

    # -------------------------------------------------------------- streaming
    def add_frame(self, frame: FrameRecord) -> None:
        """Match one processed frame's people to the labels in view then."""
        self._frames += 1
        visible = self.labels.visible_at(frame.t)
        pairs = match_boxes([p.box for p in frame.persons], [v.box for v in visible],
                            self.config.iou_threshold)
        self._tp += len(pairs)
        self._fp += len(frame.persons) - len(pairs)
        self._fn += len(visible) - len(pairs)
        for i, j, _ in pairs:
            person, label = frame.persons[i], visible[j]
            self._track_votes[person.track_id][label.person_id] += 1
            self._first_seen.setdefault(label.person_id, frame.t)
            self._matched_persons += 1
            self._face_visible += int(person.face_visible)
            if label.categories is not None:
                self._y_true.extend(categories_to_vector(label.categories).astype(np.uint8))
                self._y_score.extend(np.asarray(person.scores, np.float32))
                self._samples += 1
            if label.vad is not None:
                self._vad_true.extend(label.vad)
                self._vad_pred.extend(person.vad)

    def add_alert(self, alert: AlertRecord) -> None:
        """Record an alert; which person it concerns is resolved from its box now."""
        person: Optional[str] = None
        if alert.box is not None:
            visible = self.labels.visible_at(alert.t)
            pairs = match_boxes([alert.box], [v.box for v in visible], self.config.iou_threshold)
            if pairs:
                person = visible[pairs[0][1]].person_id
        self._alerts.append(alert)
        self._alert_person.append(person)

    # ---------------------------------------------------------------- results
    def track_to_person(self) -> Dict[int, str]:
        """Map each predicted track to the labelled person it matched most often."""
        return {track: votes.most_common(1)[0][0]
                for track, votes in self._track_votes.items() if votes}

    def emotion_metrics(self) -> Dict[str, Any]:
        """mAP, per-category AP and VAD errors over matched (person, frame) samples."""
        from emotion_ros.evaluation.metrics import mean_average_precision, vad_mae
        out: Dict[str, Any] = {'samples': self._samples,
                               'vad_samples': len(self._vad_true) // 3}
        arrays = self.emotion_arrays()
        if arrays is not None:
            y_true, y_score = arrays
            m_ap, per_category = mean_average_precision(y_true, y_score)
            out['mAP'] = float(m_ap)
            out['per_category_ap'] = {c: float(per_category.get(c, math.nan))
                                      for c in CATEGORIES}
            out['categories_without_positives'] = [
                c for c in CATEGORIES if not y_true[:, CATEGORY_INDEX[c]].any()]
            # With no negative sample any ranking is perfect: AP 1 says nothing.
            out['categories_without_negatives'] = [
                c for c in CATEGORIES if y_true[:, CATEGORY_INDEX[c]].all()]
        else:
            out['mAP'] = math.nan
            out['per_category_ap'] = {c: math.nan for c in CATEGORIES}
            out['categories_without_positives'] = list(CATEGORIES)
            out['categories_without_negatives'] = []
        if self._vad_true:
            vad_true = np.frombuffer(self._vad_true, np.float64).reshape(-1, 3)
            vad_pred = np.frombuffer(self._vad_pred, np.float64).reshape(-1, 3)
            out['vad_mae'] = {k: float(v) for k, v in vad_mae(vad_true, vad_pred).items()}
            out['vad_predicted_fraction'] = float(np.mean(np.isfinite(vad_pred).all(axis=1)))
        else:
            out['vad_mae'] = {}
            out['vad_predicted_fraction'] = math.nan
        out['face_visible_fraction'] = (self._face_visible / self._matched_persons
                                        if self._matched_persons else math.nan)
        return out

    def emotion_arrays(self) -> Optional[tuple]:
        """``(y_true, y_score)`` of the emotion samples, for plots (None without samples)."""
        if not self._samples:
            return None
        return (np.frombuffer(self._y_true, np.uint8).reshape(-1, NUM_CATEGORIES)
                .astype(np.float64),
                np.frombuffer(self._y_score, np.float32).reshape(-1, NUM_CATEGORIES))

    def detection_metrics(self) -> Dict[str, Any]:
        """Person detection precision and recall over processed frames (at the IoU threshold)."""
        tp, fp, fn = self._tp, self._fp, self._fn
        return {'frames': self._frames, 'matched': tp, 'false_positives': fp, 'missed': fn,
                'precision': tp / (tp + fp) if tp + fp else math.nan,
                'recall': tp / (tp + fn) if tp + fn else math.nan,
                'tracks': len(self._track_votes),
                'track_to_person': {str(k): v for k, v in self.track_to_person().items()},
                'first_seen_s': dict(self._first_seen)}

    def _alert_persons(self) -> List[Optional[str]]:
        mapping = self.track_to_person()
        return [person if person is not None else mapping.get(alert.track_id)
                for alert, person in zip(self._alerts, self._alert_person)]

    def distress_metrics(self, window: Tuple[float, float]) -> Dict[str, Any]:
        """Episode precision / recall / F1, time to alert and false alerts per hour.

        Args:
            window: the scored time range (s from the bag start); episodes
                starting outside it are left out, alerts outside it ignored.
        """
        cfg = self.config
        lo, hi = window
        episodes = [(k, e) for k, e in enumerate(self.labels.episodes)
                    if lo - cfg.early_tolerance_s <= e.start <= hi]
        first_alert: Dict[int, float] = {}
        alert_rows: List[Dict[str, Any]] = []
        false_times: Dict[int, float] = {}
        false_events = 0
        counted = 0
        for alert, person in zip(self._alerts, self._alert_persons()):
            row = {**alert.to_json(), 'person': person, 'episodes': [], 'counted': False,
                   'false_alert': False}
            alert_rows.append(row)
            if alert.level < cfg.min_alert_level or not lo <= alert.t <= hi + 1e-6:
                continue
            row['counted'] = True
            counted += 1
            for k, episode in episodes:
                if not (episode.start - cfg.early_tolerance_s <= alert.t
                        <= episode.end + cfg.late_tolerance_s):
                    continue
                if episode.person is not None and person != episode.person and not (
                        alert.track_id == 0 and cfg.audio_alerts_match_persons):
                    continue
                row['episodes'].append(k)
                first_alert.setdefault(k, alert.t)
            if not row['episodes']:
                previous = false_times.get(alert.track_id)
                if previous is None or alert.t - previous > cfg.false_alert_merge_s:
                    false_events += 1
                    row['false_alert'] = True
                false_times[alert.track_id] = alert.t
        detected = len(first_alert)
        latencies = [first_alert[k] - e.start for k, e in episodes if k in first_alert]
        precision = detected / (detected + false_events) if detected + false_events else math.nan
        recall = detected / len(episodes) if episodes else math.nan
        if math.isnan(precision) or math.isnan(recall) or precision + recall == 0:
            f1 = math.nan if math.isnan(precision) or math.isnan(recall) else 0.0
        else:
            f1 = 2 * precision * recall / (precision + recall)
        hours = (hi - lo) / 3600.0
        per_episode = [{'index': k, 'start': e.start, 'end': e.end, 'person': e.person,
                        'note': e.note, 'detected': k in first_alert,
                        'time_to_alert_s': (first_alert[k] - e.start) if k in first_alert
                        else None}
                       for k, e in episodes]
        return {'episodes': len(episodes),
                'episodes_outside_window': len(self.labels.episodes) - len(episodes),
                'detected': detected, 'missed': len(episodes) - detected,
                'recall': recall, 'precision': precision, 'f1': f1,
                'alerts': len(self._alerts), 'alerts_counted': counted,
                'min_alert_level': cfg.min_alert_level,
                'false_alerts': false_events,
                'false_alerts_per_hour': false_events / hours if hours > 0 else math.nan,
                'time_to_alert_s': summarize(latencies),
                'per_episode': per_episode, 'alert_list': alert_rows}

    def incident_metrics(self, window: Tuple[float, float]) -> Dict[str, Any]:
        """Incidents against episodes and labelled persons (duplicates, location, timing).

        An incident is the set of alerts with one ``incident_id`` (records without one
        count as an incident each). Per episode: how many alerts and how many distinct
        incidents explain it (more than one incident is a duplicate), the time from its
        start to its first alert of any level. Per labelled person: the incidents whose
        alerts concern them. Localisation error: distance between an alert's 3D position
        and the labelled position of its person then (same frame). A false incident
        explains no episode; false incidents per hour over the window.
        """
        cfg = self.config
        lo, hi = window
        episodes = [(k, e) for k, e in enumerate(self.labels.episodes)
                    if lo - cfg.early_tolerance_s <= e.start <= hi]
        incident_alerts: Dict[int, List[int]] = collections.defaultdict(list)
        persons = self._alert_persons()
        for i, alert in enumerate(self._alerts):
            if not lo <= alert.t <= hi + 1e-6:
                continue
            key = alert.incident_id if alert.incident_id else -(i + 1)
            incident_alerts[key].append(i)
        per_episode = []
        explained: set = set()
        for k, episode in episodes:
            alerts, incidents, first = 0, set(), None
            for key, indices in incident_alerts.items():
                for i in indices:
                    alert, person = self._alerts[i], persons[i]
                    if not (episode.start - cfg.early_tolerance_s <= alert.t
                            <= episode.end + cfg.late_tolerance_s):
                        continue
                    if episode.person is not None and person != episode.person and not (
                            alert.track_id == 0 and cfg.audio_alerts_match_persons):
                        continue
                    alerts += 1
                    incidents.add(key)
                    first = alert.t if first is None else min(first, alert.t)
            explained |= incidents
            per_episode.append({'index': k, 'person': episode.person, 'alerts': alerts,
                                'incidents': len(incidents),
                                'duplicates': max(0, len(incidents) - 1),
                                'time_to_first_alert_s': None if first is None
                                else first - episode.start})
        per_person: Dict[str, set] = collections.defaultdict(set)
        errors: List[float] = []
        for key, indices in incident_alerts.items():
            for i in indices:
                alert, person = self._alerts[i], persons[i]
                if person is None:
                    continue
                per_person[person].add(key)
                truth = self.labels.position_of(person, alert.t)
                frame_ok = (not self.labels.position_frame or not alert.position_frame
                            or alert.position_frame == self.labels.position_frame)
                if alert.position is not None and truth is not None and frame_ok:
                    errors.append(math.dist(alert.position, truth))
        false_incidents = [key for key in incident_alerts if key not in explained]
        hours = (hi - lo) / 3600.0
        detected = [e for e in per_episode if e['incidents']]
        return {'incidents': len(incident_alerts),
                'incidents_explaining_episodes': len(explained),
                'false_incidents': len(false_incidents),
                'false_incidents_per_hour': (len(false_incidents) / hours if hours > 0
                                             else math.nan),
                'incidents_per_episode': summarize([e['incidents'] for e in detected]),
                'alerts_per_episode': summarize([e['alerts'] for e in detected]),
                'episodes_with_duplicates': sum(1 for e in per_episode if e['duplicates']),
                'incidents_per_person': {p: len(keys) for p, keys in sorted(per_person.items())},
                'time_to_first_alert_s': summarize([e['time_to_first_alert_s']
                                                    for e in detected]),
                'localisation_error_m': summarize(errors),
                'localisation_within_5m': (sum(1 for e in errors if e <= 5.0) / len(errors)
                                           if errors else math.nan),
                'per_episode': per_episode}

"""The labels format of a recorded mission: who is where, what they feel, when they need help.

A labels file (YAML or JSON, documented in ``docs/evaluation.md``) holds

* ``persons``: each with an ``id``, time ``spans`` in which the person is in
  view, with a constant ``box`` or a ``track`` of keyframes (linearly
  interpolated), and optionally the EMOTIC ``categories`` and ``vad`` (1-10)
  of the person, per person or per span;
* ``episodes``: distress episodes (``start``, ``end``, and the ``person``
  in distress, or none for an episode only heard, such as a voice calling
  from rubble).

Times are seconds from the bag's first message (``time: relative``, the
default) or ROS time in seconds (``time: absolute``); ``'1:05.5'`` strings
mean minutes:seconds. Everything is validated when loaded; a mistake raises
:class:`~emotion_ros.errors.InputError` (kind ``labels``) naming the entry.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from emotion_ros.llm.contract import CATEGORIES, VAD_MAX, VAD_MIN
from emotion_ros.errors import InputError
from emotion_ros.types import Box

LABELS_FORMAT = 'emotion_ros.labels/1'
TIME_BASES = ('relative', 'absolute')
_CATEGORY_BY_KEY = {name.lower(): name for name in CATEGORIES}


def _error(where: str, message: str) -> InputError:
    return InputError(f'{where}: {message}', kind='labels')


@dataclasses.dataclass(frozen=True)
class Keyframe:
    """A labelled box at one time."""

    t: float
    box: Box


@dataclasses.dataclass(frozen=True)
class Span:
    """A time interval in which a person is in view, with their box over time."""

    start: float
    end: float
    keyframes: Tuple[Keyframe, ...]
    categories: Optional[Tuple[str, ...]] = None  # None: the person's labels apply
    vad: Optional[Tuple[float, float, float]] = None
    # Where the person is in this span: x, y, z in metres in the labels' position_frame.
    position: Optional[Tuple[float, float, float]] = None

    def contains(self, t: float) -> bool:
        """Tell whether ``t`` lies in [start, end]."""
        return self.start <= t <= self.end

    def box_at(self, t: float) -> Box:
        """Return the box at ``t``, interpolated between keyframes (held at the ends)."""
        frames = self.keyframes
        if len(frames) == 1 or t <= frames[0].t:
            return frames[0].box
        if t >= frames[-1].t:
            return frames[-1].box
        for before, after in zip(frames, frames[1:]):
            if before.t <= t <= after.t:
                w = (t - before.t) / (after.t - before.t) if after.t > before.t else 0.0
                box = tuple(a + w * (b - a) for a, b in zip(before.box, after.box))
                return box  # type: ignore[return-value]
        return frames[-1].box


@dataclasses.dataclass(frozen=True)
class LabelledPerson:
    """One labelled person."""

    id: str
    spans: Tuple[Span, ...]
    categories: Optional[Tuple[str, ...]] = None  # None: emotions not labelled
    vad: Optional[Tuple[float, float, float]] = None
    note: str = ''


@dataclasses.dataclass(frozen=True)
class Visible:
    """A labelled person in view at one time, with the labels that apply then."""

    person_id: str
    box: Box
    categories: Optional[Tuple[str, ...]]
    vad: Optional[Tuple[float, float, float]]
    position: Optional[Tuple[float, float, float]] = None


@dataclasses.dataclass(frozen=True)
class Episode:
    """A time interval in which someone needs help (a person, or only a voice)."""

    start: float
    end: float
    person: Optional[str] = None  # None: audio-only episode
    note: str = ''

    @property
    def audio_only(self) -> bool:
        """True when nobody is labelled as the person in distress."""
        return self.person is None


@dataclasses.dataclass(frozen=True)
class Labels:
    """All labels of one bag, times in seconds from the bag's first message once resolved."""

    persons: Dict[str, LabelledPerson]
    episodes: Tuple[Episode, ...]
    time: str = 'relative'
    image_topic: str = ''
    audio_topic: str = ''
    source: str = ''
    #: Frame of the span positions (e.g. the camera optical frame, or map); '' when the
    #: positions are in whatever frame the predictions use.
    position_frame: str = ''

    def position_of(self, person_id: str, t: float) -> Optional[Tuple[float, float, float]]:
        """The labelled position of a person at ``t`` (their span's), or None."""
        person = self.persons.get(person_id)
        if person is None:
            return None
        for span in person.spans:
            if span.contains(t):
                return span.position
        return None

    def visible_at(self, t: float) -> List[Visible]:
        """List the labelled persons in view at ``t`` (relative time)."""
        out: List[Visible] = []
        for person in self.persons.values():
            for span in person.spans:
                if span.contains(t):
                    cats = span.categories if span.categories is not None else person.categories
                    vad = span.vad if span.vad is not None else person.vad
                    out.append(Visible(person.id, span.box_at(t), cats, vad, span.position))
                    break
        return out

    def time_range(self) -> Tuple[float, float]:
        """Earliest and latest time any label refers to (0, 0 when there are none)."""
        times: List[float] = []
        for person in self.persons.values():
            for span in person.spans:
                times += [span.start, span.end]
        for episode in self.episodes:
            times += [episode.start, episode.end]
        return (min(times), max(times)) if times else (0.0, 0.0)

    def shifted(self, offset: float) -> 'Labels':
        """Return a copy with every time moved by ``-offset`` (absolute -> relative)."""
        def span(s: Span) -> Span:
            return dataclasses.replace(
                s, start=s.start - offset, end=s.end - offset,
                keyframes=tuple(Keyframe(k.t - offset, k.box) for k in s.keyframes))
        persons = {pid: dataclasses.replace(p, spans=tuple(span(s) for s in p.spans))
                   for pid, p in self.persons.items()}
        episodes = tuple(dataclasses.replace(e, start=e.start - offset, end=e.end - offset)
                         for e in self.episodes)
        return dataclasses.replace(self, persons=persons, episodes=episodes, time='relative')

    def resolve(self, bag_start_s: float, bag_duration_s: float,
                tolerance_s: float = 1.0) -> 'Labels':
        """Convert to times relative to the bag start and check they fall inside the bag.

        Args:
            bag_start_s: receive time of the bag's first message (s).
            bag_duration_s: time from the first to the last message (s).
            tolerance_s: how far past the end a label may reach (last frame period).

        Raises:
            InputError: naming the first label outside the bag.
        """
        labels = self.shifted(bag_start_s) if self.time == 'absolute' else self
        limit = bag_duration_s + tolerance_s
        where = self.source or 'labels'
        for person in labels.persons.values():
            for i, span in enumerate(person.spans):
                if span.start < -tolerance_s or span.start > limit:
                    raise _error(where, f'person {person.id!r} span {i} starts at '
                                 f'{span.start:.2f} s, outside the bag (0 to '
                                 f'{bag_duration_s:.2f} s){_hint(self.time)}')
        for i, episode in enumerate(labels.episodes):
            if episode.start < -tolerance_s or episode.start > limit:
                raise _error(where, f'episode {i} starts at {episode.start:.2f} s, outside the '
                             f'bag (0 to {bag_duration_s:.2f} s){_hint(self.time)}')
        return labels


def _hint(time_base: str) -> str:
    if time_base == 'relative':
        return '; times are seconds from the first message (use time: absolute for ROS time)'
    return '; times are absolute ROS time in seconds (use time: relative for bag time)'


# ------------------------------------------------------------------ parsing
def parse_time(value: Any, where: str) -> float:
    """Seconds from a number or an ``'m:ss.s'`` / ``'h:mm:ss'`` string.

    Raises:
        InputError: for anything else, NaN or infinity.
    """
    if isinstance(value, bool):
        raise _error(where, f'expected a time in seconds, got {value!r}')
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            parts = [float(p) for p in value.strip().split(':')]
        except ValueError:
            raise _error(where, f'expected seconds or m:ss, got {value!r}') from None
        if not 1 <= len(parts) <= 3:
            raise _error(where, f'expected seconds or m:ss, got {value!r}')
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60.0 + part
    else:
        raise _error(where, f'expected a time in seconds, got {value!r}')
    if not math.isfinite(seconds):
        raise _error(where, f'time must be finite, got {value!r}')
    return seconds


def _parse_box(value: Any, where: str) -> Box:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise _error(where, f'a box is [x_min, y_min, x_max, y_max] in pixels, got {value!r}')
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise _error(where, f'box values must be numbers, got {value!r}') from None
    if not all(math.isfinite(v) for v in box):
        raise _error(where, f'box values must be finite, got {value!r}')
    if not (box[2] > box[0] and box[3] > box[1]):
        raise _error(where, f'box needs x_max > x_min and y_max > y_min, got {value!r}')
    return box  # type: ignore[return-value]


def _parse_categories(value: Any, where: str) -> Optional[Tuple[str, ...]]:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise _error(where, f'categories must be a list of EMOTIC category names, got {value!r}')
    out = []
    for name in value:
        key = str(name).strip().lower()
        if key not in _CATEGORY_BY_KEY:
            raise _error(where, f'unknown EMOTIC category {name!r}; known: {list(CATEGORIES)}')
        out.append(_CATEGORY_BY_KEY[key])
    return tuple(sorted(set(out), key=CATEGORIES.index))


def _parse_vad(value: Any, where: str) -> Optional[Tuple[float, float, float]]:
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = [value.get(k, value.get(k.lower())) for k in ('Valence', 'Arousal', 'Dominance')]
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise _error(where, f'vad is [valence, arousal, dominance] on 1-10, got {value!r}')
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _error(where, f'vad values must be finite numbers on 1-10, got {value!r}')
        if not VAD_MIN <= float(v) <= VAD_MAX:
            raise _error(where, f'vad values must be on {VAD_MIN:g}-{VAD_MAX:g}, got {value!r}')
        out.append(float(v))
    return (out[0], out[1], out[2])


def _check_keys(entry: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise _error(where, f'unknown keys {unknown}; allowed: {list(allowed)}')


def _parse_interval(entry: Mapping, where: str) -> Tuple[float, float]:
    """The required ``start`` < ``end`` of a span or episode, in seconds."""
    for key in ('start', 'end'):
        if key not in entry:
            raise _error(where, f'missing {key!r}')
    start = parse_time(entry['start'], f'{where}.start')
    end = parse_time(entry['end'], f'{where}.end')
    if not end > start:
        raise _error(where, f'end ({end}) must be after start ({start})')
    return start, end


def _parse_span(entry: Any, where: str) -> Span:
    if not isinstance(entry, Mapping):
        raise _error(where, f'a span is a mapping with start, end and box or track, got {entry!r}')
    _check_keys(entry, ('start', 'end', 'box', 'track', 'categories', 'vad', 'position',
                        'note'), where)
    start, end = _parse_interval(entry, where)
    if ('box' in entry) == ('track' in entry):
        raise _error(where, 'give either box (constant) or track (keyframes), not both or none')
    if 'box' in entry:
        keyframes: Tuple[Keyframe, ...] = (Keyframe(start, _parse_box(entry['box'],
                                                                      f'{where}.box')),)
    else:
        track = entry['track']
        if not isinstance(track, (list, tuple)) or not track:
            raise _error(where, 'track must be a non-empty list of {t, box} keyframes')
        frames = []
        for k, item in enumerate(track):
            kwhere = f'{where}.track[{k}]'
            if not isinstance(item, Mapping) or set(item) != {'t', 'box'}:
                raise _error(kwhere, f'a keyframe is {{t: seconds, box: [...]}}, got {item!r}')
            t = parse_time(item['t'], f'{kwhere}.t')
            if not start - 1e-9 <= t <= end + 1e-9:
                raise _error(kwhere, f'keyframe time {t} is outside its span [{start}, {end}]')
            frames.append(Keyframe(t, _parse_box(item['box'], f'{kwhere}.box')))
        times = [f.t for f in frames]
        if times != sorted(times):
            raise _error(where, f'track keyframes must be in time order, got times {times}')
        keyframes = tuple(frames)
    return Span(start, end, keyframes, _parse_categories(entry.get('categories'),
                                                         f'{where}.categories'),
                _parse_vad(entry.get('vad'), f'{where}.vad'),
                _parse_position(entry.get('position'), f'{where}.position'))


def _parse_position(value: Any, where: str) -> Optional[Tuple[float, float, float]]:
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) for v in value)):
        raise _error(where, f'a position is [x, y, z] in metres, got {value!r}')
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def labels_from_dict(data: Any, source: str = 'labels') -> Labels:
    """Validate a parsed labels document and build :class:`Labels`.

    Raises:
        InputError: ``labels`` naming the entry that is wrong and why.
    """
    if not isinstance(data, Mapping):
        raise _error(source, 'a labels file is a mapping with persons and episodes')
    _check_keys(data, ('format', 'time', 'image_topic', 'audio_topic', 'persons', 'episodes',
                       'position_frame', 'note'), source)
    fmt = data.get('format', LABELS_FORMAT)
    if fmt != LABELS_FORMAT:
        raise _error(source, f'format {fmt!r} is not supported (expected {LABELS_FORMAT!r})')
    time_base = data.get('time', 'relative')
    if time_base not in TIME_BASES:
        raise _error(source, f'time must be one of {list(TIME_BASES)}, got {time_base!r}')
    persons: Dict[str, LabelledPerson] = {}
    raw_persons = data.get('persons') or []
    if not isinstance(raw_persons, (list, tuple)):
        raise _error(source, 'persons must be a list')
    for i, entry in enumerate(raw_persons):
        where = f'{source}: persons[{i}]'
        if not isinstance(entry, Mapping):
            raise _error(where, f'a person is a mapping with id and spans, got {entry!r}')
        _check_keys(entry, ('id', 'spans', 'categories', 'vad', 'note'), where)
        if 'id' not in entry or entry['id'] is None or str(entry['id']) == '':
            raise _error(where, 'missing id')
        pid = str(entry['id'])
        where = f'{source}: person {pid!r}'
        if pid in persons:
            raise _error(where, 'duplicate person id')
        raw_spans = entry.get('spans')
        if not isinstance(raw_spans, (list, tuple)) or not raw_spans:
            raise _error(where, 'needs a non-empty list of spans')
        spans = sorted((_parse_span(s, f'{where} span {k}') for k, s in enumerate(raw_spans)),
                       key=lambda s: s.start)
        for a, b in zip(spans, spans[1:]):
            if b.start < a.end:
                raise _error(where, f'spans overlap ([{a.start}, {a.end}] and '
                             f'[{b.start}, {b.end}])')
        persons[pid] = LabelledPerson(
            id=pid, spans=tuple(spans),
            categories=_parse_categories(entry.get('categories'), f'{where}.categories'),
            vad=_parse_vad(entry.get('vad'), f'{where}.vad'), note=str(entry.get('note', '')))
    episodes: List[Episode] = []
    raw_episodes = data.get('episodes') or []
    if not isinstance(raw_episodes, (list, tuple)):
        raise _error(source, 'episodes must be a list')
    for i, entry in enumerate(raw_episodes):
        where = f'{source}: episodes[{i}]'
        if not isinstance(entry, Mapping):
            raise _error(where, f'an episode is a mapping with start, end, person, got {entry!r}')
        _check_keys(entry, ('start', 'end', 'person', 'note'), where)
        start, end = _parse_interval(entry, where)
        person = entry.get('person')
        if person is not None:
            person = str(person)
            if person not in persons:
                raise _error(where, f'unknown person {person!r}; labelled persons: '
                             f'{sorted(persons)} (leave person out for an audio-only episode)')
        episodes.append(Episode(start, end, person, str(entry.get('note', ''))))
    episodes.sort(key=lambda e: e.start)
    return Labels(persons=persons, episodes=tuple(episodes), time=time_base,
                  image_topic=str(data.get('image_topic') or ''),
                  audio_topic=str(data.get('audio_topic') or ''), source=source,
                  position_frame=str(data.get('position_frame') or ''))


def load_labels(path: Union[str, 'os.PathLike[str]']) -> Labels:
    """Read and validate a labels file (``.yaml``/``.yml`` or ``.json``).

    Raises:
        InputError: ``labels`` when the file is missing, unparsable or invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f'labels file not found: {path}', kind='labels')
    text = path.read_text(encoding='utf-8')
    try:
        if path.suffix.lower() == '.json':
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError and json.JSONDecodeError share no base
        raise InputError(f'{path}: cannot parse labels: {exc}', kind='labels') from exc
    return labels_from_dict(data, source=str(path))


def labels_to_dict(labels: Labels) -> Dict[str, Any]:
    """Turn labels into a plain document (what ``load_labels`` reads back)."""
    def span(s: Span) -> Dict[str, Any]:
        out: Dict[str, Any] = {'start': s.start, 'end': s.end}
        if len(s.keyframes) == 1 and s.keyframes[0].t == s.start:
            out['box'] = list(s.keyframes[0].box)
        else:
            out['track'] = [{'t': k.t, 'box': list(k.box)} for k in s.keyframes]
        if s.categories is not None:
            out['categories'] = list(s.categories)
        if s.vad is not None:
            out['vad'] = list(s.vad)
        if s.position is not None:
            out['position'] = list(s.position)
        return out

    persons = []
    for p in labels.persons.values():
        entry: Dict[str, Any] = {'id': p.id, 'spans': [span(s) for s in p.spans]}
        if p.categories is not None:
            entry['categories'] = list(p.categories)
        if p.vad is not None:
            entry['vad'] = list(p.vad)
        if p.note:
            entry['note'] = p.note
        persons.append(entry)
    episodes = []
    for e in labels.episodes:
        item: Dict[str, Any] = {'start': e.start, 'end': e.end}
        if e.person is not None:
            item['person'] = e.person
        if e.note:
            item['note'] = e.note
        episodes.append(item)
    doc: Dict[str, Any] = {'format': LABELS_FORMAT, 'time': labels.time}
    if labels.image_topic:
        doc['image_topic'] = labels.image_topic
    if labels.audio_topic:
        doc['audio_topic'] = labels.audio_topic
    if labels.position_frame:
        doc['position_frame'] = labels.position_frame
    doc['persons'] = persons
    doc['episodes'] = episodes
    return doc


def save_labels(labels: Labels, path: Union[str, 'os.PathLike[str]']) -> None:
    """Write labels as YAML (or JSON when ``path`` ends in .json)."""
    path = Path(path)
    doc = labels_to_dict(labels)
    if path.suffix.lower() == '.json':
        path.write_text(json.dumps(doc, indent=2) + '\n', encoding='utf-8')
    else:
        import yaml
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding='utf-8')

"""What an evaluation run records, and how it is stored (JSON lines, readable after a crash).

Each processed frame, audio cue window, alert and distress-score sample is
appended to its own ``.jsonl`` file in the output folder as soon as it
exists, one JSON object per line, flushed at once. A run that dies leaves
complete lines behind (a half-written last line is skipped on reading), so
metrics can be recomputed from the folder with ``emotion-ros evaluate
--report-only``. NaN is stored as ``null``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Dict, IO, Iterator, List, Optional, Tuple, Type, TypeVar

from emotion_ros.types import Alert, AudioCueResult, FrameResult

FRAMES_FILE = 'frames.jsonl'
CUES_FILE = 'audio_cues.jsonl'
TRANSCRIPTS_FILE = 'transcripts.jsonl'
ALERTS_FILE = 'alerts.jsonl'
SCORES_FILE = 'scores.jsonl'
TIMINGS_FILE = 'timings.jsonl'

T = TypeVar('T')


def _num(value: float) -> Optional[float]:
    value = float(value)
    return value if math.isfinite(value) else None


def _unnum(value: Optional[float]) -> float:
    return math.nan if value is None else float(value)


@dataclasses.dataclass
class PersonRecord:
    """One predicted person in one processed frame."""

    track_id: int
    box: Tuple[float, float, float, float]
    confidence: float
    scores: List[float]  # 26, contract order
    vad: Tuple[float, float, float]  # NaN when unknown
    face_visible: bool

    def to_json(self) -> Dict[str, Any]:
        """Plain JSON-able dict."""
        return {'track_id': self.track_id, 'box': [round(v, 2) for v in self.box],
                'confidence': round(self.confidence, 4),
                'scores': [round(float(s), 5) for s in self.scores],
                'vad': [_num(v) for v in self.vad], 'face_visible': self.face_visible}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> 'PersonRecord':
        """Inverse of ``to_json``."""
        return cls(int(d['track_id']), tuple(float(v) for v in d['box']),  # type: ignore
                   float(d['confidence']), [float(s) for s in d['scores']],
                   tuple(_unnum(v) for v in d['vad']), bool(d['face_visible']))  # type: ignore


@dataclasses.dataclass
class FrameRecord:
    """A processed camera frame: its time and the people the pipeline reported."""

    t: float  # seconds from the bag's first message
    stamp: float  # the image's own stamp (s)
    width: int
    height: int
    persons: List[PersonRecord]
    timings_ms: Dict[str, float]

    @classmethod
    def from_result(cls, result: FrameResult, t: float,
                    timings_ms: Optional[Dict[str, float]] = None) -> 'FrameRecord':
        """Record a pipeline FrameResult at relative time ``t``."""
        persons = [PersonRecord(p.track_id, tuple(float(v) for v in p.box),  # type: ignore
                                float(p.detection_confidence),
                                [float(s) for s in p.emotion.scores],
                                tuple(float(v) for v in p.emotion.vad),  # type: ignore
                                bool(p.emotion.face_visible))
                   for p in result.persons]
        timings = dict(result.timings_ms)
        timings.update(timings_ms or {})
        return cls(t, float(result.stamp), int(result.width), int(result.height), persons,
                   timings)

    def to_json(self) -> Dict[str, Any]:
        """Plain JSON-able dict."""
        return {'t': round(self.t, 6), 'stamp': self.stamp, 'width': self.width,
                'height': self.height, 'persons': [p.to_json() for p in self.persons],
                'timings_ms': {k: round(v, 3) for k, v in self.timings_ms.items()}}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> 'FrameRecord':
        """Inverse of ``to_json``."""
        return cls(float(d['t']), float(d['stamp']), int(d['width']), int(d['height']),
                   [PersonRecord.from_json(p) for p in d['persons']],
                   {k: float(v) for k, v in d.get('timings_ms', {}).items()})


@dataclasses.dataclass
class AlertRecord:
    """A distress alert the pipeline raised."""

    t: float
    stamp: float
    track_id: int
    level: int
    score: float
    reasons: List[str]
    box: Optional[Tuple[float, float, float, float]] = None  # the person's box, if any
    incident_id: int = 0  # 0: not known (records written before incidents)
    position: Optional[Tuple[float, float, float]] = None  # 3D point of the person, if any
    position_frame: str = ''

    @classmethod
    def from_alert(cls, alert: Alert, t: float) -> 'AlertRecord':
        """Record a pipeline Alert at relative time ``t``."""
        box = None
        position, frame = None, ''
        if alert.person is not None:
            box = tuple(float(v) for v in alert.person.box)
            pos = alert.person.position
            if pos is not None and pos.has_point:
                position, frame = tuple(float(v) for v in pos.xyz), pos.frame_id
        return cls(t, float(alert.stamp), int(alert.track_id), int(alert.level),
                   float(alert.score), list(alert.reasons), box,  # type: ignore[arg-type]
                   int(alert.incident_id), position, frame)  # type: ignore[arg-type]

    def to_json(self) -> Dict[str, Any]:
        """Plain JSON-able dict."""
        out = {'t': round(self.t, 6), 'stamp': self.stamp, 'track_id': self.track_id,
               'level': self.level, 'score': round(self.score, 4), 'reasons': self.reasons,
               'box': None if self.box is None else [round(v, 2) for v in self.box],
               'incident_id': self.incident_id}
        if self.position is not None:
            out['position'] = [round(v, 3) for v in self.position]
            out['position_frame'] = self.position_frame
        return out

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> 'AlertRecord':
        """Inverse of ``to_json``."""
        box = d.get('box')
        position = d.get('position')
        return cls(float(d['t']), float(d['stamp']), int(d['track_id']), int(d['level']),
                   float(d['score']), list(d.get('reasons', [])),
                   None if box is None else tuple(float(v) for v in box),  # type: ignore
                   int(d.get('incident_id', 0)),
                   None if position is None else tuple(float(v) for v in position),  # type: ignore
                   str(d.get('position_frame', '')))


@dataclasses.dataclass
class CueRecord:
    """One window of audio cues."""

    t: float
    speech_probability: float
    voice_active: bool
    help_detected: bool
    keywords: List[str]
    scream_score: float
    loudness_dbfs: float

    @classmethod
    def from_cue(cls, cue: AudioCueResult, t: float) -> 'CueRecord':
        """Record a pipeline AudioCueResult at relative time ``t``."""
        return cls(t, float(cue.speech_probability), bool(cue.voice_active),
                   bool(cue.help_detected), list(cue.keywords), float(cue.scream_score),
                   float(cue.loudness_dbfs))

    def to_json(self) -> Dict[str, Any]:
        """Plain JSON-able dict."""
        return {'t': round(self.t, 6), 'speech_probability': _num(self.speech_probability),
                'voice_active': self.voice_active, 'help_detected': self.help_detected,
                'keywords': self.keywords, 'scream_score': _num(self.scream_score),
                'loudness_dbfs': _num(self.loudness_dbfs)}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> 'CueRecord':
        """Inverse of ``to_json``."""
        return cls(float(d['t']), _unnum(d['speech_probability']), bool(d['voice_active']),
                   bool(d['help_detected']), list(d['keywords']), _unnum(d['scream_score']),
                   _unnum(d['loudness_dbfs']))


@dataclasses.dataclass
class TranscriptRecord:
    """One decoded utterance: when, what was heard, whether it was a call for help."""

    t: float        # start of the utterance (s, relative like every record)
    end: float
    text: str
    help_detected: bool
    help_phrase: str
    help_score: float
    language: str
    confidence: float
    detector: str
    model_id: str
    status: str     # ok, timeout (watchdog), error or partial (early cue, open utterance)

    @classmethod
    def from_transcript(cls, tr: Any, t: float, end: float) -> 'TranscriptRecord':
        """Record an ``emotion_ros.audio.detectors.Transcript`` at relative times."""
        return cls(t, end, str(tr.text), bool(tr.help_detected), str(tr.help_phrase),
                   float(tr.help_score), str(tr.language), float(tr.confidence),
                   str(tr.detector), str(tr.model_id), str(tr.status))

    def to_json(self) -> Dict[str, Any]:
        """Plain JSON-able dict."""
        return {'t': round(self.t, 6), 'end': round(self.end, 6), 'text': self.text,
                'help_detected': self.help_detected, 'help_phrase': self.help_phrase,
                'help_score': _num(self.help_score), 'language': self.language,
                'confidence': _num(self.confidence), 'detector': self.detector,
                'model_id': self.model_id, 'status': self.status}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> 'TranscriptRecord':
        """Inverse of ``to_json``."""
        return cls(float(d['t']), float(d['end']), str(d['text']), bool(d['help_detected']),
                   str(d['help_phrase']), _unnum(d['help_score']), str(d['language']),
                   _unnum(d['confidence']), str(d['detector']), str(d['model_id']),
                   str(d.get('status', 'ok')))


@dataclasses.dataclass
class ScoreRecord:
    """The fused distress score of every track at one time."""

    t: float
    scores: Dict[int, float]

    def to_json(self) -> Dict[str, Any]:
        """Plain JSON-able dict."""
        return {'t': round(self.t, 6),
                'scores': {str(k): round(float(v), 4) for k, v in self.scores.items()}}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> 'ScoreRecord':
        """Inverse of ``to_json``."""
        return cls(float(d['t']), {int(k): float(v) for k, v in d['scores'].items()})


class JsonlWriter:
    """Appends records to a ``.jsonl`` file, flushing each line so a crash loses nothing."""

    def __init__(self, path: Path) -> None:
        """Open ``path`` for appending."""
        self.path = path
        self._file: Optional[IO[str]] = open(path, 'a', encoding='utf-8')
        self.count = 0

    def write(self, record: Any) -> None:
        """Append one record (anything with ``to_json``, or a dict)."""
        if self._file is None:
            raise ValueError(f'{self.path} is closed')
        data = record.to_json() if hasattr(record, 'to_json') else record
        self._file.write(json.dumps(data, allow_nan=False, separators=(',', ':')) + '\n')
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        """Close the file. Safe to call twice."""
        f, self._file = self._file, None
        if f is not None:
            f.close()


def read_jsonl(path: Path, cls: Optional[Type[T]] = None) -> Iterator[Any]:
    """Stream the records of a ``.jsonl`` file (``cls.from_json`` when given).

    A missing file yields nothing; a broken last line (a crash mid-write) is skipped.
    """
    if not path.exists():
        return
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue
            yield cls.from_json(data) if cls is not None else data  # type: ignore[attr-defined]

"""Readers of audio-visual emotion datasets, and the samples the audio-visual model trains on.

Layouts (``detect_av_layout`` tells them apart; docs/datasets.md has the details):

``av_jsonl``   ``<split>.av.jsonl``: one clip per line: ``image`` / ``video`` / ``frames``
               / ``audio`` paths (relative to the file), ``transcript``, ``label`` +
               ``label_set`` or ``categories``, optional ``vad`` and ``reason``.
``ravdess``    ``Actor_XX/MM-VC-EE-II-SS-RR-AA.{mp4,wav}`` (modality 01 audio-video,
               02 video only, 03 audio only; emotion EE 01..08). Splits by actor:
               1-20 train, 21-22 val, 23-24 test.
``cremad``     ``AudioWAV/AAAA_SSS_EMO_LVL.wav`` (+ ``VideoFlash/*.flv`` or ``*.mp4``
               of the same name); EMO in ANG DIS FEA HAP NEU SAD. Splits by actor id:
               last digit 0 test, 9 val, else train.
``dfew``       ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_K.csv``
               (``video_name,label`` with label 1..7) + clips in ``Clip/clip_224x224/
               NNNNN/`` (frame folders) or ``Clip/original/NNNNN.{mp4,avi}``. Split
               ``train``/``test`` of fold 1, or ``foldK_train``/``foldK_test``;
               ``val`` (``foldK_val``) is every 10th clip of the fold's train list,
               which ``train`` then leaves out.
``mer2023``    ``<split>_labels.csv`` (``name,discrete[,valence]``), clips
               ``video/<name>.{mp4,avi}``, optional ``transcription.csv``
               (``name,sentence``); 6 classes (MER2023's label files converted to CSV).
``merr``       Emotion-LLaMA's ``MERR_coarse_grained.json`` / ``MERR_fine_grained.json``
               (``{name: {emotion | pseu_emotion, caption | smp_reason_caption}}``) +
               ``video/<name>.mp4``; splits ``coarse``, ``fine`` and ``coarse_val`` /
               ``fine_val`` (every 20th clip, left out of the other).

EMOTIC images (any layout of :mod:`training.emotic.dataset`) join a mixed run as image-only
records: they bring no audio, so no audio tokens (not zeros).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import sys
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.errors import ConfigError, InputError
from emotion_ros.llm.contract import CATEGORIES, CATEGORY_INDEX, format_answer, PROMPTS
from emotion_ros.llm.labels import class_categories, class_index, label_set
from training.core.images import load_image_rgb
from training.emotic.dataset import DEFAULT_MAX_SKIP_FRACTION, load_dataset, SkipReport

AV_LAYOUTS = ('av_jsonl', 'ravdess', 'cremad', 'dfew', 'mer2023', 'merr')
_RAVDESS = re.compile(r'^(0[1-3])-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)\.(mp4|wav)$')
_CREMAD = re.compile(r'^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_([A-Z]{2})\.(wav|flv|mp4)$')
_CREMAD_CODES = {'ANG': 'angry', 'DIS': 'disgust', 'FEA': 'fear', 'HAP': 'happy',
                 'NEU': 'neutral', 'SAD': 'sad'}


@dataclasses.dataclass(frozen=True)
class AVRecord:
    """One clip (or image) with its label; paths absolute, absent modalities empty."""

    clip_id: str
    split: str
    dataset: str
    label_set: str = ''  # '' when the record has no discrete label
    label: str = ''  # class name in label_set
    categories: Tuple[str, ...] = ()  # EMOTIC categories (from the label or annotated)
    vad: Tuple[float, float, float] = (math.nan, math.nan, math.nan)
    image_path: str = ''
    box: Optional[Tuple[float, float, float, float]] = None  # person box in the image
    video_path: str = ''  # video file or frame folder
    audio_path: str = ''  # WAV, or the video file itself when its audio is used
    transcript: str = ''
    reason: str = ''  # fine-grained explanation (stage 2 targets)

    @property
    def modalities(self) -> Tuple[str, ...]:
        """What this record can provide."""
        out = []
        if self.image_path or self.video_path:
            out.append('image')
        if self.video_path:
            out.append('video')
        if self.audio_path:
            out.append('audio')
        if self.transcript:
            out.append('transcript')
        return tuple(out)


def _labelled(clip_id: str, split: str, dataset: str, set_name: str, cls: str,
              **kwargs: Any) -> AVRecord:
    name = label_set(set_name)[class_index(set_name, cls)]
    return AVRecord(clip_id=clip_id, split=split, dataset=dataset, label_set=set_name,
                    label=name, categories=class_categories(name), **kwargs)


# ---------------------------------------------------------------------------------------------
# Layout detection.


def detect_av_layout(root: str) -> Optional[str]:
    """The audio-visual layout at ``root``, or None when it holds none of them."""
    if not os.path.isdir(root):
        return None
    names = set(os.listdir(root))
    if any(n.endswith('.av.jsonl') for n in names):
        return 'av_jsonl'
    if any(n.startswith('MERR_') and n.endswith('.json') for n in names):
        return 'merr'
    if any(n.endswith('_labels.csv') for n in names) and 'video' in names:
        return 'mer2023'
    if 'EmoLabel_DataSplit' in names:
        return 'dfew'
    if 'AudioWAV' in names or 'VideoFlash' in names:
        return 'cremad'
    if any(re.match(r'^(Actor|Video_Speech_Actor|Audio_Speech_Actors)_?\d*', n) for n in names):
        return 'ravdess'
    for folder, _dirs, files in os.walk(root):
        if any(_RAVDESS.match(f) for f in files):
            return 'ravdess'
        if folder.count(os.sep) - root.count(os.sep) > 2:
            break
    return None


# ---------------------------------------------------------------------------------------------
# Readers, one per layout.


def _read_av_jsonl(root: str, split: str) -> List[AVRecord]:
    path = os.path.join(root, f'{split}.av.jsonl')
    if not os.path.isfile(path):
        present = sorted(n[:-len('.av.jsonl')] for n in os.listdir(root)
                         if n.endswith('.av.jsonl'))
        raise InputError(f'{root}: no {split}.av.jsonl (splits: {present})', 'dataset_split')
    base = os.path.dirname(os.path.abspath(path))

    def resolve(value: Any) -> str:
        return os.path.join(base, value) if value else ''

    out = []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f'{path}:{number}: not JSON: {exc}', 'dataset_format') from exc
            video = obj.get('video') or obj.get('frames') or ''
            common = dict(
                image_path=resolve(obj.get('image')), video_path=resolve(video),
                audio_path=resolve(obj.get('audio') or ('' if not obj.get('audio_in_video')
                                                        else video)),
                transcript=str(obj.get('transcript') or ''), reason=str(obj.get('reason') or ''),
                box=tuple(obj['box']) if obj.get('box') else None,
                vad=tuple(float(v) for v in obj['vad']) if obj.get('vad') else
                (math.nan, math.nan, math.nan))
            clip_id = str(obj.get('id') or f'{split}-{number}')
            try:
                if obj.get('label'):
                    out.append(_labelled(clip_id, split, 'av_jsonl',
                                         str(obj.get('label_set') or ''), str(obj['label']),
                                         **common))
                else:
                    cats = tuple(sorted(obj.get('categories') or [],
                                        key=lambda c: CATEGORY_INDEX.get(c, 99)))
                    unknown = [c for c in cats if c not in CATEGORY_INDEX]
                    if unknown:
                        raise ConfigError(f'unknown EMOTIC categories {unknown}')
                    out.append(AVRecord(clip_id=clip_id, split=split, dataset='av_jsonl',
                                        categories=cats, **common))
            except ConfigError as exc:
                raise InputError(f'{path}:{number}: {exc}', 'dataset_label') from exc
    return out


def _ravdess_split(actor: int) -> str:
    return 'train' if actor <= 20 else ('val' if actor <= 22 else 'test')


def _read_ravdess(root: str, split: str) -> List[AVRecord]:
    found: Dict[Tuple[str, ...], Dict[str, str]] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            m = _RAVDESS.match(name)
            if m:
                key = m.groups()[1:7]
                found.setdefault(key, {})[m.group(1)] = os.path.join(folder, name)
    out = []
    for key in sorted(found):
        vocal, emotion, _intensity, _statement, _rep, actor = key
        if _ravdess_split(int(actor)) != split:
            continue
        files = found[key]
        video = files.get('01') or files.get('02') or ''
        audio = files.get('01') or files.get('03') or ''
        cls = label_set('ravdess')[int(emotion) - 1]
        clip_id = os.path.splitext(os.path.basename(video or audio))[0]
        out.append(_labelled(clip_id, split, 'ravdess', 'ravdess', cls, video_path=video,
                             audio_path=audio))
    return out


def _cremad_split(actor: int) -> str:
    last = actor % 10
    return 'test' if last == 0 else ('val' if last == 9 else 'train')


def _read_cremad(root: str, split: str) -> List[AVRecord]:
    clips: Dict[str, Dict[str, str]] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            m = _CREMAD.match(name)
            if m:
                stem = os.path.splitext(name)[0]
                kind = 'audio' if m.group(5) == 'wav' else 'video'
                clips.setdefault(stem, {})[kind] = os.path.join(folder, name)
    out = []
    for stem in sorted(clips):
        actor, _sentence, code, _level = stem.split('_')
        if _cremad_split(int(actor)) != split:
            continue
        files = clips[stem]
        out.append(_labelled(stem, split, 'cremad', 'cremad', _CREMAD_CODES[code],
                             video_path=files.get('video', ''),
                             audio_path=files.get('audio') or files.get('video', '')))
    return out


def _dfew_clip(root: str, name: str) -> Tuple[str, str]:
    stem = f'{int(name):05d}' if name.isdigit() else name
    frames = os.path.join(root, 'Clip', 'clip_224x224', stem)
    for ext in ('.mp4', '.avi'):
        video = os.path.join(root, 'Clip', 'original', stem + ext)
        if os.path.isfile(video):
            return (frames if os.path.isdir(frames) else video), video
    return frames, ''


def _read_dfew(root: str, split: str) -> List[AVRecord]:
    m = re.match(r'^(?:fold(\d)_)?(train|val|test)$', split)
    if not m:
        raise InputError(f'DFEW split {split!r}: use train, val, test or foldK_train / '
                         'foldK_val / foldK_test (K = 1..5)', 'dataset_split')
    fold, part = int(m.group(1) or 1), m.group(2)
    listing = 'test' if part == 'test' else 'train'
    path = os.path.join(root, 'EmoLabel_DataSplit', f'{listing}(single-labeled)',
                        f'set_{fold}.csv')
    if not os.path.isfile(path):
        raise InputError(f'{root}: DFEW fold file {path} does not exist', 'dataset_split')
    out = []
    with open(path, newline='', encoding='utf-8') as f:
        rows = [r for r in csv.DictReader(f)]
    for i, row in enumerate(rows):
        if part != 'test' and (i % 10 == 9) != (part == 'val'):
            continue
        name = str(row.get('video_name') or row.get('name') or '').strip()
        try:
            cls = label_set('dfew')[int(row['label']) - 1]
        except (KeyError, ValueError, IndexError) as exc:
            raise InputError(f'{path}: row {i + 2}: label must be 1..7, got '
                             f'{row.get("label")!r}', 'dataset_label') from exc
        video, audio = _dfew_clip(root, name)
        out.append(_labelled(name, split, 'dfew', 'dfew', cls, video_path=video,
                             audio_path=audio))
    return out


def _find_clip(folder: str, name: str) -> str:
    for ext in ('.mp4', '.avi', '.mkv', '.flv'):
        path = os.path.join(folder, name + ext)
        if os.path.isfile(path):
            return path
    return ''


def _read_mer2023(root: str, split: str) -> List[AVRecord]:
    path = os.path.join(root, f'{split}_labels.csv')
    if not os.path.isfile(path):
        present = sorted(n[:-len('_labels.csv')] for n in os.listdir(root)
                         if n.endswith('_labels.csv'))
        raise InputError(f'{root}: no {split}_labels.csv (splits: {present})', 'dataset_split')
    transcripts: Dict[str, str] = {}
    tpath = os.path.join(root, 'transcription.csv')
    if os.path.isfile(tpath):
        with open(tpath, newline='', encoding='utf-8') as f:
            for row in csv.DictReader(f):
                text = row.get('english') or row.get('sentence') or row.get('text') or ''
                transcripts[str(row.get('name', '')).strip()] = text.strip()
    out = []
    with open(path, newline='', encoding='utf-8') as f:
        for i, row in enumerate(csv.DictReader(f)):
            name = str(row.get('name', '')).strip()
            video = _find_clip(os.path.join(root, 'video'), name)
            try:
                out.append(_labelled(name, split, 'mer2023', 'mer2023',
                                     str(row.get('discrete', '')), video_path=video,
                                     audio_path=video, transcript=transcripts.get(name, '')))
            except ConfigError as exc:
                raise InputError(f'{path}: row {i + 2}: {exc}', 'dataset_label') from exc
    return out


def _read_merr(root: str, split: str) -> List[AVRecord]:
    m = re.match(r'^(coarse|fine)(_val)?$', split)
    if not m:
        raise InputError(f'MERR split {split!r}: use coarse, fine, coarse_val or fine_val',
                         'dataset_split')
    grain, val = m.group(1), bool(m.group(2))
    path = os.path.join(root, f'MERR_{grain}_grained.json')
    if not os.path.isfile(path):
        raise InputError(f'{root}: no MERR_{grain}_grained.json', 'dataset_split')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(f'{path}: cannot read: {exc}', 'dataset_format') from exc
    items = data.items() if isinstance(data, dict) else (
        (str(d.get('name') or d.get('video') or i), d) for i, d in enumerate(data))
    out = []
    for i, (name, entry) in enumerate(sorted(items)):
        if (i % 20 == 19) != val:
            continue
        cls = str(entry.get('emotion') or entry.get('pseu_emotion') or '')
        reason = str(entry.get('smp_reason_caption') or entry.get('reason_caption')
                     or entry.get('caption') or '') if grain == 'fine' else ''
        video = _find_clip(os.path.join(root, 'video'), name)
        try:
            out.append(_labelled(name, split, 'merr', 'merr', cls, video_path=video,
                                 audio_path=video, reason=reason,
                                 transcript=str(entry.get('subtitle') or entry.get('transcript')
                                                or '')))
        except ConfigError as exc:
            raise InputError(f'{path}: {name}: {exc}', 'dataset_label') from exc
    return out


_READERS = {'av_jsonl': _read_av_jsonl, 'ravdess': _read_ravdess, 'cremad': _read_cremad,
            'dfew': _read_dfew, 'mer2023': _read_mer2023, 'merr': _read_merr}


def _emotic_records(root: str, split: str,
                    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION
                    ) -> Tuple[List[AVRecord], SkipReport]:
    """EMOTIC persons as image-only records, and the skip report of the load.

    Raises:
        InputError: kind ``'dataset_skips'`` past ``max_skip_fraction`` (the LLaVA path's rule).
    """
    records, skipped = load_dataset(root, split, max_skip_fraction=max_skip_fraction)
    return [AVRecord(clip_id=f'{os.path.basename(r.image_path)}#{k}', split=split,
                     dataset='emotic', categories=tuple(r.categories), vad=tuple(r.vad),
                     image_path=r.image_path, box=tuple(r.box))
            for k, r in enumerate(records)], skipped


def parse_roots(data_root: str) -> List[Tuple[str, str]]:
    """``'a,b'`` or ``'ravdess:/x,emotic:/y'`` -> [(layout or '', path)]."""
    out = []
    for part in [p.strip() for p in data_root.split(',') if p.strip()]:
        layout, sep, path = part.partition(':')
        if sep and layout in AV_LAYOUTS + ('emotic',):
            out.append((layout, path))
        else:
            out.append(('', part))
    return out


def load_av_split(data_root: str, split: str,
                  max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION
                  ) -> Tuple[List[AVRecord], Dict[str, Any]]:
    """Records of one split from one or several roots (comma-separated; a mixed run), and
    what was skipped per EMOTIC root (``{root: {persons_read, persons_used, skipped,
    boxes_clipped}}``).

    Roots without an audio-visual layout are read as EMOTIC (image-only), under the same
    skip rule as the LLaVA path: more than ``max_skip_fraction`` of a root's persons
    skipped (bad boxes, missing images, ...) fails the load with the report.

    Raises:
        InputError: for a missing split or malformed annotation (file and row named), or
            kind ``'dataset_skips'`` when an EMOTIC root skips too many persons.
    """
    out: List[AVRecord] = []
    skips: Dict[str, Any] = {}
    for layout, root in parse_roots(data_root):
        layout = layout or detect_av_layout(root) or 'emotic'
        if layout == 'emotic':
            records, skipped = _emotic_records(root, split, max_skip_fraction)
            skips[root] = {'persons_read': skipped.total, 'persons_used': len(records),
                           'skipped': dict(skipped.counts), 'boxes_clipped': skipped.clipped}
        else:
            records = _READERS[layout](root, split)
        out.extend(records)
    return out, skips


def load_av_records(data_root: str, split: str,
                    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION) -> List[AVRecord]:
    """The records of :func:`load_av_split` (same rules and errors), without the report."""
    return load_av_split(data_root, split, max_skip_fraction)[0]


def av_splits(root: str) -> List[str]:
    """Splits a root offers (for ``stats``)."""
    layout = detect_av_layout(root)
    if layout == 'av_jsonl':
        return sorted(n[:-len('.av.jsonl')] for n in os.listdir(root) if n.endswith('.av.jsonl'))
    if layout == 'mer2023':
        return sorted(n[:-len('_labels.csv')] for n in os.listdir(root)
                      if n.endswith('_labels.csv'))
    if layout == 'merr':
        return [g + v for g in ('coarse', 'fine') for v in ('', '_val')
                if os.path.isfile(os.path.join(root, f'MERR_{g}_grained.json'))]
    return ['train', 'val', 'test']


def av_stats(root: str, splits: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Clips per split, per label, per modality available (``stats`` of an AV layout)."""
    layout = detect_av_layout(root)
    if layout is None:
        raise InputError(f'{root}: no audio-visual dataset layout found', 'dataset_format')
    result: Dict[str, Any] = {'root': os.path.abspath(root), 'format': layout, 'splits': {}}
    for split in splits or av_splits(root):
        records = _READERS[layout](root, split)
        missing = [r.clip_id for r in records
                   if (r.video_path and not os.path.exists(r.video_path))
                   or (r.audio_path and not os.path.exists(r.audio_path))]
        result['splits'][split] = {
            'clips': len(records),
            'persons': len(records),
            'labels': dict(sorted(Counter(r.label or 'none' for r in records).items())),
            'categories': dict(sorted(Counter(c for r in records for c in r.categories).items())),
            'modalities': dict(sorted(Counter(m for r in records for m in r.modalities).items())),
            'with_reason': sum(1 for r in records if r.reason),
            'missing_files': len(missing),
            'missing_examples': missing[:5],
            'within_threshold': True,
        }
    return result


# ---------------------------------------------------------------------------------------------
# Samples.


@dataclasses.dataclass
class AVSample:
    """What the audio-visual model trains on for one record."""

    inputs: Any  # emotion_ros.llm.multimodal.AVInputs
    prompt: str  # the question
    answer: str
    labels_26: np.ndarray
    vad: Tuple[float, float, float]
    discrete: int  # index in the run's label set, -1 when unknown
    clip_id: str = ''


def load_inputs(record: AVRecord, view: str, max_frames: int, use_transcript: bool = True,
                cache_dir: str = '') -> Any:
    """Decode a record's media into :class:`AVInputs` (optionally cached as .npz).

    Raises:
        InputError: for media that cannot be read (named).
    """
    from emotion_ros.llm.multimodal import AVInputs
    from emotion_ros.llm.person_view import render_person
    from training.core.media import middle_frame, read_audio, read_frames  # torch via multimodal
    cached = None
    if cache_dir:
        import hashlib
        key = hashlib.sha1(repr((record, view, max_frames)).encode()).hexdigest()[:20]
        cached = os.path.join(cache_dir, key + '.npz')
        if os.path.isfile(cached):
            data = np.load(cached, allow_pickle=False)
            return AVInputs(image=data['image'] if data['image'].size else None,
                            frames=list(data['frames']) if data['frames'].size else None,
                            audio=data['audio'] if data['audio'].size else None,
                            transcript=record.transcript if use_transcript else None)
    frames = read_frames(record.video_path, max_frames) if record.video_path else None
    image = load_image_rgb(record.image_path) if record.image_path else middle_frame(frames or [])
    if image is not None:
        h, w = image.shape[:2]
        image = render_person(image, record.box or (0, 0, w, h), view)
    if frames:
        frames = [render_person(f, (0, 0, f.shape[1], f.shape[0]), 'crop', margin=0.0)
                  for f in frames]
    audio = read_audio(record.audio_path) if record.audio_path else None
    if cached:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = cached + f'.tmp-{os.getpid()}.npz'
        np.savez(tmp, image=image if image is not None else np.zeros(0, np.uint8),
                 frames=np.stack(frames) if frames else np.zeros(0, np.uint8),
                 audio=audio if audio is not None else np.zeros(0, np.float32))
        os.replace(tmp, cached)
    return AVInputs(image=image, frames=frames, audio=audio,
                    transcript=record.transcript if use_transcript else None)


class AVSampleSet(Sequence[AVSample]):
    """Samples of a list of records for one run's label set, built (decoded) on access."""

    def __init__(self, records: Sequence[AVRecord], prompt_id: str, run_label_set: str,
                 view: str = 'crop', max_frames: int = 8, use_transcript: bool = True,
                 with_reasons: bool = False, cache_dir: str = '',
                 drop: Sequence[str] = ()) -> None:
        """Check the prompt; ``drop`` removes modalities from every sample (ablations)."""
        if prompt_id not in PROMPTS:
            raise ConfigError(f'prompt_id: {prompt_id!r} is not one of {sorted(PROMPTS)}')
        self.records = list(records)
        self.prompt_id = prompt_id
        self.run_label_set = run_label_set
        self.view = view
        self.max_frames = max_frames
        self.use_transcript = use_transcript
        self.with_reasons = with_reasons
        self.cache_dir = cache_dir
        self.drop = tuple(drop)

    def __len__(self) -> int:
        """Return the number of clips."""
        return len(self.records)

    def discrete_index(self, record: AVRecord) -> int:
        """The record's class index in the run's label set, or -1."""
        if not record.label or not self.run_label_set:
            return -1
        try:
            return class_index(self.run_label_set, record.label)
        except ConfigError:
            return -1

    def __getitem__(self, index: int) -> AVSample:  # type: ignore[override]
        """Decode and build sample ``index``."""
        record = self.records[index]
        inputs = load_inputs(record, self.view, self.max_frames, self.use_transcript,
                             self.cache_dir).without(*self.drop)
        labels = np.zeros(len(CATEGORIES), np.float32)
        for c in record.categories:
            labels[CATEGORY_INDEX[c]] = 1.0
        answer = format_answer(record.categories,
                               reason=record.reason if self.with_reasons else '')
        return AVSample(inputs=inputs, prompt=PROMPTS[self.prompt_id].question, answer=answer,
                        labels_26=labels, vad=record.vad, discrete=self.discrete_index(record),
                        clip_id=record.clip_id)

    def __iter__(self) -> Iterator[AVSample]:
        """Iterate in record order."""
        for i in range(len(self)):
            yield self[i]


def run_av_stats(args: Any) -> int:
    """``python -m training stats`` of an audio-visual layout; 0 when no media file is missing."""
    stats = av_stats(args.root, args.split)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for split, info in stats['splits'].items():
            print(f'{split}: {info["clips"]} clips, labels {info["labels"]}, '
                  f'modalities {info["modalities"]}, missing files {info["missing_files"]}')
    missing = [s for s, v in stats['splits'].items() if v['missing_files']]
    if missing:
        print(f'error: {", ".join(missing)}: clips whose media files are missing',
              file=sys.stderr)
        return 1
    return 0

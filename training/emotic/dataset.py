"""Person-level training data: one record per annotated person, from any supported format.

Formats (``detect_format`` finds out which one a folder holds):

* ``emotic_mat``: the official ``Annotations/Annotations.mat`` (see
  :mod:`training.emotic.readers`); val/test use the combined labels, as the benchmark;
* ``emotic_csv``: the widely used preprocessed CSV files
  (``emotic_pre/{train,val,test}.csv``, images under ``emotic/<Folder>``);
* ``jsonl``: our format for teams' own data, one JSON object per person
  (``docs/datasets.md``).

Every reader feeds the same checks. A person that fails one is skipped and
counted by reason in a :class:`SkipReport`; past ``max_skip_fraction`` the load
fails with the counts, because a silently shrinking dataset is worse than a
clear error. Boxes that stick out of the image are clipped and kept (counted
in ``SkipReport.clipped``); boxes with no pixel inside are skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.llm.contract import CATEGORIES, CATEGORY_INDEX, VAD_MAX, VAD_MIN
from emotion_ros.llm.contract import VAD_NAMES
from emotion_ros.errors import ConfigError, InputError
from training.core.images import display_size, exif_orientation
from training.emotic.readers import csv_splits, mat_splits, read_emotic_csv, read_emotic_mat
from training.emotic.records import label_matrix, PersonRecord, RawPerson, SkipReport, SPLITS
from training.emotic.records import vad_matrix

FORMATS: Tuple[str, ...] = ('emotic_mat', 'emotic_csv', 'jsonl')
DEFAULT_MAX_SKIP_FRACTION = 0.05

# Why a person can be skipped; checked in this order, a person counts once.
SKIP_REASONS: Dict[str, str] = {
    'malformed_row': 'the annotation could not be parsed (bad cell, missing field, wrong type)',
    'no_categories': 'no emotion category annotated',
    'unknown_category': 'a category name that is not one of the 26 EMOTIC categories',
    'nan_vad': 'valence, arousal or dominance missing or NaN',
    'vad_out_of_range': f'a VAD value outside {VAD_MIN:g}-{VAD_MAX:g}',
    'invalid_box': 'the box is not 4 finite numbers with x1 < x2 and y1 < y2',
    'missing_image': 'the image file does not exist',
    'unreadable_image': 'the image file cannot be opened or decoded',
    'image_size_mismatch': 'the image size differs from the annotated size',
    'box_outside_image': 'the box has no pixel inside the image',
}
_CATEGORY_BY_LOWER = {name.lower(): name for name in CATEGORIES}


@dataclasses.dataclass
class _ImageInfo:
    reason: str  # '' when readable
    detail: str
    raw_size: Tuple[int, int] = (0, 0)
    orientation: int = 1


class _ImageChecker:
    """Opens each image once (header only, or a full decode) and caches the verdict."""

    def __init__(self, decode: bool) -> None:
        self.decode = decode
        self.cache: Dict[str, _ImageInfo] = {}

    def info(self, path: str) -> _ImageInfo:
        if path not in self.cache:
            self.cache[path] = self._probe(path)
        return self.cache[path]

    def _probe(self, path: str) -> _ImageInfo:
        from PIL import Image

        if not os.path.isfile(path):
            return _ImageInfo('missing_image', path)
        try:
            with Image.open(path) as image:
                raw = image.size
                orientation = exif_orientation(image)
                if self.decode:
                    image.load()
        except (OSError, ValueError, SyntaxError) as exc:
            return _ImageInfo('unreadable_image', f'{path}: {exc}')
        return _ImageInfo('', '', raw, orientation)


def _reconcile_size(info: _ImageInfo, annotated: Optional[Tuple[int, int]]
                    ) -> Tuple[Optional[Tuple[int, int]], Dict[str, Any]]:
    """Decide which pixel frame the annotation refers to; None when nothing fits."""
    raw = info.raw_size
    display = display_size(raw, info.orientation)
    if annotated is None:
        return display, {'exif_transpose': info.orientation != 1}
    if annotated == raw:
        return raw, {'exif_transpose': False}
    if annotated == (raw[1], raw[0]):
        if display == annotated:
            return display, {'exif_transpose': True}
        # No EXIF rotation: the annotation just lists height before width.
        return raw, {'exif_transpose': False, 'size_order_swapped': True}
    return None, {}


# ---------------------------------------------------------------------------------------------
# Shared checks


def _normalise_categories(value: Any) -> Tuple[Optional[List[str]], str, str]:
    """Return (categories, reason, detail); categories is None when skipped."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return None, 'malformed_row', f'categories must be a list, got {value!r}'
    names, unknown = [], []
    for item in value:
        if not isinstance(item, str):
            return None, 'malformed_row', f'category {item!r} is not a string'
        key = item.strip()
        if not key:
            continue
        name = key if key in CATEGORY_INDEX else _CATEGORY_BY_LOWER.get(key.lower())
        if name is None:
            unknown.append(item)
        elif name not in names:
            names.append(name)
    if unknown:
        return None, 'unknown_category', f'unknown categories {unknown}'
    if not names:
        return None, 'no_categories', 'no category annotated'
    names.sort(key=CATEGORY_INDEX.__getitem__)
    return names, '', ''


def _to_float(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise ValueError(f'{value!r} is not a number')
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ('', 'nan', 'na', 'none', 'null'):
            return math.nan
        return float(text)
    return float(value)


def _normalise_vad(value: Any) -> Tuple[Optional[Tuple[float, float, float]], str, str]:
    if value is None:
        return (math.nan, math.nan, math.nan), '', ''
    if isinstance(value, Mapping):
        value = [value.get(name.lower(), value.get(name)) for name in VAD_NAMES]
    try:
        values = [_to_float(v) for v in value]
    except (TypeError, ValueError) as exc:
        return None, 'malformed_row', f'VAD {value!r} is not 3 numbers ({exc})'
    if len(values) != 3:
        return None, 'malformed_row', f'VAD needs 3 values, got {len(values)}: {value!r}'
    if any(math.isinf(v) for v in values):
        return None, 'vad_out_of_range', f'VAD {values} is infinite'
    if any(not math.isnan(v) and not VAD_MIN <= v <= VAD_MAX for v in values):
        return None, 'vad_out_of_range', f'VAD {values} outside {VAD_MIN:g}-{VAD_MAX:g}'
    return (values[0], values[1], values[2]), '', ''


def _normalise_box(value: Any) -> Tuple[Optional[Tuple[float, float, float, float]], str]:
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        return None, f'box {value!r} is not 4 numbers'
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return None, f'box {value!r} is not 4 finite numbers'
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        return None, f'box {value!r} is empty (needs x1 < x2, y1 < y2)'
    return (x1, y1, x2, y2), ''


def _check_person(raw: RawPerson, split: str, report: SkipReport,
                  checker: Optional[_ImageChecker], lazy_checker: _ImageChecker,
                  require_vad: bool) -> Optional[PersonRecord]:
    report.total += 1

    def skip(reason: str, detail: str) -> None:
        report.add(reason, f'{raw.source}: {detail}')

    if raw.error:
        skip('malformed_row', raw.error)
        return None
    categories, reason, detail = _normalise_categories(raw.categories)
    if categories is None:
        skip(reason, detail)
        return None
    vad, reason, detail = _normalise_vad(raw.vad)
    if vad is None:
        skip(reason, detail)
        return None
    if require_vad and any(math.isnan(v) for v in vad):
        skip('nan_vad', f'VAD {list(vad)}')
        return None
    box, detail = _normalise_box(raw.box)
    if box is None:
        skip('invalid_box', detail)
        return None
    annotated = raw.image_size
    meta = dict(raw.meta)
    if checker is not None or annotated is None:
        # Without an annotated size the header must be read anyway to check the box.
        info = (checker or lazy_checker).info(raw.image_path)
        if info.reason:
            skip(info.reason, info.detail)
            return None
        size, extra = _reconcile_size(info, annotated)
        if size is None:
            skip('image_size_mismatch', f'{raw.image_path} is {info.raw_size[0]}x'
                 f'{info.raw_size[1]}, annotated {annotated[0]}x{annotated[1]}')
            return None
        meta.update(extra)
    else:
        size = annotated
    width, height = size
    x1, y1, x2, y2 = box
    clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if clipped[2] - clipped[0] < 1.0 or clipped[3] - clipped[1] < 1.0:
        skip('box_outside_image', f'box {list(box)} vs image {width}x{height}')
        return None
    if clipped != box:
        report.clipped += 1
        meta['box_original'] = list(box)
    return PersonRecord(image_path=raw.image_path, box=clipped, categories=tuple(categories),
                        vad=vad, split=split, image_size=(int(width), int(height)), meta=meta)


# ---------------------------------------------------------------------------------------------
# Format detection and the JSONL reader


def _mat_candidates(root: str) -> List[str]:
    return [os.path.join(root, 'Annotations', 'Annotations.mat'),
            os.path.join(root, 'Annotations.mat')]


def _csv_dirs(root: str) -> List[str]:
    return [os.path.join(root, 'emotic_pre'), root]


def detect_format(root: str) -> str:
    """Tell which supported format a dataset path holds.

    Checks, in this order: an EMOTIC ``.mat`` file (``root`` itself, or
    ``Annotations/Annotations.mat`` / ``Annotations.mat`` under it), the
    preprocessed CSV (``root`` a ``.csv`` file, or ``{train,val,test}.csv``
    in ``root/emotic_pre`` or ``root``), our JSONL (``root`` a ``.jsonl``
    file, or ``{train,val,test}.jsonl`` in ``root``). A download that has both
    the ``.mat`` and the CSV files is read from the ``.mat``; pass the format
    explicitly to choose.

    Returns:
        ``'emotic_mat'``, ``'emotic_csv'`` or ``'jsonl'``.

    Raises:
        InputError: when the path does not exist or holds none of them, naming
            what was looked for.
    """
    root = os.fspath(root)
    if os.path.isfile(root):
        ext = os.path.splitext(root)[1].lower()
        by_ext = {'.mat': 'emotic_mat', '.csv': 'emotic_csv', '.jsonl': 'jsonl'}
        if ext in by_ext:
            return by_ext[ext]
        raise InputError(f'{root}: not a dataset file (expected .mat, .csv or .jsonl)',
                         'dataset_format')
    if not os.path.isdir(root):
        raise InputError(f'dataset path does not exist: {root}', 'dataset_format')
    if any(os.path.isfile(p) for p in _mat_candidates(root)):
        return 'emotic_mat'
    for folder in _csv_dirs(root):
        if any(os.path.isfile(os.path.join(folder, f'{s}.csv')) for s in SPLITS):
            return 'emotic_csv'
    if any(os.path.isfile(os.path.join(root, f'{s}.jsonl')) for s in SPLITS):
        return 'jsonl'
    raise InputError(
        f'{root}: no dataset found. Looked for Annotations/Annotations.mat (EMOTIC), '
        'emotic_pre/{train,val,test}.csv (preprocessed EMOTIC CSV) and '
        '{train,val,test}.jsonl (our JSONL format, docs/datasets.md)', 'dataset_format')


def _jsonl_source(root: str, split: str) -> Tuple[str, bool]:
    """Return the JSONL file for a split and whether its lines must carry their split."""
    if os.path.isfile(root):
        stem = os.path.splitext(os.path.basename(root))[0]
        return root, stem not in SPLITS
    path = os.path.join(root, f'{split}.jsonl')
    if not os.path.isfile(path):
        present = [s for s in SPLITS if os.path.isfile(os.path.join(root, f'{s}.jsonl'))]
        raise InputError(f'{root}: no {split}.jsonl (found splits: {present})', 'dataset_split')
    return path, False


def _read_jsonl(root: str, split: str, images_root: Optional[str]) -> Iterator[RawPerson]:
    path, single_file = _jsonl_source(root, split)
    base = images_root or os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    file_split = None if single_file else (
        os.path.splitext(name)[0] if os.path.splitext(name)[0] in SPLITS else split)
    with open(path, encoding='utf-8') as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            source = f'{name} line {number}'
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield RawPerson(source, '', None, None, None, None, {}, f'invalid JSON: {exc}')
                continue
            if not isinstance(obj, dict):
                yield RawPerson(source, '', None, None, None, None, {},
                                'each line must be a JSON object')
                continue
            line_split = obj.get('split', file_split)
            if single_file and line_split is None:
                yield RawPerson(source, '', None, None, None, None, {},
                                'no "split" field (needed in a single-file dataset)')
                continue
            if line_split != split:
                if single_file:
                    continue
                yield RawPerson(source, '', None, None, None, None, {},
                                f'"split" is {line_split!r} in {name}')
                continue
            yield _jsonl_person(obj, source, base)


def _jsonl_person(obj: Dict[str, Any], source: str, base: str) -> RawPerson:
    missing = [key for key in ('image', 'box', 'categories') if key not in obj]
    if missing:
        return RawPerson(source, '', None, None, None, None, {}, f'missing fields {missing}')
    image = obj['image']
    if not isinstance(image, str) or not image:
        return RawPerson(source, '', None, None, None, None, {}, f'"image" is {image!r}')
    size = obj.get('image_size')
    if size is not None:
        try:
            width, height = (int(v) for v in size)
            size = (width, height)
        except (TypeError, ValueError):
            return RawPerson(source, '', None, None, None, None, {},
                             f'"image_size" {size!r} is not [width, height]')
    meta = dict(obj.get('meta') or {})
    for key, value in obj.items():
        if key not in ('image', 'box', 'categories', 'vad', 'image_size', 'split', 'meta'):
            meta[key] = value
    meta['source'] = source
    path = image if os.path.isabs(image) else os.path.join(base, image)
    return RawPerson(source, os.path.abspath(path), obj['box'], obj['categories'],
                     obj.get('vad'), size, meta)


def available_splits(root: str, fmt: Optional[str] = None) -> List[str]:
    """List the splits a dataset path holds, in train/val/test order.

    Raises:
        InputError: when no dataset is found at ``root``.
    """
    fmt = fmt or detect_format(root)
    root = os.fspath(root)
    if fmt == 'emotic_mat':
        return mat_splits(root)
    if fmt == 'emotic_csv':
        return csv_splits(root)
    if os.path.isfile(root):
        stem = os.path.splitext(os.path.basename(root))[0]
        if stem in SPLITS:
            return [stem]
        found = set()
        with open(root, encoding='utf-8') as handle:
            for line in handle:
                try:
                    found.add(json.loads(line).get('split'))
                except (json.JSONDecodeError, AttributeError):
                    continue
        return [s for s in SPLITS if s in found]
    return [s for s in SPLITS if os.path.isfile(os.path.join(root, f'{s}.jsonl'))]


# ---------------------------------------------------------------------------------------------
# Loading


def load_dataset(root: str, split: str,
                 max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
                 check_images: bool = True, *, fmt: Optional[str] = None,
                 images_root: Optional[str] = None, require_vad: bool = True,
                 decode_images: bool = False, progress: bool = False
                 ) -> Tuple[List[PersonRecord], SkipReport]:
    """Read one split of a dataset into person records, checking every person.

    Args:
        root: dataset folder or annotation file (see :func:`detect_format`).
        split: ``'train'``, ``'val'`` or ``'test'``.
        max_skip_fraction: the largest fraction of persons that may be skipped
            before the load fails.
        check_images: open each image's header: counts missing/unreadable
            images and checks the annotated size (otherwise only files whose
            size is not annotated are opened).
        fmt: force a format instead of detecting it.
        images_root: folder the annotation's image paths are relative to
            (default: found next to the annotations, see docs/datasets.md).
        require_vad: skip persons without VAD (``nan_vad``); set False for an
            emotions-only dataset, whose records then carry NaN VAD.
        decode_images: with ``check_images``, decode every image fully (finds
            truncated files; slow on the full EMOTIC).
        progress: show a progress bar on stderr.

    Returns:
        ``(records, report)``, records in file order.

    Raises:
        ConfigError: for an unknown split or format, or a threshold outside 0-1.
        InputError: when no dataset is found, a file cannot be parsed as a
            whole, the split is empty, or more than ``max_skip_fraction`` of
            the persons were skipped (the message gives the counts per reason
            and examples).
    """
    if split not in SPLITS:
        raise ConfigError(f'split: {split!r} is not one of {list(SPLITS)}')
    if not 0.0 <= max_skip_fraction <= 1.0:
        raise ConfigError(f'max_skip_fraction: must be within 0-1, got {max_skip_fraction!r}')
    root = os.fspath(root)
    fmt = fmt or detect_format(root)
    if fmt == 'emotic_mat':
        raw_people: Iterable[RawPerson] = read_emotic_mat(root, split, images_root)
    elif fmt == 'emotic_csv':
        raw_people = read_emotic_csv(root, split, images_root)
    elif fmt == 'jsonl':
        raw_people = _read_jsonl(root, split, images_root)
    else:
        raise ConfigError(f'format: {fmt!r} is not one of {list(FORMATS)}')
    if progress:
        from tqdm import tqdm
        raw_people = tqdm(raw_people, desc=f'{split}: checking persons', unit='person',
                          file=sys.stderr, dynamic_ncols=True)
    report = SkipReport()
    checker = _ImageChecker(decode_images) if check_images else None
    lazy_checker = _ImageChecker(False)
    records = []
    for raw in raw_people:
        record = _check_person(raw, split, report, checker, lazy_checker, require_vad)
        if record is not None:
            records.append(record)
    if report.total == 0:
        raise InputError(f'{root}: the {split} split ({fmt}) holds no persons', 'dataset_empty')
    if report.fraction > max_skip_fraction:
        details = '; '.join(
            f'{reason} {n} (e.g. {report.examples[reason][0]})'
            for reason, n in sorted(report.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        raise InputError(
            f'{root} ({fmt}, {split}): skipped {report.skipped} of {report.total} persons '
            f'({100 * report.fraction:.1f}%), more than the allowed '
            f'{100 * max_skip_fraction:.1f}%: {details}', 'dataset_skips')
    return records, report


def write_jsonl(records: Iterable[PersonRecord], path: str,
                relative_to: Optional[str] = None) -> int:
    """Write records in our JSONL format (one person per line); returns the count.

    Args:
        records: the persons to write.
        path: the ``.jsonl`` file (parent folders are created).
        relative_to: write image paths relative to this folder (default:
            the file's folder; ``''`` keeps them absolute).
    """
    base = os.path.dirname(os.path.abspath(path)) if relative_to is None else relative_to
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    count = 0
    with open(path, 'w', encoding='utf-8') as handle:
        for record in records:
            image = os.path.relpath(record.image_path, base) if base else record.image_path
            obj = {'image': image, 'box': [round(v, 3) for v in record.box],
                   'categories': list(record.categories),
                   'vad': None if any(math.isnan(v) for v in record.vad) else list(record.vad),
                   'image_size': list(record.image_size), 'split': record.split,
                   'meta': {k: v for k, v in record.meta.items() if k != 'source'}}
            handle.write(json.dumps(obj, ensure_ascii=False) + '\n')
            count += 1
    return count


# ---------------------------------------------------------------------------------------------
# python -m training stats


def split_stats(records: Sequence[PersonRecord], report: SkipReport,
                max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION) -> Dict[str, Any]:
    """Count what a user checks a download with: images, persons, categories, VAD, skips."""
    labels = label_matrix(records)
    vad = vad_matrix(records)
    annotated = ~np.isnan(vad)
    vad_mean = {}
    for k, name in enumerate(VAD_NAMES):
        vad_mean[name] = float(vad[annotated[:, k], k].mean()) if annotated[:, k].any() else None
    return {
        'images': len({r.image_path for r in records}),
        'persons': len(records),
        'persons_per_category': {name: int(labels[:, k].sum())
                                 for k, name in enumerate(CATEGORIES)},
        'vad_mean': vad_mean,
        'skipped': dict(sorted(report.counts.items())),
        'skipped_total': report.skipped,
        'persons_read': report.total,
        'skip_fraction': report.fraction,
        'boxes_clipped': report.clipped,
        'skip_examples': {k: list(v) for k, v in sorted(report.examples.items())},
        'within_threshold': report.fraction <= max_skip_fraction,
    }


def dataset_stats(root: str, splits: Optional[Sequence[str]] = None, *,
                  fmt: Optional[str] = None, images_root: Optional[str] = None,
                  check_images: bool = True, decode_images: bool = False,
                  require_vad: bool = True,
                  max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
                  progress: bool = False) -> Dict[str, Any]:
    """Statistics of every split of a dataset (what ``python -m training stats`` prints).

    Splits past ``max_skip_fraction`` are reported (``within_threshold``
    false), not raised, so a user sees the whole picture.

    Raises:
        InputError: when no dataset is found or a file cannot be parsed at all.
    """
    root = os.fspath(root)
    fmt = fmt or detect_format(root)
    wanted = list(splits) if splits else available_splits(root, fmt)
    out: Dict[str, Any] = {'root': os.path.abspath(root), 'format': fmt,
                           'max_skip_fraction': max_skip_fraction, 'splits': {}}
    for split in wanted:
        try:
            records, report = load_dataset(
                root, split, 1.0, check_images, fmt=fmt, images_root=images_root,
                require_vad=require_vad, decode_images=decode_images, progress=progress)
        except InputError as exc:
            if exc.kind != 'dataset_empty':
                raise
            records, report = [], SkipReport()
        out['splits'][split] = split_stats(records, report, max_skip_fraction)
    return out


def format_stats_table(stats: Mapping[str, Any]) -> str:
    """Render :func:`dataset_stats` output as a plain-text table."""
    splits = list(stats['splits'])
    width = max(10, *(len(s) + 2 for s in splits)) if splits else 10
    label_width = max(24, max(len(name) for name in CATEGORIES) + 4)

    def row(label: str, values: Sequence[Any]) -> str:
        return label.ljust(label_width) + ''.join(str(v).rjust(width) for v in values)

    def fmt(value: Optional[float]) -> str:
        return '-' if value is None else f'{value:.2f}'

    data = stats['splits']
    lines = [f'dataset {stats["root"]} (format {stats["format"]})',
             row('', splits),
             row('images', [data[s]['images'] for s in splits]),
             row('persons', [data[s]['persons'] for s in splits]),
             row('persons skipped', [data[s]['skipped_total'] for s in splits])]
    reasons = sorted({r for s in splits for r in data[s]['skipped']})
    lines += [row(f'  {reason}', [data[s]['skipped'].get(reason, 0) for s in splits])
              for reason in reasons]
    lines.append(row('boxes clipped (kept)', [data[s]['boxes_clipped'] for s in splits]))
    lines.append(row('VAD mean (1-10)', []))
    lines += [row(f'  {name}', [fmt(data[s]['vad_mean'][name]) for s in splits])
              for name in VAD_NAMES]
    lines.append(row('persons per category', []))
    lines += [row(f'  {name}', [data[s]['persons_per_category'][name] for s in splits])
              for name in CATEGORIES]
    for split in splits:
        for reason, examples in data[split]['skip_examples'].items():
            lines.append(f'{split} {reason}, e.g. {examples[0]}')
    return '\n'.join(lines)


def add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m training stats``."""
    parser.add_argument('root', help='dataset folder or annotation file '
                        '(Annotations.mat, emotic_pre/*.csv or *.jsonl; or an audio-visual '
                        'layout: RAVDESS, CREMA-D, DFEW, MER2023, MERR, *.av.jsonl; see '
                        'docs/datasets.md)')
    parser.add_argument('--json', action='store_true', help='print JSON instead of a table')
    parser.add_argument('--split', action='append',
                        help='only this split (repeatable; default: all present; EMOTIC: '
                        'train, val, test; audio-visual layouts: see docs/datasets.md)')
    parser.add_argument('--format', dest='fmt', choices=FORMATS,
                        help='force the format instead of detecting it')
    parser.add_argument('--images-root', help='folder the image paths are relative to '
                        '(default: found next to the annotations)')
    parser.add_argument('--no-check-images', action='store_true',
                        help='do not open the images (faster; misses missing/broken files)')
    parser.add_argument('--decode-images', action='store_true',
                        help='decode every image fully to find truncated files (slow)')
    parser.add_argument('--no-require-vad', action='store_true',
                        help='keep persons without VAD (emotions-only data)')
    parser.add_argument('--max-skip-fraction', type=float, default=DEFAULT_MAX_SKIP_FRACTION,
                        help='exit with status 1 when a split skips more than this fraction '
                        '(default %(default)s, the training default)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')


def run_stats(args: argparse.Namespace) -> int:
    """``python -m training stats`` of an EMOTIC-layout dataset; 0 within the skip threshold."""
    stats = dataset_stats(args.root, args.split, fmt=args.fmt, images_root=args.images_root,
                          check_images=not args.no_check_images,
                          decode_images=args.decode_images,
                          require_vad=not args.no_require_vad,
                          max_skip_fraction=args.max_skip_fraction,
                          progress=not args.no_progress and sys.stderr.isatty())
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(format_stats_table(stats))
    failing = [s for s, v in stats['splits'].items() if not v['within_threshold']]
    if failing:
        print(f'error: {", ".join(failing)}: more than {100 * args.max_skip_fraction:.1f}% of '
              'persons skipped; training with this threshold would fail', file=sys.stderr)
        return 1
    return 0

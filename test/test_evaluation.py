"""Offline bag evaluation: labels, matching, metrics by hand and against sklearn, real runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from emotion_ros.evaluation import bags
from emotion_ros.evaluation.bags import BagWriter, project_typestore
from emotion_ros.llm.contract import CATEGORIES, CATEGORY_INDEX
from emotion_ros.errors import InputError
from emotion_ros.evaluation.labels import labels_from_dict, load_labels
from emotion_ros.evaluation.matching import iou, match_boxes
from emotion_ros.evaluation.records import AlertRecord, FrameRecord, PersonRecord
from emotion_ros.evaluation.runner import evaluate, report_from_dir, RunOptions
from emotion_ros.evaluation.scoring import EvalConfig, Scorer
from emotion_ros.types import (Alert, EmotionOutput, FrameResult, LEVEL_EMERGENCY,
                               PersonEstimate)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'config' / 'robot.yaml'
START = 1_700_000_000.0
FPS = 10
FRAMES = 80
QUIET = RunOptions(progress=False)

# ----------------------------------------------------------------- labels

LABELS = {
    'persons': [
        {'id': 'a', 'categories': ['Fear', 'pain'], 'vad': [2, 8, 3],
         'spans': [{'start': 0.95, 'end': 7.05, 'box': [100, 100, 200, 300]}]},
        {'id': 'b', 'categories': ['Happiness'], 'vad': [8, 5, 6],
         'spans': [{'start': 1.95, 'end': 6.05, 'track': [
             {'t': 1.95, 'box': [300, 100, 380, 300]},
             {'t': 6.05, 'box': [400, 100, 480, 300]}]}]},
    ],
    'episodes': [
        {'start': 3.0, 'end': 6.0, 'person': 'a', 'note': 'falls'},
        {'start': 5.0, 'end': 7.5, 'note': 'voice behind the wall'},
        {'start': 2.5, 'end': 3.0, 'person': 'b'},
    ],
}


def test_labels_yaml_and_json_read_the_same(tmp_path):
    """The same labels in YAML and JSON load identically, with names normalised and sorted."""
    (tmp_path / 'l.yaml').write_text(yaml.safe_dump(LABELS))
    (tmp_path / 'l.json').write_text(json.dumps(LABELS))
    a, b = load_labels(tmp_path / 'l.yaml'), load_labels(tmp_path / 'l.json')
    assert a.persons == b.persons and a.episodes == b.episodes
    assert a.persons['a'].categories == ('Fear', 'Pain')
    assert [e.person for e in a.episodes] == ['b', 'a', None]  # sorted by start
    assert a.episodes[2].audio_only


def test_track_boxes_are_interpolated_and_visibility_follows_spans():
    """A track's box is interpolated between keyframes; people are visible only inside spans."""
    labels = labels_from_dict(LABELS)
    visible = {v.person_id: v for v in labels.visible_at(4.0)}
    assert set(visible) == {'a', 'b'}
    expected = 300 + 100 * (4.0 - 1.95) / 4.1
    assert visible['b'].box == pytest.approx((expected, 100, expected + 80, 300))
    assert visible['a'].categories == ('Fear', 'Pain') and visible['a'].vad == (2, 8, 3)
    assert [v.person_id for v in labels.visible_at(0.5)] == []
    assert [v.person_id for v in labels.visible_at(6.5)] == ['a']


@pytest.mark.parametrize('change, message', [
    (lambda d: d['persons'][0].update(categories=['Fear', 'Grumpy']), 'unknown EMOTIC category'),
    (lambda d: d['persons'][0].update(vad=[2, 11, 3]), 'on 1-10'),
    (lambda d: d['persons'][0].update(vad=[2, float('nan'), 3]), 'finite'),
    (lambda d: d['episodes'][0].update(person='c'), "unknown person 'c'"),
    (lambda d: d['episodes'][0].update(end=2.0), 'must be after start'),
    (lambda d: d['persons'][0]['spans'][0].update(box=[100, 100, 50, 300]), 'x_max > x_min'),
    (lambda d: d['persons'][0]['spans'].append({'start': 5.0, 'end': 9.0, 'box': [1, 1, 2, 2]}),
     'spans overlap'),
    (lambda d: d['persons'][1]['spans'][0]['track'][1].update(t=9.0), 'outside its span'),
    (lambda d: d['persons'][0]['spans'][0].update(colour='red'), r"unknown keys \['colour'\]"),
    (lambda d: d.update(time='gps'), 'time must be one of'),
    (lambda d: d['persons'].append(
        {'id': 'a', 'spans': [{'start': 0, 'end': 1, 'box': [0, 0, 1, 1]}]}),
     'duplicate person id'),
])
def test_bad_labels_are_named(change, message):
    """Each kind of labelling mistake raises an InputError naming the entry and the problem."""
    doc = json.loads(json.dumps(LABELS))
    change(doc)
    with pytest.raises(InputError, match=message) as err:
        labels_from_dict(doc, source='mission.yaml')
    assert err.value.kind == 'labels' and 'mission.yaml' in str(err.value)


def test_labels_resolve_against_the_bag():
    """Times are checked against the bag; absolute ROS times and m:ss strings are converted."""
    labels = labels_from_dict(LABELS)
    with pytest.raises(InputError, match=r'episode 2 starts at 5.00 s, outside the bag'):
        labels.resolve(START, 3.0)  # up to 1 s past the end is tolerated
    labels.resolve(START, 4.0)
    doc = {'time': 'absolute', 'episodes': [{'start': 65.5, 'end': 70.0}]}
    with pytest.raises(InputError, match='outside the bag.*absolute ROS time'):
        labels_from_dict(doc).resolve(START, 100.0)  # relative times marked absolute
    doc = {'time': 'absolute', 'episodes': [{'start': START + 65.5, 'end': START + 70}]}
    resolved = labels_from_dict(doc).resolve(START, 100.0)
    assert resolved.episodes[0].start == pytest.approx(65.5)
    relative = labels_from_dict({'episodes': [{'start': '1:05.5', 'end': '0:01:10'}]})
    assert (relative.episodes[0].start, relative.episodes[0].end) == (65.5, 70.0)


# --------------------------------------------------------------- matching

def test_iou_by_hand():
    """IoU of simple boxes equals the hand-computed ratio."""
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0


def test_matching_maximises_total_overlap():
    """Matching maximises total IoU (not greedy) and drops pairs under the threshold."""
    labelled = [(0, 0, 10, 10), (6, 0, 16, 10)]
    # Greedy would give prediction 0 to labelled 1 (IoU 0.67) and leave labelled 0 unmatched.
    predicted = [(4, 0, 14, 10), (20, 0, 30, 10), (-1, 0, 9, 10)]
    pairs = match_boxes(predicted, labelled, threshold=0.3)
    assert [(p, q) for p, q, _ in pairs] == [(0, 1), (2, 0)]
    assert match_boxes(predicted[:2], labelled, threshold=0.9) == []


# ---------------------------------------------------------- scripted runs
# The script of predictions the stand-in pipeline makes for frame i (t = i / FPS).

def _scores(i: int, track: int) -> np.ndarray:
    return np.random.default_rng(1000 * track + i).random(len(CATEGORIES)).astype(np.float32)


def predicted_persons(i: int):
    """(track, box, scores, vad) of the people the scripted pipeline reports in frame i."""
    t = i / FPS
    out = []
    if 10 <= i <= 70:  # person a, box off by 5 px
        out.append((1, (105.0, 105.0, 205.0, 305.0), _scores(i, 1), (3.0, 7.0, 3.0)))
    if 20 <= i <= 60:  # person b, following its track
        x = 300 + 100 * (t - 1.95) / 4.1
        out.append((2, (x + 10, 100.0, x + 90, 300.0), _scores(i, 2), (7.0, 5.0, 6.5)))
    if 10 <= i < 20:  # a false detection (a coat on a chair)
        out.append((3, (500.0, 300.0, 560.0, 400.0), _scores(i, 3),
                    (math.nan, math.nan, math.nan)))
    return out


ALERT_FRAMES = {35: (1, Alert.LEVEL_DISTRESS), 45: (2, Alert.LEVEL_WATCH),
                15: (3, Alert.LEVEL_EMERGENCY), 18: (3, Alert.LEVEL_EMERGENCY)}
CLICK_T = 5.25  # a loud click in the audio: the stand-in raises an audio-only alert


class ScriptedPipeline:
    """Stands in for OfflinePipeline (same interface) with the predictions scripted above.

    The frame index is read from the decoded image (its grey level / 3), so
    the test also proves images arrive decoded and in order; the audio alert
    is raised at the exact sample where the decoded audio has its click.
    """

    def __init__(self, robot=None, fail_at=None, kill_at=None):
        self.fail_at, self.kill_at = fail_at, kill_at
        self.loaded = self.closed = False
        self.frames = 0
        self.heard = False

    def load(self):
        self.loaded = True

    def close(self):
        self.closed = True

    def on_image(self, rgb, stamp, frame_id=''):
        i = int(round(float(rgb.mean()) / 3))
        assert abs(stamp - (START + i / FPS)) < 1e-3, (i, stamp)
        if self.fail_at is not None and self.frames == self.fail_at:
            raise RuntimeError('scripted model failure')
        if self.kill_at is not None and self.frames == self.kill_at:
            os.kill(os.getpid(), 9)
        self.frames += 1
        persons = [PersonEstimate(track, box, 0.9, EmotionOutput(scores=s, vad=v), 'scripted')
                   for track, box, s, v in predicted_persons(i)]
        result = FrameResult(stamp, frame_id, rgb.shape[1], rgb.shape[0], persons,
                             {'detect': 1.0, 'emotion': 2.0})
        alerts = []
        if i in ALERT_FRAMES:
            track, level = ALERT_FRAMES[i]
            person = next(p for p in persons if p.track_id == track)
            alerts.append(Alert(stamp, track, level, 0.9, ['scripted'], person=person))
        return result, alerts

    def on_audio(self, samples, rate, stamp):
        loud = np.flatnonzero(np.abs(samples) > 0.5)
        if loud.size and not self.heard:
            self.heard = True
            return [], [Alert(stamp + loud[0] / rate, Alert.AUDIO_ONLY, Alert.LEVEL_DISTRESS,
                              0.8, ['click'])]
        return [], []

    def distress_scores(self):
        return {0: 0.1, 1: 0.2}


def write_scripted_bag(path: Path, storage: str, compressed: bool) -> None:
    """80 frames at 10 fps (grey level 3 * index) and 0.1 s audio chunks with one click."""
    store = project_typestore()
    with BagWriter(path, storage, store) as writer:
        writer.add_topic('/cam', bags.COMPRESSED_IMAGE_TYPE if compressed else bags.IMAGE_TYPE)
        writer.add_topic('/mic', bags.AUDIO_FRAME_TYPE)
        for i in range(FRAMES):
            t = START + i / FPS
            rgb = np.full((120, 160, 3), 3 * i, np.uint8)
            msg = (bags.compressed_image_message(store, rgb, t) if compressed
                   else bags.image_message(store, rgb, t))
            writer.write('/cam', int(round(t * 1e9)), msg)
            chunk = np.zeros(1600, np.float32)
            k = int(round((CLICK_T - i / FPS) * 16000))
            if 0 <= k < 1600:
                chunk[k] = 0.9
            writer.write('/mic', int(round(t * 1e9)) + 1000,
                         bags.audio_frame_message(store, chunk, 16000, t))


def _expected_emotion_arrays():
    """The (y_true, y_score, vad_true, vad_pred) samples the evaluation must form."""
    y_true, y_score, vad_true, vad_pred = [], [], [], []
    truth = {1: (['Fear', 'Pain'], (2, 8, 3)), 2: (['Happiness'], (8, 5, 6))}
    for i in range(FRAMES):
        for track, _, scores, vad in predicted_persons(i):
            if track in truth:  # track 3 matches nobody
                vec = np.zeros(len(CATEGORIES))
                for name in truth[track][0]:
                    vec[CATEGORY_INDEX[name]] = 1
                y_true.append(vec)
                y_score.append(scores)
                vad_true.append(truth[track][1])
                vad_pred.append(vad)
    return np.array(y_true), np.array(y_score), np.array(vad_true), np.array(vad_pred)


def check_scripted_metrics(m: dict, duration: float) -> None:
    """Compare a scripted run's metrics with values computed by hand and by sklearn."""
    from sklearn.metrics import average_precision_score
    d = m['distress']
    # Episode a (3.0-6.0): first explaining alert at 3.5 (track 1, a's box) -> 0.5 s.
    # Audio-only episode (5.0-7.5): the click alert at 5.25 -> 0.25 s.
    # Episode b (2.5-3.0, +2 s tolerance): the only b alert is a watch (ignored) -> missed.
    # False alerts: track 3 at 1.5 and 1.8 merge into one.
    assert (d['episodes'], d['detected'], d['false_alerts']) == (3, 2, 1)
    assert d['recall'] == pytest.approx(2 / 3) and d['precision'] == pytest.approx(2 / 3)
    assert d['f1'] == pytest.approx(2 / 3)
    assert d['false_alerts_per_hour'] == pytest.approx(1 / (duration / 3600))
    tta = d['time_to_alert_s']
    assert tta['median'] == pytest.approx(0.375, abs=1e-6)
    assert tta['max'] == pytest.approx(0.5, abs=1e-6)
    assert [e['detected'] for e in d['per_episode']] == [False, True, True]
    assert d['alerts'] == 5 and d['alerts_counted'] == 4
    det = m['detection']
    # a in frames 10..70 (61), b in 20..60 (41), the false detection in 10..19 (10).
    assert (det['matched'], det['false_positives'], det['missed']) == (102, 10, 0)
    assert det['precision'] == pytest.approx(102 / 112) and det['recall'] == 1.0
    assert det['track_to_person'] == {'1': 'a', '2': 'b'}
    y_true, y_score, vad_true, vad_pred = _expected_emotion_arrays()
    e = m['emotion']
    assert e['samples'] == len(y_true) == 102
    aps = {c: average_precision_score(y_true[:, k], y_score[:, k])
           for k, c in enumerate(CATEGORIES) if y_true[:, k].any()}
    for name, ap in aps.items():
        assert e['per_category_ap'][name] == pytest.approx(ap, abs=1e-9)
    assert e['mAP'] == pytest.approx(np.mean(list(aps.values())), abs=1e-9)
    assert sorted(e['categories_without_positives']) == sorted(set(CATEGORIES) - set(aps))
    # By hand: valence off by 1 for everyone; arousal off by 1 for a only; dominance 0.5 for b.
    assert e['vad_mae']['Valence'] == pytest.approx(1.0)
    assert e['vad_mae']['Arousal'] == pytest.approx(61 / 102)
    assert e['vad_mae']['Dominance'] == pytest.approx(41 * 0.5 / 102)
    np.testing.assert_allclose(e['vad_mae']['Arousal'],
                               np.mean(np.abs(vad_true[:, 1] - vad_pred[:, 1])))


def test_scorer_by_hand_without_a_bag():
    """Fed records directly, the scorer gives the hand-computed distress and detection metrics."""
    labels = labels_from_dict(LABELS)
    scorer = Scorer(labels, EvalConfig())
    for i in range(FRAMES):
        persons = [PersonRecord(track, box, 0.9, list(s), vad, True)
                   for track, box, s, vad in predicted_persons(i)]
        scorer.add_frame(FrameRecord(i / FPS, START + i / FPS, 160, 120, persons, {}))
        if i in ALERT_FRAMES:
            track, level = ALERT_FRAMES[i]
            box = next(p.box for p in persons if p.track_id == track)
            scorer.add_alert(AlertRecord(i / FPS, START + i / FPS, track, level, 0.9, [], box))
        if i == 52:
            scorer.add_alert(AlertRecord(CLICK_T, START + CLICK_T, 0, 2, 0.8, []))
    duration = (FRAMES - 1) / FPS
    metrics = {'distress': scorer.distress_metrics((0.0, duration)),
               'detection': scorer.detection_metrics(), 'emotion': scorer.emotion_metrics()}
    check_scripted_metrics(metrics, duration)
    # Without letting audio-only alerts stand for a person, episode a still has its own alert,
    # but a stricter level (emergency only) leaves only the false alert.
    strict = Scorer(labels, EvalConfig(min_alert_level=LEVEL_EMERGENCY))
    for alert in scorer._alerts:
        strict.add_alert(alert)
    d = strict.distress_metrics((0.0, duration))
    assert (d['detected'], d['false_alerts'], d['precision']) == (0, 1, 0.0)


@pytest.mark.parametrize('storage, compressed', [('sqlite3', False), ('mcap', True)])
def test_offline_run_matches_hand_computed_metrics(tmp_path, storage, compressed):
    """A full run over a real bag (both storages) reproduces the hand and sklearn metrics."""
    bag = tmp_path / 'bag'
    write_scripted_bag(bag, storage, compressed)
    labels = tmp_path / 'labels.yaml'
    labels.write_text(yaml.safe_dump(LABELS))
    out = tmp_path / 'out'
    pipelines = []

    def factory(robot):
        pipelines.append(ScriptedPipeline(robot))
        return pipelines[-1]

    metrics = evaluate(bag, labels, CONFIG, out, options=QUIET, pipeline_factory=factory)
    assert pipelines[0].loaded and pipelines[0].closed and pipelines[0].frames == FRAMES
    duration = (FRAMES - 1) / FPS + 1e-6  # last audio message 1 us after the last frame
    check_scripted_metrics(metrics, duration)
    assert metrics == json.loads((out / 'metrics.json').read_text())
    assert metrics['status'] == 'complete'
    p = metrics['performance']
    assert p['images_read'] == p['frames_processed'] == FRAMES and p['audio_messages'] == FRAMES
    assert p['realtime_factor'] > 1 and p['stages_ms']['detect']['mean'] == pytest.approx(1.0)
    for name in ('report.md', 'pr_curves.png', 'timeline.png', 'latency.png', 'alerts.jsonl',
                 'frames.jsonl', 'scores.jsonl', 'run.json', 'progress.json', 'labels.yaml'):
        assert (out / name).stat().st_size > 0, name
    report = (out / 'report.md').read_text()
    assert '| episode recall | 0.667 |' in report and '**false**' in report
    alerts = [json.loads(line) for line in (out / 'alerts.jsonl').read_text().splitlines()]
    assert [round(a['t'], 3) for a in alerts] == [1.5, 1.8, 3.5, 4.5, CLICK_T]
    # Recomputing from the folder gives the same numbers.
    again = report_from_dir(out)
    assert again['distress'] == metrics['distress'] and again['emotion'] == metrics['emotion']


def test_output_folder_is_never_silently_overwritten(tmp_path):
    """A second run into the same folder fails; --overwrite replaces only an evaluation folder."""
    bag = tmp_path / 'bag'
    write_scripted_bag(bag, 'sqlite3', False)
    labels = tmp_path / 'labels.yaml'
    labels.write_text(yaml.safe_dump(LABELS))
    out = tmp_path / 'out'
    evaluate(bag, labels, CONFIG, out, options=QUIET, pipeline_factory=ScriptedPipeline)
    before = (out / 'metrics.json').read_text()
    with pytest.raises(InputError, match='exists and is not empty') as err:
        evaluate(bag, labels, CONFIG, out, options=QUIET, pipeline_factory=ScriptedPipeline)
    assert err.value.kind == 'output_exists' and (out / 'metrics.json').read_text() == before
    (out / 'my_notes.txt').write_text('keep me')
    evaluate(bag, labels, CONFIG, out, options=RunOptions(progress=False, overwrite=True),
             pipeline_factory=ScriptedPipeline)
    assert (out / 'my_notes.txt').read_text() == 'keep me'
    other = tmp_path / 'photos'
    other.mkdir()
    (other / 'holiday.jpg').write_bytes(b'x')
    with pytest.raises(InputError, match='does not hold a previous evaluation'):
        evaluate(bag, labels, CONFIG, other, options=RunOptions(progress=False, overwrite=True),
                 pipeline_factory=ScriptedPipeline)
    assert (other / 'holiday.jpg').exists()


def test_crash_leaves_partial_results_readable(tmp_path):
    """A pipeline failing mid-run re-raises, leaving records, partial metrics and a report."""
    bag = tmp_path / 'bag'
    write_scripted_bag(bag, 'mcap', False)
    labels = tmp_path / 'labels.yaml'
    labels.write_text(yaml.safe_dump(LABELS))
    out = tmp_path / 'out'
    with pytest.raises(RuntimeError, match='scripted model failure'):
        evaluate(bag, labels, CONFIG, out, options=QUIET,
                 pipeline_factory=lambda robot: ScriptedPipeline(robot, fail_at=40))
    progress = json.loads((out / 'progress.json').read_text())
    assert progress['status'] == 'failed' and 'scripted model failure' in progress['error']
    assert len((out / 'frames.jsonl').read_text().splitlines()) == 40
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['complete'] is False and metrics['window_s'][1] == pytest.approx(3.9, abs=0.01)
    # Frames 10..39 of person a and 20..39 of b were scored; the audio episode lies beyond.
    assert metrics['detection']['matched'] == 30 + 20
    assert metrics['distress']['episodes'] == 2 and metrics['distress']['detected'] == 1
    assert 'Partial results' in (out / 'report.md').read_text()


def test_killed_run_can_be_reported_from_its_records(tmp_path):
    """After the process is SIGKILLed mid-run, --report-only rebuilds metrics from the records."""
    bag = tmp_path / 'bag'
    write_scripted_bag(bag, 'sqlite3', False)
    labels = tmp_path / 'labels.yaml'
    labels.write_text(yaml.safe_dump(LABELS))
    out = tmp_path / 'out'
    code = ('import sys\n'
            f'sys.path.insert(0, {str(Path(__file__).parent)!r})\n'
            'from test_evaluation import ScriptedPipeline, CONFIG, QUIET\n'
            'from emotion_ros.evaluation.runner import evaluate\n'
            f'evaluate({str(bag)!r}, {str(labels)!r}, CONFIG, {str(out)!r}, options=QUIET,\n'
            '         pipeline_factory=lambda r: ScriptedPipeline(r, kill_at=50))\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert not (out / 'metrics.json').exists()
    from emotion_ros.evaluation.cli import main
    assert main(['evaluate', '--report-only', '--out', str(out), '--json']) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['status'] == 'killed' and not metrics['complete']
    assert len((out / 'frames.jsonl').read_text().splitlines()) == 50
    assert metrics['detection']['matched'] == 40 + 30  # a: 10..49, b: 20..49


def test_bad_inputs_fail_before_anything_is_written(tmp_path):
    """Unknown topics, labels outside the bag and a missing bag fail clearly, writing nothing."""
    bag = tmp_path / 'bag'
    write_scripted_bag(bag, 'sqlite3', False)
    labels = tmp_path / 'labels.yaml'
    labels.write_text(yaml.safe_dump(LABELS))
    out = tmp_path / 'out'
    with pytest.raises(InputError, match=r"topic '/camera' is not in bag .*/cam \(sensor_msgs"):
        evaluate(bag, labels, CONFIG, out,
                 options=RunOptions(image_topic='/camera', progress=False),
                 pipeline_factory=ScriptedPipeline)
    late = tmp_path / 'late.yaml'
    late.write_text(yaml.safe_dump({'episodes': [{'start': 60.0, 'end': 61.0}]}))
    with pytest.raises(InputError, match='outside the bag'):
        evaluate(bag, late, CONFIG, out, options=QUIET, pipeline_factory=ScriptedPipeline)
    with pytest.raises(InputError, match='bag not found'):
        evaluate(tmp_path / 'nobag', labels, CONFIG, out, options=QUIET,
                 pipeline_factory=ScriptedPipeline)
    assert not out.exists()


def test_command_line_help_and_errors(capsys):
    """`emotion-ros` lists its verbs, `evaluate --help` documents options, errors exit 1."""
    from emotion_ros.evaluation.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(['--help'])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert all(verb in text for verb in ('evaluate', 'make-bag', 'bag-info'))
    with pytest.raises(SystemExit):
        main(['evaluate', '--help'])
    text = capsys.readouterr().out
    assert '--labels' in text and '--live' in text and '--overwrite' in text
    assert main(['evaluate', '/nonexistent/bag', '--labels', '/nonexistent.yaml']) == 1
    assert 'labels file not found' in capsys.readouterr().err


# ------------------------------------------------------ scripted scenario

def _scenario_frames(tmp_path: Path):
    """An empty scene and the same scene with one real person (cut from ultralytics' bus.jpg)."""
    import cv2

    from emotion_ros.sample_media import sample_images
    bus = cv2.resize(cv2.imread(str(sample_images()['bus'])), (480, 640))
    rng = np.random.default_rng(0)
    empty = np.clip(128 + rng.integers(-10, 10, (480, 640, 3)), 0, 255).astype(np.uint8)
    person = empty.copy()
    person[100:440, 250:380] = bus[215:555, 10:140]
    cv2.imwrite(str(tmp_path / 'empty.png'), empty)
    cv2.imwrite(str(tmp_path / 'person.png'), person)
    # Hand-labelled: the man in the beige coat spans x 30-145, y 235-535 in the 480x640 photo.
    return [250 + 30 - 10, 100 + 235 - 215, 250 + 130, 100 + 535 - 215]


def test_scripted_scenario_with_the_real_pipeline(tmp_path, capsys):
    """A person appears, calls for help at 3.0 s: recall 1, time to alert as the cue predicts."""
    sys.path.insert(0, str(Path(__file__).parent))
    from rosgraph import espeak_wav

    from emotion_ros.audio.cues import AudioCueExtractor
    from emotion_ros.audio.pcm import read_wav
    from emotion_ros.evaluation.cli import main
    from emotion_ros.config.robot import load_robot_config
    box = _scenario_frames(tmp_path)
    wav = espeak_wav(tmp_path / 'help.wav', 'Help! Help me!')
    call = 3.0
    labels = tmp_path / 'scenario.yaml'
    labels.write_text(yaml.safe_dump({
        'persons': [{'id': 'walker', 'categories': ['Fear', 'Disquietment'], 'vad': [3, 7, 4],
                     'spans': [{'start': 0.95, 'end': 7.0, 'box': box}]}],
        'episodes': [{'start': call, 'end': 6.0, 'person': 'walker', 'note': 'calls for help'}]}))
    bag = tmp_path / 'scenario'
    assert main(['make-bag', str(bag), '--camera', f"{tmp_path / 'empty.png'}@1",
                 '--camera', f"{tmp_path / 'person.png'}@6", '--wav', f'{wav}@{call}',
                 '--labels', str(labels), '--storage', 'mcap', '--compressed',
                 '--fps', str(FPS), '--start-time', str(START), '--no-progress']) == 0
    out = tmp_path / 'out'
    assert main(['evaluate', str(bag), '--config', str(CONFIG), '--out', str(out),
                 '--no-progress']) == 0
    assert 'episode recall' in capsys.readouterr().out
    metrics = json.loads((out / 'metrics.json').read_text())
    d = metrics['distress']
    assert d['recall'] == 1.0 and d['false_alerts'] == 0, d['alert_list']
    # Reference: when the audio cue extractor alone first hears the call (fusion alerts on it
    # at once), from the same 100 ms chunks the bag holds.
    robot = load_robot_config(str(CONFIG))
    extractor = AudioCueExtractor(robot.audio)
    extractor.load()
    samples, rate = read_wav(wav)
    track = np.zeros(int(7.0 * rate), np.float32)
    start = int(call * rate)
    track[start:start + len(samples)] = samples[:, 0][:len(track) - start]
    heard = None
    for k in range(0, len(track), rate // 10):
        for cue in extractor.push(track[k:k + rate // 10], rate, START + k / rate):
            if cue.help_detected and heard is None:
                heard = cue.stamp - START
        # The utterance's transcript (stamped at its end) reaches the fusion first.
        for said in extractor.pop_transcripts():
            if said.help_detected:
                heard = min(heard if heard is not None else math.inf, said.end - START)
    extractor.close()
    assert heard is not None and call < heard < call + 3.0
    assert d['time_to_alert_s']['median'] == pytest.approx(heard - call, abs=1.0 / FPS)
    # The person was found and matched, and emotions were scored on them.
    assert metrics['detection']['recall'] > 0.8 and metrics['emotion']['samples'] > 10
    assert metrics['performance']['frames_processed'] < metrics['performance']['images_read']


def test_alert_levels_are_parsed_by_name_and_number():
    """Every level is accepted by its name (any case) and its number, and means the same
    constant; anything else is refused naming the known levels."""
    from emotion_ros.evaluation.scoring import parse_level
    from emotion_ros.types import LEVEL_NAMES
    for level, name in LEVEL_NAMES.items():
        assert parse_level(name) == parse_level(name.lower()) == parse_level(str(level)) == level
    for bad in ('0', '4', 'alarm', ''):
        with pytest.raises(ValueError, match='distress'):
            parse_level(bad)

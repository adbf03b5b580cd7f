"""Live evaluation: the node graph fed from a bag agrees with the offline pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from emotion_ros.evaluation.live import compare_alerts, evaluate_live, LiveOptions
from emotion_ros.evaluation.runner import RunOptions

pytest.importorskip('rclpy')
sys.path.insert(0, str(Path(__file__).parent))
from test_evaluation import _scenario_frames, CONFIG, FPS, START  # noqa: E402


def test_compare_alerts_pairs_within_tolerance():
    """Alerts pair by level and nearest time within the tolerance; the rest are listed."""
    offline = [{'t': 1.0, 'level': 2}, {'t': 5.0, 'level': 3}, {'t': 9.0, 'level': 1}]
    live = [{'t': 1.2, 'level': 2}, {'t': 5.5, 'level': 3}, {'t': 7.0, 'level': 2}]
    result = compare_alerts(offline, live, tolerance_s=0.3, min_level=2)
    assert [(p['offline_t'], p['live_t']) for p in result['pairs']] == [(1.0, 1.2)]
    assert [r['t'] for r in result['offline_only']] == [5.0]
    assert [r['t'] for r in result['live_only']] == [5.5, 7.0]
    assert not result['agree'] and result['max_dt_s'] == pytest.approx(0.2)
    assert compare_alerts(offline, offline, 0.0, 1)['agree']


def test_live_graph_agrees_with_offline(tmp_path):
    """Played into the running nodes, the scenario gives the offline alerts and recall."""
    from rosgraph import espeak_wav

    from emotion_ros.evaluation.cli import main
    box = _scenario_frames(tmp_path)
    wav = espeak_wav(tmp_path / 'help.wav', 'Help! Help me!')
    call = 2.5
    labels = tmp_path / 'scenario.yaml'
    labels.write_text(yaml.safe_dump({
        'persons': [{'id': 'walker', 'categories': ['Fear'], 'vad': [3, 7, 4],
                     'spans': [{'start': 0.95, 'end': 6.5, 'box': box}]}],
        'episodes': [{'start': call, 'end': 5.5, 'person': 'walker'}]}))
    bag = tmp_path / 'scenario'
    assert main(['make-bag', str(bag), '--camera', f"{tmp_path / 'empty.png'}@1",
                 '--camera', f"{tmp_path / 'person.png'}@5", '--wav', f'{wav}@{call}',
                 '--labels', str(labels), '--storage', 'sqlite3', '--fps', str(FPS),
                 '--start-time', str(START), '--no-progress']) == 0
    out = tmp_path / 'live'
    metrics = evaluate_live(bag, labels, CONFIG, out, options=RunOptions(progress=False),
                            live=LiveOptions(drain_s=2.0))
    d = metrics['distress']
    assert d['recall'] == 1.0 and d['false_alerts'] == 0, d['alert_list']
    comparison = json.loads((out / 'comparison.json').read_text())
    assert comparison == json.loads(json.dumps(metrics['comparison']))
    # Same alerts as the offline pipeline on the same bag, within the documented tolerance.
    assert comparison['agree'], comparison
    assert comparison['tolerance_s'] == pytest.approx(1 / 5.0 + 1 / FPS, abs=0.01)
    assert comparison['live']['detected'] == comparison['offline']['detected'] == 1
    assert (out / 'offline' / 'metrics.json').exists()
    # The live path was measured: frames went through the nodes with a latency.
    p = metrics['performance']
    assert p['frames_processed'] > 10 and p['images_read'] == 6 * FPS
    assert p['stages_ms']['frame_latency']['median'] > 0  # how long: benchmarks, not here
    assert metrics['detection']['recall'] > 0.8
    assert 'Live vs offline' in (out / 'report.md').read_text()
    assert {p.name for p in (out / 'logs').iterdir()} == {
        'perception_node.log', 'audio_node.log', 'distress_node.log'}

"""The `make demo` program runs end to end on its sample bag and reports real alerts."""

import json
import subprocess
import sys


def test_demo_replays_sample_bag_and_reports_alerts(tmp_path):
    """The demo builds its bag, runs the node graph, and the alerts it saves name a person in
    distress and an audio-only call for help (from model inference on the media)."""
    proc = subprocess.run([sys.executable, '-m', 'emotion_ros.ros.demo', '--out', str(tmp_path)],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / 'demo_bag' / 'metadata.yaml').is_file()
    run = next(tmp_path.glob('run-*'))
    alerts = json.loads((run / 'alerts.json').read_text())
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['max_persons_in_frame'] >= 2 and summary['annotated_frames'] >= 5
    assert list(run.glob('frames/*.jpg'))
    audio_only = [a for a in alerts if a['track_id'] == 0]
    assert audio_only and 'spoken call for help' in audio_only[0]['reasons'][0]
    with_person = [a for a in alerts if a['track_id'] != 0]
    assert with_person and 'person' in with_person[0]
    # Every alert was printed as a readable line while it arrived.
    assert proc.stdout.count('] person #') + proc.stdout.count('] audio only') == len(alerts)

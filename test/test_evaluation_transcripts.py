"""emotion-ros evaluate records every decoded utterance and its help flag (transcripts)."""

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))

from test_evaluation import _scenario_frames, CONFIG, FPS, START  # noqa: E402


def test_evaluate_writes_transcripts_and_the_report_lists_the_calls_heard(tmp_path, capsys):
    """A bag with a call for help at 3 s and calm speech at 8 s: transcripts.jsonl has one
    line per utterance (start/end in bag time, help flag, phrase, detector) and report.md a
    section listing them, so a team sees which calls were heard."""
    from rosgraph import espeak_wav

    from emotion_ros.evaluation.cli import main
    from emotion_ros.evaluation.records import read_jsonl, TranscriptRecord
    box = _scenario_frames(tmp_path)
    call = espeak_wav(tmp_path / 'help.wav', 'Help! Help me!')
    calm = espeak_wav(tmp_path / 'calm.wav', 'The weather is nice today.')
    labels = tmp_path / 'scenario.yaml'
    labels.write_text(yaml.safe_dump({
        'persons': [{'id': 'walker', 'spans': [{'start': 0.95, 'end': 11.0, 'box': box}]}],
        'episodes': [{'start': 3.0, 'end': 6.0, 'person': 'walker', 'note': 'calls for help'}]}))
    bag = tmp_path / 'scenario'
    assert main(['make-bag', str(bag), '--camera', f"{tmp_path / 'person.png'}@11",
                 '--wav', f'{call}@3.0', '--wav', f'{calm}@8.0', '--labels', str(labels),
                 '--storage', 'mcap', '--fps', str(FPS), '--start-time', str(START),
                 '--no-progress']) == 0
    out = tmp_path / 'out'
    assert main(['evaluate', str(bag), '--config', str(CONFIG), '--out', str(out),
                 '--no-progress']) == 0
    capsys.readouterr()
    records = list(read_jsonl(out / 'transcripts.jsonl', TranscriptRecord))
    assert records, (out / 'report.md').read_text()
    helps = [r for r in records if r.help_detected]
    assert helps and all(3.0 - 0.1 <= r.t < 4.5 for r in helps), records
    assert all(r.help_phrase and r.detector == 'whisper' and r.status == 'ok'
               for r in helps)
    later = [r for r in records if r.t >= 7.9]
    assert later and not any(r.help_detected for r in later), records
    assert all(r.t < r.end for r in records)
    report = (out / 'report.md').read_text()
    assert '## Utterances heard (calls for help)' in report
    assert f'{len(records)} utterances decoded by `whisper`' in report
    assert '**yes** (' in report and 'transcripts.jsonl' in report
    assert json.loads((out / 'metrics.json').read_text())['complete']


def test_the_report_counts_utterances_apart_from_early_partial_cues(tmp_path):
    """A partial transcript (an early cue from an utterance still open) is listed but not
    counted as an utterance nor as a failed decode; timeouts and errors are."""
    from emotion_ros.evaluation.records import TranscriptRecord
    from emotion_ros.evaluation.report import transcript_section
    rows = [TranscriptRecord(1.0, 4.0, 'Help!', True, 'help', 0.9, 'en', 0.8, 'whisper', 'm',
                             'partial'),
            TranscriptRecord(1.0, 9.0, 'Help! And more.', True, 'help', 0.9, 'en', 0.8,
                             'whisper', 'm', 'ok'),
            TranscriptRecord(10.0, 11.0, '', False, '', 0.0, '', 0.0, 'whisper', 'm',
                             'timeout')]
    with open(tmp_path / 'transcripts.jsonl', 'w', encoding='utf-8') as f:
        for r in rows:
            f.write(json.dumps(r.to_json()) + '\n')
    text = '\n'.join(transcript_section(tmp_path))
    assert ('2 utterances decoded by `whisper` (m); 1 heard as a call for help; 1 not '
            'decoded (watchdog/error); 1 calls cued early by partial decodes.') in text
    assert text.count('| partial |') == 1

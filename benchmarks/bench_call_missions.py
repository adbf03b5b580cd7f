"""Held-out missions: does the robot alert on calls for help, and only on them?

Issue 14's acceptance check, as a user would run it: continuous missions of about
90 s, each with one voice that neither split of ``bench_help_detection.py`` uses,
calls for help phrased in ways neither split uses, among near-miss and calm sentences
that are also new, with white noise under the speech; every mission is made into a
bag (an empty scene on the camera, so every alert is audio-only) and evaluated with
``emotion-ros evaluate`` (the robot's configuration, the live rate). Each call is a
labelled audio-only episode; the default tolerances of the evaluation decide what an
alert explains (0.5 s before the call to 2 s after it ends).

Nothing in the package was chosen on these sentences and voices: this is a check, not
a dev set. Do not tune on it; if something is changed after looking at it, make new
sentences.

    python benchmarks/bench_call_missions.py                  # 16 missions, 48 calls
    python benchmarks/bench_call_missions.py --missions 4 --set whisper_model=bundled:base

Prints, per mission, the voice, noise, calls heard, false alerts and time to alert,
and what the detector heard for every missed call and every false alert; the total
is recall (calls explained by an alert / calls) and false alerts per mission.
Run from the repository root after ``. tools/env.sh`` (espeak-ng, flite and a
Whisper model as configured).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Voices neither split (nor the babble of bench_help_detection) uses.
VOICES = ['en-gb-scotland', 'flite:kal', 'en-029', 'en-us-nyc', 'en-gb-x-gbcwmd', 'en+m1',
          'en-gb-x-gbclan', 'en+f1']
#: Calls, near misses and calm sentences neither split uses.
CALLS = ['Help! I am down here!', 'Please, somebody help us!', 'I am trapped under the rubble!',
         'Can anybody hear me? I need help!', 'Over here! My leg is broken!',
         'Get me out, please!', 'Help me, I cannot move!', 'Is anyone there? Please help!']
NEAR = ['The helmet was left on the shelf by the hall.',
        'He helped himself to more soup at dinner.',
        'Hello, can you hear the radio from there?',
        'We were trapped in traffic for an hour.',
        'The hero got out of the car and waved.',
        'Over there the kettle is still hot.']
CALM = ['The battery is at eighty percent.', 'Turn right after the second door.',
        'The map shows two exits on this floor.', 'It is getting dark outside now.',
        'The dog sat quietly by the window.', 'We will have lunch at noon tomorrow.']
NOISE_DBFS = (-50.0, -38.0)
SPEECH_DBFS = -23.0
BLOCK_S = 30.0


def make_mission(work: Path, index: int, voice: str, noise_dbfs: float,
                 rng: np.random.Generator, blocks: int) -> Dict[str, Any]:
    """One bag: ``blocks`` blocks of ~30 s, each a call among a near miss and calm speech."""
    import cv2
    import yaml

    from emotion_ros.audio.pcm import write_wav
    from emotion_ros.audio.synth import RATE, set_rms_dbfs, speak
    from emotion_ros.evaluation.bagtools import make_bag, MakeBagOptions
    audio = [np.zeros(int(RATE), np.float32)]
    pos = audio[0].size
    calls: List[Dict[str, Any]] = []
    for b in range(blocks):
        block_start = pos
        kinds = ['near', 'call', 'calm'] if rng.random() < 0.5 else ['calm', 'call', 'near']
        for kind in kinds:
            text = {'call': CALLS, 'near': NEAR, 'calm': CALM}[kind]
            sentence = text[int(rng.integers(len(text)))]
            clip = set_rms_dbfs(speak(sentence, voice), SPEECH_DBFS)
            gap = np.zeros(int(rng.uniform(1.5, 5.0) * RATE), np.float32)
            audio.append(gap)
            pos += gap.size
            if kind == 'call':
                calls.append({'start': pos / RATE, 'end': (pos + clip.size) / RATE,
                              'text': sentence})
            audio.append(clip)
            pos += clip.size
        rest = int(block_start + BLOCK_S * RATE) - pos
        if rest > 0:
            audio.append(np.zeros(rest, np.float32))
            pos += rest
    stream = np.concatenate(audio)
    stream = stream + rng.normal(0.0, 10 ** (noise_dbfs / 20.0), stream.size)
    wav = work / f'mission{index}.wav'
    write_wav(wav, np.clip(stream, -1, 1).astype(np.float32), RATE)
    duration = stream.size / RATE
    empty = work / 'empty.png'
    if not empty.exists():
        cv2.imwrite(str(empty), np.full((240, 320, 3), 120, np.uint8))
    labels = work / f'mission{index}.yaml'
    labels.write_text(yaml.safe_dump({'episodes': [
        {'start': round(c['start'], 3), 'end': round(c['end'], 3), 'note': c['text']}
        for c in calls]}))
    bag = work / 'bags' / f'mission{index:02d}'
    make_bag(bag, [f'{empty}@{duration}'], [f'{wav}@0'], labels,
             MakeBagOptions(fps=5.0, start_time=1_700_000_000.0, min_duration_s=duration,
                            progress=False))
    return {'bag': str(bag), 'voice': voice, 'noise_dbfs': noise_dbfs, 'calls': calls,
            'duration_s': duration}


def robot_config(work: Path, overrides: Sequence[str]) -> Path:
    """config/robot.yaml with ``KEY=VALUE`` overrides of the audio node's parameters."""
    import yaml
    config = yaml.safe_load((ROOT / 'config' / 'robot.yaml').read_text())
    params = next(v['ros__parameters'] for v in config.values()
                  if 'whisper_model' in v.get('ros__parameters', {}))
    for item in overrides:
        key, _, value = item.partition('=')
        if key not in params:
            raise SystemExit(f'--set {item}: {key!r} is not an audio_node parameter')
        params[key] = yaml.safe_load(value)
    path = work / 'robot.yaml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _records(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []


def report(mission: Dict[str, Any], out: Path) -> Dict[str, Any]:
    """Calls heard, false alerts and what was heard, from one evaluation's outputs."""
    distress = json.loads((out / 'metrics.json').read_text())['distress']
    transcripts = _records(out / 'transcripts.jsonl')
    missed = []
    for call, ep in zip(mission['calls'], distress['per_episode']):
        if not ep['detected']:
            heard = [t.get('text', '') for t in transcripts
                     if t['t'] < call['end'] + 0.3 and t['end'] > call['start'] - 0.3]
            missed.append(f"{call['text']!r} at {call['start']:.1f} s: heard {heard}")
    false = [f"{a['t']:.1f} s: {'; '.join(a.get('reasons', []))}"
             for a in distress['alert_list'] if a.get('false_alert')]
    return {'calls': len(mission['calls']), 'heard': int(distress['detected']),
            'false_alerts': int(distress['false_alerts']),
            'time_to_alert_s': distress['time_to_alert_s']['median'],
            'missed': missed, 'false': false}


def _seconds(value: Any) -> str:
    return '-' if value is None or value != value else f'{value:.2f}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--missions', type=int, default=16,
                        help='number of missions (voices in turn, noise levels alternating)')
    parser.add_argument('--blocks', type=int, default=3,
                        help='30 s blocks (one call each) per mission')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='override an audio_node parameter of config/robot.yaml')
    parser.add_argument('--jobs', type=int, default=1, help='bags evaluated in parallel')
    parser.add_argument('--keep', default='', help='keep bags and outputs in this folder')
    parser.add_argument('--json', default='', help='write the results here as JSON')
    args = parser.parse_args()

    from emotion_ros.evaluation.batch import evaluate_many
    from emotion_ros.evaluation.runner import RunOptions
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix='call_missions_'))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    missions = []
    for i in range(args.missions):
        voice = VOICES[i % len(VOICES)]
        noise = NOISE_DBFS[(i + i // len(VOICES)) % len(NOISE_DBFS)]
        missions.append(make_mission(work, i, voice, noise, rng, args.blocks))
        print(f'made mission {i}: {voice}, noise {noise:g} dBFS, '
              f"{missions[-1]['duration_s']:.0f} s", flush=True)
    config = robot_config(work, args.set)
    out = work / 'eval'
    if out.exists():
        shutil.rmtree(out)
    evaluate_many([m['bag'] for m in missions], config, out, options=RunOptions(progress=False),
                  jobs=args.jobs, progress=False)
    rows = []
    print('\n| mission | voice | noise (dBFS) | calls heard | false alerts | time to alert '
          'p50 (s) |\n|---|---|---|---|---|---|')
    for i, m in enumerate(missions):
        row = report(m, out / Path(m['bag']).name)
        rows.append({**row, 'voice': m['voice'], 'noise_dbfs': m['noise_dbfs']})
        print(f"| {i} | {m['voice']} | {m['noise_dbfs']:g} | {row['heard']} / {row['calls']} "
              f"| {row['false_alerts']} | {_seconds(row['time_to_alert_s'])} |")
    calls = sum(r['calls'] for r in rows)
    heard = sum(r['heard'] for r in rows)
    false = sum(r['false_alerts'] for r in rows)
    print(f'| **all** | {len({m["voice"] for m in missions})} voices | | **{heard} / {calls}** '
          f'(recall {heard / max(calls, 1):.3f}) | **{false}** ({false / max(len(rows), 1):.2f} '
          f'per mission, at most {max((r["false_alerts"] for r in rows), default=0)}) | |')
    for i, r in enumerate(rows):
        for line in r['missed']:
            print(f'  mission {i} missed: {line}')
        for line in r['false']:
            print(f'  mission {i} false alert at {line}')
    print(f'\n{time.monotonic() - started:.0f} s; outputs in {work}'
          + ('' if args.keep else ' (temporary: --keep DIR keeps them)'))
    if args.json:
        Path(args.json).write_text(json.dumps({'overrides': args.set, 'missions': rows},
                                              indent=1, default=str))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()

"""Benchmark the offline bag evaluation: speed against real time and peak memory vs bag size.

Makes synthetic missions of several lengths from the photos and speech this
machine has (ultralytics' bus.jpg / zidane.jpg, espeak-ng "Help!" calls every
20 s), evaluates each with the robot's configuration (CPU light backend by
default) in a fresh child process, and reports the real-time factor, the
per-stage times and the peak resident memory. If peak memory does not grow
with the bag, reading streams as it should.

Each bag is evaluated with the stages run serially (one core: the whole
pipeline in one process) and in parallel (the audio stage in a worker process
next to perception), one after the other in this run, with the ratio of the
two and the load average before each (the machine may be shared); the alerts
of both must be identical.

    python benchmarks/bench_evaluation.py                       # 20 s and 120 s, JPEG
    python benchmarks/bench_evaluation.py --durations 90        # the 90 s, 15 FPS mission
    python benchmarks/bench_evaluation.py --raw --durations 60  # raw rgb8 (large bags)

Run from the repository root after ``. tools/env.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALL_EVERY_S = 20.0
# Evaluates with another checkout's code (--baseline): same measurements as child().
BASELINE_CHILD = """
import json, resource, sys, time
from pathlib import Path
base, bag, labels, config, out = sys.argv[1:]
import emotion_ros
assert Path(emotion_ros.__file__).resolve().is_relative_to(Path(base)), emotion_ros.__file__
from emotion_ros.evaluation.runner import evaluate, RunOptions
start = time.monotonic()
metrics = evaluate(bag, labels, config, out, options=RunOptions(progress=False))
perf = metrics['performance']
print(json.dumps({
    'wall_s': time.monotonic() - start, 'replay_s': perf['wall_s'],
    'model_load_s': perf['model_load_s'], 'bag_duration_s': perf['bag_duration_s'],
    'realtime_factor': perf['realtime_factor'],
    'images_read_per_s': perf['images_read_per_s'],
    'frames_processed': perf['frames_processed'], 'images_read': perf['images_read'],
    'stages_ms': {k: v['mean'] for k, v in perf['stages_ms'].items()},
    'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    'rss_early_replay_mb': float('nan'), 'rss_end_mb': float('nan'),
    'recall': metrics['distress']['recall'],
    'false_alerts_per_hour': metrics['distress']['false_alerts_per_hour'],
    'stages': 'baseline ' + base, 'alerts': (Path(out) / 'alerts.jsonl').read_text()}))
"""


def make_media(work: Path, size: tuple) -> dict:
    """Scene images and a spoken call for help (16 kHz WAV)."""
    import cv2
    import numpy as np

    from emotion_ros.sample_media import sample_images
    paths = {}
    for name, src in sample_images(('bus', 'zidane')).items():
        if name not in ('bus', 'zidane'):
            continue
        img = cv2.resize(cv2.imread(str(src)), size)
        paths[name] = work / f'{name}.png'
        cv2.imwrite(str(paths[name]), img)
    empty = np.full((size[1], size[0], 3), 120, np.uint8)
    paths['empty'] = work / 'empty.png'
    cv2.imwrite(str(paths['empty']), empty)
    wav = work / 'help.wav'
    if shutil.which('espeak-ng') is None:
        raise SystemExit('espeak-ng is needed for the spoken calls (apt-get install espeak-ng)')
    subprocess.run(['espeak-ng', '-s', '140', '-w', str(wav), 'Help! Help me!'], check=True)
    paths['help'] = wav
    return paths


def make_mission(work: Path, media: dict, duration: float, args: argparse.Namespace) -> tuple:
    """Make a bag of ``duration`` s: scenes change every 5 s, a call for help every 20 s."""
    import yaml

    from emotion_ros.evaluation.bagtools import make_bag, MakeBagOptions
    scenes = ['empty', 'zidane', 'bus', 'zidane']
    camera = []
    t = 0.0
    k = 0
    while t < duration - 1e-6:
        length = min(5.0, duration - t)
        camera.append(f'{media[scenes[k % len(scenes)]]}@{length}')
        t += length
        k += 1
    calls = [c for c in [CALL_EVERY_S * (i + 0.5) for i in range(int(duration // CALL_EVERY_S)
                                                                 + 1)]
             if c + 3 < duration]
    labels = work / f'labels_{int(duration)}.yaml'
    labels.write_text(yaml.safe_dump({'episodes': [{'start': c, 'end': c + 3.0}
                                                   for c in calls]}))
    noisy = f'_noise{args.camera_noise:g}' if args.camera_noise else ''
    bag = work / f'mission_{int(duration)}s_{args.storage}{"_raw" if args.raw else ""}{noisy}'
    if bag.exists():
        shutil.rmtree(bag)
    options = MakeBagOptions(storage=args.storage, fps=args.fps, compressed=not args.raw,
                             camera_noise=args.camera_noise, noise_dbfs=-55.0,
                             start_time=1_700_000_000.0, min_duration_s=duration,
                             progress=False)
    info = make_bag(bag, camera, [f"{media['help']}@{c}" for c in calls], labels, options)
    return bag, labels, info


def child(bag: str, labels: str, config: str, out: str, stages: str) -> None:
    """Evaluate one bag in this (fresh) process; print a JSON line with the measurements."""
    import resource

    import psutil

    from emotion_ros.evaluation.runner import evaluate, RunOptions
    proc = psutil.Process()
    samples = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), proc.memory_info().rss))
            stop.wait(0.25)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.monotonic()
    metrics = evaluate(bag, labels, config, out,
                       options=RunOptions(progress=False, parallel=stages == 'parallel'))
    wall = time.monotonic() - start
    stop.set()
    thread.join()
    perf = metrics['performance']
    # Memory once the models are loaded (first 20 % of the replay) vs the end.
    replay = [rss for t, rss in samples if t >= start + perf['model_load_s']]
    head = replay[:max(1, len(replay) // 5)]
    print(json.dumps({
        'wall_s': wall, 'replay_s': perf['wall_s'], 'model_load_s': perf['model_load_s'],
        'bag_duration_s': perf['bag_duration_s'], 'realtime_factor': perf['realtime_factor'],
        'images_read_per_s': perf['images_read_per_s'],
        'frames_processed': perf['frames_processed'], 'images_read': perf['images_read'],
        'stages_ms': {k: v['mean'] for k, v in perf['stages_ms'].items()},
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB -> MiB
        'rss_early_replay_mb': max(head) / 2**20 if head else None,
        'rss_end_mb': replay[-1] / 2**20 if replay else None,
        'recall': metrics['distress']['recall'],
        'false_alerts_per_hour': metrics['distress']['false_alerts_per_hour'],
        'stages': perf['stages'], 'alerts': (Path(out) / 'alerts.jsonl').read_text(),
    }))


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--durations', type=float, nargs='+', default=[20.0, 120.0])
    parser.add_argument('--fps', type=float, default=15.0)
    parser.add_argument('--size', default='640x480')
    parser.add_argument('--storage', choices=('sqlite3', 'mcap'), default='mcap')
    parser.add_argument('--raw', action='store_true', help='raw rgb8 images instead of JPEG')
    parser.add_argument('--camera-noise', type=float, default=0.0, metavar='SIGMA',
                        help='Gaussian sensor noise (grey levels) on every frame, so still '
                        'scenes change a little per frame as with a real camera')
    parser.add_argument('--config', default=str(ROOT / 'config' / 'robot.yaml'))
    parser.add_argument('--workdir', default=str(ROOT / 'build' / 'bench_evaluation'))
    parser.add_argument('--keep', action='store_true', help='keep the bags')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('--stages', nargs='+', choices=('serial', 'parallel'),
                        default=['serial', 'parallel'], help='how to run the stages')
    parser.add_argument('--baseline', metavar='REPO',
                        help='also evaluate each bag first with the code of another checkout '
                        '(e.g. the main branch before a change), in the same run')
    parser.add_argument('--child', nargs=5, metavar=('BAG', 'LABELS', 'CONFIG', 'OUT', 'STAGES'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in args.size.split('x'))
    media = make_media(work, size)
    rows = []
    for duration in args.durations:
        t0 = time.monotonic()
        bag, labels, info = make_mission(work, media, duration, args)
        made = time.monotonic() - t0
        by_mode = {}
        for stages in (['baseline'] if args.baseline else []) + args.stages:
            out = work / f'eval_{bag.name}_{stages}'
            if out.exists():
                shutil.rmtree(out)
            load = os.getloadavg()
            command = [sys.executable, __file__, '--child', str(bag), str(labels),
                       args.config, str(out), stages]
            env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
            if stages == 'baseline':  # that checkout's own benchmark child and package
                base = Path(args.baseline).resolve()
                # Its own robot.yaml when the default one is measured.
                config = (str(base / 'config' / 'robot.yaml')
                          if Path(args.config).resolve() == ROOT / 'config' / 'robot.yaml'
                          else args.config)
                command = [sys.executable, '-c', BASELINE_CHILD, str(base), str(bag),
                           str(labels), config, str(out)]
                env['PYTHONPATH'] = os.pathsep.join(
                    [str(base)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                                   if p and Path(p).resolve() != ROOT])
            proc = subprocess.run(command, capture_output=True, text=True, env=env,
                                  cwd=args.baseline if stages == 'baseline' else None)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result.update({'bag': bag.name, 'bag_mb': info.size_bytes / 1e6,
                           'make_bag_s': made, 'messages': info.message_count,
                           'mode': stages, 'loadavg_before': load,
                           'loadavg_after': os.getloadavg()})
            alerts = result.pop('alerts')
            if by_mode:
                first = next(iter(by_mode.values()))
                result['same_alerts'] = alerts == first[1]
                result['speedup'] = first[0]['replay_s'] / result['replay_s']
            by_mode[stages] = (result, alerts)
            rows.append(result)
            print(json.dumps(result), flush=True)
        if not args.keep:
            shutil.rmtree(bag)
    print()
    print(f'{os.cpu_count()} CPUs, config {args.config}, {args.fps:g} fps {args.size}, '
          f'{"raw rgb8" if args.raw else "JPEG"}, {args.storage}, '
          f'camera noise sigma {args.camera_noise:g}')
    print('| bag | stages | load avg (1 min) before | bag MB | duration s | replay s | '
          'x real time | vs first mode | same alerts | frames read/s | processed | '
          'peak RSS MiB | RSS early / end of replay MiB | recall |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        speedup = f"{r['speedup']:.2f}x" if 'speedup' in r else '1'
        print(f"| {r['bag']} | {r['stages']} | {r['loadavg_before'][0]:.2f} | "
              f"{r['bag_mb']:.0f} | {r['bag_duration_s']:.0f} | "
              f"{r['replay_s']:.1f} | {r['realtime_factor']:.2f} | {speedup} | "
              f"{r.get('same_alerts', '-')} | "
              f"{r['images_read_per_s']:.1f} | {r['frames_processed']} | "
              f"{r['peak_rss_mb']:.0f} | {r['rss_early_replay_mb']:.0f} / "
              f"{r['rss_end_mb']:.0f} | {r['recall']} |")
    stages = sorted({k for r in rows for k in r['stages_ms']})
    print()
    print('| bag | stages | ' + ' | '.join(f'{s} ms' for s in stages) + ' |')
    print('|---|---|' + '---|' * len(stages))
    for r in rows:
        cells = [f"{r['stages_ms'].get(s, float('nan')):.1f}" for s in stages]
        print(f"| {r['bag']} | {r['stages']} | " + ' | '.join(cells) + ' |')
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == '__main__':
    main()

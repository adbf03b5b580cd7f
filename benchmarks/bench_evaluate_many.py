"""Benchmark several bags in one ``emotion-ros evaluate`` command: workers and rate modes.

Makes N synthetic missions (the photos, speech and scene changes of
bench_evaluation.py), then evaluates the folder with ``--jobs`` 1, 2, ... at
the live rate and, with ``--every-frame``, processing every frame; prints the
wall time of each command, the bag seconds per wall second over all workers,
the frames processed and the pooled totals, and checks that the per-bag
alerts and metrics do not depend on the number of workers.

    python benchmarks/bench_evaluate_many.py                      # 3 bags of 20 s, jobs 1 and 2
    python benchmarks/bench_evaluate_many.py --bags 4 --duration 60 --jobs 1 2 --every-frame

Run from the repository root after ``. tools/env.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _run(folder: Path, out: Path, config: str, jobs: int, every_frame: bool) -> dict:
    if out.exists():
        shutil.rmtree(out)
    argv = [str(Path(sys.executable).parent / 'emotion-ros'), 'evaluate', str(folder),
            '--out', str(out), '--config', config, '--jobs', str(jobs), '--no-progress']
    if every_frame:
        argv.append('--every-frame')
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    summary = json.loads((out / 'summary.json').read_text())
    return {'jobs': jobs, 'every_frame': every_frame, 'command_wall_s': wall,
            'summary': summary}


def _same_results(a: dict, b: dict) -> bool:
    keys = ('frames_read', 'frames_processed', 'alerts', 'episodes_detected', 'false_alerts',
            'detection_matched', 'detection_missed', 'detection_false_positives')
    return all([r[k] for k in keys] == [s[k] for k in keys]
               for r, s in zip(a['summary']['bags'], b['summary']['bags']))


def _fmt(value: object) -> str:
    return 'n/a' if value is None else f'{value:.3f}'


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    from bench_evaluation import make_media, make_mission
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--bags', type=int, default=3)
    parser.add_argument('--duration', type=float, default=20.0, help='seconds per bag')
    parser.add_argument('--jobs', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--every-frame', action='store_true',
                        help='also run every command with --every-frame')
    parser.add_argument('--fps', type=float, default=15.0)
    parser.add_argument('--camera-noise', type=float, default=0.0, metavar='SIGMA',
                        help='Gaussian sensor noise (grey levels) on every frame')
    parser.add_argument('--size', default='640x480')
    parser.add_argument('--config', default=str(ROOT / 'config' / 'robot.yaml'))
    parser.add_argument('--workdir', default=str(ROOT / 'build' / 'bench_evaluate_many'))
    args = parser.parse_args()
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    media = make_media(work, tuple(int(v) for v in args.size.split('x')))
    folder = work / 'missions'
    folder.mkdir()
    bag_args = argparse.Namespace(storage='mcap', fps=args.fps, raw=False,
                                  camera_noise=args.camera_noise)
    for k in range(args.bags):
        bag, labels, _ = make_mission(work, media, args.duration, bag_args)
        shutil.copy(labels, bag / 'labels.yaml')
        bag.rename(folder / f'mission_{k + 1:02d}')
    runs = []
    for every_frame in ([False, True] if args.every_frame else [False]):
        for jobs in args.jobs:
            run = _run(folder, work / f'eval_j{jobs}_{"every" if every_frame else "live"}',
                       args.config, jobs, every_frame)
            runs.append(run)
            print(json.dumps({k: v for k, v in run.items() if k != 'summary'}), flush=True)
    print()
    print(f'{os.cpu_count()} CPUs, {args.bags} bags of {args.duration:g} s at {args.fps:g} fps '
          f'{args.size}, config {args.config}')
    print('| frames | jobs | command wall s | bag s | x real time (command) | '
          'frames read / processed | alerts | episode recall | detection recall | '
          'same per-bag results as jobs ' + str(args.jobs[0]) + ' |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for run in runs:
        total = run['summary']['total']
        first = next(r for r in runs if r['every_frame'] == run['every_frame'])
        print(f"| {run['summary']['rate']} | {run['jobs']} | {run['command_wall_s']:.1f} | "
              f"{total['duration_s']:.0f} | {total['duration_s'] / run['command_wall_s']:.2f} | "
              f"{total['frames_read']} / {total['frames_processed']} | {total['alerts']} | "
              f"{_fmt(total['episode_recall'])} | {_fmt(total['detection_recall'])} | "
              f"{'yes' if _same_results(run, first) else 'NO'} |")


if __name__ == '__main__':
    main()

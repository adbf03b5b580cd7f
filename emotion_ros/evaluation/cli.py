"""The ``emotion-ros`` command: one entry point, one verb per task.

Adding a verb: write a ``setup(parser)`` function that declares the verb's
arguments and calls ``parser.set_defaults(handler=fn)`` with ``fn(args) -> int``,
and add a line to :data:`COMMANDS`. Only the chosen verb's module is
imported, so ``emotion-ros --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# verb -> ('module:setup function', one-line help)
COMMANDS: Dict[str, Tuple[str, str]] = {
    'evaluate': ('emotion_ros.evaluation.cli:setup_evaluate',
                 'replay a labelled bag through the pipeline and score it'),
    'make-bag': ('emotion_ros.evaluation.cli:setup_make_bag',
                 'make a labelled test bag from videos, images and WAV files'),
    'bag-info': ('emotion_ros.evaluation.cli:setup_bag_info',
                 'show what a bag holds (storage, duration, topics)'),
    'up': ('emotion_ros.ros.supervisor:setup_up',
           'start the robot node graph (what ros2 launch emotion_ros robot.launch.py starts)'),
}


def _resolve(target: str) -> Callable[[argparse.ArgumentParser], None]:
    module, _, name = target.partition(':')
    return getattr(importlib.import_module(module), name)


def build_parser(verb: Optional[str] = None) -> argparse.ArgumentParser:
    """Build the top-level parser; only ``verb``'s arguments are set up (all get help)."""
    parser = argparse.ArgumentParser(
        prog='emotion-ros',
        description='emotion_ros tools: start the robot node graph (up), evaluate the '
                    'distress pipeline on recorded bags, '
                    'make test bags, inspect bags.')
    parser.add_argument('-v', '--verbose', action='store_true', help='log more detail')
    sub = parser.add_subparsers(dest='verb', metavar='COMMAND')
    for name, (target, help_text) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text[0].upper()
                               + help_text[1:] + '.')
        if name == verb:
            _resolve(target)(child)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage, 130 ^C)."""
    args_list: List[str] = list(sys.argv[1:] if argv is None else argv)
    # The verb is the first word that is not an option (top-level options take no value).
    verb = next((a for a in args_list if not a.startswith('-')), None)
    parser = build_parser(verb)
    args = parser.parse_args(args_list)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    if not args.verb:
        parser.print_help()
        return 2
    from emotion_ros.errors import EmotionRosError
    try:
        return int(args.handler(args) or 0)
    except EmotionRosError as exc:
        print(f'emotion-ros {args.verb}: error: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'emotion-ros {args.verb}: interrupted', file=sys.stderr)
        return 130


# ------------------------------------------------------------------ helpers
def default_config_path() -> str:
    """``config/robot.yaml`` here, else in the checkout or installed share folder."""
    candidates = [Path('config') / 'robot.yaml']
    root = os.environ.get('EMOTION_ROS_ROOT')
    if root:
        candidates.append(Path(root) / 'config' / 'robot.yaml')
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / 'share' / 'emotion_ros' / 'config' / 'robot.yaml')
    candidates.append(Path(__file__).resolve().parents[1] / 'config' / 'robot.yaml')
    for path in candidates:
        if path.is_file():
            return str(path)
    return str(candidates[0])


def _size(text: str) -> Tuple[int, int]:
    try:
        w, h = text.lower().split('x')
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected WIDTHxHEIGHT, got {text!r}') from None


def _level(text: str) -> int:
    from emotion_ros.evaluation.scoring import parse_level
    try:
        return parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ----------------------------------------------------------------- evaluate
def setup_evaluate(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``emotion-ros evaluate``."""
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.epilog = ('Writes metrics.json, report.md, plots and the raw records (frames, '
                     'cues, alerts, scores as JSON lines) to --out. Several bags (paths, a '
                     "folder of bags, or a quoted pattern such as 'missions/*.mcap') are "
                     'evaluated in parallel (--jobs), each into its own subfolder of --out, '
                     'with one summary table across them (summary.md, summary.json, '
                     'summary.csv); the exit status is 1 if any bag failed. Frames are '
                     'processed at the live rate (perception.max_rate_hz: what the robot '
                     'would do) unless --every-frame (for scoring). See docs/evaluation.md.')
    parser.add_argument('bag', nargs='*', metavar='BAG',
                        help='rosbag2 folder (or .db3/.mcap file); several bags, a folder '
                        'holding bags, or a pattern (quoted or not) evaluate each bag')
    parser.add_argument('--labels', help='labels file (YAML/JSON); default: labels.yaml or '
                        'labels.json inside the bag folder (for a .db3/.mcap file: '
                        '<name>.labels.yaml beside it); with several bags each has its own')
    parser.add_argument('--config', default=None,
                        help='robot parameters file the nodes use (default: config/robot.yaml)')
    parser.add_argument('--out', help='output folder (must not exist or be empty); default: '
                        'eval-<bag name> (several bags: eval-<folder name>, or eval-bags)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a previous evaluation in --out')
    parser.add_argument('--image-topic', default='',
                        help="camera topic (default: from the labels, else the bag's only one)")
    parser.add_argument('--audio-topic', default='',
                        help="audio topic, or 'none' (default: labels, else the only one)")
    parser.add_argument('--start', type=float, default=0.0,
                        help='skip this many seconds of the bag')
    parser.add_argument('--duration', type=float, default=0.0,
                        help='evaluate only this many seconds (0: to the end)')
    parser.add_argument('--stamp-source', choices=('auto', 'header', 'log'), default='auto',
                        help='clock for the pipeline: message header stamps, bag receive times, '
                        'or header unless it is far from receive time')
    parser.add_argument('--every-frame', action='store_true',
                        help='process every frame of the bag (for scoring; faster than the '
                        'robot could) instead of the live rate perception.max_rate_hz of the '
                        'config (what the robot would do); the report states which')
    parser.add_argument('--jobs', type=int, default=0, metavar='N',
                        help='several bags: evaluate N at a time, one worker process each, '
                        'each loading its own models (0: one per CPU core, at most one per '
                        'bag; with a GPU backend use as many as fit in GPU memory)')
    group = parser.add_argument_group('scoring (see docs/evaluation.md)')
    group.add_argument('--iou', type=float, default=None,
                       help='IoU to match a predicted person to a labelled one (default 0.3)')
    group.add_argument('--min-level', type=_level, default=None, metavar='LEVEL',
                       help='lowest alert level that counts: watch, distress or emergency '
                       '(or 1, 2, 3; default distress)')
    group.add_argument('--early-tolerance', type=float, default=None,
                       help='s an alert may precede a labelled episode (default 0.5)')
    group.add_argument('--late-tolerance', type=float, default=None,
                       help='s an alert may follow a labelled episode (default 2.0)')
    group.add_argument('--false-alert-merge', type=float, default=None,
                       help='false alerts of a track closer than this count once (default 10)')
    group = parser.add_argument_group('modes')
    group.add_argument('--report-only', action='store_true',
                       help='recompute metrics and report from the records in --out (e.g. '
                       'after a crash); no bag needed')
    group.add_argument('--live', action='store_true',
                       help='play the bag into the running node graph (started here) and '
                       'score what it publishes, instead of the offline pipeline')
    group.add_argument('--rate', type=float, default=1.0, help='--live: playback rate factor')
    group.add_argument('--startup-timeout', type=float, default=120.0,
                       help='--live: seconds to wait for the nodes to come up')
    parser.add_argument('--json', action='store_true',
                        help='print metrics.json instead of the summary table')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(handler=run_evaluate)


def _eval_config(args: argparse.Namespace) -> object:
    from emotion_ros.config.schema import from_mapping
    from emotion_ros.evaluation.scoring import EvalConfig
    values = {'iou_threshold': args.iou, 'min_alert_level': args.min_level,
              'early_tolerance_s': args.early_tolerance, 'late_tolerance_s': args.late_tolerance,
              'false_alert_merge_s': args.false_alert_merge}
    return from_mapping(EvalConfig, {k: v for k, v in values.items() if v is not None})


def _default_labels(bag: Path) -> Optional[Path]:
    from emotion_ros.evaluation.batch import find_labels
    return find_labels(bag)


def run_evaluate(args: argparse.Namespace) -> int:
    """``emotion-ros evaluate``."""
    from emotion_ros.errors import InputError
    from emotion_ros.evaluation.report import format_summary
    if args.report_only:
        if not args.out:
            raise InputError('--report-only needs --out (the evaluation folder)', kind='option')
        from emotion_ros.evaluation.runner import report_from_dir
        metrics = report_from_dir(args.out)
    else:
        if not args.bag:
            raise InputError('no bag given (emotion-ros evaluate BAG --labels FILE ...)',
                             kind='option')
        if args.every_frame and args.live:
            raise InputError('--every-frame applies to the offline pipeline; --live plays the '
                             'bag into the node graph, which runs at its own rate',
                             kind='option')
        from emotion_ros.evaluation.batch import expand_bags
        bags, several = expand_bags(args.bag)
        config = args.config or default_config_path()
        from emotion_ros.evaluation.runner import RunOptions
        options = RunOptions(image_topic=args.image_topic, audio_topic=args.audio_topic,
                             start_s=args.start, duration_s=args.duration,
                             stamp_source=args.stamp_source, overwrite=args.overwrite,
                             progress=not args.no_progress, every_frame=args.every_frame)
        eval_config = _eval_config(args)
        if several:
            return _evaluate_several(args, bags, config, eval_config, options)
        bag = bags[0]
        labels = Path(args.labels) if args.labels else _default_labels(bag)
        if labels is None:
            raise InputError(f'no --labels given and no labels.yaml/labels.json in {bag}',
                             kind='labels')
        out = Path(args.out) if args.out else Path(f'eval-{bag.resolve().name}')
        if args.live:
            from emotion_ros.evaluation.live import evaluate_live, LiveOptions
            metrics = evaluate_live(bag, labels, config, out, eval_config, options,
                                    LiveOptions(rate=args.rate,
                                                startup_timeout_s=args.startup_timeout))
        else:
            from emotion_ros.evaluation.runner import evaluate
            metrics = evaluate(bag, labels, config, out, eval_config, options)
        print(f'results in {out}', file=sys.stderr)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(format_summary(metrics))
        comparison = metrics.get('comparison')
        if comparison:
            print(f"live vs offline: {'agree' if comparison['agree'] else 'DIFFER'} "
                  f"({len(comparison['pairs'])} alert pairs, {len(comparison['offline_only'])} "
                  f"offline only, {len(comparison['live_only'])} live only, tolerance "
                  f"{comparison['tolerance_s']:.2f} s)")
    return 0


def _evaluate_several(args: argparse.Namespace, bags: List[Path], config: str,
                      eval_config: object, options: object) -> int:
    """``emotion-ros evaluate`` with several bags: parallel workers, one summary."""
    from emotion_ros.errors import InputError
    from emotion_ros.evaluation.batch import evaluate_many, SUMMARY_MD
    if args.live:
        raise InputError('--live evaluates one bag at a time (it starts the node graph); '
                         f'{len(bags)} bags given', kind='option')
    if args.labels and len(bags) > 1:
        raise InputError(f'--labels names one labels file but {len(bags)} bags are given; '
                         'each bag is scored against its own labels (labels.yaml in the bag '
                         'folder, or <name>.labels.yaml beside a .db3/.mcap file)',
                         kind='option')
    if args.out:
        out = Path(args.out)
    else:
        folders = [Path(b) for b in args.bag if Path(b).is_dir()]
        out = Path(f'eval-{folders[0].resolve().name}' if len(args.bag) == 1 and folders
                   else 'eval-bags')
    summary = evaluate_many(bags, config, out, eval_config, options, jobs=args.jobs,
                            labels=args.labels, progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print((out / SUMMARY_MD).read_text(encoding='utf-8'))
    print(f'results in {out} ({summary["complete"]} of {len(bags)} bags complete, '
          f'{summary["failed"]} failed)', file=sys.stderr)
    return 1 if summary['failed'] or summary['pending'] else 0


# ----------------------------------------------------------------- make-bag
def setup_make_bag(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``emotion-ros make-bag``."""
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.epilog = ('Example: emotion-ros make-bag mission_01 --camera empty.jpg@2 '
                     '--camera walk.mp4 --wav help.wav@5 --labels mission_01.yaml '
                     '--storage mcap')
    parser.add_argument('out', help='bag folder to create (must not exist)')
    parser.add_argument('--camera', action='append', default=[], metavar='SRC[@SECONDS]',
                        help='video file, image folder or image (repeat: played in order); '
                        '@SECONDS limits a video/folder or sets how long an image shows')
    parser.add_argument('--wav', action='append', default=[], metavar='WAV[@OFFSET]',
                        help='WAV clip placed OFFSET s after the start (default: after the '
                        'previous clip); repeat for several')
    parser.add_argument('--labels', help='labels file to check against the bag and store in it')
    parser.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3')
    parser.add_argument('--fps', type=float, default=10.0, help='camera frame rate')
    parser.add_argument('--size', type=_size, default=None, metavar='WxH',
                        help="resize frames (default: the first frame's size)")
    parser.add_argument('--compressed', action='store_true',
                        help='write sensor_msgs/CompressedImage (JPEG) instead of Image')
    parser.add_argument('--jpeg-quality', type=int, default=90)
    parser.add_argument('--encoding', default='rgb8', help='raw Image encoding (rgb8, bgr8, ...)')
    parser.add_argument('--image-topic', default='/camera/image_raw')
    parser.add_argument('--audio-topic', default='/audio')
    parser.add_argument('--audio-rate', type=int, default=16000, help='audio sample rate (Hz)')
    parser.add_argument('--audio-chunk-ms', type=float, default=100.0,
                        help='audio per AudioFrame message')
    parser.add_argument('--sample-format', choices=('S16LE', 'S32LE', 'F32LE'), default='S16LE')
    parser.add_argument('--noise-dbfs', type=float, default=None,
                        help='add white noise at this level (e.g. -60) under the clips')
    parser.add_argument('--camera-noise', type=float, default=0.0, metavar='SIGMA',
                        help='add Gaussian sensor noise of this sigma (grey levels) to every '
                        'frame, so a still scene changes a little per frame as with a real '
                        'camera (default: 0, none)')
    parser.add_argument('--min-duration', type=float, default=0.0,
                        help='make the bag at least this long (holds the last frame)')
    parser.add_argument('--start-time', type=float, default=None,
                        help='ROS time (s) of the first message (default: now)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the noise')
    parser.add_argument('--camera-info', action='store_true',
                        help='write sensor_msgs/CameraInfo (ideal pinhole, --hfov) on '
                        '<image namespace>/camera_info with every frame')
    parser.add_argument('--hfov', type=float, default=60.0,
                        help='horizontal field of view of that camera (degrees)')
    parser.add_argument('--depth', action='store_true',
                        help='also write an aligned 16UC1 depth image (mm) on <image '
                        'namespace>/depth/image_raw: the labelled persons at the z of their '
                        'span position (needs --labels with positions), a wall behind')
    parser.add_argument('--depth-background', type=float, default=8.0,
                        help='depth of the wall behind the persons (m)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(handler=run_make_bag)


def run_make_bag(args: argparse.Namespace) -> int:
    """``emotion-ros make-bag``."""
    from emotion_ros.evaluation.bagtools import format_bag_info, make_bag, MakeBagOptions
    options = MakeBagOptions(
        storage=args.storage, image_topic=args.image_topic, audio_topic=args.audio_topic,
        fps=args.fps, size=args.size, compressed=args.compressed,
        jpeg_quality=args.jpeg_quality, encoding=args.encoding, audio_rate=args.audio_rate,
        audio_chunk_s=args.audio_chunk_ms / 1000.0, sample_format=args.sample_format,
        noise_dbfs=args.noise_dbfs, camera_noise=args.camera_noise,
        start_time=args.start_time, min_duration_s=args.min_duration, seed=args.seed,
        progress=not args.no_progress,
        camera_info=args.camera_info, hfov_deg=args.hfov, depth=args.depth,
        depth_background_m=args.depth_background)
    info = make_bag(args.out, args.camera, args.wav, args.labels, options)
    print(format_bag_info(info))
    return 0


# ----------------------------------------------------------------- bag-info
def setup_bag_info(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``emotion-ros bag-info``."""
    parser.add_argument('bag', help='rosbag2 folder (or .db3/.mcap file)')
    parser.add_argument('--json', action='store_true', help='print JSON')
    parser.set_defaults(handler=run_bag_info)


def run_bag_info(args: argparse.Namespace) -> int:
    """``emotion-ros bag-info``."""
    import dataclasses

    from emotion_ros.evaluation.bagtools import format_bag_info
    from emotion_ros.evaluation.bags import BagReader
    with BagReader(args.bag) as bag:
        info = bag.info
    if args.json:
        data = dataclasses.asdict(info)
        data['duration_s'] = info.duration_s
        print(json.dumps(data, indent=2))
    else:
        print(format_bag_info(info))
    return 0


if __name__ == '__main__':
    sys.exit(main())

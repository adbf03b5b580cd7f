"""Several bags in one command: ``emotion-ros evaluate missions/`` or ``'missions/*.mcap'``.

Each bag is evaluated exactly as a single-bag run would be (:func:`runner.evaluate`,
the same files in its own subfolder of the output folder), in worker processes that
each evaluate one bag at a time, and one summary table across the bags is written
(``summary.md``, ``summary.json``, ``summary.csv``). A bag that fails is reported with
its error and does not stop the others; a worker that dies (killed, out of memory)
is reported the same way.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import glob
import io
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from emotion_ros.errors import InputError
from emotion_ros.evaluation.runner import (default_pipeline, guard_output_dir, METRICS_FILE,
                                           PathLike, PipelineFactory, PROGRESS_FILE, RUN_FILE,
                                           RunOptions, _write_json)
from emotion_ros.evaluation.scoring import EvalConfig, to_json_safe

log = logging.getLogger('emotion_ros.evaluation')

SUMMARY_JSON = 'summary.json'
SUMMARY_MD = 'summary.md'
SUMMARY_CSV = 'summary.csv'
SUMMARY_FILES = (SUMMARY_JSON, SUMMARY_MD, SUMMARY_CSV)
LABEL_NAMES = ('labels.yaml', 'labels.yml', 'labels.json')
STORAGE_SUFFIXES = ('.db3', '.mcap')
_GLOB_CHARS = '*?['
_PROGRESS_PERIOD_S = 2.0
_MAX_ERROR_CHARS = 4000
# Threads per worker for the math libraries (torch, OpenBLAS, OpenMP) unless the user set
# them: N workers with a thread per core each would make N x cores threads fight for the cores.
_THREAD_VARIABLES = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')


# ------------------------------------------------------------------ finding bags
def is_glob(spec: str) -> bool:
    """True when ``spec`` is a shell pattern (``*``, ``?`` or ``[``) rather than a path."""
    return any(c in spec for c in _GLOB_CHARS) and not Path(spec).exists()


def is_bag(path: Path) -> bool:
    """A rosbag2 bag: a folder with metadata.yaml or one storage file, or a .db3/.mcap file."""
    if path.is_file():
        return path.suffix in STORAGE_SUFFIXES
    if not path.is_dir():
        return False
    if (path / 'metadata.yaml').is_file():
        return True
    return len([p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES]) == 1


def _bag_of(path: Path) -> Path:
    # A storage file of a bag folder (metadata.yaml beside it) stands for the whole bag:
    # a split recording has several.
    if path.is_file() and (path.parent / 'metadata.yaml').is_file():
        return path.parent
    return path


def bags_in_folder(folder: Path) -> List[Path]:
    """The bags directly inside ``folder`` (bag folders and .db3/.mcap files), sorted."""
    return sorted(p for p in folder.iterdir() if is_bag(p))


def expand_bags(specs: Sequence[str]) -> Tuple[List[Path], bool]:
    """Turn the command line's bag arguments into bags; and whether it is a multi-bag run.

    One path that is a bag (or nothing: the single-bag run says what is wrong) is a
    single-bag run. Several paths, a folder holding bags, or a pattern (expanded here,
    so a quoted ``'missions/*.mcap'`` works the same as one the shell expanded) make a
    multi-bag run; each bag appears once, in the order given (patterns and folders sorted).

    Raises:
        InputError: ``bag_missing`` for a pattern or folder with no bag in it.
    """
    if not specs:
        return [], False
    if len(specs) == 1 and not is_glob(specs[0]):
        path = Path(specs[0])
        if not path.is_dir() or is_bag(path):
            return [path], False
    found: List[Path] = []
    for spec in specs:
        if is_glob(spec):
            matches = [_bag_of(Path(m)) for m in sorted(glob.glob(spec, recursive=True))]
            matches = [m for m in matches if is_bag(m)]
            if not matches:
                raise InputError(f'no bag matches {spec!r} (a bag is a folder with '
                                 'metadata.yaml, or a .db3/.mcap file)', kind='bag_missing')
            found += matches
            continue
        path = Path(spec)
        if path.is_dir() and not is_bag(path):
            inside = bags_in_folder(path)
            if not inside:
                raise InputError(f'{path} is a folder without bags in it (a bag is a folder '
                                 'with metadata.yaml, or a .db3/.mcap file)', kind='bag_missing')
            found += inside
        else:
            found.append(_bag_of(path) if path.exists() else path)
    unique: List[Path] = []
    seen = set()
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, True


def find_labels(bag: Path) -> Optional[Path]:
    """The labels of a bag: labels.yaml/.yml/.json inside its folder (where make-bag puts them).

    For a bag given as a storage file: ``<file name without suffix>.labels.yaml`` (or
    ``.yml``, ``.json``) beside it, else the labels of the bag folder it lies in.
    """
    if bag.is_dir():
        for name in LABEL_NAMES:
            if (bag / name).is_file():
                return bag / name
        return None
    if bag.is_file():
        for suffix in ('.yaml', '.yml', '.json'):
            beside = bag.with_name(f'{bag.stem}.labels{suffix}')
            if beside.is_file():
                return beside
        if (bag.parent / 'metadata.yaml').is_file():
            return find_labels(bag.parent)
    return None


def _bag_name(path: Path) -> str:
    return path.stem if path.suffix in STORAGE_SUFFIXES else path.name


def output_names(bags: Sequence[Path]) -> List[str]:
    """One subfolder name per bag: its name, with parent folders where names repeat.

    ``day1/mission_01`` and ``day2/mission_01`` become ``day1__mission_01`` and
    ``day2__mission_01``; a name still taken gets ``-2``, ``-3``, ...
    """
    parts = [list(p.resolve().parent.parts[1:]) + [_bag_name(p)] for p in bags]
    depth = [1] * len(bags)
    for _ in range(max((len(p) for p in parts), default=1)):
        names = ['__'.join(p[-d:]) for p, d in zip(parts, depth)]
        clashes = {n for n in names if names.count(n) > 1}
        if not clashes:
            break
        depth = [d + 1 if n in clashes else d for n, d in zip(names, depth)]
    names = ['__'.join(p[-d:]) for p, d in zip(parts, depth)]
    unique: List[str] = []
    for name in names:
        candidate, k = name, 2
        while candidate in unique or candidate in SUMMARY_FILES:
            candidate, k = f'{name}-{k}', k + 1
        unique.append(candidate)
    return unique


# ------------------------------------------------------------------ output folder
def prepare_batch_dir(out: Path, names: Sequence[str], overwrite: bool) -> Path:
    """Create the multi-bag output folder; nothing is replaced without ``overwrite``.

    The folder must not exist or be empty; with ``overwrite`` it must hold a previous
    multi-bag evaluation (``summary.json``), and each bag's subfolder is then replaced
    as a single-bag ``--overwrite`` would (only if it holds an evaluation).

    Raises:
        InputError: ``output_exists`` naming the folder and what to do.
    """
    if guard_output_dir(out, overwrite, SUMMARY_JSON, 'multi-bag evaluation'):
        for name in names:
            sub = out / name
            if sub.exists() and (not sub.is_dir() or (any(sub.iterdir()) and
                                                      not (sub / RUN_FILE).is_file())):
                raise InputError(f'{sub} exists and does not hold a previous evaluation '
                                 f'({RUN_FILE} missing); refusing to overwrite it',
                                 kind='output_exists')
        for name in SUMMARY_FILES:
            if (out / name).is_file():
                (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------ one bag, in a worker
def _worker(bag: str, labels: str, config: str, out: str, eval_config: EvalConfig,
            options: RunOptions, factory: PipelineFactory, name: str, log_level: int,
            conn: Any) -> None:
    """Evaluate one bag in this (worker) process; send (status, error) back."""
    logging.basicConfig(level=log_level, format=f'[{name}] %(levelname)s %(name)s: %(message)s')
    from emotion_ros.evaluation.runner import evaluate
    status, error = 'complete', None
    try:
        evaluate(bag, labels, config, out, eval_config, options, factory)
    except KeyboardInterrupt:
        status, error = 'interrupted', 'interrupted by the user'
    except BaseException as exc:  # noqa: B902 - every failure is reported, none kills the batch
        status = 'failed'
        error = ''.join(traceback.format_exception_only(type(exc), exc)).strip()
        if not isinstance(exc, InputError):  # a bug or a model failure: where it happened
            log.error('%s', ''.join(traceback.format_exception(exc))[-_MAX_ERROR_CHARS:])
    try:
        conn.send((status, (error or '')[-_MAX_ERROR_CHARS:] or None))
    finally:
        conn.close()


# ------------------------------------------------------------------ summary
@dataclasses.dataclass
class BagJob:
    """One bag of a multi-bag run and what became of it."""

    bag: Path
    name: str
    labels: Optional[Path]
    status: str = 'pending'  # pending, running, complete, failed, interrupted
    error: Optional[str] = None
    elapsed_s: float = math.nan  # worker wall time: start, model loading, replay, report
    metrics: Optional[Dict[str, Any]] = None


def _get(data: Optional[Dict[str, Any]], *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _ratio(a: float, b: float) -> float:
    return a / b if b and not _isnan(b) else math.nan


def bag_row(job: BagJob) -> Dict[str, Any]:
    """The summary row of a bag, from its metrics.json (partial ones too)."""
    m = job.metrics
    row: Dict[str, Any] = {'bag': job.name, 'path': str(job.bag), 'status': job.status,
                           'error': job.error,
                           'rate': _get(m, 'rate', 'description'),
                           'elapsed_s': job.elapsed_s}
    perf = 'performance'
    row.update({
        'duration_s': _number(_get(m, 'evaluated_s')),
        'replayed_s': _number(_get(m, perf, 'replayed_s')),
        'wall_s': _number(_get(m, perf, 'wall_s')),
        'realtime_factor': _number(_get(m, perf, 'realtime_factor')),
        'frames_read': _get(m, perf, 'images_read') or 0,
        'frames_processed': _get(m, perf, 'frames_processed') or 0,
        'alerts': _get(m, 'distress', 'alerts') or 0,
        'alerts_counted': _get(m, 'distress', 'alerts_counted') or 0,
        'episodes': _get(m, 'distress', 'episodes') or 0,
        'episodes_detected': _get(m, 'distress', 'detected') or 0,
        'episode_recall': _number(_get(m, 'distress', 'recall')),
        'episode_precision': _number(_get(m, 'distress', 'precision')),
        'false_alerts': _get(m, 'distress', 'false_alerts') or 0,
        'false_alerts_per_hour': _number(_get(m, 'distress', 'false_alerts_per_hour')),
        'time_to_alert_median_s': _number(_get(m, 'distress', 'time_to_alert_s', 'median')),
        'detection_matched': _get(m, 'detection', 'matched') or 0,
        'detection_false_positives': _get(m, 'detection', 'false_positives') or 0,
        'detection_missed': _get(m, 'detection', 'missed') or 0,
        'detection_precision': _number(_get(m, 'detection', 'precision')),
        'detection_recall': _number(_get(m, 'detection', 'recall')),
        'emotion_samples': _get(m, 'emotion', 'samples') or 0,
        'emotion_map': _number(_get(m, 'emotion', 'mAP')),
    })
    return row


_SUMMED = ('elapsed_s', 'duration_s', 'replayed_s', 'wall_s', 'frames_read',
           'frames_processed', 'alerts', 'alerts_counted', 'episodes', 'episodes_detected',
           'false_alerts', 'detection_matched', 'detection_false_positives', 'detection_missed',
           'emotion_samples')


def total_row(jobs: Sequence[BagJob], rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Pooled over the bags that completed: sums, and ratios of the sums.

    Episode recall is detected / labelled episodes of all bags, detection recall and
    precision from the summed matches, false alerts per hour over the summed duration,
    the time to alert is the median over every detected episode of every bag. Emotion
    mAP cannot be pooled from the per-bag numbers and is left empty.
    """
    done = [(j, r) for j, r in zip(jobs, rows) if j.status == 'complete']
    total: Dict[str, Any] = {'bag': f'total ({len(done)} of {len(jobs)} bags complete)',
                             'path': '', 'status': 'complete' if len(done) == len(jobs)
                             else 'incomplete', 'error': None,
                             'rate': rows[0]['rate'] if rows else None}
    for key in _SUMMED:
        values = [r[key] for _, r in done if not _isnan(r[key])]
        total[key] = sum(values) if values else (math.nan if key.endswith('_s') else 0)
    latencies = [e['time_to_alert_s'] for j, _ in done
                 for e in (_get(j.metrics, 'distress', 'per_episode') or [])
                 if e.get('time_to_alert_s') is not None]
    matched, fp, missed = (total['detection_matched'], total['detection_false_positives'],
                           total['detection_missed'])
    detected, false = total['episodes_detected'], total['false_alerts']
    total.update({
        'realtime_factor': _ratio(total['replayed_s'], total['wall_s']),
        'episode_recall': _ratio(detected, total['episodes']),
        'episode_precision': _ratio(detected, detected + false),
        'false_alerts_per_hour': _ratio(false, total['duration_s'] / 3600.0),
        'time_to_alert_median_s': float(np.median(latencies)) if latencies else math.nan,
        'detection_precision': _ratio(matched, matched + fp),
        'detection_recall': _ratio(matched, matched + missed),
        'emotion_map': math.nan,
    })
    return total


def _last_line(text: Optional[str]) -> str:
    lines = (text or '').strip().splitlines()
    return lines[-1] if lines else 'no error message'


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return 'n/a'
    if isinstance(value, float):
        return 'n/a' if math.isnan(value) else f'{value:.{digits}f}'
    return str(value)


_MD_COLUMNS = (
    ('bag', 'bag', None), ('status', 'status', None), ('duration (s)', 'duration_s', 1),
    ('x real time', 'realtime_factor', 1), ('frames read', 'frames_read', None),
    ('frames processed', 'frames_processed', None), ('alerts', 'alerts', None),
    ('episodes detected', None, None), ('episode recall', 'episode_recall', 3),
    ('time to alert median (s)', 'time_to_alert_median_s', 2),
    ('false alerts', 'false_alerts', None), ('false alerts / h', 'false_alerts_per_hour', 1),
    ('detection recall', 'detection_recall', 3),
    ('detection precision', 'detection_precision', 3), ('emotion mAP', 'emotion_map', 3),
)


def _md_cells(row: Dict[str, Any]) -> List[str]:
    cells = []
    for _, key, digits in _MD_COLUMNS:
        if key is None:
            cells.append(f"{row['episodes_detected']} / {row['episodes']}")
        elif digits is None:
            cells.append(_fmt(row[key]).replace('|', '/'))
        else:
            cells.append(_fmt(row[key], digits))
    return cells


def format_summary_md(summary: Dict[str, Any]) -> str:
    """summary.md: what was run, one row per bag and the total, the failures with errors."""
    lines = ['# Evaluation summary', '',
             f"{len(summary['bags'])} bags, {summary['jobs']} in parallel; "
             f"{summary['complete']} complete, {summary['failed']} failed"
             + (f", {summary['pending']} not run" if summary['pending'] else '')
             + f". Wall time {_fmt(summary['elapsed_s'], 1)} s for "
             f"{_fmt(summary['total']['duration_s'], 1)} s of bags "
             f"({_fmt(summary['batch_realtime_factor'], 1)}x real time over all workers).", '']
    if summary.get('rate'):
        lines += [f"Frames: **{summary['rate']}**.", '']
    header = [name for name, _, _ in _MD_COLUMNS]
    lines += ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    for row in summary['bags']:
        cells = _md_cells(row)
        cells[0] = f"[{row['bag']}]({row['bag']}/report.md)"
        lines.append('| ' + ' | '.join(cells) + ' |')
    cells = _md_cells(summary['total'])
    lines.append('| ' + ' | '.join(f'**{c}**' for c in cells) + ' |')
    lines += ['', 'The total pools the complete bags: episode recall is detected / labelled '
              'episodes over all of them, detection recall and precision come from the summed '
              'matches, false alerts per hour from the summed duration, the time to alert is '
              'the median over all detected episodes; emotion mAP is per bag only. '
              '"x real time" is bag time over replay time (per worker, without model '
              'loading).', '']
    failed = [r for r in summary['bags'] if r['status'] not in ('complete', 'pending')]
    if failed:
        lines += ['## Failed bags', '']
        for row in failed:
            lines += [f"- **{row['bag']}** (`{row['path']}`): {row['status']}: "
                      f"{_last_line(row['error'])}"]
        lines += ['']
    lines += ['Per bag: `<bag>/report.md`, `<bag>/metrics.json`. All numbers: '
              f'`{SUMMARY_JSON}`, `{SUMMARY_CSV}`.', '']
    return '\n'.join(lines)


def _csv_text(rows: Sequence[Dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator='\n')
    writer.writeheader()
    for row in rows:
        writer.writerow({k: '' if v is None or (isinstance(v, float) and math.isnan(v)) else v
                         for k, v in row.items()})
    return buffer.getvalue()


def write_summary(out: Path, jobs: Sequence[BagJob], n_jobs: int, elapsed_s: float,
                  status: str) -> Dict[str, Any]:
    """Write summary.json, summary.md and summary.csv; return the summary."""
    rows = [bag_row(j) for j in jobs]
    total = total_row(jobs, rows)
    summary: Dict[str, Any] = {
        'status': status, 'updated': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'command': sys.argv, 'jobs': n_jobs, 'elapsed_s': elapsed_s,
        'complete': sum(j.status == 'complete' for j in jobs),
        'failed': sum(j.status in ('failed', 'interrupted') for j in jobs),
        'pending': sum(j.status in ('pending', 'running') for j in jobs),
        'rate': next((r['rate'] for r in rows if r['rate']), None),
        'batch_realtime_factor': _ratio(total['duration_s'], elapsed_s),
        'bags': rows, 'total': total,
    }
    _write_json(out / SUMMARY_JSON, summary)
    (out / SUMMARY_MD).write_text(format_summary_md(summary), encoding='utf-8')
    (out / SUMMARY_CSV).write_text(_csv_text(rows + [total]), encoding='utf-8')
    return to_json_safe(summary)


# ------------------------------------------------------------------ the run
def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_jobs(n_bags: int) -> int:
    """One worker per core this process may use, never more than there are bags."""
    return max(1, min(_cores(), n_bags))


class _Progress:
    """One line per finished bag; with a terminal also a line updated while bags run."""

    def __init__(self, total: int, enabled: bool, stream: TextIO) -> None:
        self.total, self.enabled, self.stream = total, enabled, stream
        self.tty = enabled and hasattr(stream, 'isatty') and stream.isatty()
        self._width = 0

    def _clear(self) -> None:
        if self._width:
            self.stream.write('\r' + ' ' * self._width + '\r')
            self._width = 0

    def done(self, k: int, job: BagJob) -> None:
        self._clear()
        if job.status == 'complete':
            m = job.metrics or {}
            perf = m.get('performance', {})
            text = (f"complete: {_fmt(m.get('evaluated_s'), 1)} s of bag in "
                    f"{_fmt(job.elapsed_s, 1)} s ({_fmt(perf.get('realtime_factor'), 1)}x "
                    f"real time replaying), {_get(m, 'distress', 'alerts') or 0} alerts, "
                    f"episode recall {_fmt(_get(m, 'distress', 'recall'))}")
        else:
            text = f'{job.status.upper()}: {_last_line(job.error)}'
        self.stream.write(f'[{k}/{self.total}] {job.name}: {text}\n')
        self.stream.flush()

    def running(self, done: int, failed: int, jobs: Sequence[BagJob], out: Path) -> None:
        if not self.tty:
            return
        parts = []
        for job in jobs:
            try:
                p = json.loads((out / job.name / PROGRESS_FILE).read_text(encoding='utf-8'))
                share = _ratio(p['bag_time_s'], p['bag_duration_s'])
                parts.append(f'{job.name} {100 * share:.0f}%')
            except (OSError, ValueError, KeyError, TypeError):
                parts.append(f'{job.name} starting')
        text = (f'evaluate: {done}/{self.total} done, {failed} failed; running: '
                + ', '.join(parts))[:max(20, _terminal_width() - 1)]
        self._clear()
        self.stream.write(text)
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        self._clear()
        self.stream.flush()


def _terminal_width() -> int:
    import shutil
    return shutil.get_terminal_size((100, 20)).columns


def evaluate_many(bags: Sequence[PathLike], config: PathLike, out: PathLike,
                  eval_config: EvalConfig = EvalConfig(), options: RunOptions = RunOptions(),
                  jobs: int = 0, labels: Optional[PathLike] = None,
                  pipeline_factory: PipelineFactory = default_pipeline,
                  progress: bool = True, stream: Optional[TextIO] = None) -> Dict[str, Any]:
    """Evaluate several bags in parallel worker processes and summarize them.

    Args:
        bags: bag paths (see :func:`expand_bags` for folders and patterns).
        config: ``config/robot.yaml``.
        out: output folder: ``<out>/<bag name>/`` per bag (see :func:`output_names`) and
            ``summary.md``/``.json``/``.csv``; nothing is replaced without
            ``options.overwrite`` (see :func:`prepare_batch_dir`).
        eval_config, options: as for one bag (``options.progress`` is ignored: workers
            show no bar).
        jobs: worker processes (0: one per core, at most one per bag).
        labels: one labels file for every bag; default: each bag's own
            (:func:`find_labels`); a bag without labels fails and is reported.
        pipeline_factory: as for one bag; must be picklable (a module-level function
            or class) since the workers are new processes.
        progress: on a terminal, a line updated while bags run (how far each is).
        stream: where that line and a line per finished bag (always) go (default stderr).

    Returns:
        The summary (also in ``summary.json``): ``bags`` (one row each), ``total``,
        ``failed`` (count).

    Raises:
        InputError: no bags, a bad ``jobs`` or an output folder that would be
            overwritten, before anything runs. A failing bag raises nothing.
        KeyboardInterrupt: after the summary of what was done is written.
    """
    paths = [Path(b) for b in bags]
    if not paths:
        raise InputError('no bags to evaluate', kind='bag_missing')
    if jobs < 0:
        raise InputError(f'--jobs must be 0 (one per core) or more, not {jobs}', kind='option')
    n_jobs = jobs or default_jobs(len(paths))
    n_jobs = max(1, min(n_jobs, len(paths)))
    out = Path(out)
    names = output_names(paths)
    prepare_batch_dir(out, names, options.overwrite)
    items = [BagJob(p, n, Path(labels) if labels else find_labels(p))
             for p, n in zip(paths, names)]
    # Each bag's audio stage in a process of its own only where the cores allow it.
    worker_options = dataclasses.replace(options, progress=False,
                                         parallel=options.parallel and _cores() >= 2 * n_jobs)
    stream = stream or sys.stderr
    bar = _Progress(len(items), progress, stream)
    context = multiprocessing.get_context('spawn')  # no forked copies of loaded models/threads
    threads = str(max(1, _cores() // n_jobs))
    t_start = time.perf_counter()
    pending = list(items)
    running: Dict[Any, Tuple[BagJob, Any, Any, float]] = {}
    finished = 0
    status = 'running'
    write_summary(out, items, n_jobs, 0.0, status)

    def finish(job: BagJob, k: int) -> None:
        metrics_file = out / job.name / METRICS_FILE
        if metrics_file.is_file():
            try:
                job.metrics = json.loads(metrics_file.read_text(encoding='utf-8'))
            except ValueError as exc:
                job.metrics = None
                job.error = job.error or f'unreadable {metrics_file}: {exc}'
        bar.done(k, job)
        write_summary(out, items, n_jobs, time.perf_counter() - t_start, status)

    try:
        while pending or running:
            while pending and len(running) < n_jobs:
                job = pending.pop(0)
                if not job.bag.exists() or job.labels is None:
                    job.status = 'failed'
                    job.error = (f'InputError: bag not found: {job.bag}' if not job.bag.exists()
                                 else f'InputError: no labels for bag {job.bag}: no '
                                 f"{'/'.join(LABEL_NAMES)} in the bag folder"
                                 + (f' and no {job.bag.stem}.labels.yaml beside it'
                                    if job.bag.is_file() else '') + ' (or give --labels)')
                    job.elapsed_s = 0.0
                    finished += 1
                    finish(job, finished)
                    continue
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(
                    target=_worker, name=f'evaluate-{job.name}',
                    args=(str(job.bag), str(job.labels), str(config), str(out / job.name),
                          eval_config, worker_options, pipeline_factory, job.name,
                          logging.getLogger().getEffectiveLevel(), sender))
                saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
                for key in _THREAD_VARIABLES:
                    os.environ.setdefault(key, threads)
                try:
                    process.start()
                finally:
                    for key, value in saved.items():
                        if value is None:
                            os.environ.pop(key, None)
                sender.close()
                job.status = 'running'
                running[process.sentinel] = (job, process, receiver, time.perf_counter())
            if not running:
                continue
            ready = multiprocessing.connection.wait(list(running), timeout=_PROGRESS_PERIOD_S)
            for sentinel in ready:
                job, process, receiver, t0 = running.pop(sentinel)
                process.join()
                job.elapsed_s = time.perf_counter() - t0
                result = None
                try:
                    if receiver.poll():
                        result = receiver.recv()
                except (EOFError, OSError):
                    result = None
                receiver.close()
                if result is None:
                    job.status = 'failed'
                    job.error = (f'the worker process died (exit code {process.exitcode}'
                                 + (f', signal {-process.exitcode}' if (process.exitcode or 0)
                                    < 0 else '') + ') without a result')
                else:
                    job.status, job.error = result
                finished += 1
                finish(job, finished)
            bar.running(finished, sum(j.status in ('failed', 'interrupted') for j in items),
                        [entry[0] for entry in running.values()], out)
        status = 'complete'
    except KeyboardInterrupt:
        status = 'interrupted'
        # The workers got the same Ctrl-C and save their partial results; wait for them.
        for job, process, receiver, t0 in running.values():
            process.join(30.0)
            if process.is_alive():
                process.terminate()
                process.join(5.0)
            job.status = 'interrupted'
            job.error = 'interrupted by the user'
            job.elapsed_s = time.perf_counter() - t0
            receiver.close()
            metrics_file = out / job.name / METRICS_FILE
            if metrics_file.is_file():
                try:
                    job.metrics = json.loads(metrics_file.read_text(encoding='utf-8'))
                except ValueError:
                    pass
        bar.close()
        write_summary(out, items, n_jobs, time.perf_counter() - t_start, status)
        raise
    bar.close()
    return write_summary(out, items, n_jobs, time.perf_counter() - t_start, status)


__all__ = ['BagJob', 'bags_in_folder', 'default_jobs', 'evaluate_many', 'expand_bags',
           'find_labels', 'format_summary_md', 'is_bag', 'output_names', 'prepare_batch_dir',
           'write_summary']

"""The human side of an evaluation: report.md, plots, and the summary table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from emotion_ros.llm.contract import CATEGORIES
from emotion_ros.evaluation.labels import Labels
from emotion_ros.evaluation.records import (ALERTS_FILE, AlertRecord, FRAMES_FILE, read_jsonl,
                                            SCORES_FILE)
from emotion_ros.evaluation.scoring import Scorer
from emotion_ros.types import LEVEL_NAMES

_LEVEL_NAMES = {1: 'watch', 2: 'distress', 3: 'emergency'}
_LEVEL_COLORS = {1: 'tab:olive', 2: 'tab:orange', 3: 'tab:red'}
_MAX_POINTS = 20000  # per track in the timeline; longer series are thinned
_MAX_ALERT_ROWS = 200


def _level_name(level: Any) -> str:
    return LEVEL_NAMES.get(level, str(level)) if isinstance(level, int) else str(level)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return 'n/a'
    if isinstance(value, float):
        if math.isnan(value):
            return 'n/a'
        return f'{value:.{digits}f}'
    return str(value)


def summary_rows(metrics: Dict[str, Any]) -> List[Tuple[str, str]]:
    """Return the headline numbers as (name, value) rows."""
    d = metrics.get('distress', {})
    e = metrics.get('emotion', {})
    det = metrics.get('detection', {})
    p = metrics.get('performance', {})
    tta = d.get('time_to_alert_s', {})
    vad = e.get('vad_mae', {})
    rows = [
        ('status', str(metrics.get('status'))),
        ('episodes detected', f"{d.get('detected', 0)} / {d.get('episodes', 0)}"),
        ('episode recall', _fmt(d.get('recall'))),
        ('episode precision', _fmt(d.get('precision'))),
        ('episode F1', _fmt(d.get('f1'))),
        ('time to alert median / worst (s)',
         f"{_fmt(tta.get('median'), 2)} / {_fmt(tta.get('max'), 2)}"),
        ('false alerts (per hour)',
         f"{d.get('false_alerts', 0)} ({_fmt(d.get('false_alerts_per_hour'), 1)})"),
        ('emotion mAP', f"{_fmt(e.get('mAP'))} ({e.get('samples', 0)} samples)"),
        ('VAD MAE (mean)', _fmt(vad.get('mean'), 2) if vad else 'n/a'),
        ('detection precision / recall',
         f"{_fmt(det.get('precision'))} / {_fmt(det.get('recall'))}"),
        ('frames read / processed',
         f"{p.get('images_read', 0)} / {p.get('frames_processed', 0)}"),
        ('speed', f"{_fmt(p.get('realtime_factor'), 1)}x real time, "
                  f"{_fmt(p.get('images_read_per_s'), 1)} frames/s"),
    ]
    rate = metrics.get('rate')
    if rate:  # which frames were processed: the robot's rate, or every frame
        rows.insert(1, ('frames', str(rate.get('description'))))
    return rows


def format_summary(metrics: Dict[str, Any]) -> str:
    """Format the headline numbers as a plain-text table (printed at the end of a run)."""
    rows = summary_rows(metrics)
    width = max(len(name) for name, _ in rows)
    line = '-' * (width + 3 + max(len(v) for _, v in rows))
    return '\n'.join([line] + [f'{name:<{width}} | {value}' for name, value in rows] + [line])


# --------------------------------------------------------------------- plots
def _plt() -> Any:
    import matplotlib
    matplotlib.use('Agg')  # files only; never needs a display
    import matplotlib.pyplot as plt
    return plt


def plot_pr_curves(path: Path, arrays: Optional[Tuple[np.ndarray, np.ndarray]],
                   per_category_ap: Dict[str, Optional[float]]) -> None:
    """One precision-recall panel per EMOTIC category."""
    from emotion_ros.evaluation.metrics import precision_recall_curve
    plt = _plt()
    fig, axes = plt.subplots(6, 5, figsize=(15, 17), sharex=True, sharey=True)
    for k, ax in enumerate(axes.flat):
        if k >= len(CATEGORIES):
            ax.axis('off')
            continue
        name = CATEGORIES[k]
        ap = per_category_ap.get(name)
        if arrays is None or not arrays[0][:, k].any():
            ax.text(0.5, 0.5, 'no positives', ha='center', va='center', color='grey')
            ax.set_title(name, fontsize=9)
        else:
            precision, recall, _ = precision_recall_curve(arrays[0][:, k], arrays[1][:, k])
            ax.step(recall, precision, where='post')
            ax.set_title(f'{name} AP {_fmt(ap, 2)}', fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        # Fixed ticks: automatic tick layout of 30 panels costs seconds per report.
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
    for ax in axes[-1]:
        ax.set_xlabel('recall')
    for ax in axes[:, 0]:
        ax.set_ylabel('precision')
    fig.suptitle('Precision-recall per category (matched persons)')
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.04, top=0.94, wspace=0.15, hspace=0.3)
    fig.savefig(path, dpi=70)
    plt.close(fig)


def plot_timeline(path: Path, out: Path, labels: Labels, window: Tuple[float, float],
                  thresholds: Dict[str, float]) -> None:
    """Fused distress score per track over time, with labelled episodes and raised alerts."""
    plt = _plt()
    series: Dict[int, Tuple[List[float], List[float]]] = {}
    for record in read_jsonl(out / SCORES_FILE):
        t = float(record['t'])
        for key, value in record['scores'].items():
            ts, vs = series.setdefault(int(key), ([], []))
            ts.append(t)
            vs.append(float(value))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for k, episode in enumerate(labels.episodes):
        ax.axvspan(episode.start, episode.end, color='tab:red', alpha=0.12,
                   label='labelled episode' if k == 0 else None)
        ax.text(episode.start, 1.04, episode.person or 'audio', fontsize=7, color='tab:red')
    for track, (ts, vs) in sorted(series.items()):
        stride = max(1, len(ts) // _MAX_POINTS)
        name = 'audio only (track 0)' if track == 0 else f'track {track}'
        ax.plot(ts[::stride], vs[::stride], lw=1.0, label=name)
    for name, value in sorted(thresholds.items(), key=lambda kv: kv[1]):
        ax.axhline(value, ls=':', lw=0.8, color='grey')
        ax.text(window[0], value + 0.01, name, fontsize=7, color='grey')
    seen_levels = set()
    for alert in read_jsonl(out / ALERTS_FILE, AlertRecord):
        label = None
        if alert.level not in seen_levels:
            seen_levels.add(alert.level)
            label = f'alert: {_LEVEL_NAMES.get(alert.level, alert.level)}'
        ax.plot([alert.t], [min(alert.score, 1.0)], marker='v', ls='none', ms=8,
                color=_LEVEL_COLORS.get(alert.level, 'black'), label=label)
    ax.set_xlim(window[0], max(window[1], window[0] + 1e-3))
    ax.set_ylim(0, 1.1)
    ax.set_xlabel('time from bag start (s)')
    ax.set_ylabel('fused distress score')
    ax.set_title('Distress score, labelled episodes and alerts')
    if ax.get_legend_handles_labels()[0]:  # an empty run (no track, episode or alert) has none
        ax.legend(loc='upper right', fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_latency(path: Path, out: Path, metrics: Dict[str, Any]) -> None:
    """Histograms of time to alert per episode and of per-frame processing time."""
    plt = _plt()
    latencies = [e['time_to_alert_s'] for e in metrics['distress'].get('per_episode', [])
                 if e.get('time_to_alert_s') is not None]
    frame_ms = [float(f['timings_ms'].get('total', math.nan))
                for f in read_jsonl(out / FRAMES_FILE)]
    frame_ms = [v for v in frame_ms if math.isfinite(v)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if latencies:
        left.hist(latencies, bins=max(5, min(30, len(latencies))), color='tab:red')
    else:
        left.text(0.5, 0.5, 'no detected episodes', ha='center', va='center',
                  transform=left.transAxes, color='grey')
    left.set_xlabel('time from episode start to first alert (s)')
    left.set_ylabel('episodes')
    left.set_title('Time to alert')
    if frame_ms:
        right.hist(frame_ms, bins=40, color='tab:blue')
        right.axvline(float(np.percentile(frame_ms, 95)), color='black', ls='--', lw=1,
                      label='p95')
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, 'no processed frames', ha='center', va='center',
                   transform=right.transAxes, color='grey')
    right.set_xlabel('decode + pipeline time per processed frame (ms)')
    right.set_ylabel('frames')
    right.set_title('Frame processing time')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -------------------------------------------------------------------- report
def _thresholds(out: Path) -> Dict[str, float]:
    try:
        run = json.loads((out / 'run.json').read_text(encoding='utf-8'))
        fusion = run['robot_config']['fusion']
        return {'watch': float(fusion['watch_threshold']),
                'distress': float(fusion['distress_threshold']),
                'emergency': float(fusion['emergency_threshold'])}
    except (OSError, KeyError, TypeError, ValueError):
        return {}


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return lines


_MAX_TRANSCRIPT_ROWS = 200


def transcript_section(out: Path) -> List[str]:
    """'Utterances heard' of report.md: every decoded utterance and its help flag."""
    path = out / 'transcripts.jsonl'
    if not path.exists():
        return []
    rows = list(read_jsonl(path))
    lines = ['## Utterances heard (calls for help)', '']
    if not rows:
        return lines + ['No utterance was decoded (no voice, or no audio topic).', '']
    # 'partial': an early decode of an utterance still open that heard a call (the
    # utterance's own row follows); counted apart from the utterances.
    early = sum(1 for r in rows if r.get('status', 'ok') == 'partial')
    whole = [r for r in rows if r.get('status', 'ok') != 'partial']
    helps = sum(1 for r in whole if r['help_detected'])
    failed = sum(1 for r in whole if r.get('status', 'ok') != 'ok')
    lines += [f"{len(whole)} utterances decoded by `{rows[0]['detector']}` "
              f"({rows[0]['model_id']}); {helps} heard as a call for help"
              + (f'; {failed} not decoded (watchdog/error)' if failed else '')
              + (f'; {early} calls cued early by partial decodes' if early else '') + '.', '']
    table = [[_fmt(r['t'], 2), _fmt(r['end'], 2),
              ('**yes** (' + r['help_phrase'] + ')') if r['help_detected'] else 'no',
              _fmt(r['help_score'], 2), r['language'] or '-',
              (r['text'] or '-').replace('|', '/')[:80], r.get('status', 'ok')]
             for r in rows[:_MAX_TRANSCRIPT_ROWS]]
    lines += _table(['start (s)', 'end (s)', 'call for help', 'score', 'lang', 'text',
                     'status'], table)
    if len(rows) > _MAX_TRANSCRIPT_ROWS:
        lines += ['', f'... {len(rows) - _MAX_TRANSCRIPT_ROWS} more in `transcripts.jsonl`.']
    return lines + ['']


def write_report(out: Path, metrics: Dict[str, Any], labels: Labels, scorer: Scorer) -> None:
    """Write report.md and the three plots into ``out``."""
    window = tuple(metrics.get('window_s') or (0.0, 0.0))
    emotion = metrics['emotion']
    plot_pr_curves(out / 'pr_curves.png', scorer.emotion_arrays(),
                   emotion.get('per_category_ap', {}))
    plot_timeline(out / 'timeline.png', out, labels, window, _thresholds(out))  # type: ignore
    plot_latency(out / 'latency.png', out, metrics)

    distress = metrics['distress']
    perf = metrics['performance']
    lines = ['# Evaluation report', '']
    run_file = out / 'run.json'
    if run_file.is_file():
        run = json.loads(run_file.read_text(encoding='utf-8'))
        lines += [f"Bag `{run['bag']['path']}` ({run['bag']['storage']}, "
                  f"{run['bag']['duration_s']:.1f} s), labels `{run['labels']}`, config "
                  f"`{run['config']}`, mode {run.get('mode', 'offline')}. "
                  f"Topics: camera `{run['topics']['image']}`, audio "
                  f"`{run['topics']['audio']}`.", '']
    rate = metrics.get('rate')
    if rate:
        lines += [f"Frames: **{rate.get('description')}**"
                  + (' (each frame the bag holds is processed; the robot processes at most '
                     'perception.max_rate_hz per second, so alerts and speed may differ from '
                     "the robot's)" if rate.get('mode') == 'every_frame' else
                     ' (at most perception.max_rate_hz frames per second of bag time are '
                     'processed, as on the robot; the others are skipped)') + '.', '']
    if not metrics.get('complete'):
        lines += [f"> **Partial results** (status: {metrics.get('status')}): "
                  f"{metrics.get('error') or 'the run did not finish'}. Only "
                  f'{window[0]:.1f}-{window[1]:.1f} s of the bag were scored.', '']
    lines += ['## Summary', ''] + _table(['metric', 'value'],
                                         [[a, b] for a, b in summary_rows(metrics)]) + ['']

    lines += ['## Distress episodes', '',
              f'Alerts of level >= {_level_name(distress.get("min_alert_level"))} count; '
              'an alert explains '
              'an episode when it falls inside it (with tolerances) and concerns the labelled '
              'person (see docs/evaluation.md).', '']
    rows = [[str(e['index']), _fmt(e['start'], 2), _fmt(e['end'], 2), e['person'] or '(audio)',
             'yes' if e['detected'] else '**no**', _fmt(e['time_to_alert_s'], 2), e['note']]
            for e in distress.get('per_episode', [])]
    lines += _table(['#', 'start (s)', 'end (s)', 'person', 'detected', 'time to alert (s)',
                     'note'], rows) if rows else ['No labelled episodes.']
    lines += ['', '## Alerts raised', '']
    alert_rows = distress.get('alert_list', [])
    rows = [[_fmt(a['t'], 2), str(a['track_id']), _LEVEL_NAMES.get(a['level'], str(a['level'])),
             _fmt(a['score'], 2), a.get('person') or '-',
             ', '.join(str(k) for k in a['episodes']) or ('**false**' if a['false_alert']
                                                          else '-'),
             '; '.join(a['reasons'])[:120]]
            for a in alert_rows[:_MAX_ALERT_ROWS]]
    lines += _table(['t (s)', 'track', 'level', 'score', 'person', 'episode', 'reasons'],
                    rows) if rows else ['No alerts.']
    if len(alert_rows) > _MAX_ALERT_ROWS:
        lines += ['', f'... {len(alert_rows) - _MAX_ALERT_ROWS} more in `alerts.jsonl`.']
    lines += ['', '![timeline](timeline.png)', '']

    lines += transcript_section(out)

    lines += ['## Emotions', '',
              f"{emotion.get('samples', 0)} matched (person, frame) samples with category "
              f"labels; mAP {_fmt(emotion.get('mAP'))} over the categories with a positive "
              f"({len(emotion.get('categories_without_positives', []))} without are left out). "
              f"Faces visible in {_fmt(emotion.get('face_visible_fraction'), 2)} of matches.",
              '']
    trivial = emotion.get('categories_without_negatives') or []
    if trivial:
        lines += [f"Every labelled sample has {', '.join(trivial)}: their AP is 1 whatever the "
                  'model says. Label people without them too for a meaningful number.', '']
    rows = [[c, _fmt(emotion.get('per_category_ap', {}).get(c))] for c in CATEGORIES]
    lines += _table(['category', 'AP'], rows) + ['']
    vad = emotion.get('vad_mae') or {}
    if vad:
        lines += _table(['VAD', 'MAE (1-10)'], [[k, _fmt(v, 2)] for k, v in vad.items()])
        lines += ['', f"The model gave VAD for {_fmt(emotion.get('vad_predicted_fraction'), 2)}"
                  ' of the labelled samples.', '']
    lines += ['![precision-recall](pr_curves.png)', '']

    det = metrics['detection']
    lines += ['## Detection', '',
              f"{det.get('frames', 0)} processed frames: {det.get('matched', 0)} matched, "
              f"{det.get('false_positives', 0)} unmatched predictions, {det.get('missed', 0)} "
              f"missed labelled persons; {det.get('tracks', 0)} tracks "
              f"(track -> person: {det.get('track_to_person', {})}).", '']

    lines += ['## Performance', '',
              f"Replayed {_fmt(perf.get('replayed_s'), 1)} s of bag in "
              f"{_fmt(perf.get('wall_s'), 1)} s ({_fmt(perf.get('realtime_factor'), 1)}x real "
              f"time) after {_fmt(perf.get('model_load_s'), 1)} s of model loading; "
              f"{perf.get('images_read', 0)} camera frames read "
              f"({_fmt(perf.get('input_fps'), 1)} fps in the bag), "
              f"{perf.get('frames_processed', 0)} processed ("
              + (str(metrics['rate'].get('description')) if metrics.get('rate')
                 else 'rate limit as on the robot') + ').', '']
    stages = perf.get('stages_ms', {})
    rows = [[k, str(v.get('count')), _fmt(v.get('mean'), 2), _fmt(v.get('median'), 2),
             _fmt(v.get('p95'), 2), _fmt(v.get('max'), 2)] for k, v in stages.items()]
    if rows:
        lines += _table(['stage', 'count', 'mean ms', 'median ms', 'p95 ms', 'max ms'], rows)
    if perf.get('input_errors'):
        lines += ['', f"Messages skipped as undecodable: {perf['input_errors']}."]
    records = [name for name in ('alerts.jsonl', 'frames.jsonl', 'audio_cues.jsonl',
                                 'transcripts.jsonl', 'scores.jsonl') if (out / name).exists()]
    lines += ['', '![latency](latency.png)', '',
              'Files: `metrics.json` (all numbers), '
              + ', '.join(f'`{name}`' for name in records)
              + ' (raw records), `run.json` (what was run).', '']
    (out / 'report.md').write_text('\n'.join(lines), encoding='utf-8')

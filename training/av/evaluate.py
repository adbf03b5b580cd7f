"""Evaluation of an audio-visual bundle: MER metrics and modality ablations in one run.

``python -m training evaluate --bundle AV_BUNDLE --data-root ROOT --split test``
(the same command as for llava bundles; the manifest says which model it is)
scores every clip through the robot's :class:`AudioVisualBackend` once per
condition:

==================  ==========================================
``all``             everything the clip has
``no_transcript``   image + clip + voice (the transcript removed)
``vision_only``     person view + clip
``audio_only``      voice only
``audio_text``      voice + transcript
==================  ==========================================

and reports, per condition, accuracy and weighted F1 (MER2023), UAR and WAR
(DFEW) of the discrete head, mAP of the 26 category scores, and a confusion
matrix (``confusion_<condition>.png``). A clip left with no modality under a
condition is not scored there (counted as ``skipped``). ``predictions.npz``
keeps every clip's outputs: ``clip_ids``, ``truth`` (class index, -1 when
unlabelled) and, per condition, ``<condition>.rows`` (the clips scored),
``<condition>.scores`` (26 categories), ``<condition>.vad`` and
``<condition>.discrete`` (class probabilities), so per-clip predictions can be
compared with another run (the perception node's, in the tests).
"""

from __future__ import annotations

import datetime
import json
import math
import os
from typing import Any, Dict, List, Sequence

import numpy as np

from emotion_ros.errors import ConfigError

ABLATIONS: Dict[str, Sequence[str]] = {
    'all': (),
    'no_transcript': ('transcript',),
    'vision_only': ('audio', 'transcript'),
    'audio_only': ('image', 'video', 'transcript'),
    'audio_text': ('image', 'video'),
}


def evaluate_av(args: Any) -> Dict[str, Any]:
    """Evaluate an audio_visual bundle with ablations; write report.json/.md and plots.

    Raises:
        ConfigError: for an existing report without --overwrite or unknown conditions.
        BundleMismatchError, ModelLoadError: from loading the bundle.
    """
    from tqdm.auto import tqdm
    from emotion_ros.backends.audio_visual import AudioVisualBackend, AudioVisualOptions
    from emotion_ros.llm.labels import label_set as classes_of
    from emotion_ros.evaluation.metrics import classification_metrics, mean_average_precision
    from training.av.data import AVSampleSet, load_av_records
    out_dir = args.out
    if os.path.exists(os.path.join(out_dir, 'report.json')) and not args.overwrite:
        raise ConfigError(f'--out: {out_dir} already holds a report; pass --overwrite or '
                          'choose another folder')
    conditions = list(getattr(args, 'ablations', None) or ABLATIONS)
    unknown = [c for c in conditions if c not in ABLATIONS]
    if unknown:
        raise ConfigError(f'--ablations: unknown {unknown}; known: {list(ABLATIONS)}')
    backend = AudioVisualBackend(AudioVisualOptions(
        bundle_path=args.bundle, base_model=args.base_model or '', device=args.device,
        dtype=args.dtype, max_batch=args.batch_size))
    backend.load()
    manifest = backend.manifest
    cfg = manifest.get('training_config') or {}
    label_set = backend.label_set
    classes = classes_of(label_set) if label_set else ()
    records = load_av_records(args.data_root, args.split)
    if args.max_samples:
        records = records[:args.max_samples]
    if not records:
        raise ConfigError(f'--split: {args.split!r} of {args.data_root} has no clips')
    samples = AVSampleSet(records, str(manifest['prompt_id']), label_set, str(manifest['view']),
                          int(cfg.get('video_frames', 8)),
                          bool((manifest.get('extra') or {}).get('use_transcript', True)))
    collected: Dict[str, Dict[str, List[Any]]] = {
        c: {'rows': [], 'scores': [], 'vad': [], 'discrete': []} for c in conditions}
    labels = np.zeros((len(records), 26), np.float32)
    truth = np.full(len(records), -1, np.int64)
    step = args.batch_size
    bar = tqdm(total=len(records), desc=f'evaluate {args.split}', disable=args.no_progress)
    for start in range(0, len(records), step):
        chunk = [samples[i] for i in range(start, min(start + step, len(records)))]
        for k, s in enumerate(chunk):
            labels[start + k] = s.labels_26
            truth[start + k] = s.discrete
        for cond in conditions:
            rows = [k for k, s in enumerate(chunk) if s.inputs.without(*ABLATIONS[cond]).present()]
            if not rows:
                continue
            result = backend.score_inputs([chunk[k].inputs.without(*ABLATIONS[cond])
                                           for k in rows])
            collected[cond]['rows'].extend(start + k for k in rows)
            collected[cond]['scores'].append(result['scores'])
            collected[cond]['vad'].append(result['vad'])
            if 'discrete' in result:
                collected[cond]['discrete'].append(result['discrete'])
        bar.update(len(chunk))
    bar.close()
    report: Dict[str, Any] = {
        'label': args.label or f'audio_visual {manifest.get("name", "")}',
        'created_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'model_kind': 'audio_visual', 'model_id': backend.model_id,
        'contract_hash': manifest.get('contract_hash'),
        'bundle': os.path.abspath(args.bundle), 'data_root': os.path.abspath(args.data_root),
        'split': args.split, 'clips': len(records), 'label_set': label_set,
        'classes': list(classes), 'conditions': {},
    }
    backend.close()
    os.makedirs(out_dir, exist_ok=True)
    arrays: Dict[str, np.ndarray] = {'clip_ids': np.asarray([r.clip_id for r in records]),
                                     'truth': truth}
    for cond in conditions:
        data = collected[cond]
        arrays[f'{cond}.rows'] = np.asarray(data['rows'], np.int64)
        for key in ('scores', 'vad', 'discrete'):
            if data[key]:
                arrays[f'{cond}.{key}'] = np.concatenate(data[key])
    np.savez_compressed(os.path.join(out_dir, 'predictions.npz'), **arrays)
    for cond in conditions:
        data = collected[cond]
        rows = np.asarray(data['rows'], np.int64)
        entry: Dict[str, Any] = {'dropped': list(ABLATIONS[cond]), 'scored': int(rows.size),
                                 'skipped': int(len(records) - rows.size)}
        if rows.size:
            scores = np.concatenate(data['scores'])
            mean_ap, _ = mean_average_precision(labels[rows], scores) \
                if labels[rows].any() else (math.nan, None)
            entry['map'] = mean_ap
            if data['discrete'] and (truth[rows] >= 0).any():
                probs = np.concatenate(data['discrete'])
                known = truth[rows] >= 0
                pred = probs.argmax(1)[known]
                entry.update(classification_metrics(truth[rows][known], pred, len(classes)))
                _plot_confusion(os.path.join(out_dir, f'confusion_{cond}.png'),
                                np.asarray(entry['confusion']), classes, cond)
        report['conditions'][cond] = entry
    if 'all' in report['conditions']:
        for key in ('accuracy', 'weighted_f1', 'uar', 'war', 'map'):
            if key in report['conditions']['all']:
                report[key] = report['conditions']['all'][key]
    with open(os.path.join(out_dir, 'report.json'), 'w', encoding='utf-8') as f:
        json.dump(report, f, indent=2, default=float)
        f.write('\n')
    with open(os.path.join(out_dir, 'report.md'), 'w', encoding='utf-8') as f:
        f.write(ablation_table(report) + '\n')
    return report


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    return f'{100 * value:.1f}'


def ablation_table(report: Dict[str, Any]) -> str:
    """Markdown table: one row per condition (accuracy, weighted F1, UAR, WAR, mAP in %)."""
    lines = [f'# {report["label"]}: {report["split"]} of {report["data_root"]} '
             f'({report["clips"]} clips, label set {report["label_set"] or "-"})', '',
             '| condition | scored | accuracy | weighted F1 | UAR | WAR | mAP |',
             '|---|---|---|---|---|---|---|']
    for cond, e in report['conditions'].items():
        lines.append(f'| {cond} | {e["scored"]} | {_fmt(e.get("accuracy"))} | '
                     f'{_fmt(e.get("weighted_f1"))} | {_fmt(e.get("uar"))} | '
                     f'{_fmt(e.get("war"))} | {_fmt(e.get("map"))} |')
    return '\n'.join(lines)


def _plot_confusion(path: str, matrix: np.ndarray, classes: Sequence[str], title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(classes), 0.8 + 0.6 * len(classes)))
    ax.imshow(norm, vmin=0, vmax=1, cmap='Blues')
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha='center', va='center',
                    color='white' if norm[i, j] > 0.5 else 'black', fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha='right')
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(f'confusion ({title})')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

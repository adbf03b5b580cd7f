"""``python -m training evaluate``: the poster's table, measurable by anyone with EMOTIC.

One command evaluates a fine-tuned bundle (emotions + VAD, or the
emotions-only ablation: the bundle's manifest says which) or the zero-shot
base model, on a split of any supported dataset:

* **mAP** over the 26 categories (per-category average precision over the
  split's persons, identical to ``sklearn.metrics.average_precision_score``;
  categories without a positive are excluded from the mean, as EMOTIC's
  benchmark code does: see :mod:`emotion_ros.evaluation.metrics`);
* the per-category AP table; **VAD MAE** on 1-10;
* **thresholds where precision equals recall, chosen on the validation split**
  and applied unchanged to the evaluated split (precision/recall/F1 there);
* a report folder: ``report.json``, ``report.md``, ``ap_per_category.png``,
  ``pr_curves.png``, ``vad_scatter.png`` and ``predictions.npz``.

Score sources (``--scores``):

* ``head`` (bundles, default): the score head in one forward pass, exactly as
  the robot runs it; continuous scores.
* ``text``: generate the answer and parse it with the contract's parser; a
  category scores 1 when named, else 0 (binary scores make AP a single
  precision/recall point; this is how generated-text baselines such as the
  poster's zero-shot row are usually scored). Default for ``--zero-shot``.
* ``logprob`` (zero-shot only): probability that the model names the category
  right after ``Emotions:``; continuous, uncalibrated.

``--table r1/report.json r2/report.json ...`` prints the comparison table
(ours next to the published numbers) without running a model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.llm.contract import CATEGORIES, CONTRACT_VERSION, PROMPTS, VAD_NAMES
from emotion_ros.llm.contract import parse_answer
from emotion_ros.errors import ConfigError
from training.core.images import load_image_rgb
from training.emotic.dataset import load_dataset
from training.emotic.records import label_matrix, vad_matrix

# Published EMOTIC test mAP (%) the poster compares with.
PUBLISHED_MAP: Tuple[Tuple[str, float], ...] = (
    ('Kosti et al. 2017 (EMOTIC baseline)', 27.38),
    ('EmotiCon (Mittal et al. 2020)', 35.48),
    ('Xenos et al. 2024 (LLaVA descriptions + fusion)', 38.52),
    ('Poster: LLaVA fine-tuned, emotions + VAD', 40.60),
    ('Poster: LLaVA fine-tuned, emotions only', 32.71),
    ('Poster: LLaVA zero-shot (from Xenos et al.)', 16.98),
)
SCORE_SOURCES = ('auto', 'head', 'text', 'logprob')


def _load_records(root: str, split: str, max_samples: int, max_skip_fraction: float) -> list:
    records, skipped = load_dataset(root, split, max_skip_fraction=max_skip_fraction)
    if max_samples:
        records = records[:max_samples]
    if not records:
        raise ConfigError(f'--split: split {split!r} of {root} has no usable persons')
    return records


def score_records(backend: Any, records: Sequence[Any], source: str, batch_size: int,
                  max_new_tokens: int, progress: bool = True,
                  desc: str = 'scoring') -> Dict[str, Any]:
    """Score persons with a loaded :class:`LlavaBackend` (the robot's code path).

    Returns:
        Dict with ``scores`` (N, 26), ``vad`` (N, 3) and, for ``text``, the
        ``answers`` and the fraction ``parse_complete`` of complete answers.
    """
    from tqdm.auto import tqdm
    n = len(records)
    scores = np.zeros((n, len(CATEGORIES)), np.float32)
    vad = np.full((n, 3), np.nan, np.float32)
    answers: List[str] = []
    complete = 0
    expect_vad = PROMPTS[backend.prompt_id].with_vad
    cached: Tuple[str, Any] = ('', None)
    bar = tqdm(total=n, desc=desc, unit='person', dynamic_ncols=True, disable=not progress)
    for start in range(0, n, batch_size):
        chunk = records[start:start + batch_size]
        views = []
        for record in chunk:
            if cached[0] != record.image_path:
                cached = (record.image_path, load_image_rgb(
                    record.image_path, record.image_size, record.meta.get('exif_transpose')))
            views.extend(backend.render_views(cached[1], [record.box]))
        rows = slice(start, start + len(chunk))
        if source == 'text':
            texts = backend.generate(views, backend.prompt_id, max_new_tokens)
            for i, text in enumerate(texts):
                parsed = parse_answer(text, expect_vad=expect_vad)
                for name in parsed.categories:
                    scores[start + i, CATEGORIES.index(name)] = 1.0
                vad[start + i] = parsed.vad
                complete += int(parsed.complete)
            answers.extend(texts)
        else:
            s, v = backend.score_views(views)
            scores[rows], vad[rows] = s, v
        bar.update(len(chunk))
    bar.close()
    out: Dict[str, Any] = {'scores': scores, 'vad': vad}
    if source == 'text':
        out['answers'] = answers
        out['parse_complete'] = complete / max(n, 1)
    return out


def at_thresholds(labels: np.ndarray, scores: np.ndarray,
                  thresholds: Dict[str, float]) -> Tuple[Dict[str, Dict[str, float]], float]:
    """Per-category precision/recall/F1 when predicting ``score >= threshold``; micro F1."""
    per: Dict[str, Dict[str, float]] = {}
    tp_all = fp_all = fn_all = 0
    for k, name in enumerate(CATEGORIES):
        if name not in thresholds:
            continue
        predicted = scores[:, k] >= thresholds[name]
        truth = labels[:, k] > 0.5
        tp = int((predicted & truth).sum())
        fp = int((predicted & ~truth).sum())
        fn = int((~predicted & truth).sum())
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        precision = tp / (tp + fp) if tp + fp else math.nan
        recall = tp / (tp + fn) if tp + fn else math.nan
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
        per[name] = {'threshold': thresholds[name], 'precision': precision, 'recall': recall,
                     'f1': f1}
    micro = 2 * tp_all / (2 * tp_all + fp_all + fn_all) if tp_all + fp_all + fn_all else math.nan
    return per, micro


def _resolve_source(args: argparse.Namespace) -> str:
    source = args.scores
    if source == 'auto':
        return 'text' if args.zero_shot else 'head'
    if source == 'head' and args.zero_shot:
        raise ConfigError('--scores head: a zero-shot model has no score head; use text or '
                          'logprob')
    if source == 'logprob' and not args.zero_shot:
        raise ConfigError('--scores logprob: only for --zero-shot (a bundle scores with its '
                          'head)')
    return source


def evaluate(args: argparse.Namespace) -> Dict[str, Any]:
    """Run the evaluation described by parsed ``evaluate`` arguments; write the report.

    Raises:
        ConfigError: for contradictory options or an existing report without --overwrite.
        BundleMismatchError, ModelLoadError: from loading the bundle / base model.
        InputError: for a dataset with too many unusable persons.
    """
    from emotion_ros.backends.llava import LlavaBackend, LlavaOptions
    from emotion_ros.evaluation.metrics import mean_average_precision, precision_recall_thresholds
    from emotion_ros.evaluation.metrics import vad_mae, NO_POSITIVE_RULE
    if args.zero_shot == bool(args.bundle):
        raise ConfigError('give either --bundle PATH or --zero-shot (with --base-model)')
    if args.zero_shot and not args.base_model:
        raise ConfigError('--zero-shot: name the base model with --base-model')
    source = _resolve_source(args)
    out_dir = args.out
    if os.path.exists(os.path.join(out_dir, 'report.json')) and not args.overwrite:
        raise ConfigError(f'--out: {out_dir} already holds a report; pass --overwrite or '
                          'choose another folder')
    options = LlavaOptions(bundle_path=args.bundle or '', base_model=args.base_model or '',
                           device=args.device, dtype=args.dtype, max_batch=args.batch_size,
                           zero_shot_prompt_id=args.prompt_id,
                           zero_shot_chat_template=args.chat_template,
                           zero_shot_view=args.view)
    backend = LlavaBackend(options)
    t0 = time.time()
    backend.load()
    load_s = time.time() - t0
    progress = not args.no_progress
    test_records = _load_records(args.data_root, args.split, args.max_samples,
                                 args.max_skip_fraction)
    thresholds: Dict[str, float] = {}
    val_map = math.nan
    if args.val_split:
        val_records = _load_records(args.data_root, args.val_split, args.max_samples,
                                    args.max_skip_fraction)
        val = score_records(backend, val_records, source, args.batch_size,
                            args.max_new_tokens, progress, desc=f'{args.val_split} (thresholds)')
        val_labels = label_matrix(val_records)
        val_map = mean_average_precision(val_labels, val['scores'])[0]
        values = precision_recall_thresholds(val_labels, val['scores'])
        thresholds = {c: float(t) for c, t in zip(CATEGORIES, values) if not math.isnan(t)}
    t1 = time.time()
    test = score_records(backend, test_records, source, args.batch_size, args.max_new_tokens,
                         progress, desc=args.split)
    score_s = time.time() - t1
    labels = label_matrix(test_records)
    vad_true = vad_matrix(test_records)
    mean_ap, per_category = mean_average_precision(labels, test['scores'])
    per_threshold, micro_f1 = at_thresholds(labels, test['scores'], thresholds)
    has_vad = bool(np.isfinite(test['vad']).any())
    report: Dict[str, Any] = {
        'label': args.label or _default_label(backend, source),
        'created_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'contract_version': CONTRACT_VERSION,
        'model_id': backend.model_id,
        'bundle': os.path.abspath(args.bundle) if args.bundle else None,
        'base_model': (backend.manifest or {}).get('base_model', args.base_model),
        'prompt_id': backend.prompt_id,
        'view': backend.view,
        'scores': source,
        'data_root': os.path.abspath(args.data_root),
        'split': args.split,
        'val_split': args.val_split or None,
        'persons': int(labels.shape[0]),
        'map': mean_ap,
        'per_category_ap': dict(per_category),
        'no_positive_categories': list(per_category.excluded),
        'no_positive_rule': NO_POSITIVE_RULE,
        'val_map': val_map,
        'vad_mae': vad_mae(vad_true, test['vad']) if has_vad else None,
        'thresholds': thresholds,
        'at_thresholds': per_threshold,
        'micro_f1_at_thresholds': micro_f1,
        'timing': {'load_s': load_s, 'score_s': score_s,
                   'persons_per_s': labels.shape[0] / max(score_s, 1e-9),
                   'device': backend.device},
    }
    if source == 'text':
        report['answers_complete'] = test['parse_complete']
    backend.close()
    write_report(out_dir, report, labels, test, vad_true)
    return report


def _default_label(backend: Any, source: str) -> str:
    if backend.manifest is None:
        return f'zero-shot ({source})'
    kind = 'emotions + VAD' if PROMPTS[backend.prompt_id].with_vad else 'emotions only'
    return f'fine-tuned, {kind} ({source})'


def write_report(out_dir: str, report: Dict[str, Any], labels: np.ndarray,
                 result: Dict[str, Any], vad_true: np.ndarray) -> None:
    """Write report.json, report.md, predictions.npz and the plots into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'report.json'), 'w', encoding='utf-8') as f:
        json.dump(report, f, indent=2, default=_json_default)
        f.write('\n')
    np.savez_compressed(os.path.join(out_dir, 'predictions.npz'), scores=result['scores'],
                        vad=result['vad'], labels=labels, vad_true=vad_true)
    if 'answers' in result:
        with open(os.path.join(out_dir, 'answers.jsonl'), 'w', encoding='utf-8') as f:
            for text in result['answers']:
                f.write(json.dumps({'answer': text}) + '\n')
    with open(os.path.join(out_dir, 'report.md'), 'w', encoding='utf-8') as f:
        f.write(markdown_report(report))
    _plots(out_dir, report, labels, result, vad_true)


def _json_default(value: Any) -> Any:
    if hasattr(value, 'item'):
        return value.item()
    return str(value)


def _pct(value: Optional[float]) -> str:
    return '-' if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f'{100 * value:.2f}'


def _num(value: Optional[float], digits: int = 3) -> str:
    return '-' if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f'{value:.{digits}f}'


def markdown_report(report: Dict[str, Any]) -> str:
    """The human-readable report (Markdown)."""
    lines = [f'# Emotion evaluation: {report["label"]}', '',
             f'- model: `{report["model_id"]}` (prompt `{report["prompt_id"]}`, view '
             f'`{report["view"]}`, scores from `{report["scores"]}`)',
             f'- data: `{report["data_root"]}`, split `{report["split"]}` '
             f'({report["persons"]} persons); thresholds chosen on '
             f'`{report["val_split"] or "-"}`',
             f'- created {report["created_utc"]}, contract version '
             f'{report["contract_version"]}', '',
             '| metric | value |', '|---|---|',
             f'| mAP (%) | {_pct(report["map"])} |']
    vad = report.get('vad_mae')
    if vad:
        lines += [f'| VAD MAE mean (1-10) | {_num(vad["mean"])} |'] + \
            [f'| {name} MAE | {_num(vad[name])} |' for name in VAD_NAMES]
    lines.append(f'| micro F1 at P=R thresholds | {_num(report["micro_f1_at_thresholds"])} |')
    if 'answers_complete' in report:
        lines.append(f'| answers parsed completely | {_pct(report["answers_complete"])} % |')
    lines += ['', f'Categories without a positive in this split: '
              f'{", ".join(report["no_positive_categories"]) or "none"} '
              f'({report["no_positive_rule"]}).', '',
              '## Compared with published EMOTIC test results', '',
              comparison_table([report]), '',
              '## Per category', '',
              '| category | AP (%) | threshold (val P=R) | precision | recall |',
              '|---|---|---|---|---|']
    for name in CATEGORIES:
        at = report['at_thresholds'].get(name, {})
        lines.append(f'| {name} | {_pct(report["per_category_ap"].get(name))} | '
                     f'{_num(at.get("threshold"))} | {_num(at.get("precision"))} | '
                     f'{_num(at.get("recall"))} |')
    lines += ['', 'Plots: `ap_per_category.png`, `pr_curves.png`'
              + (', `vad_scatter.png`' if vad else '') + '.', '']
    return '\n'.join(lines)


def comparison_table(reports: Sequence[Dict[str, Any]]) -> str:
    """Markdown table of our reports next to the published EMOTIC mAPs."""
    rows = ['| model | mAP (%) | source |', '|---|---|---|']
    for report in reports:
        rows.append(f'| {report["label"]} | {_pct(report["map"])} | this evaluation, '
                    f'{report["persons"]} persons of `{report["split"]}` |')
    rows += [f'| {name} | {value:.2f} | published (EMOTIC test, 7,203 persons) |'
             for name, value in PUBLISHED_MAP]
    return '\n'.join(rows)


def _plots(out_dir: str, report: Dict[str, Any], labels: np.ndarray, result: Dict[str, Any],
           vad_true: np.ndarray) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from emotion_ros.evaluation.metrics import precision_recall_curve
    aps = [report['per_category_ap'].get(c, math.nan) for c in CATEGORIES]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(range(len(CATEGORIES)), [0 if math.isnan(a) else 100 * a for a in aps])
    ax.set_xticks(range(len(CATEGORIES)))
    ax.set_xticklabels(CATEGORIES, rotation=70, ha='right', fontsize=8)
    ax.set_ylabel('AP (%)')
    ax.set_title(f'{report["label"]}: mAP {_pct(report["map"])} %')
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'ap_per_category.png'), dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(4, 7, figsize=(16, 9), sharex=True, sharey=True)
    for k, name in enumerate(CATEGORIES):
        ax = axes.flat[k]
        if labels[:, k].sum() > 0:
            precision, recall, _ = precision_recall_curve(labels[:, k], result['scores'][:, k])
            ax.step(recall, precision, where='post')
        ax.set_title(f'{name} {_pct(aps[k])}', fontsize=8)
    for ax in list(axes.flat)[len(CATEGORIES):]:
        ax.axis('off')
    fig.supxlabel('recall')
    fig.supylabel('precision')
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'pr_curves.png'), dpi=90)
    plt.close(fig)
    if report.get('vad_mae'):
        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
        for k, name in enumerate(VAD_NAMES):
            axes[k].scatter(vad_true[:, k], result['vad'][:, k], s=6, alpha=0.5)
            axes[k].plot([1, 10], [1, 10], color='grey', linewidth=1)
            axes[k].set_xlabel(f'annotated {name}')
            axes[k].set_ylabel(f'predicted {name}')
            axes[k].set_title(f'{name}: MAE {_num(report["vad_mae"][name])}')
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, 'vad_scatter.png'), dpi=90)
        plt.close(fig)


def summary_line(report: Dict[str, Any], out_dir: str) -> str:
    """One line: label, mAP, persons, split, VAD MAE and where the report is."""
    vad = report.get('vad_mae') or {}
    return (f'{report["label"]}: mAP {_pct(report["map"])} % on {report["persons"]} persons of '
            f'{report["split"]}' + (f', VAD MAE {_num(vad.get("mean"))}' if vad else '')
            + f'; report in {out_dir}')

"""The commands that serve both model kinds, dispatched here so neither part imports the other.

``python -m training`` (:mod:`training.__main__`) runs them:

* ``stats``: an audio-visual layout (:mod:`training.av.data`) or an EMOTIC-layout
  dataset (:mod:`training.emotic.dataset`), by what the folder holds;
* ``evaluate``: an ``audio_visual`` bundle (:mod:`training.av.evaluate`) or a
  LLaVA bundle / zero-shot LLaVA (:mod:`training.emotic.evaluate`), by the
  bundle's manifest;
* ``train`` and ``export``: the generic loop of :mod:`training.core.train` with
  the task of ``model_kind`` (:mod:`training.emotic.task` or
  :mod:`training.av.task`).

The task modules import torch and transformers, so they are imported only when
a run needs them (``stats`` never pays for torch).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any, Dict, Optional, Sequence

from emotion_ros.errors import ConfigError
from emotion_ros.llm.contract import DEFAULT_PROMPT_ID, PERSON_VIEWS, PROMPTS
from emotion_ros.llm.templates import CHAT_TEMPLATES, DEFAULT_CHAT_TEMPLATE
from training.av.data import detect_av_layout, run_av_stats
from training.av.evaluate import ablation_table, evaluate_av
from training.core.config import add_config_arguments, config_from_args, parse_train_args
from training.core.config import TrainConfig
from training.emotic.dataset import add_stats_arguments, run_stats as run_emotic_stats
from training.emotic.evaluate import comparison_table, evaluate, SCORE_SOURCES, summary_line

__all__ = ['add_evaluate_arguments', 'add_export_arguments', 'add_stats_arguments',
           'add_train_arguments', 'export_run', 'run_evaluate', 'run_export', 'run_stats',
           'run_train', 'task_for', 'train', 'train_from_argv']


# ---------------------------------------------------------------------------------------------
# stats


def run_stats(args: argparse.Namespace) -> int:
    """Run ``python -m training stats``; 0 when every split passes its checks."""
    if args.fmt is None and detect_av_layout(os.fspath(args.root)):
        return run_av_stats(args)
    return run_emotic_stats(args)


# ---------------------------------------------------------------------------------------------
# evaluate


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m training evaluate``."""
    parser.description = ('Evaluate a weights bundle (or zero-shot LLaVA) on a dataset split: '
                          'mAP, per-category AP, VAD MAE, thresholds chosen on validation; '
                          'writes report.json/.md and plots.')
    parser.add_argument('--data-root', help='dataset folder (EMOTIC .mat / CSV / our JSONL)')
    parser.add_argument('--bundle', help='weights bundle folder (fine-tuned model)')
    parser.add_argument('--zero-shot', action='store_true',
                        help='evaluate the base model without a bundle (needs --base-model)')
    parser.add_argument('--base-model', default='',
                        help="base LLaVA (folder or hub id); default: the bundle's")
    parser.add_argument('--scores', choices=SCORE_SOURCES, default='auto',
                        help='score source: head (bundles), text (parse generated answers; '
                             'default for --zero-shot), logprob (zero-shot); default auto')
    parser.add_argument('--split', default='test', help='split to evaluate (default test)')
    parser.add_argument('--val-split', default='val',
                        help="split used to choose the P=R thresholds (default val; '' skips)")
    parser.add_argument('--out', default='', help='report folder (default eval/<bundle or '
                        'zero-shot>-<split>)')
    parser.add_argument('--label', default='', help='name of this row in the tables')
    parser.add_argument('--max-samples', type=int, default=0,
                        help='evaluate only the first N persons of each split (0: all)')
    parser.add_argument('--batch-size', type=int, default=8, help='persons per forward pass')
    parser.add_argument('--max-new-tokens', type=int, default=64,
                        help='generation budget for --scores text (default 64)')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    parser.add_argument('--dtype', default='auto',
                        choices=('auto', 'bfloat16', 'float16', 'float32'))
    parser.add_argument('--prompt-id', default=DEFAULT_PROMPT_ID,
                        choices=[p for p in PROMPTS if p.startswith('emotic_')],
                        help='zero-shot prompt (bundles use their own)')
    parser.add_argument('--chat-template', default=DEFAULT_CHAT_TEMPLATE,
                        choices=sorted(CHAT_TEMPLATES), help='zero-shot chat template')
    parser.add_argument('--view', default='box', choices=PERSON_VIEWS,
                        help='zero-shot person view (bundles use their own)')
    parser.add_argument('--max-skip-fraction', type=float, default=0.05,
                        help='fail when more persons than this are unusable (default 0.05)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing report')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument('--ablations', nargs='+', metavar='CONDITION',
                        help='audio_visual bundles: conditions to score (default all of: all, '
                             'no_transcript, vision_only, audio_only, audio_text)')
    parser.add_argument('--table', nargs='+', metavar='REPORT.json',
                        help='only print the comparison table of these reports and exit')


def _bundle_kind(bundle: str) -> str:
    from emotion_ros.llm.bundle import load_manifest
    return str(load_manifest(bundle).get('model_kind') or 'llava')


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``python -m training evaluate`` from parsed arguments."""
    if args.table:
        reports = []
        for path in args.table:
            try:
                with open(path, encoding='utf-8') as f:
                    reports.append(json.load(f))
            except (OSError, ValueError) as exc:
                raise ConfigError(f'--table: cannot read {path}: {exc}') from exc
        print(comparison_table(reports))
        return 0
    if not args.data_root:
        raise ConfigError('--data-root: give the dataset folder')
    if args.batch_size < 1:
        raise ConfigError('--batch-size: must be >= 1')
    if not args.out:
        name = os.path.basename(os.path.normpath(args.bundle)) if args.bundle else 'zero-shot'
        args.out = os.path.join('eval', f'{name}-{args.split}')
    if args.bundle and not args.zero_shot and _bundle_kind(args.bundle) == 'audio_visual':
        report = evaluate_av(args)
        print(ablation_table(report) + f'\n\nreport in {args.out}', file=sys.stdout)
        return 0
    report = evaluate(args)
    print(summary_line(report, args.out), file=sys.stdout)
    return 0


# ---------------------------------------------------------------------------------------------
# train


def task_for(model_kind: str) -> Any:
    """The :class:`training.core.train.Task` of a ``model_kind`` (imports torch).

    Raises:
        ConfigError: for an unknown kind.
    """
    if model_kind == 'audio_visual':
        from training.av.task import TASK
        return TASK
    if model_kind == 'llava':
        from training.emotic.task import TASK as EMOTIC_TASK
        return EMOTIC_TASK
    raise ConfigError(f'model_kind: unknown {model_kind!r} (llava or audio_visual)')


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Fine-tune the model of ``cfg.model_kind`` (see :func:`training.core.train.train`)."""
    from training.core.train import train as train_loop
    return train_loop(cfg, task_for(cfg.model_kind))


def add_train_arguments(parser: Any) -> None:
    """Arguments of ``python -m training train`` (one flag per TrainConfig field)."""
    parser.description = ('Fine-tune LLaVA with LoRA and a score head on EMOTIC (or the '
                          'synthetic set / your JSONL data). Defaults: the LLaVA-1.5 LoRA '
                          'recipe. For several GPUs/nodes start it with accelerate launch or '
                          'torchrun (docs/training.md).')
    add_config_arguments(parser)
    parser.add_argument('--print-config', action='store_true',
                        help='print the resolved configuration as YAML and exit')


def run_train(args: Any) -> int:
    """Run ``python -m training train`` from parsed arguments."""
    cfg = config_from_args(args)
    if args.print_config:
        import yaml
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end='')
        return 0
    summary = train(cfg)
    if summary:
        print(json.dumps({k: v for k, v in summary.items() if k != 'history'}, indent=2))
    return 0


def train_from_argv(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Parse flags and train (for scripts and tests)."""
    return train(parse_train_args(argv))


# ---------------------------------------------------------------------------------------------
# export


def add_export_arguments(parser: Any) -> None:
    """Arguments of ``python -m training export``."""
    parser.description = ('Write a weights bundle from a training run (its best epoch or a '
                          'checkpoint), or merge the LoRA adapter of a bundle into the base '
                          'weights for deployment.')
    parser.add_argument('source', help='a run folder (output_dir of train) or a bundle folder')
    parser.add_argument('out', help='bundle folder to create')
    parser.add_argument('--checkpoint', default='best',
                        help="from a run: 'best' (default), 'latest', or a checkpoint folder")
    parser.add_argument('--merge', action='store_true',
                        help='fold the LoRA adapter into the base weights (a full model copy, '
                             'loads without peft)')
    parser.add_argument('--base-model', default='',
                        help='where to load the base model from (default: the recorded one)')
    parser.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float16', 'float32'),
                        help='weights dtype of a merged bundle (default bfloat16)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing bundle')


def export_run(run_dir: str, out: str, checkpoint: str = 'best', base_model: str = '',
               overwrite: bool = False) -> Dict[str, Any]:
    """Write a LoRA bundle from a run (see :func:`training.core.train.export_run`)."""
    from training.core.train import export_run as export_with, read_run_config
    audio_visual = read_run_config(run_dir).get('model_kind') == 'audio_visual'
    kind = 'audio_visual' if audio_visual else 'llava'
    return export_with(run_dir, out, task_for(kind), checkpoint, base_model, overwrite)


def run_export(args: Any) -> int:
    """Run ``python -m training export`` from parsed arguments."""
    from emotion_ros.llm.bundle import MANIFEST_NAME, merge_adapter
    source_is_bundle = os.path.isfile(os.path.join(args.source, MANIFEST_NAME))
    if source_is_bundle:
        if not args.merge:
            raise ConfigError(f'{args.source} is already a bundle; add --merge to merge its '
                              'adapter, or copy the folder')
        manifest = merge_adapter(args.source, args.out, base_model=args.base_model or None,
                                 dtype=args.dtype, overwrite=args.overwrite)
    elif args.merge:
        if os.path.exists(args.out) and not args.overwrite:
            raise ConfigError(f'{args.out} already exists; pass --overwrite to replace it')
        import tempfile
        parent = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(parent, exist_ok=True)
        tmp_root = tempfile.mkdtemp(prefix='.export-', dir=parent)  # never a user's folder
        tmp = os.path.join(tmp_root, 'lora')
        try:
            export_run(args.source, tmp, args.checkpoint, args.base_model)
            manifest = merge_adapter(tmp, args.out, base_model=args.base_model or None,
                                     dtype=args.dtype, overwrite=args.overwrite)
        finally:
            shutil.rmtree(tmp_root, ignore_errors=True)
    else:
        manifest = export_run(args.source, args.out, args.checkpoint, args.base_model,
                              args.overwrite)
    print(f'wrote {manifest["adapter_type"]} bundle {os.path.abspath(args.out)} '
          f'(base model {manifest["base_model"]}, contract {manifest["contract_version"]})')
    return 0

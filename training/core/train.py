"""The fine-tuning loop, on Hugging Face Accelerate.

One code path for a CPU, one GPU, several GPUs and several nodes:
``python -m training train ...`` runs in one process;
``accelerate launch --config_file training/configs/<setup>.yaml -m training train ...``
or ``torchrun --nproc_per_node N -m training train ...`` run data-parallel
(DDP; gloo on CPU, NCCL on GPUs). See docs/training.md.

What a run leaves in ``output_dir``::

    config.json            the resolved TrainConfig
    data_report.json       persons used and skipped per reason, per split
    metrics.jsonl          every logged event (train steps, evaluations), one JSON per line
    train_log.csv          step, epoch, lr, loss, lm_loss, cls_loss, vad_loss, grad_norm, ...
    eval_log.csv           epoch, step, val_map, val_vad_mae, val_lm_loss, is_best (+ the
                           discrete metrics val_accuracy, val_weighted_f1, val_uar, val_war)
    curves.png             training loss and validation mAP so far
    checkpoints/step-N/    resumable state (trainable weights, optimizer, scheduler, progress)
    best/                  trainable weights + metrics of the best epoch (validation mAP)
    bundle/                the weights bundle of the best epoch, for the robot

Resume after a kill: run the same command again (``--resume auto``, the
default) and it continues from the newest complete checkpoint, skipping the
batches of the interrupted epoch it had already trained on.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from emotion_ros.llm.contract import CATEGORIES
from emotion_ros.errors import ConfigError, ModelLoadError
from training.core.config import config_from_mapping, flag, TrainConfig

_LOG = logging.getLogger(__name__)

CHECKPOINT_DIR = 'checkpoints'
BEST_DIR = 'best'
STATE_FILE = 'trainer_state.json'
TRAINABLE_FILE = 'trainable.safetensors'
# Fields that may change between a run and its resumption (they do not change the model).
# A moved run folder or dataset is fine; anything that changes the model is not.
RESUMABLE_CHANGES = frozenset({'progress', 'num_workers', 'logging_steps', 'save_steps',
                               'save_total_limit', 'resume', 'max_steps',
                               'per_device_eval_batch_size', 'cpu', 'output_dir', 'data_root',
                               'bundle_name', 'overwrite'})
TRAIN_COLUMNS = ['step', 'epoch', 'lr', 'loss', 'lm_loss', 'cls_loss', 'vad_loss',
                 'grad_norm', 'samples_per_s', 'elapsed_s']
EVAL_COLUMNS = ['epoch', 'step', 'val_map', 'val_vad_mae', 'val_lm_loss', 'is_best',
                'val_accuracy', 'val_weighted_f1', 'val_uar', 'val_war']


class EpochSampler(torch.utils.data.Sampler):
    """A shuffling sampler whose order depends only on (seed, epoch).

    Every process draws the same permutation (Accelerate then gives each its
    shard), and a resumed run can skip exactly the batches already done.
    """

    def __init__(self, size: int, seed: int) -> None:
        """Shuffle ``size`` indices with ``seed``."""
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of an epoch."""
        self.epoch = epoch

    def __iter__(self):  # noqa: D105
        generator = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:  # noqa: D105
        return self.size


# ---------------------------------------------------------------------------------------------
# Files: metrics, checkpoints.


class MetricsLogger:
    """Appends events to metrics.jsonl and the two CSV files (main process only).

    On resume, rows logged after the checkpoint's step are dropped so that
    the files read as one uninterrupted run.
    """

    def __init__(self, output_dir: str, enabled: bool, resume_step: Optional[int]) -> None:
        """Open (and on resume, trim) the files."""
        self.enabled = enabled
        self.jsonl = os.path.join(output_dir, 'metrics.jsonl')
        self.train_csv = os.path.join(output_dir, 'train_log.csv')
        self.eval_csv = os.path.join(output_dir, 'eval_log.csv')
        if not enabled:
            return
        if resume_step is None:
            for path in (self.jsonl, self.train_csv, self.eval_csv):
                if os.path.exists(path):
                    os.remove(path)
        else:
            self._trim(resume_step)
        for path, columns in ((self.train_csv, TRAIN_COLUMNS), (self.eval_csv, EVAL_COLUMNS)):
            if not os.path.exists(path):
                with open(path, 'w', newline='', encoding='utf-8') as f:
                    csv.writer(f).writerow(columns)

    def _trim(self, step: int) -> None:
        if os.path.exists(self.jsonl):
            with open(self.jsonl, encoding='utf-8') as f:
                keep = [line for line in f if line.strip() and json.loads(line)['step'] <= step]
            with open(self.jsonl, 'w', encoding='utf-8') as f:
                f.writelines(keep)
        for path in (self.train_csv, self.eval_csv):
            if os.path.exists(path):
                with open(path, newline='', encoding='utf-8') as f:
                    rows = list(csv.reader(f))
                header_row, body = rows[:1], rows[1:]
                step_col = header_row[0].index('step') if header_row else 0
                body = [r for r in body if int(float(r[step_col])) <= step]
                with open(path, 'w', newline='', encoding='utf-8') as f:
                    csv.writer(f).writerows(header_row + body)

    def log(self, event: str, row: Dict[str, Any]) -> None:
        """Write one event (``'train'`` or ``'eval'``)."""
        if not self.enabled:
            return
        with open(self.jsonl, 'a', encoding='utf-8') as f:
            f.write(json.dumps({'event': event, **row}, default=_json_default) + '\n')
        path, columns = (self.train_csv, TRAIN_COLUMNS) if event == 'train' else \
            (self.eval_csv, EVAL_COLUMNS)
        with open(path, 'a', newline='', encoding='utf-8') as f:
            csv.writer(f).writerow([_fmt(row.get(c, '')) for c in columns])


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f'{value:.6g}'
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, 'item'):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _write_json(path: str, data: Any) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=2, default=_json_default)
        f.write('\n')
    os.replace(tmp, path)


def list_checkpoints(output_dir: str) -> List[Tuple[int, str]]:
    """Complete checkpoints of a run as (step, folder), oldest first."""
    root = os.path.join(output_dir, CHECKPOINT_DIR)
    found = []
    if os.path.isdir(root):
        for name in os.listdir(root):
            folder = os.path.join(root, name)
            if name.startswith('step-') and os.path.isfile(os.path.join(folder, STATE_FILE)):
                try:
                    found.append((int(name[5:]), folder))
                except ValueError:
                    continue
    return sorted(found)


def save_checkpoint(output_dir: str, model: Any, optimizer: Any, scheduler: Any,
                    state: Dict[str, Any], keep: int) -> str:
    """Write a resumable checkpoint atomically (main process only); prune old ones."""
    from safetensors.torch import save_file
    root = os.path.join(output_dir, CHECKPOINT_DIR)
    final = os.path.join(root, f'step-{state["step"]:07d}')
    tmp = os.path.join(root, f'.tmp-step-{state["step"]:07d}')
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file({k: v.contiguous() for k, v in model.trainable_state_dict().items()},
              os.path.join(tmp, TRAINABLE_FILE))
    torch.save(optimizer.state_dict(), os.path.join(tmp, 'optimizer.pt'))
    torch.save(scheduler.state_dict(), os.path.join(tmp, 'scheduler.pt'))
    _write_json(os.path.join(tmp, STATE_FILE), state)  # last: marks the checkpoint complete
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
    for _step, folder in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)
    return final


def load_checkpoint(folder: str, model: Any, optimizer: Any, scheduler: Any) -> Dict[str, Any]:
    """Restore weights, optimizer and scheduler; return the trainer state.

    Raises:
        ModelLoadError: for a missing, partial or incompatible checkpoint.
    """
    from safetensors.torch import load_file
    try:
        with open(os.path.join(folder, STATE_FILE), encoding='utf-8') as f:
            state = json.load(f)
        model.load_trainable_state_dict(load_file(os.path.join(folder, TRAINABLE_FILE)))
        optimizer.load_state_dict(torch.load(os.path.join(folder, 'optimizer.pt'),
                                             map_location='cpu', weights_only=True))
        scheduler.load_state_dict(torch.load(os.path.join(folder, 'scheduler.pt'),
                                             weights_only=True))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if isinstance(exc, ModelLoadError):
            raise
        raise ModelLoadError(f'cannot resume from checkpoint {folder}: {exc}') from exc
    return state


def _config_changes(saved: Dict[str, Any], cfg: TrainConfig) -> List[str]:
    now = cfg.to_dict()
    return sorted(k for k in set(saved) | set(now)
                  if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))


# ---------------------------------------------------------------------------------------------
# Evaluation during training.


def evaluate_loader(model: Any, loader: Any, accelerator: Any,
                    progress: bool) -> Dict[str, Any]:
    """Score a split with the model in eval mode; gather over processes.

    Returns:
        Dict with ``scores`` (N, 26), ``vad`` (N, 3), ``labels`` (N, 26),
        ``vad_true`` (N, 3) as numpy arrays and ``lm_loss`` (token-weighted mean).
    """
    from tqdm.auto import tqdm
    model.eval()
    parts: Dict[str, List[np.ndarray]] = {'scores': [], 'vad': [], 'labels': [], 'vad_true': [],
                                          'discrete_pred': [], 'discrete_true': []}
    loss_sum = torch.zeros((), device=accelerator.device)
    token_sum = torch.zeros((), device=accelerator.device)
    bar = tqdm(loader, desc='evaluate', leave=False, dynamic_ncols=True,
               disable=not (progress and accelerator.is_main_process))
    with torch.no_grad():
        for batch in bar:
            out = model(**batch)
            tokens = out['answer_tokens'].float()
            loss_sum += out['lm_loss'].float() * tokens
            token_sum += tokens
            gathered = accelerator.gather_for_metrics(
                (out['category_logits'].float().sigmoid(), out['vad'].float(),
                 batch['category_targets'].float(), batch['vad_targets'].float()))
            for key, value in zip(('scores', 'vad', 'labels', 'vad_true'), gathered):
                parts[key].append(value.cpu().numpy())
            if 'discrete_logits' in out:
                pred, true = accelerator.gather_for_metrics(
                    (out['discrete_logits'].argmax(-1), batch['discrete_targets']))
                parts['discrete_pred'].append(pred.cpu().numpy())
                parts['discrete_true'].append(true.cpu().numpy())
    model.train()
    loss_sum = accelerator.reduce(loss_sum, 'sum')
    token_sum = accelerator.reduce(token_sum, 'sum')
    result: Dict[str, Any] = {k: np.concatenate(v) for k, v in parts.items() if v}
    result['lm_loss'] = float(loss_sum / token_sum.clamp(min=1))
    return result


def split_metrics(result: Dict[str, Any], with_vad: bool,
                  label_set: str = '') -> Dict[str, Any]:
    """mAP, per-category AP, VAD MAE and P=R thresholds of one evaluated split.

    With a discrete label set, also accuracy, weighted F1, UAR, WAR and the
    confusion matrix over the samples that have a discrete label.
    """
    from emotion_ros.evaluation.metrics import mean_average_precision, precision_recall_thresholds
    from emotion_ros.evaluation.metrics import vad_mae
    labels = result['labels']
    mean_ap, per_category = mean_average_precision(labels, result['scores'])
    thresholds = precision_recall_thresholds(labels, result['scores'])
    metrics: Dict[str, Any] = {
        'map': mean_ap,
        'per_category_ap': dict(per_category),
        'no_positive_categories': list(per_category.excluded),
        'thresholds': {c: float(t) for c, t in zip(CATEGORIES, thresholds)
                       if not math.isnan(t)},
        'lm_loss': result['lm_loss'],
        'persons': int(labels.shape[0]),
    }
    if with_vad:
        known = np.isfinite(result['vad_true']).all(1)
        metrics['vad_mae'] = vad_mae(result['vad_true'][known], result['vad'][known]) \
            if known.any() else {'mean': math.nan}
    if label_set and 'discrete_true' in result:
        from emotion_ros.llm.labels import label_set as classes_of
        from emotion_ros.evaluation.metrics import classification_metrics
        known = result['discrete_true'] >= 0
        if known.any():
            classes = classes_of(label_set)
            metrics['discrete'] = {
                'label_set': label_set, 'classes': list(classes),
                **classification_metrics(result['discrete_true'][known],
                                         result['discrete_pred'][known], len(classes))}
            for key in ('accuracy', 'weighted_f1', 'uar', 'war'):
                metrics[key] = metrics['discrete'][key]
    return metrics


def _plot_curves(output_dir: str) -> None:
    """Redraw curves.png from the CSV logs (best effort: plots must never stop training)."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        train = _read_csv(os.path.join(output_dir, 'train_log.csv'))
        evals = _read_csv(os.path.join(output_dir, 'eval_log.csv'))
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        if train:
            axes[0].plot([float(r['step']) for r in train], [float(r['loss']) for r in train],
                         label='loss')
            axes[0].plot([float(r['step']) for r in train],
                         [float(r['lm_loss']) for r in train], label='answer text')
            axes[0].plot([float(r['step']) for r in train],
                         [float(r['cls_loss']) for r in train], label='category BCE')
            axes[0].set_xlabel('optimizer step')
            axes[0].legend()
        axes[0].set_title('training loss')
        if evals:
            axes[1].plot([float(r['epoch']) for r in evals], [float(r['val_map']) for r in evals],
                         marker='o')
        axes[1].set_xlabel('epoch')
        axes[1].set_title('validation mAP')
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, 'curves.png'), dpi=100)
        plt.close(fig)
    except Exception as exc:  # noqa: BLE001
        _LOG.warning('could not draw curves.png: %s', exc)


def _read_csv(path: str) -> List[Dict[str, str]]:
    if not os.path.exists(path):
        return []
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# The run.


def _mixed_precision(cfg: TrainConfig, use_cuda: bool) -> str:
    if not use_cuda:
        if cfg.precision in ('bf16', 'fp16'):
            raise ConfigError(f'{flag("precision")}: {cfg.precision} needs a GPU; use fp32 '
                              'or auto on CPU')
        return 'no'
    if cfg.precision == 'auto':
        return 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
    return {'bf16': 'bf16', 'fp16': 'fp16', 'fp32': 'no'}[cfg.precision]


@dataclasses.dataclass(frozen=True)
class Task:
    """What the loop needs from one ``model_kind``: its data, model, collator and bundle.

    The EMOTIC / LLaVA task is :data:`training.emotic.task.TASK`, the
    audio-visual one :data:`training.av.task.TASK`; :mod:`training.commands`
    picks one by ``cfg.model_kind``.
    """

    #: (cfg) -> (train set, eval set, data report {split: counts}); cfg.data_root is set.
    load_data: Callable[[TrainConfig], Tuple[Any, Any, Dict[str, Any]]]
    #: (cfg, device) -> (model, processor), the model with its trainable weights fresh.
    build_model: Callable[..., Tuple[Any, Any]]
    #: (cfg, model, processor) -> the batch collator.
    collator: Callable[[TrainConfig, Any, Any], Any]
    #: (model, cfg) -> what was loaded from cfg.init_from (logged), or None.
    init_from: Callable[[Any, TrainConfig], Optional[Dict[str, Any]]]
    #: (model, cfg, name, metrics, thresholds) -> the bundle's BundleInfo.
    bundle_info: Callable[..., Any]
    #: (model, processor, folder, info) -> writes the weights files of a bundle.
    write_bundle_files: Callable[..., Any]
    #: validation reports VAD MAE even when cfg.with_vad is off.
    always_vad: bool = False


def _load_data(cfg: TrainConfig, task: Task, output_dir: str,
               is_main: bool) -> Tuple[Any, Any]:
    if not cfg.data_root:
        raise ConfigError(f'{flag("data_root")}: give the dataset folder')
    train_set, eval_set, report = task.load_data(cfg)
    if is_main:
        _write_json(os.path.join(output_dir, 'data_report.json'), report)
    return train_set, eval_set


def _prepare_output_dir(cfg: TrainConfig, is_main: bool) -> Optional[str]:
    """Decide where to resume from; refuse to mix two runs in one folder."""
    out = cfg.output_dir
    checkpoints = list_checkpoints(out)
    if cfg.resume not in ('auto', 'never'):
        return cfg.resume
    if checkpoints:
        if cfg.resume == 'never':
            raise ConfigError(f'{flag("output_dir")}: {out} already holds a run (checkpoints '
                              f'up to step {checkpoints[-1][0]}); use another folder or '
                              f'{flag("resume")} auto to continue it')
        return checkpoints[-1][1]
    if is_main:
        os.makedirs(out, exist_ok=True)
    return None


def train(cfg: TrainConfig, task: Task) -> Dict[str, Any]:
    """Fine-tune, evaluate every epoch, keep the best epoch and write its bundle.

    ``task`` supplies the data, model and bundle of ``cfg.model_kind``
    (:func:`training.commands.train` picks it).

    Returns:
        A summary: best_epoch, best_map, bundle path, steps, history of epochs.

    Raises:
        ConfigError: for bad settings, a used output folder with ``--resume never``,
            or a resumed run whose model-relevant config changed.
        InputError: for a dataset with too many unusable persons.
        AnswerTokensError: when answer tokens cannot be located.
        ModelLoadError: when the base model or a checkpoint cannot be loaded.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    use_cuda = torch.cuda.is_available() and not cfg.cpu
    accelerator = Accelerator(cpu=not use_cuda, mixed_precision=_mixed_precision(cfg, use_cuda))
    is_main = accelerator.is_main_process
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    resume_from = _prepare_output_dir(cfg, is_main)
    accelerator.wait_for_everyone()
    if resume_from is not None:
        with open(os.path.join(resume_from, STATE_FILE), encoding='utf-8') as f:
            saved = json.load(f)
        changed = _config_changes(saved.get('config', {}), cfg)
        if changed:
            raise ConfigError(f'{flag("resume")}: the checkpoint {resume_from} was trained with '
                              f'other values of {[flag(c) for c in changed]}; use the same '
                              f'settings or another {flag("output_dir")}')
        if saved.get('finished') and os.path.isdir(os.path.join(cfg.output_dir,
                                                                cfg.bundle_name)):
            if is_main:
                _LOG.info('run in %s already finished; bundle at %s', cfg.output_dir,
                          os.path.join(cfg.output_dir, cfg.bundle_name))
            return saved.get('summary', {})
    if cfg.init_from and resume_from is None and not os.path.isdir(cfg.init_from):
        raise ConfigError(f'{flag("init_from")}: {cfg.init_from!r} is not a folder (a stage-1 '
                          'run or bundle)')
    existing = [name for name in (cfg.bundle_name, BEST_DIR)
                if os.path.exists(os.path.join(cfg.output_dir, name))]
    if existing and not cfg.overwrite and resume_from is None:
        raise ConfigError(f'{flag("output_dir")}: {cfg.output_dir} already holds {existing} '
                          'from an earlier run; this run would replace them. Use another '
                          f'{flag("output_dir")} or pass {flag("overwrite")}')
    if os.path.exists(os.path.join(cfg.output_dir, cfg.bundle_name)) and not cfg.overwrite:
        raise ConfigError(f'{flag("output_dir")}: {cfg.output_dir} already holds a bundle '
                          f'({cfg.bundle_name}/) that this run would replace; pass '
                          f'{flag("overwrite")} or use another {flag("output_dir")}')
    set_seed(cfg.seed)
    if is_main:
        _write_json(os.path.join(cfg.output_dir, 'config.json'), cfg.to_dict())

    train_set, eval_set = _load_data(cfg, task, cfg.output_dir, is_main)
    model, processor = task.build_model(cfg, device=str(accelerator.device))
    collator = task.collator(cfg, model, processor)
    if cfg.init_from and resume_from is None:
        loaded = task.init_from(model, cfg)
        if is_main and loaded is not None:
            _LOG.info('stage 2 initialised from %s (%d tensors; fresh: %s)',
                      loaded['source'], loaded['loaded'], loaded['fresh'] or 'none')
            _write_json(os.path.join(cfg.output_dir, 'init_from.json'), loaded)
    sampler = EpochSampler(len(train_set), cfg.seed)
    train_loader = DataLoader(train_set, batch_size=cfg.per_device_train_batch_size,
                              sampler=sampler, collate_fn=collator, num_workers=cfg.num_workers)
    eval_loader = DataLoader(eval_set, batch_size=cfg.per_device_eval_batch_size,
                             shuffle=False, collate_fn=collator, num_workers=cfg.num_workers)
    optimizer = torch.optim.AdamW(model.parameter_groups(cfg), weight_decay=cfg.weight_decay)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(
        model, optimizer, train_loader, eval_loader)
    inner = accelerator.unwrap_model(model)

    micro_per_epoch = len(train_loader)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / cfg.gradient_accumulation_steps))
    total_steps = steps_per_epoch * cfg.num_epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    # Not prepared by Accelerate on purpose: it is stepped once per optimizer step here.
    scheduler = get_scheduler(cfg.lr_scheduler if cfg.lr_scheduler != 'constant'
                              else 'constant_with_warmup', optimizer,
                              num_warmup_steps=int(round(cfg.warmup_ratio * total_steps)),
                              num_training_steps=total_steps)

    state: Dict[str, Any] = {'epoch': 0, 'step': 0, 'batches_in_epoch': 0, 'best_map': None,
                             'best_epoch': None, 'history': [], 'finished': False}
    if resume_from is not None:
        state.update(load_checkpoint(resume_from, inner, optimizer, scheduler))
        if is_main:
            _LOG.info('resumed from %s: epoch %d, step %d, %d batches into the epoch',
                      resume_from, state['epoch'], state['step'], state['batches_in_epoch'])
        set_seed(cfg.seed + state['step'], device_specific=True)
    logger = MetricsLogger(cfg.output_dir, is_main,
                           state['step'] if resume_from is not None else None)
    if is_main:
        _LOG.info('training %d persons (%d per process per micro-batch, %d processes), '
                  'validating on %d; %d optimizer steps', len(train_set),
                  cfg.per_device_train_batch_size, accelerator.num_processes, len(eval_set),
                  total_steps)

    def checkpoint() -> None:
        """Save a resumable checkpoint (rank 0) with all ranks in step."""
        accelerator.wait_for_everyone()
        if is_main:
            state['config'] = cfg.to_dict()
            save_checkpoint(cfg.output_dir, inner, optimizer, scheduler, state,
                            cfg.save_total_limit)
        accelerator.wait_for_everyone()

    trainable = [p for p in model.parameters() if p.requires_grad]
    window: Dict[str, float] = {}
    window_n = 0
    t_start = time.time()
    samples_seen = 0
    stop = state['step'] >= total_steps
    model.train()
    for epoch in range(state['epoch'], cfg.num_epochs):
        if stop:
            break
        sampler.set_epoch(epoch)
        skip = state['batches_in_epoch'] if epoch == state['epoch'] else 0
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        bar = tqdm(total=steps_per_epoch, initial=skip // cfg.gradient_accumulation_steps,
                   desc=f'epoch {epoch + 1}/{cfg.num_epochs}', dynamic_ncols=True,
                   disable=not (cfg.progress and is_main))
        state['batches_in_epoch'] = skip
        accum = 0
        for batch in loader:
            accum += 1
            state['batches_in_epoch'] += 1
            last_of_epoch = state['batches_in_epoch'] == micro_per_epoch
            will_step = accum == cfg.gradient_accumulation_steps or last_of_epoch
            # Gradients are all-reduced only on the micro-batch that steps.
            with contextlib.nullcontext() if will_step else accelerator.no_sync(model):
                out = model(**batch)
                accelerator.backward(out['loss'] / cfg.gradient_accumulation_steps)
            samples_seen += batch['input_ids'].shape[0] * accelerator.num_processes
            for key in ('loss', 'lm_loss', 'cls_loss', 'vad_loss'):
                window[key] = window.get(key, 0.0) + float(out[key].detach())
            window_n += 1
            if not will_step:
                continue
            accum = 0
            grad_norm = accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm) \
                if cfg.max_grad_norm > 0 else torch.zeros(())
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state['step'] += 1
            bar.update(1)
            if state['step'] % cfg.logging_steps == 0 or last_of_epoch:
                means = accelerator.reduce(torch.tensor(
                    [window[k] / max(window_n, 1) for k in ('loss', 'lm_loss', 'cls_loss',
                                                            'vad_loss')],
                    device=accelerator.device), 'mean').tolist()
                elapsed = time.time() - t_start
                row = {'step': state['step'],
                       'epoch': epoch + state['batches_in_epoch'] / micro_per_epoch,
                       'lr': scheduler.get_last_lr()[0], 'loss': means[0], 'lm_loss': means[1],
                       'cls_loss': means[2], 'vad_loss': means[3],
                       'grad_norm': float(grad_norm), 'samples_per_s': samples_seen / elapsed,
                       'elapsed_s': elapsed}
                logger.log('train', row)
                bar.set_postfix(loss=f'{means[0]:.3f}', lr=f'{row["lr"]:.2e}')
                window, window_n = {}, 0
            if state['step'] >= total_steps:
                stop = True
            if state['step'] % cfg.save_steps == 0 and not last_of_epoch and not stop:
                checkpoint()
            if stop:
                break
        bar.close()
        finished_epoch = state['batches_in_epoch'] >= micro_per_epoch
        # Evaluate after every full epoch, and once at the end of a max_steps run.
        result = evaluate_loader(model, eval_loader, accelerator, cfg.progress)
        metrics = split_metrics(result, cfg.with_vad or task.always_vad, cfg.label_set)
        selected = metrics.get(cfg.best_metric, math.nan)
        epoch_done = epoch + 1 if finished_epoch else epoch + state['batches_in_epoch'] / \
            micro_per_epoch
        # state['best_map'] holds the best value of the selection metric (mAP by default).
        is_best = state['best_map'] is None or (
            not math.isnan(selected) and selected > state['best_map'])
        if is_best:
            state['best_map'] = selected
            state['best_epoch'] = epoch_done
            if is_main:
                _save_best(cfg.output_dir, inner, metrics, epoch_done, state['step'])
        vad_mean = metrics.get('vad_mae', {}).get('mean', math.nan)
        summary_row = {'epoch': epoch_done, 'step': state['step'], 'val_map': metrics['map'],
                       'val_vad_mae': vad_mean, 'val_lm_loss': metrics['lm_loss'],
                       'is_best': int(is_best)}
        for key in ('accuracy', 'weighted_f1', 'uar', 'war'):
            if key in metrics:
                summary_row['val_' + key] = metrics[key]
        state['history'].append(summary_row)
        logger.log('eval', {**summary_row, 'per_category_ap': metrics['per_category_ap'],
                            'vad_mae': metrics.get('vad_mae')})
        if is_main:
            _LOG.info('epoch %s: validation mAP %.4f%s, VAD MAE %.3f, answer loss %.4f',
                      f'{epoch_done:g}', metrics['map'], ' (best)' if is_best else '',
                      vad_mean, metrics['lm_loss'])
            _plot_curves(cfg.output_dir)
        if finished_epoch:
            state['epoch'] = epoch + 1
            state['batches_in_epoch'] = 0
        checkpoint()

    summary = _finish(cfg, task, accelerator, inner, processor, state)
    state['finished'] = True
    state['summary'] = summary
    checkpoint()
    return summary


def _save_best(output_dir: str, model: Any, metrics: Dict[str, Any], epoch: float,
               step: int) -> None:
    from safetensors.torch import save_file
    folder = os.path.join(output_dir, BEST_DIR)
    tmp = folder + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file({k: v.contiguous() for k, v in model.trainable_state_dict().items()},
              os.path.join(tmp, TRAINABLE_FILE))
    _write_json(os.path.join(tmp, 'metrics.json'), {'epoch': epoch, 'step': step, **metrics})
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)


def _finish(cfg: TrainConfig, task: Task, accelerator: Any, model: Any, processor: Any,
            state: Dict[str, Any]) -> Dict[str, Any]:
    """Load the best epoch's weights and write the bundle (main process)."""
    from safetensors.torch import load_file
    from emotion_ros.llm.bundle import save_bundle
    accelerator.wait_for_everyone()
    bundle_path = os.path.join(cfg.output_dir, cfg.bundle_name)
    best_dir = os.path.join(cfg.output_dir, BEST_DIR)
    with open(os.path.join(best_dir, 'metrics.json'), encoding='utf-8') as f:
        best = json.load(f)
    summary = {'best_epoch': best['epoch'], 'best_map': best['map'], 'steps': state['step'],
               'selection_metric': cfg.best_metric,
               'best_value': best.get(cfg.best_metric, best['map']),
               'bundle': os.path.abspath(bundle_path), 'history': state['history']}
    if accelerator.is_main_process:
        model.load_trainable_state_dict(load_file(os.path.join(best_dir, TRAINABLE_FILE)))
        metrics = {'split': cfg.eval_split, 'epoch': best['epoch'], 'map': best['map'],
                   'per_category_ap': best['per_category_ap'],
                   'vad_mae': best.get('vad_mae'), 'lm_loss': best['lm_loss'],
                   'persons': best['persons'], 'selection_metric': cfg.best_metric}
        for key in ('accuracy', 'weighted_f1', 'uar', 'war', 'discrete'):
            if key in best:
                metrics[key] = best[key]
        info = task.bundle_info(model, cfg,
                                name=os.path.basename(os.path.abspath(cfg.output_dir)),
                                metrics=metrics, thresholds=best['thresholds'])
        save_bundle(bundle_path, info,
                    lambda folder: task.write_bundle_files(model, processor, folder, info),
                    overwrite=True)
        _LOG.info('best epoch %s (validation %s %.4f); bundle written to %s', best['epoch'],
                  cfg.best_metric, best.get(cfg.best_metric, math.nan), bundle_path)
    accelerator.wait_for_everyone()
    return summary


# ---------------------------------------------------------------------------------------------
# Export.


def read_run_config(run_dir: str) -> Dict[str, Any]:
    """The resolved TrainConfig values a training run saved (its ``config.json``).

    Raises:
        ConfigError: for a folder that is not a training run.
    """
    config_path = os.path.join(run_dir, 'config.json')
    if not os.path.isfile(config_path):
        raise ConfigError(f'{run_dir} is neither a bundle (manifest.json) nor a training run '
                          '(config.json)')
    with open(config_path, encoding='utf-8') as f:
        return json.load(f)


def export_run(run_dir: str, out: str, task: Task, checkpoint: str = 'best',
               base_model: str = '', overwrite: bool = False) -> Dict[str, Any]:
    """Write a LoRA bundle from a training run's best epoch or one of its checkpoints.

    ``task`` is the run's ``model_kind`` (:func:`training.commands.export_run` picks it).

    Raises:
        ConfigError: for a folder that is not a run, or an existing ``out``.
        ModelLoadError: when the weights do not fit the model.
    """
    from safetensors.torch import load_file
    from emotion_ros.llm.bundle import save_bundle
    values = read_run_config(run_dir)
    if os.path.exists(out) and not overwrite:
        raise ConfigError(f'{out} already exists; pass --overwrite to replace it')
    if base_model:
        values['base_model'] = base_model
    values['resume'] = 'auto'
    cfg = config_from_mapping(values)
    metrics: Dict[str, Any] = {}
    thresholds: Dict[str, float] = {}
    if checkpoint == 'best':
        folder = os.path.join(run_dir, BEST_DIR)
        with open(os.path.join(folder, 'metrics.json'), encoding='utf-8') as f:
            best = json.load(f)
        thresholds = best.get('thresholds', {})
        keys = ('epoch', 'map', 'per_category_ap', 'vad_mae', 'lm_loss', 'persons')
        metrics = {k: best.get(k) for k in keys}
        metrics['split'] = cfg.eval_split
    elif checkpoint == 'latest':
        found = list_checkpoints(run_dir)
        if not found:
            raise ConfigError(f'--checkpoint latest: {run_dir} has no checkpoints')
        folder = found[-1][1]
    else:
        folder = checkpoint
    if not os.path.isfile(os.path.join(folder, TRAINABLE_FILE)):
        raise ConfigError(f'--checkpoint: {folder} holds no {TRAINABLE_FILE}')
    model, processor = task.build_model(cfg.replace(gradient_checkpointing=False))
    model.load_trainable_state_dict(load_file(os.path.join(folder, TRAINABLE_FILE)))
    info = task.bundle_info(model, cfg, name=os.path.basename(os.path.abspath(out)),
                            metrics=metrics, thresholds=thresholds)
    return save_bundle(out, info, lambda d: task.write_bundle_files(model, processor, d, info),
                       overwrite=overwrite)


__all__ = ['EpochSampler', 'MetricsLogger', 'Task', 'evaluate_loader', 'export_run',
           'list_checkpoints', 'read_run_config', 'split_metrics', 'train']

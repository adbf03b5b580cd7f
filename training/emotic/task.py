"""The EMOTIC / LLaVA training task: person samples, LLaVA + LoRA + score head, its bundle.

What :func:`training.core.train.train` needs for ``model_kind: llava``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from emotion_ros.errors import ConfigError
from training.core.collate import EmotionCollator
from training.core.config import flag, TrainConfig
from training.core.model import build_model, bundle_info, write_bundle_files
from training.core.train import BEST_DIR, Task, TRAINABLE_FILE
from training.emotic.dataset import load_dataset
from training.emotic.samples import SampleSet


def load_data(cfg: TrainConfig) -> Tuple[Any, Any, Dict[str, Any]]:
    """Train and eval :class:`SampleSet` of ``cfg.data_root`` and what was used/skipped."""
    report: Dict[str, Any] = {}
    sets = []
    for split, limit in ((cfg.train_split, cfg.max_train_samples),
                         (cfg.eval_split, cfg.max_eval_samples)):
        records, skipped = load_dataset(cfg.data_root, split,
                                        max_skip_fraction=cfg.max_skip_fraction)
        if limit:
            records = records[:limit]
        if not records:
            raise ConfigError(f'{flag("data_root")}: split {split!r} of {cfg.data_root} has '
                              'no usable persons')
        report[split] = {'persons_used': len(records), 'persons_read': skipped.total,
                         'skipped': dict(skipped.counts), 'boxes_clipped': skipped.clipped}
        sets.append(SampleSet(records, cfg.view, cfg.prompt_id))
    return sets[0], sets[1], report


def collator(cfg: TrainConfig, model: Any, processor: Any) -> EmotionCollator:
    """The person-sample collator."""
    return EmotionCollator(processor, cfg.chat_template, cfg.max_seq_len)


def init_from(model: Any, cfg: TrainConfig) -> Optional[Dict[str, Any]]:
    """Start from the best trainable weights of an earlier run (``cfg.init_from``)."""
    from safetensors.torch import load_file
    model.load_trainable_state_dict(load_file(os.path.join(cfg.init_from, BEST_DIR,
                                                           TRAINABLE_FILE)))
    return None


TASK = Task(load_data=load_data, build_model=build_model, collator=collator,
            init_from=init_from, bundle_info=bundle_info,
            write_bundle_files=write_bundle_files)

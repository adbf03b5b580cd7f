"""The audio-visual training task: clips (and EMOTIC images), the AV model, its bundle.

What :func:`training.core.train.train` needs for ``model_kind: audio_visual``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Optional, Tuple

from emotion_ros.errors import ConfigError
from training.av.data import AVSampleSet, load_av_split
from training.av.model import av_bundle_info, AVCollator, build_av_model, init_from_stage1
from training.av.model import write_av_bundle_files
from training.core.config import flag, TrainConfig
from training.core.train import Task


def load_data(cfg: TrainConfig) -> Tuple[Any, Any, Dict[str, Any]]:
    """Clips of one or several comma-separated roots (EMOTIC images join image-only)."""
    report: Dict[str, Any] = {}
    sets = []
    for split, limit in ((cfg.train_split, cfg.max_train_samples),
                         (cfg.eval_split, cfg.max_eval_samples)):
        records, skips = load_av_split(cfg.data_root, split, cfg.max_skip_fraction)
        if limit:
            records = records[:limit]
        if not records:
            raise ConfigError(f'{flag("data_root")}: split {split!r} of {cfg.data_root} has '
                              'no clips')
        report[split] = {'clips': len(records),
                         'datasets': dict(Counter(r.dataset for r in records)),
                         'modalities': dict(Counter(m for r in records for m in r.modalities)),
                         'labels': dict(Counter(r.label or 'none' for r in records)),
                         'emotic_skips': skips}
        sets.append(AVSampleSet(records, cfg.prompt_id, cfg.label_set, cfg.view,
                                cfg.video_frames, cfg.use_transcript, cfg.with_reasons,
                                cfg.media_cache_dir))
    return sets[0], sets[1], report


def collator(cfg: TrainConfig, model: Any, processor: Any) -> AVCollator:
    """The clip collator (modality layout of the built model)."""
    return AVCollator(processor, cfg.chat_template, model.model.layout, cfg.prompt_id,
                      cfg.max_seq_len)


def init_from(model: Any, cfg: TrainConfig) -> Optional[Dict[str, Any]]:
    """Stage 2 from a stage-1 run or bundle: what was loaded and what stays fresh."""
    return init_from_stage1(model, cfg.init_from, cfg.label_set)


TASK = Task(load_data=load_data, build_model=build_av_model, collator=collator,
            init_from=init_from, bundle_info=av_bundle_info,
            write_bundle_files=write_av_bundle_files, always_vad=True)

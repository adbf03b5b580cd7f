"""A random audio_visual bundle on tiny base models, for backend tests and benchmarks.

The tiny LLaVA and speech encoders themselves are in :mod:`training.core.tiny`.
"""

from __future__ import annotations

import os

from training.av.model import av_bundle_info, build_av_model, write_av_bundle_files
from training.core.config import config_from_mapping
from training.core.tiny import randomize_lora_b


def write_random_av_bundle(base_model: str, audio_encoder: str, out: str, seed: int = 0,
                           label_set: str = 'mer2023', lora_r: int = 8, head_hidden: int = 64,
                           overwrite: bool = False) -> str:
    """Write an audio_visual bundle with random (non-zero) weights on tiny base models.

    For backend tests and benchmarks: the scores are random but computed by the
    real code path.

    Returns:
        The bundle folder.
    """
    from emotion_ros.llm.bundle import save_bundle
    cfg = config_from_mapping({'model_kind': 'audio_visual', 'base_model': base_model,
                               'audio_encoder': audio_encoder, 'lora_r': lora_r,
                               'lora_alpha': 2 * lora_r, 'head_hidden': head_hidden,
                               'gradient_checkpointing': False, 'view': 'crop',
                               'prompt_id': 'av_emotions_v1', 'label_set': label_set,
                               'seed': seed})
    model, processor = build_av_model(cfg)
    randomize_lora_b(model, seed)
    info = av_bundle_info(model, cfg, name=os.path.basename(os.path.abspath(out)),
                          metrics={'note': 'random weights'}, thresholds={})
    save_bundle(out, info, lambda folder: write_av_bundle_files(model, processor, folder, info),
                overwrite=overwrite)
    return os.path.abspath(out)

"""Training side of the audio-visual model: build, collate, initialise from stage 1, bundle.

The model itself (inputs, the one ``inputs_embeds`` builder, heads) is
:class:`emotion_ros.llm.multimodal.AudioVisualModel`, shared with the robot's
``audio_visual`` backend. This module wraps it with what the training loop of
:mod:`training.core.train` expects from a model (loss weights, trainable weights,
parameter groups), builds it from a :class:`TrainConfig`, collates samples,
initialises stage 2 from stage 1 and writes bundles.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from emotion_ros.errors import ConfigError
from emotion_ros.llm.bundle import BundleInfo, model_arch, model_fingerprint
from emotion_ros.llm.encoding import image_token_count, pixel_values_for
from emotion_ros.llm.multimodal import audio_fingerprint, AudioVisualModel, build_audio_encoder
from emotion_ros.llm.multimodal import collate_av
from emotion_ros.llm.multimodal import encode_av, ModalityLayout, render_av_prompt
from emotion_ros.llm.scoring import core_llava
from emotion_ros.llm.weights import load_strict
from training.core.config import TrainConfig
from training.core.model import build_model

MULTIMODAL_FILE = 'multimodal.safetensors'


class AVTrainModel(nn.Module):
    """:class:`AudioVisualModel` with the run's loss weights, as the training loop wants it."""

    def __init__(self, model: AudioVisualModel, cfg: TrainConfig) -> None:
        """Keep the model and the loss weights."""
        super().__init__()
        self.model = model
        self.weights = {'lm_loss_weight': cfg.lm_loss_weight,
                        'score_loss_weight': cfg.score_loss_weight,
                        'vad_loss_weight': cfg.vad_loss_weight,
                        'discrete_loss_weight': cfg.discrete_loss_weight}

    @property
    def llava(self) -> Any:
        """The (peft-wrapped) LLaVA inside."""
        return self.model.llava

    @property
    def head(self) -> nn.Module:
        """The score head."""
        return self.model.head

    def forward(self, **batch: Any) -> Dict[str, torch.Tensor]:
        """The model's joint loss with this run's weights (see AudioVisualModel.forward)."""
        batch.pop('clip_index', None)
        return self.model(**batch, **self.weights)

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        """LoRA, LLaVA projector, modality projectors and heads, on CPU."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {n: t.detach().cpu().clone() for n, t in self.state_dict().items() if n in names}

    def load_trainable_state_dict(self, state: Dict[str, torch.Tensor],
                                  skip_prefixes: Sequence[str] = ()) -> List[str]:
        """Load :meth:`trainable_state_dict` output; returns the names left as they were.

        ``skip_prefixes`` leaves matching tensors (e.g. a discrete head of
        another label set) freshly initialised.

        Raises:
            ModelLoadError: when names or shapes differ.
        """
        return load_strict({n: p for n, p in self.named_parameters() if p.requires_grad},
                           state, 'weights', skip_prefixes)

    def parameter_groups(self, cfg: TrainConfig) -> list:
        """AdamW groups: LoRA at learning_rate; projectors at projector_lr; heads at head_lr."""
        groups: Dict[str, list] = {'lora': [], 'projector': [], 'head': []}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith(('model.head.', 'model.discrete_head.')):
                groups['head'].append(param)
            elif 'projector' in name or '_position' in name:
                groups['projector'].append(param)
            else:
                groups['lora'].append(param)
        lrs = {'lora': cfg.learning_rate, 'projector': cfg.projector_lr, 'head': cfg.head_lr}
        return [{'params': p, 'lr': lrs[k], 'name': k} for k, p in groups.items() if p]


def build_av_model(cfg: TrainConfig, device: str = 'cpu') -> Tuple[AVTrainModel, Any]:
    """LLaVA + LoRA (as :func:`training.core.model.build_model`), frozen audio encoder, projectors.

    Returns:
        (model, processor).

    Raises:
        ModelLoadError, ConfigError: when a model cannot be loaded.
    """
    llava_part, processor = build_model(cfg, device)
    audio_encoder = build_audio_encoder(cfg.audio_encoder) if cfg.audio_encoder else None
    if audio_encoder is not None and device.startswith('cuda'):
        audio_encoder = audio_encoder.to(device)
    layout = ModalityLayout(
        image_tokens=image_token_count(processor), video_tokens=cfg.video_tokens,
        video_frames=cfg.video_frames, audio_tokens=cfg.audio_tokens,
        audio_window_s=cfg.audio_window_s,
        audio_encoder_type=audio_encoder.config.model_type if audio_encoder is not None else '',
        audio_hidden=int(audio_encoder.config.hidden_size) if audio_encoder is not None else 0)
    torch.manual_seed(cfg.seed + 1)
    model = AudioVisualModel(llava_part.llava, audio_encoder, layout, cfg.head_hidden,
                             cfg.label_set, cfg.head_dropout)
    return AVTrainModel(model, cfg).to(device), processor


class AVCollator:
    """Samples -> one batch of the audio-visual model (the encoding the robot uses)."""

    def __init__(self, processor: Any, template_id: str, layout: ModalityLayout, prompt_id: str,
                 max_seq_len: int) -> None:
        """Keep what encoding needs."""
        self.processor = processor
        self.template_id = template_id
        self.layout = layout
        self.max_seq_len = max_seq_len
        self.counts = {'image': layout.image_tokens, 'video': layout.video_tokens,
                       'audio': layout.audio_tokens}
        tokenizer = processor.tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
            tokenizer.eos_token_id

    def __call__(self, samples: Sequence[Any]) -> Dict[str, Any]:
        """Collate :class:`training.av.data.AVSample` objects."""
        encoded = []
        for s in samples:
            prompt = render_av_prompt(self.template_id, s.prompt, s.inputs.present(),
                                      s.inputs.transcript or '')
            encoded.append(encode_av(self.processor.tokenizer, self.template_id, prompt,
                                     self.counts, s.answer, max_seq_len=self.max_seq_len))
        batch = collate_av([s.inputs for s in samples], encoded, self.pad_id,
                           lambda views: pixel_values_for(self.processor, views), self.layout)
        batch['category_targets'] = torch.from_numpy(np.stack([s.labels_26 for s in samples]))
        batch['vad_targets'] = torch.tensor([list(s.vad) for s in samples], dtype=torch.float32)
        batch['discrete_targets'] = torch.tensor([s.discrete for s in samples], dtype=torch.long)
        return batch


def init_from_stage1(model: AVTrainModel, path: str, label_set: str) -> Dict[str, Any]:
    """Load stage 1's trained weights (a run folder's best epoch, or a bundle) into ``model``.

    The discrete head is carried over only when stage 1 used the same label set.

    Returns:
        What was loaded: source file, tensors loaded, tensors left fresh.

    Raises:
        ConfigError: when ``path`` is neither a run nor a bundle.
        ModelLoadError: when the weights do not fit (another base model or layout).
    """
    from safetensors.torch import load_file
    from emotion_ros.llm.bundle import MANIFEST_NAME, verify_bundle
    run_weights = os.path.join(path, 'best', 'trainable.safetensors')
    if os.path.isfile(run_weights):
        with open(os.path.join(path, 'config.json'), encoding='utf-8') as f:
            stage1_label_set = json.load(f).get('label_set', '')
        state = load_file(run_weights)
        source = run_weights
    elif os.path.isfile(os.path.join(path, MANIFEST_NAME)):
        manifest = verify_bundle(path)
        if manifest.get('model_kind') != 'audio_visual':
            raise ConfigError(f'--init-from: {path} is a {manifest.get("model_kind")} bundle, '
                              'not an audio_visual one')
        stage1_label_set = manifest.get('label_set', '')
        state = bundle_trainable_state(path, manifest, model)
        source = path
    else:
        raise ConfigError(f'--init-from: {path} holds neither a run (best/trainable.safetensors) '
                          'nor a bundle (manifest.json)')
    skip = () if stage1_label_set == label_set else ('model.discrete_head.',)
    if skip:
        state = {k: v for k, v in state.items() if not k.startswith(skip)}
    fresh = model.load_trainable_state_dict(state, skip_prefixes=skip)
    return {'source': source, 'loaded': len(state), 'fresh': fresh,
            'stage1_label_set': stage1_label_set}


def bundle_trainable_state(path: str, manifest: Dict[str, Any],
                           model: AVTrainModel) -> Dict[str, torch.Tensor]:
    """A bundle's adapter + multimodal weights under the training model's parameter names."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    adapter = load_file(os.path.join(path, manifest['adapter_dir'],
                                     'adapter_model.safetensors'))
    set_peft_model_state_dict(model.model.llava, adapter)
    extra = load_file(os.path.join(path, manifest['extra']['multimodal_file']))
    model.model.load_extra_state_dict(extra)
    return model.trainable_state_dict()


def av_bundle_info(model: AVTrainModel, cfg: TrainConfig, name: str, metrics: Dict[str, Any],
                   thresholds: Dict[str, float]) -> BundleInfo:
    """The manifest of an audio-visual bundle."""
    config = core_llava(model.llava).config.to_dict()
    encoder = model.model.audio_encoder
    extra: Dict[str, Any] = {'multimodal_file': MULTIMODAL_FILE,
                             'audio_encoder': cfg.audio_encoder,
                             'audio_encoder_fingerprint': audio_fingerprint(encoder.config)
                             if encoder is not None else '',
                             'use_transcript': cfg.use_transcript}
    return BundleInfo(
        name=name, base_model=cfg.base_model, base_model_fingerprint=model_fingerprint(config),
        base_model_arch=model_arch(config), adapter_type='lora', prompt_id=cfg.prompt_id,
        chat_template=cfg.chat_template, view=cfg.view,
        head={'hidden_size': model.model.hidden_size, 'head_hidden': cfg.head_hidden,
              'with_vad': True, 'discrete': bool(cfg.label_set),
              'outputs': ['category_logits[26]', 'vad[3] = 1 + 9 * sigmoid(x)']},
        training_config=cfg.to_dict(), metrics=metrics, thresholds=thresholds,
        model_kind='audio_visual', modalities=model.model.layout.to_dict(),
        label_set=cfg.label_set, extra=extra)


def write_av_bundle_files(model: AVTrainModel, processor: Any, folder: str,
                          info: BundleInfo) -> None:
    """Adapter (peft), score head, multimodal weights and processor into a bundle folder."""
    from safetensors.torch import save_file
    model.llava.save_pretrained(os.path.join(folder, info.adapter_dir))
    head_state = {k: v.detach().float().cpu().contiguous()
                  for k, v in model.head.state_dict().items()}
    save_file(head_state, os.path.join(folder, info.head_file))
    save_file(model.model.extra_state_dict(), os.path.join(folder, MULTIMODAL_FILE))
    processor.save_pretrained(os.path.join(folder, info.processor_dir))

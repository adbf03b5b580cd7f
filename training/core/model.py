"""The fine-tuned model: LLaVA + LoRA on its language model + a score head.

:class:`EmotionLlava` trains the answer text (cross-entropy on answer tokens
only) and the score head (BCE over the 26 categories, smooth-L1 on VAD) in
the same forward pass. The head reads the hidden state of the last prompt
token, which causal attention keeps independent of the answer, so at serving
time one forward pass of the prompt alone gives the same scores (see
:mod:`emotion_ros.llm`, which holds the shared pieces).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from emotion_ros.errors import ConfigError, ModelLoadError
from emotion_ros.llm.bundle import BundleInfo, model_arch, model_fingerprint
from emotion_ros.llm.contract import VAD_MAX, VAD_MIN
from emotion_ros.llm.encoding import positions_from_mask
from emotion_ros.llm.head import apply_head, build_score_head
from emotion_ros.llm.scoring import core_llava
from emotion_ros.llm.weights import load_strict
from training.core.collate import AnswerTokensError, IGNORE_INDEX
from training.core.config import TrainConfig


def assemble_processor(tokenizer: Any, image_processor: Any, config: Any) -> Any:
    """Build a ``LlavaProcessor`` from parts, without the hub.

    The image-token count follows the model config: (image_size / patch_size)^2
    patches, plus CLIP's class token, minus one with the 'default' feature
    selection (which drops it).
    """
    from transformers import LlavaProcessor
    image_token = getattr(tokenizer, 'image_token', None) or '<image>'
    if tokenizer.convert_tokens_to_ids(image_token) in (None, tokenizer.unk_token_id):
        raise ModelLoadError(f'the tokenizer has no {image_token!r} token')
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer,
        patch_size=int(config.vision_config.patch_size),
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1, image_token=image_token)


def torch_dtype_for(precision: str, device: str) -> torch.dtype:
    """The dtype to load frozen base weights in for a precision setting."""
    if precision == 'auto':
        if device.startswith('cuda') and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}[precision]


def load_base(name_or_path: str, dtype: torch.dtype = torch.float32, load_in_4bit: bool = False,
              attn_implementation: str = 'sdpa', device_map: Any = None) -> Tuple[Any, Any]:
    """Load a LLaVA base model and its processor from a folder or the hub.

    Raises:
        ModelLoadError: when the model or processor cannot be loaded (named).
        ConfigError: when 4-bit loading is asked for without bitsandbytes or a GPU.
    """
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    kwargs: Dict[str, Any] = {'dtype': dtype, 'attn_implementation': attn_implementation}
    if load_in_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise ConfigError('--load-in-4bit: needs bitsandbytes (pip install bitsandbytes) '
                              'and a CUDA GPU') from exc
        if not torch.cuda.is_available():
            raise ConfigError('--load-in-4bit: needs a CUDA GPU')
        from transformers import BitsAndBytesConfig
        kwargs['quantization_config'] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16)
        kwargs['device_map'] = device_map if device_map is not None else {
            '': torch.cuda.current_device()}
    elif device_map is not None:
        kwargs['device_map'] = device_map
    try:
        model = LlavaForConditionalGeneration.from_pretrained(name_or_path, **kwargs)
        processor = AutoProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f'cannot load base model {name_or_path!r}: {exc}') from exc
    if processor.tokenizer.pad_token_id is None:
        processor.tokenizer.pad_token = processor.tokenizer.unk_token or \
            processor.tokenizer.eos_token
    return model, processor


def lora_target_pattern(modules: Sequence[str]) -> str:
    """A peft target regex that matches the modules only inside the language model.

    Plain names (``q_proj``) would also hit the CLIP vision tower, which
    LLaVA-1.5 keeps frozen.
    """
    names = '|'.join(sorted(set(modules)))
    return rf'.*language_model\..*\.({names})$'


class EmotionLlava(nn.Module):
    """LLaVA (with LoRA) plus the score head, trained jointly.

    Args:
        llava: a (peft-wrapped) ``LlavaForConditionalGeneration``.
        head: the score head from :func:`build_score_head`.
        with_vad: train the head's VAD outputs (the emotions-only ablation does not).
        lm_loss_weight, score_loss_weight, vad_loss_weight: loss weights.
    """

    def __init__(self, llava: Any, head: nn.Module, with_vad: bool,
                 lm_loss_weight: float = 1.0, score_loss_weight: float = 1.0,
                 vad_loss_weight: float = 1.0) -> None:
        """Keep the parts and loss weights."""
        super().__init__()
        self.llava = llava
        self.head = head
        self.with_vad = with_vad
        self.lm_loss_weight = lm_loss_weight
        self.score_loss_weight = score_loss_weight
        self.vad_loss_weight = vad_loss_weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pixel_values: torch.Tensor, labels: Optional[torch.Tensor] = None,
                score_index: Optional[torch.Tensor] = None,
                category_targets: Optional[torch.Tensor] = None,
                vad_targets: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """One pass: text loss on answer tokens, head scores at ``score_index``.

        Without ``labels``/targets only the scores are returned.

        Raises:
            AnswerTokensError: when a batch with labels holds no answer token.
        """
        core = core_llava(self.llava)
        out = core.model(input_ids=input_ids, attention_mask=attention_mask,
                         pixel_values=pixel_values.to(core.dtype),
                         position_ids=positions_from_mask(attention_mask), use_cache=False)
        hidden = out.last_hidden_state
        if score_index is None:
            score_index = attention_mask.sum(-1) - 1  # right padding: last real token
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        logits, vad = apply_head(self.head, hidden[rows, score_index])
        result: Dict[str, torch.Tensor] = {'category_logits': logits, 'vad': vad}
        if labels is None:
            return result
        shift_labels = labels[:, 1:]
        supervised = shift_labels != IGNORE_INDEX
        n_tokens = int(supervised.sum())
        if n_tokens == 0:
            raise AnswerTokensError('a training batch has no answer tokens: the text loss '
                                    'would be zero')
        # LM head only on the positions that predict answer tokens: the full
        # vocabulary x sequence logits are most of a 7B step's memory.
        lm_logits = core.lm_head(hidden[:, :-1][supervised]).float()
        lm_loss = F.cross_entropy(lm_logits, shift_labels[supervised])
        zero = lm_loss.new_zeros(())
        cls_loss = F.binary_cross_entropy_with_logits(logits, category_targets.float()) \
            if category_targets is not None else zero
        vad_loss = zero
        if self.with_vad and vad_targets is not None:
            known = torch.isfinite(vad_targets)
            if known.any():
                scale = VAD_MAX - VAD_MIN
                vad_loss = F.smooth_l1_loss((vad[known] - VAD_MIN) / scale,
                                            (vad_targets[known] - VAD_MIN) / scale, beta=0.1)
        loss = self.lm_loss_weight * lm_loss + self.score_loss_weight * (
            cls_loss + self.vad_loss_weight * vad_loss)
        result.update(loss=loss, lm_loss=lm_loss.detach(), cls_loss=cls_loss.detach(),
                      vad_loss=vad_loss.detach(), answer_tokens=lm_loss.new_tensor(n_tokens))
        return result

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        """The weights that training changes (LoRA, projector, head), on CPU."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {n: t.detach().cpu().clone() for n, t in self.state_dict().items() if n in names}

    def load_trainable_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Load weights saved by :meth:`trainable_state_dict`.

        Raises:
            ModelLoadError: when names or shapes differ (a checkpoint of another config).
        """
        load_strict({n: p for n, p in self.named_parameters() if p.requires_grad}, state,
                    'checkpoint')

    def parameter_groups(self, cfg: TrainConfig) -> list:
        """AdamW groups: LoRA at ``learning_rate``, projector and head at their own rates."""
        groups: Dict[str, list] = {'lora': [], 'projector': [], 'head': []}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith('head.'):
                groups['head'].append(param)
            elif 'multi_modal_projector' in name:
                groups['projector'].append(param)
            else:
                groups['lora'].append(param)
        lrs = {'lora': cfg.learning_rate, 'projector': cfg.projector_lr, 'head': cfg.head_lr}
        return [{'params': p, 'lr': lrs[k], 'name': k} for k, p in groups.items() if p]


def build_model(cfg: TrainConfig, device: str = 'cpu') -> Tuple[EmotionLlava, Any]:
    """Load the base model, add LoRA to its language model and a fresh score head.

    Returns:
        (model, processor).

    Raises:
        ModelLoadError, ConfigError: from :func:`load_base`.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    dtype = torch_dtype_for(cfg.precision, device)
    # Straight onto this process's GPU: loading 7B weights into CPU RAM first costs
    # 14 GB per process, 112 GB on an 8-GPU machine.
    device_map = {'': device} if device.startswith('cuda') else None
    base, processor = load_base(cfg.base_model, dtype=dtype, load_in_4bit=cfg.load_in_4bit,
                                attn_implementation=cfg.attn_implementation,
                                device_map=device_map)
    base.config.use_cache = False
    base.config.text_config.use_cache = False
    if cfg.load_in_4bit:
        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=cfg.gradient_checkpointing)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=lora_target_pattern(cfg.lora_target_modules),
                      modules_to_save=['multi_modal_projector'] if cfg.train_projector else None,
                      bias='none')
    torch.manual_seed(cfg.seed)  # LoRA A and the head start the same for the same seed
    model = get_peft_model(base, lora)
    # Trainable weights in float32 (bf16/fp16 compute comes from autocast): the
    # projector's 2e-5 updates are below bf16's resolution and would be lost.
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    if not any('lora_' in n for n, _ in model.named_parameters()):
        raise ConfigError(f'--lora-target-modules: none of {list(cfg.lora_target_modules)} '
                          'exists in the language model')
    if cfg.gradient_checkpointing:
        # transformers 5.x renamed gradient to activation checkpointing (the old name warns).
        if hasattr(model, 'activation_checkpointing_enable'):
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={'use_reentrant': False})
        else:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={'use_reentrant': False})
    torch.manual_seed(cfg.seed)
    hidden = int(core_llava(model).config.text_config.hidden_size)
    head = build_score_head(hidden, cfg.head_hidden, cfg.head_dropout)
    return EmotionLlava(model, head, with_vad=cfg.with_vad, lm_loss_weight=cfg.lm_loss_weight,
                        score_loss_weight=cfg.score_loss_weight,
                        vad_loss_weight=cfg.vad_loss_weight), processor


def write_bundle_files(model: EmotionLlava, processor: Any, folder: str,
                       info: BundleInfo) -> None:
    """Write the adapter (peft format), head and processor into a bundle folder."""
    from safetensors.torch import save_file
    model.llava.save_pretrained(os.path.join(folder, info.adapter_dir))
    head_state = {k: v.detach().float().cpu().contiguous()
                  for k, v in model.head.state_dict().items()}
    save_file(head_state, os.path.join(folder, info.head_file))
    processor.save_pretrained(os.path.join(folder, info.processor_dir))


def bundle_info(model: EmotionLlava, cfg: TrainConfig, name: str, metrics: Dict[str, Any],
                thresholds: Dict[str, float]) -> BundleInfo:
    """What the manifest of a bundle from this model says."""
    config = core_llava(model.llava).config.to_dict()
    return BundleInfo(
        name=name, base_model=cfg.base_model, base_model_fingerprint=model_fingerprint(config),
        base_model_arch=model_arch(config), adapter_type='lora', prompt_id=cfg.prompt_id,
        chat_template=cfg.chat_template, view=cfg.view,
        head={'hidden_size': int(core_llava(model.llava).config.text_config.hidden_size),
              'head_hidden': cfg.head_hidden, 'with_vad': cfg.with_vad,
              'outputs': ['category_logits[26]', 'vad[3] = 1 + 9 * sigmoid(x)']},
        training_config=cfg.to_dict(), metrics=metrics, thresholds=thresholds)

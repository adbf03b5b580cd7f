"""Fine-tuning hyper-parameters: one frozen dataclass, from a YAML file and/or flags.

Defaults follow the LLaVA-1.5 LoRA recipe (r 128, alpha 256, dropout 0.05,
lr 2e-4 with cosine decay and 3 % warmup, projector lr 2e-5, bf16, gradient
checkpointing) with the poster's task: EMOTIC emotions + VAD as text, the
person shown with a red box on the whole image. Every field carries a help
text (``--help`` shows it) and is validated; a bad value raises
:class:`emotion_ros.errors.ConfigError` naming the flag.

Precedence: dataclass defaults < ``--config file.yaml`` < command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from emotion_ros.config.schema import field, from_mapping
from emotion_ros.llm.contract import DEFAULT_PROMPT_ID, PERSON_VIEWS, PROMPTS
from emotion_ros.errors import ConfigError
from emotion_ros.llm.templates import CHAT_TEMPLATES, DEFAULT_CHAT_TEMPLATE

# Prompts a model can be fine-tuned on (the explanation prompt has no label answer).
TRAIN_PROMPTS = tuple(p for p, t in PROMPTS.items() if p.startswith('emotic_')) + (
    'av_emotions_v1',)
MODEL_KINDS = ('llava', 'audio_visual')
LORA_TARGETS = ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj')


def flag(name: str) -> str:
    """The command-line flag of a config field (``lora_r`` -> ``--lora-r``)."""
    return '--' + name.replace('_', '-')


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a fine-tuning run depends on; stored in checkpoints and bundles."""

    # -- model ------------------------------------------------------------------------------
    model_kind: str = field('llava', "'llava' (LLaVA + LoRA on images, the poster) or "
                            "'audio_visual' (person view, clip, voice and words in one LLM)",
                            choices=MODEL_KINDS)
    base_model: str = field('llava-hf/llava-1.5-7b-hf',
                            'Base LLaVA (LlavaForConditionalGeneration): local folder or hub id')
    chat_template: str = field(DEFAULT_CHAT_TEMPLATE, 'Conversation template of the base model',
                               choices=tuple(CHAT_TEMPLATES))
    attn_implementation: str = field('sdpa', 'Attention kernel',
                                     choices=('sdpa', 'eager', 'flash_attention_2'))
    load_in_4bit: bool = field(False, 'QLoRA: load the frozen base in 4-bit NF4 (needs '
                               'bitsandbytes and a CUDA GPU)')
    # -- audio-visual model (model_kind audio_visual) ---------------------------------------
    audio_encoder: str = field('', 'Frozen speech encoder (HuBERT / wav2vec2 / WavLM folder or '
                               "hub id, e.g. facebook/hubert-large-ll60k); '' = no audio")
    audio_tokens: int = field(4, 'Tokens per audio window (encoder frames pooled)', min=1,
                              max=64)
    audio_window_s: float = field(4.0, 'Seconds of audio per person (the latest window)',
                                  positive=True)
    video_tokens: int = field(4, 'Temporal tokens per clip of person crops', min=1, max=64)
    video_frames: int = field(8, 'Frames sampled per clip (evenly spaced)', min=1, max=64)
    use_transcript: bool = field(True, 'Give the transcript (when a clip has one) as text')
    label_set: str = field('', 'Discrete label set of the discrete-emotion head (ravdess, '
                           "cremad, dfew, mer2023, merr); '' = no discrete head")
    discrete_loss_weight: float = field(1.0, 'Weight of the discrete-head cross-entropy',
                                        min=0.0)
    init_from: str = field('', 'Stage 2: initialise from a stage-1 run folder (its best '
                           'epoch) or audio_visual bundle')
    with_reasons: bool = field(False, 'Append the fine-grained reason to the answer text '
                               '(stage 2 on MERR fine)')
    media_cache_dir: str = field('', 'Cache decoded frames/audio as .npz here (optional)')
    selection_metric: str = field('auto', 'Validation metric choosing the best epoch: auto '
                                  '(map; weighted_f1 with a label set) | map | weighted_f1 | '
                                  'uar | accuracy',
                                  choices=('auto', 'map', 'weighted_f1', 'uar', 'accuracy'))
    # -- data -------------------------------------------------------------------------------
    data_root: str = field('', 'Dataset folder (EMOTIC .mat / EMOTIC CSV / our JSONL)')
    train_split: str = field('train', 'Split to train on')
    eval_split: str = field('val', 'Split evaluated after every epoch (best epoch by its mAP)')
    view: str = field('box', "How a person is shown: 'box' (red box on the whole image, as "
                      "in the poster) or 'crop'", choices=PERSON_VIEWS)
    prompt_id: str = field(DEFAULT_PROMPT_ID, 'Prompt and answer format: emotic_vad_v1 '
                           '(emotions + VAD words) or emotic_emotions_v1 (ablation)',
                           choices=TRAIN_PROMPTS)
    max_seq_len: int = field(2048, 'Longest tokenised sample (image tokens included); a longer '
                             'one fails the run rather than losing its answer', min=16)
    max_train_samples: int = field(0, 'Use only the first N training persons (0: all)', min=0)
    max_eval_samples: int = field(0, 'Use only the first N evaluation persons (0: all)', min=0)
    max_skip_fraction: float = field(0.05, 'Fail when more than this fraction of persons is '
                                     'unusable (missing image, bad box, NaN VAD)',
                                     min=0.0, max=1.0)
    num_workers: int = field(2, 'DataLoader worker processes', min=0)
    # -- LoRA -------------------------------------------------------------------------------
    lora_r: int = field(128, 'LoRA rank', min=1)
    lora_alpha: int = field(256, 'LoRA alpha (scale = alpha / r)', min=1)
    lora_dropout: float = field(0.05, 'Dropout on the LoRA path', min=0.0, max=0.9)
    lora_target_modules: Tuple[str, ...] = field(
        list(LORA_TARGETS), 'Linear layers of the language model that get LoRA (the vision '
        'tower never does)')
    train_projector: bool = field(True, 'Also train the multimodal projector (LLaVA-1.5 does)')
    projector_lr: float = field(2e-5, 'Learning rate of the projector', positive=True)
    # -- score head -------------------------------------------------------------------------
    head_hidden: int = field(1024, 'Hidden width of the score head', min=1)
    head_dropout: float = field(0.1, 'Dropout in the score head', min=0.0, max=0.9)
    head_lr: float = field(1e-3, 'Learning rate of the score head', positive=True)
    lm_loss_weight: float = field(1.0, 'Weight of the answer-text loss', min=0.0)
    score_loss_weight: float = field(1.0, 'Weight of the 26-category BCE loss of the head',
                                     min=0.0)
    vad_loss_weight: float = field(1.0, 'Weight of the VAD loss of the head (only with a VAD '
                                   'prompt)', min=0.0)
    # -- optimisation -----------------------------------------------------------------------
    num_epochs: int = field(8, 'Epochs (the poster was best at epoch 6; the best epoch by '
                            'validation mAP is kept)', min=1)
    max_steps: int = field(0, 'Stop after this many optimizer steps (0: run all epochs)', min=0)
    learning_rate: float = field(2e-4, 'Learning rate of the LoRA weights', positive=True)
    lr_scheduler: str = field('cosine', 'Learning-rate schedule',
                              choices=('cosine', 'linear', 'constant'))
    warmup_ratio: float = field(0.03, 'Fraction of steps with linear warmup', min=0.0, max=0.5)
    weight_decay: float = field(0.0, 'AdamW weight decay', min=0.0)
    per_device_train_batch_size: int = field(16, 'Persons per device per micro-batch', min=1)
    per_device_eval_batch_size: int = field(16, 'Persons per device in evaluation', min=1)
    gradient_accumulation_steps: int = field(1, 'Micro-batches per optimizer step', min=1)
    max_grad_norm: float = field(1.0, 'Gradient clipping (0: off)', min=0.0)
    precision: str = field('auto', 'auto (bf16 on a GPU that has it, fp32 on CPU) | bf16 | '
                           'fp16 | fp32', choices=('auto', 'bf16', 'fp16', 'fp32'))
    gradient_checkpointing: bool = field(True, 'Recompute activations in backward (saves '
                                         'memory, costs ~30 % time)')
    seed: int = field(42, 'Seed of weights init, shuffling and dropout', min=0)
    cpu: bool = field(False, 'Train on CPU even when a GPU is present')
    # -- output -----------------------------------------------------------------------------
    output_dir: str = field('runs/llava-emotic', 'Run folder: checkpoints, metrics, bundle')
    logging_steps: int = field(10, 'Log training loss every N optimizer steps', min=1)
    save_steps: int = field(500, 'Checkpoint every N optimizer steps (and after every epoch)',
                            min=1)
    save_total_limit: int = field(2, 'Keep at most this many step checkpoints', min=1)
    resume: str = field('auto', "'auto': continue from the newest checkpoint in output_dir; "
                        "'never': refuse a used output_dir; or a checkpoint folder")
    bundle_name: str = field('bundle', 'Folder name (in output_dir) of the final weights bundle')
    overwrite: bool = field(False, 'Allow replacing a bundle (and best epoch) that output_dir '
                            'already holds; without it such a run is refused before training')
    progress: bool = field(True, 'Show tqdm progress bars')

    def __post_init__(self) -> None:
        """Cross-check fields; errors name the flag.

        Raises:
            ConfigError: naming the flag that is wrong.
        """
        for f in dataclasses.fields(self):
            if isinstance(getattr(self, f.name), list):  # YAML lists -> hashable tuples
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        if not self.base_model:
            raise ConfigError(f'{flag("base_model")}: name a LLaVA model (folder or hub id)')
        if self.train_split == self.eval_split:
            raise ConfigError(f'{flag("eval_split")}: must differ from {flag("train_split")} '
                              f'({self.train_split!r}); selecting the best epoch on training '
                              'data is meaningless')
        if not self.lora_target_modules:
            raise ConfigError(f'{flag("lora_target_modules")}: name at least one module')
        for name in self.lora_target_modules:
            if not name.replace('_', '').isalnum():
                raise ConfigError(f'{flag("lora_target_modules")}: {name!r} is not a module name')
        if self.lm_loss_weight == 0 and self.score_loss_weight == 0:
            raise ConfigError(f'{flag("lm_loss_weight")} and {flag("score_loss_weight")} are '
                              'both 0: nothing would be trained')
        if self.resume not in ('auto', 'never') and not os.path.isdir(self.resume):
            raise ConfigError(f'{flag("resume")}: {self.resume!r} is neither auto, never nor '
                              'a checkpoint folder')
        if self.load_in_4bit and self.cpu:
            raise ConfigError(f'{flag("load_in_4bit")}: 4-bit QLoRA needs a CUDA GPU, but '
                              f'{flag("cpu")} is set')
        if self.model_kind == 'audio_visual' and not self.prompt_id.startswith('av_'):
            raise ConfigError(f'{flag("prompt_id")}: the audio_visual model is trained with '
                              f'av_emotions_v1, not {self.prompt_id!r}')
        if self.model_kind == 'llava' and self.prompt_id.startswith('av_'):
            raise ConfigError(f'{flag("prompt_id")}: {self.prompt_id!r} needs '
                              f'{flag("model_kind")} audio_visual')
        if self.label_set:
            from emotion_ros.llm.labels import LABEL_SETS
            if self.label_set not in LABEL_SETS:
                raise ConfigError(f'{flag("label_set")}: {self.label_set!r} is not one of '
                                  f'{sorted(LABEL_SETS)}')
            if self.model_kind != 'audio_visual':
                raise ConfigError(f'{flag("label_set")}: the discrete head belongs to '
                                  f'{flag("model_kind")} audio_visual')
        if self.selection_metric in ('weighted_f1', 'uar', 'accuracy') and not self.label_set:
            raise ConfigError(f'{flag("selection_metric")}: {self.selection_metric} needs '
                              f'{flag("label_set")}')
        if '/' in self.bundle_name or not self.bundle_name:
            raise ConfigError(f'{flag("bundle_name")}: must be a plain folder name')

    @property
    def best_metric(self) -> str:
        """The validation metric that chooses the best epoch."""
        if self.selection_metric != 'auto':
            return self.selection_metric
        return 'weighted_f1' if self.label_set else 'map'

    @property
    def with_vad(self) -> bool:
        """True when the answer text (and the head's VAD loss) includes VAD."""
        return PROMPTS[self.prompt_id].with_vad

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able dict (stored in checkpoints, metrics and bundles)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def replace(self, **changes: Any) -> 'TrainConfig':
        """A copy with some fields changed (validated again)."""
        return config_from_mapping({**self.to_dict(), **changes})


def config_from_mapping(values: Mapping[str, Any]) -> TrainConfig:
    """Build a validated TrainConfig from a flat mapping of field names.

    Raises:
        ConfigError: for unknown keys, wrong types or values (naming the flag).
    """
    try:
        return from_mapping(TrainConfig, dict(values))
    except ConfigError as exc:
        message = str(exc)
        key = message.split(':', 1)[0]
        if key in {f.name for f in dataclasses.fields(TrainConfig)}:
            message = f'{flag(key)} ({key}){message[len(key):]}'
        raise ConfigError(message) from None


def load_yaml_config(path: str) -> Dict[str, Any]:
    """Read a YAML (or JSON) config file of field names -> values.

    Nested sections are accepted and flattened (``lora: {r: 8}`` is not: use
    the field names, e.g. ``lora_r: 8``; sections only group them).

    Raises:
        ConfigError: when the file cannot be read or is not a mapping.
    """
    import yaml
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f) if not path.endswith('.json') else json.load(f)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f'--config: cannot read {path}: {exc}') from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'--config: {path} must hold a mapping of option: value')
    flat: Dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):  # a section grouping field names
            flat.update(value)
        else:
            flat[key] = value
    return {k.replace('-', '_'): v for k, v in flat.items()}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per TrainConfig field (help from the field metadata)."""
    parser.add_argument('--config', metavar='FILE.yaml',
                        help='YAML file of options (flags given here override it)')
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else \
            f.default_factory()  # type: ignore[misc]
        text = f'{f.metadata.get("description", "")} (default: {default!r})'
        if 'choices' in f.metadata:
            text += f'; one of {", ".join(map(str, f.metadata["choices"]))}'
        text = text.replace('%', '%%')  # argparse formats help strings with %
        names = [flag(f.name)]
        if '_' in f.name and hint is not bool:
            names.append('--' + f.name)  # HF-style underscores work too
        kwargs: Dict[str, Any] = {'dest': f.name, 'default': None, 'help': text}
        if hint is bool:
            kwargs['action'] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) in (tuple, list):
            kwargs.update(nargs='+', metavar='NAME')
        else:
            kwargs['type'] = hint
            kwargs['metavar'] = f.name.split('_')[-1].upper()
        parser.add_argument(*names, **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults, the ``--config`` file and the flags that were given.

    Raises:
        ConfigError: naming the flag or file entry that is wrong.
    """
    values: Dict[str, Any] = {}
    if getattr(args, 'config', None):
        values.update(load_yaml_config(args.config))
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    return config_from_mapping(values)


def parse_train_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Parse a ``train`` command line into a TrainConfig (used by tests and scripts)."""
    parser = argparse.ArgumentParser(prog='python -m training train')
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))

"""A tiny LLaVA and tokenizer built from configs, for tests, benchmarks and offline demos.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on the
contract's own texts (prompts, category names, VAD words), the model is a
``LlavaForConditionalGeneration`` with a one-layer CLIP vision tower and a
2-layer Llama, randomly initialised. :func:`save_tiny_llava` writes it like a
hub model (config, safetensors, processor), so training and the robot load it
through the same ``from_pretrained`` path as LLaVA-1.5-7B.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple

from emotion_ros.llm.contract import CATEGORIES, PROMPTS, VAD_NAMES, VAD_WORDS, format_answer
from emotion_ros.llm.templates import CHAT_TEMPLATES

SPECIAL_TOKENS = ('<unk>', '<s>', '</s>', '<pad>', '<image>')


def _corpus() -> List[str]:
    texts: List[str] = [p.question for p in PROMPTS.values()]
    texts += [t.prompt for t in CHAT_TEMPLATES.values()]
    texts += [format_answer([c], (v, v, v)) for c in CATEGORIES for v in (1, 4, 7, 10)]
    # Whole conversations, so that merges across ' Emotions' exist as in real tokenizers.
    texts += [t.prompt.format(question=p.question) + t.answer_prefix + format_answer([c])
              for t in CHAT_TEMPLATES.values() for p in PROMPTS.values() for c in CATEGORIES]
    texts += [' '.join(VAD_WORDS), ' '.join(VAD_NAMES), ' '.join(CATEGORIES)]
    texts += ['The person looks calm and happy, playing with a child in the park.',
              'She seems afraid and in pain; she is lying on the ground after a fall.',
              'Emotions: none.']
    return texts


def build_tiny_tokenizer(vocab_size: int = 600) -> Any:
    """A byte-level BPE tokenizer with Llama-like special tokens and an ``<image>`` token.

    Like Llama's, it prepends ``<s>`` to every encoded text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE(unk_token='<unk>'))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus() * 4, trainer)
    bos = tok.token_to_id('<s>')
    tok.post_processor = processors.TemplateProcessing(
        single='<s> $A', pair='<s> $A <s> $B', special_tokens=[('<s>', bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token='<s>', eos_token='</s>', unk_token='<unk>',
        pad_token='<pad>', extra_special_tokens={'image_token': '<image>'},
        model_max_length=4096)


def tiny_llava_config(tokenizer: Any, image_size: int = 32, patch_size: int = 8,
                      text_hidden: int = 192, text_layers: int = 2, vision_hidden: int = 64,
                      vision_layers: int = 1) -> Any:
    """A ``LlavaConfig`` of about a million parameters, laid out like LLaVA-1.5.

    The sizes are the smallest that still learn the synthetic dataset within a
    CPU test's budget: a narrower language model (64) stays near chance
    because the answer text and the score head compete for its few dimensions.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    # Unit-gain init (std 1/sqrt(width)): the usual 0.02 is tuned for widths of
    # thousands; at width 64 it makes every block a near-identity, so the image
    # barely reaches the last token and nothing can be learnt in a test's budget.
    vision = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
                              num_hidden_layers=vision_layers, num_attention_heads=2,
                              image_size=image_size, patch_size=patch_size,
                              initializer_range=vision_hidden ** -0.5)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=text_hidden,
                       intermediate_size=text_hidden * 2, num_hidden_layers=text_layers,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=text_hidden // 4,
                       max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
                       initializer_range=text_hidden ** -0.5,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    patches = (image_size // patch_size) ** 2
    return LlavaConfig(vision_config=vision, text_config=text,
                       image_token_index=tokenizer.convert_tokens_to_ids('<image>'),
                       vision_feature_layer=-2, vision_feature_select_strategy='default',
                       image_seq_length=patches, projector_hidden_act='gelu')


def build_tiny_processor(tokenizer: Any, config: Any) -> Any:
    """A ``LlavaProcessor`` for the tiny config (CLIP preprocessing at the tiny image size)."""
    from transformers import CLIPImageProcessor
    from training.core.model import assemble_processor
    size = int(config.vision_config.image_size)
    image_processor = CLIPImageProcessor(size={'shortest_edge': size},
                                         crop_size={'height': size, 'width': size})
    return assemble_processor(tokenizer, image_processor, config)


def build_tiny_llava(seed: int = 0, **sizes: Any) -> Tuple[Any, Any]:
    """Build ``(model, processor)``: a random-init tiny LLaVA and its processor.

    Args:
        seed: torch seed for the weights (same seed, same model).
        **sizes: overrides of :func:`tiny_llava_config` (image_size, text_hidden, ...).
    """
    import torch
    from transformers import LlavaForConditionalGeneration
    tokenizer = build_tiny_tokenizer()
    config = tiny_llava_config(tokenizer, **sizes)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, build_tiny_processor(tokenizer, config)


def save_tiny_llava(path: str, seed: int = 0, overwrite: bool = False, **sizes: Any) -> str:
    """Write a tiny LLaVA (weights, config, processor) to ``path`` like a hub model folder.

    Returns:
        The absolute path, usable as ``base_model`` for training and the backend.

    Raises:
        ConfigError: when ``path`` holds a model and ``overwrite`` is false.
    """
    from emotion_ros.errors import ConfigError
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, 'config.json')) and not overwrite:
        raise ConfigError(f'{path} already holds a model; pass --overwrite (overwrite=True) '
                          'to replace it')
    model, processor = build_tiny_llava(seed=seed, **sizes)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def randomize_lora_b(model: Any, seed: int) -> None:
    """Give the LoRA B matrices random values: peft starts them at zero, which would make
    a random adapter a no-op."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if 'lora_B' in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


def write_random_bundle(base_model: str, out: str, seed: int = 0, prompt_id: str = '',
                        view: str = 'crop', lora_r: int = 8, head_hidden: int = 64,
                        overwrite: bool = False) -> str:
    """Write a bundle with random (non-zero) LoRA and head weights on a tiny base model.

    For backend tests and benchmarks that need a loadable bundle quickly; its
    scores are random but computed by the real code path.

    Returns:
        The bundle folder.
    """
    from emotion_ros.llm.bundle import save_bundle
    from emotion_ros.llm.contract import DEFAULT_PROMPT_ID
    from training.core.config import config_from_mapping
    from training.core.model import build_model, bundle_info, write_bundle_files
    cfg = config_from_mapping({'base_model': base_model, 'lora_r': lora_r,
                               'lora_alpha': 2 * lora_r, 'head_hidden': head_hidden,
                               'gradient_checkpointing': False, 'view': view,
                               'prompt_id': prompt_id or DEFAULT_PROMPT_ID, 'seed': seed})
    model, processor = build_model(cfg)
    randomize_lora_b(model, seed)
    info = bundle_info(model, cfg, name=os.path.basename(os.path.abspath(out)),
                       metrics={'note': 'random weights'}, thresholds={})
    save_bundle(out, info, lambda folder: write_bundle_files(model, processor, folder, info),
                overwrite=overwrite)
    return os.path.abspath(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m training make-tiny OUT``: write a tiny random LLaVA for offline runs."""
    import argparse
    parser = argparse.ArgumentParser(
        prog='python -m training make-tiny',
        description='Write a tiny, randomly initialised LLaVA (and its tokenizer/processor) '
                    'that loads like a hub model; for offline demos and tests.')
    add_make_tiny_arguments(parser)
    return run_make_tiny(parser.parse_args(argv))


def add_make_tiny_arguments(parser: Any) -> None:
    """Arguments of ``make-tiny``."""
    parser.add_argument('out', help='folder to write the model to')
    parser.add_argument('--seed', type=int, default=0, help='weights seed (default 0)')
    parser.add_argument('--image-size', type=int, default=32, help='vision input size (px)')
    parser.add_argument('--patch-size', type=int, default=8, help='vision patch size (px)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing model')
    parser.add_argument('--audio-encoder', choices=AUDIO_ENCODER_TYPES,
                        help='write a tiny speech encoder of this family instead of a LLaVA '
                             '(for --audio-encoder of the audio_visual model)')


def run_make_tiny(args: Any) -> int:
    """Run ``make-tiny`` from parsed arguments."""
    if getattr(args, 'audio_encoder', None):
        print(save_tiny_audio_encoder(args.out, args.audio_encoder, args.seed, args.overwrite))
        return 0
    path = save_tiny_llava(args.out, seed=args.seed, overwrite=args.overwrite,
                           image_size=args.image_size, patch_size=args.patch_size)
    print(path)
    return 0


AUDIO_ENCODER_TYPES = ('hubert', 'wav2vec2', 'wavlm')


def tiny_audio_encoder_config(kind: str = 'hubert', hidden: int = 32) -> Any:
    """A HuBERT / wav2vec2 / WavLM config of a few ten thousand parameters (16 kHz input).

    The convolutional front end keeps the real models' total stride of 320
    samples (20 ms per frame) with three layers instead of seven.

    Raises:
        ValueError: for an unknown kind.
    """
    from transformers import HubertConfig, Wav2Vec2Config, WavLMConfig
    classes = {'hubert': HubertConfig, 'wav2vec2': Wav2Vec2Config, 'wavlm': WavLMConfig}
    if kind not in classes:
        raise ValueError(f'audio encoder kind {kind!r} is not one of {list(classes)}')
    return classes[kind](hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=hidden * 2, conv_dim=(32, 32, 32),
                         conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                         initializer_range=hidden ** -0.5)


def build_tiny_audio_encoder(kind: str = 'hubert', seed: int = 0, hidden: int = 32) -> Any:
    """A random-init tiny speech encoder of the given family (transformers' own model class)."""
    import torch
    from transformers import AutoModel
    torch.manual_seed(seed)
    return AutoModel.from_config(tiny_audio_encoder_config(kind, hidden))


def save_tiny_audio_encoder(path: str, kind: str = 'hubert', seed: int = 0,
                            overwrite: bool = False) -> str:
    """Write a tiny speech encoder like a hub model folder (config + safetensors).

    Raises:
        ConfigError: when ``path`` holds a model and ``overwrite`` is false.
    """
    from emotion_ros.errors import ConfigError
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, 'config.json')) and not overwrite:
        raise ConfigError(f'{path} already holds a model; pass --overwrite (overwrite=True) '
                          'to replace it')
    build_tiny_audio_encoder(kind, seed).save_pretrained(path)
    return path

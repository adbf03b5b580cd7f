"""Prompt encoding and batching shared by training and the LLaVA backend (torch inside).

How a rendered person view becomes pixels, how the ``<image>`` placeholder
expands into image tokens, how prompts are tokenised and padded: training's
collator and the robot's backend call these same functions, which is what
keeps the tokens the model sees identical in both.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import numpy as np

from emotion_ros.errors import InputError, ModelLoadError
from emotion_ros.llm.templates import IMAGE_PLACEHOLDER


def image_fill(processor: Any) -> Tuple[int, int, int]:
    """The image processor's mean colour in 0-255 (what views are padded with)."""
    mean = getattr(processor.image_processor, 'image_mean', None) or (0.5, 0.5, 0.5)
    return tuple(int(round(float(m) * 255)) for m in mean[:3])  # type: ignore[return-value]


def pixel_values_for(processor: Any, views: Sequence[np.ndarray]) -> Any:
    """Turn rendered person views (RGB uint8) into the model's pixel tensor."""
    from emotion_ros.llm.person_view import pad_to_square
    # render_person already pads to a square; views from elsewhere get the same treatment.
    fill = image_fill(processor)
    squares = [pad_to_square(np.ascontiguousarray(v), fill) for v in views]
    out = processor.image_processor(images=squares, return_tensors='pt')
    return out['pixel_values']


def image_token_count(processor: Any) -> int:
    """Number of ``<image>`` tokens one image expands to, measured through the processor.

    Raises:
        ModelLoadError: when the processor does not expand the image token.
    """
    dummy = np.zeros((8, 8, 3), dtype=np.uint8)
    token = processor.image_token
    out = processor(images=[dummy], text=[token], return_tensors='np')
    token_id = processor.tokenizer.convert_tokens_to_ids(token)
    count = int((np.asarray(out['input_ids']) == token_id).sum())
    if count < 1:
        raise ModelLoadError(f'the processor does not expand {token!r} into image tokens '
                             '(check patch_size / vision_feature_select_strategy in '
                             'processor_config.json)')
    return count


def expand_image_placeholder(text: str, processor: Any, count: int) -> str:
    """Replace the one image placeholder of a prompt by ``count`` image tokens.

    Raises:
        InputError: when the prompt does not hold exactly one placeholder.
    """
    if text.count(IMAGE_PLACEHOLDER) != 1:
        raise InputError(f'a prompt must contain exactly one {IMAGE_PLACEHOLDER}, got '
                         f'{text.count(IMAGE_PLACEHOLDER)}: {text[:80]!r}', kind='prompt')
    return text.replace(IMAGE_PLACEHOLDER, processor.image_token * count)


def encode_prompt(processor: Any, prompt: str, count: int) -> List[int]:
    """Token ids of a rendered prompt, exactly as training saw its prompt part."""
    text = expand_image_placeholder(prompt, processor, count)
    return list(processor.tokenizer(text, add_special_tokens=True)['input_ids'])


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> Tuple[Any, Any]:
    """Left-pad id lists into (input_ids, attention_mask) tensors (last token at -1)."""
    import torch
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, length - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, length - len(seq):] = 1
    return ids, mask


def positions_from_mask(attention_mask: Any) -> Any:
    """Position ids that ignore padding (left or right), so padding never shifts RoPE."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def decoder_cache_argument(model: Any) -> str:
    """The name under which a transformers model's ``forward`` takes its decoder cache and
    its output returns it: ``cache`` since transformers 5.x renamed it, ``past_key_values``
    (which now warns and is to be removed) on releases before."""
    import inspect
    return 'cache' if 'cache' in inspect.signature(model.forward).parameters else \
        'past_key_values'

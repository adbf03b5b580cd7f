"""The scoring forward of LLaVA-family models, shared by training and the backends (torch inside).

* :func:`prompt_hidden`: the last-layer hidden states the score head reads
  (one forward pass over prompt + score primer, no LM head);
* :func:`candidate_log_probs`: zero-shot scoring of the 26 category names as
  continuations over a shared KV cache;
* device and dtype resolution used by every LLM backend.
"""

from __future__ import annotations

from typing import Any, List, Sequence

from emotion_ros.errors import ModelLoadError
from emotion_ros.llm.contract import CATEGORIES
from emotion_ros.llm.encoding import decoder_cache_argument, positions_from_mask


def core_llava(model: Any) -> Any:
    """The ``LlavaForConditionalGeneration`` inside a peft wrapper (LoRA layers stay active)."""
    get_base = getattr(model, 'get_base_model', None)
    return get_base() if callable(get_base) else model


def prompt_hidden(model: Any, input_ids: Any, attention_mask: Any, pixel_values: Any) -> Any:
    """Last-layer hidden states ``[B, T, H]`` of the language model, without the LM head.

    Skipping the LM head avoids computing vocabulary logits for every token,
    which is most of the memory of a 7B forward at batch 8.
    """
    llava = core_llava(model)
    out = llava.model(input_ids=input_ids, attention_mask=attention_mask,
                      pixel_values=pixel_values,
                      position_ids=positions_from_mask(attention_mask), use_cache=False)
    return out.last_hidden_state


def resolve_dtype(dtype: str, device: str) -> Any:
    """Map a dtype option onto a torch dtype (auto: bf16 on GPU when supported, else fp32)."""
    import torch
    if dtype == 'auto':
        if device.startswith('cuda'):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {'bfloat16': torch.bfloat16, 'float16': torch.float16,
            'float32': torch.float32}[dtype]


def category_candidates(tokenizer: Any) -> List[List[int]]:
    """Token ids of ' <Category>' for each of the 26 categories (zero-shot scoring)."""
    out = []
    for name in CATEGORIES:
        ids = tokenizer(' ' + name, add_special_tokens=False)['input_ids']
        if not ids:
            raise ModelLoadError(f'the tokenizer maps category {name!r} to no tokens')
        out.append(list(ids))
    return out


def candidate_log_probs(model: Any, input_ids: Any, attention_mask: Any, pixel_values: Any,
                        candidates: Sequence[Sequence[int]], pad_id: int) -> Any:
    """Log-probability of each candidate continuation after each (left-padded) prefix.

    The prefixes run once; their KV cache is repeated for the K candidates,
    which then run together as one batch of B*K short sequences.

    Returns:
        A float tensor ``[B, K]`` (sum of the candidate's token log-probs).
    """
    import torch
    llava = core_llava(model)
    batch = input_ids.shape[0]
    k = len(candidates)
    out = llava(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                position_ids=positions_from_mask(attention_mask), use_cache=True,
                logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]
    cache_arg = decoder_cache_argument(llava)
    cache = getattr(out, cache_arg)
    cache.batch_repeat_interleave(k)
    length = max(len(c) for c in candidates)
    cand = torch.full((k, length), pad_id, dtype=torch.long, device=input_ids.device)
    cand_mask = torch.zeros((k, length), dtype=torch.long, device=input_ids.device)
    for i, c in enumerate(candidates):
        cand[i, :len(c)] = torch.tensor(list(c), device=input_ids.device)
        cand_mask[i, :len(c)] = 1
    first_ids = cand[:, 0]
    total = first[:, first_ids]  # [B, K]
    if length > 1:
        ids2 = cand.repeat(batch, 1)  # [B*K, L]
        prefix_mask = attention_mask.repeat_interleave(k, dim=0)
        mask2 = torch.cat([prefix_mask, cand_mask.repeat(batch, 1)], dim=1)
        start = prefix_mask.sum(-1, keepdim=True)
        pos2 = start + torch.arange(length, device=input_ids.device).unsqueeze(0)
        out2 = llava(input_ids=ids2, attention_mask=mask2, position_ids=pos2, use_cache=True,
                     **{cache_arg: cache})
        logp = torch.log_softmax(out2.logits[:, :-1].float(), dim=-1)  # predicts tokens 1..L-1
        target = ids2[:, 1:]
        gathered = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        gathered = gathered * cand_mask[:, 1:].repeat(batch, 1)
        total = total + gathered.sum(-1).view(batch, k)
    return total

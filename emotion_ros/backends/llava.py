"""The ``llava`` emotion backend: LLaVA + LoRA adapter + score head from a weights bundle.

This module is also the serving half of the train/serve contract for LLaVA:
the conversation templates, how a person view becomes pixels and prompt
tokens, the score head and the single-pass scoring forward live here and are
imported by ``training/`` (never the reverse), so what is trained is exactly
what runs on the robot.

How scores are obtained:

* **Fine-tuned bundle** (the default): one forward pass of the prompt followed
  by the fixed start of every answer (``Emotions:``), no generation. The score
  head reads the language model's last-layer hidden state at that last token
  (where the model decides which emotion to name first) and gives 26 category
  logits (sigmoid -> scores) and 3 VAD values (mapped onto 1-10).
* **Zero-shot** (``bundle_path`` empty, ``base_model`` set): the base model
  has no head. The score of a category is the probability that the model,
  asked the bundle prompt and primed with ``Emotions:``, names that category
  next (the product of its token probabilities), computed for all 26 names in
  one batched continuation over a shared KV cache. VAD is not estimated (NaN).
  Limits: these probabilities are uncalibrated, favour short and frequent
  words, and only rank persons within a category; use them as the zero-shot
  baseline, not for alerts.

Torch, transformers and peft are imported lazily so that importing
:class:`LlavaOptions` (the node does it at start-up) stays cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.backends.base import EmotionBackend
from emotion_ros.config import field
from emotion_ros.contract import CATEGORIES, DEFAULT_PROMPT_ID, NUM_CATEGORIES, PROMPTS, VAD_MAX
from emotion_ros.contract import SCORE_PRIMER, VAD_MIN
from emotion_ros.errors import ConfigError, InputError, ModelLoadError
from emotion_ros.types import Box, EmotionOutput

_LOG = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = '<image>'
# The head predicts 26 category logits followed by 3 VAD values.
HEAD_OUTPUTS = NUM_CATEGORIES + 3


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """How a question (and, in training, the answer) is laid out for one base model family.

    ``prompt`` holds ``{question}`` and the image placeholder; the answer is
    appended as ``answer_prefix + answer`` and ends with the tokenizer's EOS.
    """

    template_id: str
    prompt: str
    answer_prefix: str


# Chosen by explicit id (training config, bundle manifest), never from the model name.
CHAT_TEMPLATES: Dict[str, ChatTemplate] = {
    # What llava-hf/llava-1.5-*-hf document for inference.
    'llava-1.5': ChatTemplate('llava-1.5', 'USER: <image>\n{question} ASSISTANT:', ' '),
    # The Vicuna v1 system prompt LLaVA-1.5 was instruction-tuned with.
    'vicuna-v1': ChatTemplate(
        'vicuna-v1',
        'A chat between a curious human and an artificial intelligence assistant. The '
        "assistant gives helpful, detailed, and polite answers to the human's questions. "
        'USER: <image>\n{question} ASSISTANT:',
        ' '),
}
DEFAULT_CHAT_TEMPLATE = 'llava-1.5'


# SCORE_PRIMER (contract): every answer starts with it; the score head reads the
# hidden state right after it, where the language model decides which emotion to
# name first, so the text loss and the head pull together.


def render_prompt(template_id: str, question: str) -> str:
    """Put a question into a chat template (the image placeholder not yet expanded).

    Raises:
        ConfigError: for an unknown template id.
    """
    if template_id not in CHAT_TEMPLATES:
        raise ConfigError(f'chat_template: unknown template {template_id!r}; '
                          f'known: {sorted(CHAT_TEMPLATES)}')
    return CHAT_TEMPLATES[template_id].prompt.format(question=question)


@dataclasses.dataclass(frozen=True)
class LlavaOptions:
    """Options of the llava backend (ROS parameters ``emotion.llava.*``)."""

    bundle_path: str = field(
        '', 'Weights bundle folder written by `python -m training train`/`export`; '
        'empty runs the base model zero-shot')
    base_model: str = field(
        '', "Base LLaVA model (local path or hub id); '' uses the bundle manifest's base model")
    device: str = field('auto', 'auto (cuda when available) | cpu | cuda',
                        choices=('auto', 'cpu', 'cuda'))
    dtype: str = field('auto', 'auto (bfloat16 on GPU, float32 on CPU) | bfloat16 | float16 | '
                       'float32', choices=('auto', 'bfloat16', 'float16', 'float32'))
    max_batch: int = field(8, 'Most persons scored in one forward pass; more are chunked',
                           min=1, max=256)
    explain_max_new_tokens: int = field(48, 'Default token budget of an explanation',
                                        min=1, max=1024)
    explain_prompt_id: str = field('explain_v1', 'Prompt id used for explanations',
                                   choices=tuple(PROMPTS))
    explain_with_adapter: bool = field(
        False, 'Generate explanations with the fine-tuned adapter; false uses the base '
        "model's own words (fine-tuning on label lists makes LLaVA forget how to describe)")
    zero_shot_prompt_id: str = field(DEFAULT_PROMPT_ID,
                                     'Prompt id used when running without a bundle',
                                     choices=tuple(PROMPTS))
    zero_shot_chat_template: str = field(DEFAULT_CHAT_TEMPLATE,
                                         'Chat template used when running without a bundle',
                                         choices=tuple(CHAT_TEMPLATES))
    zero_shot_view: str = field('box', 'Person view used when running without a bundle',
                                choices=('box', 'crop'))


# ---------------------------------------------------------------------------
# Shared train/serve helpers (torch imported inside).


def scoring_prompt(template_id: str, question: str) -> str:
    """The text scored in one forward pass: the prompt followed by the answer's start."""
    return render_prompt(template_id, question) + CHAT_TEMPLATES[template_id].answer_prefix + \
        SCORE_PRIMER


def _image_fill(processor: Any) -> Tuple[int, int, int]:
    mean = getattr(processor.image_processor, 'image_mean', None) or (0.5, 0.5, 0.5)
    return tuple(int(round(float(m) * 255)) for m in mean[:3])  # type: ignore[return-value]


def pixel_values_for(processor: Any, views: Sequence[np.ndarray]) -> Any:
    """Turn rendered person views (RGB uint8) into the model's pixel tensor."""
    from emotion_ros.person_view import pad_to_square
    # render_person already pads to a square; views from elsewhere get the same treatment.
    fill = _image_fill(processor)
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


def build_score_head(hidden_size: int, head_hidden: int, dropout: float = 0.0) -> Any:
    """The score head: an MLP from the LLM hidden state to 26 category logits + 3 VAD values."""
    import torch
    return torch.nn.Sequential(
        torch.nn.Linear(hidden_size, head_hidden),
        torch.nn.GELU(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(head_hidden, HEAD_OUTPUTS),
    )


def apply_head(head: Any, hidden: Any) -> Tuple[Any, Any]:
    """Run the head in float32 on hidden states ``[B, H]``.

    Returns:
        (category logits ``[B, 26]``, VAD ``[B, 3]`` on 1-10).
    """
    out = head(hidden.float())
    logits = out[:, :NUM_CATEGORIES]
    vad = VAD_MIN + (VAD_MAX - VAD_MIN) * out[:, NUM_CATEGORIES:].sigmoid()
    return logits, vad


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


def resolve_device(device: str) -> str:
    """Map 'auto' onto 'cuda' when a GPU is usable, else 'cpu'.

    Raises:
        ConfigError: when 'cuda' is asked for and no GPU is usable.
    """
    import torch
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('emotion.llava.device: cuda requested but no CUDA GPU is usable')
    return device


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
    cache = out.past_key_values
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
        out2 = llava(input_ids=ids2, attention_mask=mask2, past_key_values=cache,
                     position_ids=pos2, use_cache=True)
        logp = torch.log_softmax(out2.logits[:, :-1].float(), dim=-1)  # predicts tokens 1..L-1
        target = ids2[:, 1:]
        gathered = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        gathered = gathered * cand_mask[:, 1:].repeat(batch, 1)
        total = total + gathered.sum(-1).view(batch, k)
    return total


# ---------------------------------------------------------------------------
# The backend.


class LlavaBackend(EmotionBackend):
    """LLaVA with a LoRA adapter and a score head from a weights bundle (or zero-shot)."""

    name = 'llava'

    def __init__(self, options: LlavaOptions) -> None:
        """Keep the options; nothing heavy happens before :meth:`load`.

        Raises:
            ConfigError: when neither a bundle nor a base model is given.
        """
        if not isinstance(options, LlavaOptions):
            raise ConfigError(f'emotion.llava: expected LlavaOptions, got {type(options)}')
        if not options.bundle_path and not options.base_model:
            raise ConfigError('emotion.llava.bundle_path: set a weights bundle, or '
                              'emotion.llava.base_model to run LLaVA zero-shot')
        self.options = options
        self.manifest: Optional[Dict[str, Any]] = None
        self._model: Any = None
        self._head: Any = None
        self._processor: Any = None
        self._device = 'cpu'
        self._dtype: Any = None
        self._image_tokens = 0
        self._prompt_ids: List[int] = []
        self._candidates: List[List[int]] = []
        self._has_adapter = False
        self._model_id = 'llava:unloaded'

    # -- properties -----------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        """Backend name, bundle name and a short manifest hash (or the zero-shot base)."""
        return self._model_id

    @property
    def loaded(self) -> bool:
        """True between a successful load() and close()."""
        return self._model is not None

    @property
    def can_explain(self) -> bool:
        """LLaVA can always generate an explanation."""
        return True

    @property
    def zero_shot(self) -> bool:
        """True when running the base model without a bundle."""
        return not self.options.bundle_path

    @property
    def view(self) -> str:
        """How persons are shown to the model ('box' or 'crop'), from the bundle."""
        if self.manifest is not None:
            return str(self.manifest['view'])
        return self.options.zero_shot_view

    @property
    def prompt_id(self) -> str:
        """The scoring prompt id (the bundle's, or the zero-shot option)."""
        if self.manifest is not None:
            return str(self.manifest['prompt_id'])
        return self.options.zero_shot_prompt_id

    @property
    def chat_template(self) -> str:
        """The chat template id (the bundle's, or the zero-shot option)."""
        if self.manifest is not None:
            return str(self.manifest['chat_template'])
        return self.options.zero_shot_chat_template

    @property
    def outputs_vad(self) -> bool:
        """True when the head was trained to predict VAD."""
        return bool(self.manifest is not None and self.manifest['head'].get('with_vad'))

    @property
    def device(self) -> str:
        """The torch device the model runs on."""
        return self._device

    # -- lifecycle ------------------------------------------------------------------------

    def load(self) -> None:
        """Load the base model, the bundle (adapter + head) and the processor.

        Raises:
            BundleMismatchError: when the bundle was trained for another contract
                version or base model (the message names both).
            ModelLoadError: when weights or processor files are missing or unreadable.
            ConfigError: for an impossible device/dtype choice.
        """
        from emotion_ros import bundle as bundle_mod
        opts = self.options
        self._device = resolve_device(opts.device)
        self._dtype = resolve_dtype(opts.dtype, self._device)
        manifest = None
        if opts.bundle_path:
            manifest = bundle_mod.verify_bundle(opts.bundle_path,
                                                expected_base_model=opts.base_model or None)
        base = opts.base_model or (manifest['base_model'] if manifest else '')
        try:
            model, processor = self._load_model(manifest, base)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(f'cannot load LLaVA model {base!r}'
                                 f'{" with bundle " + opts.bundle_path if manifest else ""}: '
                                 f'{exc}') from exc
        if manifest is not None:
            found = bundle_mod.model_fingerprint(core_llava(model).config.to_dict())
            if manifest.get('base_model_fingerprint') and found != manifest[
                    'base_model_fingerprint']:
                raise bundle_mod.mismatch_base_error(opts.bundle_path, manifest, base, found)
        model.eval()
        if processor.tokenizer.pad_token_id is None:
            processor.tokenizer.pad_token = processor.tokenizer.eos_token
        image_tokens = image_token_count(processor)
        head = self._load_head(manifest, core_llava(model).config) if manifest else None
        self._candidates = [] if manifest else category_candidates(processor.tokenizer)
        self.manifest = manifest
        # Fine-tuned: the head reads the primer's last token. Zero-shot: the primer
        # fixes the answer format, then the category names are scored as continuations.
        prompt = scoring_prompt(self.chat_template, PROMPTS[self.prompt_id].question)
        self._prompt_ids = encode_prompt(processor, prompt, image_tokens)
        # Only a complete load makes the backend usable.
        self._image_tokens, self._head, self._processor = image_tokens, head, processor
        self._model = model
        if manifest is not None:
            digest = hashlib.sha256(
                repr(sorted(manifest.get('files', {}).items())).encode()).hexdigest()[:8]
            name = manifest.get('name') or os.path.basename(opts.bundle_path)
            self._model_id = f'llava:{name}@{digest}'
        else:
            self._model_id = f'llava:zero-shot:{base}'
        _LOG.info('llava backend ready: %s on %s (%s), %d image tokens',
                  self._model_id, self._device, self._dtype, self._image_tokens)

    def attach(self, model: Any, processor: Any, head: Any = None,
               manifest: Optional[Dict[str, Any]] = None) -> None:
        """Use an already built model instead of :meth:`load` (benchmarks, notebooks).

        ``head`` None runs zero-shot scoring; ``manifest`` supplies prompt, view and
        template (default: the zero-shot options).
        """
        param = next(model.parameters())
        self._device = str(param.device)
        self._dtype = param.dtype
        self._model = model.eval()
        self._processor = processor
        self._head = head.to(self._device).eval() if head is not None else None
        self.manifest = manifest
        self._has_adapter = hasattr(model, 'disable_adapter')
        if processor.tokenizer.pad_token_id is None:
            processor.tokenizer.pad_token = processor.tokenizer.eos_token
        self._image_tokens = image_token_count(processor)
        if head is None:
            self._candidates = category_candidates(processor.tokenizer)
        prompt = scoring_prompt(self.chat_template, PROMPTS[self.prompt_id].question)
        self._prompt_ids = encode_prompt(processor, prompt, self._image_tokens)
        self._model_id = 'llava:attached'

    def _load_model(self, manifest: Optional[Dict[str, Any]], base: str) -> Tuple[Any, Any]:
        from transformers import AutoProcessor, LlavaForConditionalGeneration
        kwargs: Dict[str, Any] = {'dtype': self._dtype}
        if self._device.startswith('cuda'):
            kwargs['device_map'] = {'': self._device}  # straight to the GPU, not via CPU RAM
        bundle_dir = self.options.bundle_path
        adapter_type = manifest['adapter_type'] if manifest else 'none'
        if adapter_type == 'merged':
            model = LlavaForConditionalGeneration.from_pretrained(
                os.path.join(bundle_dir, manifest['model_dir']), **kwargs)
        else:
            model = LlavaForConditionalGeneration.from_pretrained(base, **kwargs)
        if adapter_type == 'lora':
            from peft import PeftModel
            model = PeftModel.from_pretrained(model, os.path.join(bundle_dir,
                                                                  manifest['adapter_dir']))
            self._has_adapter = True
        model.to(self._device)
        proc_dir = manifest.get('processor_dir') if manifest else None
        processor = AutoProcessor.from_pretrained(
            os.path.join(bundle_dir, proc_dir) if proc_dir else base)
        return model, processor

    def _load_head(self, manifest: Dict[str, Any], config: Any) -> Any:
        from safetensors.torch import load_file
        head_cfg = manifest['head']
        hidden = int(config.text_config.hidden_size)
        if int(head_cfg['hidden_size']) != hidden:
            raise ModelLoadError(f'score head of {self.options.bundle_path} expects hidden size '
                                 f'{head_cfg["hidden_size"]}, the base model has {hidden}')
        head = build_score_head(hidden, int(head_cfg['head_hidden']))
        path = os.path.join(self.options.bundle_path, manifest['head_file'])
        try:
            state = load_file(path)
            head.load_state_dict(state, strict=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(f'cannot load score head {path}: {exc}') from exc
        return head.to(self._device).eval()

    def close(self) -> None:
        """Drop the model and free GPU memory. Safe to call twice."""
        was_loaded = self._model is not None
        self._model = None
        self._head = None
        self._processor = None
        if was_loaded:
            import gc
            import torch
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # -- inference ------------------------------------------------------------------------

    def _require_loaded(self) -> None:
        if self._model is None:
            raise ModelLoadError('llava backend used before load() (or after close())')

    def render_views(self, image_rgb: np.ndarray, boxes: Sequence[Box]) -> List[np.ndarray]:
        """Show each person to the model the way the bundle was trained ('box' or 'crop').

        Raises:
            InputError: for a malformed image or box.
        """
        from emotion_ros.person_view import render_person
        return [render_person(image_rgb, box, self.view) for box in boxes]

    def score_views(self, views: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """Score rendered person views: one forward pass per ``max_batch`` persons.

        Returns:
            (scores ``[N, 26]`` in [0, 1], VAD ``[N, 3]`` on 1-10, NaN when the
            bundle has no VAD head or in zero-shot mode).
        """
        import torch
        self._require_loaded()
        n = len(views)
        scores = np.zeros((n, NUM_CATEGORIES), np.float32)
        vad = np.full((n, 3), np.nan, np.float32)
        step = self.options.max_batch
        for start in range(0, n, step):
            chunk = views[start:start + step]
            ids, mask = left_pad([self._prompt_ids] * len(chunk),
                                 self._processor.tokenizer.pad_token_id)
            pixels = pixel_values_for(self._processor, chunk)
            ids, mask = ids.to(self._device), mask.to(self._device)
            pixels = pixels.to(self._device, self._dtype)
            with torch.inference_mode():
                if self._head is not None:
                    hidden = prompt_hidden(self._model, ids, mask, pixels)[:, -1]
                    logits, vad_t = apply_head(self._head, hidden)
                    scores[start:start + len(chunk)] = logits.sigmoid().cpu().numpy()
                    if self.outputs_vad:
                        vad[start:start + len(chunk)] = vad_t.cpu().numpy()
                else:
                    logp = candidate_log_probs(self._model, ids, mask, pixels,
                                               self._candidates,
                                               self._processor.tokenizer.pad_token_id)
                    scores[start:start + len(chunk)] = logp.exp().cpu().numpy()
        return scores, vad

    def estimate(self, image_rgb: np.ndarray, boxes: Sequence[Box]) -> List[EmotionOutput]:
        """Score every person of one frame in one batched forward pass (no generation).

        Raises:
            InputError: for a malformed image or box.
            ModelLoadError: when called before load().
        """
        self._require_loaded()
        if len(boxes) == 0:
            return []
        views = self.render_views(image_rgb, boxes)
        scores, vad = self.score_views(views)
        return [EmotionOutput(scores=scores[i], vad=(float(vad[i, 0]), float(vad[i, 1]),
                                                     float(vad[i, 2])))
                for i in range(len(views))]

    def generate(self, views: Sequence[np.ndarray], prompt_id: str, max_new_tokens: int,
                 use_adapter: bool = True, min_new_tokens: int = 0) -> List[str]:
        """Generate an answer per view with greedy decoding (explanations, text evaluation).

        ``min_new_tokens`` forces a length (benchmarks measure full-length answers).

        Raises:
            ConfigError: for an unknown prompt id or a non-positive token budget.
        """
        import contextlib
        import torch
        self._require_loaded()
        if prompt_id not in PROMPTS:
            raise ConfigError(f'prompt_id: unknown prompt {prompt_id!r}; known: {sorted(PROMPTS)}')
        if max_new_tokens < 1:
            raise ConfigError(f'max_new_tokens: must be >= 1, got {max_new_tokens}')
        prompt = render_prompt(self.chat_template, PROMPTS[prompt_id].question)
        prompt_ids = encode_prompt(self._processor, prompt, self._image_tokens)
        tokenizer = self._processor.tokenizer
        llava = core_llava(self._model)
        answers: List[str] = []
        step = self.options.max_batch
        for start in range(0, len(views), step):
            chunk = views[start:start + step]
            ids, mask = left_pad([prompt_ids] * len(chunk), tokenizer.pad_token_id)
            pixels = pixel_values_for(self._processor, chunk).to(self._device, self._dtype)
            ids, mask = ids.to(self._device), mask.to(self._device)
            context = contextlib.nullcontext()
            if not use_adapter and self._has_adapter:
                context = self._model.disable_adapter()
            with torch.inference_mode(), context:
                out = llava.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                                     max_new_tokens=max_new_tokens,
                                     min_new_tokens=min(min_new_tokens, max_new_tokens),
                                     do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
            new = out[:, ids.shape[1]:]
            answers.extend(t.strip() for t in tokenizer.batch_decode(new,
                                                                     skip_special_tokens=True))
        return answers

    def explain(self, image_rgb: np.ndarray, box: Box, max_new_tokens: int = 0) -> str:
        """Generate a short explanation for one person (on request only; can take seconds).

        ``max_new_tokens`` 0 uses ``explain_max_new_tokens``.

        Raises:
            InputError: for a malformed image or box.
        """
        self._require_loaded()
        budget = max_new_tokens or self.options.explain_max_new_tokens
        views = self.render_views(image_rgb, [box])
        return self.generate(views, self.options.explain_prompt_id, budget,
                             use_adapter=self.options.explain_with_adapter)[0]

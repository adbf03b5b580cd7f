"""The ``llava`` emotion backend: LLaVA + LoRA adapter + score head from a weights bundle.

The train/serve contract (templates, prompt encoding, score primer, head,
person views, bundle format and its contract hash) lives in
:mod:`emotion_ros.llm`, imported by ``training/`` and by this thin backend
alike, so what is trained is exactly what runs on the robot.

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
from emotion_ros.config.schema import field
from emotion_ros.devices import resolve_device
from emotion_ros.errors import ConfigError, ModelLoadError
from emotion_ros.llm.contract import DEFAULT_PROMPT_ID, NUM_CATEGORIES, PROMPTS
from emotion_ros.llm.encoding import encode_prompt, image_token_count, left_pad
from emotion_ros.llm.encoding import pixel_values_for
from emotion_ros.llm.head import apply_head, build_score_head
from emotion_ros.llm.scoring import candidate_log_probs, category_candidates, core_llava
from emotion_ros.llm.scoring import prompt_hidden, resolve_dtype
from emotion_ros.llm.templates import CHAT_TEMPLATES, DEFAULT_CHAT_TEMPLATE, render_prompt
from emotion_ros.llm.templates import scoring_prompt
from emotion_ros.types import Box, EmotionOutput

_LOG = logging.getLogger(__name__)
# The audio_visual model's prompts need its media block; LLaVA alone cannot answer them.
LLAVA_PROMPTS = tuple(p for p in PROMPTS if not p.startswith('av_'))


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
                                   choices=LLAVA_PROMPTS)
    explain_with_adapter: bool = field(
        False, 'Generate explanations with the fine-tuned adapter; false uses the base '
        "model's own words (fine-tuning on label lists makes LLaVA forget how to describe). "
        'A merged bundle has no separate adapter: it always explains with its fine-tuned '
        'weights (a warning at load says so); use the LoRA bundle for base-model words')
    zero_shot_prompt_id: str = field(DEFAULT_PROMPT_ID,
                                     'Prompt id used when running without a bundle',
                                     choices=LLAVA_PROMPTS)
    zero_shot_chat_template: str = field(DEFAULT_CHAT_TEMPLATE,
                                         'Chat template used when running without a bundle',
                                         choices=tuple(CHAT_TEMPLATES))
    zero_shot_view: str = field('box', 'Person view used when running without a bundle',
                                choices=('box', 'crop'))


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
    def explanation_source(self) -> str:
        """Whose words explanations are: 'base', 'adapter' or 'merged' (fine-tuned, merged)."""
        if self.manifest is not None and self.manifest['adapter_type'] == 'merged':
            return 'merged'
        if self.options.explain_with_adapter or not self._has_adapter:
            return 'adapter' if self._has_adapter else 'base'
        return 'base'

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
        from emotion_ros.llm import bundle as bundle_mod
        opts = self.options
        self._device = resolve_device(opts.device, 'emotion.llava.device')
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
        if manifest is not None and manifest['adapter_type'] == 'merged' and \
                not opts.explain_with_adapter:
            _LOG.warning('bundle %s is merged: explanations come from its fine-tuned weights, '
                         'not the base model (explain_with_adapter: false needs the LoRA '
                         'bundle)', opts.bundle_path)
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
        from emotion_ros.llm.person_view import render_person
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

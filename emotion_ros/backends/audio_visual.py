"""The ``audio_visual`` emotion backend: sees and hears a person in one LLM (thin class).

The model (inputs, the one ``inputs_embeds`` builder, heads) is
:class:`emotion_ros.llm.multimodal.AudioVisualModel`; the bundle format and
its contract hash are :mod:`emotion_ros.llm.bundle`. This class loads a bundle
written by ``python -m training train --model-kind audio_visual`` and scores
persons from whatever they offer:

* :meth:`estimate` (the :class:`EmotionBackend` interface): person views of
  one frame, plus, when the caller set them with :meth:`set_context`, each
  track's recent crops (temporal tokens), the latest audio window and the
  transcript attributed to that person (see :mod:`emotion_ros.voice_policy`);
* :meth:`score_inputs`: any list of :class:`AVInputs` (evaluation, ablations,
  an audio-only estimate when nobody is visible).

Torch and transformers are imported lazily (the node imports the options at
start-up).
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
from emotion_ros.errors import BundleMismatchError, ConfigError, ModelLoadError
from emotion_ros.llm.contract import NUM_CATEGORIES, PROMPTS
from emotion_ros.types import Box, EmotionOutput

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AudioVisualOptions:
    """Options of the audio_visual backend (ROS parameters ``emotion.audio_visual.*``)."""

    bundle_path: str = field('', 'Weights bundle folder written by `python -m training train '
                             '--model-kind audio_visual`')
    base_model: str = field('', "Base LLaVA (local path or hub id); '' uses the manifest's")
    audio_encoder: str = field('', "Speech encoder (folder or hub id); '' uses the manifest's")
    device: str = field('auto', 'auto (cuda when available) | cpu | cuda',
                        choices=('auto', 'cpu', 'cuda'))
    dtype: str = field('auto', 'auto (bfloat16 on GPU, float32 on CPU) | bfloat16 | float16 | '
                       'float32', choices=('auto', 'bfloat16', 'float16', 'float32'))
    max_batch: int = field(8, 'Most persons scored in one forward pass; more are chunked',
                           min=1, max=256)
    use_video: bool = field(True, "Give each track's recent crops as temporal tokens")
    use_audio: bool = field(True, 'Give the latest audio window to the person it is '
                            'attributed to')
    use_transcript: bool = field(True, 'Give the latest transcript as text to that person')
    explain_max_new_tokens: int = field(48, 'Default token budget of an explanation',
                                        min=1, max=1024)
    voice_attribution: str = field(
        'nearest', 'Whose voice the latest audio is when several persons are visible: nearest '
        '(largest box; one visible person always gets it), all, or none',
        choices=('nearest', 'all', 'none'))
    context_max_age_s: float = field(3.0, 'Audio, transcripts and crops older than this are '
                                     'not given to the model', positive=True)
    crop_px: int = field(112, 'Buffered person crops are shrunk to at most this side', min=16,
                         max=1024)
    audio_sync_s: float = field(
        0.25, 'perception_node: before scoring a frame, wait at most this long for the '
        "microphone's audio to reach the frame's stamp (training pairs a frame with the voice "
        'up to it; audio frames can arrive after the image). Only while audio arrives; 0: '
        'score with the audio heard so far', min=0.0, max=2.0)


class AudioVisualBackend(EmotionBackend):
    """LLaVA + LoRA + speech encoder + projectors + heads from an audio_visual bundle."""

    name = 'audio_visual'

    def __init__(self, options: AudioVisualOptions) -> None:
        """Keep the options; nothing heavy happens before :meth:`load`.

        Raises:
            ConfigError: when no bundle is given.
        """
        if not isinstance(options, AudioVisualOptions):
            raise ConfigError('emotion.audio_visual: expected AudioVisualOptions, got '
                              f'{type(options)}')
        if not options.bundle_path:
            raise ConfigError('emotion.audio_visual.bundle_path: set a weights bundle (the '
                              'audio_visual model has no zero-shot mode)')
        self.options = options
        self.manifest: Optional[Dict[str, Any]] = None
        self._model: Any = None
        self._processor: Any = None
        self._device = 'cpu'
        self._dtype: Any = None
        self._context: Dict[int, Any] = {}
        self._model_id = 'audio_visual:unloaded'

    # -- properties -----------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        """Backend name, bundle name and a short manifest hash."""
        return self._model_id

    @property
    def loaded(self) -> bool:
        """True between a successful load() and close()."""
        return self._model is not None

    @property
    def can_explain(self) -> bool:
        """The LLM can generate explanations."""
        return True

    @property
    def label_set(self) -> str:
        """The discrete label set of the bundle ('' when it has no discrete head)."""
        return str(self.manifest.get('label_set') or '') if self.manifest else ''

    @property
    def layout(self) -> Any:
        """The bundle's modality layout."""
        self._require_loaded()
        return self._model.layout

    # -- lifecycle ------------------------------------------------------------------------

    def load(self) -> None:
        """Load base model + adapter, the speech encoder, projectors and heads.

        Raises:
            BundleMismatchError: for another contract hash, base model or speech
                encoder (both named).
            ModelLoadError: when files are missing or unreadable.
            ConfigError: for an impossible device choice.
        """
        from emotion_ros.llm import bundle as bundle_mod
        from emotion_ros.devices import resolve_device
        from emotion_ros.llm.scoring import resolve_dtype
        opts = self.options
        self._device = resolve_device(opts.device, 'emotion.audio_visual.device')
        self._dtype = resolve_dtype(opts.dtype, self._device)
        manifest = bundle_mod.verify_bundle(opts.bundle_path,
                                            expected_base_model=opts.base_model or None)
        if manifest.get('model_kind') != 'audio_visual':
            raise BundleMismatchError(f'bundle {opts.bundle_path} is a '
                                      f'{manifest.get("model_kind", "llava")} bundle; the '
                                      'audio_visual backend needs an audio_visual bundle '
                                      '(use emotion.backend: llava for it)')
        try:
            model, processor = self._build(manifest)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if isinstance(exc, (ModelLoadError, BundleMismatchError)):
                raise
            raise ModelLoadError(f'cannot load audio_visual bundle {opts.bundle_path}: '
                                 f'{exc}') from exc
        self.manifest = manifest
        self._processor = processor
        self._model = model
        digest = hashlib.sha256(
            repr(sorted(manifest.get('files', {}).items())).encode()).hexdigest()[:8]
        name = manifest.get('name') or os.path.basename(opts.bundle_path)
        self._model_id = f'audio_visual:{name}@{digest}'
        _LOG.info('audio_visual backend ready: %s on %s (%s)', self._model_id, self._device,
                  self._dtype)

    def attach(self, model: Any, processor: Any, manifest: Dict[str, Any]) -> None:
        """Use an already built :class:`AudioVisualModel` instead of :meth:`load` (benchmarks).

        ``manifest`` supplies prompt_id, chat_template, view and label_set.
        """
        param = next(model.parameters())
        self._device = str(param.device)
        self._dtype = param.dtype
        self._model = model.eval()
        self._processor = processor
        if processor.tokenizer.pad_token_id is None:
            processor.tokenizer.pad_token = processor.tokenizer.eos_token
        self.manifest = manifest
        self._model_id = 'audio_visual:attached'

    def _build(self, manifest: Dict[str, Any]) -> Tuple[Any, Any]:
        from peft import PeftModel
        from safetensors.torch import load_file
        from transformers import AutoProcessor, LlavaForConditionalGeneration
        from emotion_ros.llm import bundle as bundle_mod
        from emotion_ros.llm.multimodal import audio_fingerprint, AudioVisualModel
        from emotion_ros.llm.multimodal import build_audio_encoder, ModalityLayout
        opts = self.options
        path = opts.bundle_path
        base = opts.base_model or manifest['base_model']
        kwargs: Dict[str, Any] = {'dtype': self._dtype}
        if self._device.startswith('cuda'):
            kwargs['device_map'] = {'': self._device}
        llava = LlavaForConditionalGeneration.from_pretrained(base, **kwargs)
        found = bundle_mod.model_fingerprint(llava.config.to_dict())
        if manifest.get('base_model_fingerprint') and found != manifest['base_model_fingerprint']:
            raise bundle_mod.mismatch_base_error(path, manifest, base, found)
        llava = PeftModel.from_pretrained(llava, os.path.join(path, manifest['adapter_dir']))
        extra = manifest.get('extra') or {}
        encoder_name = opts.audio_encoder or extra.get('audio_encoder') or ''
        encoder = None
        if encoder_name:
            encoder = build_audio_encoder(encoder_name, self._dtype)
            found = audio_fingerprint(encoder.config)
            recorded = extra.get('audio_encoder_fingerprint')
            if recorded and found != recorded:
                raise BundleMismatchError(
                    f'bundle {path} was trained with speech encoder '
                    f'{extra.get("audio_encoder")!r} (architecture {recorded}), but '
                    f'{encoder_name!r} has architecture {found}; use the encoder the bundle '
                    'was trained with')
        layout = ModalityLayout.from_dict(manifest['modalities'])
        model = AudioVisualModel(llava, encoder, layout, int(manifest['head']['head_hidden']),
                                 str(manifest.get('label_set') or ''))
        model.load_extra_state_dict(load_file(os.path.join(path, extra['multimodal_file'])))
        model.to(self._device).eval()
        processor = AutoProcessor.from_pretrained(os.path.join(path, manifest['processor_dir'])
                                                  if manifest.get('processor_dir') else base)
        if processor.tokenizer.pad_token_id is None:
            processor.tokenizer.pad_token = processor.tokenizer.eos_token
        return model, processor

    def close(self) -> None:
        """Drop the model and free GPU memory. Safe to call twice."""
        was_loaded = self._model is not None
        self._model = None
        self._processor = None
        self._context = {}
        if was_loaded:
            import gc
            import torch
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _require_loaded(self) -> None:
        if self._model is None:
            raise ModelLoadError('audio_visual backend used before load() (or after close())')

    # -- inference ------------------------------------------------------------------------

    def _batch(self, inputs: Sequence[Any], prompt_id: str, mode: str) -> Dict[str, Any]:
        from emotion_ros.llm.encoding import pixel_values_for
        from emotion_ros.llm.multimodal import collate_av, encode_av, render_av_prompt
        layout = self._model.layout
        counts = {'image': layout.image_tokens, 'video': layout.video_tokens,
                  'audio': layout.audio_tokens}
        template = str(self.manifest['chat_template'])
        tokenizer = self._processor.tokenizer
        encoded = []
        for item in inputs:
            prompt = render_av_prompt(template, PROMPTS[prompt_id].question, item.present(),
                                      item.transcript or '')
            encoded.append(encode_av(tokenizer, template, prompt, counts, mode=mode))
        batch = collate_av(inputs, encoded, tokenizer.pad_token_id,
                           lambda views: pixel_values_for(self._processor, views), layout)
        return {k: (v.to(self._device, self._dtype) if k in ('pixel_values', 'video_pixels',
                                                             'audio') else v.to(self._device))
                for k, v in batch.items()}

    def score_inputs(self, inputs: Sequence[Any]) -> Dict[str, np.ndarray]:
        """Score persons given as :class:`AVInputs` (one forward pass per ``max_batch``).

        Returns:
            ``scores`` ``[N, 26]`` in [0, 1], ``vad`` ``[N, 3]`` on 1-10 and, with a
            discrete head, ``discrete`` ``[N, C]`` class probabilities.

        Raises:
            InputError: for a person with no modality at all, or malformed media.
        """
        import torch
        self._require_loaded()
        n = len(inputs)
        out = {'scores': np.zeros((n, NUM_CATEGORIES), np.float32),
               'vad': np.full((n, 3), np.nan, np.float32)}
        step = self.options.max_batch
        prompt_id = str(self.manifest['prompt_id'])
        for start in range(0, n, step):
            chunk = list(inputs[start:start + step])
            batch = self._batch(chunk, prompt_id, 'score')
            with torch.inference_mode():
                result = self._model(**batch)
            sl = slice(start, start + len(chunk))
            out['scores'][sl] = result['category_logits'].float().sigmoid().cpu().numpy()
            out['vad'][sl] = result['vad'].float().cpu().numpy()
            if 'discrete_logits' in result:
                probs = result['discrete_logits'].float().softmax(-1).cpu().numpy()
                if 'discrete' not in out:
                    out['discrete'] = np.zeros((n, probs.shape[1]), np.float32)
                out['discrete'][sl] = probs
        return out

    def make_context(self) -> Any:
        """A :class:`PersonAVContext` sized by the bundle's layout and these options."""
        from emotion_ros.perception.av_context import PersonAVContext
        layout = self.layout
        return PersonAVContext(frames=layout.video_frames, crop_px=self.options.crop_px,
                               audio_window_s=layout.audio_window_s,
                               max_age_s=self.options.context_max_age_s,
                               policy=self.options.voice_attribution)

    def _output(self, result: Dict[str, np.ndarray], i: int,
                face_visible: bool = True) -> EmotionOutput:
        """Person ``i`` of a :meth:`score_inputs` result, with the discrete head's classes."""
        classes: Tuple[str, ...] = ()
        probs = None
        if 'discrete' in result and self.label_set:
            from emotion_ros.llm.labels import label_set as classes_of
            classes, probs = classes_of(self.label_set), result['discrete'][i]
        return EmotionOutput(scores=result['scores'][i],
                             vad=tuple(float(v) for v in result['vad'][i]),
                             face_visible=face_visible, class_names=classes,
                             class_scores=probs)

    def estimate_audio_only(self, inputs: Any) -> EmotionOutput:
        """Score a voice (and words) with nobody visible: an audio-only estimate."""
        return self._output(self.score_inputs([inputs]), 0, face_visible=False)

    def set_context(self, per_person: Sequence[Any]) -> None:
        """Give the next :meth:`estimate` call each box's crops / audio / transcript.

        ``per_person[i]`` is an :class:`AVInputs` without ``image`` (the view is
        rendered from the frame) for box ``i``; it applies to one call only.
        """
        self._context = dict(enumerate(per_person))

    def estimate(self, image_rgb: np.ndarray, boxes: Sequence[Box]) -> List[EmotionOutput]:
        """Score every person of one frame (plus the context given by :meth:`set_context`).

        Raises:
            InputError: for a malformed image or box.
            ModelLoadError: when called before load().
        """
        from emotion_ros.llm.multimodal import AVInputs
        from emotion_ros.llm.person_view import render_person
        self._require_loaded()
        context, self._context = self._context, {}
        if len(boxes) == 0:
            return []
        view = str(self.manifest['view'])
        opts = self.options
        inputs = []
        for i, box in enumerate(boxes):
            extra = context.get(i) or AVInputs()
            inputs.append(AVInputs(
                image=render_person(image_rgb, box, view),
                frames=extra.frames if opts.use_video else None,
                audio=extra.audio if opts.use_audio else None,
                transcript=extra.transcript if opts.use_transcript else None))
        result = self.score_inputs(inputs)
        return [self._output(result, i) for i in range(len(inputs))]

    def explain_inputs(self, inputs: Any, max_new_tokens: int = 0) -> str:
        """Generate an explanation for one person's inputs (same embedding path as scoring)."""
        import torch
        self._require_loaded()
        budget = max_new_tokens or self.options.explain_max_new_tokens
        batch = self._batch([inputs], 'av_explain_v1', 'generate')
        tokenizer = self._processor.tokenizer
        with torch.inference_mode():
            out = self._model.generate(batch, budget, tokenizer.pad_token_id,
                                       tokenizer.eos_token_id)
        return tokenizer.decode(out[0], skip_special_tokens=True).strip()

    def explain(self, image_rgb: np.ndarray, box: Box, max_new_tokens: int = 0) -> str:
        """Explain one person of a frame (on request only; can take seconds)."""
        from emotion_ros.llm.multimodal import AVInputs
        from emotion_ros.llm.person_view import render_person
        self._require_loaded()
        view = str(self.manifest['view'])
        return self.explain_inputs(AVInputs(image=render_person(image_rgb, box, view)),
                                   max_new_tokens)

"""Whisper call-for-help detector on transformers (``whisper_engine: transformers``).

The default engine is CTranslate2 (:mod:`emotion_ros.audio.whisper_ct2`); this
one runs any transformers Whisper (hub id or folder), e.g. on a GPU.

Loads ``WhisperForConditionalGeneration`` and ``WhisperProcessor`` from a
model id or a local folder (``from_pretrained``; on this project's CI no
download happens: tests save a tiny model built from a ``WhisperConfig``).
Each utterance is decoded on its own: the language is Whisper's choice among
the configured ``languages`` (forced when there is one), then the text is
decoded greedily with ``<|transcribe|><|notimestamps|>``. The transcript is a
call for help when it contains one of the language's help phrases (as whole
words; as a substring for languages written without spaces, e.g. Japanese).

torch and transformers are imported by ``load()`` only.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from emotion_ros.audio.detectors import Decoded, HelpDetector
from emotion_ros.audio.pcm import SAMPLE_RATE
from emotion_ros.audio.phrases import (find_phrase, normalize_text,  # noqa: F401 (re-export)
                                       NO_SPACE_LANGUAGES, parse_help_phrases)
from emotion_ros.devices import resolve_device
from emotion_ros.errors import ConfigError, ModelLoadError
from emotion_ros.llm.encoding import decoder_cache_argument

#: Generated tokens per second of audio (plus a fixed allowance), bounding each decode.
TOKENS_PER_SECOND = 6
MIN_NEW_TOKENS = 16
#: The phrase list parser under its earlier name.
parse_whisper_phrases = parse_help_phrases


class WhisperDetector(HelpDetector):
    """Transcribes one utterance with Whisper and looks for help phrases in the text."""

    name = 'whisper'
    engine = 'transformers'

    def __init__(self, model: str, device: str, languages: Sequence[str],
                 help_phrases: Sequence[str]) -> None:
        """Configure (no loading): model id or path, device, languages, 'lang:phrase' list."""
        self._model_name = model
        self._device_name = device
        self.phrases = parse_whisper_phrases(help_phrases, languages)
        self.languages = tuple(self.phrases)
        self._model: Any = None
        self._processor: Any = None
        self._torch: Any = None
        self._lang_ids: Dict[str, int] = {}
        self._special: Dict[str, int] = {}

    @property
    def model_id(self) -> str:
        """The model id or path."""
        return self._model_name

    def load(self) -> None:
        """Load processor and model.

        Raises:
            ModelLoadError: naming the model and the reason (missing package,
                no such model offline, tokenizer without Whisper's special tokens).
            ConfigError: for a bad device.
        """
        try:
            import torch
            from transformers import WhisperForConditionalGeneration, WhisperProcessor
        except ImportError as exc:
            raise ModelLoadError(f'whisper detector needs torch and transformers: {exc}') from exc
        device = resolve_device(self._device_name.strip() or 'auto', 'whisper_device')
        try:
            processor = WhisperProcessor.from_pretrained(self._model_name)
            model = WhisperForConditionalGeneration.from_pretrained(self._model_name)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f'whisper detector: cannot load {self._model_name!r} (a model '
                                 f'id needs the hub or its cache; or give a local folder): '
                                 f'{exc}') from exc
        tokenizer = processor.tokenizer
        vocab = tokenizer.get_vocab()
        ids = {}
        for token in ('<|startoftranscript|>', '<|transcribe|>', '<|notimestamps|>',
                      '<|endoftext|>'):
            tid = vocab.get(token)
            if tid is None:
                raise ModelLoadError(f'whisper detector: tokenizer of {self._model_name!r} '
                                     f'lacks {token}')
            ids[token] = int(tid)
        lang_ids = {}
        for lang in self.languages:
            tid = vocab.get(f'<|{lang}|>')
            if tid is None:
                raise ConfigError(f'whisper_languages: {lang!r} is not a language of '
                                  f'{self._model_name!r}')
            lang_ids[lang] = int(tid)
        model.to(device)
        model.eval()
        self._cache_arg = decoder_cache_argument(model)
        self._torch, self._processor, self._model = torch, processor, model
        self._special, self._lang_ids = ids, lang_ids
        self._device = device

    def decode(self, audio: np.ndarray) -> Decoded:
        """Transcribe one utterance (greedy) and detect help phrases in the text."""
        if self._model is None:
            raise ModelLoadError('whisper detector: decode() called before load()')
        torch = self._torch
        features = self._processor.feature_extractor(
            np.asarray(audio, dtype=np.float32), sampling_rate=SAMPLE_RATE,
            return_tensors='pt').input_features.to(self._device)
        max_new = MIN_NEW_TOKENS + int(TOKENS_PER_SECOND * len(audio) / SAMPLE_RATE)
        with torch.inference_mode():
            encoder_out = self._model.get_encoder()(features)
            sot = self._special['<|startoftranscript|>']
            language = self.languages[0]
            if len(self.languages) > 1:
                first = self._model(encoder_outputs=encoder_out,
                                    decoder_input_ids=torch.tensor([[sot]],
                                                                   device=self._device))
                logits = first.logits[0, -1]
                language = max(self.languages, key=lambda lang: float(
                    logits[self._lang_ids[lang]]))
            prompt = [sot, self._lang_ids[language], self._special['<|transcribe|>'],
                      self._special['<|notimestamps|>']]
            tokens, logprob = self._greedy(encoder_out, prompt, max_new)
        text = self._processor.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        confidence = math.exp(logprob / len(tokens)) if tokens else 0.0
        phrase = find_phrase(text, language, self.phrases[language])
        return Decoded(text=text, language=language, confidence=confidence,
                       help_detected=bool(phrase), help_phrase=phrase,
                       help_score=confidence if phrase else 0.0)

    def _greedy(self, encoder_out: Any, prompt: List[int], max_new: int
                ) -> Tuple[List[int], float]:
        torch = self._torch
        eos = self._special['<|endoftext|>']
        ids = torch.tensor([prompt], device=self._device)
        past = None
        tokens: List[int] = []
        logprob = 0.0
        limit = self._model.config.max_target_positions - len(prompt)
        for _ in range(min(max_new, limit)):
            out = self._model(encoder_outputs=encoder_out, decoder_input_ids=ids,
                              use_cache=True, **{self._cache_arg: past})
            past = getattr(out, self._cache_arg)
            logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            token = int(torch.argmax(logp))
            if token == eos:
                break
            logprob += float(logp[token])
            tokens.append(token)
            ids = torch.tensor([[token]], device=self._device)
        return tokens, logprob

    def close(self) -> None:
        """Drop the model (frees GPU memory once nothing else holds it)."""
        self._model = None
        self._processor = None
        if self._torch is not None and self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()

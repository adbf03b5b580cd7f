"""Calls for help in a transcript: phrase lists per language, matched on normalised words.

A transcript is a call for help when it contains one of its language's phrases
as whole words ("help me", "i am trapped", "get me out", "over here", "can
anyone hear me", ...). Text and phrases are normalised the same way: Unicode
NFKC, lower case, typographic apostrophes to ``'``, punctuation and hyphens to
spaces, and for English the contractions written out ("i'm" -> "i am",
"can't" -> "cannot"), so "I'm stuck!" matches "i am stuck" while "helpful",
"helmet", "healthy" and "hello" never match "help" (whole words only).
Languages written without spaces (Japanese, Chinese, Thai, ...) match as
substrings.

:func:`find_phrase_scored` also carries each character's token through the
normalisation, so a detector that knows how sure the recogniser was of each
token (the CTranslate2 Whisper engine) can score a phrase by the geometric
mean of the probabilities of the tokens it covers.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Dict, List, Sequence, Tuple

from emotion_ros.errors import ConfigError

#: A character's token: (index of the token, its probability).
Tag = Tuple[int, float]

#: Languages written without spaces between words: phrases match as substrings.
NO_SPACE_LANGUAGES = ('ja', 'zh', 'th', 'lo', 'my', 'km')

#: Default 'lang:phrase' list. English covers the ways people call for help, not
#: only the word "help"; the other languages keep the short lists of the
#: transformers engine (a multilingual model is needed for them, docs/audio.md).
DEFAULT_HELP_PHRASES = (
    'en:help', 'en:help me', 'en:somebody help', 'en:save me', 'en:rescue me',
    'en:get me out', 'en:let me out', 'en:pull me out',
    'en:i am stuck', 'en:we are stuck', 'en:stuck in here',
    'en:i am trapped', 'en:we are trapped', 'en:trapped in here',
    'en:i am hurt', 'en:i am injured', 'en:i am bleeding', 'en:it hurts',
    'en:i cannot move', 'en:i cannot breathe', 'en:i cannot get up', 'en:i have fallen',
    'en:over here',
    'en:can anyone hear me', 'en:can anybody hear me', 'en:can someone hear me',
    'en:can somebody hear me', 'en:does anyone hear me',
    'en:is anyone there', 'en:is anybody there', 'en:is someone there',
    'en:is somebody there', 'en:anyone there', 'en:anybody there',
    'en:call an ambulance', 'en:call a doctor', 'en:i need a doctor', 'en:mayday',
    'es:ayuda', 'es:socorro', 'es:auxilio', 'es:estoy atrapado', 'es:estoy herido',
    'de:hilfe', 'de:helft mir', 'de:ich stecke fest', 'de:hier drüben', 'de:ich bin verletzt',
    'fr:au secours', "fr:à l'aide", 'fr:aidez-moi', 'fr:je suis coincé', 'fr:par ici',
    'fr:je suis blessé',
    'it:aiuto', 'it:aiutatemi', 'it:sono bloccato', 'it:sono ferito',
    'pt:socorro', 'pt:ajuda', 'pt:me ajude', 'pt:estou preso',
    'ja:助けて', 'ja:たすけて', 'ja:助けてください')

_APOSTROPHES = str.maketrans({'\u2019': "'", '\u2018': "'", '\u02bc': "'", '`': "'",
                              '\u00b4': "'"})
# English contractions written out (on lower-case text with plain apostrophes).
_EN_CONTRACTIONS = (
    (r"\bcan't\b", 'cannot'), (r"\bwon't\b", 'will not'), (r"\bshan't\b", 'shall not'),
    (r"\bi'm\b", 'i am'), (r"\b(\w+)n't\b", r'\1 not'), (r"\b(\w+)'re\b", r'\1 are'),
    (r"\b(\w+)'ve\b", r'\1 have'), (r"\b(\w+)'ll\b", r'\1 will'), (r"\b(\w+)'d\b", r'\1 would'),
    (r"\b(it|that|there|here|what|who|he|she)'s\b", r'\1 is'), (r'\bcan not\b', 'cannot'),
)


def _normalise_chars(text: str, probs: Sequence[Tag]) -> Tuple[str, List[Tag]]:
    """NFKC, lower case, apostrophes, punctuation to spaces; one token tag per character."""
    chars: List[str] = []
    out_p: List[Tag] = []
    for ch, p in zip(text, probs):
        for c in unicodedata.normalize('NFKC', ch).lower().translate(_APOSTROPHES):
            chars.append(c if (c.isalnum() or c == "'") else ' ')
            out_p.append(p)
    return ''.join(chars), out_p


def _substitute(text: str, probs: List[Tag], pattern: str, repl: str
                ) -> Tuple[str, List[Tag]]:
    """``re.sub`` that tags each replacement with the least probable token it replaced."""
    out, out_p, pos = [], [], 0
    for m in re.finditer(pattern, text):
        out.append(text[pos:m.start()])
        out_p.extend(probs[pos:m.start()])
        new = m.expand(repl)
        low = min(probs[m.start():m.end()], key=lambda tag: tag[1], default=(-1, 1.0))
        out.append(new)
        out_p.extend([low] * len(new))
        pos = m.end()
    out.append(text[pos:])
    out_p.extend(probs[pos:])
    return ''.join(out), out_p


def normalise_scored(pieces: Sequence[Tuple[str, float]], language: str = 'en'
                     ) -> Tuple[str, List[Tag]]:
    """Normalised text of ``(text, probability)`` pieces (tokens) and each character's token.

    Apostrophes that do not join two letters are dropped; spaces are single;
    English contractions are written out.
    """
    text, probs = '', []
    for index, (piece, p) in enumerate(pieces):
        t, tp = _normalise_chars(piece, [(index, p)] * len(piece))
        text += t
        probs.extend(tp)
    if language == 'en':
        for pattern, repl in _EN_CONTRACTIONS:
            text, probs = _substitute(text, probs, pattern, repl)
    text, probs = _substitute(text, probs, r"(?<!\w)'|'(?!\w)", ' ')
    text, probs = _substitute(text, probs, r'\s+', ' ')
    start = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    return text[start:end], probs[start:end]


def normalize_text(text: str, language: str = 'en') -> str:
    """Lower case, NFKC, punctuation to spaces, single spaces, English contractions written
    out (keeps letters of any script)."""
    return normalise_scored([(text, 1.0)], language)[0]


def parse_help_phrases(entries: Sequence[str], languages: Sequence[str],
                       parameter: str = 'whisper_help_phrases',
                       languages_parameter: str = 'whisper_languages'
                       ) -> Dict[str, Tuple[str, ...]]:
    """``('en:help', 'es:ayuda', ...)`` -> ``{'en': ('help',), 'es': ('ayuda',)}``.

    Only the configured ``languages`` are kept; each of them needs a phrase.

    Raises:
        ConfigError: for an entry without ``lang:``, an empty language list, or
            a configured language without phrases.
    """
    langs = [lang.strip().lower() for lang in languages if lang.strip()]
    if not langs:
        raise ConfigError(f'{languages_parameter}: need at least one language (e.g. en)')
    out: Dict[str, List[str]] = {lang: [] for lang in langs}
    for entry in entries:
        lang, sep, phrase = entry.partition(':')
        if not sep or not lang.strip() or not phrase.strip():
            raise ConfigError(f"{parameter}: {entry!r} is not 'lang:phrase'")
        lang = lang.strip().lower()
        if lang in out:
            norm = normalize_text(phrase, lang)
            if not norm:
                raise ConfigError(f'{parameter}: {entry!r} has no words')
            out[lang].append(norm)
    missing = [lang for lang, phrases in out.items() if not phrases]
    if missing:
        raise ConfigError(f'{parameter}: no phrase for language(s) {missing} of '
                          f'{languages_parameter}')
    return {lang: tuple(dict.fromkeys(p)) for lang, p in out.items()}


def find_phrase_scored(pieces: Sequence[Tuple[str, float]], language: str,
                       phrases: Sequence[str]) -> Tuple[str, float]:
    """The help phrase found in the pieces and its score, or ``('', 0.0)``
    (see :func:`find_phrase_tokens`)."""
    phrase, score, _ = find_phrase_tokens(pieces, language, phrases)
    return phrase, score


def find_phrase_tokens(pieces: Sequence[Tuple[str, float]], language: str,
                       phrases: Sequence[str]) -> Tuple[str, float, List[int]]:
    """The help phrase found in the pieces, its score and the pieces it covers.

    ``('', 0.0, [])`` when there is none. The score of a phrase occurrence is
    the geometric mean of the probabilities of the tokens it covers; among all
    occurrences of all phrases the best score wins, longer phrases first on ties.
    """
    found = find_phrase_occurrences(pieces, language, phrases)
    return found[0] if found else ('', 0.0, [])


def find_phrase_occurrences(pieces: Sequence[Tuple[str, float]], language: str,
                            phrases: Sequence[str]) -> List[Tuple[str, float, List[int]]]:
    """Every occurrence of every phrase: ``(phrase, score, pieces covered)``, best first
    (score, then longer phrases; see :func:`find_phrase_tokens`)."""
    norm, probs = normalise_scored(pieces, language)
    found: List[Tuple[float, int, str, List[int]]] = []
    for phrase in phrases:
        if language in NO_SPACE_LANGUAGES:
            hay = ''.join(c for c in norm if c != ' ')
            hay_p = [p for c, p in zip(norm, probs) if c != ' ']
            needle = phrase.replace(' ', '')
            spans = [(m.start(), m.end()) for m in re.finditer(re.escape(needle), hay)]
        else:
            hay_p = probs
            spans = [(m.start(), m.end()) for m in
                     re.finditer(r'(?<![\w\'])' + re.escape(phrase) + r'(?![\w\'])', norm)]
        for a, b in spans:
            tokens = dict(hay_p[a:b])
            score = math.exp(sum(math.log(max(p, 1e-12)) for p in tokens.values())
                             / len(tokens)) if tokens else 0.0
            found.append((score, len(phrase), phrase, sorted(i for i in tokens if i >= 0)))
    found.sort(key=lambda key: key[:2], reverse=True)   # stable: phrase order on ties
    return [(phrase, float(score), covered) for score, _, phrase, covered in found]


def find_phrase(text: str, language: str, phrases: Sequence[str]) -> str:
    """The longest phrase that ``text`` contains as whole words, or ''."""
    return find_phrase_scored([(text, 1.0)], language, phrases)[0]

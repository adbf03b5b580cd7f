"""The train/serve contract: categories, VAD, prompts, answers (training and every LLM backend).

It fixes the 26 EMOTIC categories (names and order), the Valence/Arousal/
Dominance scale and its words, how a person is shown to the model, the
prompts, the answer format and a tolerant parser of answers. A weights bundle
records ``CONTRACT_VERSION`` and a hash of the parts it depends on
(:mod:`emotion_ros.llm.spec`), so editing a prompt, a VAD word or the
primer refuses the bundles trained with the old text by name.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

CONTRACT_VERSION = '1'

# EMOTIC's 26 discrete categories, in the benchmark's order (Kosti et al. 2017).
CATEGORIES: Tuple[str, ...] = (
    'Affection', 'Anger', 'Annoyance', 'Anticipation', 'Aversion',
    'Confidence', 'Disapproval', 'Disconnection', 'Disquietment',
    'Doubt/Confusion', 'Embarrassment', 'Engagement', 'Esteem', 'Excitement',
    'Fatigue', 'Fear', 'Happiness', 'Pain', 'Peace', 'Pleasure', 'Sadness',
    'Sensitivity', 'Suffering', 'Surprise', 'Sympathy', 'Yearning',
)
NUM_CATEGORIES = len(CATEGORIES)
CATEGORY_INDEX: Dict[str, int] = {name: i for i, name in enumerate(CATEGORIES)}

# Continuous dimensions, EMOTIC's 1-10 scale.
VAD_NAMES: Tuple[str, str, str] = ('Valence', 'Arousal', 'Dominance')
VAD_MIN = 1.0
VAD_MAX = 10.0

# The poster renders each VAD value as words, "very low" (1) ... "very high" (10).
VAD_WORDS: Tuple[str, ...] = (
    'very low', 'low', 'fairly low', 'somewhat low', 'slightly low',
    'slightly high', 'somewhat high', 'fairly high', 'high', 'very high',
)

# Categories whose presence suggests a person may need help. Used by the
# distress fusion as its visual evidence (weights in config).
DISTRESS_CATEGORIES: Tuple[str, ...] = (
    'Fear', 'Pain', 'Suffering', 'Sadness', 'Disquietment', 'Fatigue',
)


def vad_to_word(value: float) -> str:
    """Render a VAD value on 1-10 as its word ('very low' ... 'very high').

    Raises:
        ValueError: if the value is NaN.
    """
    if math.isnan(value):
        raise ValueError('VAD value is NaN')
    index = int(round(min(max(value, VAD_MIN), VAD_MAX))) - 1
    return VAD_WORDS[index]


def word_to_vad(word: str) -> Optional[float]:
    """Map a VAD word back to its value on 1-10, or None if unknown."""
    key = ' '.join(word.lower().replace('-', ' ').split())
    for i, candidate in enumerate(VAD_WORDS):
        if key == candidate:
            return float(i + 1)
    return None


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """A prompt variant the model is trained and served with."""

    prompt_id: str
    question: str
    with_vad: bool


# Prompts by id; a bundle stores the id it was trained with.
PROMPTS: Dict[str, PromptTemplate] = {
    'emotic_vad_v1': PromptTemplate(
        prompt_id='emotic_vad_v1',
        question=('The person in the red box: which of these emotions do they feel? '
                  + ', '.join(CATEGORIES)
                  + '. Also rate their valence, arousal and dominance.'),
        with_vad=True),
    'emotic_emotions_v1': PromptTemplate(
        prompt_id='emotic_emotions_v1',
        question=('The person in the red box: which of these emotions do they feel? '
                  + ', '.join(CATEGORIES) + '.'),
        with_vad=False),
    'explain_v1': PromptTemplate(
        prompt_id='explain_v1',
        question=('Describe in one or two sentences how the person in the red box '
                  'feels and what in the scene shows it.'),
        with_vad=False),
    # The audio-visual model: the media block (person view, clip, voice, words) comes
    # before the question; the answer names the emotions (VAD comes from the head only,
    # as most audio-visual datasets have no VAD). The question is short: the model is
    # always fine-tuned, and every prompt token costs latency per person.
    'av_emotions_v1': PromptTemplate(
        prompt_id='av_emotions_v1',
        question='Which emotions does this person feel?',
        with_vad=False),
    'av_explain_v1': PromptTemplate(
        prompt_id='av_explain_v1',
        question=('Describe in one or two sentences how this person feels and what in '
                  'their face, voice and words shows it.'),
        with_vad=False),
}
DEFAULT_PROMPT_ID = 'emotic_vad_v1'

# Every answer starts with this text; the score head reads the hidden state right after it,
# so the robot scores with one forward pass over prompt + SCORE_PRIMER (no generation).
SCORE_PRIMER = 'Emotions:'

# How the person is shown to the model.
PERSON_VIEWS = ('box', 'crop')  # box drawn on the whole image (poster) or a crop
BOX_COLOR_RGB = (255, 0, 0)


def format_answer(categories: Sequence[str], vad: Optional[Sequence[float]] = None,
                  reason: str = '') -> str:
    """Build the target answer text.

    Example: ``'Emotions: Engagement, Happiness. Valence: high. Arousal:
    somewhat high. Dominance: fairly high.'`` With ``vad`` None the VAD part
    is left out (the emotions-only ablation). A ``reason`` (fine-grained
    annotations, stage 2 of the audio-visual training) follows as
    ``' Reason: <text>'``.

    Raises:
        ValueError: on an unknown category name or a VAD of the wrong length.
    """
    unknown = [c for c in categories if c not in CATEGORY_INDEX]
    if unknown:
        raise ValueError(f'unknown EMOTIC categories: {unknown}')
    ordered = sorted(set(categories), key=CATEGORY_INDEX.__getitem__)
    text = f'{SCORE_PRIMER} ' + (', '.join(ordered) if ordered else 'none') + '.'
    if vad is not None:
        if len(vad) != 3:
            raise ValueError(f'VAD needs 3 values, got {len(vad)}')
        for name, value in zip(VAD_NAMES, vad):
            text += f' {name}: {vad_to_word(float(value))}.'
    reason = ' '.join(reason.split())
    if reason:
        text += ' Reason: ' + reason + ('' if reason.endswith(('.', '!', '?')) else '.')
    return text


@dataclasses.dataclass
class ParsedAnswer:
    """What the parser recovered from a model's answer."""

    categories: List[str]
    vad: Tuple[float, float, float]  # NaN where a value was missing
    complete: bool  # True when the emotions and all requested VAD parts were found


_CATEGORY_PATTERNS = [
    (name, re.compile(r'\b' + re.escape(name.lower()).replace('/', r'\s*/\s*') + r'\b'))
    for name in CATEGORIES
]
_VAD_PATTERN = re.compile(
    r'\b(valence|arousal|dominance)\s*[:=\-]?\s*(?:is\s+)?'
    r'(very low|very high|fairly low|fairly high|somewhat low|somewhat high|'
    r'slightly low|slightly high|low|high|\d+(?:\.\d+)?)',
    re.IGNORECASE)


def parse_answer(text: str, expect_vad: bool = True) -> ParsedAnswer:
    """Parse a model answer tolerantly (case, order, punctuation, numbers for VAD).

    Categories are any of the 26 names mentioned anywhere (``Doubt`` and
    ``Confusion`` alone count for ``Doubt/Confusion``); VAD may be words or
    numbers on 1-10.
    """
    lower = text.lower()
    found = [name for name, pattern in _CATEGORY_PATTERNS if pattern.search(lower)]
    if 'Doubt/Confusion' not in found and re.search(r'\b(doubt|confusion|confused)\b', lower):
        found.append('Doubt/Confusion')
        found.sort(key=CATEGORY_INDEX.__getitem__)
    vad = [math.nan, math.nan, math.nan]
    for match in _VAD_PATTERN.finditer(text):
        index = VAD_NAMES.index(match.group(1).capitalize())
        raw = match.group(2).lower()
        value = word_to_vad(raw)
        if value is None:
            try:
                value = min(max(float(raw), VAD_MIN), VAD_MAX)
            except ValueError:
                continue
        vad[index] = value
    has_emotions = 'emotions' in lower or bool(found)
    complete = has_emotions and (not expect_vad or not any(math.isnan(v) for v in vad))
    return ParsedAnswer(categories=found, vad=(vad[0], vad[1], vad[2]), complete=complete)

"""The EMOTIC taxonomy for code outside the LLM backends (thin re-export).

Categories, the VAD scale and its words, prompts and the answer format live
in :mod:`emotion_ros.llm.contract`, the one model contract shared by training
and every LLM backend. Fusion, tracking output, evaluation and the light
backend only need the category list and VAD scale; they import them from here
so that they do not depend on the LLM package's layout.
"""

from emotion_ros.llm.contract import (  # noqa: F401
    CATEGORIES, CATEGORY_INDEX, DISTRESS_CATEGORIES, NUM_CATEGORIES, VAD_MAX, VAD_MIN,
    VAD_NAMES, VAD_WORDS, vad_to_word, word_to_vad)

__all__ = ['CATEGORIES', 'CATEGORY_INDEX', 'DISTRESS_CATEGORIES', 'NUM_CATEGORIES', 'VAD_MAX',
           'VAD_MIN', 'VAD_NAMES', 'VAD_WORDS', 'vad_to_word', 'word_to_vad']

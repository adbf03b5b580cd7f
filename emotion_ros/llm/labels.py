"""Discrete emotion label sets of audio-visual datasets, and their mapping onto the 26.

Datasets such as RAVDESS or MER2023 label each clip with one of a few
classes. The audio-visual model predicts them with a discrete head; for the
robot (fusion, alerts) every class maps onto EMOTIC categories here, the one
documented place (docs/audio_visual.md repeats the table). ``neutral`` maps
onto no category. The label sets and mappings are part of the contract hash.
"""

from __future__ import annotations

from typing import Dict, Tuple

from emotion_ros.errors import ConfigError
from emotion_ros.llm.contract import CATEGORY_INDEX

# Class name -> EMOTIC categories it implies.
CLASS_TO_CATEGORIES: Dict[str, Tuple[str, ...]] = {
    'neutral': (),
    'calm': ('Peace',),
    'happy': ('Happiness',),
    'sad': ('Sadness',),
    'angry': ('Anger',),
    'fear': ('Fear',),
    'disgust': ('Aversion',),
    'surprise': ('Surprise',),
    'worried': ('Disquietment',),
    'doubt': ('Doubt/Confusion',),
    'contempt': ('Disapproval',),
}

# Label set -> class names in the order the dataset numbers them.
LABEL_SETS: Dict[str, Tuple[str, ...]] = {
    # RAVDESS file names, third field 01..08.
    'ravdess': ('neutral', 'calm', 'happy', 'sad', 'angry', 'fear', 'disgust', 'surprise'),
    # CREMA-D file names, third field ANG DIS FEA HAP NEU SAD.
    'cremad': ('angry', 'disgust', 'fear', 'happy', 'neutral', 'sad'),
    # DFEW fold CSVs, label 1..7.
    'dfew': ('happy', 'sad', 'neutral', 'angry', 'surprise', 'disgust', 'fear'),
    # MER2023 discrete labels.
    'mer2023': ('neutral', 'angry', 'happy', 'sad', 'worried', 'surprise'),
    # Emotion-LLaMA's MERR coarse/fine labels.
    'merr': ('neutral', 'happy', 'angry', 'worried', 'surprise', 'sad', 'doubt', 'fear',
             'contempt'),
}

for _name, _classes in LABEL_SETS.items():
    for _cls in _classes:
        assert _cls in CLASS_TO_CATEGORIES, (_name, _cls)
        for _cat in CLASS_TO_CATEGORIES[_cls]:
            assert _cat in CATEGORY_INDEX, (_cls, _cat)


def label_set(name: str) -> Tuple[str, ...]:
    """The classes of a label set, in order.

    Raises:
        ConfigError: for an unknown label set (the known ones are listed).
    """
    if name not in LABEL_SETS:
        raise ConfigError(f'label_set: unknown label set {name!r}; known: {sorted(LABEL_SETS)}')
    return LABEL_SETS[name]


def class_index(name: str, cls: str) -> int:
    """Index of a class name in a label set (case-insensitive, common synonyms accepted).

    Raises:
        ConfigError: for a class the label set does not have.
    """
    key = cls.strip().lower()
    key = {'fearful': 'fear', 'surprised': 'surprise', 'happiness': 'happy',
           'sadness': 'sad', 'anger': 'angry', 'disgusted': 'disgust'}.get(key, key)
    classes = label_set(name)
    if key not in classes:
        raise ConfigError(f'label {cls!r} is not a class of label set {name!r} {list(classes)}')
    return classes.index(key)


def class_categories(cls: str) -> Tuple[str, ...]:
    """The EMOTIC categories a discrete class implies (empty for neutral)."""
    return CLASS_TO_CATEGORIES[cls]

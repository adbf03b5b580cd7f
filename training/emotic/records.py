"""EMOTIC person records and their label vectors: what every reader produces.

A reader (:mod:`training.emotic.readers` for the official files, the JSONL
reader in :mod:`training.emotic.dataset`) yields :class:`RawPerson` rows; the
shared checks in :mod:`training.emotic.dataset` turn them into
:class:`PersonRecord` objects or count them in a :class:`SkipReport`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.errors import InputError
from emotion_ros.llm.contract import CATEGORY_INDEX, NUM_CATEGORIES

SPLITS: Tuple[str, ...] = ('train', 'val', 'test')
_EXAMPLES_PER_REASON = 5


@dataclasses.dataclass(frozen=True)
class PersonRecord:
    """One annotated person: where they are, what they feel."""

    image_path: str  # absolute
    box: Tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels, inside the image
    categories: Tuple[str, ...]  # subset of CATEGORIES, in contract order
    vad: Tuple[float, float, float]  # valence, arousal, dominance on 1-10 (NaN if unknown)
    split: str  # train | val | test
    image_size: Tuple[int, int]  # width, height (as annotated, i.e. the box's frame)
    # gender, age, annotators, source index...; JSON-friendly values only.
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)


@dataclasses.dataclass
class SkipReport:
    """What a load skipped, by reason, with a few examples each."""

    counts: Dict[str, int] = dataclasses.field(default_factory=dict)
    examples: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    total: int = 0  # persons read, kept or not
    clipped: int = 0  # kept persons whose box was clipped to the image

    def add(self, reason: str, example: str) -> None:
        """Count one skipped person under ``reason`` (a key of SKIP_REASONS)."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < _EXAMPLES_PER_REASON:
            examples.append(example)

    @property
    def skipped(self) -> int:
        """Number of persons skipped, all reasons together."""
        return sum(self.counts.values())

    @property
    def fraction(self) -> float:
        """Skipped persons as a fraction of the persons read (0 when none read)."""
        return self.skipped / self.total if self.total else 0.0

    def summary(self) -> str:
        """One line such as ``'missing_image 3, nan_vad 2 (5 of 100 persons, 5.0%)'``."""
        ordered = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        parts = [f'{reason} {n}' for reason, n in ordered]
        return (f'{", ".join(parts) or "nothing skipped"} '
                f'({self.skipped} of {self.total} persons, {100 * self.fraction:.1f}%)')

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly form."""
        return {'total': self.total, 'skipped': self.skipped, 'fraction': self.fraction,
                'counts': dict(self.counts), 'examples': {k: list(v) for k, v in
                                                          self.examples.items()},
                'clipped': self.clipped}


@dataclasses.dataclass
class RawPerson:
    """A person as a format reader found it, before the shared checks (internal)."""

    source: str  # where it came from, for messages: 'val.csv row 12'
    image_path: str
    box: Any
    categories: Any
    vad: Any
    image_size: Optional[Tuple[int, int]]  # width, height, when annotated
    meta: Dict[str, Any]
    error: str = ''  # set by the reader when the annotation could not be parsed

# ---------------------------------------------------------------------------------------------
# Labels


def categories_to_vector(categories: Iterable[str]) -> np.ndarray:
    """26-dim float32 0/1 vector in contract order.

    Raises:
        InputError: naming any category that is not one of the 26.
    """
    vector = np.zeros(NUM_CATEGORIES, np.float32)
    unknown = []
    for name in categories:
        index = CATEGORY_INDEX.get(name)
        if index is None:
            unknown.append(name)
        else:
            vector[index] = 1.0
    if unknown:
        raise InputError(f'unknown EMOTIC categories: {unknown}', 'category')
    return vector


def label_matrix(records: Sequence[PersonRecord]) -> np.ndarray:
    """(N, 26) float32 0/1 labels of the records, in contract order."""
    out = np.zeros((len(records), NUM_CATEGORIES), np.float32)
    for i, record in enumerate(records):
        out[i] = categories_to_vector(record.categories)
    return out


def vad_matrix(records: Sequence[PersonRecord]) -> np.ndarray:
    """(N, 3) float64 valence, arousal, dominance of the records (NaN where unknown)."""
    return np.array([record.vad for record in records], np.float64).reshape(-1, 3)

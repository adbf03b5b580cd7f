"""Training samples: a person's image view, the prompt and the target answer.

Everything the model sees or is asked to say comes from the shared contract
(:mod:`emotion_ros.llm.contract`: prompts, answer format, VAD words) and the
shared :func:`emotion_ros.llm.person_view.render_person`, so that training and the
robot cannot drift apart. Two targets, as in the poster's ablation:

* ``emotic_vad_v1``: ``'Emotions: Engagement, Happiness. Valence: high.
  Arousal: somewhat high. Dominance: fairly high.'``
* ``emotic_emotions_v1``: ``'Emotions: Engagement, Happiness.'``
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.llm.contract import DEFAULT_PROMPT_ID, PERSON_VIEWS, PROMPTS, format_answer
from emotion_ros.errors import ConfigError, InputError
from emotion_ros.llm.person_view import DEFAULT_CROP_MARGIN, render_person
from training.core.images import load_image_rgb
from training.emotic.records import categories_to_vector, PersonRecord

# Prompts that ask for something other than the labels (no ground truth to train on).
NO_TARGET_PROMPTS = frozenset({'explain_v1'})


@dataclasses.dataclass(frozen=True)
class Sample:
    """One training/evaluation example for the vision-language model."""

    image: np.ndarray  # the rendered person view, (H, W, 3) uint8 RGB
    prompt: str  # the question (without chat template or image token)
    answer: str  # the target text
    labels_26: np.ndarray  # (26,) float32 0/1 in contract order
    vad: Tuple[float, float, float]  # 1-10, NaN when not annotated
    prompt_id: str = DEFAULT_PROMPT_ID
    view: str = 'box'


def resolve_with_vad(prompt_id: str, with_vad: Optional[bool]) -> bool:
    """Whether the answer carries VAD for this prompt; checks the two agree.

    Raises:
        ConfigError: for an unknown prompt, a prompt without a label target,
            or ``with_vad`` contradicting the prompt (which asks for VAD or not).
    """
    if prompt_id not in PROMPTS:
        raise ConfigError(f'prompt_id: {prompt_id!r} is not one of {sorted(PROMPTS)}')
    if prompt_id in NO_TARGET_PROMPTS:
        raise ConfigError(f'prompt_id: {prompt_id!r} asks for free text and has no training '
                          f'target; use one of {sorted(set(PROMPTS) - NO_TARGET_PROMPTS)}')
    template = PROMPTS[prompt_id]
    if with_vad is None:
        return template.with_vad
    if bool(with_vad) != template.with_vad:
        raise ConfigError(f'with_vad: {with_vad} contradicts prompt {prompt_id!r}, which '
                          f'{"asks" if template.with_vad else "does not ask"} for VAD')
    return bool(with_vad)


def build_sample(record: PersonRecord, view: str = 'box', prompt_id: str = DEFAULT_PROMPT_ID,
                 with_vad: Optional[bool] = None, *, image: Optional[np.ndarray] = None,
                 margin: float = DEFAULT_CROP_MARGIN, square: bool = True) -> Sample:
    """Build the sample for one person.

    Args:
        record: the person.
        view: ``'box'`` (red box on the whole image, the poster's view) or ``'crop'``.
        prompt_id: a prompt of the contract (default: emotions + VAD).
        with_vad: include VAD in the answer; None follows the prompt.
        image: the record's image, already loaded as RGB uint8 (saves reading
            the file again for the other persons of the same image).
        margin: crop margin for the ``'crop'`` view.
        square: pad the view to a square (see :func:`render_person`).

    Raises:
        ConfigError: for an unknown view/prompt or ``with_vad`` contradicting it.
        InputError: for a record without VAD when VAD is asked for, or an
            image that cannot be read or does not fit the annotation.
    """
    if view not in PERSON_VIEWS:
        raise ConfigError(f'view: {view!r} is not one of {list(PERSON_VIEWS)}')
    include_vad = resolve_with_vad(prompt_id, with_vad)
    if include_vad and any(math.isnan(v) for v in record.vad):
        raise InputError(f'{record.image_path}: person {list(record.box)} has no VAD but '
                         f'prompt {prompt_id!r} needs it', 'nan_vad')
    if image is None:
        image = load_image_rgb(record.image_path, record.image_size,
                               record.meta.get('exif_transpose'))
    elif (image.shape[1], image.shape[0]) != tuple(record.image_size):
        raise InputError(f'{record.image_path}: the given image is {image.shape[1]}x'
                         f'{image.shape[0]} but the record says {record.image_size[0]}x'
                         f'{record.image_size[1]}', 'image_size')
    view_image = render_person(image, record.box, view, margin=margin, square=square)
    answer = format_answer(record.categories, record.vad if include_vad else None)
    return Sample(image=view_image, prompt=PROMPTS[prompt_id].question, answer=answer,
                  labels_26=categories_to_vector(record.categories), vad=record.vad,
                  prompt_id=prompt_id, view=view)


class SampleSet(Sequence[Sample]):
    """The samples of a list of records, built on access (fits a torch map-style Dataset).

    Consecutive persons of one image reuse the decoded image.
    """

    def __init__(self, records: Sequence[PersonRecord], view: str = 'box',
                 prompt_id: str = DEFAULT_PROMPT_ID, with_vad: Optional[bool] = None, *,
                 margin: float = DEFAULT_CROP_MARGIN, square: bool = True) -> None:
        """Check the settings once; see :func:`build_sample` for the arguments."""
        if view not in PERSON_VIEWS:
            raise ConfigError(f'view: {view!r} is not one of {list(PERSON_VIEWS)}')
        self.records = list(records)
        self.view = view
        self.prompt_id = prompt_id
        self.with_vad = resolve_with_vad(prompt_id, with_vad)
        self.margin = margin
        self.square = square
        self._cached: Tuple[str, Optional[np.ndarray]] = ('', None)

    def __len__(self) -> int:
        """Return the number of persons."""
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        """Build the sample of person ``index``."""
        record = self.records[index]
        path, image = self._cached
        if path != record.image_path or image is None:
            image = load_image_rgb(record.image_path, record.image_size,
                                   record.meta.get('exif_transpose'))
            self._cached = (record.image_path, image)
        return build_sample(record, self.view, self.prompt_id, self.with_vad, image=image,
                            margin=self.margin, square=self.square)

    def __iter__(self) -> Iterator[Sample]:
        """Iterate over the samples in record order."""
        for index in range(len(self)):
            yield self[index]

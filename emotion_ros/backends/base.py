"""The emotion backend interface shared by every model (light, llava, audio_visual)."""

from __future__ import annotations

import abc
from typing import List, Sequence

import numpy as np

from emotion_ros.types import Box, EmotionOutput


class EmotionBackend(abc.ABC):
    """Scores the 26 EMOTIC categories and VAD for the people in an image.

    Lifecycle: construct with the backend's options dataclass (cheap), then
    ``load()`` (reads weights; may take seconds), ``estimate()`` any number of
    times, ``close()`` to free memory (GPU included). The perception node maps
    these onto its configure / cleanup transitions.
    """

    #: Registry name, used in ``emotion.backend`` config.
    name: str = ''

    #: How much this backend's visual evidence may weigh in the distress fusion, in (0, 1]:
    #: its distress evidence is multiplied by this. A model that cannot tell a neutral face
    #: from a sad one declares less than the fusion's weak_evidence_weight (0.6): the fusion
    #: then never lets its visual evidence alone raise more than WATCH, whatever the
    #: thresholds; audio or corroborated evidence still can (docs/messages.md).
    visual_evidence_weight: float = 1.0

    #: True when a person's output depends only on the pixels in and around their box
    #: (the box widened by ``context_margin`` on each side): the perception pipeline may then
    #: reuse it while those pixels do not change (``reuse.reuse_emotion``). False for
    #: backends that also hear (audio_visual) or look at the whole image.
    pixels_only: bool = False
    #: See ``pixels_only`` (a fraction of the box's width/height).
    context_margin: float = 0.1

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights. Raises ModelLoadError naming what was missing or wrong."""

    @abc.abstractmethod
    def estimate(self, image_rgb: np.ndarray, boxes: Sequence[Box]) -> List[EmotionOutput]:
        """Score every person box of one RGB uint8 image in one batch.

        Returns one EmotionOutput per box, in the same order.
        """

    def explain(self, image_rgb: np.ndarray, box: Box, max_new_tokens: int) -> str:
        """Generate a short free-text explanation for one person.

        Backends that cannot generate text raise NotImplementedError.
        """
        raise NotImplementedError(f'the {self.name!r} backend cannot generate explanations')

    @property
    def can_explain(self) -> bool:
        """True when ``explain`` is supported."""
        return False

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """Identifies backend and weights, e.g. 'light:facex-1.1.0'."""

    @property
    def loaded(self) -> bool:
        """True between a successful load() and close()."""
        return False

    def close(self) -> None:
        """Free the model (and GPU memory). Safe to call twice."""

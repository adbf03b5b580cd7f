"""The annotated debug image draws every person without touching the input."""

import numpy as np

from emotion_ros.llm.contract import NUM_CATEGORIES
from emotion_ros.types import EmotionOutput, PersonEstimate
from emotion_ros.perception.visualize import draw_persons


def test_draw_persons_marks_boxes_and_keeps_input():
    """Boxes (also at the image top) are drawn on a copy; the input frame is unchanged."""
    rgb = np.zeros((120, 160, 3), np.uint8)
    scores = np.zeros(NUM_CATEGORIES, np.float32)
    scores[15] = 0.9
    people = [PersonEstimate(1, (10, 0, 60, 100), 0.9, EmotionOutput(scores, (2.0, 8.0, 3.0)),
                             'test'),
              PersonEstimate(2, (90, 40, 150, 110), 0.8, EmotionOutput.unknown(), 'test')]
    out = draw_persons(rgb, people)
    assert rgb.max() == 0
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert out[50, 10].any() and out[50, 90].any()  # left edges of both boxes
    assert out[5:20, 12:58].any()  # labels inside the first box (no room above it)

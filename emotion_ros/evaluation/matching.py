"""Match predicted people to labelled ones by box overlap (IoU) in one frame."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from emotion_ros.geometry import iou_matrix
from emotion_ros.types import Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x_min, y_min, x_max, y_max)`` boxes."""
    return float(iou_matrix([a], [b])[0, 0])


def match_boxes(predicted: Sequence[Box], labelled: Sequence[Box],
                threshold: float) -> List[Tuple[int, int, float]]:
    """One-to-one matching that maximises the total IoU; pairs below ``threshold`` are dropped.

    Returns:
        ``(predicted index, labelled index, iou)`` for each matched pair,
        sorted by predicted index.
    """
    overlaps = iou_matrix(predicted, labelled)
    if overlaps.size == 0:
        return []
    from scipy.optimize import linear_sum_assignment
    # Pairs under the threshold may not be used to enable other pairs either,
    # so they get zero weight before the assignment.
    weights = np.where(overlaps >= threshold, overlaps, 0.0)
    rows, cols = linear_sum_assignment(weights, maximize=True)
    pairs = [(int(r), int(c), float(overlaps[r, c])) for r, c in zip(rows, cols)
             if overlaps[r, c] >= threshold and overlaps[r, c] > 0]
    return sorted(pairs)

"""Match predicted people to labelled ones by box overlap (IoU) in one frame."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from emotion_ros.types import Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x_min, y_min, x_max, y_max)`` boxes."""
    return float(iou_matrix([a], [b])[0, 0])


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """Compute the IoU of every box in ``a`` (rows) with every box in ``b`` (columns)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    pa = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    pb = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(pa[:, None, 0], pb[None, :, 0])
    y0 = np.maximum(pa[:, None, 1], pb[None, :, 1])
    x1 = np.minimum(pa[:, None, 2], pb[None, :, 2])
    y1 = np.minimum(pa[:, None, 3], pb[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = np.clip(pa[:, 2] - pa[:, 0], 0, None) * np.clip(pa[:, 3] - pa[:, 1], 0, None)
    area_b = np.clip(pb[:, 2] - pb[:, 0], 0, None) * np.clip(pb[:, 3] - pb[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide='ignore', invalid='ignore'):
        out = np.where(union > 0, inter / union, 0.0)
    return out


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

"""What a person looks like, as a small vector: re-identifying someone who left and came back.

No weights: the descriptor is a colour histogram of the clothing. The person box
is cut below the head (the top fifth) and narrowed to its central 60 % (less
background); the rest is split into an upper (torso) and a lower (legs) part.
Each part is a histogram of 8 hues x 3 saturations over its coloured pixels plus
4 brightness bins over its grey ones (black, white and grey clothes count too),
normalised to sum 1. The square root of each bin is kept (Hellinger), so the dot
product of two descriptors of the same part is the Bhattacharyya coefficient of
the two histograms; :func:`similarity` averages it over the parts (1 = identical
colours, 0 = no colour in common). Brightness changes move pixels between the
value bins but leave hues in place, which is what makes it usable across a
camera's exposure changes.

It cannot tell apart two people dressed alike: the distress fusion therefore
treats a middling similarity as "unsure" and opens a new incident linked to
the old one instead of moving an incident to someone else
(``FusionConfig.reid_*``).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

HUE_BINS = 8
SAT_BINS = 3
GREY_BINS = 4
PART_BINS = HUE_BINS * SAT_BINS + GREY_BINS
PARTS = 2
DESCRIPTOR_SIZE = PARTS * PART_BINS
#: Below this saturation or value a pixel counts as grey (its hue is noise).
_MIN_SAT = 0.2
_MIN_VAL = 0.15
#: Fractions of the box: head cut off on top, the split between torso and legs, the width kept.
_HEAD = 0.2
_SPLIT = 0.55
_WIDTH = 0.6
#: Parts smaller than this (pixels) are not described.
_MIN_PIXELS = 24


def _hsv(rgb: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in [0, 1), saturation and value in [0, 1] of a uint8 RGB array."""
    x = rgb.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx = x.max(axis=-1)
    mn = x.min(axis=-1)
    delta = mx - mn
    safe = np.where(delta > 1e-6, delta, 1.0)
    hue = np.where(mx == r, ((g - b) / safe) % 6.0,
                   np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)) / 6.0
    sat = np.where(mx > 1e-6, delta / np.where(mx > 1e-6, mx, 1.0), 0.0)
    return hue % 1.0, sat, mx


def _part_histogram(rgb: np.ndarray) -> np.ndarray:
    hue, sat, val = _hsv(rgb)
    coloured = (sat >= _MIN_SAT) & (val >= _MIN_VAL)
    hist = np.zeros(PART_BINS, np.float64)
    h_idx = np.minimum((hue[coloured] * HUE_BINS).astype(int), HUE_BINS - 1)
    s_idx = np.minimum(((sat[coloured] - _MIN_SAT) / (1.0 - _MIN_SAT) * SAT_BINS).astype(int),
                       SAT_BINS - 1)
    np.add.at(hist, h_idx * SAT_BINS + s_idx, 1.0)
    grey = val[~coloured]
    g_idx = np.minimum((grey * GREY_BINS).astype(int), GREY_BINS - 1)
    np.add.at(hist, HUE_BINS * SAT_BINS + g_idx, 1.0)
    total = hist.sum()
    return np.sqrt(hist / total) if total > 0 else hist


def describe(rgb: np.ndarray, box: Sequence[float]) -> Tuple[float, ...]:
    """The appearance descriptor of the person in ``box`` (x0, y0, x1, y1) of an RGB image.

    Returns an empty tuple when the visible part of the box is too small to
    describe (the fusion then falls back to position and motion alone).
    """
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    if bw <= 0 or bh <= 0:
        return ()
    cx0 = int(round(max(0.0, x0 + bw * (1 - _WIDTH) / 2)))
    cx1 = int(round(min(float(width), x1 - bw * (1 - _WIDTH) / 2)))
    top = y0 + _HEAD * bh
    split = y0 + _SPLIT * bh
    parts = []
    for a, b in ((top, split), (split, y1)):
        ya, yb = int(round(max(0.0, a))), int(round(min(float(height), b)))
        region = rgb[ya:yb, cx0:cx1]
        if region.shape[0] * region.shape[1] < _MIN_PIXELS:
            return ()
        # Subsample large crops: the histogram needs a few thousand pixels at most.
        step = max(1, int(np.sqrt(region.shape[0] * region.shape[1] / 4096.0)))
        parts.append(_part_histogram(region[::step, ::step]))
    return tuple(float(v) for v in np.concatenate(parts))


def similarity(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Mean Bhattacharyya coefficient of the parts in [0, 1]; None when either is missing."""
    if len(a) != DESCRIPTOR_SIZE or len(b) != DESCRIPTOR_SIZE:
        return None
    va = np.asarray(a, np.float64).reshape(PARTS, PART_BINS)
    vb = np.asarray(b, np.float64).reshape(PARTS, PART_BINS)
    return float(np.clip(np.mean(np.sum(va * vb, axis=1)), 0.0, 1.0))


def blend(old: Sequence[float], new: Sequence[float], weight: float = 0.2) -> Tuple[float, ...]:
    """``old`` moved towards ``new`` by ``weight`` (renormalised per part): a running mean."""
    if len(old) != DESCRIPTOR_SIZE:
        return tuple(new)
    if len(new) != DESCRIPTOR_SIZE:
        return tuple(old)
    mix = ((1 - weight) * np.square(np.asarray(old, np.float64))
           + weight * np.square(np.asarray(new, np.float64))).reshape(PARTS, PART_BINS)
    sums = mix.sum(axis=1, keepdims=True)
    mix = np.sqrt(mix / np.where(sums > 0, sums, 1.0))
    return tuple(float(v) for v in mix.reshape(-1))

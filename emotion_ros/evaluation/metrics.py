"""Emotion recognition metrics: AP, mAP, VAD error, thresholds, MER accuracy/F1/UAR/WAR.

Plain numpy (no ROS, no scikit-learn at run time), shared by the training
evaluation and the rosbag evaluation.

Conventions, fixed here so that every report means the same thing:

* **Average precision** is the step-wise (uninterpolated) area under the
  precision-recall curve, computed exactly as
  ``sklearn.metrics.average_precision_score`` does it: persons are ranked by
  score, tied scores form one threshold, and
  ``AP = sum_k (R_k - R_{k-1}) * P_k`` over the distinct thresholds.
* **mAP** is the mean of the per-category AP over the categories that have at
  least one positive person in the evaluated split. A category with no
  positive has no defined AP (recall is 0/0); it is reported as NaN and
  excluded from the mean, the way EMOTIC's benchmark code averages per-category
  AP. (scikit-learn's ``average='macro'`` would instead count it as AP 0 and
  pull the mean down.) The excluded categories are listed in the result.
* **Thresholds** predict a category when ``score >= threshold``, the
  convention of ``sklearn.metrics.precision_recall_curve``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from emotion_ros.llm.contract import CATEGORIES, VAD_MAX, VAD_MIN, VAD_NAMES
from emotion_ros.errors import InputError

NO_POSITIVE_RULE = ('categories without a positive in y_true have no defined AP: '
                    'reported as NaN and excluded from the mean')


class PerCategoryAP(dict):
    """Per-category average precision, in category order, that says what the mean left out.

    A plain ``dict`` (category name -> AP, NaN for categories without a
    positive) with two extra attributes: ``excluded``, the names left out of
    the mean, and ``rule``, a sentence stating the no-positive rule.
    """

    excluded: Tuple[str, ...] = ()
    rule: str = NO_POSITIVE_RULE


def _as_binary_labels(y_true: np.ndarray, name: str = 'y_true') -> np.ndarray:
    labels = np.asarray(y_true)
    if labels.dtype == bool:
        return labels.astype(np.float64)
    if not np.issubdtype(labels.dtype, np.number):
        raise InputError(f'{name}: expected 0/1 labels, got dtype {labels.dtype}', 'metric_input')
    values = labels.astype(np.float64)
    bad = ~((values == 0.0) | (values == 1.0))
    if bad.any():
        example = values[bad].ravel()[0]
        raise InputError(f'{name}: labels must be 0 or 1, found {example!r} '
                         f'({int(bad.sum())} values)', 'metric_input')
    return values


def _as_scores(y_score: np.ndarray, name: str = 'y_score') -> np.ndarray:
    scores = np.asarray(y_score)
    if not np.issubdtype(scores.dtype, np.number) or scores.dtype == bool:
        raise InputError(f'{name}: expected numbers, got dtype {scores.dtype}', 'metric_input')
    if not np.all(np.isfinite(scores)):
        raise InputError(f'{name}: {int((~np.isfinite(scores)).sum())} scores are NaN or '
                         'infinite', 'metric_input')
    return scores


def _binary_inputs(y_true: np.ndarray, y_score: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    labels = _as_binary_labels(y_true)
    scores = _as_scores(y_score)
    if labels.ndim != 1 or scores.ndim != 1:
        raise InputError(f'expected 1-D y_true and y_score, got shapes {labels.shape} and '
                         f'{scores.shape}', 'metric_input')
    if labels.shape != scores.shape:
        raise InputError(f'y_true has {labels.shape[0]} items but y_score has '
                         f'{scores.shape[0]}', 'metric_input')
    return labels, scores


def _matrix_inputs(y_true: np.ndarray, y_score: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    labels = _as_binary_labels(y_true)
    scores = _as_scores(y_score)
    if labels.ndim == 1:
        labels = labels[:, None]
    if scores.ndim == 1:
        scores = scores[:, None]
    if labels.ndim != 2 or labels.shape != scores.shape:
        raise InputError(f'y_true and y_score must be (N, K) arrays of the same shape, got '
                         f'{labels.shape} and {scores.shape}', 'metric_input')
    return labels, scores


def _curve_points(labels: np.ndarray, scores: np.ndarray
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true/false positives at each distinct score, highest score first."""
    # A stable sort on the reversed order keeps the arithmetic identical to
    # scikit-learn's, so results agree to the last bit, not just approximately.
    order = np.argsort(scores, kind='mergesort')[::-1]
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    distinct = np.where(np.diff(sorted_scores))[0]
    threshold_idx = np.r_[distinct, sorted_labels.size - 1]
    tps = np.cumsum(sorted_labels, dtype=np.float64)[threshold_idx]
    fps = 1 + threshold_idx - tps
    return tps, fps, sorted_scores[threshold_idx]


def precision_recall_curve(y_true: np.ndarray, y_score: np.ndarray
                           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score threshold, for plots.

    Same output as ``sklearn.metrics.precision_recall_curve`` (scikit-learn
    1.9, no intermediate points dropped): ``thresholds`` increase,
    ``precision``/``recall`` have one more element ending in 1 and 0. Unlike
    scikit-learn, recall is NaN (not 1) when ``y_true`` has no positive.

    Args:
        y_true: (N,) 0/1 labels.
        y_score: (N,) finite scores, higher meaning more likely positive.

    Raises:
        InputError: for labels other than 0/1, NaN scores or mismatched shapes.
    """
    labels, scores = _binary_inputs(y_true, y_score)
    if labels.size == 0:
        return np.array([1.0]), np.array([0.0]), np.array([], dtype=np.float64)
    tps, fps, thresholds = _curve_points(labels, scores)
    predicted = tps + fps
    precision = np.divide(tps, predicted, out=np.zeros_like(tps), where=predicted != 0)
    recall = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, math.nan)
    return (np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1])


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Average precision of one category, identical to scikit-learn's.

    Args:
        y_true: (N,) 0/1 labels.
        y_score: (N,) finite scores.

    Returns:
        AP in [0, 1]; NaN when ``y_true`` has no positive (scikit-learn returns
        0 there with a warning).

    Raises:
        InputError: for labels other than 0/1, NaN scores or mismatched shapes.
    """
    labels, scores = _binary_inputs(y_true, y_score)
    if labels.size == 0 or labels.sum() == 0:
        return math.nan
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def mean_average_precision(y_true: np.ndarray, y_score: np.ndarray,
                           categories: Sequence[str] = CATEGORIES
                           ) -> Tuple[float, PerCategoryAP]:
    """Mean average precision over categories (the EMOTIC benchmark's mAP).

    Args:
        y_true: (N, K) 0/1 labels, one column per category.
        y_score: (N, K) finite scores.
        categories: the K column names (default: the 26 EMOTIC categories).

    Returns:
        ``(mAP, per_category)``: the mean over the categories with at least
        one positive (NaN if none has one), and a :class:`PerCategoryAP` whose
        ``excluded`` attribute names the categories left out (see the module
        docstring for why).

    Raises:
        InputError: for mismatched shapes, a column count other than
            ``len(categories)``, labels other than 0/1 or NaN scores.
    """
    labels, scores = _matrix_inputs(y_true, y_score)
    if labels.shape[1] != len(categories):
        raise InputError(f'y_true has {labels.shape[1]} columns but {len(categories)} '
                         'categories were given', 'metric_input')
    result = PerCategoryAP()
    excluded = []
    for k, name in enumerate(categories):
        ap = average_precision(labels[:, k], scores[:, k])
        result[name] = ap
        if math.isnan(ap):
            excluded.append(name)
    result.excluded = tuple(excluded)
    values = [v for v in result.values() if not math.isnan(v)]
    return (float(np.mean(values)) if values else math.nan), result


def vad_mae(y_true: np.ndarray, y_pred: np.ndarray) -> Dict[str, float]:
    """Mean absolute error of Valence, Arousal and Dominance on EMOTIC's 1-10 scale.

    NaN-aware: a pair is left out of a dimension's mean when either value is
    NaN (unannotated person, or a model that gave no value).

    Args:
        y_true: (N, 3) annotated values on 1-10, NaN where unknown.
        y_pred: (N, 3) predicted values, NaN where the model gave none.

    Returns:
        ``{'Valence': ..., 'Arousal': ..., 'Dominance': ..., 'mean': ...}``; a
        dimension without any valid pair is NaN, ``mean`` averages the
        dimensions that have a value.

    Raises:
        InputError: for shapes other than (N, 3), infinite values, or
            annotations outside 1-10 (e.g. labels normalised to 0-1 by mistake).
    """
    truth = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if truth.ndim != 2 or truth.shape[1] != 3 or truth.shape != pred.shape:
        raise InputError(f'VAD arrays must both be (N, 3), got {truth.shape} and {pred.shape}',
                         'metric_input')
    if np.isinf(truth).any() or np.isinf(pred).any():
        raise InputError('VAD values must not be infinite', 'metric_input')
    with np.errstate(invalid='ignore'):
        outside = (truth < VAD_MIN) | (truth > VAD_MAX)
    if outside.any():
        raise InputError(f'annotated VAD must lie in {VAD_MIN:g}-{VAD_MAX:g}, found '
                         f'{truth[outside][0]!r} ({int(outside.sum())} values)', 'metric_input')
    result: Dict[str, float] = {}
    for k, name in enumerate(VAD_NAMES):
        valid = ~(np.isnan(truth[:, k]) | np.isnan(pred[:, k]))
        result[name] = (float(np.mean(np.abs(truth[valid, k] - pred[valid, k])))
                        if valid.any() else math.nan)
    present = [result[name] for name in VAD_NAMES if not math.isnan(result[name])]
    result['mean'] = float(np.mean(present)) if present else math.nan
    return result


def precision_recall_thresholds(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Per category, the score threshold where precision equals recall (or comes closest).

    Choose these on the validation split and apply them unchanged on test:
    a category is predicted when ``score >= threshold``. Among thresholds with
    the same ``|precision - recall|`` the one with the larger
    ``precision + recall`` wins, then the higher threshold.

    Args:
        y_true: (N, K) 0/1 labels (or (N,) for one category).
        y_score: (N, K) finite scores of the same shape.

    Returns:
        (K,) float64 thresholds; NaN for a category without a positive (no
        threshold can be chosen: treat it as never predicted).

    Raises:
        InputError: for mismatched shapes, labels other than 0/1 or NaN scores.
    """
    labels, scores = _matrix_inputs(y_true, y_score)
    out = np.full(labels.shape[1], math.nan)
    for k in range(labels.shape[1]):
        if labels.shape[0] == 0 or labels[:, k].sum() == 0:
            continue
        precision, recall, thresholds = precision_recall_curve(labels[:, k], scores[:, k])
        precision, recall = precision[:-1], recall[:-1]  # drop the (1, 0) end point
        # lexsort: last key is primary -> smallest gap, then largest P+R, then highest threshold.
        best = np.lexsort((-thresholds, -(precision + recall), np.abs(precision - recall)))[0]
        out[k] = thresholds[best]
    return out


# ---------------------------------------------------------------------------------------------
# Single-label (discrete emotion) metrics of the audio-visual benchmarks.
#
# * MER2023 reports **accuracy** and **weighted F1**: the per-class F1 averaged
#   with weights equal to each class's share of the true labels
#   (``sklearn.metrics.f1_score(average='weighted')``; a class never predicted
#   and never true has no weight; F1 of a class with no prediction is 0).
# * DFEW reports **UAR** (unweighted average recall: the mean over classes
#   present in the true labels of their recall, sklearn's
#   ``balanced_accuracy_score``) and **WAR** (weighted average recall, which
#   equals accuracy).


def _class_inputs(y_true: Sequence[int], y_pred: Sequence[int],
                  num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    if true.ndim != 1 or pred.shape != true.shape:
        raise InputError(f'y_true and y_pred must be 1-D of equal length, got {true.shape} and '
                         f'{pred.shape}', 'metric_input')
    if true.size == 0:
        raise InputError('no samples to evaluate', 'metric_input')
    for name, values in (('y_true', true), ('y_pred', pred)):
        if not np.issubdtype(values.dtype, np.integer):
            raise InputError(f'{name}: expected class indices, got dtype {values.dtype}',
                             'metric_input')
        if values.min() < 0 or values.max() >= num_classes:
            raise InputError(f'{name}: class indices must lie in 0..{num_classes - 1}, found '
                             f'{int(values.min())}..{int(values.max())}', 'metric_input')
    return true.astype(np.int64), pred.astype(np.int64)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int],
                     num_classes: int) -> np.ndarray:
    """Counts ``[true class, predicted class]`` (sklearn's layout), int64 ``[C, C]``."""
    true, pred = _class_inputs(y_true, y_pred, num_classes)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (true, pred), 1)
    return matrix


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int],
                           num_classes: int) -> Dict[str, Any]:
    """Accuracy, weighted F1 (MER2023), UAR and WAR (DFEW), per-class recall/F1, confusion.

    Raises:
        InputError: for inputs of different lengths, non-integer or out-of-range classes.
    """
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    support = matrix.sum(1).astype(np.float64)
    predicted = matrix.sum(0).astype(np.float64)
    hits = np.diag(matrix).astype(np.float64)
    total = float(support.sum())
    with np.errstate(divide='ignore', invalid='ignore'):
        recall = np.where(support > 0, hits / support, np.nan)
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        f1 = np.where(support + predicted > 0, 2 * hits / (support + predicted), 0.0)
    present = support > 0
    accuracy = float(hits.sum() / total)
    return {
        'accuracy': accuracy,
        'weighted_f1': float((f1 * support).sum() / total),
        'macro_f1': float(f1[present | (predicted > 0)].mean()),
        'uar': float(np.nanmean(recall[present])),
        'war': accuracy,
        'per_class_recall': [None if math.isnan(r) else float(r) for r in recall],
        'per_class_precision': [float(p) for p in precision],
        'per_class_f1': [float(x) for x in f1],
        'support': [int(s) for s in support],
        'confusion': matrix.tolist(),
        'samples': int(total),
    }

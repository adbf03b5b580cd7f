"""Tests of emotion_ros.evaluation.metrics against scikit-learn and hand-computed values."""

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.metrics import precision_recall_curve as sk_precision_recall_curve

from emotion_ros.llm.contract import CATEGORIES
from emotion_ros.errors import InputError
from emotion_ros.evaluation.metrics import average_precision, mean_average_precision
from emotion_ros.evaluation.metrics import (precision_recall_curve, precision_recall_thresholds,
                                            vad_mae)


def _random_case(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    labels = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(int)
    if seed % 3 == 0:
        scores = rng.integers(0, int(rng.integers(1, 6)), n).astype(np.float64)  # many ties
    elif seed % 3 == 1:
        scores = rng.random(n).astype(np.float32)
    else:
        scores = np.round(rng.normal(size=n), 1)  # some ties
    return labels, scores


def test_average_precision_equals_sklearn_on_random_inputs_with_ties():
    """AP agrees with sklearn to 1e-12 over 600 random cases (ties, float32, tiny N)."""
    checked = 0
    for seed in range(600):
        labels, scores = _random_case(seed)
        if labels.sum() == 0:
            continue
        ours = average_precision(labels, scores)
        theirs = average_precision_score(labels, scores)
        assert abs(ours - theirs) <= 1e-12, (seed, ours, theirs)
        checked += 1
    assert checked > 500


def test_precision_recall_curve_equals_sklearn():
    """The plotted curve (precision, recall, thresholds) is element-wise sklearn's."""
    for seed in range(200):
        labels, scores = _random_case(seed)
        if labels.sum() == 0:
            continue
        ours = precision_recall_curve(labels, scores)
        theirs = sk_precision_recall_curve(labels, scores)
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_average_precision_hand_computed():
    """Ranking [1, 0, 1, 0] gives AP = 1 * 1/2 + 2/3 * 1/2."""
    ap = average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1]))
    assert ap == pytest.approx(0.5 + (2 / 3) * 0.5, abs=1e-12)


def test_ties_form_one_threshold():
    """Tied scores count as one step: a positive tied with a negative scores 1/2, not 1."""
    ap = average_precision(np.array([1, 0]), np.array([0.5, 0.5]))
    assert ap == pytest.approx(0.5)
    assert ap == pytest.approx(average_precision_score([1, 0], [0.5, 0.5]))


def test_edge_cases_all_positive_constant_scores_no_positive():
    """All positives give 1, constant scores give the prevalence, no positive gives NaN."""
    rng = np.random.default_rng(0)
    scores = rng.random(20)
    assert average_precision(np.ones(20), scores) == pytest.approx(1.0, abs=1e-12)
    assert average_precision(np.ones(20), scores) == average_precision_score(np.ones(20), scores)
    labels = (rng.random(20) < 0.3).astype(int)
    labels[0] = 1
    constant = np.full(20, 0.7)
    assert average_precision(labels, constant) == pytest.approx(labels.mean())
    assert average_precision(labels, constant) == pytest.approx(
        average_precision_score(labels, constant))
    assert math.isnan(average_precision(np.zeros(20), scores))
    assert math.isnan(average_precision(np.zeros(0), np.zeros(0)))


def test_map_matches_sklearn_per_category_and_excludes_no_positive_categories():
    """The mAP is the mean of sklearn's per-category AP over categories with a positive."""
    for seed in range(30):
        rng = np.random.default_rng(seed)
        n = 40
        labels = (rng.random((n, len(CATEGORIES))) < 0.2).astype(int)
        labels[:, 3] = 0  # Anticipation: no positive in this split
        scores = np.round(rng.random((n, len(CATEGORIES))) + 0.5 * labels, 2)
        value, per_category = mean_average_precision(labels, scores)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # sklearn warns about the empty column
            sk_per = average_precision_score(labels, scores, average=None)
            sk_macro = average_precision_score(labels, scores, average='macro')
        expected_columns = [k for k in range(len(CATEGORIES)) if labels[:, k].any()]
        expected = float(np.mean(sk_per[expected_columns]))
        assert value == pytest.approx(expected, abs=1e-12)
        assert list(per_category) == list(CATEGORIES)
        assert math.isnan(per_category['Anticipation'])
        assert 'Anticipation' in per_category.excluded
        assert set(per_category.excluded) == {CATEGORIES[k] for k in range(len(CATEGORIES))
                                              if not labels[:, k].any()}
        assert 'excluded' in per_category.rule
        # sklearn's macro counts the empty category as 0 and so is lower.
        assert sk_macro < value


def test_map_with_no_positive_at_all_is_nan():
    """A split without any positive has no defined mAP and excludes every category."""
    value, per_category = mean_average_precision(np.zeros((5, 26)), np.ones((5, 26)))
    assert math.isnan(value)
    assert len(per_category.excluded) == 26


def test_metric_inputs_are_checked():
    """Reject NaN scores, non-binary labels and mismatched shapes with InputError."""
    with pytest.raises(InputError, match='NaN'):
        average_precision(np.array([1, 0]), np.array([0.5, math.nan]))
    with pytest.raises(InputError, match='0 or 1'):
        average_precision(np.array([2, 0]), np.array([0.5, 0.1]))
    with pytest.raises(InputError, match='items'):
        average_precision(np.array([1, 0, 1]), np.array([0.5, 0.1]))
    with pytest.raises(InputError, match='columns'):
        mean_average_precision(np.ones((3, 5)), np.ones((3, 5)))
    with pytest.raises(InputError, match='same shape'):
        mean_average_precision(np.ones((3, 26)), np.ones((4, 26)))


def test_vad_mae_hand_computed_and_nan_aware():
    """MAE per dimension skips NaN pairs; an all-NaN dimension is NaN and left out of mean."""
    truth = np.array([[5.0, 5.0, math.nan], [8.0, 2.0, math.nan], [1.0, math.nan, math.nan]])
    pred = np.array([[6.0, 5.0, 3.0], [6.0, 3.0, 3.0], [math.nan, 4.0, 3.0]])
    result = vad_mae(truth, pred)
    assert result['Valence'] == pytest.approx(1.5)  # |5-6|, |8-6|; row 3 has no prediction
    assert result['Arousal'] == pytest.approx(0.5)  # |5-5|, |2-3|
    assert math.isnan(result['Dominance'])
    assert result['mean'] == pytest.approx(1.0)
    with pytest.raises(InputError, match='1-10'):
        vad_mae(np.full((2, 3), 0.5), np.full((2, 3), 5.0))  # labels normalised by mistake
    with pytest.raises(InputError, match=r'\(N, 3\)'):
        vad_mae(np.ones((2, 2)), np.ones((2, 2)))


def test_thresholds_where_precision_equals_recall():
    """The chosen threshold minimises |precision - recall| over all thresholds."""
    # Hand case: at threshold 0.7, 2 of 3 predicted are positive and 2 of 3 positives found
    # (0.8 gives P 1, R 2/3; 0.6 gives P 3/4, R 1).
    labels = np.array([1, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2])
    assert precision_recall_thresholds(labels, scores)[0] == pytest.approx(0.7)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        labels = (rng.random((60, 4)) < 0.3).astype(int)
        labels[:, 2] = 0
        scores = np.round(rng.random((60, 4)) + labels * 0.4, 2)
        thresholds = precision_recall_thresholds(labels, scores)
        assert math.isnan(thresholds[2])
        for k in (0, 1, 3):
            precision, recall, cut = sk_precision_recall_curve(labels[:, k], scores[:, k])
            gaps = np.abs(precision[:-1] - recall[:-1])
            chosen = int(np.where(cut == thresholds[k])[0][0])
            assert gaps[chosen] == pytest.approx(gaps.min())


def test_metrics_module_is_light():
    """Importing the metrics and person view pulls in neither sklearn, torch nor rclpy."""
    code = ('import sys, emotion_ros.evaluation.metrics, emotion_ros.llm.person_view; '
            'bad = [m for m in ("sklearn", "torch", "rclpy", "scipy") if m in sys.modules]; '
            'sys.exit(1 if bad else 0)')
    assert subprocess.run([sys.executable, '-c', code], check=False).returncode == 0


def test_mer_and_dfew_metrics_equal_sklearn_on_random_inputs():
    """Accuracy, weighted/macro F1, UAR, WAR and the confusion matrix equal scikit-learn's."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
    from sklearn.metrics import confusion_matrix as sk_confusion
    from emotion_ros.evaluation.metrics import classification_metrics
    checked = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        classes = int(rng.integers(2, 9))
        n = int(rng.integers(1, 80))
        y_true = rng.integers(0, classes, n)
        # Mix of good and random predictions; some classes never predicted or never true.
        y_pred = np.where(rng.random(n) < rng.random(), y_true, rng.integers(0, classes, n))
        if seed % 5 == 0:
            y_true = np.minimum(y_true, classes - 2)
        got = classification_metrics(y_true, y_pred, classes)
        assert got['accuracy'] == pytest.approx(accuracy_score(y_true, y_pred))
        assert got['war'] == pytest.approx(accuracy_score(y_true, y_pred))
        assert got['weighted_f1'] == pytest.approx(
            f1_score(y_true, y_pred, average='weighted', zero_division=0))
        assert got['macro_f1'] == pytest.approx(
            f1_score(y_true, y_pred, average='macro', zero_division=0))
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # sklearn warns about classes never true
            assert got['uar'] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
        assert got['confusion'] == sk_confusion(y_true, y_pred,
                                                labels=list(range(classes))).tolist()
        checked += 1
    assert checked == 200


def test_classification_metrics_reject_bad_inputs():
    """Lengths, dtypes and class ranges that do not fit are InputErrors naming the problem."""
    from emotion_ros.evaluation.metrics import classification_metrics
    with pytest.raises(InputError, match='equal length'):
        classification_metrics([0, 1], [0], 2)
    with pytest.raises(InputError, match='0..1'):
        classification_metrics([0, 2], [0, 1], 2)
    with pytest.raises(InputError, match='class indices'):
        classification_metrics(np.array([0.0, 1.0]), np.array([0, 1]), 2)
    with pytest.raises(InputError, match='no samples'):
        classification_metrics([], [], 2)

"""Metrics against hand-computed examples."""
import numpy as np
import pytest

from errors import UserError
from metrics import compute_metrics, equal_error_rate, format_metrics


def test_small_example_by_hand():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    m = compute_metrics(labels, scores)
    # Pairs (abnormal, normal) ranked correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4) of 4 -> 0.75.
    assert m["auc"] == pytest.approx(0.75)
    # ROC points (FPR, TPR): (0,0) (0,.5) (.5,.5) (.5,1) (1,1); |FNR-FPR| is 0 at (.5,.5), threshold 0.4.
    assert m["eer"] == pytest.approx(0.5) and m["threshold"] == pytest.approx(0.4)
    assert m["release_err"] == pytest.approx(0.5)
    # Predictions score >= 0.4: [0, 1, 0, 1].
    assert m["confusion"] == [[1, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision_normal"] == pytest.approx(0.5) and m["recall_abnormal"] == pytest.approx(0.5)


def test_partial_auc_is_mcclish_standardised():
    # Ten normal clips scored 0..0.9, one abnormal above them all, nine below them all.
    labels = np.array([0] * 10 + [1] * 10)
    scores = np.concatenate([np.arange(10) / 10, [1.5], np.full(9, -1.0)])
    m = compute_metrics(labels, scores)
    assert m["auc"] == pytest.approx(0.1)
    # Area up to FPR 0.1 is 0.1 * 0.1 = 0.01; standardised 0.5 * (1 + (0.01 - 0.005) / (0.1 - 0.005)).
    assert m["pauc"] == pytest.approx(0.5 * (1 + 0.005 / 0.095))


def test_perfect_separation():
    labels = np.array([0, 0, 0, 1, 1])
    m = compute_metrics(labels, np.array([0.1, 0.2, 0.3, 0.7, 0.9]))
    assert (m["auc"], m["pauc"], m["eer"], m["accuracy"]) == (1.0, 1.0, 0.0, 1.0)
    assert m["f1_normal"] == 1.0 and m["f1_abnormal"] == 1.0
    assert equal_error_rate(labels, np.array([0.1, 0.2, 0.3, 0.7, 0.9]))[1] == pytest.approx(0.7)
    assert format_metrics(m).splitlines()[-1] == "AUC 1.0000"


def test_one_class_or_nan_scores_are_refused():
    with pytest.raises(UserError, match="both normal"):
        compute_metrics(np.array([0, 0]), np.array([0.1, 0.2]))
    with pytest.raises(UserError, match="non-finite"):
        compute_metrics(np.array([0, 1]), np.array([0.1, np.nan]))

"""Metrics against hand-computed examples."""
import numpy as np
import pytest
from sklearn import metrics as skm

from data.console import UserError
from grlnet.metrics import (
    clip_bootstrap_interval,
    compute_metrics,
    dcase_section_metrics,
    equal_error_rate,
    format_labelled_metrics,
    format_metrics,
    format_sections,
    labelled_metrics,
    mean_auc,
    mean_official_score,
    mean_pauc,
)


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


def test_equal_scores_get_a_finite_threshold_that_flags_every_clip():
    # ROC points: (0,0) at threshold inf and (1,1) at 0.5 are equally far from FNR = FPR (|1 - 0| = 1);
    # the finite one is taken, so the threshold is a score and a saved checkpoint's JSON stays valid.
    m = compute_metrics(np.array([0, 0, 1, 1]), np.full(4, 0.5))
    assert (m["auc"], m["eer"], m["threshold"], m["release_err"]) == (0.5, 0.5, 0.5, 1.0)
    assert m["confusion"] == [[0, 2], [0, 2]]


def test_one_class_or_nan_scores_are_refused():
    with pytest.raises(UserError, match="both normal"):
        compute_metrics(np.array([0, 0]), np.array([0.1, 0.2]))
    with pytest.raises(UserError, match="non-finite"):
        compute_metrics(np.array([0, 1]), np.array([0.1, np.nan]))


def test_dcase_section_metrics_by_hand():
    # Section 00: source normals 0.1, 0.4; target normals 0.3, 0.6; anomalies 0.5 (source), 0.2 (target).
    # Section 01: one source normal 0.2, one source anomaly 0.9, no target normal.
    labels = np.array([0, 0, 0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.3, 0.6, 0.5, 0.2, 0.2, 0.9])
    sections = ["00"] * 6 + ["01"] * 2
    domains = ["source", "source", "target", "target", "source", "target", "source", "source"]
    rows, official = dcase_section_metrics(labels, scores, sections, domains)
    first, second = rows
    # Source AUC: normals {0.1, 0.4} against both anomalies {0.5, 0.2}: 3 of 4 pairs ranked right.
    assert first["auc_source"] == pytest.approx(0.75)
    # Target AUC: normals {0.3, 0.6} against {0.5, 0.2}: only 0.5 > 0.3.
    assert first["auc_target"] == pytest.approx(0.25)
    # pAUC over the section: the top item (0.6) is normal, so TPR is 0 up to FPR 0.25;
    # McClish-standardised partial area 0.5 * (1 + (0 - 0.005) / (0.1 - 0.005)).
    assert first["pauc"] == pytest.approx(0.5 * (1 - 0.005 / 0.095))
    assert second == {"section": "01", "auc_source": 1.0, "auc_target": None, "pauc": 1.0}
    defined = [0.75, 0.25, 0.5 * (1 - 0.005 / 0.095), 1.0, 1.0]
    assert official == pytest.approx(len(defined) / sum(1 / v for v in defined))
    text = format_sections(rows, official)
    assert "section 01: AUC source 1.0000  AUC target n/a  pAUC 1.0000" in text
    assert text.endswith(f"harmonic mean of the above) {official:.4f}")


def test_machine_id_metrics_by_hand_from_dcase_2020_names():
    # id 00: normals 0.1, 0.5, anomaly 0.3; id 02: normal 0.4, anomalies 0.6, 0.9.
    names = ["normal_id_00_00000000.wav", "normal_id_00_00000001.wav", "anomaly_id_00_00000000.wav",
             "normal_id_02_00000000.wav", "anomaly_id_02_00000000.wav", "anomaly_id_02_00000001.wav"]
    labels = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.5, 0.3, 0.4, 0.6, 0.9])
    m = labelled_metrics(labels, scores, [f"test/{name}" for name in names])
    first, second = m["machine_ids"]
    # id 00: the anomaly beats one of two normals; the top clip is normal, so pAUC is the
    # McClish-standardised area of a TPR of 0 up to FPR 0.1: 0.5 * (1 - 0.005 / 0.095) = 9/19.
    assert first == pytest.approx({"id": "00", "auc": 0.5, "pauc": 9 / 19})
    assert second == {"id": "02", "auc": 1.0, "pauc": 1.0}
    assert m["id_average_auc"] == pytest.approx(0.75)  # arithmetic means, as the DCASE 2020 baseline
    assert m["id_average_pauc"] == pytest.approx((9 / 19 + 1) / 2)
    assert m["auc"] == pytest.approx(7 / 9)  # pooled: 7 of the 9 normal-anomaly pairs ranked right
    assert "sections" not in m
    text = format_labelled_metrics(m)
    assert "machine id 00: AUC 0.5000  pAUC 0.4737" in text
    assert f"average over machine ids: AUC 0.7500  pAUC {(9 / 19 + 1) / 2:.4f}" in text
    assert text.splitlines()[-1] == f"AUC {7 / 9:.4f}"
    one_id = format_labelled_metrics(labelled_metrics(labels[:3], scores[:3], names[:3]))
    assert "machine id 00: AUC 0.5000  pAUC 0.4737" in one_id
    assert "average over machine ids" not in one_id  # one id: its average would repeat its row


def test_names_without_a_machine_id_or_section_add_no_group_metrics():
    labels, scores = np.array([0, 1]), np.array([0.2, 0.7])
    for names in (["normal/00000000.wav", "abnormal/00000000.wav"],  # MIMII: the id is a folder
                  ["normal_id_00_00000000.wav", "anomaly_00000000.wav"]):  # one name without an id
        m = labelled_metrics(labels, scores, names)
        assert "machine_ids" not in m and "sections" not in m


def test_each_score_terms_auc_alone_by_hand():
    """Two normal and two abnormal clips: D(x) ranks them right (1.0), D(R(x)) inverted (0.0), D(Lo(x))
    one pair of four right (0.25); the score's own metrics are unchanged by the diagnostic."""
    labels = np.array([0, 0, 1, 1])
    terms = {"d_real": np.array([0.1, 0.2, 0.8, 0.9]), "d_regional": np.array([0.9, 0.8, 0.2, 0.1]),
             "d_local": np.array([0.5, 0.9, 0.1, 0.6])}
    score = np.array([0.5, 0.6, 0.4, 0.7])
    metrics = labelled_metrics(labels, score, terms=terms)
    assert (metrics["auc_d_real"], metrics["auc_d_regional"], metrics["auc_d_local"]) == (1.0, 0.0, 0.25)
    assert {k: v for k, v in metrics.items() if not k.startswith("auc_d_")} == labelled_metrics(labels, score)
    text = format_labelled_metrics(metrics)
    assert "AUC of each term alone (diagnostic): D(x) 1.0000  D(R(x)) 0.0000  D(Lo(x)) 0.2500" in text
    assert text.splitlines()[-1] == "AUC 0.5000"  # the score: two of its four pairs ranked right


def _rates_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """FPR and FNR of the decisions ``scores >= threshold``, counted on the clips."""
    flagged = scores >= threshold
    return float(flagged[labels == 0].mean()), float(1 - flagged[labels == 1].mean())


@pytest.mark.parametrize("labels, scores, eer, threshold, fpr", [
    # A flat stretch. (FPR, FNR) by threshold: 4 (0, .5), 3 (.5, .5), 2 (1, .5), 1 (1, 0): FNR = FPR at 3 alone,
    # a point in the middle of the stretch TPR = .5 that roc_curve drops unless told to keep every point.
    ([1, 0, 0, 1], [4.0, 3.0, 2.0, 1.0], 0.5, 3.0, 0.5),
    # Two normal clips tied inside a flat stretch: 6 (0, .5), 5 (.5, .5), 4 (1, .5), 1 (1, 0): FNR = FPR at 5.
    ([1, 0, 0, 0, 0, 1], [6.0, 5.0, 5.0, 4.0, 4.0, 1.0], 0.5, 5.0, 0.5),
    # A normal and an abnormal clip tied at 2: 3 (0, .5), 2 (.5, 0), 1 (1, 0); 3 and 2 are equally far
    # (.5) from FNR = FPR, and the first, the higher threshold, is taken: EER (0 + .5) / 2.
    ([0, 1, 0, 1], [1.0, 2.0, 2.0, 3.0], 0.25, 3.0, 0.0),
])
def test_eer_by_hand_and_its_threshold_reproduces_its_rates(labels, scores, eer, threshold, fpr):
    labels, scores = np.array(labels), np.array(scores)
    found = equal_error_rate(labels, scores)
    assert found == pytest.approx((eer, threshold, fpr))
    assert _rates_at(labels, scores, found[1]) == pytest.approx((fpr, 2 * eer - fpr))
    m = compute_metrics(labels, scores)
    (tn, fp), (fn, tp) = m["confusion"]
    assert (fp / (fp + tn), fn / (fn + tp)) == pytest.approx((fpr, 2 * eer - fpr))


def test_mean_auc_is_roc_auc_score_per_row_with_ties_counting_half():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([[0.1, 0.4, 0.4, 0.4, 0.9], [3.0, 1.0, 2.0, 0.5, 2.0]])
    expected = np.mean([skm.roc_auc_score(labels, row) for row in scores])
    assert mean_auc(labels, scores) == pytest.approx(expected, abs=1e-12)
    # row 0 by hand: 0.4 beats 0.1 and ties 0.4 twice (2 of 3 pairs), 0.9 beats all three: (2 + 3) / 6
    assert mean_auc(labels, scores[:1]) == pytest.approx(5 / 6)


def test_official_score_is_the_harmonic_mean_of_auc_and_pauc():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([[0.1, 0.2, 0.7, 0.3, 0.6, 0.9]])
    auc = skm.roc_auc_score(labels, scores[0])
    pauc = skm.roc_auc_score(labels, scores[0], max_fpr=0.1)
    assert mean_pauc(labels, scores) == pytest.approx(pauc)
    assert mean_official_score(labels, scores) == pytest.approx(2 * auc * pauc / (auc + pauc))


def test_the_bootstrap_resamples_each_class_at_its_own_size():
    labels = np.array([0, 0, 0, 1, 1])
    sizes = set()

    def class_sizes(resampled_labels, resampled_scores):
        sizes.add((int((resampled_labels == 0).sum()), int((resampled_labels == 1).sum()), resampled_scores.shape))
        return float(resampled_scores.mean())

    clip_bootstrap_interval(labels, np.arange(10.0).reshape(2, 5), class_sizes, resamples=50)
    assert sizes == {(3, 2, (2, 5))}


def test_bootstrap_interval_by_hand():
    # normal clips score 0 and 2, abnormal 1 and 3 (AUC 3/4). A resample of normals {2, 2} with abnormals
    # {1, 1} has AUC 0 (probability 1/16), one of normals {0, 0} AUC 1 (probability 1/4): both ends of
    # the 95 % percentile interval are reached.
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.0, 2.0, 1.0, 3.0])
    assert clip_bootstrap_interval(labels, scores, mean_auc) == (0.0, 1.0)
    separated = np.array([0.0, 1.0, 2.0, 3.0])
    assert clip_bootstrap_interval(labels, separated, mean_auc) == (1.0, 1.0)

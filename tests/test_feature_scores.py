"""The feature scores: distances against hand-computed values, a constructed inversion of D's output
that the distance does not follow, the held-out fit (--calibration_clips), and the stored statistics
through a checkpoint to test.py's scores and decisions."""
import csv
import math

import numpy as np
import pytest
import torch
from conftest import TINY, run_script
from sklearn.metrics import roc_auc_score

import main
from data import ClipSet, hold_out_last, load_datasets
from data.console import UserError
from grlnet.checkpoint import load_file
from grlnet.features import DISTANCE_OF, FeatureScorer, fit_space, fit_windows, pooled
from grlnet.scores import DEFAULT_SCORE, DISTANCES, FEATURE_SCORES, REGISTRY, SCORES
from grlnet.scoring import fit_and_score, fit_normal_windows, score_clips, scoring_batch_size
from network import GRLNet
from opts import data_settings, network_length, parse_opts, parse_test_args, scoring_settings


def corners(centre: tuple[float, float], half_widths: tuple[float, float]) -> np.ndarray:
    """The four corners of a rectangle: per feature mean ``centre``, population std ``half_widths``, and
    no correlation, so after standardisation the sample covariance is the identity."""
    signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.float64)
    return np.asarray(centre) + signs * np.asarray(half_widths)


def test_mahalanobis_and_knn_distances_equal_hand_computed_values():
    model = fit_space(corners((10.0, -5.0), (2.0, 1.0)))
    np.testing.assert_allclose(model["mean"].numpy(), [10.0, -5.0])
    np.testing.assert_allclose(model["scale"].numpy(), [2.0, 1.0])
    # standardised corners (±1, ±1) have covariance I, which Ledoit-Wolf's target equals: precision I
    np.testing.assert_allclose(model["precision"].numpy(), np.eye(2), atol=1e-6)
    scorer = FeatureScorer({"encoder": model})
    point = torch.tensor([[16.0, -5.0], [10.0, -5.0]], dtype=torch.float64)  # standardised (3, 0) and (0, 0)
    scores = scorer.window_scores({"encoder": point})
    np.testing.assert_allclose(scores["encoder_mahalanobis"], [9.0, 0.0], atol=1e-5)
    # four references (k = min(5, 4)): from (3, 0) two corners at sqrt(5), two at sqrt(17); from (0, 0) all at sqrt(2)
    np.testing.assert_allclose(scores["encoder_knn"], [(2 * math.sqrt(5) + 2 * math.sqrt(17)) / 4, math.sqrt(2)],
                               rtol=1e-6)


def test_mahalanobis_uses_the_covariance_it_is_given():
    """A hand-made model with covariance diag(4, 1) (precision diag(1/4, 1)) and no standardisation."""
    model = {"mean": torch.zeros(2), "scale": torch.ones(2), "location": torch.zeros(2),
             "precision": torch.diag(torch.tensor([0.25, 1.0])), "reference": torch.zeros(1, 2)}
    scores = FeatureScorer({"encoder": model}).window_scores({"encoder": torch.tensor([[2.0, 1.0]]).double()})
    np.testing.assert_allclose(scores["encoder_mahalanobis"], [2.0 ** 2 / 4 + 1.0])
    np.testing.assert_allclose(scores["encoder_knn"], [math.sqrt(5.0)])


def test_fit_windows_are_all_or_evenly_spaced_and_pooling_is_mean_and_std():
    np.testing.assert_array_equal(fit_windows(3), [0, 1, 2])
    spaced = fit_windows(10_000)
    assert len(spaced) == 512 and spaced[0] == 0 and spaced[-1] == 9999 and np.all(np.diff(spaced) > 0)
    h = torch.tensor([[[1.0, 3.0], [2.0, 2.0]]])  # [B=1, C=2, T=2]
    np.testing.assert_allclose(pooled(h).numpy(), [[2.0, 2.0, 1.0, 0.0]])
    with pytest.raises(UserError, match="1 normal window"):
        fit_space(np.zeros((1, 2)))


def noise_windows(count: int, length: int, seed: int, tone: float = 0.0) -> np.ndarray:
    """Clips of white noise; ``tone`` adds a sinusoid of that amplitude (a constructed anomaly)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return (rng.normal(0, 0.1, (count, length)) + tone * np.sin(2 * np.pi * t / 8)).astype(np.float32)


def test_d_inverted_by_construction_while_the_feature_distance_ranks_right():
    """D's head is set to say "real" for what anomalies have more of (the inversion: an anomaly looks
    more real than a normal clip); the distance from normal D features ranks anomalies above normal."""
    opt = parse_opts([*TINY, "--comprehensive_output_factor", "0"])  # the paper's score is D(x) alone
    length = network_length(opt)
    torch.manual_seed(0)
    model = GRLNet(length).eval()
    train = ClipSet([f"n{i}" for i in range(24)], noise_windows(24, length, 1), np.zeros(24, dtype=np.int64))
    test = ClipSet([f"t{i}" for i in range(16)],
                   np.concatenate([noise_windows(8, length, 2), noise_windows(8, length, 3, tone=1.0)]),
                   np.array([0] * 8 + [1] * 8))
    with torch.no_grad():
        features = model.discriminator.features(torch.from_numpy(test.signals).unsqueeze(1))  # [16, 512, L4]
        anomaly_direction = features[8:].mean(0) - features[:8].mean(0)
        model.discriminator.linear.weight.copy_(-anomaly_direction.reshape(1, -1))
        model.discriminator.linear.bias.zero_()
    scorer = FeatureScorer(fit_normal_windows(model, train, scoring_settings(opt), torch.device("cpu")))
    scores = score_clips(model, test, scoring_settings(opt), torch.device("cpu"), scorer=scorer)
    assert roc_auc_score(test.labels, scores["paper"]) == 0.0  # every anomaly scores as more normal
    assert roc_auc_score(test.labels, scores["discriminator_mahalanobis"]) == 1.0
    assert np.array_equal(scores["score"], scores[DEFAULT_SCORE])
    evaluation = fit_and_score(model, train, test, scoring_settings(opt), torch.device("cpu"))
    assert evaluation.scores.keys() == scores.keys() and evaluation.fit_seconds > 0
    assert all(np.allclose(evaluation.scores[name], scores[name], rtol=1e-9) for name in scores)
    refitted = fit_normal_windows(model, train, scoring_settings(opt), torch.device("cpu"))
    assert all(torch.equal(evaluation.feature_models[space][entry], refitted[space][entry])
               for space in refitted for entry in refitted[space])


def test_every_score_is_registered_once_with_what_fits_and_computes_it():
    assert SCORES == ("paper", "encoder_mahalanobis", "encoder_knn", "discriminator_mahalanobis", "discriminator_knn")
    assert not REGISTRY["paper"].fitted
    assert [(REGISTRY[name].space, REGISTRY[name].distance) for name in FEATURE_SCORES] == [
        ("encoder", "mahalanobis"), ("encoder", "knn"), ("discriminator", "mahalanobis"), ("discriminator", "knn")]
    assert set(DISTANCE_OF) == set(DISTANCES) and DEFAULT_SCORE in FEATURE_SCORES


def test_calibration_clips_fit_the_feature_scores_on_held_out_clips_only():
    opt = parse_opts([*TINY, "--synthetic_train_clips", "6"])
    train, test = load_datasets(data_settings(opt))
    kept, held_out = hold_out_last(train, 2, "--calibration_clips")
    assert kept.names == train.names[:4] and held_out.names == train.names[4:]
    with pytest.raises(UserError, match="--calibration_clips 6 leaves no training clip"):
        hold_out_last(train, 6, "--calibration_clips")
    torch.manual_seed(0)
    model, cpu = GRLNet(network_length(opt)), torch.device("cpu")
    on_held_out = fit_normal_windows(model, held_out, scoring_settings(opt), cpu)
    windows, _ = held_out.windows(opt.segment_length, opt.segment_hop)
    assert on_held_out["encoder"]["reference"].shape == (len(windows), 2048)
    assert on_held_out["discriminator"]["reference"].shape == (len(windows), 1024)
    assert not torch.equal(on_held_out["encoder"]["mean"], fit_normal_windows(model, kept, scoring_settings(opt), cpu)["encoder"]["mean"])


def test_a_cpu_scores_in_batches_of_16_windows_whatever_the_training_batch(monkeypatch):
    """A GPU scores 8 training batches at once; a CPU, where larger batches were slower, 16 windows."""
    opt = parse_opts([*TINY, "--synthetic_train_clips", "20", "--batch_size", "32"])
    assert scoring_batch_size(scoring_settings(opt), torch.device("cuda")) == 256
    train, _ = load_datasets(data_settings(opt))
    torch.manual_seed(0)
    model = GRLNet(network_length(opt)).eval()
    encode, sizes = model.regional.encode, []
    monkeypatch.setattr(model.regional, "encode", lambda x: sizes.append(len(x)) or encode(x))
    scorer = FeatureScorer(fit_normal_windows(model, train, scoring_settings(opt), torch.device("cpu")))
    assert sizes == [16, 16, 8]  # 20 clips of 512 samples: 40 windows of 256
    sizes.clear()
    score_clips(model, train, scoring_settings(opt), torch.device("cpu"), scorer=scorer)
    assert sizes == [16, 16, 8]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    trained = run_script("train.py", *TINY, "--output_dir", str(folder))
    return folder, trained


def read_rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_every_score_is_logged_stored_and_reproduced_by_test_py(run, tmp_path):
    folder, trained = run
    assert f"score: {DEFAULT_SCORE} (--score)" in trained.stdout
    rows = read_rows(folder / "scores.csv")
    assert list(rows[0]) == ["file", "label", "d_real", "d_regional", "d_local", *SCORES, "score", "score_name"]
    assert all(row["score"] == row[DEFAULT_SCORE] and row["score_name"] == DEFAULT_SCORE for row in rows)
    metrics = read_rows(folder / "metrics.csv")[-1]
    labels = [int(row["label"]) for row in rows]
    for name in SCORES:
        assert float(metrics[f"auc_{name}"]) == pytest.approx(roc_auc_score(labels, [float(r[name]) for r in rows]))
    state = load_file(folder / "checkpoints" / "last.pt")
    assert set(state["feature_models"]) == {"encoder", "discriminator"}
    run_script("test.py", "--checkpoint", str(folder / "checkpoints" / "last.pt"), "--output_dir",
               str(tmp_path / "again"), "--quiet")
    assert (tmp_path / "again" / "scores.csv").read_text() == (folder / "scores.csv").read_text()


def test_input_decisions_use_the_chosen_scores_stored_threshold(run, tmp_path):
    folder, _ = run
    checkpoint = folder / "checkpoints" / "last.pt"
    threshold = load_file(checkpoint)["metrics"][-1]["threshold"]
    clips = tmp_path / "clips"
    clips.mkdir()
    for i, signal in enumerate(noise_windows(3, 512, 7, tone=0.3 * np.arange(3)[:, None])):
        np.savetxt(clips / f"{i}.csv", signal)
    out = tmp_path / "decided.csv"
    main.test(parse_test_args(["--checkpoint", str(checkpoint), "--input", str(clips), "--output", str(out),
                               "--output_dir", str(tmp_path / "log"), "--quiet"]))
    rows = read_rows(out)
    assert [row["decision"] for row in rows] == [
        "ABNORMAL" if float(row[DEFAULT_SCORE]) >= threshold else "normal" for row in rows]
    with pytest.raises(UserError, match="no decision threshold for --score paper"):
        main.test(parse_test_args(["--checkpoint", str(checkpoint), "--input", str(clips), "--score", "paper",
                                   "--output", str(tmp_path / "other.csv"), "--output_dir", str(tmp_path / "log2"),
                                   "--quiet"]))


def test_another_stored_score_ranks_a_labelled_test_set(run, tmp_path):
    folder, _ = run
    metrics = main.test(parse_test_args(["--checkpoint", str(folder / "checkpoints" / "last.pt"), "--score",
                                         "discriminator_knn", "--output_dir", str(tmp_path), "--quiet"]))
    rows = read_rows(tmp_path / "scores.csv")
    assert all(row["score"] == row["discriminator_knn"] for row in rows)
    assert metrics["auc"] == pytest.approx(metrics["auc_discriminator_knn"])


def test_the_release_files_score_with_the_paper_score_only():
    with pytest.raises(UserError, match="the release's files hold no statistics of normal windows"):
        main.restore(parse_test_args(["--model_dir", "models", "--score", "encoder_knn"]))
    assert set(FEATURE_SCORES) < set(SCORES)

"""Figures: drawn from a run folder's files alone, the EER point agrees with metrics, the CLI's errors."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from conftest import run_script

from data import ClipSet
from data.console import UserError
from experiments import redraw
from grlnet import plots, results
from grlnet.cli import run_cli
from grlnet.metrics import equal_error_rate
from network import GRLNet

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURE_NAMES = ("training_curves.png", "roc.png", "score_histograms.png", "confusion_matrix.png",
                "reconstructions.png")


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_metrics(folder: Path, epochs: int = 3) -> None:
    """A metrics.csv with the columns train.py writes (a subset of them is enough to draw)."""
    write_csv(folder / "metrics.csv", [
        {"epoch": e, "loss_d": 1.4 - 0.1 * e, "loss_g": 0.9 + 0.05 * e, "loss_rec": 0.1 / (e + 1),
         "d_real": 0.3, "d_regional": 0.6 + 0.05 * e, "d_local": 0.7, "grad_d": 2.0 + e,
         "grad_regional": 0.0 if e == 2 else 30.0, "grad_local": 20.0, "auc": 0.5 + 0.1 * e,
         "pauc": 0.5 + 0.05 * e, "eer": 0.4, "threshold": 0.8, "seconds": 1.0}
        for e in range(epochs)])


def write_scores(folder: Path, labelled: bool = True) -> np.ndarray:
    """A scores.csv of 24 clips (labels 0, 1 and the release's 2, 3); returns the binary labels."""
    rng = np.random.default_rng(0)
    labels = np.array([0] * 12 + [1, 2, 3] * 4)
    scores = rng.normal(0.8, 0.1, len(labels)) + 0.15 * (labels > 0)
    write_csv(folder / "scores.csv", [
        {"file": f"clip_{i}.wav", "label": int(y) if labelled else "", "d_real": 0.3, "d_regional": 0.5,
         "d_local": 0.5, "score": s} for i, (y, s) in enumerate(zip(labels, scores, strict=True))])
    return (labels > 0).astype(np.int64)


def write_examples(folder: Path, length: int = 256) -> None:
    t = np.arange(length) / 16000
    arrays = {f"{signal}_{kind}": np.sin(2 * np.pi * (440 + 100 * i) * t).astype(np.float32)
              for i, (signal, kind) in enumerate((s, k) for k in ("normal", "abnormal")
                                                 for s in ("input", "regional", "local"))}
    (folder / "figures").mkdir(exist_ok=True)
    np.savez(folder / "figures" / "examples.npz", sample_rate=16000, **arrays)


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_redraw_draws_every_figure(tmp_path):
    write_metrics(tmp_path)
    write_scores(tmp_path)
    write_examples(tmp_path)
    written = plots.redraw(tmp_path)
    assert [p.name for p in written] == list(FIGURE_NAMES)
    for name in FIGURE_NAMES:
        assert_png(tmp_path / "figures" / name)


def test_redraw_draws_only_what_it_has_inputs_for(tmp_path):
    write_metrics(tmp_path, epochs=1)
    write_scores(tmp_path, labelled=False)
    assert plots.redraw(tmp_path) == [tmp_path / "figures" / "training_curves.png"]


def test_training_curves_add_a_panel_for_the_term_aucs_where_metrics_have_them(tmp_path):
    """Losses, gradient norms (a frozen generator's 0 left out of the log scale), D's outputs and AUC draw
    four panels; with each score term's AUC, five."""
    write_metrics(tmp_path)
    plots.plot_training_curves(tmp_path / "metrics.csv", tmp_path / "without.png")
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    for row in rows:
        row.update(auc_d_real=0.9, auc_d_regional=0.2, auc_d_local=0.5)
    write_csv(tmp_path / "metrics.csv", rows)
    plots.plot_training_curves(tmp_path / "metrics.csv", tmp_path / "with.png")
    heights = [plt.imread(tmp_path / name).shape[0] for name in ("without.png", "with.png")]
    assert 1.15 < heights[1] / heights[0] < 1.35  # five panels of equal height against four (tight crop)


def test_roc_marks_the_metrics_eer_point(tmp_path):
    labels = write_scores(tmp_path)
    fpr, tpr = plots.plot_roc(tmp_path / "scores.csv", tmp_path / "roc.png")
    scores = results.read_scores(tmp_path / "scores.csv")[1]
    eer, _, fpr_at_eer = equal_error_rate(labels, scores)
    assert fpr == pytest.approx(fpr_at_eer)
    assert (fpr + (1 - tpr)) / 2 == pytest.approx(eer)
    assert_png(tmp_path / "roc.png")


def test_cli_on_an_empty_folder_exits_2_naming_it(tmp_path):
    result = run_script("-m", "experiments.redraw", str(tmp_path), check=False, timeout=60)
    assert result.returncode == 2
    assert result.stdout.startswith("error: ") and str(tmp_path) in result.stdout
    assert "Traceback" not in result.stderr


def test_cli_on_a_missing_folder_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(redraw.print_redrawn, lambda: redraw.parse_args([str(missing)]))
    assert exit_info.value.code == 2
    assert capsys.readouterr().out == f"error: {missing}: run folder not found\n"


def test_redraw_rejects_a_folder_without_inputs(tmp_path):
    write_scores(tmp_path, labelled=False)
    with pytest.raises(UserError, match="nothing to draw"):
        plots.redraw(tmp_path)


def test_relative_error_of_a_reconstruction_by_hand():
    reference = np.array([3.0, 4.0])  # norm 5
    assert plots.relative_error(reference, reference) == 0
    assert plots.relative_error(reference, np.zeros(2)) == 1  # silence
    assert plots.relative_error(reference, np.array([6.0, 8.0])) == pytest.approx(1.0)
    assert plots.relative_error(reference, np.array([3.0, -1.0])) == pytest.approx(1.0)  # |(0, -5)| / 5


def test_axes_are_in_samples_where_the_sample_rate_is_unknown(tmp_path):
    assert plots.axis_units(8000.0) == (8000.0, "time (s)", "frequency (Hz)")
    assert plots.axis_units(0.0) == (1.0, "time (samples)", "frequency (cycles per sample)")
    clips = ClipSet(["normal", "abnormal"], np.random.default_rng(2).normal(size=(2, 64)).astype(np.float32),
                    np.array([0, 1]), sample_rate=None)  # CSV data
    results.save_reconstruction_examples(GRLNet(64), clips, 0, 0, torch.device("cpu"),
                                         tmp_path / "figures" / "examples.npz")
    with np.load(tmp_path / "figures" / "examples.npz") as stored:
        assert float(stored["sample_rate"]) == 0
    assert plots.redraw(tmp_path) == [tmp_path / "figures" / "reconstructions.png"]


def test_saved_examples_are_first_windows_and_redraw(tmp_path):
    torch.manual_seed(0)
    signals = np.random.default_rng(1).normal(size=(4, 128)).astype(np.float32)
    clips = ClipSet([f"c{i}" for i in range(4)], signals, np.array([2, 0, 1, 0]), sample_rate=8000)
    model = GRLNet(64).train()
    examples = tmp_path / "figures" / "examples.npz"
    results.save_reconstruction_examples(model, clips, 64, 64, torch.device("cpu"), examples)
    assert model.training
    with torch.no_grad():
        expected = model.eval().local(torch.from_numpy(signals[[1], :64]).unsqueeze(1))[0, 0].numpy()
    with np.load(examples) as stored:
        np.testing.assert_array_equal(stored["input_normal"], signals[1, :64])
        np.testing.assert_array_equal(stored["input_abnormal"], signals[0, :64])
        np.testing.assert_allclose(stored["local_normal"], expected, atol=1e-6)  # eval mode, no noise
        assert stored["regional_abnormal"].shape == (64,)
        assert float(stored["sample_rate"]) == 8000
    assert plots.redraw(tmp_path) == [tmp_path / "figures" / "reconstructions.png"]
    assert_png(tmp_path / "figures" / "reconstructions.png")


def test_the_histograms_name_the_score_the_run_decided_with(tmp_path):
    """scores.csv names the score in its ``score`` column, and that name is read back, never inferred from the
    values: here the paper's column equals the chosen one, but the file says encoder_knn."""
    write_scores(tmp_path)
    assert results.chosen_score(tmp_path / "scores.csv") is None  # a file that names no score
    assert plots.score_axis_label(None) == "anomaly score  (no unit)"
    clips = ClipSet(["a.wav", "b.wav"], np.zeros((2, 8), np.float32), np.array([0, 1]))
    same = np.array([0.25, 0.75])
    for chosen in ("paper", "encoder_knn"):
        results.write_scores_csv(clips, {"paper": same, "encoder_knn": same + 1, "score": same}, tmp_path / "s.csv",
                                 chosen)
        assert results.chosen_score(tmp_path / "s.csv") == chosen
    assert plots.score_axis_label("encoder_knn") == "anomaly score: encoder_knn  (no unit)"
    assert plots.score_axis_label("paper").startswith("anomaly score: the paper's, γ·(D(R(x)) + D(Lo(x)))")

"""Whole runs as a user starts them: train.py, then test.py on what it wrote."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, run_script, write_release_csv
from sklearn.metrics import roc_auc_score

from grlnet.checkpoint import RELEASED_FILES


def final_auc(output: str) -> str:
    return [line for line in output.splitlines() if line.startswith("AUC ")][-1]


def read_rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_demo_train_then_test_reproduces_metrics(tmp_path):
    run = tmp_path / "run"
    trained = run_script("train.py", *TINY, "--epochs", "2", "--output_dir", str(run))
    lines = trained.stdout.splitlines()
    assert lines[0].startswith("data: embedded synthetic valve data set")
    assert lines[1].startswith("settings: length 512, windows of 256 every 256")
    for name in ("options.json", "train.log", "metrics.csv", "scores.csv", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert [row["epoch"] for row in read_rows(run / "metrics.csv")] == ["0", "1"]
    assert json.loads((run / "options.json").read_text())["mess_length"] == 512
    figures = sorted(p.name for p in (run / "figures").glob("*.png"))
    assert figures == ["confusion_matrix.png", "reconstructions.png", "roc.png", "score_histograms.png",
                       "training_curves.png"]
    for figure in figures:
        assert (run / "figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        (run / "figures" / figure).unlink()
    redrawn = run_script("-m", "experiments.redraw", str(run))
    assert sorted(Path(line).name for line in redrawn.stdout.split()) == figures
    assert all((run / "figures" / figure).stat().st_size > 0 for figure in figures)

    tested = run_script("test.py", "--checkpoint", str(run / "checkpoints" / "last.pt"),
                        "--output_dir", str(tmp_path / "test"), "--quiet")
    assert final_auc(tested.stdout) == final_auc(trained.stdout)
    assert (tmp_path / "test" / "scores.csv").read_text() == (run / "scores.csv").read_text()
    stored = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert stored["auc"] == pytest.approx(float(read_rows(run / "metrics.csv")[-1]["auc"]), abs=0)
    scores = read_rows(run / "scores.csv")  # each score term's AUC alone, recomputed with scikit-learn
    labels, last_epoch = [int(row["label"]) for row in scores], read_rows(run / "metrics.csv")[-1]
    for term in ("d_real", "d_regional", "d_local"):
        expected = roc_auc_score(labels, [float(row[term]) for row in scores])
        assert float(last_epoch[f"auc_{term}"]) == pytest.approx(expected, abs=1e-12)
        assert stored[f"auc_{term}"] == pytest.approx(expected, abs=1e-12)


def test_checkpoint_length_on_the_command_line_must_match(tmp_path):
    run_script("train.py", *TINY, "--output_dir", str(tmp_path))
    result = run_script("test.py", "--checkpoint", str(tmp_path / "checkpoints" / "last.pt"),
                        "--mess_length", "1024", check=False)
    assert result.returncode == 2
    assert "--mess_length 1024 differs from the checkpoint's 512" in result.stdout


def test_release_option_names_on_csv_layout_and_released_weights(tmp_path):
    rng = np.random.default_rng(0)
    train = write_release_csv(tmp_path / "Train", [rng.normal(0, 0.1, 400) for _ in range(4)], [0] * 4)
    test = write_release_csv(tmp_path / "Test", [rng.normal(0, 0.1 + 0.2 * (i % 2), 400) for i in range(6)],
                             [i % 2 for i in range(6)])
    release_args = ["--train_root", str(train[0]), "--train_label_path", str(train[1]),
                    "--test_root", str(test[0]), "--test_label_path", str(test[1]),
                    "--mess_length", "384", "--epochs", "1", "--batch_size", "2"]
    run = tmp_path / "run"
    trained = run_script("train.py", *release_args, "--output_dir", str(run), "--quiet",
                         "--train_batch_shuffle", "False")
    assert "data: release CSV layout; 4 training clips (normal), 6 test clips (3 abnormal)" in trained.stdout

    # The release's three state-dict files, as its test.py expects them in a folder.
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for attribute, name in RELEASED_FILES.items():
        torch.save(state["models"][attribute], tmp_path / name)
    tested = run_script("test.py", "--model_dir", str(tmp_path), "--test_root", str(test[0]),
                        "--test_label_path", str(test[1]), "--mess_length", "384",
                        "--output_dir", str(tmp_path / "test"), "--quiet")
    assert final_auc(tested.stdout) == final_auc(trained.stdout)
    rows = read_rows(tmp_path / "test" / "scores.csv")
    assert [r["label"] for r in rows] == ["0", "1", "0", "1", "0", "1"]
    # the release's files hold no statistics of normal windows: the paper's score alone
    assert list(rows[0]) == ["file", "label", "d_real", "d_regional", "d_local", "paper", "score", "score_name"]
    assert all(row["score"] == row["paper"] for row in rows)


def test_real_mimii_end_to_end(shared_data, tmp_path):
    result = run_script("train.py", "--data_root", str(shared_data / "mimii_fan_id02"),
                        "--train_normal_files", "5", "--mess_length", "4096", "--segment_length", "1024",
                        "--segment_hop", "1024", "--epochs", "1", "--quiet", "--output_dir", str(tmp_path))
    assert "data: WAV recordings; 5 training clips (normal), 15 test clips (10 abnormal)" in result.stdout
    rows = read_rows(tmp_path / "scores.csv")  # the AUC recomputed by scikit-learn, labels from the folder names
    labels = [int(Path(row["file"]).parent.name == "abnormal") for row in rows]
    assert len(rows) == 15 and sum(labels) == 10 and labels == [int(row["label"]) for row in rows]
    expected = roc_auc_score(labels, [float(row["score"]) for row in rows])
    assert float(read_rows(tmp_path / "metrics.csv")[-1]["auc"]) == pytest.approx(expected, abs=1e-12)
    assert float(final_auc(result.stdout).split()[1]) == pytest.approx(expected, abs=5e-5 + 1e-12)


def test_released_weights_in_models_default_to_the_release_length(tmp_path):
    """models/README.md's command, run in a folder whose models/ holds weights in the release's file names."""
    from network import GRLNet

    readme = (REPO / "models" / "README.md").read_text()
    assert "python test.py --model_dir models/" in readme and all(name in readme for name in RELEASED_FILES.values())
    (tmp_path / "models").mkdir()
    model = GRLNet(233472)
    for attribute, name in RELEASED_FILES.items():
        torch.save(getattr(model, attribute).state_dict(), tmp_path / "models" / name)
    np.savetxt(tmp_path / "new.csv", np.random.default_rng(0).normal(0, 0.1, 1000))
    test_py = str(REPO / "test.py")
    scored = run_script(test_py, "--model_dir", "models/", "--input", "new.csv", "--threshold", "0.5",
                        "--output_dir", "out", "--quiet", cwd=tmp_path)
    assert "new.csv  score" in scored.stdout
    assert read_rows(tmp_path / "out" / "scores.csv")[0]["file"] == "new.csv"
    short = run_script(test_py, "--model_dir", "models/", "--input", "new.csv", "--threshold", "0.5",
                       "--mess_length", "1000", check=False, cwd=tmp_path)
    assert short.returncode == 2 and "built for signal length 233472, but this run uses 1000" in short.stdout

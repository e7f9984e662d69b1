"""Two processes with torchrun and gloo on CPU: training runs, evaluation covers every clip once,
and its metrics equal a single process's scoring of the same weights."""
import csv

import pytest
from conftest import TINY, run_script

from grlnet.checkpoint import load_file


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_two_process_training_and_gathered_evaluation(tmp_path):
    run = tmp_path / "ddp"
    trained = run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         "train.py", *TINY, "--synthetic_test_clips", "9", "--epochs", "2",
                         "--output_dir", str(run))
    assert "2 processes (batch 2 each)" in trained.stdout
    assert trained.stdout.count("epoch 2/2") == 1  # rank 0 alone logs
    ddp_scores = _rows(run / "scores.csv")
    assert len(ddp_scores) == 9 and len({r["file"] for r in ddp_scores}) == 9

    single = run_script("test.py", "--checkpoint", str(run / "checkpoints" / "last.pt"),
                        "--output_dir", str(tmp_path / "single"), "--quiet")
    single_scores = _rows(tmp_path / "single" / "scores.csv")
    assert [r["file"] for r in single_scores] == [r["file"] for r in ddp_scores]
    for a, b in zip(ddp_scores, single_scores, strict=True):
        assert float(a["score"]) == pytest.approx(float(b["score"]), abs=1e-6)
    auc = [line for line in trained.stdout.splitlines() if line.startswith("AUC ")][-1]
    assert auc in single.stdout.splitlines()


def test_two_process_run_resumes_from_its_end_of_epoch_checkpoint(tmp_path):
    run = tmp_path / "ddp"
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py", *TINY,
                "--output_dir", str(run))
    run_script(*torchrun)
    state = load_file(run / "checkpoints" / "last.pt")
    assert (state["world_size"], state["epoch"], state["step"]) == (2, 1, 0)
    resumed = run_script(*torchrun, "--epochs", "2", "--resume")
    assert resumed.stdout.count("resumed from") == 1 and "epoch 2/2" in resumed.stdout  # rank 0 logs
    assert [row["epoch"] for row in _rows(run / "metrics.csv")] == ["0", "1"]


def test_released_update_is_refused_over_several_processes(tmp_path):
    result = run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "train.py", *TINY, "--update", "released", "--output_dir", str(tmp_path),
                        check=False)
    assert result.returncode != 0
    assert "--update released runs in one process only" in result.stdout

"""Training on normal recordings alone (no labelled test set): held-out clips set the decision
threshold, and test.py --input uses it."""
import csv
import json

import numpy as np
import pytest
from conftest import TINY, run_script, tone, write_wav

from data import ClipSet, hold_out_for_threshold
from data.console import UserError
from grlnet.metrics import held_out_threshold
from main import test as score_checkpoint
from main import train
from opts import parse_opts, parse_test_args


def _rows(path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _clips(count: int) -> ClipSet:
    return ClipSet([f"{i:02d}.wav" for i in range(count)], np.zeros((count, 8), np.float32), np.zeros(count))


def test_threshold_is_the_quantile_of_the_held_out_scores():
    m = held_out_threshold(np.array([0.1, 0.4, 0.2, 0.3]), 0.9)
    assert m["threshold"] == pytest.approx(0.37)  # sorted 0.1..0.4: position 0.9 * 3 = 2.7, 0.3 + 0.7 * 0.1
    assert (m["held_out_mean"], m["held_out_max"]) == pytest.approx((0.25, 0.4))
    with pytest.raises(UserError, match="non-finite scores"):
        held_out_threshold(np.array([0.1, np.nan]), 0.9)


@pytest.mark.parametrize("count, held_out", [(30, 3), (29, 2), (6, 2)])
def test_default_count_is_a_tenth_of_the_clips_at_least_two(count, held_out):
    kept, threshold_set = hold_out_for_threshold(_clips(count), parse_opts(["--train_root", "mine"]).threshold_clips)
    assert held_out == len(threshold_set)
    assert threshold_set.names == [f"{i:02d}.wav" for i in range(count - held_out, count)]
    assert len(kept) == count - held_out


def test_too_few_clips_and_contradictory_options_are_refused():
    with pytest.raises(UserError, match="2 normal training clips and no labelled test set: too few"):
        hold_out_for_threshold(_clips(2), None)
    with pytest.raises(UserError, match="--threshold_clips 4 leaves no training clip"):
        hold_out_for_threshold(_clips(4), 4)
    with pytest.raises(UserError, match="--threshold_clips sets the decision threshold of a run without"):
        parse_opts(["--train_root", "mine", "--test_root", "theirs", "--threshold_clips", "2"])
    with pytest.raises(UserError, match="--threshold_clips sets the decision threshold of a run without"):
        parse_opts([*TINY, "--threshold_clips", "2"])  # the embedded data have a labelled test set
    with pytest.raises(UserError, match="--save_best picks a checkpoint by test AUC, and this run has no"):
        parse_opts(["--train_root", "mine", "--save_best"])


def test_train_on_normal_recordings_then_score_new_ones(tmp_path, capsys):
    recordings = tmp_path / "mine"
    for i in range(6):
        write_wav(recordings / f"pump_{i:02d}.wav", tone(0.05, seed=i))
    run = tmp_path / "run"
    train(parse_opts(["--train_root", str(recordings), "--mess_length", "768", "--segment_length", "256",
                      "--segment_hop", "256", "--epochs", "2", "--quiet", "--threshold_clips", "3",
                      "--threshold_quantile", "0.5", "--output_dir", str(run)]))
    assert "3 training clips (normal), no labelled test set: the last 3 normal clips" in capsys.readouterr().out

    held_out = _rows(run / "threshold_scores.csv")
    assert [row["file"] for row in held_out] == [str(recordings / f"pump_{i:02d}.wav") for i in (3, 4, 5)]
    assert {row["label"] for row in held_out} == {"0"}
    scores = sorted(float(row["score"]) for row in held_out)
    epochs = _rows(run / "metrics.csv")
    assert len(epochs) == 2 and "auc" not in epochs[0]
    assert float(epochs[-1]["threshold"]) == pytest.approx(scores[1], rel=1e-12)  # the median of three
    assert float(epochs[-1]["held_out_max"]) == pytest.approx(scores[2], rel=1e-12)
    assert json.loads((run / "options.json").read_text())["threshold_clips"] == 3
    assert (run / "figures" / "training_curves.png").stat().st_size > 0
    assert not (run / "scores.csv").exists()

    checkpoint = str(run / "checkpoints" / "last.pt")
    scored = run_script("test.py", "--checkpoint", checkpoint, "--input", str(recordings),
                        "--output", str(tmp_path / "new.csv"), "--output_dir", str(tmp_path / "score"), "--quiet")
    assert "the 0.5-quantile of the scores of its 3 held-out normal clips" in scored.stdout
    rows = _rows(tmp_path / "new.csv")
    new = {row["file"]: float(row["score"]) for row in rows}
    for row in held_out:
        assert new[row["file"]] == pytest.approx(float(row["score"]), rel=1e-9)
    threshold = float(epochs[-1]["threshold"])
    flagged = {line.split()[0] for line in scored.stdout.splitlines() if line.endswith("ABNORMAL")}
    assert flagged == {name for name, score in new.items() if score >= threshold}
    assert flagged == {row["file"] for row in rows if row["decision"] == "ABNORMAL"}
    assert {row["decision"] for row in rows} <= {"ABNORMAL", "normal"}

    with pytest.raises(UserError, match=r"no test data: give --test_root \(or --data_root\), or score unlabelled "
                       "recordings with --input"):
        score_checkpoint(parse_test_args(["--checkpoint", checkpoint, "--output_dir", str(tmp_path / "s2")]))

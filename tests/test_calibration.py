"""The calibrated score (--calibration_clips): held-out split, statistics, score, and test.py."""
import csv

import numpy as np
import pytest
import torch

from conftest import TINY, run_script
from data import hold_out_last, load_datasets
from errors import UserError
from network import GRLNet
from opts import network_length, parse_opts
from scoring import calibration_statistics, outputs_per_window, score_clips, clip_outputs


def tiny_sets():
    opt = parse_opts([*TINY, "--synthetic_train_clips", "6"])
    train, test = load_datasets(opt)
    return opt, train, test


def test_split_holds_out_the_last_clips_and_refuses_an_empty_training_set():
    _, train, _ = tiny_sets()
    kept, held_out = hold_out_last(train, 2, "--calibration_clips")
    assert kept.names == train.names[:4] and held_out.names == train.names[4:]
    np.testing.assert_array_equal(held_out.signals, train.signals[4:])
    with pytest.raises(UserError, match="--calibration_clips 6 leaves no training clip"):
        hold_out_last(train, 6, "--calibration_clips")


def test_calibrated_score_is_the_blend_of_absolute_z_scores():
    opt, train, test = tiny_sets()
    _, held_out = hold_out_last(train, 3, "--calibration_clips")
    torch.manual_seed(0)
    model, cpu = GRLNet(network_length(opt)), torch.device("cpu")
    statistics = calibration_statistics(model, held_out, opt, cpu)

    windows, _ = outputs_per_window(model, held_out, opt, cpu)
    by_hand = windows.numpy()  # [windows, 3]: D(x), D(R(x)), D(Lo(x))
    np.testing.assert_allclose(statistics[0].numpy(), by_hand.mean(0), rtol=1e-12)
    np.testing.assert_allclose(statistics[1].numpy(), np.maximum(by_hand.std(0), 1e-6), rtol=1e-12)

    scores = score_clips(model, test, opt, cpu, calibration=statistics)
    per_clip = clip_outputs(model, test, opt, cpu).numpy()
    z = np.abs((per_clip - by_hand.mean(0)) / np.maximum(by_hand.std(0), 1e-6))
    gamma = opt.comprehensive_output_factor
    np.testing.assert_allclose(scores["score"], gamma * (z[:, 1] + z[:, 2]) + (1 - gamma) * z[:, 0], rtol=1e-10)
    np.testing.assert_allclose(scores["d_real"], per_clip[:, 0], rtol=1e-12)  # the columns stay D's outputs


def test_calibrated_run_logs_its_split_and_test_py_reproduces_its_scores(tmp_path):
    run = tmp_path / "run"
    trained = run_script("train.py", *TINY, "--calibration_clips", "2", "--output_dir", str(run))
    assert "6 training clips (normal)" in trained.stdout  # 8 synthetic normal clips, 2 held out
    assert "distance from 2 held-out normal training clips" in trained.stdout
    tested = run_script("test.py", "--checkpoint", str(run / "checkpoints" / "last.pt"),
                        "--output_dir", str(tmp_path / "test"), "--quiet")
    assert (tmp_path / "test" / "scores.csv").read_text() == (run / "scores.csv").read_text()
    with (run / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    blended = [0.5 * (float(r["d_regional"]) + float(r["d_local"])) + 0.5 * float(r["d_real"]) for r in rows]
    assert not np.allclose([float(r["score"]) for r in rows], blended)  # not the paper's score
    assert tested.stdout.splitlines()[-1].startswith("AUC ")

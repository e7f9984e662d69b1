"""experiments/tools/: feature_controls.py (the log power spectrum of windows, per-clip means, its
command), feature_cost.py (what the feature scores add to an epoch) and choose_score.py (the rule)."""
import json
import re

import numpy as np
import pytest
import torch
from conftest import TINY, run_script

from data import ClipSet
from experiments.tools.choose_score import choose, seeds_per_set
from experiments.tools.feature_controls import LOG_FLOOR, clip_means, log_spectra, spectrum_aucs
from opts import parse_opts


def test_log_spectrum_of_a_cosine_window_is_its_power_in_one_bin():
    opt = parse_opts([*TINY])  # windows of 256 every 256 over 512 samples: two per clip
    t = np.arange(512)
    clips = ClipSet(["a"], np.cos(2 * np.pi * 8 * t / 256)[None].astype(np.float32), np.zeros(1, dtype=np.int64))
    spectra, clip_index = log_spectra(clips, opt)
    assert spectra.shape == (2, 129) and clip_index.tolist() == [0, 0]
    # an unnormalised FFT of a cosine of amplitude 1 over 256 samples: 128 in bin 8, (almost) nothing elsewhere
    np.testing.assert_allclose(spectra[:, 8].numpy(), np.log(128.0 ** 2 + LOG_FLOOR), rtol=1e-6)
    assert torch.all(spectra[:, 20] < np.log(1e-6))


def test_clip_means_average_each_clips_windows():
    np.testing.assert_allclose(clip_means(np.array([1.0, 3.0, 10.0]), torch.tensor([0, 0, 1]), 2), [2.0, 10.0])


def test_spectrum_distances_rank_a_tone_above_noise():
    opt = parse_opts([*TINY])
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, (12, 512)).astype(np.float32)
    tone = (0.3 * np.sin(2 * np.pi * np.arange(512) / 16)).astype(np.float32)
    train = ClipSet([f"n{i}" for i in range(8)], noise[:8], np.zeros(8, dtype=np.int64))
    test = ClipSet([f"t{i}" for i in range(4)], noise[8:] + np.array([[0], [0], [1], [1]], np.float32) * tone,
                   np.array([0, 0, 1, 1]))
    assert spectrum_aucs(train, test, opt) == {"log_spectrum_mahalanobis": 1.0, "log_spectrum_knn": 1.0}


def test_command_prints_a_row_per_seed_and_the_spectrum_line():
    result = run_script("-m", "experiments.tools.feature_controls", "--seeds", "0", "1", "--", *TINY)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| control | paper | encoder_mahalanobis |")
    assert [line.split("|")[1].strip() for line in lines[2:4]] == ["untrained networks, seed 0",
                                                                   "untrained networks, seed 1"]
    assert lines[-1].startswith("log power spectrum of each window, no network: log_spectrum_mahalanobis ")


def test_cost_adds_fitting_and_the_extra_scoring_time_to_an_epochs():
    lines = run_script("-m", "experiments.tools.feature_cost", "--", *TINY).stdout.splitlines()[-3:]
    numbers = [[float(n) for n in re.findall(r"(\d+\.\d) (?:s|%)", line)] for line in lines]
    (training, paper, epoch), (fitting, with_features), (added, percent) = numbers
    assert epoch == pytest.approx(training + paper, abs=0.151)  # three values rounded to 0.1
    assert added == pytest.approx(fitting + with_features - paper, abs=0.201)  # four
    # the printed seconds are rounded to 0.1 s: the percentage lies between the bounds they allow
    assert 100 * (added - 0.05) / (epoch + 0.05) - 0.05 <= percent <= 100 * (added + 0.05) / (epoch - 0.05) + 0.05


def write_results(path, task, per_score):
    """A results.json as reproduce.py writes it, with each score's AUC per seed for grlnet_standard."""
    method = {f"auc_{score}": {"per_seed": values} for score, values in per_score.items()}
    path.write_text(json.dumps({"tasks": {task: {"methods": {"grlnet_standard": method}}}}))
    return path


def test_the_rule_picks_the_best_worst_case_mean_with_no_seed_below_chance(tmp_path):
    a = write_results(tmp_path / "a.json", "a", {"paper": [1.0, 1.0], "encoder_mahalanobis": [0.9, 0.9],
                                                 "encoder_knn": [1.0, 1.0], "discriminator_mahalanobis": [0.8, 0.8],
                                                 "discriminator_knn": [1.0, 1.0]})
    b = write_results(tmp_path / "b.json", "b", {"paper": [0.9, 0.3], "encoder_mahalanobis": [0.8, 0.8],
                                                 "encoder_knn": [0.7, 0.9], "discriminator_mahalanobis": [0.8, 0.8],
                                                 "discriminator_knn": [0.6, 0.6]})
    chosen, qualifies, summary = choose(seeds_per_set([a, b]))
    # worst-case means: paper 0.6 (a seed at 0.3), encoder_mahalanobis 0.8, encoder_knn 0.8, D's 0.8 and 0.6:
    # three tie at 0.8 and the first of them in SCORES' order wins
    assert (chosen, qualifies) == ("encoder_mahalanobis", True)
    assert summary["paper"] == pytest.approx((0.6, 0.3)) and summary["encoder_knn"] == pytest.approx((0.8, 0.7))
    lines = run_script("-m", "experiments.tools.choose_score", str(a), str(b)).stdout.splitlines()
    assert lines[0] == "| score | a: mean AUC | b: mean AUC | worst-case mean | lowest seed |"
    assert "| paper | 1.0000 | 0.6000 | 0.6000 | 0.3000 |" in lines
    assert lines[-1] == "chosen: encoder_mahalanobis (no seed below 0.5)"


def test_the_rule_says_when_no_score_qualifies(tmp_path):
    low = {score: [0.4, 0.9] for score in ("paper", "encoder_mahalanobis", "encoder_knn",
                                           "discriminator_mahalanobis", "discriminator_knn")}
    low["encoder_knn"] = [0.45, 1.0]
    chosen, qualifies, _ = choose(seeds_per_set([write_results(tmp_path / "c.json", "c", low)]))
    assert (chosen, qualifies) == ("encoder_knn", False)

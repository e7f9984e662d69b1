"""experiments/tools/window_aggregate.py: the aggregates of a clip's window distances, the rule that picks
one, the facts about the highest normal clip, and the per-run files read back."""
import numpy as np
import pytest

from experiments.tools.window_aggregate import (
    CANDIDATES,
    RunWindows,
    apply_rule,
    interquartile_mean,
    level_db,
    load_run,
    outlier_facts,
    run_label,
    save_run,
)


def tiny_run() -> RunWindows:
    """Two normal clips (one with a single far window) and one anomalous clip, four windows each."""
    distances = np.array([1.0, 2.0, 3.0, 10.0, 2.0, 2.0, 2.0, 2.0, 5.0, 6.0, 7.0, 8.0])
    window_levels = np.array([1.0, 2.0, 3.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    return RunWindows(["n/a.wav", "n/b.wav", "x/c.wav"], np.array([0, 0, 1]), np.array([-14.0, -20.0, -19.0]),
                      np.repeat([0, 1, 2], 4), distances, window_levels, ["t/d.wav", "t/e.wav", "t/f.wav"],
                      np.array([-20.0, -22.0, -18.0]))


def test_interquartile_mean_keeps_the_values_between_the_quartiles():
    assert interquartile_mean(np.array([1.0, 2.0, 3.0, 4.0, 100.0])) == 3.0  # quartiles 2 and 4: 2, 3, 4
    assert interquartile_mean(np.array([1.0, 2.0, 3.0, 10.0])) == 2.5  # quartiles 1.75 and 4.75: 2, 3


def test_each_candidate_aggregates_each_clips_windows():
    run = tiny_run()
    expected = {"A mean": [4.0, 2.0, 6.5], "B median": [2.5, 2.0, 6.5], "C interquartile mean": [2.5, 2.0, 6.5]}
    for name, aggregate in CANDIDATES.items():
        np.testing.assert_allclose(run.clip_scores(aggregate), expected[name])


def test_level_of_a_full_scale_square_wave_is_0_db_and_of_a_tenth_of_it_minus_20():
    np.testing.assert_allclose(level_db(np.array([[1.0, -1.0, 1.0, -1.0], [0.1, -0.1, 0.1, -0.1]])), [0.0, -20.0],
                               atol=1e-9)


def test_outlier_facts_describe_the_highest_normal_clip():
    facts = outlier_facts(tiny_run())
    assert facts["clip"] == "a.wav" and facts["rank"] == 2 and facts["clips"] == 3
    assert (facts["median"], facts["max"], facts["windows"]) == (2.5, 10.0, 4)
    assert facts["above_anomalous"] == 1 and facts["anomalous_median"] == 6.5  # only the window at 10
    assert facts["other_normal_median"] == 2.0
    assert facts["level_db"] == 6.0 and facts["train_range_db"] == (-2.0, 2.0)
    assert facts["level_distance_correlation"] == pytest.approx(1.0)


def test_the_per_run_files_read_back_as_written(tmp_path):
    run = tiny_run()
    save_run(run, tmp_path / "mimii" / "seed0")
    back = load_run(tmp_path / "mimii" / "seed0")
    assert back.names == run.names and back.train_names == run.train_names
    for field in ("labels", "clip_levels", "clip_index", "distances", "window_levels", "train_levels"):
        np.testing.assert_array_equal(getattr(back, field), getattr(run, field))


def runs(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> dict:
    return {"A mean": a, "B median": b, "C interquartile mean": c}


def test_the_rule_adopts_the_best_pooled_pauc_among_those_that_pass():
    per_set = {
        # B: the best pAUC, but 0.02 of mean AUC lost on set one; C: 0.005 lost, pAUC gained
        "one": [runs((0.90, 0.60), (0.88, 0.90), (0.895, 0.70)), runs((0.90, 0.60), (0.88, 0.90), (0.895, 0.70))],
        "two": [runs((0.80, 0.50), (0.80, 0.90), (0.80, 0.50)), runs((0.80, 0.50), (0.80, 0.90), (0.80, 0.50))],
    }
    chosen, failures = apply_rule(per_set)
    assert chosen == "C interquartile mean"
    assert failures["B median"] == ["one: mean AUC more than 0.01 below A's"] and not failures["C interquartile mean"]


def test_the_rule_keeps_the_mean_when_the_others_lose_pauc_or_fall_below_chance():
    per_set = {"one": [runs((0.60, 0.50), (0.70, 0.45), (0.45, 0.60)), runs((0.60, 0.50), (0.70, 0.50), (0.80, 0.60))]}
    chosen, failures = apply_rule(per_set)
    assert chosen == "A mean"
    assert failures["B median"] == ["one: mean pAUC below A's"]
    assert failures["C interquartile mean"] == ["one: a run's AUC below 0.5 where A's is not"]


def test_a_rotated_split_is_named_by_its_split_folder(tmp_path):
    assert run_label(tmp_path / "split3" / "grlnet_standard" / "seed0") == "split3"
    assert run_label(tmp_path / "mimii_fan_id02" / "grlnet_standard" / "seed4") == "seed4"

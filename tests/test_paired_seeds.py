"""experiments/tools/paired_seeds.py: the paired comparison of two methods' per-seed AUCs that BENCHMARKS.md quotes."""
import json
import math

import pytest

from data.console import UserError
from experiments.tools.paired_seeds import paired_differences, seed_aucs


def write_results(path, method, aucs):
    runs = [{"seed": seed, "auc": auc} for seed, auc in aucs.items()]
    path.write_text(json.dumps({"tasks": {"demo": {"methods": {method: {"runs": runs}}}}}))
    return f"{path}:{method}"


def test_differences_pair_seeds_and_match_hand_computed_values(tmp_path):
    first = seed_aucs(write_results(tmp_path / "a.json", "fast", {0: 0.9, 1: 0.8, 2: 0.7}), "demo")
    second = seed_aucs(write_results(tmp_path / "b.json", "fp32", {2: 0.5, 0: 0.8, 1: 0.8, 5: 0.1}), "demo")
    result = paired_differences(first, second)  # differences 0.1, 0, 0.2 (seed 5 has no pair)
    t = 0.1 / (0.1 / math.sqrt(3))  # mean over the standard error: sqrt(3)
    p = 1 - t / math.sqrt(t * t + 2)  # the two-sided p of Student's t with 2 degrees of freedom
    assert result == pytest.approx({"seeds": 3, "mean": 0.1, "standard_error": 0.1 / math.sqrt(3),
                                    "mean_absolute": 0.1, "p": p})


def test_refusals_name_the_problem(tmp_path):
    source = write_results(tmp_path / "a.json", "fast", {0: 0.9})
    with pytest.raises(UserError, match="no method 'slow' in task 'demo' \\(methods: fast\\)"):
        seed_aucs(source.replace(":fast", ":slow"), "demo")
    with pytest.raises(UserError, match="file not found"):
        seed_aucs(f"{tmp_path / 'none.json'}:fast", "demo")
    with pytest.raises(UserError, match="share 1 seed"):
        paired_differences({0: 0.9}, {0: 0.8, 1: 0.7})

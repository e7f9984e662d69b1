"""Apply the rule that picks the default score (README.md, "Which score") to reproduce.py's results.

For each score, its final-epoch AUC per seed on each data set (results.json of the GRLNet method); the
default is the score with the highest worst-case mean over the data sets among those with no seed
below 0.5 on any of them, or, where none qualifies, the highest worst-case mean, reported as failing.
Ties go to the first in scores.SCORES (the paper's, then Mahalanobis before kNN, encoder before D).

    python -m experiments.tools.choose_score reproduction/mimii_fan_id02/results.json \
        reproduction/dcase2020_slider_id00/results.json
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data.console import UserError
from grlnet.scores import SCORES

METHOD = "grlnet_standard"  # the project's defaults
CHANCE = 0.5
TIE = 1e-9  # worst-case means closer than this are equal (sums of floats round differently)


def seeds_per_set(paths: Sequence[Path], method: str = METHOD) -> dict[str, dict[str, list[float]]]:
    """Each score's final-epoch AUC per seed, for each task of the results.json files: {score: {task: [...]}}."""
    aucs: dict[str, dict[str, list[float]]] = {score: {} for score in SCORES}
    for path in paths:
        results = json.loads(Path(path).read_text())
        for task, entry in results["tasks"].items():
            if method not in entry["methods"]:
                raise UserError(f"{path}: task {task} has no {method} runs")
            for score in SCORES:
                aucs[score][task] = entry["methods"][method][f"auc_{score}"]["per_seed"]
    return aucs


def choose(aucs: dict[str, dict[str, list[float]]]) -> tuple[str, bool, dict[str, tuple[float, float]]]:
    """The chosen score, whether it qualifies (no seed below 0.5), and each score's worst-case mean and
    lowest seed."""
    summary = {score: (min(float(np.mean(v)) for v in per_set.values()), min(min(v) for v in per_set.values()))
               for score, per_set in aucs.items()}
    qualifying = [score for score in SCORES if summary[score][1] >= CHANCE]
    candidates = qualifying or list(SCORES)
    best = max(summary[score][0] for score in candidates)
    chosen = next(score for score in candidates if summary[score][0] >= best - TIE)
    return chosen, bool(qualifying), summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="results.json files of reproduce.py")
    args = parser.parse_args(argv)
    aucs = seeds_per_set(args.results)
    chosen, qualifies, summary = choose(aucs)
    tasks = list(next(iter(aucs.values())))
    print("| score | " + " | ".join(f"{task}: mean AUC" for task in tasks) + " | worst-case mean | lowest seed |")
    print("|---" * (len(tasks) + 3) + "|")
    for score, (worst, lowest) in summary.items():
        means = " | ".join(f"{np.mean(aucs[score][task]):.4f}" for task in tasks)
        print(f"| {score} | {means} | {worst:.4f} | {lowest:.4f} |")
    verdict = "no seed below 0.5" if qualifies else "FAILS the condition: every score has a seed below 0.5"
    print(f"chosen: {chosen} ({verdict})")


if __name__ == "__main__":
    main()

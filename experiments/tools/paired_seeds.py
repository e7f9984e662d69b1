"""Compare two methods' final AUCs seed by seed, from reproduce.py's results.json files: the mean of the
paired differences, its standard error and a paired t-test (BENCHMARKS.md reads bf16 against fp32 so).

    python -m experiments.tools.paired_seeds A/results.json:grlnet_standard B/results.json:grlnet_fp32 [--task demo]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from data.console import UserError
from grlnet.cli import run_cli


def seed_aucs(source: str, task: str) -> dict[int, float]:
    """The final AUC of each seed's run of ``METHOD`` in ``task``, ``source`` being ``RESULTS_JSON:METHOD``."""
    path, _, method = source.rpartition(":")
    if not path:
        raise UserError(f"{source}: give RESULTS_JSON:METHOD, such as results.json:grlnet_standard")
    if not Path(path).is_file():
        raise UserError(f"{path}: file not found")
    try:
        tasks = json.loads(Path(path).read_text())["tasks"]
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{path}: not a results.json written by reproduce.py ({err})") from None
    if task not in tasks:
        raise UserError(f"{path}: no task {task!r} (tasks: {', '.join(tasks)})")
    methods = tasks[task]["methods"]
    if method not in methods:
        raise UserError(f"{path}: no method {method!r} in task {task!r} (methods: {', '.join(methods)})")
    return {run["seed"]: run["auc"] for run in methods[method]["runs"]}


def paired_differences(first: dict[int, float], second: dict[int, float]) -> dict[str, float]:
    """first - second over the seeds both hold: mean, standard error of the mean, mean |difference|,
    and the two-sided paired t-test's p."""
    seeds = sorted(first.keys() & second.keys())
    if len(seeds) < 2:
        raise UserError(f"the two methods share {len(seeds)} seed(s); a paired comparison needs at least 2")
    a, b = np.array([first[s] for s in seeds]), np.array([second[s] for s in seeds])
    differences = a - b
    return {"seeds": len(seeds), "mean": float(differences.mean()),
            "standard_error": float(differences.std(ddof=1) / np.sqrt(len(seeds))),
            "mean_absolute": float(np.abs(differences).mean()), "p": float(stats.ttest_rel(a, b).pvalue)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first", help="RESULTS_JSON:METHOD")
    p.add_argument("second", help="RESULTS_JSON:METHOD, subtracted from the first seed by seed")
    p.add_argument("--task", default="demo", help="the task (data set) of the results (default demo)")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    result = paired_differences(seed_aucs(args.first, args.task), seed_aucs(args.second, args.task))
    print(f"{result['seeds']} seeds: mean difference {result['mean']:+.4f}, standard error "
          f"{result['standard_error']:.4f}, mean |difference| {result['mean_absolute']:.4f}, "
          f"paired t-test p = {result['p']:.2f}")


if __name__ == "__main__":
    run_cli(main, parse_args)

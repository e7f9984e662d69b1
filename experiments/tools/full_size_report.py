"""Every score of reproduce.py's runs at the final epoch, with 95 % bootstrap intervals over test clips,
and each score's AUC per epoch, one figure per data set.

For each task (data split) of the results.json files: each score's AUC, pAUC and DCASE's official score
(their harmonic mean), mean ± std over the task's seeds, and the interval of the seed mean when the test
clips are resampled (normal and abnormal separately, metrics.clip_bootstrap_interval: AUC's for every
score, pAUC's and the official score's for the default and the baseline, whose pAUC costs a scikit-learn
call a resample); the baseline on the same split beside them. ``--pooled NAME`` adds a row over all tasks (e.g. the rotated splits of one
set, one seed each): mean ± std over every run, no interval (the runs test on different clips).

    python -m experiments.tools.full_size_report reproduction/dcase2020_slider_id00/results.json \
        --figures Image/ --prefix budget_
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.repro.runs import BASELINE
from grlnet.metrics import clip_bootstrap_interval, mean_auc, mean_official_score, mean_pauc
from grlnet.plots import styled_figure, whole_epoch_axis
from grlnet.results import read_columns
from grlnet.scores import PAPER_SCORE, SCORES

METHOD = "grlnet_standard"
DEFAULT_SCORE = "encoder_knn"
STATISTICS = {"AUC": mean_auc, "pAUC": mean_pauc, "official": mean_official_score}


def run_scores(runs: list[dict], column: str) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels [N] and one score column of each run [R, N], the runs' clips checked to be the same."""
    tables = [read_columns(Path(run["output_dir"]) / "scores.csv") for run in runs]
    files = tables[0]["file"].tolist()
    for run, table in zip(runs, tables, strict=True):
        if table["file"].tolist() != files:
            raise ValueError(f"{run['output_dir']}: tests other clips than {runs[0]['output_dir']}")
    return (tables[0]["label"] > 0).astype(np.int64), np.stack([t[column] for t in tables])


def score_rows(task: dict, intervals: bool) -> list[dict]:
    """One row per score of GRLNet (and the baseline): per-seed values and, with ``intervals``, the
    bootstrap interval of each statistic's seed mean."""
    columns = [(METHOD, name) for name in (PAPER_SCORE, *(s for s in SCORES if s != PAPER_SCORE))]
    columns += [(BASELINE, "score")] if BASELINE in task["methods"] else []
    rows = []
    for method, column in columns:
        runs = task["methods"][method]["runs"]
        labels, scores = run_scores(runs, column)
        row = {"name": "DCASE 2020 autoencoder" if method == BASELINE else column, "seeds": len(runs)}
        for stat_name, statistic in STATISTICS.items():
            row[stat_name] = [statistic(labels, scores[i:i + 1]) for i in range(len(runs))]
            if intervals and (stat_name == "AUC" or column in (DEFAULT_SCORE, "score")):
                row[f"{stat_name} interval"] = clip_bootstrap_interval(labels, scores, statistic)
        rows.append(row)
    return rows


def cell(values: list[float], interval: tuple[float, float] | None) -> str:
    text = f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"
    return text + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def markdown(name: str, rows: list[dict]) -> list[str]:
    """A task's table: each score's AUC, pAUC and official score, and AUC per seed."""
    lines = [f"### {name}", "", ("| score | AUC [95 % interval] | pAUC [interval] | official score [interval] | "
             "AUC per seed |"), "|---|---|---|---|---|"]
    for row in rows:
        cells = [cell(row[s], row.get(f"{s} interval")) for s in STATISTICS]
        bold = "**" if row["name"] == DEFAULT_SCORE else ""
        lines.append(f"| {bold}{row['name']}{bold} | " + " | ".join(cells) + " | "
                     + ", ".join(f"{v:.2f}" for v in row["AUC"]) + " |")
    return lines + [""]


def pooled_rows(per_task: list[list[dict]]) -> list[dict]:
    """Each score's values over every run of every task (no interval: the tasks test on other clips)."""
    return [{"name": rows[0]["name"], **{s: [v for task in per_task for v in task[i][s]] for s in STATISTICS}}
            for i, rows in enumerate(zip(*per_task, strict=True))]


def plot_epochs(name: str, task: dict, path: Path) -> None:
    """Each score's AUC after every epoch, one line per seed; the last point is the full evaluation,
    earlier ones are the per-epoch subset when the run used one (hollow markers)."""
    runs = task["methods"][METHOD]["runs"]
    with styled_figure(path, 1, len(SCORES), squeeze=False, figsize=(3.2 * len(SCORES), 3.0)) as (fig, axes):
        for ax, score in zip(axes[0], SCORES, strict=True):
            for run in runs:
                metrics = read_columns(Path(run["output_dir"]) / "metrics.csv")
                aucs, epochs = metrics[f"auc_{score}"], np.arange(1, len(metrics["epoch"]) + 1)
                subset = metrics.get("evaluated_windows_per_clip", np.zeros(len(epochs))) > 0
                line, = ax.plot(epochs, aucs, label=f"seed {run['seed']}")
                ax.plot(epochs[subset], aucs[subset], "o", mfc="none", color=line.get_color())
                ax.plot(epochs[~subset], aucs[~subset], "o", color=line.get_color())
            ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
            ax.set(title=score, xlabel="epoch", ylabel="test AUC", ylim=(-0.02, 1.02))
            whole_epoch_axis(ax, len(epochs))
        axes[0][0].legend(fontsize="small")
        fig.suptitle(name)
        fig.tight_layout()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="results.json files of reproduce.py")
    parser.add_argument("--pooled", default=None, help="add a row over every task's runs, under this name")
    parser.add_argument("--figures", type=Path, default=None, help="folder for the AUC-per-epoch figures")
    parser.add_argument("--prefix", default="", help="file-name prefix of the figures")
    args = parser.parse_args(argv)
    lines, per_task = [], []
    for path in args.results:
        for name, task in json.loads(path.read_text())["tasks"].items():
            rows = score_rows(task, intervals=True)
            per_task.append(rows)
            lines += markdown(name, rows)
            if args.figures:
                plot_epochs(name, task, args.figures / f"{args.prefix}{name}_auc_per_epoch.png")
    if args.pooled:
        lines += markdown(f"{args.pooled}: every run (mean ± std over runs)", pooled_rows(per_task))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""The report of a protocol: results.md (tables, options, wall times), results.tex (booktabs tables for
a paper) and the figures (AUC per epoch, score distributions)."""
from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from experiments.repro.runs import BASELINE, GRLNET_METHODS, GROUP_SUMMARIES, LABELS, SCORE_AUCS, TERM_AUCS
from grlnet.plots import draw_class_histograms, styled_figure, whole_epoch_axis
from grlnet.results import read_scores
from opts import group_options

# The options of a run's list that the baseline reads (experiments/baselines/dcase_autoencoder.run_baseline).
BASELINE_OPTIONS = {f"--{name}" for name in (*group_options("paths", "clips", "signal"), "seed", "device",
                                              "output_dir")}
GROUP_INTRO = ("DCASE's summaries over the machine ids or sections of the test clips' names, mean ± std over "
               "seeds (each run's machine_ids.csv or sections.csv has every group):")
SCORES_INTRO = ("Every score of GRLNet (--score picks the one in the table above; each is computed in every run): "
                "final-epoch AUC, mean ± std and per seed, beside the baseline on the same split:")
TERMS_INTRO = ("Diagnostic, not a result: the final-epoch AUC of each term of GRLNet's score alone, mean ± std "
               "over seeds (below 0.5: that term ranks the clips the wrong way round; nothing is chosen by it):")


def options_shown(method: str, argv: list[str]) -> list[str]:
    """A run's option list as results.md shows it: for the baseline only the options it reads."""
    if method != BASELINE:
        return argv
    shown, keep = [], False
    for token in argv:
        if token.startswith("--"):
            keep = token.split("=")[0] in BASELINE_OPTIONS
        if keep:
            shown.append(token)
    return shown


def _fmt(summary: dict) -> tuple[str, str]:
    return (f"{summary['mean']:.4f} ± {summary['std']:.4f}",
            ", ".join(f"{v:.4f}" for v in summary["per_seed"]))


def wall_times(runs: list[dict]) -> str:
    """Each run's wall time in minutes, in seed order ("earlier" for a run kept by --reuse; a resumed
    run's time is that of its rest)."""
    return ", ".join(f"seed {r['seed']}: "
                     + ("earlier" if r["seconds"] is None else f"{r['seconds'] / 60:.1f} min")
                     + (" (resumed)" if r.get("resumed") else "") for r in runs)


def summary_table(methods: dict, columns: dict[str, str], intro: str) -> list[str]:
    """results.md's lines for extra summaries (mean ± std over seeds) named by ``columns``: a row for each
    method that has some ("n/a" for those it lacks); none where no method has any."""
    keys = [key for key in columns if any(key in summary for summary in methods.values())]
    if not keys:
        return []
    lines = ["", intro, "", "| method | " + " | ".join(columns[key] for key in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    for method, summary in methods.items():
        if any(key in summary for key in keys):
            cells = [_fmt(summary[key])[0] if key in summary else "n/a" for key in keys]
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return lines


def score_table(methods: dict) -> list[str]:
    """results.md's lines for each GRLNet method's scores (mean ± std, per seed) and the baseline's AUC."""
    rows = [(f"{LABELS[method]}: {name}", summary[key]) for method, summary in methods.items()
            for key, name in SCORE_AUCS.items() if key in summary]
    if not rows:
        return []
    rows += [(LABELS[BASELINE], methods[BASELINE]["auc"])] if BASELINE in methods else []
    lines = ["", SCORES_INTRO, "", "| method: score | AUC | AUC per seed |", "|---|---|---|"]
    return lines + [f"| {name} | {' | '.join(_fmt(summary))} |" for name, summary in rows]


def results_markdown(results: dict) -> str:
    """results.md: one table per task, its standing, the command and every run's options."""
    lines = [f"# Reproduction: {results['protocol']}", "",
             f"Standing: **{results['standing']}**.", "",
             f"Command: `{results['command']}`", "",
             (f"Seeds: {', '.join(map(str, results['seeds']))}. AUC and pAUC (max FPR 0.1) at the final "
             "epoch of every run; no epoch or setting was chosen on test clips. Mean ± population std "
             "over seeds."), ""]
    for task_name, task in results["tasks"].items():
        lines += [f"## {task_name}", "", "| method | AUC | pAUC | AUC per seed | pAUC per seed |",
                  "|---|---|---|---|---|"]
        for method, summary in task["methods"].items():
            (auc, auc_seeds), (pauc, pauc_seeds) = _fmt(summary["auc"]), _fmt(summary["pauc"])
            lines.append(f"| {LABELS[method]} | {auc} | {pauc} | {auc_seeds} | {pauc_seeds} |")
        lines += summary_table(task["methods"], GROUP_SUMMARIES, GROUP_INTRO)
        lines += score_table(task["methods"])
        lines += summary_table(task["methods"], TERM_AUCS, TERMS_INTRO)
        lines += ["", "Options of the first seed's runs (other seeds differ in --seed and --output_dir):", ""]
        lines += [f"- {method}: `{shlex.join(options_shown(method, summary['runs'][0]['argv']))}`"
                  for method, summary in task["methods"].items()]
        if BASELINE in task["methods"]:
            lines.append(f"  (the autoencoder reads only its data options, --seed and --device, and trains "
                         f"{results['baseline_epochs']} epochs)")
        lines += ["", "| method | wall time per run (this invocation; runs kept by --reuse: earlier) |",
                  "|---|---|"]
        lines += [f"| {LABELS[method]} | {wall_times(summary['runs'])} |"
                  for method, summary in task["methods"].items()]
        lines.append("")
    return "\n".join(lines)


def latex_text(text: str) -> str:
    """``text`` with the characters LaTeX reads as commands escaped (names such as mimii_fan_id02)."""
    return "".join("\\" + char if char in "_&%#$" else char for char in text)


def results_latex(results: dict) -> str:
    """results.tex: one booktabs table per task (mean ± population std over seeds; DCASE's summaries where
    the test names give groups), for a paper."""
    def cell(summary: dict) -> str:
        return f"${summary['mean']:.4f} \\pm {summary['std']:.4f}$"

    seeds = ", ".join(map(str, results["seeds"]))
    blocks = [r"% written by python reproduce.py; needs \usepackage{booktabs}"]
    for task_name, task in results["tasks"].items():
        caption = latex_text(f"{task_name}: final-epoch AUC and pAUC (max FPR 0.1), mean ± population standard "
                             f"deviation over seeds {seeds} ({results['standing']}).").replace("±", r"$\pm$")
        keys = ["auc", "pauc", *(k for k in GROUP_SUMMARIES if any(k in m for m in task["methods"].values()))]
        header = " & ".join(["Method", "AUC", "pAUC", *(GROUP_SUMMARIES[k] for k in keys[2:])])
        rows = [" & ".join([LABELS[method], *(cell(summary[k]) if k in summary else "--" for k in keys)]) + r" \\"
                for method, summary in task["methods"].items()]
        blocks += [r"\begin{table}[t]", r"\centering", f"\\caption{{{caption}}}",
                   f"\\begin{{tabular}}{{l{'c' * len(keys)}}}", r"\toprule", header + r" \\", r"\midrule", *rows,
                   r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(blocks)


def plot_auc_per_epoch(results: dict, path: Path) -> None:
    """AUC after each epoch, one line per seed, one panel per task and GRLNet method."""
    tasks, methods = results["tasks"], [m for m in results["methods"] if m in GRLNET_METHODS]
    with styled_figure(path, len(tasks), len(methods), squeeze=False,
                       figsize=(5 * len(methods), 3.2 * len(tasks))) as (fig, axes):
        for row, (task_name, task) in zip(axes, tasks.items(), strict=True):
            for ax, method in zip(row, methods, strict=True):
                for run in task["methods"][method]["runs"]:
                    epochs = np.arange(1, len(run["auc_per_epoch"]) + 1)
                    ax.plot(epochs, run["auc_per_epoch"], marker="o", label=f"seed {run['seed']}")
                ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
                ax.set(title=f"{LABELS[method]}\n{task_name}", xlabel="epoch", ylabel="test AUC",
                       ylim=(-0.02, 1.02))
                whole_epoch_axis(ax, max(len(run["auc_per_epoch"]) for run in task["methods"][method]["runs"]))
                ax.legend()
        fig.tight_layout()


def plot_score_distributions(results: dict, path: Path) -> None:
    """Histograms of the final scores, normal against abnormal, per task and method, first seed."""
    tasks, methods = results["tasks"], results["methods"]
    with styled_figure(path, len(tasks), len(methods), squeeze=False,
                       figsize=(4.5 * len(methods), 3.2 * len(tasks))) as (fig, axes):
        for row, (task_name, task) in zip(axes, tasks.items(), strict=True):
            for ax, method in zip(row, methods, strict=True):
                run = task["methods"][method]["runs"][0]
                labels, scores = read_scores(Path(run["output_dir"]) / "scores.csv")
                draw_class_histograms(ax, labels, scores, np.histogram_bin_edges(scores, bins=20))
                ax.set(title=f"{LABELS[method]}\n{task_name}, seed {run['seed']}, AUC {run['auc']:.3f}",
                       xlabel="anomaly score", ylabel="clips")
                ax.xaxis.set_major_locator(MaxNLocator(4))
                ax.legend()
        fig.tight_layout()

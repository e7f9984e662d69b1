"""A clip's score from its windows: encoder_knn's per-window distances of trained runs, aggregated over each
clip by the mean (A, today's), the median (B) and the interquartile mean (C), with the rule of
docs/STUDIES.md ("A clip's score from its windows") applied, and facts about the normal clip that scores
highest under A in each run.

Each run's checkpoints/last.pt is loaded (weights and the stored feature models, no refit); its test clips
are read and cut into windows as its options.json says; A must reproduce the run's scores.csv. Per run,
OUT/<set>/<run>/windows.csv holds every test window's distance and level, levels.csv every training and
test clip's level; OUT/report.md the tables (also printed). ``--reuse`` reads those files back
instead of scoring again.

    OMP_NUM_THREADS=1 nice python -m experiments.tools.window_aggregate --out reproduction_budget/window_aggregate \
        --set mimii reproduction_budget/mimii_fan_id02/grlnet_standard/seed{0..4} \
        --baseline mimii reproduction_budget/mimii_fan_id02/dcase_autoencoder/seed{0..4}/scores.csv
"""
from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from data import ClipSet, load_datasets
from data.console import UserError, make_folder
from data.files import write_text
from grlnet.checkpoint import load_train_checkpoint, load_weights
from grlnet.features import FeatureScorer
from grlnet.metrics import MAX_FPR
from grlnet.results import read_columns
from grlnet.scoring import outputs_per_window
from main import STORED_OPTIONS
from network import NETWORKS, GRLNet
from opts import data_settings, network_length, scoring_settings

SCORE = "encoder_knn"
REFERENCE = "A mean"  # today's aggregate, the one the others are held against
AUC_MARGIN = 0.01  # the rule: a candidate's mean AUC on each set may fall at most this far below A's
CHANCE = 0.5
TIE = 1e-9  # means closer than this are equal (sums of floats round differently)
REPRODUCED = 1e-6  # the largest relative difference between A and the run's scores.csv that counts as equal
LEVEL_FLOOR = 1e-12  # added to the mean square before the logarithm (a silent clip)
WINDOW_COLUMNS = ("file", "label", "window", SCORE, "level_db")
LEVEL_COLUMNS = ("file", "clips", "level_db")


def interquartile_mean(values: np.ndarray) -> float:
    """The mean of the values between their 25th and 75th percentiles (numpy's linear interpolation), both included."""
    low, high = np.percentile(values, [25, 75])
    return float(values[(values >= low) & (values <= high)].mean())


CANDIDATES: dict[str, Callable[[np.ndarray], float]] = {
    REFERENCE: lambda values: float(np.mean(values)),
    "B median": lambda values: float(np.median(values)),
    "C interquartile mean": interquartile_mean,
}


def level_db(signals: np.ndarray) -> np.ndarray:
    """The RMS level of each row of ``signals`` [N, L] in dB (relative to a full-scale 1.0)."""
    return 10 * np.log10(np.mean(np.square(signals, dtype=np.float64), axis=-1) + LEVEL_FLOOR)


@dataclass
class RunWindows:
    """One run's test clips: names [N], labels [N] and levels in dB [N]; per window its clip [W], encoder_knn
    distance [W] and level [W]; and the training clips' names [M] and levels [M]."""

    names: list[str]
    labels: np.ndarray
    clip_levels: np.ndarray
    clip_index: np.ndarray
    distances: np.ndarray
    window_levels: np.ndarray
    train_names: list[str]
    train_levels: np.ndarray

    def clip_windows(self, clip: int) -> np.ndarray:
        """The distances of one clip's windows."""
        return self.distances[self.clip_index == clip]

    def clip_scores(self, aggregate: Callable[[np.ndarray], float]) -> np.ndarray:
        """Each clip's score: ``aggregate`` of its windows' distances."""
        return np.array([aggregate(self.clip_windows(clip)) for clip in range(len(self.names))])


def run_options(folder: Path, state: dict) -> argparse.Namespace:
    """The run's options.json, refused where its windows differ from the checkpoint's stored options."""
    opt = argparse.Namespace(**json.loads((folder / "options.json").read_text()))
    for name in ("segment_length", "segment_hop", "mess_length", "calibration_clips"):
        if getattr(opt, name) != state["options"][name]:
            raise UserError(f"{folder}: options.json's {name} {getattr(opt, name)} differs from the checkpoint's "
                            f"{state['options'][name]}")
    if opt.calibration_clips:
        raise UserError(f"{folder}: fitted on {opt.calibration_clips} held-out clips; the training levels "
                        "would be of other clips")
    return opt


def window_distances(model: GRLNet, scorer: FeatureScorer, clips: ClipSet, opt: argparse.Namespace
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every window's encoder_knn distance [W], RMS level in dB [W] and clip index [W], scored as train.py
    scores them (grlnet.scoring.outputs_per_window, on the CPU)."""
    names, outputs, clip_index = outputs_per_window(model, clips, scoring_settings(opt), torch.device("cpu"),
                                                    scorer=scorer)
    windows, _ = clips.windows(opt.segment_length, opt.segment_hop)
    return outputs[:, names.index(SCORE)].numpy(), level_db(windows[:, 0].numpy()), clip_index.numpy()


def measure_run(folder: Path) -> RunWindows:
    """A run's test windows scored with its final checkpoint's networks and stored encoder feature model."""
    state = load_train_checkpoint(folder / "checkpoints" / "last.pt", STORED_OPTIONS)
    if state["step"]:
        raise UserError(f"{folder}: its last.pt was saved inside an epoch; score a checkpoint from an epoch's end")
    opt = run_options(folder, state)
    model = GRLNet(network_length(opt), opt.global_filter)
    for name in NETWORKS:
        load_weights(getattr(model, name), state["models"][name], f"{folder} ({name})")
    scorer = FeatureScorer(state["feature_models"])
    train, test = load_datasets(data_settings(opt))
    distances, window_levels, clip_index = window_distances(model, scorer, test, opt)
    return RunWindows(test.names, test.binary_labels(), level_db(test.signals), clip_index, distances,
                      window_levels, train.names, level_db(train.signals))


def reproduction_error(run: RunWindows, folder: Path) -> float:
    """The largest relative difference between A and the run's own encoder_knn clip scores (scores.csv)."""
    table = read_columns(folder / "scores.csv", ("file", "label", SCORE))
    if table["file"].tolist() != run.names or not np.array_equal(table["label"] > 0, run.labels > 0):
        raise UserError(f"{folder}: scores.csv lists other test clips or labels than its options.json names")
    stored = table[SCORE].astype(np.float64)
    return float(np.max(np.abs(run.clip_scores(CANDIDATES[REFERENCE]) - stored) / np.abs(stored)))


def save_run(run: RunWindows, folder: Path) -> None:
    """windows.csv (one row per test window) and levels.csv (one per training and test clip) in ``folder``."""
    make_folder(folder, "output folder")
    window = np.concatenate([np.arange(n) for n in np.bincount(run.clip_index)])
    rows = [(run.names[c], int(run.labels[c]), int(w), repr(d), repr(v)) for c, w, d, v in
            zip(run.clip_index, window, run.distances.tolist(), run.window_levels.tolist(), strict=True)]
    write_text(folder / "windows.csv", csv_text(WINDOW_COLUMNS, rows), "window distances")
    levels = [(name, clips, repr(level)) for clips, names, values in
              (("train", run.train_names, run.train_levels), ("test", run.names, run.clip_levels))
              for name, level in zip(names, values.tolist(), strict=True)]
    write_text(folder / "levels.csv", csv_text(LEVEL_COLUMNS, levels), "clip levels")


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A CSV file's text: the header, then the rows (names quoted where they hold commas)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()


def load_run(folder: Path) -> RunWindows:
    """A run's windows as ``save_run`` wrote them."""
    table = read_columns(folder / "windows.csv", WINDOW_COLUMNS)
    files = table["file"].tolist()
    names = list(dict.fromkeys(files))
    clip_index = np.array([names.index(f) for f in files])
    labels = np.zeros(len(names), dtype=np.int64)
    labels[clip_index] = table["label"]
    levels = read_columns(folder / "levels.csv", LEVEL_COLUMNS)
    train, test = levels["clips"] == "train", levels["clips"] == "test"
    if levels["file"][test].tolist() != names:
        raise UserError(f"{folder}: levels.csv lists other test clips than windows.csv")
    return RunWindows(names, labels, levels["level_db"][test].astype(np.float64), clip_index,
                      table[SCORE].astype(np.float64), table["level_db"].astype(np.float64),
                      levels["file"][train].tolist(), levels["level_db"][train].astype(np.float64))


def metrics(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """AUC and pAUC (max FPR 0.1), as grlnet/metrics.py computes them."""
    return float(roc_auc_score(labels, scores)), float(roc_auc_score(labels, scores, max_fpr=MAX_FPR))


def candidate_metrics(run: RunWindows) -> dict[str, tuple[float, float]]:
    """Each candidate's AUC and pAUC on one run."""
    return {name: metrics(run.labels, run.clip_scores(aggregate)) for name, aggregate in CANDIDATES.items()}


def apply_rule(per_set: dict[str, list[dict[str, tuple[float, float]]]]) -> tuple[str, dict[str, list[str]]]:
    """The candidate the rule adopts from each set's per-run (AUC, pAUC), and why each other one fails."""
    def mean(name: str, runs: list[dict], k: int) -> float:
        return float(np.mean([run[name][k] for run in runs]))

    failures: dict[str, list[str]] = {}
    for name in CANDIDATES:
        failed = []
        for set_name, runs in per_set.items():
            if mean(name, runs, 0) < mean(REFERENCE, runs, 0) - AUC_MARGIN - TIE:
                failed.append(f"{set_name}: mean AUC more than {AUC_MARGIN} below A's")
            if mean(name, runs, 1) < mean(REFERENCE, runs, 1) - TIE:
                failed.append(f"{set_name}: mean pAUC below A's")
            if any(run[name][0] < CHANCE <= run[REFERENCE][0] for run in runs):
                failed.append(f"{set_name}: a run's AUC below 0.5 where A's is not")
        failures[name] = failed
    pooled = {name: mean(name, [run for runs in per_set.values() for run in runs], 1) for name in CANDIDATES}
    passing = [name for name in CANDIDATES if not failures[name]]
    best = max(pooled[name] for name in passing)
    return next(name for name in passing if pooled[name] >= best - TIE), failures


def outlier_facts(run: RunWindows) -> dict:
    """Label-free facts about the normal clip that scores highest under A: its rank among all clips (1: the
    highest), its windows' distances, and its level against the training clips'."""
    scores = run.clip_scores(CANDIDATES[REFERENCE])
    normal = np.flatnonzero(run.labels == 0)
    top = int(normal[np.argmax(scores[normal])])
    windows = run.clip_windows(top)
    anomalous_medians = [np.median(run.clip_windows(c)) for c in np.flatnonzero(run.labels > 0)]
    other_normal_medians = [np.median(run.clip_windows(c)) for c in normal if c != top]
    levels = run.window_levels[run.clip_index == top]
    reference = np.median(run.train_levels)
    return {
        "clip": Path(run.names[top]).name, "rank": int(1 + np.sum(scores > scores[top])), "clips": len(scores),
        "windows": len(windows), "median": float(np.median(windows)), "max": float(windows.max()),
        "above_anomalous": int(np.sum(windows > np.median(anomalous_medians))),
        "anomalous_median": float(np.median(anomalous_medians)),
        "other_normal_median": float(np.median(other_normal_medians)),
        "level_db": float(run.clip_levels[top] - reference),
        "train_range_db": (float(run.train_levels.min() - reference), float(run.train_levels.max() - reference)),
        "level_distance_correlation": float(np.corrcoef(levels, windows)[0, 1]),
    }


def baseline_metrics(paths: Sequence[Path]) -> list[tuple[float, float]]:
    """AUC and pAUC of each DCASE autoencoder run's scores.csv."""
    tables = [read_columns(path, ("label", "score")) for path in paths]
    return [metrics((t["label"] > 0).astype(np.int64), t["score"].astype(np.float64)) for t in tables]


def cell(values: Sequence[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def report(per_set: dict[str, list[dict]], baselines: dict[str, list[tuple[float, float]]],
           facts: dict[str, list[tuple[str, dict]]], errors: dict[str, list[float]]) -> list[str]:
    """The per-set table, each run's AUC/pAUC, the diagnosis and the rule's decision, as markdown lines."""
    lines = ["| set | runs | " + " | ".join(f"{n}: AUC | pAUC" for n in CANDIDATES) + " | DCASE autoencoder: AUC | pAUC |",
             "|---|---|" + "---|---|" * (len(CANDIDATES) + 1)]
    pooled = [run for runs in per_set.values() for run in runs]
    for set_name, runs in [*per_set.items(), ("pooled", pooled)]:
        row = [cell([r[n][k] for r in runs]) for n in CANDIDATES for k in (0, 1)]
        base = baselines.get(set_name) if set_name != "pooled" else [b for v in baselines.values() for b in v]
        row += [cell([b[k] for b in base]) for k in (0, 1)] if base else ["", ""]
        lines.append(f"| {set_name} | {len(runs)} | " + " | ".join(row) + " |")
    lines += ["", "| set | run | " + " | ".join(f"{n} AUC / pAUC" for n in CANDIDATES) + " | A vs scores.csv |",
              "|---|---|" + "---|" * (len(CANDIDATES) + 1)]
    for set_name, runs in per_set.items():
        for (run_name, _), run, error in zip(facts[set_name], runs, errors[set_name], strict=True):
            lines.append(f"| {set_name} | {run_name} | " + " | ".join(f"{run[n][0]:.3f} / {run[n][1]:.3f}"
                                                                      for n in CANDIDATES) + f" | {error:.1e} |")
    lines += ["", ("| set | run | top normal clip (A) | rank | windows: median, max, max/median | windows above "
                   "the anomalous clips' median | other normals' median | level vs training median (training range) "
                   "| corr(level, distance) |"), "|---|---|---|---|---|---|---|---|---|"]
    for set_name, runs in facts.items():
        for run_name, f in runs:
            lines.append(
                f"| {set_name} | {run_name} | {f['clip']} | {f['rank']} of {f['clips']} | {f['median']:.2f}, "
                f"{f['max']:.2f}, {f['max'] / f['median']:.2f} | {f['above_anomalous']} of {f['windows']} "
                f"(median {f['anomalous_median']:.2f}) | {f['other_normal_median']:.2f} | {f['level_db']:+.1f} dB "
                f"({f['train_range_db'][0]:+.1f} to {f['train_range_db'][1]:+.1f}) | "
                f"{f['level_distance_correlation']:+.2f} |")
    chosen, failures = apply_rule(per_set)
    lines.append("")
    lines += [f"- {name}: " + ("passes" if not failed else "fails (" + "; ".join(failed) + ")")
              for name, failed in failures.items() if name != REFERENCE]
    lines.append(f"- the rule adopts: {chosen}")
    return lines


def run_label(folder: Path) -> str:
    """A run's name in the tables: its split's folder (.../split2/grlnet_standard/seed0) or its own (seed3)."""
    split = folder.parent.parent.name
    return split if split.startswith("split") else folder.name


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the per-run windows and report.md")
    parser.add_argument("--set", nargs="+", action="append", required=True, metavar=("NAME", "RUN"),
                        help="a set's name and its run folders (repeat for each set)")
    parser.add_argument("--baseline", nargs="+", action="append", default=[], metavar=("NAME", "SCORES"),
                        help="a set's name and its DCASE autoencoder scores.csv files, for reference")
    parser.add_argument("--reuse", action="store_true", help="read the per-run files of an earlier run back")
    args = parser.parse_args(argv)
    if any(len(entry) < 2 for entry in args.set + args.baseline):
        parser.error("--set and --baseline take a name and at least one path")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    per_set, facts, errors = {}, {}, {}
    for set_name, *folders in args.set:
        per_set[set_name], facts[set_name], errors[set_name] = [], [], []
        for folder in map(Path, folders):
            run_name = run_label(folder)
            saved = args.out / set_name / run_name
            run = load_run(saved) if args.reuse else measure_run(folder)
            error = reproduction_error(run, folder)
            if error > REPRODUCED:
                raise UserError(f"{folder}: the window mean differs from scores.csv's {SCORE} by {error:.1e} "
                                f"(relative); more than {REPRODUCED:g}")
            if not args.reuse:
                save_run(run, saved)
            per_set[set_name].append(candidate_metrics(run))
            facts[set_name].append((run_name, outlier_facts(run)))
            errors[set_name].append(error)
            print(f"{set_name} {run_name}: {len(run.distances)} windows, A vs scores.csv {error:.1e}", flush=True)
    baselines = {name: baseline_metrics([Path(p) for p in paths]) for name, *paths in args.baseline}
    text = "\n".join(report(per_set, baselines, facts, errors)) + "\n"
    write_text(args.out / "report.md", text, "report")
    print(text)


if __name__ == "__main__":
    main()

"""The files a run writes besides checkpoints and figures: metrics.csv, scores.csv and DCASE's
per-group tables."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import TextIO

import numpy as np

from data import ClipSet
from errors import UserError


# DCASE's per-group metrics: their files, and the keys that metrics.csv leaves out
GROUP_TABLES = {"machine_ids": "machine_ids.csv", "sections": "sections.csv"}
SCORES_HEADER = ("file", "label")  # the first columns of every score file, which tell one from other files


def create(path: Path) -> TextIO:
    """``path`` opened for writing text, or an error that names it (a folder one cannot write in)."""
    try:
        return path.open("w", newline="")
    except OSError as err:
        raise UserError(f"{path}: cannot write the file there ({err.strerror})") from None


def write_metrics_csv(history: list[dict], path: Path) -> None:
    """metrics.csv: one row per epoch, without the confusion matrix and the per-group tables."""
    rows = [{k: v for k, v in row.items() if k not in ("confusion", *GROUP_TABLES)} for row in history]
    write_rows_csv(rows, path)


def write_rows_csv(rows: list[dict], path: Path) -> None:
    """Rows as a CSV file whose header holds every row's keys (a key a row lacks, or None: an empty cell;
    so a run resumed by a version that logs more columns keeps its earlier rows)."""
    with create(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)


def write_group_tables(metrics: dict, folder: Path) -> None:
    """DCASE's per-group metrics, where the test names give groups: machine_ids.csv (2020 names; its
    last row the average, as in the DCASE 2020 baseline's result.csv), sections.csv (2021-2024 names)."""
    if "machine_ids" in metrics:
        average = {"id": "average", "auc": metrics["id_average_auc"], "pauc": metrics["id_average_pauc"]}
        write_rows_csv(metrics["machine_ids"] + [average], folder / GROUP_TABLES["machine_ids"])
    if "sections" in metrics:
        write_rows_csv(metrics["sections"], folder / GROUP_TABLES["sections"])


def write_scores_csv(clips: ClipSet, scores: dict[str, np.ndarray], path: Path,
                     threshold: float | None = None) -> None:
    """One row per clip: file, label (empty when unknown), each of ``scores``' columns (GRLNet's D(x),
    D(R(x)), D(Lo(x)) and score; the baseline's score) and, with ``threshold``, the decision at it."""
    decided = ("decision",) if threshold is not None else ()
    with create(path) as handle:
        writer = csv.writer(handle)
        writer.writerow((*SCORES_HEADER, *scores, *decided))
        for i, name in enumerate(clips.names):
            label = "" if clips.labels is None else int(clips.labels[i])
            decision = (decide(scores["score"][i], threshold),) if decided else ()
            writer.writerow((name, label, *(repr(float(column[i])) for column in scores.values()), *decision))


def is_score_file(path: Path) -> bool:
    """Whether ``path`` is a score file ``write_scores_csv`` wrote, told by its header."""
    try:
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return tuple(header[:len(SCORES_HEADER)]) == SCORES_HEADER


def decide(score: float, threshold: float) -> str:
    """The decision at a threshold, as logs and score files write it."""
    return "ABNORMAL" if score >= threshold else "normal"

"""The files a run writes besides checkpoints and figures, and their readers: metrics.csv, scores.csv,
DCASE's per-group tables, and the reconstruction examples the figures draw."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from data import ClipSet
from grlnet.errors import UserError
from grlnet.features import SCORES
from network import GRLNet


# DCASE's per-group metrics: their files, and the keys that metrics.csv leaves out
GROUP_TABLES = {"machine_ids": "machine_ids.csv", "sections": "sections.csv"}
SCORES_HEADER = ("file", "label")  # the first columns of every score file, which tell one from other files
EXAMPLE_SIGNALS = ("input", "regional", "local")  # examples.npz: each of a normal and an abnormal window


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
    """Rows as a CSV file whose header holds every row's keys (a key a row lacks, or None: an empty cell)."""
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


# ---------------------------------------------------------------- reading a run's files

def read_columns(path: str | Path) -> dict[str, np.ndarray]:
    """A CSV file as one array per column (numbers where every cell is one, text otherwise)."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise UserError(f"{path}: no rows to draw")
    columns = {}
    for name in rows[0]:
        cells = [row[name] for row in rows]
        try:
            columns[name] = np.array(cells, dtype=np.float64)
        except ValueError:
            columns[name] = np.array(cells)
    return columns


def read_named_scores(scores_csv: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """File names, binary labels (0 normal, 1 abnormal: any label > 0) and scores of a labelled scores.csv."""
    columns = read_columns(scores_csv)
    if columns["label"].dtype.kind != "f":
        raise UserError(f"{scores_csv}: some items have no label; these figures need a labelled test set")
    if not np.all(np.isfinite(columns["score"])):
        raise UserError(f"{scores_csv}: some scores are not finite; the run has diverged")
    return columns["file"].tolist(), (columns["label"] > 0).astype(np.int64), columns["score"]


def chosen_score(scores_csv: str | Path) -> str | None:
    """Which score the ``score`` column of scores.csv is (the run's --score), told by the score column equal to
    it; None where no column of a named score is."""
    columns = read_columns(scores_csv)
    return next((name for name in SCORES if name in columns and np.array_equal(columns[name], columns["score"])),
                None)


def read_scores(scores_csv: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels and scores of a labelled scores.csv (``read_named_scores`` without the names)."""
    return read_named_scores(scores_csv)[1:]


def has_labels(scores_csv: str | Path) -> bool:
    """Whether every row of scores.csv has a label (test.py --input writes unlabelled ones)."""
    return read_columns(scores_csv)["label"].dtype.kind == "f"


# ---------------------------------------------------------------- the reconstruction examples

@torch.no_grad()
def save_reconstruction_examples(model: GRLNet, clips: ClipSet, opt: argparse.Namespace,
                                 device: torch.device, path: str | Path) -> None:
    """Store the first window of the first normal and abnormal clip with both reconstructions (.npz)."""
    if clips.labels is None or set(clips.binary_labels().tolist()) != {0, 1}:
        raise UserError("reconstruction examples need a labelled set with normal and abnormal clips")
    labels = clips.binary_labels()
    x = torch.cat([_first_window(clips, int(np.flatnonzero(labels == value)[0]), opt)
                   for value in (0, 1)]).to(device)
    was_training = model.training
    model.eval()
    outputs = {"input": x, "regional": model.regional(x), "local": model.local(x)}
    model.train(was_training)
    arrays = {f"{signal}_{kind}": outputs[signal][row, 0].float().cpu().numpy()
              for signal in EXAMPLE_SIGNALS for row, kind in enumerate(("normal", "abnormal"))}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, sample_rate=clips.sample_rate or 0, **arrays)  # 0: unknown (CSV signals)


def _first_window(clips: ClipSet, index: int, opt: argparse.Namespace) -> torch.Tensor:
    """Clip ``index``'s first window as the networks see it, [1, 1, length]."""
    return clips.part(slice(index, index + 1)).windows(opt.segment_length, opt.segment_hop)[0][:1]

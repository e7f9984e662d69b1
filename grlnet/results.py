"""The files a run writes besides checkpoints and figures, and their readers: metrics.csv, scores.csv,
DCASE's per-group tables, and the reconstruction examples the figures draw."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from data import ClipSet
from data.console import UserError, make_folder, printable
from data.files import atomic_write
from grlnet.scores import CHOSEN, CHOSEN_NAME, FEATURE_SCORES, PAPER_SCORE, TERMS
from network import GRLNet

# DCASE's per-group metrics: their files, and the keys that metrics.csv leaves out
GROUP_TABLES = {"machine_ids": "machine_ids.csv", "sections": "sections.csv"}
# The first columns of every score file: its clip, label (empty when unknown), D's three terms and the paper's score.
SCORE_FILE_OPENING = ("file", "label", *TERMS, PAPER_SCORE)
EXAMPLE_SIGNALS = ("input", "regional", "local")  # examples.npz: each of a normal and an abnormal window


def write_metrics_csv(history: list[dict], path: Path) -> None:
    """metrics.csv: one row per epoch, without the confusion matrix and the per-group tables."""
    rows = [{k: v for k, v in row.items() if k not in ("confusion", *GROUP_TABLES)} for row in history]
    write_rows_csv(rows, path)


def write_rows_csv(rows: list[dict], path: Path) -> None:
    """Rows as a CSV file whose header holds every row's keys (a key a row lacks, or None: an empty cell)."""
    with atomic_write(path) as handle:
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


def write_scores_csv(clips: ClipSet, scores: dict[str, np.ndarray], path: Path, score_name: str,
                     threshold: float | None = None) -> None:
    """One row per clip: file, label (empty when unknown), each of ``scores``' columns (GRLNet's D(x),
    D(R(x)), D(Lo(x)) and score; the baseline's score), the name of the score in the ``score`` column
    (``score_name``, which ``chosen_score`` reads back) and, with ``threshold``, the decision at it."""
    decided = ("decision",) if threshold is not None else ()
    with atomic_write(path, what="score file") as handle:
        writer = csv.writer(handle)
        writer.writerow(("file", "label", *scores, CHOSEN_NAME, *decided))
        for i, name in enumerate(clips.names):
            label = "" if clips.labels is None else int(clips.labels[i])
            decision = (decide(scores[CHOSEN][i], threshold),) if decided else ()
            writer.writerow((printable(name), label, *(repr(float(column[i])) for column in scores.values()),
                             score_name, *decision))


def is_score_file(path: Path) -> bool:
    """Whether ``path`` is a score file ``write_scores_csv`` wrote, told by its header: file, label, D's three
    terms, the paper's score, any feature scores, score, score_name and, with a threshold, decision; no label
    file has that set of columns, however it names its first two."""
    try:
        with path.open(newline="") as handle:
            header = tuple(next(csv.reader(handle), []))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    header = header[:-1] if header[-1:] == ("decision",) else header
    opening, features, ending = header[:len(SCORE_FILE_OPENING)], header[len(SCORE_FILE_OPENING):-2], header[-2:]
    return opening == SCORE_FILE_OPENING and set(features) <= set(FEATURE_SCORES) and ending == (CHOSEN, CHOSEN_NAME)


def decide(score: float, threshold: float) -> str:
    """The decision at a threshold, as logs and score files write it."""
    return "ABNORMAL" if score >= threshold else "normal"


# ---------------------------------------------------------------- reading a run's files

def read_columns(path: str | Path, needed: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """A CSV file as one array per column (numbers where every cell is one, text otherwise), refused when it
    is unreadable, lacks a ``needed`` column, or has a row of another length than its header: a file cut
    short or damaged, whose missing cells would read as NaN."""
    try:
        with Path(path).open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            rows = [(reader.line_num, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path}: not a readable CSV file ({getattr(err, 'strerror', None) or err})") from None
    missing = [name for name in needed if name not in header]
    if missing:
        raise UserError(f"{path}: no {', '.join(map(repr, missing))} column; not a file train.py or test.py wrote")
    if not rows:
        raise UserError(f"{path}: no rows to draw")
    line, row = next(((line, row) for line, row in rows if len(row) != len(header)), (0, []))
    if line:
        raise UserError(f"{path}, line {line}: {len(row)} cells where the header names {len(header)} columns; the "
                        "file is cut short or damaged")
    columns = {}
    for index, name in enumerate(header):
        cells = [row[index] for _, row in rows]
        try:
            columns[name] = np.array(cells, dtype=np.float64)
        except ValueError:
            columns[name] = np.array(cells)
    return columns


def read_named_scores(scores_csv: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """File names, binary labels (0 normal, 1 abnormal: any label > 0) and scores of a labelled scores.csv."""
    columns = read_columns(scores_csv, ("file", "label", "score"))
    if columns["label"].dtype.kind != "f":
        raise UserError(f"{scores_csv}: some items have no label; these figures need a labelled test set")
    scores = columns["score"]
    bad = next((i for i, value in enumerate(scores) if not _is_finite_number(value)), None)
    if bad is not None:
        raise UserError(f"{scores_csv}, line {bad + 2}: the score is {str(scores[bad])!r}, not a finite number; the "
                        "file is damaged or was edited (train.py stops a run whose scores are not finite)")
    return columns["file"].tolist(), (columns["label"] > 0).astype(np.int64), columns["score"]


def _is_finite_number(cell: float | str) -> bool:
    """Whether a cell read by ``read_columns`` (a number, or text where a cell of its column is not one) is
    a finite number."""
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def chosen_score(scores_csv: str | Path) -> str | None:
    """The name of the score in scores.csv's ``score`` column, as ``write_scores_csv`` wrote it beside; None
    where the file names none."""
    names = read_columns(scores_csv).get(CHOSEN_NAME)
    return None if names is None else str(names[0])


def read_scores(scores_csv: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels and scores of a labelled scores.csv (``read_named_scores`` without the names)."""
    return read_named_scores(scores_csv)[1:]


def has_labels(scores_csv: str | Path) -> bool:
    """Whether every row of scores.csv has a label (test.py --input writes unlabelled ones)."""
    return read_columns(scores_csv, ("label",))["label"].dtype.kind == "f"


# ---------------------------------------------------------------- the reconstruction examples

@torch.no_grad()
def save_reconstruction_examples(model: GRLNet, clips: ClipSet, segment_length: int, segment_hop: int,
                                 device: torch.device, path: str | Path) -> None:
    """Store the first window (``segment_length`` samples, 0: the whole clip) of the first normal and abnormal
    clip with both reconstructions (.npz)."""
    if clips.labels is None or set(clips.binary_labels().tolist()) != {0, 1}:
        raise UserError("reconstruction examples need a labelled set with normal and abnormal clips")
    labels = clips.binary_labels()
    x = torch.cat([_first_window(clips, int(np.flatnonzero(labels == value)[0]), segment_length, segment_hop)
                   for value in (0, 1)]).to(device)
    was_training = model.training
    model.eval()
    outputs = {"input": x, "regional": model.regional(x), "local": model.local(x)}
    model.train(was_training)
    arrays = {f"{signal}_{kind}": outputs[signal][row, 0].float().cpu().numpy()
              for signal in EXAMPLE_SIGNALS for row, kind in enumerate(("normal", "abnormal"))}
    make_folder(Path(path).parent, "figure folder")
    with atomic_write(path, "wb", "examples file") as handle:
        np.savez(handle, sample_rate=clips.sample_rate or 0, **arrays)  # 0: unknown (CSV signals)


def _first_window(clips: ClipSet, index: int, segment_length: int, segment_hop: int) -> torch.Tensor:
    """Clip ``index``'s first window as the networks see it, [1, 1, length]."""
    return clips.part(slice(index, index + 1)).windows(segment_length, segment_hop)[0][:1]

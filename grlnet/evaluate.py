"""test.py's work: rebuild the networks from a checkpoint (or the release's files), then either
evaluate a labelled test set or score unlabelled recordings against a stored threshold."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, TextIO

import torch

from data import ClipSet, DataSettings, load_datasets, load_unlabelled
from data.console import UserError, make_folder
from data.files import check_writable, identity, write_json
from grlnet.checkpoint import RELEASED_FILES, StoredOptions, load_released, load_train_checkpoint, load_weights
from grlnet.cli import configure_logging, log
from grlnet.features import FeatureScorer
from grlnet.metrics import format_labelled_metrics, labelled_metrics
from grlnet.plots import redraw
from grlnet.results import decide, is_score_file, save_reconstruction_examples, write_group_tables, write_scores_csv
from grlnet.run_folder import LOCK_FILE, lock_run_folder, new_folder, owning_run
from grlnet.runtime import autocast_context, choose_kernels, place_model, resolve_device
from grlnet.scores import PAPER_SCORE
from grlnet.scoring import ScoringSettings, score_clips
from network import NETWORKS, GRLNet


@dataclass(frozen=True)
class Scoring:
    """What test.py scores and where it writes, built once from its resolved options (opts.test_scoring):
    the networks' source (``checkpoint``, or the release's files in ``model_dir``), the ``inputs`` to score
    (none: the labelled test set the options name) with their ``threshold`` and ``output`` (None: the
    stored threshold, scores.csv in the output folder), the score, the networks' length and filter, the
    option names every run's options.json holds (which tell a training run's folder), the data and scoring
    settings, and where the networks run (``--device``, ``--bf16``, ``--channels_last``)."""

    checkpoint: str | None
    model_dir: str | None
    inputs: tuple[str, ...]
    threshold: float | None
    output: str | None
    output_dir: str | None
    overwrite: bool
    score: str
    network_length: int
    global_filter: str
    deterministic: bool
    run_options: frozenset[str]
    data: DataSettings
    settings: ScoringSettings
    device: str
    bf16: bool
    channels_last: bool


class Restored(NamedTuple):
    """What test.py scores with: the networks, what to score (``Scoring``), and from a checkpoint its last
    decision threshold and where that comes from (for the score it was trained with), its feature scorer
    (None for the release's files) and the sample rate of its training data (None where unknown: the
    release's files, CSV data)."""

    model: GRLNet
    scoring: Scoring
    threshold: float | None = None
    threshold_source: str = ""
    scorer: FeatureScorer | None = None
    sample_rate: int | None = None


def _stored_threshold(state: dict) -> tuple[float | None, str]:
    """A train.py checkpoint's last decision threshold (None before its first epoch ends), and its source:
    the test set's EER point, or a quantile of held-out normal clips' scores in a run without a test set."""
    if not state["metrics"]:
        return None, ""
    last, options = state["metrics"][-1], state["options"]
    threshold = float(last["threshold"])  # a finite number (checkpoint.stored_value_problems); an int is one too
    if "auc" in last:
        return threshold, "the checkpoint's last EER threshold, on its labelled test set"
    return threshold, (f"the checkpoint's threshold: the {options['threshold_quantile']:g}-quantile of "
                       f"the scores of its {state['threshold_clips']} held-out normal clips")


def _feature_scorer(state: dict, scoring: Scoring) -> FeatureScorer | None:
    """The scorer of a checkpoint's stored feature models; None where it has none (saved before its first
    evaluation), which only the paper's score can do without."""
    if state.get("feature_models") is not None:
        return FeatureScorer(state["feature_models"])
    if scoring.score != PAPER_SCORE:
        raise UserError(f"{scoring.checkpoint}: saved before its first evaluation, it holds no statistics of normal "
                        f"windows for --score {scoring.score}; score with --score {PAPER_SCORE}, or train an epoch")
    return None


def _refuse_inside_an_epoch(state: dict, path: str) -> None:
    """Refuse a checkpoint saved inside an epoch (by time or on an interrupt), which is for resuming: its
    weights have moved on from those its feature statistics and threshold were set with."""
    if state["step"]:
        raise UserError(f"{path}: saved inside epoch {state['epoch'] + 1} (after step {state['step']}) to resume "
                        "training from; its weights have changed since its feature statistics and threshold were "
                        "set at the end of the epoch before, so its scores would mix two models. Finish the epoch "
                        "(train.py with the run's options and --resume; a lower --epochs stops after it), then "
                        "score the checkpoint saved at its end")


def load_scoring_checkpoint(path: str, options: StoredOptions) -> dict:
    """A train.py checkpoint to score with (``load_train_checkpoint``, its stored options read by
    ``options``), refused when saved inside an epoch."""
    state = load_train_checkpoint(path, options)
    _refuse_inside_an_epoch(state, path)
    return state


def restore_checkpoint(state: dict, scoring: Scoring) -> Restored:
    """The networks of a checkpoint (``load_scoring_checkpoint``), with its threshold where ``scoring`` uses
    the score it was trained with, its feature scorer and the sample rate of its training data."""
    model = GRLNet(scoring.network_length, scoring.global_filter)
    for name in NETWORKS:
        load_weights(getattr(model, name), state["models"][name], f"{scoring.checkpoint} ({name})")
    threshold, source = _stored_threshold(state) if scoring.score == state["options"].get("score") else (None, "")
    return Restored(model, scoring, threshold, source, _feature_scorer(state, scoring), state["sample_rate"])


def restore_released(scoring: Scoring) -> Restored:
    """The networks of the release's files in ``scoring.model_dir``, built with the released filter layer."""
    model = GRLNet(scoring.network_length, "released")
    load_released(model, scoring.model_dir)
    return Restored(model, scoring)


def _require_trained_rate(checkpoint: str | None, trained_rate: int | None, clips: ClipSet) -> None:
    """Refuse decoded data at another sample rate than the ``checkpoint``'s training data: the networks
    would see every frequency shifted and score nonsense without a word."""
    rate = clips.sample_rate
    if rate is not None and trained_rate is not None and rate != trained_rate:
        raise UserError(f"{clips.names[0]}: sample rate {rate} Hz, but {checkpoint} was trained on "
                        f"{trained_rate} Hz audio; give --sample_rate {trained_rate} to resample")


def _refuse_read(output: Path, read: Sequence[str | Path]) -> None:
    """Refuse an --output that is, or lies inside, a file or folder being read (``read``), compared by
    identity (device and inode, links resolved), so another name, a link or a hard link to it is refused too."""
    being_read = {identity(name): name for name in read if name}
    being_read.pop(None, None)
    resolved = Path(os.path.realpath(output))
    if identity(resolved) in being_read:
        raise UserError(f"{output}: --output is one of the files being read (an input or the checkpoint); "
                        "writing the scores would destroy it: give another file name")
    inside = next((being_read[identity(place)] for place in resolved.parents if identity(place) in being_read), None)
    if inside is not None:
        raise UserError(f"{output}: --output lies inside {inside}, a folder being read (--input); give a file "
                        "elsewhere")


def _check_output(output: Path, read: Sequence[str | Path], overwrite: bool, run_options: frozenset[str]) -> None:
    """Before any data are decoded: refuse an --output that is or lies inside what is read (``_refuse_read``),
    that would be among a training run's files (in its folder, its checkpoints/ or figures/; a run's
    options.json holds ``run_options``) by whatever path, whose folder cannot be written in, and an existing
    file other than a score file test.py wrote, unless ``overwrite``."""
    if output.is_dir():
        raise UserError(f"{output}: --output is a folder; give a file name, such as {output / 'scores.csv'}")
    _refuse_read(output, read)
    run = owning_run(output, run_options)
    if run is not None:
        raise UserError(f"{output}: --output lies in the training run's folder {run[0]} (it holds "
                        f"{', '.join(run[1])}), whose files are the run's own; give a file elsewhere")
    check_writable(output.parent, "folder of --output")
    if output.exists() and not overwrite and not is_score_file(output):
        raise UserError(f"{output}: --output exists and is not a score file written by test.py; give another "
                        "file name, or --overwrite to replace it")


def _check_output_folder(folder: Path, overwrite: bool, run_options: frozenset[str]) -> None:
    """Refuse as test.py's output folder a training run's folder (its options.json holds ``run_options``), its
    checkpoints/ or figures/, by whatever path (its scores, metrics, figures would be replaced by these, or
    mixed with its own), a folder that cannot be written in, and, unless ``overwrite``, a folder holding files
    that test.py did not write (no test.log)."""
    run = owning_run(folder, run_options, is_folder=True)
    if run is not None and identity(run[0]) == identity(folder):
        raise UserError(f"{folder}: --output_dir is a training run's folder (it holds {', '.join(run[1])}), whose "
                        "scores.csv, metrics and figures test.py would replace; give another --output_dir")
    if run is not None:
        raise UserError(f"{folder}: --output_dir lies in the training run's folder {run[0]} (it holds "
                        f"{', '.join(run[1])}), whose files are the run's own; give another --output_dir")
    check_writable(folder, "output folder")
    held = folder.is_dir() and any(path.name != LOCK_FILE for path in folder.iterdir())
    if held and not (folder / "test.log").is_file() and not overwrite:
        raise UserError(f"{folder}: --output_dir holds files that test.py did not write (it has no test.log), "
                        "and test.py writes scores.csv, metrics.json, test.log and figures/ there; give a new or "
                        "empty folder, or --overwrite to write there anyway")


def _files_read(scoring: Scoring) -> list[str | Path]:
    """What scoring --input files reads: the inputs (files or folders) and the checkpoint or the release's files."""
    released = [Path(scoring.model_dir) / name for name in RELEASED_FILES.values()] if scoring.model_dir else []
    return [*scoring.inputs, scoring.checkpoint or "", *released]


def score_inputs(restored: Restored, device: torch.device, folder: Path) -> None:
    """Score unlabelled ``--input`` files, decide each at the threshold, write them with the decisions."""
    scoring, model = restored.scoring, restored.model
    threshold = scoring.threshold if scoring.threshold is not None else restored.threshold
    if threshold is None:
        raise UserError(f"no decision threshold for --score {scoring.score}: give --threshold (the release's files "
                        "store none, nor does a checkpoint saved before its first epoch ended, and a checkpoint "
                        "stores one for the score it was trained with only)")
    output = Path(scoring.output or folder / "scores.csv")
    _check_output(output, _files_read(scoring), scoring.overwrite, scoring.run_options)
    make_folder(output.parent, "folder of --output")
    clips = load_unlabelled(list(scoring.inputs), scoring.data)
    _refuse_read(output, clips.names)  # a file reached through a link in an input folder
    _require_trained_rate(scoring.checkpoint, restored.sample_rate, clips)
    scores = score_clips(model, clips, scoring.settings, device, autocast_context(device, scoring.bf16),
                         scorer=restored.scorer)
    for name, score in zip(clips.names, scores["score"], strict=True):
        log.info("%s  score %.6f  %s", name, score, decide(score, threshold))
    source = "--threshold" if scoring.threshold is not None else restored.threshold_source
    log.info("threshold %.6f (%s)", threshold, source)
    write_scores_csv(clips, scores, output, scoring.score, threshold)
    log.info("scores written to %s", output)


def evaluate_test_set(restored: Restored, device: torch.device, folder: Path) -> dict:
    """Score a labelled test set; write scores.csv, metrics.json, group tables and figures; return the metrics."""
    scoring, model = restored.scoring, restored.model
    _, test_set = load_datasets(scoring.data, need_train=False)
    _require_trained_rate(scoring.checkpoint, restored.sample_rate, test_set)
    scores = score_clips(model, test_set, scoring.settings, device, autocast_context(device, scoring.bf16),
                         scorer=restored.scorer)
    metrics = labelled_metrics(test_set.binary_labels(), scores["score"], test_set.names, scores)
    write_scores_csv(test_set, scores, folder / "scores.csv", scoring.score)
    write_json(folder / "metrics.json", metrics, "metrics file")
    write_group_tables(metrics, folder)
    save_reconstruction_examples(model, test_set, scoring.settings.segment_length, scoring.settings.segment_hop, device,
                                 folder / "figures" / "examples.npz")
    figures = redraw(folder)
    log.info("%d test clips scored; in %s: scores.csv, metrics.json, test.log, figures/ (%s)", len(test_set),
             folder, ", ".join(p.name for p in figures))
    log.info(format_labelled_metrics(metrics))
    return metrics


def _claim_output_folder(scoring: Scoring) -> tuple[Path, TextIO]:
    """test.py's output folder, checked (``_check_output_folder``) and created, or by default a new
    runs/test-<time> (-2, -3, ... when another run made it first); locked against a second run there."""
    if scoring.output_dir:
        folder = Path(scoring.output_dir)
        _check_output_folder(folder, scoring.overwrite, scoring.run_options)
        make_folder(folder, "output folder")
    else:
        folder = new_folder(Path("runs") / f"test-{datetime.now():%Y%m%d-%H%M%S}", "output folder")
    return folder, lock_run_folder(folder, "test.py run or training")


def run_test(restored: Restored) -> dict | None:
    """Evaluate a labelled test set (scores.csv, metrics.json) or score ``--input`` files with the restored
    networks, logging to test.log in the output folder."""
    scoring = restored.scoring
    device = resolve_device(scoring.device)
    choose_kernels(device, scoring.deterministic)
    place_model(restored.model, device, scoring.channels_last)
    folder, lock = _claim_output_folder(scoring)
    try:
        configure_logging(folder / "test.log")
        if scoring.inputs:
            score_inputs(restored, device, folder)
            return None
        return evaluate_test_set(restored, device, folder)
    finally:
        lock.close()

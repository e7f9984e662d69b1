"""test.py's work: rebuild the networks from a checkpoint (or the release's files), then either
evaluate a labelled test set or score unlabelled recordings against a stored threshold."""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, TextIO

import torch

from data import ClipSet, load_datasets, load_unlabelled
from data.console import UserError, make_folder
from data.files import check_writable, identity, write_json
from grlnet.checkpoint import RELEASED_FILES, load_released, load_train_checkpoint, load_weights
from grlnet.cli import configure_logging, log
from grlnet.features import PAPER_SCORE, FeatureScorer
from grlnet.metrics import format_labelled_metrics, labelled_metrics
from grlnet.plots import redraw
from grlnet.results import decide, is_score_file, save_reconstruction_examples, write_group_tables, write_scores_csv
from grlnet.run_folder import LOCK_FILE, lock_run_folder, new_folder, owning_run
from grlnet.runtime import autocast_context, choose_kernels, place_model, resolve_device
from grlnet.scoring import score_clips
from network import NETWORKS, GRLNet
from opts import RELEASE_PRESET, build_parser, given_option_names, group_options, network_length, resolve_presets

# test.py's --help: what scoring reads; the training options stay accepted (a checkpoint brings them).
TEST_GROUPS = ("paths", "clips", "signal", "windows", "model", "score", "speed", "run_folder", "test")
# Stored options that define the networks and the score: a checkpoint always brings its own, and one
# given on the command line must agree with it. The sample rate is checked on its own (_sample_rate).
MODEL_OPTIONS = tuple(name for name in group_options("signal", "windows", "model") if name != "sample_rate")
# Stored options of how it was run: used unless the command line gives them (another --score ranks a
# labelled test set by another stored score; a larger batch scores faster; --no-bf16 scores in fp32,
# within rounding of the bf16 scores; a --deterministic run is scored with the same repeatable kernels).
RUN_OPTIONS = (*group_options("score"), "batch_size", "bf16", "deterministic")
# Options that name a data set: scoring --input files reads none, so it refuses them.
DATA_SET_OPTIONS = group_options("paths", "clips")
# Stored options that name the data: used when the command line names no data, unless it gives them
# (the seed draws the embedded data set).
DATA_OPTIONS = (*DATA_SET_OPTIONS, "seed")
# Options only scoring --input files uses.
INPUT_OPTIONS = ("threshold", "output")


def parse_test_args(argv: Sequence[str] | None = None, description: str = "GRLNet") -> argparse.Namespace:
    """test.py's options, with ``given_options``: the names the command line sets, which a checkpoint's
    stored values must never silently replace (a default looks the same as a given value otherwise)."""
    parser = build_parser(description, shown=TEST_GROUPS)
    opt = parser.parse_args(argv)
    opt.given_options = given_option_names(parser, argv)
    _refuse_ignored_options(opt)
    return opt


def _refuse_ignored_options(opt: argparse.Namespace) -> None:
    """Refuse options the chosen mode would ignore: data sets when scoring --input files, and --threshold
    or --output when evaluating a test set."""
    given = opt.given_options
    if opt.input:
        ignored, why = [name for name in DATA_SET_OPTIONS if name in given], "--input files are scored, not a data set"
    else:
        ignored, why = [name for name in INPUT_OPTIONS if name in given], "used only when scoring --input files"
    if ignored:
        raise UserError(f"{', '.join(f'--{name}' for name in ignored)}: would be ignored ({why}); leave "
                        f"{'them' if len(ignored) > 1 else 'it'} out")


def _refuse_other_value(opt: argparse.Namespace, name: str, stored_value: object, source: str) -> None:
    """Refuse an option given on the command line that the checkpoint's value would overrule."""
    value = getattr(opt, name)
    if name in opt.given_options and value != stored_value:
        raise UserError(f"--{name} {value} differs from the checkpoint's {stored_value} ({source}); "
                        "leave it out to use the checkpoint's")


def _sample_rate(opt: argparse.Namespace, stored: dict, trained: int | None, source: str) -> int | None:
    """The rate to resample WAV files to: a given --sample_rate, which must be the rate ``trained`` at
    (None: unknown), or else the checkpoint's own option (its training data were resampled to it)."""
    if "sample_rate" not in opt.given_options:
        return stored["sample_rate"]
    if trained is not None and opt.sample_rate != trained:
        raise UserError(f"--sample_rate {opt.sample_rate} differs from the {trained} Hz the checkpoint was "
                        f"trained at ({source}); give --sample_rate {trained}")
    return opt.sample_rate


def _use_stored_data(opt: argparse.Namespace, stored: dict) -> None:
    """Score the checkpoint's own data (the command line names none), keeping the data options it gives."""
    for name in DATA_OPTIONS:
        if name not in opt.given_options:
            setattr(opt, name, stored[name])


def _merge_checkpoint_options(opt: argparse.Namespace, stored: dict, trained_rate: int | None,
                              source: str) -> argparse.Namespace:
    """``opt`` with the checkpoint's model options and sample rate, and with its data unless the
    command line names data."""
    for name in MODEL_OPTIONS:
        _refuse_other_value(opt, name, stored[name], source)
        setattr(opt, name, stored[name])
    for name in RUN_OPTIONS:
        if name not in opt.given_options:
            setattr(opt, name, stored[name])
    opt.sample_rate = _sample_rate(opt, stored, trained_rate, source)
    if not (opt.input or opt.data_root or opt.train_root or opt.test_root):
        _use_stored_data(opt, stored)
    return resolve_presets(opt)


class Restored(NamedTuple):
    """What test.py scores with: the networks, the resolved options, and from a checkpoint its last
    decision threshold and where that comes from (for the score it was trained with), its feature scorer
    (None for the release's files) and the sample rate of its training data (None where unknown: the
    release's files, CSV data)."""

    model: GRLNet
    opt: argparse.Namespace
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


def _feature_scorer(state: dict, opt: argparse.Namespace) -> FeatureScorer | None:
    """The scorer of a checkpoint's stored feature models; None where it has none (saved before its first
    evaluation), which only the paper's score can do without."""
    if state.get("feature_models") is not None:
        return FeatureScorer(state["feature_models"])
    if opt.score != PAPER_SCORE:
        raise UserError(f"{opt.checkpoint}: saved before its first evaluation, it holds no statistics of normal "
                        f"windows for --score {opt.score}; score with --score {PAPER_SCORE}, or train an epoch")
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


def restore(opt: argparse.Namespace) -> Restored:
    """The networks named by ``--checkpoint`` or ``--model_dir``, with what scoring needs besides."""
    if bool(opt.checkpoint) == bool(opt.model_dir):
        raise UserError("give exactly one of --checkpoint FILE or --model_dir DIR")
    if opt.checkpoint:
        state = load_train_checkpoint(opt.checkpoint)
        _refuse_inside_an_epoch(state, opt.checkpoint)
        stored = state["options"]
        opt = _merge_checkpoint_options(opt, stored, state["sample_rate"], opt.checkpoint)
        model = GRLNet(network_length(opt), opt.global_filter)
        for name in NETWORKS:
            load_weights(getattr(model, name), state["models"][name], f"{opt.checkpoint} ({name})")
        threshold, source = _stored_threshold(state) if opt.score == stored.get("score") else (None, "")
        return Restored(model, opt, threshold, source, _feature_scorer(state, opt), state["sample_rate"])
    if opt.score not in (None, PAPER_SCORE):
        raise UserError(f"--score {opt.score}: the release's files hold no statistics of normal windows; they "
                        f"score with the paper's score only (--score {PAPER_SCORE})")
    for name, value in RELEASE_PRESET.items():  # the authors' weights are for the release's length
        if getattr(opt, name) is None:
            setattr(opt, name, value)
    opt = resolve_presets(opt)
    model = GRLNet(network_length(opt), "released")
    load_released(model, opt.model_dir)
    return Restored(model, opt)


def _require_trained_rate(opt: argparse.Namespace, trained_rate: int | None, clips: ClipSet) -> None:
    """Refuse decoded data at another sample rate than the checkpoint's training data: the networks
    would see every frequency shifted and score nonsense without a word."""
    rate = clips.sample_rate
    if rate is not None and trained_rate is not None and rate != trained_rate:
        raise UserError(f"{clips.names[0]}: sample rate {rate} Hz, but {opt.checkpoint} was trained on "
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


def _check_output(output: Path, read: Sequence[str | Path], overwrite: bool) -> None:
    """Before any data are decoded: refuse an --output that is or lies inside what is read (``_refuse_read``),
    that would be among a training run's files (in its folder, its checkpoints/ or figures/) by whatever path,
    whose folder cannot be written in, and an existing file other than a score file test.py wrote, unless
    ``overwrite``."""
    if output.is_dir():
        raise UserError(f"{output}: --output is a folder; give a file name, such as {output / 'scores.csv'}")
    _refuse_read(output, read)
    run = owning_run(output)
    if run is not None:
        raise UserError(f"{output}: --output lies in the training run's folder {run[0]} (it holds "
                        f"{', '.join(run[1])}), whose files are the run's own; give a file elsewhere")
    check_writable(output.parent, "folder of --output")
    if output.exists() and not overwrite and not is_score_file(output):
        raise UserError(f"{output}: --output exists and is not a score file written by test.py; give another "
                        "file name, or --overwrite to replace it")


def _check_output_folder(folder: Path, overwrite: bool) -> None:
    """Refuse as test.py's output folder a training run's folder, its checkpoints/ or figures/, by whatever
    path (its scores, metrics, figures would be replaced by these, or mixed with its own), a folder that cannot
    be written in, and, unless ``overwrite``, a folder holding files that test.py did not write (no test.log)."""
    run = owning_run(folder, is_folder=True)
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


def _files_read(opt: argparse.Namespace) -> list[str | Path]:
    """What scoring --input files reads: the inputs (files or folders) and the checkpoint or the release's files."""
    released = [Path(opt.model_dir) / name for name in RELEASED_FILES.values()] if opt.model_dir else []
    return [*opt.input, opt.checkpoint or "", *released]


def score_inputs(restored: Restored, device: torch.device, folder: Path) -> None:
    """Score unlabelled ``--input`` files, decide each at the threshold, write them with the decisions."""
    opt, model = restored.opt, restored.model
    threshold = opt.threshold if opt.threshold is not None else restored.threshold
    if threshold is None:
        raise UserError(f"no decision threshold for --score {opt.score}: give --threshold (the release's files "
                        "store none, nor does a checkpoint saved before its first epoch ended, and a checkpoint "
                        "stores one for the score it was trained with only)")
    output = Path(opt.output or folder / "scores.csv")
    _check_output(output, _files_read(opt), opt.overwrite)
    make_folder(output.parent, "folder of --output")
    clips = load_unlabelled(opt.input, opt)
    _refuse_read(output, clips.names)  # a file reached through a link in an input folder
    _require_trained_rate(opt, restored.sample_rate, clips)
    scores = score_clips(model, clips, opt, device, autocast_context(device, opt.bf16), scorer=restored.scorer)
    for name, score in zip(clips.names, scores["score"], strict=True):
        log.info("%s  score %.6f  %s", name, score, decide(score, threshold))
    source = "--threshold" if opt.threshold is not None else restored.threshold_source
    log.info("threshold %.6f (%s)", threshold, source)
    write_scores_csv(clips, scores, output, threshold)
    log.info("scores written to %s", output)


def evaluate_test_set(restored: Restored, device: torch.device, folder: Path) -> dict:
    """Score a labelled test set; write scores.csv, metrics.json, group tables and figures; return the metrics."""
    opt, model = restored.opt, restored.model
    _, test_set = load_datasets(opt, need_train=False)
    _require_trained_rate(opt, restored.sample_rate, test_set)
    scores = score_clips(model, test_set, opt, device, autocast_context(device, opt.bf16), scorer=restored.scorer)
    metrics = labelled_metrics(test_set.binary_labels(), scores["score"], test_set.names, scores)
    write_scores_csv(test_set, scores, folder / "scores.csv")
    write_json(folder / "metrics.json", metrics, "metrics file")
    write_group_tables(metrics, folder)
    save_reconstruction_examples(model, test_set, opt, device, folder / "figures" / "examples.npz")
    figures = redraw(folder)
    log.info("%d test clips scored; in %s: scores.csv, metrics.json, test.log, figures/ (%s)", len(test_set),
             folder, ", ".join(p.name for p in figures))
    log.info(format_labelled_metrics(metrics))
    return metrics


def _claim_output_folder(opt: argparse.Namespace) -> tuple[Path, TextIO]:
    """test.py's output folder, checked (``_check_output_folder``) and created, or by default a new
    runs/test-<time> (-2, -3, ... when another run made it first); locked against a second run there."""
    if opt.output_dir:
        folder = Path(opt.output_dir)
        _check_output_folder(folder, opt.overwrite)
        make_folder(folder, "output folder")
    else:
        folder = new_folder(Path("runs") / f"test-{datetime.now():%Y%m%d-%H%M%S}", "output folder")
    return folder, lock_run_folder(folder, "test.py run or training")


def test(opt: argparse.Namespace) -> dict | None:
    """Evaluate a labelled test set (scores.csv, metrics.json) or score ``--input`` files."""
    configure_logging()
    restored = restore(opt)
    device = resolve_device(restored.opt.device)
    choose_kernels(device, restored.opt.deterministic)
    place_model(restored.model, device, restored.opt.channels_last)
    folder, lock = _claim_output_folder(restored.opt)
    try:
        configure_logging(folder / "test.log")
        if restored.opt.input:
            score_inputs(restored, device, folder)
            return None
        return evaluate_test_set(restored, device, folder)
    finally:
        lock.close()

"""test.py's work: rebuild the networks from a checkpoint (or the release's files), then either
evaluate a labelled test set or score unlabelled recordings against a stored threshold."""
from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import torch

from checkpoint import load_file, load_released, load_weights
from data import load_datasets, load_unlabelled
from errors import UserError
from main import (autocast_context, configure_logging, log, place_model, resolve_device,
                  write_scores_csv)
from metrics import compute_metrics, format_metrics
from network import GRLNet
from opts import RELEASE_PRESET, network_length, resolve_presets
from plots import redraw, save_reconstruction_examples
from scoring import score_clips

# Stored options that define the networks and the score: a checkpoint always brings its own.
MODEL_OPTIONS = ("mess_length", "segment_length", "segment_hop", "global_filter",
                 "comprehensive_output_factor", "calibration_clips", "batch_size", "bf16")
# Stored options that name the data: used when the command line names no data.
DATA_OPTIONS = ("train_root", "train_label_path", "test_root", "test_label_path", "data_root",
                "train_normal_files", "sample_rate", "synthetic_train_clips", "synthetic_test_clips", "seed")


def _merge_checkpoint_options(opt: argparse.Namespace, stored: dict, source: str) -> argparse.Namespace:
    if opt.mess_length is not None and opt.mess_length != stored["mess_length"]:
        raise UserError(f"--mess_length {opt.mess_length} differs from the checkpoint's "
                        f"{stored['mess_length']} ({source}); leave it out to use the checkpoint's")
    for name in MODEL_OPTIONS:  # an option newer than the checkpoint keeps its default
        setattr(opt, name, stored.get(name, getattr(opt, name)))
    names_data = opt.input or opt.data_root or opt.train_root or opt.test_root
    if not names_data:
        for name in DATA_OPTIONS:
            setattr(opt, name, stored[name])
    return resolve_presets(opt)


class Restored(NamedTuple):
    """What test.py scores with: the networks, the resolved options, and from a checkpoint its last
    EER threshold and its score calibration (None for the release's files and uncalibrated runs)."""

    model: GRLNet
    opt: argparse.Namespace
    threshold: float | None = None
    calibration: torch.Tensor | None = None


def restore(opt: argparse.Namespace) -> Restored:
    """The networks named by ``--checkpoint`` or ``--model_dir``, with what scoring needs besides."""
    if bool(opt.checkpoint) == bool(opt.model_dir):
        raise UserError("give exactly one of --checkpoint FILE or --model_dir DIR")
    if opt.checkpoint:
        state = load_file(opt.checkpoint)
        if not isinstance(state, dict) or "models" not in state or "options" not in state:
            raise UserError(f"{opt.checkpoint}: not a GRLNet checkpoint written by train.py "
                            "(for the release's three .pth files use --model_dir)")
        opt = _merge_checkpoint_options(opt, state["options"], opt.checkpoint)
        model = GRLNet(network_length(opt), opt.global_filter)
        for name, module in model.named_children():
            load_weights(module, state["models"][name], f"{opt.checkpoint} ({name})")
        threshold = state["metrics"][-1]["threshold"] if state["metrics"] else None
        return Restored(model, opt, threshold, state.get("calibration"))
    for name, value in RELEASE_PRESET.items():  # the authors' weights are for the release's length
        if getattr(opt, name) is None:
            setattr(opt, name, value)
    opt = resolve_presets(opt)
    model = GRLNet(network_length(opt), "released")
    load_released(model, opt.model_dir)
    return Restored(model, opt)


def test(opt: argparse.Namespace) -> dict | None:
    """Evaluate a labelled test set (scores.csv, metrics.json) or score ``--input`` files."""
    configure_logging()
    model, opt, stored_threshold, calibration = restore(opt)
    device = resolve_device(opt)
    place_model(model, device, opt)
    folder = Path(opt.output_dir or Path("runs") / f"test-{datetime.now():%Y%m%d-%H%M%S}")
    folder.mkdir(parents=True, exist_ok=True)
    configure_logging(folder / "test.log")
    autocast = autocast_context(device, opt)

    if opt.input:
        threshold = opt.threshold if opt.threshold is not None else stored_threshold
        if threshold is None:
            raise UserError("no decision threshold: give --threshold (the release's files store none)")
        clips = load_unlabelled(opt.input, opt)
        scores = score_clips(model, clips, opt, device, autocast, calibration=calibration)
        for name, score in zip(clips.names, scores["score"]):
            log.info("%s  score %.6f  %s", name, score, "ABNORMAL" if score >= threshold else "normal")
        log.info("threshold %.6f (%s)", threshold, "--threshold" if opt.threshold is not None
                 else "the checkpoint's last EER threshold")
        output = Path(opt.output or folder / "scores.csv")
        write_scores_csv(clips, scores, output)
        log.info("scores written to %s", output)
        return None

    _, test_set = load_datasets(opt, need_train=False)
    scores = score_clips(model, test_set, opt, device, autocast, calibration=calibration)
    metrics = compute_metrics(test_set.binary_labels(), scores["score"])
    write_scores_csv(test_set, scores, folder / "scores.csv")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    save_reconstruction_examples(model, test_set, opt, device, folder / "figures" / "examples.npz")
    redraw(folder)
    log.info("%d test clips scored; scores.csv and metrics.json in %s", len(test_set), folder)
    log.info(format_metrics(metrics))
    return metrics

"""GRLNet training: set-up, then the epoch loop (train, evaluate, log, checkpoint), resumable; and
test.py's body (``test``): the checkpoint's stored options merged with the command line's, then the
scoring in grlnet/evaluate.py.

The step and its losses are in grlnet/steps.py, where and how the networks run in grlnet/runtime.py,
the run folder in grlnet/run_folder.py, the files a run writes besides checkpoints and figures in
grlnet/results.py.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from data import ClipSet, drawn_windows, hold_out_for_threshold, hold_out_last, load_datasets
from data.console import DivergedError, UserError, progress
from grlnet.checkpoint import StoredOptions, load_train_checkpoint, load_weights, save_checkpoint
from grlnet.cli import closing_log, configure_logging, log
from grlnet.distributed import (
    SINGLE_PROCESS,
    Process,
    average_tensor,
    broadcast_value,
    init_process,
    share_buffers,
    shutdown,
    wait_for_all,
)
from grlnet.evaluate import Restored, load_scoring_checkpoint, restore_checkpoint, restore_released, run_test
from grlnet.metrics import format_held_out_threshold, format_labelled_metrics, held_out_threshold, labelled_metrics
from grlnet.plots import redraw
from grlnet.results import save_reconstruction_examples, write_group_tables, write_metrics_csv, write_scores_csv
from grlnet.run_folder import claim_run_folder, default_run_folder, refuse_earlier_run, setup_run_folder
from grlnet.runtime import (
    autocast_context,
    build_optimizers,
    choose_kernels,
    compile_networks,
    compiled_step_context,
    place_model,
    random_state,
    resolve_device,
    restore_random_state,
    uses_bf16,
)
from grlnet.scoring import fit_and_score
from grlnet.steps import LOSSES, STEP_STATS, STEPS, Networks, StepSettings, format_step_stats
from network import GRLNet
from opts import (
    REMOVED_OPTIONS_COMMIT,
    RESUME_MAY_CHANGE,
    changed_options,
    checkpoint_test_options,
    completed_options,
    data_settings,
    learning_rates,
    network_length,
    option_defaults,
    options_of_every_run,
    released_test_options,
    removed_options_used,
    scoring_settings,
    step_settings,
    stored_option_problems,
    test_scoring,
)

REFRESH_EVERY = 20  # steps between progress-bar refreshes (the only host syncs on CUDA)
# The options of the three learning rates, which a diverged run is told to lower.
LEARNING_RATE_OPTIONS = ("r_g_net_learning_rate", "l_g_net_learning_rate", "d_net_learning_rate")
# A checkpoint's entries that resuming reads.
RESUME_ENTRIES = {"models", "optimizers", "options", "epoch", "step", "step_stats", "metrics", "rng", "world_size",
                  "train_files", "feature_models"}
# How a checkpoint's stored options are completed and checked: as the options of this version define them.
STORED_OPTIONS = StoredOptions(frozenset(option_defaults()), completed_options, stored_option_problems)


# ---------------------------------------------------------------- set-up

@dataclass
class RunData:
    """A run's clips, each set for one job: ``train`` trains; ``test`` is the labelled test set (None: a
    run on normal recordings alone); ``threshold`` holds the normal clips held out to set its decision
    threshold on (without a test set); ``feature_fit`` the normal clips held out to fit the feature
    scores on (``--calibration_clips``)."""

    train: ClipSet
    test: ClipSet | None
    threshold: ClipSet | None = None
    feature_fit: ClipSet | None = None


def load_run_data(opt: argparse.Namespace) -> RunData:
    """The data ``opt`` names, with the clips held out of training that it asks for."""
    train, test = load_datasets(data_settings(opt))
    feature_fit = threshold = None
    if opt.calibration_clips:
        train, feature_fit = hold_out_last(train, opt.calibration_clips, "--calibration_clips")
    if test is None:
        train, threshold = hold_out_for_threshold(train, opt.threshold_clips)
    return RunData(train, test, threshold, feature_fit)


@dataclass
class Run:
    """What the loop runs with: the parsed options and those stored with the run (the folder it runs in
    filled in), device and process, data, run folder (with its lock), the
    networks, their optimizers and compiled forms, the step's settings, and on the device what the training
    windows come from: every training window [W, 1, L] (``--train_windows_per_clip 0``), else the training
    clips [N, T] that each epoch draws its windows from."""

    opt: argparse.Namespace
    options: dict
    device: torch.device
    process: Process
    data: RunData
    folder: Path
    lock: TextIO | None
    model: nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    nets: Networks
    step_settings: StepSettings
    training_signals: torch.Tensor


def place(opt: argparse.Namespace) -> tuple[torch.device, Process]:
    """The device and, under torchrun, this process's place in the group."""
    device = resolve_device(opt.device)
    process = init_process(device.type)
    if process.distributed and opt.update == "released":
        raise UserError("--update released runs in one process only (its two backward passes "
                        "through the same forward do not fit DistributedDataParallel)")
    if device.type == "cuda":
        device = torch.device("cuda", process.local_rank)
    return device, process


def set_up(opt: argparse.Namespace) -> tuple[Run, tuple[Path, dict] | None]:
    """Everything a run needs before its first step, and the checkpoint ``--resume`` names (read before
    options.json is rewritten), if any."""
    device, process = place(opt)
    choose_kernels(device, opt.deterministic)
    torch.manual_seed(opt.seed)  # the networks' initialisation and the input noise
    if opt.output_dir:
        refuse_earlier_run(Path(opt.output_dir), resume=opt.resume, overwrite=opt.overwrite,
                           run_options=options_of_every_run())  # before minutes of decoding; claimed below
    data = load_run_data(opt)
    output_dir = broadcast_value(opt.output_dir or default_run_folder(), process)
    lock = claim_run_folder(output_dir, resume=opt.resume, overwrite=opt.overwrite,
                            run_options=options_of_every_run(), is_main=process.is_main)
    resumed = read_resume_checkpoint(opt, Path(output_dir), process.world_size, data.train) if opt.resume else None
    options = {**vars(opt), "output_dir": output_dir}  # stored as run: with the folder it ran in
    folder = setup_run_folder(output_dir, options, process.is_main)
    describe_run(opt, data, device, process, folder)
    model = GRLNet(network_length(opt), opt.global_filter)
    if opt.sync_batchnorm and process.distributed and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # before place_model, whose channels-last keeps it
    model = place_model(model, device, opt.channels_last)
    if process.rank:
        torch.manual_seed(opt.seed + 7919 * process.rank)  # each process its own noise
    optimizers = build_optimizers(model, learning_rates(opt), device, process.world_size)
    nets = compile_networks(model, device, opt.compile, process)
    if opt.train_windows_per_clip:
        signals = torch.from_numpy(data.train.signals)
    else:
        signals, _ = data.train.windows(opt.segment_length, opt.segment_hop)
    signals = signals.to(device)  # on CUDA: resident on the GPU, no copies per step
    run = Run(opt, options, device, process, data, folder, lock, model, optimizers, nets, step_settings(opt),
              signals)
    return run, resumed


def describe_run(opt: argparse.Namespace, data: RunData, device: torch.device, process: Process,
                 folder: Path) -> None:
    """The first lines of every run: which data, which settings, where the results go."""
    train, test = data.train, data.test
    what = {"synthetic": "embedded synthetic valve data set (demo preset)",
            "csv": "release CSV layout", "wav": "WAV recordings"}[opt.data_kind]
    windows = (f"windows of {opt.segment_length} every {opt.segment_hop} (clip score = window mean)"
               if opt.segment_length else "whole signals")
    if opt.train_windows_per_clip:
        windows += f", training on {opt.train_windows_per_clip} drawn windows per clip an epoch"
    if opt.eval_windows_per_clip:
        windows += (f", evaluations before the last epoch on {opt.eval_windows_per_clip} windows per clip "
                    "(the last on every window)")
    if test is None:
        log.info("data: %s; %d training clips (normal), no labelled test set: the last %d normal clips (name "
                 "order) are held out, and the decision threshold is the %g-quantile of their scores "
                 "(--threshold_clips, --threshold_quantile)", what, len(train), len(data.threshold),
                 opt.threshold_quantile)
    else:
        log.info("data: %s; %d training clips (normal), %d test clips (%d abnormal)", what, len(train),
                 len(test), int(test.binary_labels().sum()))
    log.info("settings: length %d, %s, %d epoch%s, batch %d, update %s, noise %s (SNR %g dB), "
             "global filter %s, seed %d, device %s%s%s%s", opt.mess_length, windows, opt.epochs,
             "s" * (opt.epochs != 1), opt.batch_size, opt.update, opt.noise, opt.snr, opt.global_filter, opt.seed,
             device, ", deterministic kernels" if opt.deterministic else "",
             f", {process.world_size} processes (batch {opt.batch_size} each)" if process.distributed else "",
             ", bf16 autocast" if uses_bf16(device, opt.bf16) else ", fp32")
    rates = learning_rates(opt)
    if rates.factor(process.world_size) != 1:
        log.info("learning rates x %.4g (--learning_rate_scaling %s, batch %d in all): %s",
                 rates.factor(process.world_size), opt.learning_rate_scaling, opt.batch_size * process.world_size,
                 ", ".join(f"{name} {rate:g}" for name, rate in rates.by_network(process.world_size).items()))
    fitted_on = (f"the windows of {opt.calibration_clips} normal training clips held out of training (the last in "
                 "name order, --calibration_clips)" if opt.calibration_clips else "the training windows")
    log.info("score: %s (--score); every score is computed and logged; the feature scores are fitted on %s",
             opt.score, fitted_on)
    log.info("run folder: %s (options.json, train.log, metrics.csv, %s, checkpoints/, figures/)",
             folder, "scores.csv" if test is not None else "threshold_scores.csv")


def training_files(train: ClipSet) -> list[str]:
    """The training clips' file names, without their folders (data may move between runs, not change)."""
    return [Path(name).name for name in train.names]


def read_resume_checkpoint(opt: argparse.Namespace, folder: Path, world_size: int, train: ClipSet
                           ) -> tuple[Path, dict]:
    """The checkpoint ``--resume`` names (bare: the run ``folder``'s last one), refused when it is not a
    train.py checkpoint, was saved with settings that define another run (opts.RESUME_MAY_CHANGE) or with a
    removed study option (opts.REMOVED_OPTIONS), on other training files than ``train``'s, or inside an
    epoch by another number of processes (whose batches were other ones)."""
    path = folder / "checkpoints" / "last.pt" if opt.resume == "last" else Path(opt.resume)
    state = load_train_checkpoint(path, STORED_OPTIONS, RESUME_ENTRIES)
    removed = removed_options_used(state["options"])
    if removed:
        raise UserError(f"{path}: saved by a run with {', '.join(removed)}, a study option this version does not "
                        f"have (docs/STUDIES.md, \"Superseded studies\"); resume it with commit "
                        f"{REMOVED_OPTIONS_COMMIT}, or start a new run")
    changed = changed_options(state["options"], opt, RESUME_MAY_CHANGE)
    if changed:
        raise UserError(f"{path}: saved by a run with other settings; resume with that run's options or "
                        f"start a new run ({'; '.join(changed)})")
    saved_files, files = state["train_files"], training_files(train)
    if saved_files != files:
        gone, new = sorted(set(saved_files) - set(files)), sorted(set(files) - set(saved_files))
        raise UserError(f"{path}: trained on {len(saved_files)} files, and the training data now hold {len(files)}"
                        f" (gone: {', '.join(gone[:3]) or 'none'}; new: {', '.join(new[:3]) or 'none'}); a resumed "
                        "run must train on the same files: restore them, or start a new run")
    saved_world_size = state["world_size"]
    if state["step"] and saved_world_size != world_size:
        raise UserError(f"{path}: saved inside epoch {state['epoch']} by {saved_world_size} process(es), and "
                        f"this run has {world_size}; each process's share of an epoch's batches depends on "
                        f"their number, so resume with torchrun --nproc_per_node {saved_world_size} (or "
                        "without torchrun for 1), or from a checkpoint saved at the end of an epoch")
    return path, state



# ---------------------------------------------------------------- the loop

def batch_order(count: int, opt: argparse.Namespace, epoch: int, process: Process = SINGLE_PROCESS,
                device: torch.device | None = None) -> list[torch.Tensor]:
    """This process's training batches of one epoch, reproducible from (seed, epoch) alone, so
    resuming in the middle of an epoch replays the same order; each process gets its own share."""
    sampler = DistributedSampler(range(count), num_replicas=process.world_size, rank=process.rank,
                                 shuffle=opt.train_batch_shuffle, seed=opt.seed)
    sampler.set_epoch(epoch)
    batches = list(torch.tensor(list(sampler), device=device).split(opt.batch_size))
    if opt.train_drop_last and len(batches) > 1 and len(batches[-1]) < opt.batch_size:
        batches.pop()
    if not batches or (len(batches[0]) < 2 and opt.batch_size > 1):
        raise UserError(f"too few training windows ({count}) for batch size {opt.batch_size}")
    return batches


def nonfinite_weight(model: nn.Module) -> str | None:
    """The first of ``model``'s parameters and buffers holding a NaN or infinite value, or None (one host
    sync): a step can leave such weights behind finite losses, which only the next step would show."""
    tensors = [(name, t) for name, t in itertools.chain(model.named_parameters(), model.named_buffers())
               if t.is_floating_point()]
    finite = torch.stack([torch.isfinite(t).all() for _, t in tensors]).tolist()
    return next((name for (name, _), ok in zip(tensors, finite, strict=True) if not ok), None)


def diverged(what: str, checkpoint: Path, opt: argparse.Namespace) -> DivergedError:
    """The error that stops a diverged run: what went NaN or infinite, what the run's ``checkpoint`` holds
    (saves come after the checks, so only finite weights and losses) and what to do: resuming repeats the
    same steps at the same learning rates, which a resumed run cannot change, so they diverge again."""
    rates = ", ".join(f"--{name} {getattr(opt, name):g}" for name in LEARNING_RATE_OPTIONS)
    if checkpoint.is_file():
        kept = (f"the last checkpoint, {checkpoint}, is kept: its weights and losses are finite, but --resume would "
                "repeat the same steps at the same learning rates and diverge again")
    else:
        kept = "no checkpoint was saved before it"
    return DivergedError(f"training diverged: {what}; {kept}; start a new run with lower learning rates (now "
                         f"{rates}; --overwrite replaces this run)")


def check_finite(step_stats: torch.Tensor, epoch: int, first_step: int, checkpoint: Path,
                 opt: argparse.Namespace) -> None:
    """Stop on the first step whose losses are NaN or infinite, naming it and the loss (checked before every
    save, so no checkpoint holds a step that diverged)."""
    losses = step_stats[:, [STEP_STATS.index(name) for name in LOSSES]]
    bad = ~torch.isfinite(losses)
    if bad.any():
        row, column = map(int, bad.nonzero()[0])
        raise diverged(f"{LOSSES[column]} is {losses[row, column].item()} at epoch {epoch}, step "
                       f"{first_step + row}", checkpoint, opt)


def check_weights(model: nn.Module, epoch: int, steps: int, checkpoint: Path, opt: argparse.Namespace) -> None:
    """Stop when ``model``'s weights hold NaN or infinite values after ``steps`` steps of an epoch, naming the
    weight: checked before every save and evaluation, so no checkpoint holds such weights."""
    weight = nonfinite_weight(model)
    if weight is not None:
        raise diverged(f"{weight} holds NaN or infinite values after {steps} steps of epoch {epoch}", checkpoint, opt)


def check_finite_scores(scores: dict[str, np.ndarray], epoch: int, checkpoint: Path, opt: argparse.Namespace) -> None:
    """Stop when an evaluation's scores are NaN or infinite: the networks' outputs overflow on finite weights."""
    broken = [name for name, values in scores.items() if not np.isfinite(values).all()]
    if broken:
        raise diverged(f"the {', '.join(broken)} scores of the evaluation after epoch {epoch} are NaN or infinite "
                       "(the networks' outputs overflow)", checkpoint, opt)


def evaluated_windows(per_clip: int) -> str:
    """Which windows an evaluation scored, for its epoch's log line."""
    return f"{per_clip} windows per clip" if per_clip else "every window"


def progress_postfix(step_stats: torch.Tensor) -> dict[str, str]:
    """A step's losses and D's mean outputs on real signals and reconstructions (a stacked row, one host
    sync), for the progress bar."""
    stats = dict(zip(STEP_STATS, step_stats.tolist(), strict=True))
    shown = {"loss_d": stats["loss_d"], "loss_g": stats["loss_g"], "D(real)": stats["d_real"],
             "D(rec)": (stats["d_regional"] + stats["d_local"]) / 2}
    return {name: f"{value:.3g}" for name, value in shown.items()}


class Trainer:
    """The loop's state (epoch, step, per-step statistics, metrics, feature models), checkpointed and
    resumed; a stop request ends it after the current step."""

    def __init__(self, run: Run, resumed: tuple[Path, dict] | None = None):
        self.run = run
        self.history: list[dict] = []
        self.epoch, self.step, self.step_stats = 0, 0, None
        self.feature_models, self.fit_seconds = None, 0.0
        self.stop_requested = False
        self.saved_at = time.monotonic()
        if resumed:
            self.restore(*resumed)

    def request_stop(self, signum: int, frame: object) -> None:
        """Signal handler: finish the current step, then save and stop."""
        self.stop_requested = True

    # -- checkpoints

    def state(self) -> dict:
        run = self.run
        return {
            "models": {name: module.state_dict() for name, module in run.model.named_children()},
            "optimizers": {name: o.state_dict() for name, o in run.optimizers.items()},
            "options": run.options, "epoch": self.epoch, "step": self.step,
            "step_stats": None if self.step_stats is None else self.step_stats.cpu(),
            "metrics": self.history, "feature_models": self.feature_models,
            "rng": random_state(run.device), "world_size": run.process.world_size,
            "train_files": training_files(run.data.train), "sample_rate": run.data.train.sample_rate,
            "threshold_clips": None if run.data.threshold is None else len(run.data.threshold),
        }

    @property
    def last_checkpoint(self) -> Path:
        """Where the run's latest checkpoint is saved (``--resume`` continues from it)."""
        return self.run.folder / "checkpoints" / "last.pt"

    def save(self, name: str = "last") -> None:
        self.saved_at = time.monotonic()
        if self.run.process.is_main:
            save_checkpoint(self.state(), self.run.folder / "checkpoints" / f"{name}.pt")

    def restore(self, path: Path, state: dict) -> None:
        """Continue from a checkpoint read by ``read_resume_checkpoint``."""
        run = self.run
        for name, module in run.model.named_children():
            load_weights(module, state["models"][name], f"{path} ({name})")
        for name, optimizer in run.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.epoch, self.step, self.history = state["epoch"], state["step"], state["metrics"]
        self.step_stats = None if state["step_stats"] is None else state["step_stats"].to(run.device)
        if run.process.is_main:
            restore_random_state(state["rng"], run.device)
        else:  # only rank 0's generators are saved; the others draw new noise, seeded by where the run resumes
            seed = np.random.SeedSequence([run.opt.seed, run.process.rank, self.epoch, self.step])
            torch.manual_seed(int(seed.generate_state(1)[0]))
        self.feature_models = state["feature_models"]
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)

    # -- the epochs

    def epoch_windows(self) -> torch.Tensor:
        """This epoch's training windows [W, 1, L]: every window, or those drawn for this epoch
        (``--train_windows_per_clip``), the same after a resume."""
        opt, signals = self.run.opt, self.run.training_signals
        if not opt.train_windows_per_clip:
            return signals
        return drawn_windows(signals, opt.segment_length, opt.train_windows_per_clip, opt.seed, self.epoch)

    def train_epoch(self) -> None:
        """Train one epoch from ``self.step``; per-step statistics stay on the device."""
        opt, run = self.run.opt, self.run
        step_fn = STEPS[run.step_settings.update]
        windows = self.epoch_windows()
        batches = batch_order(len(windows), opt, self.epoch, run.process, run.device)
        if self.step_stats is None:
            self.step_stats = torch.zeros(len(batches), len(STEP_STATS), device=run.device)
        run.model.train()
        bar = progress(total=len(batches), initial=self.step, desc=f"epoch {self.epoch}", unit="step",
                       quiet=opt.quiet)
        checked = self.step
        while self.step < len(batches) and not self.stop_requested:
            x = windows[batches[self.step]]
            with compiled_step_context(run.device, opt.compile, opt.update):
                stats = step_fn(run.nets, run.model, run.optimizers, x, run.step_settings,
                                autocast_context(run.device, opt.bf16))
            self.step_stats[self.step] = stats.stacked()
            self.step += 1
            bar.update()
            save_due = opt.checkpoint_minutes and time.monotonic() - self.saved_at > 60 * opt.checkpoint_minutes
            if save_due or run.device.type == "cpu" or self.step % REFRESH_EVERY == 0 or self.step == len(batches):
                recent = self.step_stats[checked:self.step].cpu()
                check_finite(recent, self.epoch, checked, self.last_checkpoint, opt)  # before any save
                checked = self.step
                bar.set_postfix(progress_postfix(recent[-1]))
            if save_due:
                check_weights(run.model, self.epoch, self.step, self.last_checkpoint, opt)
                self.save()
        check_finite(self.step_stats[checked:self.step].cpu(), self.epoch, checked, self.last_checkpoint, opt)
        check_weights(run.model, self.epoch, self.step, self.last_checkpoint, opt)  # before an interrupt's save
        bar.close()

    def evaluated_windows_per_clip(self) -> int:
        """Windows per clip this epoch's evaluation fits and scores on: all (0) in the last epoch,
        else ``--eval_windows_per_clip``."""
        return 0 if self.epoch >= self.run.opt.epochs - 1 else self.run.opt.eval_windows_per_clip

    def evaluate(self) -> tuple[dict, dict]:
        """Fit the feature scores on normal windows, then score the labelled test set and compute its
        metrics, or, without one, score the held-out normal clips and set the decision threshold on them;
        on every window in the last epoch, on ``--eval_windows_per_clip`` of each clip before it."""
        run, data = self.run, self.run.data
        share_buffers(run.model, run.process)
        autocast = autocast_context(run.device, run.opt.bf16)
        normal = data.train if data.feature_fit is None else data.feature_fit
        per_clip = self.evaluated_windows_per_clip()
        clips = data.threshold if data.test is None else data.test
        try:
            evaluation = fit_and_score(run.model, normal, clips, scoring_settings(run.opt), run.device, autocast,
                                       run.process, per_clip)
        except DivergedError as err:  # features.require_finite: the networks' outputs overflow
            raise diverged(f"{err} in the evaluation after epoch {self.epoch}", self.last_checkpoint, run.opt) from None
        self.feature_models, self.fit_seconds = evaluation.feature_models, round(evaluation.fit_seconds, 2)
        scores = evaluation.scores
        check_finite_scores(scores, self.epoch, self.last_checkpoint, run.opt)
        if data.test is None:
            return held_out_threshold(scores["score"], run.opt.threshold_quantile), scores
        return labelled_metrics(data.test.binary_labels(), scores["score"], data.test.names, scores), scores

    def describe_evaluation(self, metrics: dict) -> tuple[str, str]:
        """An evaluation in an epoch's log: the end of its line, and the lines under it."""
        if self.run.data.test is None:
            return (f"threshold {metrics['threshold']:.6f}",
                    format_held_out_threshold(metrics, self.run.opt.threshold_quantile, len(self.run.data.threshold)))
        return (f"AUC {metrics['auc']:.4f}  pAUC {metrics['pauc']:.4f}  EER {metrics['eer']:.4f}",
                format_labelled_metrics(metrics, with_auc=False))

    def run_epochs(self) -> dict:
        """Train the remaining epochs: (1) train one epoch, (2) fit the feature scores and evaluate,
        (3) log, checkpoint and write metrics.csv; then the final files."""
        opt, scores = self.run.opt, None
        if self.epoch >= opt.epochs:
            log.info("the checkpoint has trained %d epochs and this run asks for %d: nothing is trained; the last "
                     "epoch's results are written again (give a larger --epochs to train on)", self.epoch,
                     opt.epochs)
        while self.epoch < opt.epochs:
            started = time.perf_counter()
            self.train_epoch()
            if self.stop_requested:
                raise KeyboardInterrupt
            evaluation_started = time.perf_counter()
            metrics, scores = self.evaluate()
            self.end_epoch(metrics, time.perf_counter() - started, time.perf_counter() - evaluation_started)
        if scores is None:  # resumed after the last epoch
            _, scores = self.evaluate()
        return self.finish(scores)

    def end_epoch(self, metrics: dict, seconds: float, evaluation_seconds: float) -> None:
        """Log the epoch's line and its evaluation, save the checkpoint, append to metrics.csv, and keep
        best.pt when asked."""
        run = self.run
        means = dict(zip(STEP_STATS, average_tensor(self.step_stats.nanmean(0), run.process).tolist(), strict=True))
        row = {"epoch": self.epoch, **means, **metrics, "seconds": round(seconds, 2),
               "feature_fit_seconds": self.fit_seconds, "evaluation_seconds": round(evaluation_seconds, 2),
               "evaluated_windows_per_clip": self.evaluated_windows_per_clip()}
        if "confusion" in metrics:
            (tn, fp), (fn, tp) = metrics["confusion"]
            row.update(tn=tn, fp=fp, fn=fn, tp=tp)
        self.history.append(row)
        summary, details = self.describe_evaluation(metrics)
        log.info("epoch %d/%d  %s  %s  (%.1f s; evaluation %.1f s on %s)", self.epoch + 1, run.opt.epochs,
                 format_step_stats(means), summary, row["seconds"], row["evaluation_seconds"],
                 evaluated_windows(row["evaluated_windows_per_clip"]))
        log.info("  %s", details.replace("\n", "\n  "))
        self.epoch, self.step, self.step_stats = self.epoch + 1, 0, None
        self.save()
        if run.process.is_main:
            write_metrics_csv(self.history, run.folder / "metrics.csv")
        if run.opt.save_best and metrics["auc"] >= max(r["auc"] for r in self.history):
            self.save("best")
            log.info("checkpoints/best.pt updated: chosen on the TEST set by AUC (--save_best)")

    def finish(self, scores: dict) -> dict:
        """Write the last epoch's score files, group tables and figures, and log its metrics."""
        run, final = self.run, self.history[-1]
        if not run.process.is_main:
            return final
        write_metrics_csv(self.history, run.folder / "metrics.csv")  # also when resumed after the last epoch
        if run.data.test is None:
            write_scores_csv(run.data.threshold, scores, run.folder / "threshold_scores.csv", run.opt.score)
        else:
            write_scores_csv(run.data.test, scores, run.folder / "scores.csv", run.opt.score)
            write_group_tables(final, run.folder)
            save_reconstruction_examples(run.model, run.data.test, run.opt.segment_length, run.opt.segment_hop, run.device,
                                         run.folder / "figures" / "examples.npz")
        log.info("figures: %s", ", ".join(p.name for p in redraw(run.folder)))
        if run.data.test is None:
            log.info("final (last epoch, %d): %s\nscore recordings with: python test.py --checkpoint %s --input "
                     "FILES_OR_FOLDERS", final["epoch"] + 1, self.describe_evaluation(final)[1],
                     self.last_checkpoint)
        else:
            log.info("final (last epoch, %d):\n%s", final["epoch"] + 1, format_labelled_metrics(final))
        return final


def train(opt: argparse.Namespace) -> dict:
    """Train GRLNet as ``opt`` says.

    Ctrl-C or SIGTERM (a pre-empted job) finishes the current step, saves a checkpoint that
    ``--resume`` continues (with the same batches and, in one process, the same noise), and exits
    with status 130.
    """
    with closing_log(opt):
        trainer = Trainer(*set_up(opt))
        previous = {s: signal.signal(s, trainer.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            final = trainer.run_epochs()
            wait_for_all(trainer.run.process)
        except KeyboardInterrupt:
            trainer.save()
            log.info("interrupted: saved %s; continue with --resume --output_dir %s", trainer.last_checkpoint,
                     trainer.run.folder)
            raise SystemExit(130) from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            process = trainer.run.process
            if trainer.run.lock is not None:
                trainer.run.lock.close()
            del trainer  # its DistributedDataParallel wrappers hold the process group: free them first
            gc.collect()
            shutdown(process)
    return final


# ---------------------------------------------------------------- test.py

def restore(opt: argparse.Namespace) -> Restored:
    """The networks test.py's options name, with what scoring needs besides: a ``--checkpoint`` with the
    options its run stored merged into the command line's, or the release's files in ``--model_dir``."""
    if bool(opt.checkpoint) == bool(opt.model_dir):
        raise UserError("give exactly one of --checkpoint FILE or --model_dir DIR")
    if opt.checkpoint:
        state = load_scoring_checkpoint(opt.checkpoint, STORED_OPTIONS)
        options = checkpoint_test_options(opt, state["options"], state["sample_rate"], opt.checkpoint)
        return restore_checkpoint(state, test_scoring(options))
    return restore_released(test_scoring(released_test_options(opt)))


def test(opt: argparse.Namespace) -> dict | None:
    """test.py's body: evaluate a labelled test set (scores.csv, metrics.json) or score ``--input`` files."""
    with closing_log(opt):
        configure_logging()
        return run_test(restore(opt))

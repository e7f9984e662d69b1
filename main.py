"""GRLNet training: the epoch loop, evaluation after every epoch, logs, checkpoints and resuming.

The step itself and its losses are in steps.py, where and how the networks run in runtime.py, the
files a run writes besides checkpoints and figures in results.py.
"""
from __future__ import annotations

import argparse
import fcntl
import gc
import json
import logging
import os
import shutil
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from checkpoint import load_train_checkpoint, load_weights, save_checkpoint
from cli import close_logging, configure_logging, log
from data import ClipSet, hold_out_for_threshold, hold_out_last, load_datasets
from distributed import (Process, average_tensor, broadcast_value, init_process, share_buffers,
                         shutdown, wait_for_all)
from errors import DivergedError, UserError, make_folder
from metrics import format_held_out_threshold, format_labelled_metrics, held_out_threshold, labelled_metrics
from opts import RESUME_MAY_CHANGE, changed_options, total_epochs
from plots import redraw, save_reconstruction_examples
from progress import progress
from results import GROUP_TABLES, write_group_tables, write_metrics_csv, write_scores_csv
from runtime import (autocast_context, build_model, build_optimizers, choose_kernels, compile_networks, random_state,
                     resolve_device, restore_random_state)
from features import FeatureScorer
from scoring import fit_normal_windows, score_clips
from steps import LOSSES, STEP_STATS, STEPS, pseudo_anomaly_step

REFRESH_EVERY = 20  # steps between progress-bar refreshes (the only host syncs on CUDA)
LOCK_FILE = ".lock"  # in the run folder, locked by the training that runs there, holding its process id
# Files that show a folder holds a run, and everything a run writes there (removed by --overwrite).
RUN_MARKERS = ("options.json", "checkpoints/last.pt", "metrics.csv", "train.log")
RUN_OUTPUTS = ("options.json", "train.log", "metrics.csv", "scores.csv", "threshold_scores.csv",
               *GROUP_TABLES.values(), "checkpoints", "figures")


# ---------------------------------------------------------------- run folder and logs

def default_run_folder() -> str:
    """``runs/<date>-<time>``."""
    return str(Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))


def lock_run_folder(folder: Path) -> TextIO:
    """Hold an OS lock on ``folder``'s lock file, with this process's id written in it, so that a second
    training in the same folder is refused; the OS releases it when the process ends, even when killed."""
    handle = (folder / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"{folder}: another training (process {holder}) is running in this run folder; wait "
                        "for it to end, or give another --output_dir") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def check_earlier_run(opt: argparse.Namespace, folder: Path) -> None:
    """Refuse a folder that holds another run, unless ``--resume`` continues it; ``--overwrite`` removes
    what that run wrote, so the new run's files (train.log too) start afresh."""
    found = [name for name in RUN_MARKERS if (folder / name).exists()]
    if not found or opt.resume:
        return
    if not opt.overwrite:
        raise UserError(f"{folder}: already holds a run ({', '.join(found)}); give --resume to continue it or "
                        "--overwrite to replace it, or a new --output_dir")
    for name in RUN_OUTPUTS:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def claim_run_folder(opt: argparse.Namespace, is_main: bool = True) -> TextIO | None:
    """Create and lock the run folder before anything in it is read, and refuse or clear an earlier run
    there (``check_earlier_run``); returns the lock. Under torchrun only the main process locks."""
    if not is_main:
        return None
    folder = make_folder(opt.output_dir, "run folder")
    lock = lock_run_folder(folder)
    check_earlier_run(opt, folder)
    return lock


def setup_run_folder(opt: argparse.Namespace, is_main: bool = True) -> Path:
    """Log to console and ``train.log`` in the run folder, and store the options there.

    Only the main process writes; the others log warnings to the console alone.
    """
    folder = Path(opt.output_dir)
    if not is_main:
        configure_logging(level=logging.WARNING)
        return folder
    make_folder(folder / "checkpoints", "checkpoint folder")
    configure_logging(folder / "train.log")
    (folder / "options.json").write_text(json.dumps(vars(opt), indent=2) + "\n")
    return folder


def describe_run(opt: argparse.Namespace, train: ClipSet, test: ClipSet | None, device: torch.device,
                 process: Process) -> None:
    """The first lines of every run: which data, which settings, where the results go."""
    what = {"synthetic": "embedded synthetic valve data set (demo preset)",
            "csv": "release CSV layout", "wav": "WAV recordings"}[opt.data_kind]
    windows = (f"windows of {opt.segment_length} every {opt.segment_hop} (clip score = window mean)"
               if opt.segment_length else "whole signals")
    if test is None:
        log.info("data: %s; %d training clips (normal), no labelled test set: the last %d normal clips (name "
                 "order) are held out, and the decision threshold is the %g-quantile of their scores "
                 "(--threshold_clips, --threshold_quantile)", what, len(train), opt.threshold_clips,
                 opt.threshold_quantile)
    else:
        log.info("data: %s; %d training clips (normal), %d test clips (%d abnormal)", what, len(train),
                 len(test), int(test.binary_labels().sum()))
    log.info("settings: length %d, %s, %d epoch%s, batch %d, update %s, noise %s (SNR %g dB), "
             "global filter %s, seed %d, device %s%s%s", opt.mess_length, windows, opt.epochs,
             "s" * (opt.epochs != 1), opt.batch_size, opt.update, opt.noise, opt.snr, opt.global_filter, opt.seed,
             device, ", deterministic kernels" if opt.deterministic else "",
             f", {process.world_size} processes (batch {opt.batch_size} each)" if process.distributed else "")
    regularisation = []
    if opt.label_smoothing:
        regularisation.append(f"one-sided label smoothing {opt.label_smoothing:g}")
    if opt.instance_noise_snr is not None:
        regularisation.append(f"instance noise at {opt.instance_noise_snr:g} dB SNR")
    if regularisation:
        log.info("discriminator regularisation: %s", ", ".join(regularisation))
    if opt.pseudo_anomaly_epochs:
        log.info("then %d pseudo-anomaly epochs: D alone, generators frozen (OGNet's second phase, "
                 "--pseudo_anomaly_epochs)", opt.pseudo_anomaly_epochs)
    fitted_on = (f"the windows of {opt.calibration_clips} normal training clips held out of training (the last in "
                 "name order, --calibration_clips)" if opt.calibration_clips else "the training windows")
    log.info("score: %s (--score); every score is computed and logged; the feature scores are fitted on %s",
             opt.score, fitted_on)
    log.info("run folder: %s (options.json, train.log, metrics.csv, %s, checkpoints/, figures/)",
             opt.output_dir, "scores.csv" if test is not None else "threshold_scores.csv")


# ---------------------------------------------------------------- the loop

def batch_order(count: int, opt: argparse.Namespace, epoch: int, process: Process = Process(),
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


def check_finite(step_stats: torch.Tensor, epoch: int, first_step: int, checkpoint: Path) -> None:
    """Stop on the first step whose losses are NaN or infinite, naming it, the loss, and whether the run's
    ``checkpoint`` holds a good state (saves come after this check) or none was saved yet."""
    bad = ~torch.isfinite(step_stats[:, :len(LOSSES)])
    if bad.any():
        row, column = map(int, bad.nonzero()[0])
        kept = (f"the last good checkpoint, {checkpoint}, is kept" if checkpoint.is_file()
                else "no checkpoint was saved before it")
        raise DivergedError(f"training diverged: {STEP_STATS[column]} is {step_stats[row, column].item()} "
                            f"at epoch {epoch}, step {first_step + row}; {kept}")


def progress_postfix(step_stats: torch.Tensor) -> dict[str, str]:
    """A step's losses and D's mean outputs on real signals and reconstructions, for the progress bar."""
    stats = dict(zip(STEP_STATS, step_stats.tolist()))
    shown = {"loss_d": stats["loss_d"], "loss_g": stats["loss_g"], "D(real)": stats["d_real"],
             "D(rec)": (stats["d_regional"] + stats["d_local"]) / 2}
    return {name: f"{value:.3g}" for name, value in shown.items()}


def padded_step_stats(saved: torch.Tensor) -> torch.Tensor:
    """A checkpoint's per-step statistics with a column for each of ``STEP_STATS``: a checkpoint of an
    earlier version lacks the last ones (gradient norms), NaN there, so epoch means cover the steps
    after resuming (nanmean)."""
    missing = len(STEP_STATS) - saved.shape[1]
    return torch.cat([saved, torch.full((len(saved), missing), float("nan"))], dim=1) if missing else saved


RESUME_ENTRIES = {"models", "optimizers", "options", "epoch", "step", "step_stats", "metrics", "rng"}


def training_files(train: ClipSet) -> list[str]:
    """The training clips' file names, without their folders (data may move between runs, not change)."""
    return [Path(name).name for name in train.names]


def read_resume_checkpoint(opt: argparse.Namespace, world_size: int, train: ClipSet) -> tuple[Path, dict]:
    """The checkpoint ``--resume`` names (bare: the run folder's last one), refused when it is not a
    train.py checkpoint, was saved with settings that define another run (opts.RESUME_MAY_CHANGE), on
    other training files than ``train``'s, or inside an epoch by another number of processes (whose
    batches were other ones)."""
    path = Path(opt.output_dir) / "checkpoints" / "last.pt" if opt.resume == "last" else Path(opt.resume)
    state = load_train_checkpoint(path, RESUME_ENTRIES)
    changed = changed_options(state["options"], opt, RESUME_MAY_CHANGE)
    if changed:
        raise UserError(f"{path}: saved by a run with other settings; resume with that run's options or "
                        f"start a new run ({'; '.join(changed)})")
    saved_files, files = state.get("train_files"), training_files(train)  # absent from earlier versions' checkpoints
    if saved_files is not None and saved_files != files:
        gone, new = sorted(set(saved_files) - set(files)), sorted(set(files) - set(saved_files))
        raise UserError(f"{path}: trained on {len(saved_files)} files, and the training data now hold {len(files)}"
                        f" (gone: {', '.join(gone[:3]) or 'none'}; new: {', '.join(new[:3]) or 'none'}); a resumed "
                        "run must train on the same files: restore them, or start a new run")
    saved_world_size = state.get("world_size", 1)  # absent from checkpoints of earlier versions
    if state["step"] and saved_world_size != world_size:
        raise UserError(f"{path}: saved inside epoch {state['epoch']} by {saved_world_size} process(es), and "
                        f"this run has {world_size}; each process's share of an epoch's batches depends on "
                        f"their number, so resume with torchrun --nproc_per_node {saved_world_size} (or "
                        "without torchrun for 1), or from a checkpoint saved at the end of an epoch")
    return path, state


class Trainer:
    """Holds the state of one run so it can be checkpointed, resumed and interrupted cleanly."""

    def __init__(self, opt: argparse.Namespace):
        self.opt = opt
        self.device = resolve_device(opt)
        self.process = init_process(self.device.type)
        if self.process.distributed and opt.update == "released":
            raise UserError("--update released runs in one process only (its two backward passes "
                            "through the same forward do not fit DistributedDataParallel)")
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.process.local_rank)
        choose_kernels(self.device, opt.deterministic)
        torch.manual_seed(opt.seed)  # the networks' initialisation and the input noise
        self.train_set, self.test_set = load_datasets(opt)
        self.feature_set, self.feature_models, self.fit_seconds = None, None, 0.0
        if opt.calibration_clips:
            self.train_set, self.feature_set = hold_out_last(self.train_set, opt.calibration_clips,
                                                             "--calibration_clips")
        self.threshold_set = None
        if self.test_set is None:
            self.train_set, self.threshold_set = hold_out_for_threshold(self.train_set, opt)
        opt.output_dir = broadcast_value(opt.output_dir or default_run_folder(), self.process)
        self.lock = claim_run_folder(opt, self.process.is_main)
        resumed = (read_resume_checkpoint(opt, self.process.world_size, self.train_set)
                   if opt.resume else None)  # before options.json is rewritten
        self.folder = setup_run_folder(opt, self.process.is_main)
        describe_run(opt, self.train_set, self.test_set, self.device, self.process)
        self.model = build_model(opt, self.device)
        if opt.sync_batchnorm and self.process.distributed and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if self.process.rank:
            torch.manual_seed(opt.seed + 7919 * self.process.rank)  # each process its own noise
        self.optimizers = build_optimizers(self.model, opt, self.device)
        self.nets = compile_networks(self.model, self.device, opt, self.process)
        windows, _ = self.train_set.windows(opt.segment_length, opt.segment_hop)
        self.windows = windows.to(self.device)  # on CUDA: resident on the GPU, no copies per step
        self.history: list[dict] = []
        self.epoch, self.step, self.step_stats = 0, 0, None
        self.stop_requested = False
        self.saved_at = time.monotonic()
        if resumed:
            self.restore(*resumed)

    # -- checkpoints

    def state(self) -> dict:
        return {
            "models": {name: module.state_dict() for name, module in self.model.named_children()},
            "optimizers": {name: o.state_dict() for name, o in self.optimizers.items()},
            "options": vars(self.opt), "epoch": self.epoch, "step": self.step,
            "step_stats": None if self.step_stats is None else self.step_stats.cpu(),
            "metrics": self.history, "feature_models": self.feature_models,
            "rng": random_state(self.device), "world_size": self.process.world_size,
            "train_files": training_files(self.train_set),
        }

    @property
    def last_checkpoint(self) -> Path:
        """Where the run's latest checkpoint is saved (``--resume`` continues from it)."""
        return self.folder / "checkpoints" / "last.pt"

    def save(self, name: str = "last") -> None:
        self.saved_at = time.monotonic()
        if self.process.is_main:
            save_checkpoint(self.state(), self.folder / "checkpoints" / f"{name}.pt")

    def restore(self, path: Path, state: dict) -> None:
        """Continue from a checkpoint read by ``read_resume_checkpoint``."""
        for name, module in self.model.named_children():
            load_weights(module, state["models"][name], f"{path} ({name})")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.epoch, self.step, self.history = state["epoch"], state["step"], state["metrics"]
        saved_stats = state["step_stats"]
        self.step_stats = None if saved_stats is None else padded_step_stats(saved_stats).to(self.device)
        if self.process.is_main:
            restore_random_state(state["rng"], self.device)
        else:  # only rank 0's generators are saved; the others draw new noise, seeded by where the run resumes
            seed = np.random.SeedSequence([self.opt.seed, self.process.rank, self.epoch, self.step])
            torch.manual_seed(int(seed.generate_state(1)[0]))
        self.feature_models = state.get("feature_models")
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)

    # -- training

    def in_pseudo_anomaly_phase(self) -> bool:
        """Whether this epoch is one of the ``--pseudo_anomaly_epochs`` after the adversarial ones."""
        return self.epoch >= self.opt.epochs

    def train_epoch(self) -> None:
        """Train one epoch from ``self.step``; per-step statistics stay on the device."""
        opt = self.opt
        step_fn = pseudo_anomaly_step if self.in_pseudo_anomaly_phase() else STEPS[opt.update]
        batches = batch_order(len(self.windows), opt, self.epoch, self.process, self.device)
        if self.step_stats is None:
            self.step_stats = torch.zeros(len(batches), len(STEP_STATS), device=self.device)
        self.model.train()
        if self.in_pseudo_anomaly_phase():  # frozen generators: BatchNorm with its running statistics
            self.model.regional.eval()
            self.model.local.eval()
        bar = progress(total=len(batches), initial=self.step, desc=f"epoch {self.epoch}", unit="step",
                       quiet=opt.quiet)
        checked = self.step
        while self.step < len(batches) and not self.stop_requested:
            x = self.windows[batches[self.step]]
            self.step_stats[self.step] = step_fn(self.nets, self.model, self.optimizers, x, opt,
                                                 autocast_context(self.device, opt))
            self.step += 1
            bar.update()
            save_due = opt.checkpoint_minutes and time.monotonic() - self.saved_at > 60 * opt.checkpoint_minutes
            if save_due or self.device.type == "cpu" or self.step % REFRESH_EVERY == 0 or self.step == len(batches):
                recent = self.step_stats[checked:self.step].cpu()
                check_finite(recent, self.epoch, checked, self.last_checkpoint)  # before any save: none is diverged
                checked = self.step
                bar.set_postfix(progress_postfix(recent[-1]))
            if save_due:
                self.save()
        check_finite(self.step_stats[checked:self.step].cpu(), self.epoch, checked,
                     self.last_checkpoint)  # before an interrupt's save
        bar.close()

    def evaluate(self) -> tuple[dict, dict]:
        """Score the labelled test set and compute its metrics, or, without one, score the held-out
        normal clips and set the decision threshold on them."""
        share_buffers(self.model, self.process)
        autocast = autocast_context(self.device, self.opt)
        normal = self.train_set if self.feature_set is None else self.feature_set
        started = time.perf_counter()
        self.feature_models = fit_normal_windows(self.model, normal, self.opt, self.device, autocast)
        self.fit_seconds = round(time.perf_counter() - started, 2)
        clips = self.threshold_set if self.test_set is None else self.test_set
        scores = score_clips(self.model, clips, self.opt, self.device, autocast, self.process,
                             FeatureScorer(self.feature_models))
        if self.test_set is None:
            return held_out_threshold(scores["score"], self.opt.threshold_quantile), scores
        test = self.test_set
        return labelled_metrics(test.binary_labels(), scores["score"], test.names, scores), scores

    def describe_evaluation(self, metrics: dict) -> tuple[str, str]:
        """An evaluation in an epoch's log: the end of its line, and the lines under it."""
        if self.test_set is None:
            return (f"threshold {metrics['threshold']:.6f}",
                    format_held_out_threshold(metrics, self.opt.threshold_quantile, len(self.threshold_set)))
        return (f"AUC {metrics['auc']:.4f}  pAUC {metrics['pauc']:.4f}  EER {metrics['eer']:.4f}",
                format_labelled_metrics(metrics, with_auc=False))

    def run(self) -> dict:
        """Train the remaining epochs; evaluate, log and checkpoint after each."""
        scores = None
        if self.epoch >= total_epochs(self.opt):
            log.info("the checkpoint has trained %d epochs and this run asks for %d: nothing is trained; the last "
                     "epoch's results are written again (give a larger --epochs to train on)", self.epoch,
                     total_epochs(self.opt))
        while self.epoch < total_epochs(self.opt):
            started = time.perf_counter()
            self.train_epoch()
            if self.stop_requested:
                raise KeyboardInterrupt
            metrics, scores = self.evaluate()
            means = average_tensor(self.step_stats.nanmean(0), self.process).tolist()
            row = {"epoch": self.epoch, **dict(zip(STEP_STATS, means)), **metrics,
                   "seconds": round(time.perf_counter() - started, 2), "feature_fit_seconds": self.fit_seconds}
            if "confusion" in metrics:
                (tn, fp), (fn, tp) = metrics["confusion"]
                row.update(tn=tn, fp=fp, fn=fn, tp=tp)
            self.history.append(row)
            phase = " (pseudo-anomalies)" if self.in_pseudo_anomaly_phase() else ""
            summary, details = self.describe_evaluation(metrics)
            log.info("epoch %d/%d%s  loss_d %.4f  loss_g %.4f  rec %.5f  D(real) %.3f  D(regional) %.3f  "
                     "D(local) %.3f  grad norm D %.3g  regional %.3g  local %.3g  %s  (%.1f s)", self.epoch + 1,
                     total_epochs(self.opt), phase, *means, summary, row["seconds"])
            log.info("  %s", details.replace("\n", "\n  "))
            self.epoch, self.step, self.step_stats = self.epoch + 1, 0, None
            self.save()
            if self.process.is_main:
                write_metrics_csv(self.history, self.folder / "metrics.csv")
            if self.opt.save_best and metrics["auc"] >= max(r["auc"] for r in self.history):
                self.save("best")
                log.info("checkpoints/best.pt updated: chosen on the TEST set by AUC (--save_best)")
        if scores is None:  # resumed after the last epoch
            _, scores = self.evaluate()
        return self.finish(scores)

    def finish(self, scores: dict) -> dict:
        """Write the last epoch's score files, group tables and figures, and log its metrics."""
        final = self.history[-1]
        if not self.process.is_main:
            return final
        write_metrics_csv(self.history, self.folder / "metrics.csv")  # also when resumed after the last epoch
        if self.test_set is None:
            write_scores_csv(self.threshold_set, scores, self.folder / "threshold_scores.csv")
        else:
            write_scores_csv(self.test_set, scores, self.folder / "scores.csv")
            write_group_tables(final, self.folder)
            save_reconstruction_examples(self.model, self.test_set, self.opt, self.device,
                                         self.folder / "figures" / "examples.npz")
        log.info("figures: %s", ", ".join(p.name for p in redraw(self.folder)))
        if self.test_set is None:
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
    trainer = Trainer(opt)

    def request_stop(signum, frame):
        trainer.stop_requested = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        final = trainer.run()
        wait_for_all(trainer.process)
    except KeyboardInterrupt:
        trainer.save()
        log.info("interrupted: saved %s; continue with --resume --output_dir %s", trainer.last_checkpoint,
                 trainer.folder)
        raise SystemExit(130) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        process = trainer.process
        if trainer.lock is not None:
            trainer.lock.close()
        del trainer  # its DistributedDataParallel wrappers hold the process group: free them first
        gc.collect()
        shutdown(process)
    close_logging()  # an error leaves the log open: run_cli writes it there
    return final

"""Training speed: the release's pipeline against the project's default path, in one process.

    python -m experiments.bench [--device cuda] [--preset wav] ...   (from the repository root)

Two settings (``--preset``):

- ``paper``: whole signals of the paper's length (233472 samples on CUDA), written to a temporary
  folder in the release's CSV layout (``0.csv, 1.csv, ...`` and a label file);
- ``wav``: the WAV preset users run on recordings: 10 s clips at 16 kHz (160000 samples) in windows
  of 1024 samples every 4096, held in memory; besides training windows/s it times scoring clips/s.

Both paths train on the same synthetic signals:

- ``release``: the release re-created in our code: fp32 eager (cuDNN TF32 as PyTorch leaves it),
  the joint step with unit-variance noise, ``DataLoader(num_workers=1, shuffle=True,
  drop_last=True)`` over a data set that re-parses its CSV file on every item (``paper``) or over the
  windows in memory (``wav``), pageable memory, plain Adam; it scores with the paper's score in fp32.
- ``fast``: what ``train.py`` runs: signals decoded once and kept on the device with the batch
  indices, the standard step under bf16 autocast (CUDA; on CPU with ``--cpu_bf16``, a measurement only)
  and torch.compile (CUDA), channels-last convolutions (CUDA), fused Adam (CUDA), cudnn.benchmark,
  no host sync inside the loop; it scores with every score (``wav``), its feature statistics fitted first.

The last line is ``ratio <fast / release>`` of training samples (windows) per second at batch 2,
the paper's batch.
``--check_equivalence`` also scores one test set with the same weights with and without bf16 autocast
(the AUCs must agree within 0.005: bf16 must not change what the scores rank).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from data import ClipSet, load_datasets
from data.console import UserError, make_folder
from data.files import atomic_write, write_text
from data.synthetic import make_synthetic_set
from grlnet.checkpoint import load_file
from grlnet.cli import run_cli
from grlnet.features import FeatureScorer
from grlnet.metrics import compute_metrics
from grlnet.runtime import (
    build_model,
    build_optimizers,
    choose_kernels,
    compile_networks,
    resolve_device,
)
from grlnet.scores import PAPER_SCORE
from grlnet.scoring import fit_and_score, fit_normal_windows, score_clips
from grlnet.steps import Networks, released_step, standard_step
from main import batch_order
from network import GRLNet
from opts import (
    WAV_PRESET,
    data_settings,
    learning_rates,
    network_length,
    non_negative_int,
    parse_opts,
    positive_int,
    positive_number,
    scoring_settings,
    seed_value,
    step_settings,
    test_clip_count,
)

REPO = Path(__file__).resolve().parents[1]
PAPER_BATCH = 2
DEFAULTS = {  # per preset and device: --mess_length, --batch_sizes, --steps, --warmup (wav: --test_clips)
    "paper": {"cuda": {"mess_length": 233472, "batch_sizes": [2, 8], "steps": 20, "warmup": 5},
              "cpu": {"mess_length": 2048, "batch_sizes": [2], "steps": 5, "warmup": 1}},
    "wav": {"cuda": {"mess_length": WAV_PRESET["mess_length"], "batch_sizes": [2, 32, 128], "steps": 50,
                     "warmup": 10, "test_clips": 8},
            # 4 test clips: scoring them on both paths is most of a CPU run, which stays within a minute
            "cpu": {"mess_length": WAV_PRESET["mess_length"], "batch_sizes": [2], "steps": 5, "warmup": 1,
                    "test_clips": 4}},
}
INTERRUPTED = 130  # train.py's exit status after Ctrl-C, once it has saved where it was
EQUIVALENCE_STEPS = 16  # fp32 training steps before the equivalence check scores the test set
EQUIVALENCE_TOLERANCE = 0.005  # largest AUC difference bf16 may make
PROFILE_STEPS = 3
PROFILE_ROWS = 25


# ---------------------------------------------------------------- options

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line; length, batches, steps and warm-up default per device."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when present (default auto)")
    p.add_argument("--preset", choices=tuple(DEFAULTS), default="paper",
                   help="paper: whole signals, the release's CSV layout; wav: the WAV preset's windows "
                        "(default paper)")
    p.add_argument("--mess_length", type=positive_int, default=None,
                   help="signal length (paper: 233472 on CUDA, 2048 on CPU; wav: 160000)")
    p.add_argument("--batch_sizes", type=positive_int, nargs="+", default=None,
                   help="batch sizes to measure, 2 among them (paper: 2 8 on CUDA; wav: 2 32 128 on CUDA; "
                        "2 on CPU)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="timed steps (paper 20, wav 50 on CUDA; 5 on CPU)")
    p.add_argument("--warmup", type=non_negative_int, default=None,
                   help="untimed steps first, compilation included (paper 5, wav 10 on CUDA; 1 on CPU)")
    p.add_argument("--clips", type=positive_int, default=None,
                   help="training clips (default: paper 32, wav 8)")
    p.add_argument("--test_clips", type=test_clip_count, default=None,
                   help="test clips, half normal, half abnormal: scored by --check_equivalence and, with "
                        "--preset wav, timed (default: wav 8 on CUDA, 4 on a CPU; paper 64 with the check, else 2)")
    p.add_argument("--peak_tflops", type=positive_number, default=989.0,
                   help="assumed bf16 peak of the GPU in TFLOP/s (default 989: H100 SXM dense bf16)")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="write a torch.profiler table per path to DIR/profile_<path>.txt")
    p.add_argument("--check_equivalence", action="store_true",
                   help="score the same weights with and without bf16 autocast and compare AUCs")
    p.add_argument("--no-bf16", dest="bf16", action="store_false",
                   help="the fast path in fp32 on CUDA too (by default bf16 autocast on CUDA, as train.py runs)")
    p.add_argument("--cpu_bf16", action="store_true",
                   help="the fast path under bf16 autocast on the CPU, which train.py does not do (BENCHMARKS.md)")
    p.add_argument("--compile_mode", choices=("default", "reduce-overhead"), default="default",
                   help="torch.compile's mode for the fast path on CUDA; reduce-overhead replays CUDA graphs, "
                        "which saves the kernel launches of small batches (train.py compiles in default mode)")
    p.add_argument("--deterministic", action="store_true",
                   help="time the fast path with train.py --deterministic's kernels (the release path is unchanged)")
    p.add_argument("--epoch_data", type=Path, default=None, metavar="DIR",
                   help="also time one end-to-end epoch of train.py (decoding included) on a DCASE-layout data "
                        "set grown to --epoch_clips training clips by repeating DIR/train's clips; DIR/test is its "
                        "test set")
    p.add_argument("--epoch_clips", type=positive_int, default=1000,
                   help="training clips of the --epoch_data epoch (default 1000, a DCASE machine type)")
    p.add_argument("--epoch_test_clips", type=non_negative_int, default=0,
                   help="grow DIR/test to this many clips by repeating its clips, labels kept (default 0: DIR/test "
                        "as it is; 200 for a DCASE machine type's test set)")
    p.add_argument("--epoch_epochs", type=positive_int, default=1,
                   help="epochs of the --epoch_data run (default 1; 8 is the WAV preset's whole run)")
    p.add_argument("--epoch_output", type=Path, default=None, metavar="DIR",
                   help="keep the --epoch_data run's folder (log, metrics.csv with each epoch's seconds) in DIR, "
                        "which must not exist (default: a temporary folder, removed)")
    p.add_argument("--epoch_args", default="", metavar="OPTIONS",
                   help="more train.py options for the --epoch_data epoch, e.g. \"--batch_size 32 "
                        "--learning_rate_scaling sqrt\" (default: none, the WAV preset's batch 2)")
    p.add_argument("--epoch_seconds", type=positive_number, default=None, metavar="S",
                   help="stop the --epoch_data epoch with Ctrl-C after S seconds (train.py saves where it is) and "
                        "report its peak memory and steps so far: for a set whose whole epoch takes hours")
    p.add_argument("--seed", type=seed_value, default=0, help="seeds data, networks and batch order (default 0)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return p.parse_args(argv)


def resolve_defaults(args: argparse.Namespace, device: torch.device) -> argparse.Namespace:
    """Fill the per-device defaults and refuse settings the benchmark cannot run."""
    for name, value in DEFAULTS[args.preset][device.type].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.clips is None:
        args.clips = 8 if args.preset == "wav" else 32
    if args.test_clips is None:
        args.test_clips = 64 if args.check_equivalence else 2
    if args.preset == "wav" and args.mess_length < WAV_PRESET["segment_length"]:
        raise UserError(f"--mess_length {args.mess_length} is shorter than one window of the WAV preset "
                        f"({WAV_PRESET['segment_length']} samples)")
    if PAPER_BATCH not in args.batch_sizes:
        raise UserError(f"--batch_sizes must include {PAPER_BATCH}: the ratio line is at the paper's batch")
    window, hop = WAV_PRESET["segment_length"], WAV_PRESET["segment_hop"]
    per_clip = 1 + (args.mess_length - window) // hop if args.preset == "wav" else 1  # training windows a clip
    if args.clips * per_clip < max(args.batch_sizes):
        raise UserError(f"--clips {args.clips} give {args.clips * per_clip} training items, fewer than the largest "
                        f"batch size {max(args.batch_sizes)}")
    if args.profile is not None:
        make_folder(args.profile, "profile folder (--profile)")
    return args


# ---------------------------------------------------------------- data in the release's layout

def write_csv_set(folder: Path, signals: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``<folder>/<i>.csv`` (one column, no header) and a label file; return the label file."""
    folder.mkdir(parents=True)
    for index, values in enumerate(signals):
        with atomic_write(folder / f"{index}.csv", "w", "signal file") as handle:
            np.savetxt(handle, values, fmt="%.9g")
    label_path = folder.with_name(f"{folder.name}_label.csv")
    write_text(label_path, "label\n" + "".join(f"{int(label)}\n" for label in labels), "label file")
    return label_path


def synthetic_signals(args: argparse.Namespace) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Training (normal) and test (half abnormal) signals with their labels."""
    abnormal = args.test_clips // 2
    return (make_synthetic_set(args.seed, args.mess_length, args.clips, 0),
            make_synthetic_set(args.seed + 1, args.mess_length, args.test_clips - abnormal, abnormal))


def write_synthetic_csv(root: Path, args: argparse.Namespace) -> list[str]:
    """Synthetic training (normal) and test (both classes) sets on disk; the options naming them.

    Only ``--check_equivalence`` scores the test set; without it the set holds one clip per class.
    """
    train, test = synthetic_signals(args)
    train_labels = write_csv_set(root / "train", *train)
    test_labels = write_csv_set(root / "test", *test)
    return ["--train_root", str(root / "train"), "--train_label_path", str(train_labels),
            "--test_root", str(root / "test"), "--test_label_path", str(test_labels)]


class ReleaseCsvDataset(Dataset):
    """The release's training set: each item re-reads and re-parses its CSV file, via a Python list."""

    def __init__(self, root: Path, length: int):
        self.files = sorted(root.glob("*.csv"))
        self.length = length

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        samples = np.loadtxt(self.files[index], delimiter=",", dtype=np.float64, ndmin=1).tolist()
        samples = samples[:self.length] + [0.0] * (self.length - len(samples))
        return torch.as_tensor(samples, dtype=torch.float32).unsqueeze(0)  # [1, L]


def endless(loader: DataLoader) -> Iterator[torch.Tensor]:
    """The loader's batches, epoch after epoch (a new worker each epoch, as the release had)."""
    while True:
        yield from loader


def endless_batch_indices(count: int, opt: argparse.Namespace,
                          device: torch.device | None = None) -> Iterator[torch.Tensor]:
    """The training loop's batch indices (on ``device``), epoch after epoch."""
    epoch = 0
    while True:
        yield from batch_order(count, opt, epoch, device=device)
        epoch += 1


# ---------------------------------------------------------------- the two paths

@dataclass
class Bench:
    """One path: ``step`` runs one training step as timed, ``eager_step`` the same without compile,
    ``fit`` fits what scoring needs beyond the networks (the fast path's feature statistics), and
    ``score`` scores the test set with the networks as trained so far (the WAV preset times both)."""

    name: str
    step: Callable[[], None]
    eager_step: Callable[[], None]
    fit: Callable[[], None] | None = None
    score: Callable[[], None] | None = None


@dataclass
class Measurement:
    """What one path achieved at one batch size."""

    name: str
    batch: int
    seconds_per_step: float
    flops_per_step: int
    peak_bytes: int | None
    clips_per_second: float | None = None
    fit_seconds: float | None = None


def with_options(opt: argparse.Namespace, **changes) -> argparse.Namespace:
    """A copy of ``opt`` with some options changed."""
    return argparse.Namespace(**{**vars(opt), **changes})


def eager_networks(model: GRLNet, device: torch.device) -> Networks:
    """The networks as ``compile_networks`` returns them without compilation."""
    return compile_networks(model, device, use_compile=False)


def train_model(opt: argparse.Namespace, device: torch.device) -> GRLNet:
    """GRLNet as train.py builds it for ``opt`` in one process, on ``device``, in training mode."""
    return build_model(network_length(opt), opt.global_filter, device, opt.channels_last).train()


def release_loader(opt: argparse.Namespace, train_set: ClipSet) -> DataLoader:
    """The release's loader: one worker, shuffled, last batch dropped; over CSV files re-parsed per item
    (whole signals), or over the windows in memory."""
    if opt.segment_length:
        items = TensorDataset(train_set.windows(opt.segment_length, opt.segment_hop)[0])
    else:
        items = ReleaseCsvDataset(Path(opt.train_root), opt.mess_length)
    return DataLoader(items, batch_size=opt.batch_size, shuffle=True, drop_last=True, num_workers=1)


def release_bench(opt: argparse.Namespace, device: torch.device, train_set: ClipSet, test_set: ClipSet) -> Bench:
    """The release's pipeline: fp32 eager, joint step, plain Adam; the paper's score in fp32."""
    opt = with_options(opt, update="released", noise="released", score=PAPER_SCORE)
    choose_kernels(device, deterministic=False)
    torch.backends.cudnn.benchmark = False  # the release leaves cuDNN's autotuning off
    torch.manual_seed(opt.seed)
    model = GRLNet(network_length(opt)).to(device).train()
    optimizers = {name: torch.optim.Adam(getattr(model, name).parameters(), lr=rate)
                  for name, rate in learning_rates(opt).by_network().items()}
    batches, nets = endless(release_loader(opt, train_set)), eager_networks(model, device)
    settings = step_settings(opt)

    def step() -> None:
        batch = next(batches)
        x = batch[0] if isinstance(batch, list) else batch  # TensorDataset items are 1-tuples
        released_step(nets, model, optimizers, x.to(device), settings, contextlib.nullcontext())

    def score() -> None:
        score_clips(model, test_set, scoring_settings(opt), device, contextlib.nullcontext())
        model.train()

    return Bench("release", step, step, score=score)


AutocastFactory = Callable[[], contextlib.AbstractContextManager]


def fast_path_autocast(args: argparse.Namespace, device: torch.device) -> AutocastFactory:
    """The fast path's autocast: train.py's (bf16 on CUDA with ``--bf16``), or with ``--cpu_bf16`` bf16 on
    the CPU."""
    if args.cpu_bf16 and device.type == "cpu":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    if args.bf16 and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def fast_bench(opt: argparse.Namespace, device: torch.device, train_set: ClipSet, test_set: ClipSet,
               autocast: AutocastFactory, compile_mode: str = "default") -> Bench:
    """The project's default path, set up as ``main.set_up`` sets it up, under ``autocast()``, compiled
    (on CUDA) in ``compile_mode``."""
    choose_kernels(device, opt.deterministic)
    torch.compiler.reset()  # a fresh compilation for each batch size, as in a fresh run
    torch.manual_seed(opt.seed)
    model = train_model(opt, device)
    optimizers = build_optimizers(model, learning_rates(opt), device)
    windows, _ = train_set.windows(opt.segment_length, opt.segment_hop)
    windows = windows.to(device)  # resident on the device, as the Trainer keeps them
    indices, settings = endless_batch_indices(len(windows), opt, device), step_settings(opt)

    def step_with(nets: Networks) -> Callable[[], None]:
        def step() -> None:
            standard_step(nets, model, optimizers, windows[next(indices)], settings, autocast())
        return step

    fitted = {}

    def fit() -> None:
        fitted["models"] = fit_normal_windows(model, train_set, scoring_settings(opt), device, autocast())
        model.train()

    def score() -> None:
        score_clips(model, test_set, scoring_settings(opt), device, autocast(), scorer=FeatureScorer(fitted["models"]))
        model.train()

    return Bench("fast", step_with(compile_networks(model, device, opt.compile, compile_mode=compile_mode)),
                 step_with(eager_networks(model, device)), fit, score)


# ---------------------------------------------------------------- measuring

def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work; nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per step over ``steps`` steps, the GPU drained before and after."""
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def count_flops(step: Callable[[], None], device: torch.device) -> int:
    """FLOPs of one step, forward and backward (convolutions and matrix products)."""
    with FlopCounterMode(display=False) as counter:
        step()
    synchronize(device)
    return counter.get_total_flops()


def write_profile(bench: Bench, device: torch.device, folder: Path, title: str) -> Path:
    """Profile a few steps and write the key averages, by self device time then self CPU time."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(PROFILE_STEPS):
            bench.step()
        synchronize(device)
    averages = profiler.key_averages()
    sorts = (["self_device_time_total"] if device.type == "cuda" else []) + ["self_cpu_time_total"]
    tables = [f"sorted by {key}\n{averages.table(sort_by=key, row_limit=PROFILE_ROWS)}" for key in sorts]
    path = folder / f"profile_{bench.name}.txt"
    write_text(path, f"{title}, {PROFILE_STEPS} steps\n\n" + "\n\n".join(tables), "profile")
    return path


def measure(bench: Bench, args: argparse.Namespace, device: torch.device, batch: int) -> Measurement:
    """Warm up, time, read peak memory, count FLOPs, with the WAV preset time scoring (in train.py's
    scoring batches, ``scoring_batch_size``), and (when asked, at batch 2) profile."""
    for _ in range(args.warmup):
        bench.step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = time_steps(bench.step, args.steps, device)
    clips_per_second = fit_seconds = None
    if args.preset == "wav":
        fit_seconds = None if bench.fit is None else time_steps(bench.fit, 1, device)
        clips_per_second = args.test_clips / time_steps(bench.score, 1, device)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    flops = count_flops(bench.eager_step, device)
    if args.profile is not None and batch == PAPER_BATCH:
        title = f"{bench.name} path on {device.type}, {args.preset} preset, length {args.mess_length}, batch {batch}"
        print(f"profile written to {write_profile(bench, device, args.profile, title)}", flush=True)
    return Measurement(bench.name, batch, seconds, flops, peak, clips_per_second, fit_seconds)


def release_memory(device: torch.device) -> None:
    """Free what a finished path held (its loader's worker included) before the next one."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def format_measurement(m: Measurement, args: argparse.Namespace) -> str:
    """One result line: throughput, step time, FLOPs, on CUDA memory and share of peak, and with the WAV
    preset the scoring speed."""
    tflops = m.flops_per_step / m.seconds_per_step / 1e12
    unit = "windows" if args.preset == "wav" else "samples"
    line = (f"{m.name:<8} batch {m.batch}: {m.batch / m.seconds_per_step:.3f} {unit}/s, "
            f"{m.seconds_per_step:.4f} s/step, {m.flops_per_step / 1e9:.2f} GFLOP/step, "
            f"{tflops:.4f} TFLOP/s")
    if m.peak_bytes is not None:
        line += (f", peak {m.peak_bytes / 2**30:.2f} GiB, "
                 f"{100 * tflops / args.peak_tflops:.1f}% of assumed bf16 peak")
    if m.clips_per_second is not None:
        line += f"; scoring {m.clips_per_second:.3f} clips/s"
        if m.fit_seconds is not None:
            line += f" after fitting the feature statistics in {m.fit_seconds:.2f} s"
    return line


def run_batch(opt: argparse.Namespace, args: argparse.Namespace, device: torch.device,
              train_set: ClipSet, test_set: ClipSet, batch: int) -> dict[str, Measurement]:
    """Both paths at one batch size, the release first; each freed before the next starts."""
    opt = with_options(opt, batch_size=batch)
    results = {}
    for name, build in (("release", lambda: release_bench(opt, device, train_set, test_set)),
                        ("fast", lambda: fast_bench(opt, device, train_set, test_set,
                                                    fast_path_autocast(args, device), args.compile_mode))):
        results[name] = measure(build(), args, device, batch)
        release_memory(device)
        print(format_measurement(results[name], args), flush=True)
    return results


# ---------------------------------------------------------------- bf16 against fp32 scores

def score_auc(model: GRLNet, train_set: ClipSet, test_set: ClipSet, opt: argparse.Namespace, device: torch.device,
              autocast: contextlib.AbstractContextManager) -> float:
    """The test AUC of ``model``'s score (``--score``), its feature statistics fitted and applied under ``autocast``."""
    scores = fit_and_score(model, train_set, test_set, scoring_settings(opt), device, autocast).scores
    return compute_metrics(test_set.binary_labels(), scores["score"])["auc"]


def check_equivalence(opt: argparse.Namespace, device: torch.device, train_set: ClipSet,
                      test_set: ClipSet) -> bool:
    """Train a few fp32 steps, score the test set with and without bf16 autocast, compare AUCs."""
    torch.manual_seed(opt.seed)
    model = train_model(opt, device)
    optimizers = build_optimizers(model, learning_rates(opt), device)
    windows, _ = train_set.windows(opt.segment_length, opt.segment_hop)
    indices, nets = endless_batch_indices(len(windows), opt), eager_networks(model, device)
    for _ in range(EQUIVALENCE_STEPS):
        x = windows[next(indices)].to(device)
        standard_step(nets, model, optimizers, x, step_settings(opt), contextlib.nullcontext())
    fp32 = score_auc(model, train_set, test_set, opt, device, contextlib.nullcontext())
    bf16 = score_auc(model, train_set, test_set, opt, device, torch.autocast(device.type, dtype=torch.bfloat16))
    passed = abs(fp32 - bf16) <= EQUIVALENCE_TOLERANCE
    print(f"equivalence ({EQUIVALENCE_STEPS} fp32 training steps, {len(test_set)} test clips, same weights): "
          f"AUC fp32 {fp32:.4f}, AUC bf16 autocast {bf16:.4f}, difference {abs(fp32 - bf16):.4f} "
          f"(within {EQUIVALENCE_TOLERANCE}) {'pass' if passed else 'FAIL'}", flush=True)
    return passed


# ---------------------------------------------------------------- the run

def describe(args: argparse.Namespace, device: torch.device) -> None:
    """The settings, and what the figures mean."""
    threads = f"CPU, {torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name() if device.type == "cuda" else threads
    precision = "bf16 autocast" if fast_path_autocast(args, device) is not contextlib.nullcontext else "fp32"
    compiled = f", torch.compile mode {args.compile_mode}" if device.type == "cuda" else ""
    print(f"device {device} ({name}), PyTorch {torch.__version__}, fast path in {precision}{compiled}", flush=True)
    windows = (f", windows of {WAV_PRESET['segment_length']} every {WAV_PRESET['segment_hop']}, "
               f"{args.test_clips} test clips scored per path" if args.preset == "wav" else "")
    print(f"{args.preset} preset: length {args.mess_length}{windows}, batch sizes "
          f"{' '.join(map(str, args.batch_sizes))}, {args.warmup} warm-up + {args.steps} timed steps per path, "
          f"{args.clips} training clips{', fast path with --deterministic kernels' if args.deterministic else ''}",
          flush=True)
    print("FLOP/step: convolutions and matrix products of one eager step of the same path, forward and "
          "backward, counted by FlopCounterMode (FFT, norms and elementwise ops are not counted)", flush=True)
    if device.type == "cuda":
        print(f"share of peak: against {args.peak_tflops:g} TFLOP/s, an ASSUMED dense bf16 peak "
              "(H100 SXM by default; set --peak_tflops for another card)", flush=True)


def wav_preset_data(args: argparse.Namespace, device: torch.device) -> tuple[argparse.Namespace, ClipSet, ClipSet]:
    """The WAV preset's options and synthetic clips in memory (no files: decoding is not what is timed)."""
    opt = parse_opts(["--mess_length", str(args.mess_length), "--segment_length", str(WAV_PRESET["segment_length"]),
                      "--segment_hop", str(WAV_PRESET["segment_hop"]), "--score", WAV_PRESET["score"],
                      "--seed", str(args.seed), "--device", device.type, "--quiet",
                      "--deterministic", str(args.deterministic), "--bf16", str(args.bf16)])
    (train, train_labels), (test, test_labels) = synthetic_signals(args)
    return (opt, ClipSet([f"train_{i}" for i in range(len(train))], train, train_labels),
            ClipSet([f"test_{i}" for i in range(len(test))], test, test_labels))


def grown_data_set(source: Path, clips: int, root: Path, test_clips: int = 0) -> Path:
    """A DCASE-layout data set under ``root``: ``clips`` training clips, links to ``source``'s training
    clips repeated under new names, and ``source``'s test folder, or ``test_clips`` links to its clips
    repeated under new names that keep each clip's label prefix (``normal_``, ``anomaly_``)."""
    originals = sorted((source / "train").glob("*.wav"))
    tests = sorted((source / "test").glob("*.wav"))
    if not originals or not (source / "test").is_dir():
        raise UserError(f"{source}: --epoch_data needs a DCASE-layout folder with train/*.wav and test/")
    (root / "train").mkdir(parents=True)
    for index in range(clips):
        (root / "train" / f"normal_id_00_{index:08d}.wav").symlink_to(originals[index % len(originals)].resolve())
    if not test_clips:
        (root / "test").symlink_to((source / "test").resolve())
        return root
    if not tests:
        raise UserError(f"{source / 'test'}: --epoch_test_clips needs test clips to repeat; the folder has no .wav")
    (root / "test").mkdir()
    for index in range(test_clips):
        original = tests[index % len(tests)]
        label = original.name.split("_", 1)[0]
        (root / "test" / f"{label}_id_00_{index:08d}.wav").symlink_to(original.resolve())
    return root


def run_measured(command: list[str], stop_after: float | None = None) -> tuple[float, float]:
    """Run ``command`` to its end, or send it Ctrl-C after ``stop_after`` seconds; its wall time in seconds
    and its own peak resident memory in GiB (``os.wait4`` reads that one process's usage, not that of the
    bench's other children, such as the release path's DataLoader worker)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    success = {0} if stop_after is None else {0, INTERRUPTED}  # exit statuses that are not failures
    timer = threading.Timer(stop_after or 0, os.kill, (process.pid, signal.SIGINT))
    if stop_after is not None:
        timer.start()
    _, status, usage = os.wait4(process.pid, 0)
    timer.cancel()
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    if process.returncode not in success:
        raise UserError(f"{shlex.join(command)}: exited with status {process.returncode}")
    return seconds, usage.ru_maxrss / 2**20


def time_epoch(args: argparse.Namespace, device: torch.device, root: Path) -> None:
    """``--epoch_epochs`` epochs of the WAV preset through train.py in a fresh process, decoding included (no
    cache), with ``--epoch_args`` added to its options."""
    data = grown_data_set(args.epoch_data, args.epoch_clips, root / "data", args.epoch_test_clips)
    run = args.epoch_output or root / "run"
    command = [sys.executable, str(REPO / "train.py"), "--data_root", str(data),
               "--epochs", str(args.epoch_epochs), "--device", device.type, "--seed", str(args.seed), "--no-cache",
               "--quiet", "--bf16", str(args.bf16), "--output_dir", str(run), *shlex.split(args.epoch_args)]
    seconds, peak = run_measured(command, args.epoch_seconds)
    extra = f", train.py {args.epoch_args}" if args.epoch_args else ""
    checkpoint = run / "checkpoints" / "last.pt"
    if args.epoch_seconds is None:
        done = (f"end to end: {seconds:.1f} s, {args.epoch_clips * args.epoch_epochs / seconds:.2f} clips/s "
                "(decoding and evaluation included)")
    elif checkpoint.exists():
        done = f"stopped after {seconds:.1f} s at training step {load_file(checkpoint)['step']} (decoding included)"
    else:
        done = f"stopped after {seconds:.1f} s, before its first training step"
    what = "epoch" if args.epoch_epochs == 1 else f"run of {args.epoch_epochs} epochs"
    tests = f", {args.epoch_test_clips} test clips" if args.epoch_test_clips else ""
    print(f"{what} of {args.epoch_clips} training clips{tests} ({data}{extra}), {done}; peak host memory of train.py "
          f"{peak:.2f} GiB", flush=True)


def bench(args: argparse.Namespace) -> None:
    """Make the data, measure both paths at every batch size, print the ratio at batch 2 last."""
    device = resolve_device(args.device)
    args = resolve_defaults(args, device)
    describe(args, device)
    with tempfile.TemporaryDirectory(prefix="grlnet-bench-") as root:
        if args.preset == "wav":
            opt, train_set, test_set = wav_preset_data(args, device)
        else:
            data_options = write_synthetic_csv(Path(root), args)
            opt = parse_opts([*data_options, "--mess_length", str(args.mess_length), "--seed", str(args.seed),
                              "--device", device.type, "--quiet", "--deterministic", str(args.deterministic),
                              "--bf16", str(args.bf16)])
            train_set, test_set = load_datasets(data_settings(opt))
        passed = check_equivalence(opt, device, train_set, test_set) if args.check_equivalence else True
        results = {batch: run_batch(opt, args, device, train_set, test_set, batch) for batch in args.batch_sizes}
        if args.epoch_data is not None:
            time_epoch(args, device, Path(root))
    unit = "windows" if args.preset == "wav" else "samples"
    for batch, pair in results.items():
        speedup = pair["release"].seconds_per_step / pair["fast"].seconds_per_step
        print(f"batch {batch}: fast / release {unit}/s = {speedup:.3f}", flush=True)
    paper = results[PAPER_BATCH]
    if args.preset == "wav":
        print(f"scoring at batch {PAPER_BATCH}: fast / release clips/s = "
              f"{paper['fast'].clips_per_second / paper['release'].clips_per_second:.3f}", flush=True)
    if device.type == "cpu":
        print(f"peak host memory of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB",
              flush=True)
    print(f"ratio {paper['release'].seconds_per_step / paper['fast'].seconds_per_step:.4f}", flush=True)
    if not passed:
        raise SystemExit(1)


if __name__ == "__main__":
    run_cli(bench, parse_args)

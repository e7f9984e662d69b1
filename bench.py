"""Training speed: the release's pipeline against the project's default path, in one process.

Both paths train on the same synthetic signals, written to a temporary folder in the release's CSV
layout (``0.csv, 1.csv, ...`` and a label file):

- ``release``: the release re-created in our code: fp32 eager (cuDNN TF32 as PyTorch leaves it),
  the joint step with unit-variance noise, a data set that re-parses its CSV file on every item,
  ``DataLoader(num_workers=1, shuffle=True, drop_last=True)``, pageable memory, plain Adam.
- ``fast``: what ``train.py`` runs: signals decoded once and kept on the device with the batch
  indices, the standard step under bf16 autocast and torch.compile (CUDA), channels-last
  convolutions (CUDA), fused Adam (CUDA), cudnn.benchmark, no host sync inside the loop.

The last line is ``ratio <fast samples/s / release samples/s>`` at batch 2, the paper's setting.
``--check_equivalence`` also scores one test set with the same weights with and without bf16 autocast
(SPEC section 10: the AUCs must agree within 0.005).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from data import ClipSet, load_datasets
from data.synthetic import make_synthetic_set
from cli import run_cli
from errors import UserError, make_folder
from features import FeatureScorer
from main import batch_order
from metrics import compute_metrics
from network import GRLNet
from opts import non_negative_int, parse_opts, positive_int, positive_number, seed_value, test_clip_count
from runtime import (autocast_context, build_model, build_optimizers, choose_kernels, compile_networks,
                     resolve_device)
from scoring import fit_normal_windows, score_clips
from steps import Networks, released_step, standard_step

PAPER_BATCH = 2
DEFAULTS = {  # per device: --mess_length, --batch_sizes, --steps, --warmup
    "cuda": {"mess_length": 233472, "batch_sizes": [2, 8], "steps": 20, "warmup": 5},
    "cpu": {"mess_length": 2048, "batch_sizes": [2], "steps": 5, "warmup": 1},
}
EQUIVALENCE_STEPS = 16  # fp32 training steps before the equivalence check scores the test set
EQUIVALENCE_TOLERANCE = 0.005  # SPEC section 10 (a)
PROFILE_STEPS = 3
PROFILE_ROWS = 25


# ---------------------------------------------------------------- options

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line; length, batches, steps and warm-up default per device."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when present (default auto)")
    p.add_argument("--mess_length", type=positive_int, default=None,
                   help="signal length (default 233472 on CUDA, 2048 on CPU)")
    p.add_argument("--batch_sizes", type=positive_int, nargs="+", default=None,
                   help="batch sizes to measure, 2 among them (default 2 8 on CUDA, 2 on CPU)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="timed steps (default 20 on CUDA, 5 on CPU)")
    p.add_argument("--warmup", type=non_negative_int, default=None,
                   help="untimed steps first, compilation included (default 5 on CUDA, 1 on CPU)")
    p.add_argument("--clips", type=positive_int, default=32, help="training CSV files (default 32)")
    p.add_argument("--test_clips", type=test_clip_count, default=64,
                   help="test CSV files for --check_equivalence, half normal, half abnormal "
                        "(default 64; 2 without the check)")
    p.add_argument("--peak_tflops", type=positive_number, default=989.0,
                   help="assumed bf16 peak of the GPU in TFLOP/s (default 989: H100 SXM dense bf16)")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="write a torch.profiler table per path to DIR/profile_<path>.txt")
    p.add_argument("--check_equivalence", action="store_true",
                   help="score the same weights with and without bf16 autocast and compare AUCs")
    p.add_argument("--deterministic", action="store_true",
                   help="time the fast path with train.py --deterministic's kernels (the release path is unchanged)")
    p.add_argument("--seed", type=seed_value, default=0, help="seeds data, networks and batch order (default 0)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return p.parse_args(argv)


def resolve_defaults(args: argparse.Namespace, device: torch.device) -> argparse.Namespace:
    """Fill the per-device defaults and refuse settings the benchmark cannot run."""
    for name, value in DEFAULTS[device.type].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if PAPER_BATCH not in args.batch_sizes:
        raise UserError(f"--batch_sizes must include {PAPER_BATCH}: the ratio line is at the paper's batch")
    if args.clips < max(args.batch_sizes):
        raise UserError(f"--clips {args.clips} is fewer than the largest batch size {max(args.batch_sizes)}")
    if args.profile is not None:
        make_folder(args.profile, "profile folder (--profile)")
    return args


# ---------------------------------------------------------------- data in the release's layout

def write_csv_set(folder: Path, signals: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``<folder>/<i>.csv`` (one column, no header) and a label file; return the label file."""
    folder.mkdir(parents=True)
    for index, signal in enumerate(signals):
        np.savetxt(folder / f"{index}.csv", signal, fmt="%.9g")
    label_path = folder.with_name(f"{folder.name}_label.csv")
    label_path.write_text("label\n" + "".join(f"{int(label)}\n" for label in labels))
    return label_path


def write_synthetic_csv(root: Path, args: argparse.Namespace) -> list[str]:
    """Synthetic training (normal) and test (both classes) sets on disk; the options naming them.

    Only ``--check_equivalence`` scores the test set; without it the set holds one clip per class.
    """
    train = make_synthetic_set(args.seed, args.mess_length, args.clips, 0)
    test_clips = args.test_clips if args.check_equivalence else 2
    abnormal = test_clips // 2
    test = make_synthetic_set(args.seed + 1, args.mess_length, test_clips - abnormal, abnormal)
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
    """One training path: ``step`` runs one step as timed, ``eager_step`` the same without compile."""

    name: str
    step: Callable[[], None]
    eager_step: Callable[[], None]


@dataclass
class Measurement:
    """What one path achieved at one batch size."""

    name: str
    batch: int
    seconds_per_step: float
    flops_per_step: int
    peak_bytes: int | None


def with_options(opt: argparse.Namespace, **changes) -> argparse.Namespace:
    """A copy of ``opt`` with some options changed."""
    return argparse.Namespace(**{**vars(opt), **changes})


def eager_networks(model: GRLNet, device: torch.device, opt: argparse.Namespace) -> Networks:
    """The networks as ``compile_networks`` returns them without compilation."""
    return compile_networks(model, device, with_options(opt, compile=False))


def release_bench(opt: argparse.Namespace, device: torch.device) -> Bench:
    """The release's pipeline: fp32 eager, joint step, CSV re-parsed per item, plain Adam."""
    opt = with_options(opt, update="released", noise="released")
    choose_kernels(device, deterministic=False)
    torch.backends.cudnn.benchmark = False  # the release leaves cuDNN's autotuning off
    torch.manual_seed(opt.seed)
    model = GRLNet(opt.mess_length).to(device).train()
    rates = {"regional": opt.r_g_net_learning_rate, "local": opt.l_g_net_learning_rate,
             "discriminator": opt.d_net_learning_rate}
    optimizers = {name: torch.optim.Adam(getattr(model, name).parameters(), lr=rate)
                  for name, rate in rates.items()}
    loader = DataLoader(ReleaseCsvDataset(Path(opt.train_root), opt.mess_length),
                        batch_size=opt.batch_size, shuffle=True, drop_last=True, num_workers=1)
    batches, nets = endless(loader), eager_networks(model, device, opt)

    def step() -> None:
        released_step(nets, model, optimizers, next(batches).to(device), opt, contextlib.nullcontext())

    return Bench("release", step, step)


def fast_bench(opt: argparse.Namespace, device: torch.device, train_set: ClipSet) -> Bench:
    """The project's default path, set up as ``main.Trainer`` sets it up."""
    choose_kernels(device, opt.deterministic)
    torch.compiler.reset()  # a fresh compilation for each batch size, as in a fresh run
    torch.manual_seed(opt.seed)
    model = build_model(opt, device).train()
    optimizers = build_optimizers(model, opt, device)
    windows, _ = train_set.windows(opt.segment_length, opt.segment_hop)
    windows = windows.to(device)  # resident on the device, as the Trainer keeps them
    indices = endless_batch_indices(len(windows), opt, device)

    def step_with(nets: Networks) -> Callable[[], None]:
        def step() -> None:
            standard_step(nets, model, optimizers, windows[next(indices)], opt, autocast_context(device, opt))
        return step

    return Bench("fast", step_with(compile_networks(model, device, opt)),
                 step_with(eager_networks(model, device, opt)))


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
    path.write_text(f"{title}, {PROFILE_STEPS} steps\n\n" + "\n\n".join(tables))
    return path


def measure(bench: Bench, args: argparse.Namespace, device: torch.device, batch: int) -> Measurement:
    """Warm up, time, read peak memory, count FLOPs and (when asked, at batch 2) profile."""
    for _ in range(args.warmup):
        bench.step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = time_steps(bench.step, args.steps, device)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    flops = count_flops(bench.eager_step, device)
    if args.profile is not None and batch == PAPER_BATCH:
        title = f"{bench.name} path on {device.type}, length {args.mess_length}, batch {batch}"
        print(f"profile written to {write_profile(bench, device, args.profile, title)}", flush=True)
    return Measurement(bench.name, batch, seconds, flops, peak)


def release_memory(device: torch.device) -> None:
    """Free what a finished path held (its loader's worker included) before the next one."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def format_measurement(m: Measurement, peak_tflops: float) -> str:
    """One result line: throughput, step time, FLOPs, and on CUDA memory and share of peak."""
    tflops = m.flops_per_step / m.seconds_per_step / 1e12
    line = (f"{m.name:<8} batch {m.batch}: {m.batch / m.seconds_per_step:.3f} samples/s, "
            f"{m.seconds_per_step:.4f} s/step, {m.flops_per_step / 1e9:.2f} GFLOP/step, "
            f"{tflops:.4f} TFLOP/s")
    if m.peak_bytes is not None:
        line += (f", peak {m.peak_bytes / 2**30:.2f} GiB, "
                 f"{100 * tflops / peak_tflops:.1f}% of assumed bf16 peak")
    return line


def run_batch(opt: argparse.Namespace, args: argparse.Namespace, device: torch.device,
              train_set: ClipSet, batch: int) -> dict[str, Measurement]:
    """Both paths at one batch size, the release first; each freed before the next starts."""
    opt = with_options(opt, batch_size=batch)
    results = {}
    for name, build in (("release", lambda: release_bench(opt, device)),
                        ("fast", lambda: fast_bench(opt, device, train_set))):
        results[name] = measure(build(), args, device, batch)
        release_memory(device)
        print(format_measurement(results[name], args.peak_tflops), flush=True)
    return results


# ---------------------------------------------------------------- bf16 against fp32 scores

def score_auc(model: GRLNet, train_set: ClipSet, test_set: ClipSet, opt: argparse.Namespace, device: torch.device,
              autocast: contextlib.AbstractContextManager) -> float:
    """The test AUC of ``model``'s score (``--score``), its feature statistics fitted and applied under ``autocast``."""
    scorer = FeatureScorer(fit_normal_windows(model, train_set, opt, device, autocast))
    scores = score_clips(model, test_set, opt, device, autocast, scorer=scorer)
    return compute_metrics(test_set.binary_labels(), scores["score"])["auc"]


def check_equivalence(opt: argparse.Namespace, device: torch.device, train_set: ClipSet,
                      test_set: ClipSet) -> bool:
    """Train a few fp32 steps, score the test set with and without bf16 autocast, compare AUCs."""
    torch.manual_seed(opt.seed)
    model = build_model(opt, device).train()
    optimizers = build_optimizers(model, opt, device)
    windows, _ = train_set.windows(opt.segment_length, opt.segment_hop)
    indices, nets = endless_batch_indices(len(windows), opt), eager_networks(model, device, opt)
    for _ in range(EQUIVALENCE_STEPS):
        x = windows[next(indices)].to(device)
        standard_step(nets, model, optimizers, x, opt, contextlib.nullcontext())
    fp32 = score_auc(model, train_set, test_set, opt, device, contextlib.nullcontext())
    bf16 = score_auc(model, train_set, test_set, opt, device, torch.autocast(device.type, dtype=torch.bfloat16))
    passed = abs(fp32 - bf16) <= EQUIVALENCE_TOLERANCE
    print(f"equivalence ({EQUIVALENCE_STEPS} fp32 training steps, {len(test_set)} test clips, same weights): "
          f"AUC fp32 {fp32:.4f}, AUC bf16 autocast {bf16:.4f}, difference {abs(fp32 - bf16):.4f} "
          f"(SPEC 10: within {EQUIVALENCE_TOLERANCE}) {'pass' if passed else 'FAIL'}", flush=True)
    return passed


# ---------------------------------------------------------------- the run

def describe(args: argparse.Namespace, device: torch.device) -> None:
    """The settings, and what the figures mean."""
    threads = f"CPU, {torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name() if device.type == "cuda" else threads
    print(f"device {device} ({name}), PyTorch {torch.__version__}", flush=True)
    print(f"length {args.mess_length}, batch sizes {' '.join(map(str, args.batch_sizes))}, "
          f"{args.warmup} warm-up + {args.steps} timed steps per path, {args.clips} training CSV files"
          f"{', fast path with --deterministic kernels' if args.deterministic else ''}", flush=True)
    print("FLOP/step: convolutions and matrix products of one eager step of the same path, forward and "
          "backward, counted by FlopCounterMode (FFT, norms and elementwise ops are not counted)", flush=True)
    if device.type == "cuda":
        print(f"share of peak: against {args.peak_tflops:g} TFLOP/s, an ASSUMED dense bf16 peak "
              "(H100 SXM by default; set --peak_tflops for another card)", flush=True)


def bench(args: argparse.Namespace) -> None:
    """Write the data, measure both paths at every batch size, print the ratio at batch 2 last."""
    device = resolve_device(args)
    args = resolve_defaults(args, device)
    describe(args, device)
    with tempfile.TemporaryDirectory(prefix="grlnet-bench-") as root:
        data_options = write_synthetic_csv(Path(root), args)
        opt = parse_opts([*data_options, "--mess_length", str(args.mess_length), "--seed", str(args.seed),
                          "--device", device.type, "--quiet", "--deterministic", str(args.deterministic)])
        train_set, test_set = load_datasets(opt)
        passed = check_equivalence(opt, device, train_set, test_set) if args.check_equivalence else True
        results = {batch: run_batch(opt, args, device, train_set, batch) for batch in args.batch_sizes}
    for batch, pair in results.items():
        speedup = pair["release"].seconds_per_step / pair["fast"].seconds_per_step
        print(f"batch {batch}: fast / release samples/s = {speedup:.3f}", flush=True)
    paper = results[PAPER_BATCH]
    print(f"ratio {paper['release'].seconds_per_step / paper['fast'].seconds_per_step:.4f}", flush=True)
    if not passed:
        raise SystemExit(1)


if __name__ == "__main__":
    run_cli(bench, parse_args)

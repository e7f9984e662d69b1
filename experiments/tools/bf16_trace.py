"""Trace training under CPU bf16 autocast step by step: the first module whose output or gradient turns
NaN or infinite, the largest activation and gradient per module, and D's logits over the last steps.

Builds the slider protocol's run as train.py would (``reproduce.py --quick``, standard update, every window
every 8192 samples as when BENCHMARKS.md saw a NaN), then runs grlnet.steps.standard_step under the variant's
autocast, checking losses, step statistics and every weight after each step:

    OMP_NUM_THREADS=1 python -m experiments.tools.bf16_trace --variant bf16 --seed 1 --steps 200
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from data.console import UserError
from data.files import write_json
from experiments.repro.protocols import PROTOCOLS
from experiments.repro.runs import method_argv
from grlnet.cli import close_logging, run_cli
from grlnet.steps import STEP_STATS, standard_step
from main import Trainer, batch_order, nonfinite_weight, set_up
from network import GlobalFilterLayer, LearnedGlobalFilterLayer
from opts import parse_opts
from reproduce import QUICK_ARGS

PROTOCOL = "dcase2020_slider_id00"
# train.py's window budget when BENCHMARKS.md measured bf16: every window at the --quick hop.
ALL_WINDOWS = ["--train_windows_per_clip", "0"]
# D's calls in one standard step, in their order: the D update's three, then the generators' two.
LOGIT_CALLS = ("regional", "local", "real", "adv_regional", "adv_local")
VARIANTS = {
    "bf16": "bf16 autocast as train.py would run it on CUDA",
    "bf16_fp32_norms": "bf16 autocast, BatchNorm and the global filter layer in fp32 (fp32 inputs, autocast off)",
    "fp32": "no autocast (train.py on every CPU)",
}
FP32_MODULES = (nn.modules.batchnorm._BatchNorm, GlobalFilterLayer, LearnedGlobalFilterLayer)


def autocast_for(variant: str) -> contextlib.AbstractContextManager:
    """The context each step's forward passes run under."""
    if variant == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def run_in_fp32(forward: Callable) -> Callable:
    """``forward`` on fp32 inputs with autocast off, for modules kept in fp32 under bf16 autocast."""
    def fp32_forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return forward(x.float())
    return fp32_forward


def keep_fp32(model: nn.Module) -> list[str]:
    """Run every BatchNorm and global filter layer of ``model`` in fp32; their names."""
    kept = []
    for name, module in model.named_modules():
        if isinstance(module, FP32_MODULES):
            module.forward = run_in_fp32(module.forward)
            kept.append(name)
    return kept


def module_group(name: str, module: nn.Module) -> str:
    """A module's network and part (global filter, encoder, decoder, D's stack) with its type."""
    network, _, rest = name.partition(".")
    part = rest.split(".")[0] if rest else ""
    return f"{network}.{part} {type(module).__name__}".replace(". ", " ")


def largest(tensor: torch.Tensor) -> float:
    """max |value| of ``tensor`` (NaN where it holds a NaN)."""
    return tensor.detach().float().abs().amax().item()


class Tracer:
    """Forward hooks on every module: each step's largest |output| and |gradient of the output| per module,
    and the first module whose output or output gradient is NaN or infinite (forward order, then backward)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.modules = dict(model.named_modules())
        self.step = 0
        self.activations: dict[str, float] = {}
        self.gradients: dict[str, float] = {}
        self.first_nonfinite: dict | None = None
        self.handles = [module.register_forward_hook(self.forward_hook(name))
                        for name, module in model.named_modules() if name]

    def begin_step(self, step: int) -> None:
        self.step, self.activations, self.gradients = step, {}, {}

    def note(self, table: dict[str, float], name: str, value: float, where: str) -> None:
        table[name] = max(table.get(name, 0.0), value) if value == value else value
        if not torch.isfinite(torch.tensor(value)) and self.first_nonfinite is None:
            self.first_nonfinite = {"step": self.step, "where": where, "module": name,
                                    "type": type(self.modules[name]).__name__, "value": value}

    def forward_hook(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                return
            self.note(self.activations, name, largest(output), "output")
            if output.requires_grad:
                output.register_hook(lambda grad: self.note(self.gradients, name, largest(grad), "gradient"))
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class LogitRecorder:
    """Wraps D's logits callable: each step's logits range per call of ``LOGIT_CALLS``."""

    def __init__(self, d_logits: Callable[[torch.Tensor], torch.Tensor]):
        self.d_logits = d_logits
        self.calls: list[tuple[float, float]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.d_logits(x)
        values = logits.detach().float()
        self.calls.append((values.min().item(), values.max().item()))
        return logits

    def take(self) -> dict[str, tuple[float, float]]:
        step, self.calls = dict(zip(LOGIT_CALLS, self.calls, strict=True)), []
        return step


def slider_options(data_dir: Path, seed: int, folder: Path) -> argparse.Namespace:
    """train.py's options for reproduce.py's slider protocol at --quick, method grlnet_standard, one seed,
    every window, on the CPU, its run folder in ``folder``."""
    task = PROTOCOLS[PROTOCOL].tasks(data_dir, folder)[0]
    return parse_opts(method_argv(task, "grlnet_standard", seed, [*QUICK_ARGS, *ALL_WINDOWS, "--device", "cpu"]))


def first_nonfinite_stat(stats: torch.Tensor) -> str | None:
    """The first step statistic (loss, D output, gradient norm) that is NaN or infinite, or None."""
    return next((f"{name} = {value}" for name, value in zip(STEP_STATS, stats.tolist(), strict=True)
                 if not torch.isfinite(torch.tensor(value))), None)


def trace(opt: argparse.Namespace, variant: str, steps: int, keep: int, traced: bool = True) -> dict:
    """Up to ``steps`` training steps of epoch 0 under ``variant``, stopped at the first non-finite value;
    the last ``keep`` steps' statistics, activations, gradients and logits ranges."""
    run, _ = set_up(opt)
    try:
        kept = keep_fp32(run.model) if variant == "bf16_fp32_norms" else []
        tracer = Tracer(run.model) if traced else None
        logits = LogitRecorder(run.nets.d_logits)
        run.nets.d_logits = logits
        windows = Trainer(run).epoch_windows()
        batches = batch_order(len(windows), opt, 0, run.process, run.device)
        run.model.train()
        recent: deque = deque(maxlen=keep)
        seconds, failure = [], None
        for step in range(min(steps, len(batches))):
            if tracer:
                tracer.begin_step(step)
            started = time.perf_counter()
            stats = standard_step(run.nets, run.model, run.optimizers, windows[batches[step]], run.step_settings,
                                  autocast_for(variant)).stacked()
            seconds.append(time.perf_counter() - started)
            recent.append({"step": step, "stats": dict(zip(STEP_STATS, stats.tolist(), strict=True)),
                           "logits": logits.take(),
                           "activations": dict(tracer.activations) if tracer else {},
                           "gradients": dict(tracer.gradients) if tracer else {}})
            bad_stat, bad_weight = first_nonfinite_stat(stats), nonfinite_weight(run.model)
            if bad_stat or bad_weight or (tracer and tracer.first_nonfinite):
                failure = {"step": step, "statistic": bad_stat, "weight": bad_weight,
                           "first_module": tracer.first_nonfinite if tracer else None}
                break
        groups = {name: module_group(name, module) for name, module in run.model.named_modules() if name}
        return {"variant": variant, "description": VARIANTS[variant], "seed": opt.seed, "fp32_modules": kept,
                "steps_run": len(seconds), "diverged": failure, "recent": list(recent), "groups": groups,
                "seconds_per_step": statistics.median(seconds[min(5, len(seconds) - 1):]) if seconds else None}
    finally:
        if run.lock is not None:
            run.lock.close()
        close_logging()


def group_maxima(recent: list[dict], groups: dict[str, str], table: str) -> dict[str, float]:
    """The largest value of ``table`` (activations or gradients) per module group over ``recent`` steps;
    NaN wins, so a group that went non-finite shows it."""
    maxima: dict[str, float] = {}
    for record in recent:
        for name, value in record[table].items():
            group = groups[name]
            old = maxima.get(group, 0.0)
            maxima[group] = value if value != value or old != old else max(old, value)
    return maxima


def report(result: dict) -> str:
    """The result of one variant and seed, for people."""
    header = (f"== {result['variant']} ({result['description']}), seed {result['seed']}: "
              f"{result['steps_run']} steps, median {result['seconds_per_step']:.3f} s/step")
    lines = [header]
    failure = result["diverged"]
    if failure is None:
        lines.append("   finite throughout")
    else:
        lines.append(f"   DIVERGED at step {failure['step']}: statistic {failure['statistic']}, weight "
                     f"{failure['weight']}, first module {failure['first_module']}")
    recent = result["recent"]
    if recent:
        lines.append(f"   over steps {recent[0]['step']}-{recent[-1]['step']}:")
        ranges = {call: (min(r["logits"][call][0] for r in recent if call in r["logits"]),
                         max(r["logits"][call][1] for r in recent if call in r["logits"]))
                  for call in LOGIT_CALLS if any(call in r["logits"] for r in recent)}
        lines.append("   D logits " + ", ".join(f"{c} [{lo:.3g}, {hi:.3g}]" for c, (lo, hi) in ranges.items()))
        last = recent[-1]["stats"]
        lines.append("   last step " + ", ".join(f"{name} {value:.4g}" for name, value in last.items()))
        activations = group_maxima(recent, result["groups"], "activations")
        gradients = group_maxima(recent, result["groups"], "gradients")
        for group in sorted(activations):
            lines.append(f"   {group:40s} max|act| {activations[group]:10.4g}   max|grad| "
                         f"{gradients.get(group, float('nan')):10.4g}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=VARIANTS, nargs="+", default=list(VARIANTS))
    p.add_argument("--seed", type=int, nargs="+", default=[1])
    p.add_argument("--steps", type=int, default=200, help="training steps per run at most (default 200)")
    p.add_argument("--keep", type=int, default=10, help="steps reported before the last one (default 10)")
    p.add_argument("--data_dir", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data",
                   help="the folder holding dcase2020_slider_id00 (default ../shared/data)")
    p.add_argument("--no_trace", action="store_true", help="no hooks: the finite checks alone (timing)")
    p.add_argument("--json", type=Path, help="write every result here")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    if args.steps < 1 or args.keep < 1:
        raise UserError("--steps and --keep must be at least 1")
    results = []
    for seed in args.seed:
        for variant in args.variant:
            with tempfile.TemporaryDirectory(prefix="bf16_trace_") as folder:
                opt = slider_options(args.data_dir, seed, Path(folder))
                result = trace(opt, variant, args.steps, args.keep, traced=not args.no_trace)
            print(report(result), flush=True)
            results.append(result)
            if args.json:
                write_json(args.json, results, "bf16 trace")


if __name__ == "__main__":
    run_cli(main, parse_args)

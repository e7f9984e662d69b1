"""Where and how the networks run: device, kernel choice, bf16 autocast, channels-last, fused Adam,
torch.compile and DistributedDataParallel wrappers (BENCHMARKS.md measures all but DDP)."""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os

import torch
import torch._functorch.config
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from data.console import UserError
from grlnet.distributed import SINGLE_PROCESS, Process
from grlnet.steps import Networks
from network import GRLNet, use_channels_last
from opts import LEARNING_RATE_BATCH, network_length

log = logging.getLogger("grlnet")


def resolve_device(opt: argparse.Namespace) -> torch.device:
    """``--device auto`` picks CUDA when present; asking for CUDA without one is an error."""
    if opt.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda (or --cuda) was given but no CUDA device is available")
    if opt.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(opt.device)


def choose_kernels(device: torch.device, deterministic: bool) -> None:
    """Fast kernels (cuDNN autotuning) by default, or with ``--deterministic`` kernels that repeat a run
    to the bit on the same machine: deterministic cuDNN and cuBLAS algorithms, torch's deterministic
    mode, and Inductor kernels chosen without timing them (timings differ from run to run)."""
    torch.use_deterministic_algorithms(deterministic)
    if device.type == "cuda":
        if deterministic:  # cuBLAS repeats its sums only with a fixed workspace (CUDA's documentation)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        from torch._inductor import config as inductor  # imported here: it costs a second, and only CUDA compiles
        inductor.deterministic = deterministic


def random_state(device: torch.device) -> dict:
    """This process's random generators: the CPU's and, on CUDA, the device's (it draws the input noise)."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_random_state(saved: dict, device: torch.device) -> None:
    """Set the generators ``random_state`` saved. A CUDA state is used on CUDA only: resumed on the CPU,
    the noise comes from the CPU's."""
    torch.set_rng_state(saved["cpu"])
    if saved["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda"], device)


def uses_bf16(device: torch.device, opt: argparse.Namespace) -> bool:
    """Whether the networks run under bf16 autocast: with ``--bf16`` on CUDA. CPUs stay fp32: on one with
    AMX bf16 made a step 2.2 times faster, but one of six real-data runs diverged and runs did not
    repeat; with AVX512-BF16 alone it was 1.5 times slower (BENCHMARKS.md)."""
    return opt.bf16 and device.type == "cuda"


def autocast_context(device: torch.device, opt: argparse.Namespace) -> contextlib.AbstractContextManager:
    """bf16 autocast where ``uses_bf16``; else a null context (fp32)."""
    if uses_bf16(device, opt):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(opt: argparse.Namespace, device: torch.device) -> GRLNet:
    """GRLNet as the options define it (the window or signal length, the filter layer), on ``device``."""
    return place_model(GRLNet(network_length(opt), opt.global_filter), device, opt)


def place_model(model: GRLNet, device: torch.device, opt: argparse.Namespace) -> GRLNet:
    """Move the networks to ``device``; on CUDA with ``--channels_last`` they run channels-last."""
    return use_channels_last(model.to(device), device.type == "cuda" and opt.channels_last)


def learning_rate_factor(opt: argparse.Namespace, processes: int = 1) -> float:
    """What the learning rates are multiplied by: 1, or with ``--learning_rate_scaling sqrt`` the square
    root of the batch of all processes together over the batch the rates are set for."""
    if opt.learning_rate_scaling == "sqrt":
        return math.sqrt(opt.batch_size * processes / LEARNING_RATE_BATCH)
    return 1.0


def learning_rates(opt: argparse.Namespace, processes: int = 1) -> dict[str, float]:
    """Each network's Adam learning rate, by the network's attribute name in GRLNet: the options' rates
    times ``learning_rate_factor``."""
    factor = learning_rate_factor(opt, processes)
    return {"regional": opt.r_g_net_learning_rate * factor, "local": opt.l_g_net_learning_rate * factor,
            "discriminator": opt.d_net_learning_rate * factor}


def build_optimizers(model: GRLNet, opt: argparse.Namespace, device: torch.device, processes: int = 1) -> dict:
    """Adam per network at ``learning_rates``; fused kernels on CUDA."""
    fused = {"fused": True} if device.type == "cuda" else {}
    return {name: torch.optim.Adam(getattr(model, name).parameters(), lr=rate, **fused)
            for name, rate in learning_rates(opt, processes).items()}


class _Logits(nn.Module):
    """D's logits as a module's forward, so DistributedDataParallel can wrap them."""

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator.logits(x)


def _compiles(device: torch.device, opt: argparse.Namespace) -> bool:
    """Whether this run compiles its networks: on CUDA with ``--compile``."""
    return device.type == "cuda" and opt.compile


def _compile(module: nn.Module, device: torch.device, opt: argparse.Namespace, mode: str):
    """torch.compile on CUDA with ``--compile``, in ``mode``; a compiler that fails falls back to eager code."""
    if not _compiles(device, opt):
        return module
    # Compilation happens at the first call; with this set, a failure there warns and runs eagerly.
    torch._dynamo.config.suppress_errors = True
    # The release's step back-propagates twice through one forward (retain_graph=True), which a
    # compiled backward allows only without donated buffers.
    torch._functorch.config.donated_buffer = opt.update != "released"
    try:
        return torch.compile(module, mode=mode)
    except RuntimeError as err:  # e.g. a Python version torch.compile does not support
        log.warning("torch.compile unavailable (%s); running eagerly", err)
        return module


def compile_networks(model: GRLNet, device: torch.device, opt: argparse.Namespace,
                     process: Process = SINGLE_PROCESS, compile_mode: str = "default") -> Networks:
    """Wrap the networks for this run: DistributedDataParallel over several processes, then
    torch.compile on CUDA when ``--compile``, in torch.compile's ``compile_mode`` (train.py: its default;
    bench.py measures "reduce-overhead", CUDA graphs); checkpoints always come from the unwrapped ``model``."""
    modules = [model.regional, model.local, _Logits(model.discriminator)]
    d_no_sync = contextlib.nullcontext
    if process.distributed:
        ids = [process.local_rank] if device.type == "cuda" else None
        modules = [DistributedDataParallel(m, device_ids=ids, broadcast_buffers=False) for m in modules]
        d_no_sync = modules[2].no_sync
    regional, local, d_logits = (_compile(m, device, opt, compile_mode) for m in modules)
    cuda_graphs = _compiles(device, opt) and compile_mode == "reduce-overhead"
    return Networks(regional, local, d_logits, d_no_sync, cuda_graphs)

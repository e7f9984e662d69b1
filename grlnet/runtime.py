"""Where and how the networks run: device, kernel choice, bf16 autocast, channels-last, fused Adam,
torch.compile and DistributedDataParallel wrappers (BENCHMARKS.md measures all but DDP). torch's
process-wide settings change only where a run asks for them (``choose_kernels``, ``step_settings``)."""
from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch._functorch.config
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from data.console import UserError
from grlnet.channels_last import use_channels_last
from grlnet.distributed import SINGLE_PROCESS, Process
from grlnet.steps import Networks
from network import NETWORKS, GRLNet

log = logging.getLogger("grlnet")
# The batch the learning rates are set for: the release's (--learning_rate_scaling sqrt scales from it).
LEARNING_RATE_BATCH = 2


def resolve_device(device: str) -> torch.device:
    """``--device auto`` picks CUDA when present; asking for CUDA without one is an error."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda (or --cuda) was given but no CUDA device is available")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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


def uses_bf16(device: torch.device, bf16: bool) -> bool:
    """Whether the networks run under bf16 autocast: with ``--bf16`` on CUDA. CPUs stay fp32: on one with
    AMX bf16 made a step 2.2 times faster, but one of six real-data runs diverged and runs did not
    repeat; with AVX512-BF16 alone it was 1.5 times slower (BENCHMARKS.md)."""
    return bf16 and device.type == "cuda"


def autocast_context(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast where ``uses_bf16``; else a null context (fp32)."""
    if uses_bf16(device, bf16):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(signal_length: int, global_filter: str, device: torch.device, channels_last: bool) -> GRLNet:
    """GRLNet for ``signal_length`` (the window or signal length) with its filter layer, on ``device``."""
    return place_model(GRLNet(signal_length, global_filter), device, channels_last)


def place_model(model: GRLNet, device: torch.device, channels_last: bool) -> GRLNet:
    """Move the networks to ``device``; on CUDA with ``--channels_last`` they run channels-last."""
    model.to(device)
    return use_channels_last(model) if device.type == "cuda" and channels_last else model


@dataclass(frozen=True)
class LearningRates:
    """Each network's Adam learning rate as the options set it, for a batch of ``LEARNING_RATE_BATCH``,
    and how the rates follow the batch: ``scaling`` "none", or "sqrt" of the batch of all processes
    together (``batch_size`` each) over ``LEARNING_RATE_BATCH``."""

    regional: float
    local: float
    discriminator: float
    scaling: str = "none"
    batch_size: int = LEARNING_RATE_BATCH

    def factor(self, processes: int = 1) -> float:
        """What the options' rates are multiplied by over ``processes`` processes."""
        if self.scaling == "sqrt":
            return math.sqrt(self.batch_size * processes / LEARNING_RATE_BATCH)
        return 1.0

    def by_network(self, processes: int = 1) -> dict[str, float]:
        """The rates in use, by the network's attribute name in GRLNet."""
        factor = self.factor(processes)
        return {"regional": self.regional * factor, "local": self.local * factor,
                "discriminator": self.discriminator * factor}


def build_optimizers(model: GRLNet, rates: LearningRates, device: torch.device, processes: int = 1) -> dict:
    """Adam per network at ``rates.by_network(processes)``; fused kernels on CUDA."""
    fused = {"fused": True} if device.type == "cuda" else {}
    return {name: torch.optim.Adam(getattr(model, name).parameters(), lr=rate, **fused)
            for name, rate in rates.by_network(processes).items()}


class _Logits(nn.Module):
    """D's logits as a module's forward, so DistributedDataParallel can wrap them."""

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator.logits(x)


def _compiles(device: torch.device, use_compile: bool) -> bool:
    """Whether this run compiles its networks: on CUDA with ``--compile``."""
    return device.type == "cuda" and use_compile


def _failure_cause(err: Exception) -> str:
    """The exception behind a compile failure, in one line: its type and its message's first line."""
    cause = getattr(err, "inner_exception", None) or err.__cause__ or err
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__


class CompiledOrEager:
    """A network compiled by torch.compile at its first call; where the compiler fails on it (that call or
    a recompilation), the failure is logged with its cause, and that call and every later one run eagerly."""

    def __init__(self, module: nn.Module, name: str, mode: str):
        self.eager, self.name = module, name
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = torch.compile(module, mode=mode)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except torch._dynamo.exc.TorchDynamoException as err:  # the backend's failures included
                log.warning("torch.compile failed on the %s network (%s); it runs eagerly", self.name,
                            _failure_cause(err))
                self.compiled = None
        return self.eager(x)


def _compile(module: nn.Module, name: str, device: torch.device, use_compile: bool,
             mode: str) -> nn.Module | CompiledOrEager:
    """``module`` compiled in ``mode`` (``CompiledOrEager``) on CUDA with ``--compile``; else itself."""
    if not _compiles(device, use_compile):
        return module
    try:
        return CompiledOrEager(module, name, mode)
    except RuntimeError as err:  # e.g. a Python version torch.compile does not support
        log.warning("torch.compile unavailable (%s); running eagerly", err)
        return module


def compile_networks(model: GRLNet, device: torch.device, use_compile: bool, process: Process = SINGLE_PROCESS,
                     compile_mode: str = "default") -> Networks:
    """Wrap the networks for this run: DistributedDataParallel over several processes, then
    torch.compile on CUDA when ``use_compile`` (``--compile``), in torch.compile's ``compile_mode``
    (train.py: its default; experiments/bench.py measures "reduce-overhead", CUDA graphs); checkpoints always come
    from the unwrapped ``model``."""
    modules = [model.regional, model.local, _Logits(model.discriminator)]
    d_no_sync = contextlib.nullcontext
    if process.distributed:
        ids = [process.local_rank] if device.type == "cuda" else None
        modules = [DistributedDataParallel(m, device_ids=ids, broadcast_buffers=False) for m in modules]
        d_no_sync = modules[2].no_sync
    regional, local, d_logits = (_compile(m, name, device, use_compile, compile_mode)
                                 for m, name in zip(modules, NETWORKS, strict=True))
    cuda_graphs = _compiles(device, use_compile) and compile_mode == "reduce-overhead"
    return Networks(regional, local, d_logits, d_no_sync, cuda_graphs)


def compiled_step_context(device: torch.device, use_compile: bool, update: str) -> contextlib.AbstractContextManager:
    """torch's settings for one training step, in effect during the step only. The release's step
    (``update`` "released") back-propagates twice through one forward (retain_graph=True), which a
    compiled backward allows only without donated buffers; torch reads that setting when it compiles
    the forward and again in the backward, so the whole step runs inside it."""
    if _compiles(device, use_compile) and update == "released":
        return torch._functorch.config.patch(donated_buffer=False)
    return contextlib.nullcontext()

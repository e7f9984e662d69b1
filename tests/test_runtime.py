"""Kernel choice (cuDNN autotuning by default, repeatable kernels with --deterministic), the
optimizers' learning rates under --learning_rate_scaling, and torch.compile's mode."""
import contextlib
import os

import pytest
import torch
from torch._inductor import config as inductor

from grlnet.runtime import build_model, build_optimizers, choose_kernels, compile_networks
from grlnet.steps import STEPS
from opts import parse_opts, step_settings


@pytest.fixture
def kernel_settings(monkeypatch):
    """Restore torch's process-wide kernel settings and the cuBLAS variable after the test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic, inductor.deterministic)
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, inductor.deterministic = saved[1:]


def settings() -> tuple:
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic, inductor.deterministic)


def test_deterministic_cuda_settings_and_back(kernel_settings, monkeypatch):
    choose_kernels(torch.device("cuda"), True)  # only flags are set: no GPU is needed
    assert settings() == (True, False, True, True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    choose_kernels(torch.device("cuda"), False)
    assert settings() == (False, True, False, False)


def test_a_users_cublas_workspace_is_kept(kernel_settings, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    choose_kernels(torch.device("cuda"), True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_cpu_leaves_cuda_settings_alone(kernel_settings):
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    choose_kernels(torch.device("cpu"), True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark is True and torch.backends.cudnn.deterministic is False
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


@pytest.mark.parametrize("scaling, batch, processes, regional, d", [
    ("none", 32, 1, 0.001, 0.0001),               # the options' rates, whatever the batch
    ("sqrt", 2, 1, 0.001, 0.0001),                # the batch the rates are set for: unchanged
    ("sqrt", 8, 1, 0.002, 0.0002),                # sqrt(8 / 2) = 2
    ("sqrt", 32, 1, 0.004, 0.0004),               # sqrt(32 / 2) = 4
    ("sqrt", 16, 2, 0.004, 0.0004),               # two processes of 16: the batch in all is 32
])
def test_learning_rate_scaling_gives_the_square_root_rule(scaling, batch, processes, regional, d):
    opt = parse_opts(["--batch_size", str(batch), "--learning_rate_scaling", scaling, "--synthetic_train_clips", "4"])
    optimizers = build_optimizers(build_model(opt, torch.device("cpu")), opt, torch.device("cpu"), processes)
    rates = {name: optimizer.param_groups[0]["lr"] for name, optimizer in optimizers.items()}
    assert rates == pytest.approx({"regional": regional, "local": regional, "discriminator": d}, rel=1e-12)


@pytest.mark.parametrize("mode, cuda_graphs", [("default", False), ("reduce-overhead", True)])
def test_compile_mode_reaches_torch_compile_and_cuda_graphs_mark_every_step(monkeypatch, mode, cuda_graphs):
    # _compile sets both torch settings; torch's own patch restores them after the test.
    with torch._dynamo.config.patch(suppress_errors=False), torch._functorch.config.patch(donated_buffer=True):
        _check_compile_mode(monkeypatch, mode, cuda_graphs)


def _check_compile_mode(monkeypatch, mode: str, cuda_graphs: bool) -> None:
    modes, marks = [], []
    monkeypatch.setattr(torch, "compile", lambda module, mode: modes.append(mode) or module)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    opt = parse_opts(["--mess_length", "512", "--segment_length", "256", "--synthetic_train_clips", "4"])
    model = build_model(opt, torch.device("cpu")).train()
    optimizers = build_optimizers(model, opt, torch.device("cpu"))
    assert compile_networks(model, torch.device("cpu"), opt, compile_mode=mode).cuda_graphs is False  # no compiling
    nets = compile_networks(model, torch.device("cuda"), opt, compile_mode=mode)  # wraps only: no GPU needed
    assert modes == [mode] * 3 and nets.cuda_graphs is cuda_graphs
    x = 0.05 * torch.randn(2, 1, 256)
    for step in STEPS.values():
        step(nets, model, optimizers, x, step_settings(opt), contextlib.nullcontext())
    assert len(marks) == (2 if cuda_graphs else 0)  # one mark at the start of each step

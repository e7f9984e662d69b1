"""Kernel choice (cuDNN autotuning by default, repeatable kernels with --deterministic), the
optimizers' learning rates under --learning_rate_scaling, torch.compile's mode, its failures and the
torch settings a compiled run leaves as they were."""
import contextlib
import logging
import os

import pytest
import torch
import torch._functorch.config
from torch._inductor import config as inductor

from grlnet.runtime import build_model, build_optimizers, choose_kernels, compile_networks, compiled_step_context
from grlnet.steps import STEPS
from opts import learning_rates, network_length, parse_opts, step_settings

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # CUDA: compile_networks only wraps, no GPU is needed


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
    optimizers = build_optimizers(cpu_model(opt), learning_rates(opt), CPU, processes)
    rates = {name: optimizer.param_groups[0]["lr"] for name, optimizer in optimizers.items()}
    assert rates == pytest.approx({"regional": regional, "local": regional, "discriminator": d}, rel=1e-12)


def cpu_model(opt) -> torch.nn.Module:
    return build_model(network_length(opt), opt.global_filter, CPU, opt.channels_last)


def compiler_settings() -> tuple:
    """The process-wide torch.compile settings a run must leave as it found them."""
    return torch._dynamo.config.suppress_errors, torch._functorch.config.donated_buffer


SMALL = ["--mess_length", "512", "--segment_length", "256", "--synthetic_train_clips", "4"]


@pytest.mark.parametrize("mode, cuda_graphs", [("default", False), ("reduce-overhead", True)])
def test_compile_mode_reaches_torch_compile_and_cuda_graphs_mark_every_step(monkeypatch, mode, cuda_graphs):
    before = compiler_settings()
    modes, marks = [], []
    monkeypatch.setattr(torch, "compile", lambda module, mode: modes.append(mode) or module)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    opt = parse_opts(SMALL)
    model = cpu_model(opt).train()
    optimizers = build_optimizers(model, learning_rates(opt), CPU)
    assert compile_networks(model, CPU, True, compile_mode=mode).cuda_graphs is False  # no compiling on the CPU
    nets = compile_networks(model, CUDA, True, compile_mode=mode)
    assert modes == [mode] * 3 and nets.cuda_graphs is cuda_graphs
    x = 0.05 * torch.randn(2, 1, 256)
    for update, step in STEPS.items():
        with compiled_step_context(CUDA, True, update):
            step(nets, model, optimizers, x, step_settings(opt), contextlib.nullcontext())
    assert len(marks) == (2 if cuda_graphs else 0)  # one mark at the start of each step
    assert compiler_settings() == before


def failing_backend(graph, example_inputs):
    raise RuntimeError("no C++ compiler found")


@pytest.fixture
def fresh_compiler():
    """torch.compile's caches emptied before and after the test."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def test_a_compile_failure_is_logged_with_its_cause_and_the_network_runs_eagerly(monkeypatch, caplog, fresh_compiler):
    before = compiler_settings()
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, mode: compile_(module, backend=failing_backend))
    model = cpu_model(parse_opts(SMALL)).eval()
    nets = compile_networks(model, CUDA, True)
    x = 0.05 * torch.randn(2, 1, 256)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="grlnet"):
        found = nets.regional(x)
        nets.regional(x)  # eager from now on: no second attempt, no second warning
        torch.testing.assert_close(found, model.regional(x), rtol=0, atol=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [("torch.compile failed on the regional network (RuntimeError: no C++ compiler found); "
                         "it runs eagerly")]
    assert compiler_settings() == before


def test_release_step_backward_twice_compiles_with_donated_buffers_off_during_the_step_only(fresh_compiler):
    # The release's step back-propagates twice through one forward (retain_graph=True). With dynamic
    # shapes AOT autograd compiles the backward with the forward, the case where torch refuses the first
    # of the two backward passes through a graph compiled with donated buffers, its default.
    before = compiler_settings()
    assert torch._functorch.config.donated_buffer
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    compiled = torch.compile(network, backend="aot_eager", dynamic=True)

    def step(batch: int) -> None:
        loss = compiled(torch.randn(batch, 8)).square().sum()
        loss.backward(retain_graph=True)
        loss.backward()

    with compiled_step_context(CUDA, True, "released"):
        assert not torch._functorch.config.donated_buffer
        step(4)
        step(5)
    assert compiler_settings() == before
    with pytest.raises(RuntimeError, match="donated buffers"):  # the same step outside its settings
        step(6)
    assert isinstance(compiled_step_context(CPU, True, "released"), contextlib.nullcontext)  # no compiling, no change
    assert isinstance(compiled_step_context(CUDA, True, "standard"), contextlib.nullcontext)

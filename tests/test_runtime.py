"""Kernel choice: cuDNN autotuning by default, repeatable kernels with --deterministic."""
import os

import pytest
import torch
from torch._inductor import config as inductor

from grlnet.runtime import choose_kernels


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

"""Shared helpers: tiny settings that train in seconds on a 2-core CPU, and the real data folder."""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# One thread per process: the tests' tensors are small, and two OpenMP threads on a 2-core machine
# that is doing anything else spin-wait each other to a crawl. Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the thread setting)

# The decoded-recordings cache of the tests' runs (data/cache.py): a folder of their own, removed at the end.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="grlnet-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# A suite started in the background by a shell without job control (`pytest &` in a script) inherits
# SIGINT ignored, and so would every script it starts; the tests that stop runs with SIGINT need it
# delivered. A Python handler here is reset to the default in the scripts, which then install their own.
signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# 8 normal training clips of 512 samples in windows of 256: 8 steps an epoch.
TINY = ["--mess_length", "512", "--segment_length", "256", "--segment_hop", "256", "--epochs", "1",
        "--synthetic_train_clips", "8", "--synthetic_test_clips", "8", "--quiet"]


def run_script(*args: str, check: bool = True, timeout: float = 300, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run one of the repository's scripts the way a user does, from the repository root (or ``cwd``)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def shared_data() -> Path:
    """The real recordings beside the repository; tests that need them skip without them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA}")
    return SHARED_DATA

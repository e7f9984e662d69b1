"""Shared helpers: tiny settings that train in seconds on a 2-core CPU, the real data folder, recordings
and release CSV sets written for a test, and the options a training step reads."""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

# One thread per process: the tests' tensors are small, and two OpenMP threads on a 2-core machine
# that is doing anything else spin-wait each other to a crawl. Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the thread setting)

from opts import parse_opts  # noqa: E402

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


# ---------------------------------------------------------------- data sets written for a test

def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """``samples`` as a 16-bit PCM WAV file at ``rate``, its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return path


def tone(seconds: float = 0.1, rate: int = 16000, frequency: float = 440.0, seed: int = 0) -> np.ndarray:
    """A sine of amplitude 0.3 with a little seeded noise."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (0.3 * np.sin(2 * np.pi * frequency * t) + noise).astype(np.float32)


def write_mimii_set(root: Path) -> Path:
    """Two normal and one abnormal 0.1 s tone at 16 kHz, in the MIMII layout."""
    for i in range(2):
        write_wav(root / "normal" / f"{i}.wav", tone(seed=i))
    write_wav(root / "abnormal" / "0.wav", tone(frequency=900))
    return root


def write_release_csv(root: Path, signals: list[np.ndarray], labels: list[int]) -> tuple[Path, Path]:
    """Signals in the release's CSV layout (``root/<i>.csv`` and ``<root>_label.csv``); the folder and label file."""
    root.mkdir(parents=True, exist_ok=True)
    for i, signal_values in enumerate(signals):
        np.savetxt(root / f"{i}.csv", signal_values, delimiter=",")
    label_file = root.parent / f"{root.name}_label.csv"
    label_file.write_text("label\n" + "".join(f"{y}\n" for y in labels))
    return root, label_file


def csv_opts(train: Path, train_labels: Path, test: Path, test_labels: Path, *extra: str) -> argparse.Namespace:
    """The options of a run on release CSV sets, with ``extra`` options added."""
    return parse_opts(["--train_root", str(train), "--train_label_path", str(train_labels),
                       "--test_root", str(test), "--test_label_path", str(test_labels), "--quiet", *extra])


def write_clips(folder: Path, rate: int) -> Path:
    """Two normal (440 Hz) and two abnormal (1500 Hz) clips with DCASE names, made at 16 kHz and
    written at ``rate``: the same sound at every rate."""
    for i in range(2):
        for kind, frequency in (("normal", 440.0), ("anomaly", 1500.0)):
            clip = librosa.resample(tone(0.05, frequency=frequency, seed=i), orig_sr=16000, target_sr=rate)
            write_wav(folder / f"{kind}_id_00_{i:08d}.wav", clip, rate)
    return folder

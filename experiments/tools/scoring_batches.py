"""How fast train.py's scoring runs at each batch of windows: the networks and every feature score on
random windows at the WAV preset's length, fitted on the same windows (``fit_normal_windows``), on one
device. It chose the CPU's scoring batch (``grlnet.scoring.CPU_SCORING_WINDOWS``; BENCHMARKS.md, "The
WAV preset on a CPU").

    OMP_NUM_THREADS=1 python -m experiments.tools.scoring_batches --batches 8 16 32 64 128 256
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch

from data import ClipSet
from experiments.bench import time_steps
from grlnet.features import FeatureScorer
from grlnet.scoring import fit_normal_windows, score_batch
from network import GRLNet
from opts import WAV_PRESET, parse_opts, scoring_settings


def windows_per_second(model: GRLNet, windows: torch.Tensor, batch: int, scorer: FeatureScorer,
                       device: torch.device) -> float:
    """Every window scored in batches of ``batch``, after one untimed batch."""
    def score_all() -> None:
        for start in range(0, len(windows), batch):
            score_batch(model, windows[start:start + batch], scorer=scorer)

    score_batch(model, windows[:batch], scorer=scorer)
    return len(windows) / time_steps(score_all, 1, device)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256],
                        help="windows per scoring batch")
    parser.add_argument("--windows", type=int, default=512, help="windows scored at each batch size")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    length = WAV_PRESET["segment_length"]
    opt = parse_opts(["--mess_length", str(length), "--segment_length", str(length), "--segment_hop", str(length)])
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = GRLNet(length).to(device)
    clips = ClipSet([f"w{i}" for i in range(args.windows)],
                    np.random.default_rng(0).standard_normal((args.windows, length), dtype=np.float32), None)
    scorer = FeatureScorer(fit_normal_windows(model, clips, scoring_settings(opt), device))  # also puts the networks in eval mode
    windows = clips.windows(length, length)[0].to(device)
    print(f"{args.windows} windows of {length} samples on {device.type} "
          f"({torch.get_num_threads()} threads), networks and feature scores", flush=True)
    for batch in args.batches:
        print(f"batch {batch:4d}: {windows_per_second(model, windows, batch, scorer, device):7.1f} windows/s",
              flush=True)


if __name__ == "__main__":
    main()

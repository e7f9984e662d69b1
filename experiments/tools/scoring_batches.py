"""How fast train.py's scoring runs at each batch of windows: the networks and every feature score on
random windows at the WAV preset's length, fitted on as many windows, on one device. It chose the CPU's
scoring batch (``grlnet.scoring.CPU_SCORING_WINDOWS``; BENCHMARKS.md, "The WAV preset on a CPU").

    OMP_NUM_THREADS=1 python -m experiments.tools.scoring_batches --batches 8 16 32 64 128 256
"""
from __future__ import annotations

import argparse
import time
from typing import Sequence

import torch

from grlnet.features import FeatureScorer, fit_feature_models, window_features
from grlnet.scoring import score_batch
from network import GRLNet
from opts import WAV_PRESET


def windows_per_second(model: GRLNet, windows: torch.Tensor, batch: int, scorer: FeatureScorer) -> float:
    """Every window scored in batches of ``batch``, after one untimed batch."""
    score_batch(model, windows[:batch], scorer=scorer)
    started = time.perf_counter()
    for start in range(0, len(windows), batch):
        score_batch(model, windows[start:start + batch], scorer=scorer)
    return len(windows) / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256],
                        help="windows per scoring batch")
    parser.add_argument("--windows", type=int, default=512, help="windows scored at each batch size")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = GRLNet(WAV_PRESET["segment_length"]).to(device).eval()
    windows = torch.randn(args.windows, 1, WAV_PRESET["segment_length"], device=device)
    with torch.no_grad():
        parts = [window_features(model, windows[start:start + 64]) for start in range(0, len(windows), 64)]
    scorer = FeatureScorer(fit_feature_models({space: torch.cat([part[space] for part in parts]).cpu().numpy()
                                               for space in parts[0]}))
    print(f"{args.windows} windows of {WAV_PRESET['segment_length']} samples on {device.type} "
          f"({torch.get_num_threads()} threads), networks and feature scores", flush=True)
    for batch in args.batches:
        print(f"batch {batch:4d}: {windows_per_second(model, windows, batch, scorer):7.1f} windows/s", flush=True)


if __name__ == "__main__":
    main()

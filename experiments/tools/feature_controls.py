"""Controls for the feature scores: what training adds. The same distances on untrained networks (fresh
initialisation, one per seed) and on each window's plain log power spectrum (no network), fitted on the
training windows and scored on the test clips of the data train.py's options name.

    python -m experiments.tools.feature_controls --seeds 0 1 2 3 4 -- --data_root ../shared/data/mimii_fan_id02 --train_normal_files 5
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from data import ClipSet, load_datasets
from grlnet.features import FeatureScorer, fit_space, fit_windows
from grlnet.scores import FEATURE_SCORES
from grlnet.scoring import fit_and_score
from network import GRLNet
from opts import data_settings, network_length, parse_opts, scoring_settings, seed_value

LOG_FLOOR = 1e-12  # added to the power spectrum before the logarithm (silent bins)


def log_spectra(clips: ClipSet, opt: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Each window's log power spectrum [W, L // 2 + 1], float64, and its clip index [W]."""
    windows, clip_index = clips.windows(opt.segment_length, opt.segment_hop)
    power = torch.fft.rfft(windows[:, 0].double()).abs() ** 2
    return torch.log(power + LOG_FLOOR), clip_index


def clip_means(values: np.ndarray, clip_index: torch.Tensor, clips: int) -> np.ndarray:
    """The mean of per-window ``values`` over each clip's windows."""
    return np.bincount(clip_index.numpy(), weights=values, minlength=clips) / np.bincount(clip_index.numpy())


def spectrum_aucs(train: ClipSet, test: ClipSet, opt: argparse.Namespace) -> dict[str, float]:
    """AUC of the Mahalanobis and kNN distances on the log power spectrum (no network)."""
    reference, _ = log_spectra(train, opt)
    chosen = reference[torch.from_numpy(fit_windows(len(reference)))]
    scorer = FeatureScorer({"log_spectrum": fit_space(chosen.numpy())})
    spectra, clip_index = log_spectra(test, opt)
    labels = test.binary_labels()
    return {name: float(roc_auc_score(labels, clip_means(values, clip_index, len(test))))
            for name, values in scorer.window_scores({"log_spectrum": spectra}).items()}


def untrained_aucs(train: ClipSet, test: ClipSet, opt: argparse.Namespace, seed: int) -> dict[str, float]:
    """AUC of every score of freshly initialised networks (``seed``), feature statistics fitted as in training."""
    torch.manual_seed(seed)
    model, cpu = GRLNet(network_length(opt), opt.global_filter), torch.device("cpu")
    scores = fit_and_score(model, train, test, scoring_settings(opt), cpu).scores
    return {name: float(roc_auc_score(test.binary_labels(), scores[name])) for name in ("paper", *FEATURE_SCORES)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=seed_value, nargs="+", default=[0, 1, 2])
    parser.add_argument("train_options", nargs="*", help="train.py's data options, after --")
    args = parser.parse_args(argv)
    opt = parse_opts([*args.train_options, "--quiet"])
    train, test = load_datasets(data_settings(opt))
    print("| control | " + " | ".join(("paper", *FEATURE_SCORES)) + " |")
    print("|---" * (len(FEATURE_SCORES) + 2) + "|")
    for seed in args.seeds:
        aucs = untrained_aucs(train, test, opt, seed)
        print(f"| untrained networks, seed {seed} | " + " | ".join(f"{aucs[n]:.3f}" for n in aucs) + " |")
    spectrum = spectrum_aucs(train, test, opt)
    print("\nlog power spectrum of each window, no network: " + ", ".join(f"{name} {auc:.3f}"
                                                                       for name, auc in spectrum.items()))


if __name__ == "__main__":
    main()

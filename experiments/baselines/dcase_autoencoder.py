"""The DCASE 2020 Task 2 autoencoder baseline in PyTorch: the field's yardstick, on GRLNet's split.

Features: log-mel spectrogram (128 bands, FFT 1024, hop 512, power 2) as 20 / power * log10(mel + eps),
five consecutive frames stacked into 640-dimensional vectors. Model: dense autoencoder
640-128-128-128-128-8-128-128-128-128-640, BatchNorm and ReLU after every hidden layer, linear
output, Keras' defaults for initialisation, BatchNorm and Adam, as in the baseline's Keras model.
Training: Adam (learning rate 1e-3) on the MSE, batch 512, shuffled. A clip's anomaly score is the
mean squared reconstruction error over its vectors. Unlike the Keras baseline, no validation split
is held out (every training vector trains) and a last batch of a single vector is skipped
(BatchNorm needs two).

    python -m experiments.baselines.dcase_autoencoder --data_root ../shared/data/mimii_fan_id02 --output_dir runs/ae
"""
from __future__ import annotations

import argparse
import sys
from itertools import pairwise

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data import ClipSet, load_datasets
from data.console import UserError, make_folder
from grlnet.cli import run_cli
from grlnet.metrics import format_labelled_metrics, labelled_metrics
from grlnet.results import write_group_tables, write_scores_csv
from grlnet.runtime import resolve_device
from opts import build_parser, data_settings, has_labelled_test_set, positive_int, resolve_presets

N_MELS, N_FFT, HOP_LENGTH, POWER, FRAMES = 128, 1024, 512, 2.0, 5
INPUT_DIM = N_MELS * FRAMES
HIDDEN, BOTTLENECK, DEPTH = 128, 8, 4
LEARNING_RATE, BATCH_SIZE, EPOCHS = 1e-3, 512, 100
KERAS_BATCHNORM = {"momentum": 0.01, "eps": 1e-3}  # Keras: momentum 0.99 of the old value, epsilon 1e-3
KERAS_ADAM_EPS = 1e-7


def log_mel(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-mel spectrogram [128, T] of one signal, in the baseline's units."""
    mel = librosa.feature.melspectrogram(y=signal, sr=sample_rate, n_fft=N_FFT, hop_length=HOP_LENGTH,
                                         n_mels=N_MELS, power=POWER)
    return 20.0 / POWER * np.log10(mel + sys.float_info.epsilon)


def clip_features(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Vectors [T - 4, 640] of one clip: vector v holds frames v..v+4, frame v+t in columns 128t..128t+127."""
    spectrogram = log_mel(np.asarray(signal, dtype=np.float32), sample_rate)  # [128, T]
    vectors = spectrogram.shape[1] - FRAMES + 1
    if vectors < 1:
        raise UserError(f"a clip of {len(signal)} samples gives {spectrogram.shape[1]} mel frames; the "
                        f"baseline stacks {FRAMES} (at hop {HOP_LENGTH}: give a longer --mess_length)")
    stacked = np.concatenate([spectrogram[:, t:t + vectors] for t in range(FRAMES)], axis=0)  # [640, V]
    return stacked.T.astype(np.float32)


def _dense_block(n_in: int, n_out: int) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out, **KERAS_BATCHNORM), nn.ReLU()]


class DenseAutoencoder(nn.Module):
    """[B, 640] -> [B, 640] through four hidden layers of 128, a bottleneck of 8 and four of 128."""

    def __init__(self, input_dim: int = INPUT_DIM, hidden: int = HIDDEN, bottleneck: int = BOTTLENECK,
                 depth: int = DEPTH):
        super().__init__()
        widths = [input_dim] + [hidden] * depth + [bottleneck]
        self.encoder = nn.Sequential(*[m for a, b in pairwise(widths) for m in _dense_block(a, b)])
        widths = [bottleneck] + [hidden] * depth
        self.decoder = nn.Sequential(*[m for a, b in pairwise(widths) for m in _dense_block(a, b)],
                                     nn.Linear(hidden, input_dim))
        for module in self.modules():
            if isinstance(module, nn.Linear):  # Keras' Dense: Glorot uniform weights, zero bias
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def training_vectors(clips: ClipSet, sample_rate: int) -> torch.Tensor:
    """The feature vectors of every clip, concatenated: [sum of vectors per clip, 640]."""
    return torch.from_numpy(np.concatenate([clip_features(s, sample_rate) for s in clips.signals]))


def epoch_batches(count: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of indices; a last batch of one is dropped (BatchNorm needs two)."""
    if count < 2:
        raise UserError(f"the baseline needs at least 2 training vectors, the training clips give {count}")
    batches = list(torch.randperm(count, generator=generator).split(BATCH_SIZE))
    return batches[:-1] if len(batches[-1]) == 1 else batches


def train_baseline(train: ClipSet, sample_rate: int, epochs: int = EPOCHS, seed: int = 0,
                   device: torch.device | str = "cpu") -> DenseAutoencoder:
    """Train the autoencoder on the normal training clips' vectors to reconstruct them (MSE)."""
    if epochs < 1:
        raise UserError(f"the baseline needs at least one epoch, got {epochs}")
    torch.manual_seed(seed)
    vectors = training_vectors(train, sample_rate).to(device)
    model = DenseAutoencoder().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, eps=KERAS_ADAM_EPS)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in epoch_batches(len(vectors), generator):
            x = vectors[batch.to(device)]
            loss = F.mse_loss(model(x), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model


@torch.no_grad()
def score_baseline(model: DenseAutoencoder, clips: ClipSet, sample_rate: int) -> np.ndarray:
    """Anomaly score [N] per clip: mean squared reconstruction error over its vectors."""
    model.eval()
    device = next(model.parameters()).device
    scores = []
    for signal in clips.signals:
        x = torch.from_numpy(clip_features(signal, sample_rate)).to(device)
        scores.append(F.mse_loss(model(x), x).item())
    return np.array(scores, dtype=np.float64)


def sample_rate_of(clips: ClipSet) -> int:
    """The sample rate of the loaded clips, which the mel features need."""
    if clips.sample_rate is None:
        raise UserError("the baseline's mel features need the sample rate: give --sample_rate")
    return clips.sample_rate


def run_baseline(opt: argparse.Namespace, epochs: int = EPOCHS) -> dict:
    """Train and score the baseline on the split ``opt`` names, with GRLNet's metrics (per machine id or
    section too, for DCASE names); writes scores.csv (and machine_ids.csv or sections.csv) to ``opt.output_dir``."""
    train, test = load_datasets(data_settings(opt))
    rate = sample_rate_of(train)
    model = train_baseline(train, rate, epochs, opt.seed, resolve_device(opt.device))
    scores = score_baseline(model, test, rate)
    metrics = labelled_metrics(test.binary_labels(), scores, test.names)
    if opt.output_dir:  # None unless given: the baseline makes no run folder of its own
        folder = make_folder(opt.output_dir, "output folder (--output_dir)")
        write_scores_csv(test, {"score": scores}, folder / "scores.csv", "dcase_autoencoder")
        write_group_tables(metrics, folder)
    return metrics


def parse_baseline_args(argv: list[str] | None = None) -> argparse.Namespace:
    """GRLNet's options (the baseline reads the data options, --seed, --device and --output_dir) and
    --baseline_epochs, so the baseline takes the same option list as a GRLNet run on the same split."""
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--baseline_epochs", type=positive_int, default=EPOCHS,
                        help="autoencoder training epochs")
    opt = resolve_presets(parser.parse_args(argv))
    if not has_labelled_test_set(opt):
        raise UserError("the baseline is scored on a labelled test set: give --test_root beside "
                        "--train_root, or --data_root")
    return opt


def main(opt: argparse.Namespace) -> None:
    """Train and score the baseline, print its metrics."""
    print(format_labelled_metrics(run_baseline(opt, opt.baseline_epochs)), flush=True)


if __name__ == "__main__":
    run_cli(main, parse_baseline_args)

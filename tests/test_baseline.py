"""The DCASE 2020 autoencoder baseline: its features and its architecture."""
from __future__ import annotations

import sys

import librosa
import numpy as np
import pytest
import torch
from torch import nn

from data.console import UserError
from experiments.baselines.dcase_autoencoder import DenseAutoencoder, clip_features, parse_baseline_args

RATE = 16000


def test_clip_features_stack_five_log_mel_frames():
    signal = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 0.1  # 1 s
    mel = librosa.feature.melspectrogram(y=signal, sr=RATE, n_fft=1024, hop_length=512, n_mels=128,
                                         power=2.0)
    log_mel = 10.0 * np.log10(mel + sys.float_info.epsilon)  # 20 / power * log10, power 2
    features = clip_features(signal, RATE)
    assert features.shape == (mel.shape[1] - 4, 640)
    vector, frame, band = 7, 3, 50  # vector 7 holds frames 7..11; frame 7 + 3 sits in block 3
    np.testing.assert_allclose(features[vector, 128 * frame + band], log_mel[band, vector + frame], rtol=1e-5)
    np.testing.assert_allclose(features[:, :128], log_mel[:, :mel.shape[1] - 4].T, rtol=1e-5)


def test_autoencoder_is_640_to_8_to_640():
    model = DenseAutoencoder().eval()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.in_features for m in linears] == [640, 128, 128, 128, 128, 8, 128, 128, 128, 128]
    assert [m.out_features for m in linears] == [128, 128, 128, 128, 8, 128, 128, 128, 128, 640]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 9
    x = torch.randn(4, 640)
    assert model.encoder(x).shape == (4, 8)
    assert model(x).shape == (4, 640)


def test_the_baseline_refuses_a_run_without_a_labelled_test_set(tmp_path):
    with pytest.raises(UserError, match="the baseline is scored on a labelled test set: give --test_root"):
        parse_baseline_args(["--train_root", str(tmp_path)])

"""GRLNet networks: the global filter layer, the regional and local generators, the discriminator.

Module and attribute names follow the authors' release so that their state dicts load unchanged
(see ``shared/state_dict_keys_233472.json``); every size is derived from the signal length.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

GLOBAL_FILTERS = ("released", "learned")
REGIONAL_KERNEL = 7
LOCAL_KERNEL = 3
DISCRIMINATOR_KERNEL = 5
DISCRIMINATOR_STRIDE = 2
DISCRIMINATOR_CONVS = 4


class GlobalFilterLayer(nn.Module):
    """The release's global filter: LayerNorm over time, orthonormal FFT, magnitude.

    [B, 1, L] -> [B, 1, L], real and non-negative. The FFT runs in float32 even under autocast.
    """

    def __init__(self, signal_length: int):
        super().__init__()
        self.layernorm = nn.LayerNorm(signal_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            normalised = self.layernorm(x.float())
            return torch.fft.fft(normalised, norm="ortho").abs()


class LearnedGlobalFilterLayer(nn.Module):
    """A phase-preserving global filter (GFNet style, a study option, REPRODUCTION.md).

    LayerNorm over time, rFFT, a learnable complex filter per frequency (identity at start),
    inverse rFFT back to a waveform of the same length.
    """

    def __init__(self, signal_length: int):
        super().__init__()
        self.signal_length = signal_length
        self.layernorm = nn.LayerNorm(signal_length)
        frequencies = signal_length // 2 + 1
        identity = torch.zeros(frequencies, 2)
        identity[:, 0] = 1.0
        self.filter = nn.Parameter(identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            normalised = self.layernorm(x.float())
            spectrum = torch.fft.rfft(normalised, norm="ortho")
            filtered = spectrum * torch.view_as_complex(self.filter)
            return torch.fft.irfft(filtered, n=self.signal_length, norm="ortho")


def build_global_filter(kind: str, signal_length: int) -> nn.Module:
    """The global filter layer named by ``--global_filter``."""
    if kind == "released":
        return GlobalFilterLayer(signal_length)
    if kind == "learned":
        return LearnedGlobalFilterLayer(signal_length)
    raise ValueError(f"unknown global filter {kind!r}; choose one of {', '.join(GLOBAL_FILTERS)}")


def _batch_norm_2d(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A BatchNorm1d layer applied to a [B, C, 1, L] tensor (the module itself takes 2-D or 3-D input).

    Same arithmetic and buffer updates as the module's own forward, for the default settings built here.
    """
    if isinstance(norm, nn.SyncBatchNorm):  # accepts any rank and synchronises its statistics itself
        return norm(x)
    if norm.training:
        norm.num_batches_tracked.add_(1)
    return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, norm.training,
                        norm.momentum, norm.eps)


def _layer_2d(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One layer of a 1-D stack applied to its input viewed as a one-row image [B, C, 1, L]."""
    if isinstance(layer, (nn.Conv1d, nn.ConvTranspose1d)):
        weight = layer.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        convolve = F.conv2d if isinstance(layer, nn.Conv1d) else F.conv_transpose2d
        return convolve(x, weight, layer.bias, stride=(1, layer.stride[0]))
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return _batch_norm_2d(layer, x)
    return layer(x)  # ReLU, Tanh: elementwise, layout kept


def run_stack(layers: Iterable[nn.Module], x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Apply a stack of 1-D layers to [B, C, L]; ``channels_last`` runs it as 2-D convolutions on
    channels-last one-row images, the layout cuDNN's fast kernels use, so no layout copies are made."""
    if not channels_last:
        for layer in layers:
            x = layer(x)
        return x
    image = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    for layer in layers:
        image = _layer_2d(layer, image)
    return image.squeeze(2)


def _encoder(kernel: int) -> nn.Sequential:
    # The last two blocks put ReLU before BatchNorm, as the release does (state-dict indices rely on it).
    return nn.Sequential(
        nn.Conv1d(1, 64, kernel), nn.BatchNorm1d(64), nn.ReLU(inplace=True),
        nn.Conv1d(64, 128, kernel), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
        nn.Conv1d(128, 256, kernel), nn.ReLU(inplace=True), nn.BatchNorm1d(256),
        nn.Conv1d(256, 512, kernel), nn.ReLU(inplace=True), nn.BatchNorm1d(512),
    )


def _decoder(kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose1d(512, 256, kernel), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
        nn.ConvTranspose1d(256, 128, kernel), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
        nn.ConvTranspose1d(128, 64, kernel), nn.BatchNorm1d(64), nn.ReLU(inplace=True),
        nn.ConvTranspose1d(64, 1, kernel), nn.Tanh(),
    )


class _Generator(nn.Module):
    """Global filter, then a convolutional auto-encoder; output length equals input length."""

    kernel: int
    channels_last = False  # set by ``use_channels_last``

    def __init__(self, signal_length: int, global_filter: str = "released"):
        super().__init__()
        self.signal_length = signal_length
        self.gfl = build_global_filter(global_filter, signal_length)
        self.encoder = _encoder(self.kernel)
        self.decoder = _decoder(self.kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        autoencoder = (*self.encoder, *self.decoder)
        return run_stack(autoencoder, self.gfl(x), self.channels_last)  # [B, 1, L] -> [B, 1, L]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output, [B, 1, L] -> [B, 512, L - 4 * (kernel - 1)]: a feature space of the scores."""
        return run_stack(self.encoder, self.gfl(x), self.channels_last)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """The reconstruction from ``encode``'s output; ``decode(encode(x))`` equals ``forward(x)``."""
        return run_stack(self.decoder, code, self.channels_last)


class Regional_G_Net(_Generator):
    """Regional generator: kernel 7, a wider receptive field."""

    kernel = REGIONAL_KERNEL


class Local_G_Net(_Generator):
    """Local generator: kernel 3, fine detail."""

    kernel = LOCAL_KERNEL


def discriminator_feature_length(signal_length: int) -> int:
    """Length after D's four strided, unpadded convolutions (233472 -> 14589)."""
    length = signal_length
    for _ in range(DISCRIMINATOR_CONVS):
        length = (length - DISCRIMINATOR_KERNEL) // DISCRIMINATOR_STRIDE + 1
    return length


class D_Net(nn.Module):
    """Discriminator: global filter, four strided convolutions, a linear layer, Sigmoid.

    ``forward`` returns the probability that a signal is a reconstruction, shape [B];
    ``logits`` returns the value before the Sigmoid, for a numerically stable loss.
    """

    channels_last = False  # set by ``use_channels_last``

    def __init__(self, signal_length: int, global_filter: str = "released"):
        super().__init__()
        if discriminator_feature_length(signal_length) < 1:
            raise ValueError(f"signal length {signal_length} is too short for the discriminator")
        self.signal_length = signal_length
        self.gfl = build_global_filter(global_filter, signal_length)
        k, s = DISCRIMINATOR_KERNEL, DISCRIMINATOR_STRIDE
        self.discriminator = nn.Sequential(
            nn.Conv1d(1, 64, k, s), nn.BatchNorm1d(64), nn.ReLU(inplace=True),
            nn.Conv1d(64, 128, k, s), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
            nn.Conv1d(128, 256, k, s), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
            nn.Conv1d(256, 512, k, s), nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(512 * discriminator_feature_length(signal_length), 1),
            nn.Sigmoid(),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolution's output, [B, 1, L] -> [B, 512, L4]: a feature space of the scores."""
        return run_stack(self.discriminator[:-3], self.gfl(x), self.channels_last)

    def logits_of_features(self, features: torch.Tensor) -> torch.Tensor:
        """The value before the Sigmoid from ``features``' output (flatten, linear): [B]."""
        return self.discriminator[-3:-1](features).squeeze(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_of_features(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


NETWORKS = ("regional", "local", "discriminator")  # GRLNet's networks by attribute; a checkpoint's state dicts


class GRLNet(nn.Module):
    """The three networks of one run, built for one signal length and one global filter."""

    def __init__(self, signal_length: int, global_filter: str = "released"):
        super().__init__()
        self.regional = Regional_G_Net(signal_length, global_filter)
        self.local = Local_G_Net(signal_length, global_filter)
        self.discriminator = D_Net(signal_length, global_filter)


def use_channels_last(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Run every GRLNet network in ``model`` as channels-last 2-D convolutions (faster on CUDA).

    Parameters, buffers and state-dict keys are unchanged; only the forward's memory layout differs.
    """
    for module in model.modules():
        if isinstance(module, (_Generator, D_Net)):
            module.channels_last = enabled
    return model

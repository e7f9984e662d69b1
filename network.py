"""GRLNet networks: the global filter layer, the regional and local generators, the discriminator.

Module and attribute names follow the authors' release so that their state dicts load unchanged
(see ``shared/state_dict_keys_233472.json``); every size is derived from the signal length.
"""
from __future__ import annotations

import torch
from torch import nn

GLOBAL_FILTERS = ("released", "learned")
REGIONAL_KERNEL = 7
LOCAL_KERNEL = 3
DISCRIMINATOR_KERNEL = 5
DISCRIMINATOR_STRIDE = 2
DISCRIMINATOR_CONVS = 4
# D's layers form one Sequential, as released (state-dict keys "discriminator.<index>"): the convolution
# blocks take its first D_CONVOLUTION_LAYERS places, then come Flatten, the Linear at D_LINEAR, the Sigmoid.
D_CONVOLUTION_LAYERS = 11
D_LINEAR = 12


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

    def __init__(self, signal_length: int, global_filter: str = "released"):
        super().__init__()
        self.signal_length = signal_length
        self.gfl = build_global_filter(global_filter, signal_length)
        self.encoder = _encoder(self.kernel)
        self.decoder = _decoder(self.kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(self.gfl(x)))  # [B, 1, L] -> [B, 1, L]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output, [B, 1, L] -> [B, 512, L - 4 * (kernel - 1)]: a feature space of the scores."""
        return self.encoder(self.gfl(x))

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """The reconstruction from ``encode``'s output; ``decode(encode(x))`` equals ``forward(x)``."""
        return self.decoder(code)


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

    @property
    def convolutions(self) -> nn.Sequential:
        """The four strided convolutions with their BatchNorm and ReLU layers: [B, 1, L] -> [B, 512, L4]."""
        return self.discriminator[:D_CONVOLUTION_LAYERS]

    @property
    def head(self) -> nn.Sequential:
        """Flatten and the linear layer: [B, 512, L4] -> [B, 1], the value before the Sigmoid."""
        return self.discriminator[D_CONVOLUTION_LAYERS:D_LINEAR + 1]

    @property
    def linear(self) -> nn.Linear:
        """The head's linear layer, one weight per value of ``features``' output."""
        return self.discriminator[D_LINEAR]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolution's output, [B, 1, L] -> [B, 512, L4]: a feature space of the scores."""
        return self.convolutions(self.gfl(x))

    def logits_of_features(self, features: torch.Tensor) -> torch.Tensor:
        """The value before the Sigmoid from ``features``' output: [B]."""
        return self.head(features).squeeze(1)

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

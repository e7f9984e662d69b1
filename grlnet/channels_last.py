"""Channels-last execution of the networks' 1-D layers (``--channels_last``, on CUDA).

``use_channels_last`` runs every convolution and BatchNorm layer as its 2-D counterpart on the input
viewed as a one-row image [B, C, 1, L] in channels-last layout, the layout cuDNN's fast kernels use.
Between layers the activations stay [B, C, L] views of those images (channels innermost), so a stack
makes no layout copies. Only the layers' classes change: parameters, buffers and state-dict keys stay.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _as_image(x: torch.Tensor) -> torch.Tensor:
    """[B, C, L] -> [B, C, 1, L] channels-last: a view when ``x`` comes from a layer converted here."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def _image_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 1-D convolution's kernel as the one-row 2-D kernel of the same convolution, channels-last."""
    return weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)


class ChannelsLastConv1d(nn.Conv1d):
    """A Conv1d computed by conv2d on channels-last one-row images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = F.conv2d(_as_image(x), _image_weight(self.weight), self.bias, stride=(1, self.stride[0]),
                         padding=(0, self.padding[0]), dilation=(1, self.dilation[0]), groups=self.groups)
        return image.squeeze(2)


class ChannelsLastConvTranspose1d(nn.ConvTranspose1d):
    """A ConvTranspose1d computed by conv_transpose2d on channels-last one-row images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = F.conv_transpose2d(_as_image(x), _image_weight(self.weight), self.bias, stride=(1, self.stride[0]),
                                   padding=(0, self.padding[0]), output_padding=(0, self.output_padding[0]),
                                   groups=self.groups, dilation=(1, self.dilation[0]))
        return image.squeeze(2)


class ChannelsLastBatchNorm1d(nn.BatchNorm1d):
    """A BatchNorm1d whose own forward (statistics and buffer updates) runs on channels-last one-row images."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected a [B, C, 1, L] image, got {input.dim()}-D input")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_as_image(x)).squeeze(2)


class ChannelsLastSyncBatchNorm(nn.SyncBatchNorm):
    """A SyncBatchNorm (``--sync_batchnorm``) run on channels-last one-row images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_as_image(x)).squeeze(2)


_CHANNELS_LAST = {nn.Conv1d: ChannelsLastConv1d, nn.ConvTranspose1d: ChannelsLastConvTranspose1d,
                  nn.BatchNorm1d: ChannelsLastBatchNorm1d, nn.SyncBatchNorm: ChannelsLastSyncBatchNorm}


def use_channels_last(model: nn.Module) -> nn.Module:
    """Convert ``model``'s 1-D convolution and BatchNorm layers in place to their channels-last classes.

    The same objects are kept (optimizers, wrappers and checkpoints see no change), as torch's own
    parametrisations do; convert SyncBatchNorm layers before, not after.
    """
    for module in model.modules():
        converted = _CHANNELS_LAST.get(type(module))
        if converted is None:
            continue
        if isinstance(module, nn.modules.conv._ConvNd) and (
                module.padding_mode != "zeros" or isinstance(module.padding, str)):
            raise ValueError(f"channels-last execution supports zero padding of fixed size only, not {module}")
        module.__class__ = converted
    return model

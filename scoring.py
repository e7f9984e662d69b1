"""The anomaly score: D on the input and on both reconstructions, blended, averaged over windows."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from data import ClipSet
from network import GRLNet
from progress import progress

SCORE_COLUMNS = ("d_real", "d_regional", "d_local", "score")


def blend(d_real: torch.Tensor, d_regional: torch.Tensor, d_local: torch.Tensor,
          gamma: float) -> torch.Tensor:
    """score = gamma * (D(R(x)) + D(Lo(x))) + (1 - gamma) * D(x); higher = more anomalous."""
    return gamma * (d_regional + d_local) + (1 - gamma) * d_real


@torch.no_grad()
def score_clips(model: GRLNet, clips: ClipSet, opt, device: torch.device,
                autocast: contextlib.AbstractContextManager | None = None) -> dict[str, np.ndarray]:
    """D(x), D(R(x)), D(Lo(x)) and the score for every clip: the mean over its windows.

    The networks run in eval mode, without noise, on every window (no batch is dropped).
    """
    model.eval()
    windows, clip_index = clips.windows(opt.segment_length, opt.segment_hop)
    outputs = torch.empty(len(windows), 3, dtype=torch.float64)
    batch_size = max(opt.batch_size, 1) * 8
    batches = range(0, len(windows), batch_size)
    for start in progress(batches, desc="scoring", unit="batch", quiet=opt.quiet):
        x = windows[start:start + batch_size].to(device, non_blocking=True)
        with autocast or contextlib.nullcontext():
            d_real = model.discriminator(x)
            d_regional = model.discriminator(model.regional(x))
            d_local = model.discriminator(model.local(x))
        outputs[start:start + batch_size] = torch.stack([d_real, d_regional, d_local], 1).double().cpu()
    per_clip = torch.zeros(len(clips), 3, dtype=torch.float64).index_add_(0, clip_index, outputs)
    per_clip /= torch.bincount(clip_index, minlength=len(clips)).unsqueeze(1)
    d_real, d_regional, d_local = per_clip.unbind(1)
    score = blend(d_real, d_regional, d_local, opt.comprehensive_output_factor)
    return {name: values.numpy() for name, values in
            zip(SCORE_COLUMNS, (d_real, d_regional, d_local, score))}

"""The anomaly score: D on the input and on both reconstructions, blended, averaged over windows."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from data import ClipSet
from distributed import Process, gather_values
from network import GRLNet
from progress import progress

SCORE_COLUMNS = ("d_real", "d_regional", "d_local", "score")


def blend(d_real: torch.Tensor, d_regional: torch.Tensor, d_local: torch.Tensor,
          gamma: float) -> torch.Tensor:
    """score = gamma * (D(R(x)) + D(Lo(x))) + (1 - gamma) * D(x); higher = more anomalous."""
    return gamma * (d_regional + d_local) + (1 - gamma) * d_real


@torch.no_grad()
def window_outputs(model: GRLNet, clips: ClipSet, opt, device: torch.device,
                   autocast: contextlib.AbstractContextManager | None = None) -> torch.Tensor:
    """D(x), D(R(x)), D(Lo(x)) per clip, [N, 3] float64: the mean over each clip's windows.

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
    return per_clip / torch.bincount(clip_index, minlength=len(clips)).unsqueeze(1)


def score_clips(model: GRLNet, clips: ClipSet, opt, device: torch.device,
                autocast: contextlib.AbstractContextManager | None = None,
                process: Process = Process()) -> dict[str, np.ndarray]:
    """D(x), D(R(x)), D(Lo(x)) and the score of every clip, in clip order.

    Over several processes each scores every world_size-th clip and the results are gathered,
    so every clip is scored exactly once.
    """
    mine = list(range(process.rank, len(clips), process.world_size))
    every = slice(process.rank, None, process.world_size)  # a view of the signals, not a copy
    share = ClipSet(clips.names[every], clips.signals[every], None)
    gathered = gather_values((mine, window_outputs(model, share, opt, device, autocast)), process)
    per_clip = torch.empty(len(clips), 3, dtype=torch.float64)
    covered = torch.zeros(len(clips), dtype=torch.long)
    for indices, outputs in gathered:
        per_clip[indices] = outputs
        covered[indices] += 1
    if not torch.all(covered == 1):
        raise RuntimeError(f"clips scored {covered.tolist()} times across processes; expected once each")
    d_real, d_regional, d_local = per_clip.unbind(1)
    score = blend(d_real, d_regional, d_local, opt.comprehensive_output_factor)
    return {name: values.numpy() for name, values in
            zip(SCORE_COLUMNS, (d_real, d_regional, d_local, score))}

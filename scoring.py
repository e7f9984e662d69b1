"""The anomaly score: D on the input and on both reconstructions, blended, averaged over windows.

With held-out normal clips (``--calibration_clips``) each of the three terms is replaced by its
distance from those clips' values, in their standard deviations, on either side.
"""
from __future__ import annotations

import argparse
import contextlib

import numpy as np
import torch

from data import ClipSet
from distributed import Process, gather_values
from network import GRLNet
from progress import progress

SCORE_COLUMNS = ("d_real", "d_regional", "d_local", "score")
MIN_SPREAD = 1e-6  # floor of a calibration standard deviation: a saturated D gives almost none


def blend(d_real: torch.Tensor, d_regional: torch.Tensor, d_local: torch.Tensor,
          gamma: float) -> torch.Tensor:
    """score = gamma * (D(R(x)) + D(Lo(x))) + (1 - gamma) * D(x); higher = more anomalous."""
    return gamma * (d_regional + d_local) + (1 - gamma) * d_real


@torch.no_grad()
def outputs_per_window(model: GRLNet, clips: ClipSet, opt: argparse.Namespace, device: torch.device,
                       autocast: contextlib.AbstractContextManager | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """D(x), D(R(x)), D(Lo(x)) of every window, [W, 3] float64, and each window's clip index [W].

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
    return outputs, clip_index


def clip_outputs(model: GRLNet, clips: ClipSet, opt: argparse.Namespace, device: torch.device,
                   autocast: contextlib.AbstractContextManager | None = None) -> torch.Tensor:
    """D(x), D(R(x)), D(Lo(x)) per clip, [N, 3] float64: the mean over each clip's windows."""
    outputs, clip_index = outputs_per_window(model, clips, opt, device, autocast)
    per_clip = torch.zeros(len(clips), 3, dtype=torch.float64).index_add_(0, clip_index, outputs)
    return per_clip / torch.bincount(clip_index, minlength=len(clips)).unsqueeze(1)


def calibration_statistics(model: GRLNet, held_out: ClipSet, opt: argparse.Namespace, device: torch.device,
                           autocast: contextlib.AbstractContextManager | None = None) -> torch.Tensor:
    """Mean and standard deviation of D(x), D(R(x)), D(Lo(x)) over the windows of held-out normal
    clips, [2, 3] float64; the deviation is floored at ``MIN_SPREAD``."""
    outputs, _ = outputs_per_window(model, held_out, opt, device, autocast)
    return torch.stack([outputs.mean(0), outputs.std(0, correction=0).clamp_min(MIN_SPREAD)])


def score_clips(model: GRLNet, clips: ClipSet, opt: argparse.Namespace, device: torch.device,
                autocast: contextlib.AbstractContextManager | None = None,
                process: Process = Process(), calibration: torch.Tensor | None = None
                ) -> dict[str, np.ndarray]:
    """D(x), D(R(x)), D(Lo(x)) and the score of every clip, in clip order.

    Over several processes each scores every world_size-th clip and the results are gathered,
    so every clip is scored exactly once. With ``calibration`` (from ``calibration_statistics``)
    the score blends each term's absolute distance from the held-out mean, in standard deviations.
    """
    mine = list(range(process.rank, len(clips), process.world_size))
    share = clips.part(slice(process.rank, None, process.world_size))  # views, not copies
    gathered = gather_values((mine, clip_outputs(model, share, opt, device, autocast)), process)
    per_clip = torch.empty(len(clips), 3, dtype=torch.float64)
    covered = torch.zeros(len(clips), dtype=torch.long)
    for indices, outputs in gathered:
        per_clip[indices] = outputs
        covered[indices] += 1
    if not torch.all(covered == 1):
        raise RuntimeError(f"clips scored {covered.tolist()} times across processes; expected once each")
    terms = per_clip if calibration is None else ((per_clip - calibration[0]) / calibration[1]).abs()
    score = blend(*terms.unbind(1), opt.comprehensive_output_factor)
    d_real, d_regional, d_local = per_clip.unbind(1)
    return {name: values.numpy() for name, values in
            zip(SCORE_COLUMNS, (d_real, d_regional, d_local, score))}

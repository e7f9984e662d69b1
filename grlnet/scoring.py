"""Every score of every clip: the paper's blend of D's outputs and the feature scores (features.py),
each averaged over a clip's windows, and the one ``--score`` picks for metrics and decisions."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch

from data import ClipSet
from data.console import UserError, progress
from grlnet.distributed import SINGLE_PROCESS, Process, gather_values
from grlnet.features import FeatureScorer, fit_feature_models, fit_windows, space_features, window_features
from grlnet.scores import CHOSEN, FEATURE_SCORES, PAPER_SCORE, TERMS, blend
from network import GRLNet

# Windows per scoring batch on a CPU: batches of 8 to 32 score at one speed there, larger ones slower
# and with more memory (BENCHMARKS.md, experiments/tools/scoring_batches.py).
CPU_SCORING_WINDOWS = 16


@dataclass(frozen=True)
class ScoringSettings:
    """How clips are scored: cut into windows at a hop, in batches sized from the training batch, the paper's
    blend factor, the score that decides; built once from the options (opts.scoring_settings)."""

    segment_length: int
    segment_hop: int
    batch_size: int
    comprehensive_output_factor: float
    score: str
    quiet: bool


def scoring_batch_size(settings: ScoringSettings, device: torch.device) -> int:
    """Windows per scoring batch: on a GPU 8 training batches, since nothing is kept for a backward
    pass and larger batches fill the device; on a CPU ``CPU_SCORING_WINDOWS`` whatever the training batch."""
    return CPU_SCORING_WINDOWS if device.type == "cpu" else max(settings.batch_size, 1) * 8


@torch.no_grad()
def outputs_per_window(model: GRLNet, clips: ClipSet, settings: ScoringSettings, device: torch.device,
                       autocast: contextlib.AbstractContextManager | None = None,
                       scorer: FeatureScorer | None = None,
                       windows_per_clip: int = 0) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Per window: D(x), D(R(x)), D(Lo(x)) and, with a ``scorer``, each feature score; their names,
    the values [W, K] float64, and each window's clip index [W].

    The networks run in eval mode, without noise, on every window (no batch is dropped), or on
    ``windows_per_clip`` evenly spaced ones of each clip; the encoders run once, for the reconstructions
    and the features alike.
    """
    model.eval()
    windows, clip_index = clips.windows(settings.segment_length, settings.segment_hop, windows_per_clip)
    names = [*TERMS, *(FEATURE_SCORES if scorer is not None else ())]
    outputs = torch.empty(len(windows), len(names), dtype=torch.float64)
    batch_size = scoring_batch_size(settings, device)
    for start in progress(range(0, len(windows), batch_size), desc="scoring", unit="batch", quiet=settings.quiet):
        x = windows[start:start + batch_size].to(device, non_blocking=True)
        outputs[start:start + batch_size] = score_batch(model, x, autocast, scorer)
    return names, outputs, clip_index


@torch.no_grad()
def score_batch(model: GRLNet, x: torch.Tensor, autocast: contextlib.AbstractContextManager | None = None,
                scorer: FeatureScorer | None = None) -> torch.Tensor:
    """One batch of windows [N, 1, L]: D(x), D(R(x)), D(Lo(x)) and, with a ``scorer``, each feature
    score, as [N, K] float64 on the CPU."""
    with autocast or contextlib.nullcontext():
        regional_code, local_code = model.regional.encode(x), model.local.encode(x)
        d_features = model.discriminator.features(x)
        d_real = torch.sigmoid(model.discriminator.logits_of_features(d_features))
        d_regional = model.discriminator(model.regional.decode(regional_code))
        d_local = model.discriminator(model.local.decode(local_code))
    columns = [d_real, d_regional, d_local]
    if scorer is not None:
        scores = scorer.window_scores(space_features(regional_code, local_code, d_features))
        columns += [torch.from_numpy(scores[name]) for name in FEATURE_SCORES]
    return torch.stack([c.double().cpu() for c in columns], 1)


@torch.no_grad()
def fit_normal_windows(model: GRLNet, clips: ClipSet, settings: ScoringSettings, device: torch.device,
                       autocast: contextlib.AbstractContextManager | None = None, windows_per_clip: int = 0
                       ) -> dict[str, dict[str, torch.Tensor]]:
    """The feature models (features.fit_feature_models) fitted on normal clips' windows (all, or
    ``windows_per_clip`` of each clip), at most ``features.MAX_FIT_WINDOWS`` of them, evenly spaced;
    networks in eval mode, without noise."""
    model.eval()
    windows, _ = clips.windows(settings.segment_length, settings.segment_hop, windows_per_clip)
    chosen = windows[torch.from_numpy(fit_windows(len(windows)))]
    batch_size = scoring_batch_size(settings, device)
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(chosen), batch_size):
        with autocast or contextlib.nullcontext():
            features = window_features(model, chosen[start:start + batch_size].to(device, non_blocking=True))
        for space, values in features.items():
            parts.setdefault(space, []).append(values)
    return fit_feature_models({space: torch.cat(values).numpy() for space, values in parts.items()})


def clip_outputs(model: GRLNet, clips: ClipSet, settings: ScoringSettings, device: torch.device,
                 autocast: contextlib.AbstractContextManager | None = None,
                 scorer: FeatureScorer | None = None, windows_per_clip: int = 0) -> tuple[list[str], torch.Tensor]:
    """``outputs_per_window``'s names and values per clip, [N, K] float64: the mean over each clip's windows."""
    names, outputs, clip_index = outputs_per_window(model, clips, settings, device, autocast, scorer, windows_per_clip)
    per_clip = torch.zeros(len(clips), len(names), dtype=torch.float64).index_add_(0, clip_index, outputs)
    return names, per_clip / torch.bincount(clip_index, minlength=len(clips)).unsqueeze(1)


def score_clips(model: GRLNet, clips: ClipSet, settings: ScoringSettings, device: torch.device,
                autocast: contextlib.AbstractContextManager | None = None,
                process: Process = SINGLE_PROCESS, scorer: FeatureScorer | None = None,
                windows_per_clip: int = 0) -> dict[str, np.ndarray]:
    """Every clip's D(x), D(R(x)), D(Lo(x)), the paper's score, with a ``scorer`` each feature score,
    and last ("score") the one ``settings.score`` picks, in clip order; each the mean over the clip's windows
    (all, or ``windows_per_clip`` evenly spaced ones).

    Over several processes each scores every world_size-th clip and the results are gathered,
    so every clip is scored exactly once.
    """
    mine = list(range(process.rank, len(clips), process.world_size))
    share = clips.part(slice(process.rank, None, process.world_size))  # views, not copies
    names, outputs = clip_outputs(model, share, settings, device, autocast, scorer, windows_per_clip)
    per_clip = torch.empty(len(clips), len(names), dtype=torch.float64)
    covered = torch.zeros(len(clips), dtype=torch.long)
    for indices, values in gather_values((mine, outputs), process):
        per_clip[indices] = values
        covered[indices] += 1
    if not torch.all(covered == 1):
        raise RuntimeError(f"clips scored {covered.tolist()} times across processes; expected once each")
    columns = dict(zip(names, per_clip.numpy().T, strict=True))
    columns[PAPER_SCORE] = blend(*(columns[t] for t in TERMS), settings.comprehensive_output_factor)
    ordered = {name: columns[name] for name in (*TERMS, PAPER_SCORE, *FEATURE_SCORES) if name in columns}
    if settings.score not in ordered:
        raise UserError(f"--score {settings.score} needs the statistics of normal windows, and none were given")
    return {**ordered, CHOSEN: ordered[settings.score]}


@dataclass(frozen=True)
class Evaluation:
    """Every score of every clip (``score_clips``), the feature models fitted for it and the seconds fitting took."""

    scores: dict[str, np.ndarray]
    feature_models: dict[str, dict[str, torch.Tensor]]
    fit_seconds: float


def fit_and_score(model: GRLNet, normal: ClipSet, clips: ClipSet, settings: ScoringSettings, device: torch.device,
                  autocast: contextlib.AbstractContextManager | None = None, process: Process = SINGLE_PROCESS,
                  windows_per_clip: int = 0) -> Evaluation:
    """An evaluation as train.py runs it after every epoch: the feature scores' models fitted again on the
    ``normal`` clips' windows (the networks have moved since the last fit), then every score of ``clips``;
    on every window, or on ``windows_per_clip`` evenly spaced ones of each clip, for fit and scores alike."""
    started = time.perf_counter()
    feature_models = fit_normal_windows(model, normal, settings, device, autocast, windows_per_clip)
    fit_seconds = time.perf_counter() - started
    scores = score_clips(model, clips, settings, device, autocast, process, FeatureScorer(feature_models),
                         windows_per_clip)
    return Evaluation(scores, feature_models, fit_seconds)

"""Two-sided anomaly scores in GRLNet's own feature spaces.

The paper's score is the discriminator's probability that a signal looks like a reconstruction; an
anomaly that has more of what D calls "real" scores as more normal, so the score can point the wrong
way (docs/METHOD.md). A distance from the normal windows' distribution cannot: an anomaly far away on
either side scores high. Each window's features are pooled over time (mean and standard deviation
per channel) in two spaces, the regional and local encoders' outputs ("encoder") and D's last
convolution ("discriminator"); after standardisation, a window's score is its squared Mahalanobis
distance from the normal windows (Ledoit-Wolf shrinkage covariance) or its mean Euclidean distance to
its nearest normal windows. What is fitted is stored as tensors, so scoring needs no training data.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import LinAlgError, inv, pinvh
from sklearn.covariance import LedoitWolf
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from data.console import DivergedError, UserError
from data.datasets import evenly_spaced
from grlnet.scores import DISTANCES, FEATURE_SPACES, feature_score
from network import GRLNet

NEIGHBOURS = 5  # nearest normal windows averaged by the kNN distance
MAX_FIT_WINDOWS = 512  # normal windows a feature model is fitted on (evenly spaced): bounds time and checkpoint size
SPACE_ENTRIES = ("mean", "scale", "location", "precision", "reference")
# The pooled features' widths: the mean and standard deviation of each channel of the regional and local
# encoders' outputs (512 each) and of D's last convolution (512).
SPACE_WIDTHS = {"encoder": 2 * (512 + 512), "discriminator": 2 * 512}


def pooled(h: torch.Tensor) -> torch.Tensor:
    """[B, C, T] -> [B, 2C]: each channel's mean and (population) standard deviation over time; the
    norm of the centred values is three times faster than torch.std on a CPU."""
    mean = h.mean(-1, keepdim=True)
    return torch.cat([mean.squeeze(-1), torch.linalg.vector_norm(h - mean, dim=-1) / h.shape[-1] ** 0.5], dim=1)


def space_features(regional_code: torch.Tensor, local_code: torch.Tensor,
                   discriminator_features: torch.Tensor) -> dict[str, torch.Tensor]:
    """The pooled features of each space, float64 on the CPU: "encoder" [B, 2048], "discriminator" [B, 1024]."""
    encoder = torch.cat([pooled(regional_code.float()), pooled(local_code.float())], dim=1)
    spaces = {"encoder": encoder, "discriminator": pooled(discriminator_features.float())}
    return {name: values.double().cpu() for name, values in spaces.items()}


@torch.no_grad()
def window_features(model: GRLNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The feature spaces of a batch of windows [B, 1, L] (encoders and D's convolutions only)."""
    return space_features(model.regional.encode(x), model.local.encode(x), model.discriminator.features(x))


def fit_windows(count: int) -> np.ndarray:
    """Indices of the windows a feature model is fitted on: all, or ``MAX_FIT_WINDOWS`` evenly spaced."""
    return evenly_spaced(count, MAX_FIT_WINDOWS)


def fit_space(features: np.ndarray) -> dict[str, torch.Tensor]:
    """A feature space's model fitted on normal windows' features [N, F], as float32 tensors: the
    standardisation (mean, scale), Ledoit-Wolf's location and precision, and the standardised
    windows themselves as the kNN reference."""
    if len(features) < 2:
        raise UserError(f"{len(features)} normal window(s) to fit the feature scores on; they need at least 2")
    scaler = StandardScaler().fit(features)
    standardised = scaler.transform(features)
    covariance = LedoitWolf(store_precision=False).fit(standardised)
    try:  # the shrunk covariance is positive definite as a rule; LAPACK's inverse is far faster than pinvh
        precision = inv(covariance.covariance_, check_finite=False)
    except LinAlgError:  # a handful of windows, or constant features: the pseudo-inverse, as sklearn's
        precision = pinvh(covariance.covariance_)
    fitted = {"mean": scaler.mean_, "scale": scaler.scale_, "location": covariance.location_,
              "precision": precision, "reference": standardised}
    return {name: torch.as_tensor(values, dtype=torch.float32) for name, values in fitted.items()}


class FeatureScorer:
    """Scores windows by their distances from the normal windows that ``fit_space`` modelled."""

    def __init__(self, models: dict[str, dict[str, torch.Tensor]]):
        self.models = {space: {name: values.double().numpy() for name, values in model.items()}
                       for space, model in models.items()}
        self.neighbours = {space: NearestNeighbors(n_neighbors=min(NEIGHBOURS, len(model["reference"])))
                           .fit(model["reference"]) for space, model in self.models.items()}

    def window_scores(self, features: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Each distance's score in each fitted space (scores.feature_score names them) of a batch of windows,
        from their pooled features (``space_features``)."""
        require_finite(features, "windows scored")
        scores = {}
        for space, model in self.models.items():
            standardised = (features[space].numpy() - model["mean"]) / model["scale"]
            for distance in DISTANCES:
                scores[feature_score(space, distance)] = DISTANCE_OF[distance](standardised, model,
                                                                               self.neighbours[space])
        return scores


def mahalanobis(standardised: np.ndarray, model: dict[str, np.ndarray], neighbours: NearestNeighbors) -> np.ndarray:
    """Each standardised window's squared Mahalanobis distance from the space's Ledoit-Wolf model."""
    centred = standardised - model["location"]
    # (x - m)^T P (x - m) per row: sklearn's mahalanobis() goes through pairwise_distances, 16x slower here
    return ((centred @ model["precision"]) * centred).sum(axis=1)


def knn(standardised: np.ndarray, model: dict[str, np.ndarray], neighbours: NearestNeighbors) -> np.ndarray:
    """Each standardised window's mean Euclidean distance to its ``NEIGHBOURS`` nearest normal windows."""
    distances, _ = neighbours.kneighbors(standardised)
    return distances.mean(axis=1)


DISTANCE_OF = {"mahalanobis": mahalanobis, "knn": knn}  # each of scores.DISTANCES, computed


def require_finite(features: dict[str, np.ndarray | torch.Tensor], windows: str) -> None:
    """Refuse features with NaN or infinite values (the networks' outputs overflow: a diverged model),
    which sklearn would meet with a traceback."""
    broken = [space for space, values in features.items() if not np.isfinite(np.asarray(values)).all()]
    if broken:
        raise DivergedError(f"the {' and '.join(broken)} features of the {windows} hold NaN or infinite values "
                            "(the networks' outputs overflow)")


def fit_feature_models(features: dict[str, np.ndarray]) -> dict[str, dict[str, torch.Tensor]]:
    """Every feature space's model, fitted on normal windows' features (``space_features``, stacked)."""
    require_finite(features, "normal windows")
    return {space: fit_space(features[space]) for space in FEATURE_SPACES}


def feature_model_problems(models: object) -> list[str]:
    """What a checkpoint's 'feature_models' entry lacks to score with, each in a few words: every space's
    tensors, of the widths of the networks' pooled features (``SPACE_WIDTHS``) and of shapes that agree."""
    if not isinstance(models, dict) or set(models) != set(FEATURE_SPACES):
        return [f"'feature_models' does not hold the spaces {', '.join(FEATURE_SPACES)}"]
    problems = []
    for space, model in models.items():
        if not isinstance(model, dict) or not all(isinstance(model.get(k), torch.Tensor) for k in SPACE_ENTRIES):
            problems.append(f"'feature_models' {space} lacks one of {', '.join(SPACE_ENTRIES)}")
            continue
        width = SPACE_WIDTHS[space]
        shapes = {"mean": (width,), "scale": (width,), "location": (width,), "precision": (width, width)}
        reference = model["reference"]  # [windows, width]
        if (any(tuple(model[k].shape) != shape for k, shape in shapes.items())
                or (reference.dim(), reference.shape[-1:]) != (2, (width,))):
            problems.append(f"'feature_models' {space}: its tensors' shapes disagree")
        elif not all(model[k].is_floating_point() for k in SPACE_ENTRIES):
            problems.append(f"'feature_models' {space} holds tensors that are not floating-point")
    return problems

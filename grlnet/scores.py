"""Every score GRLNet reports, registered once: D's three terms, the paper's blend of them, the feature
scores (each a distance in a feature space, fitted on normal windows and computed in features.py), the
default, and the two columns of scores.csv that hold the score a run decides with and that score's name
(docs/METHOD.md, "The scores")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TERMS = ("d_real", "d_regional", "d_local")  # D(x), D(R(x)), D(Lo(x)): the paper's score blends them
PAPER_SCORE = "paper"
FEATURE_SPACES = ("encoder", "discriminator")  # the encoders' outputs, D's last convolution
DISTANCES = ("mahalanobis", "knn")


@dataclass(frozen=True)
class Score:
    """A score: its name and, for a feature score, the feature space its model is fitted in on normal windows
    (features.fit_space) and the distance from that model that scores a window (features.DISTANCE_OF)."""

    name: str
    space: str | None = None
    distance: str | None = None

    @property
    def fitted(self) -> bool:
        """Whether the score needs a model fitted on normal windows (the paper's blend of D's outputs does not)."""
        return self.space is not None


def feature_score(space: str, distance: str) -> str:
    """The name of the score of ``distance`` in feature space ``space``."""
    return f"{space}_{distance}"


REGISTRY = {score.name: score for score in (
    Score(PAPER_SCORE),
    *(Score(feature_score(space, distance), space, distance) for space in FEATURE_SPACES for distance in DISTANCES),
)}
SCORES = tuple(REGISTRY)
FEATURE_SCORES = tuple(name for name, score in REGISTRY.items() if score.fitted)
# The score of WAV data and the embedded set, chosen by the rule in README.md ("Which score"); the
# release's CSV layout keeps the paper's score, the faithful reproduction.
DEFAULT_SCORE = "encoder_knn"
CHOSEN = "score"  # scores.csv's column of the score --score picks, which metrics and decisions use
CHOSEN_NAME = "score_name"  # and the column that names it


def blend(d_real: np.ndarray, d_regional: np.ndarray, d_local: np.ndarray, gamma: float) -> np.ndarray:
    """The paper's score: gamma * (D(R(x)) + D(Lo(x))) + (1 - gamma) * D(x); higher = more anomalous."""
    return gamma * (d_regional + d_local) + (1 - gamma) * d_real

"""Every score GRLNet reports, named once: D's three terms, the paper's blend of them, the feature scores
(fitted and computed in features.py), the default, and the two columns of scores.csv that hold the score a
run decides with and that score's name (docs/METHOD.md, "The scores")."""
from __future__ import annotations

import numpy as np

TERMS = ("d_real", "d_regional", "d_local")  # D(x), D(R(x)), D(Lo(x)): the paper's score blends them
PAPER_SCORE = "paper"
FEATURE_SPACES = ("encoder", "discriminator")  # the encoders' outputs, D's last convolution
DISTANCES = ("mahalanobis", "knn")
FEATURE_SCORES = tuple(f"{space}_{distance}" for space in FEATURE_SPACES for distance in DISTANCES)
SCORES = (PAPER_SCORE, *FEATURE_SCORES)
# The score of WAV data and the embedded set, chosen by the rule in README.md ("Which score"); the
# release's CSV layout keeps the paper's score, the faithful reproduction.
DEFAULT_SCORE = "encoder_knn"
CHOSEN = "score"  # scores.csv's column of the score --score picks, which metrics and decisions use
CHOSEN_NAME = "score_name"  # and the column that names it


def feature_score(space: str, distance: str) -> str:
    """The name of the score of ``distance`` in feature space ``space``."""
    return f"{space}_{distance}"


def blend(d_real: np.ndarray, d_regional: np.ndarray, d_local: np.ndarray, gamma: float) -> np.ndarray:
    """The paper's score: gamma * (D(R(x)) + D(Lo(x))) + (1 - gamma) * D(x); higher = more anomalous."""
    return gamma * (d_regional + d_local) + (1 - gamma) * d_real

"""Detection metrics, computed the way the DCASE 2020 baseline and the release report them.

Abnormal (1) is the positive class for AUC, pAUC and EER. F1, precision and recall are reported for
both classes and named; the release printed those of the *normal* class only.
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from errors import UserError

MAX_FPR = 0.1


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    """EER = (FPR + FNR) / 2 at the ROC point where |FNR - FPR| is smallest.

    Returns (eer, threshold, fpr at that point: the release's "ERR").
    """
    fpr, tpr, thresholds = skm.roc_curve(labels, scores)
    fnr = 1 - tpr
    point = int(np.argmin(np.abs(fnr - fpr)))
    return float((fpr[point] + fnr[point]) / 2), float(thresholds[point]), float(fpr[point])


def compute_metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    """All metrics of one evaluation; ``labels`` 0/1, ``scores`` higher = more anomalous."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise UserError("metrics need both normal (0) and abnormal (1) items")
    if not np.all(np.isfinite(scores)):
        raise UserError("the model produced non-finite scores; the run has diverged")
    eer, threshold, err = equal_error_rate(labels, scores)
    predictions = (scores >= threshold).astype(np.int64)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, predictions, labels=[0, 1], zero_division=0)
    confusion = skm.confusion_matrix(labels, predictions, labels=[0, 1])
    return {
        "auc": float(skm.roc_auc_score(labels, scores)),
        "pauc": float(skm.roc_auc_score(labels, scores, max_fpr=MAX_FPR)),
        "eer": eer,
        "threshold": threshold,
        "release_err": err,
        "accuracy": float(skm.accuracy_score(labels, predictions)),
        "precision_normal": float(precision[0]), "recall_normal": float(recall[0]), "f1_normal": float(f1[0]),
        "precision_abnormal": float(precision[1]), "recall_abnormal": float(recall[1]),
        "f1_abnormal": float(f1[1]),
        "confusion": confusion.tolist(),
    }


def held_out_threshold(scores: np.ndarray, quantile: float) -> dict:
    """The decision threshold of a run without a labelled test set: the ``quantile`` of the scores of
    normal clips held out of training (so about 1 - quantile of normal recordings score above it)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(scores)):
        raise UserError("the model produced non-finite scores; the run has diverged")
    return {"threshold": float(np.quantile(scores, quantile)), "held_out_mean": float(scores.mean()),
            "held_out_max": float(scores.max())}


def format_held_out_threshold(m: dict, quantile: float, clips: int) -> str:
    """One line for logs: the threshold and where it comes from."""
    return (f"threshold {m['threshold']:.6f}: the {quantile:g}-quantile of the scores of {clips} held-out "
            f"normal clips (mean {m['held_out_mean']:.6f}, max {m['held_out_max']:.6f})")


def format_metrics(m: dict, with_auc: bool = True) -> str:
    """A multi-line report for logs; its last line names the AUC as ``AUC <value>`` (unless not wanted)."""
    (tn, fp), (fn, tp) = m["confusion"]
    lines = [
        f"pAUC {m['pauc']:.4f} (max FPR {MAX_FPR})  EER {m['eer']:.4f} at threshold {m['threshold']:.6f}"
        f"  (release's ERR = FPR there: {m['release_err']:.4f})",
        f"normal class:   precision {m['precision_normal']:.4f} recall {m['recall_normal']:.4f}"
        f" F1 {m['f1_normal']:.4f}",
        f"abnormal class: precision {m['precision_abnormal']:.4f} recall {m['recall_abnormal']:.4f}"
        f" F1 {m['f1_abnormal']:.4f}",
        f"accuracy {m['accuracy']:.4f}  confusion [[TN {tn}, FP {fp}], [FN {fn}, TP {tp}]]"
        " (rows: true normal, abnormal)",
    ]
    return "\n".join(lines + [f"AUC {m['auc']:.4f}"] * with_auc)

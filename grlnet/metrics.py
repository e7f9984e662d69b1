"""Detection metrics, computed the way the DCASE 2020 baseline and the release report them.

Abnormal (1) is the positive class for AUC, pAUC and EER. F1, precision and recall are reported for
both classes and named; the release printed those of the *normal* class only. DCASE 2020 test sets
also get the metrics per machine id and their average, DCASE 2021-2024 test sets DCASE 2022-2024's
per-section metrics and official score; GRLNet's runs also get the AUC of each of the paper's score's
terms alone and of each of its scores, a diagnostic of which ranks the clips. A run without a labelled
test set gets a decision threshold from held-out normal clips instead.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import bootstrap, hmean, mannwhitneyu
from sklearn import metrics as skm

from data.console import UserError
from data.layouts import dcase_machine_ids, dcase_sections
from grlnet.scores import SCORES

MAX_FPR = 0.1
BOOTSTRAP_RESAMPLES = 2000
# The score's terms, and the metrics.csv column of each one's AUC alone (a diagnostic) with its label.
SCORE_TERMS = {"d_real": "D(x)", "d_regional": "D(R(x))", "d_local": "D(Lo(x))"}
TERM_AUC_COLUMNS = {f"auc_{term}": label for term, label in SCORE_TERMS.items()}
# Every score --score can pick, and the metrics.csv column of each one's AUC (a diagnostic, like the terms').
SCORE_AUC_COLUMNS = {f"auc_{name}": name for name in SCORES}


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    """EER = (FPR + FNR) / 2 at the ROC point where |FNR - FPR| is smallest.

    Returns (eer, threshold, fpr at that point: the release's "ERR"). Every distinct score is a ROC point
    (``drop_intermediate=False``): dropping the collinear ones would skip the point of a flat stretch
    where FNR = FPR. ROC point 0 (threshold inf: nothing abnormal) is left out: no other point is
    farther from FNR = FPR, but it ties with the only other point when every score is equal, and an
    infinite threshold would flag no recording.
    """
    fpr, tpr, thresholds = skm.roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1 - tpr
    point = 1 + int(np.argmin(np.abs(fnr[1:] - fpr[1:])))
    return float((fpr[point] + fnr[point]) / 2), float(thresholds[point]), float(fpr[point])


def _finite_scores(scores: np.ndarray) -> np.ndarray:
    """The scores as float64, refused where a diverged model made any of them NaN or infinite."""
    scores = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(scores)):
        raise UserError("the model produced non-finite scores; the run has diverged")
    return scores


def compute_metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    """All metrics of one evaluation; ``labels`` 0/1, ``scores`` higher = more anomalous."""
    labels = np.asarray(labels)
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise UserError("metrics need both normal (0) and abnormal (1) items")
    scores = _finite_scores(scores)
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


def mean_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of each row of ``scores`` [R, N] (e.g. one seed each, on the same clips), averaged: the
    Mann-Whitney U of abnormal against normal scores over the pairs, ties counting half, as roc_auc_score's
    AUC is, and for all rows at once (a bootstrap calls it thousands of times)."""
    abnormal, normal = scores[:, labels != 0], scores[:, labels == 0]
    u = mannwhitneyu(abnormal, normal, axis=1, method="asymptotic", use_continuity=False).statistic
    return float(np.mean(u / (abnormal.shape[1] * normal.shape[1])))


def mean_pauc(labels: np.ndarray, scores: np.ndarray) -> float:
    """pAUC (max FPR 0.1, McClish-standardised as DCASE's baseline reports it) of each row, averaged."""
    return float(np.mean([skm.roc_auc_score(labels, row, max_fpr=MAX_FPR) for row in scores]))


def mean_official_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """DCASE's official score of one test set, the harmonic mean of AUC and pAUC, of each row, averaged."""
    return float(np.mean([hmean([mean_auc(labels, row[None]), mean_pauc(labels, row[None])]) for row in scores]))


def clip_bootstrap_interval(labels: np.ndarray, scores: np.ndarray,
                            statistic: Callable[[np.ndarray, np.ndarray], float], confidence: float = 0.95,
                            resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of ``statistic(labels, scores)`` over the test clips, normal and
    abnormal clips resampled separately so that each class keeps its size (scipy.stats.bootstrap).

    ``scores`` is [N] or [R, N]: rows on the same clips (seeds of one split) are resampled by the same
    clips, so the interval is that of their mean over the clips a test set could have held.
    """
    labels, scores = np.asarray(labels), np.atleast_2d(np.asarray(scores, dtype=np.float64))
    normal, abnormal = np.flatnonzero(labels == 0), np.flatnonzero(labels != 0)

    def resampled(normal_clips: np.ndarray, abnormal_clips: np.ndarray) -> float:
        clips = np.concatenate([normal_clips, abnormal_clips]).astype(np.int64)
        return statistic((labels[clips] != 0).astype(np.int64), scores[:, clips])

    result = bootstrap((normal, abnormal), resampled, n_resamples=resamples, vectorized=False, paired=False,
                       confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _auc_if_defined(labels: np.ndarray, scores: np.ndarray, max_fpr: float | None = None) -> float | None:
    """ROC AUC (or pAUC), None where the items lack one of the classes."""
    if len(set(labels.tolist())) < 2:
        return None
    return float(skm.roc_auc_score(labels, scores, max_fpr=max_fpr))


def dcase_section_metrics(labels: np.ndarray, scores: np.ndarray, sections: list[str],
                          domains: list[str]) -> tuple[list[dict], float | None]:
    """DCASE 2022-2024's metrics per section, and their official score.

    Per section: AUC per domain (that domain's normal clips against all the section's anomalies)
    and pAUC over all its clips; the official score is the harmonic mean of all of these that are
    defined (None where a section lacks a domain's normal clips or any anomaly).
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    sections, domains = np.asarray(sections), np.asarray(domains)
    rows = []
    for section in sorted(set(sections.tolist())):
        in_section = sections == section
        row = {"section": section}
        for domain in ("source", "target"):
            chosen = in_section & ((domains == domain) | (labels == 1))
            row[f"auc_{domain}"] = _auc_if_defined(labels[chosen], scores[chosen])
        row["pauc"] = _auc_if_defined(labels[in_section], scores[in_section], MAX_FPR)
        rows.append(row)
    defined = [row[k] for row in rows for k in ("auc_source", "auc_target", "pauc") if row[k] is not None]
    return rows, float(hmean(defined)) if defined else None


def machine_id_metrics(labels: np.ndarray, scores: np.ndarray, ids: list[str]) -> tuple[list[dict], dict]:
    """DCASE 2020's metrics per machine id (AUC and pAUC over that id's clips) and their arithmetic
    means, the "Average" row of the DCASE 2020 baseline's result.csv (None where an id lacks a class)."""
    labels, scores, ids = np.asarray(labels), np.asarray(scores, dtype=np.float64), np.asarray(ids)
    rows = []
    for machine_id in sorted(set(ids.tolist())):
        chosen = ids == machine_id
        rows.append({"id": machine_id, "auc": _auc_if_defined(labels[chosen], scores[chosen]),
                     "pauc": _auc_if_defined(labels[chosen], scores[chosen], MAX_FPR)})
    average = {}
    for key in ("auc", "pauc"):
        defined = [row[key] for row in rows if row[key] is not None]
        average[key] = float(np.mean(defined)) if defined else None
    return rows, average


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_sections(rows: list[dict], official_score: float | None) -> str:
    """The per-section table of ``dcase_section_metrics`` for logs ("n/a" where undefined)."""
    lines = [f"section {r['section']}: AUC source {_number(r['auc_source'])}  AUC target "
             f"{_number(r['auc_target'])}  pAUC {_number(r['pauc'])}" for r in rows]
    return "\n".join(lines + [f"DCASE official score (harmonic mean of the above) {_number(official_score)}"])


def format_machine_ids(metrics: dict) -> str:
    """The per-machine-id table of ``labelled_metrics`` for logs, as the DCASE 2020 baseline lists it
    (the average only where there are several ids: one id's average is that id's row)."""
    lines = [f"machine id {r['id']}: AUC {_number(r['auc'])}  pAUC {_number(r['pauc'])}"
             for r in metrics["machine_ids"]]
    if len(lines) > 1:
        lines.append(f"average over machine ids: AUC {_number(metrics['id_average_auc'])}  "
                     f"pAUC {_number(metrics['id_average_pauc'])}")
    return "\n".join(lines)


def score_aucs(labels: np.ndarray, terms: dict[str, np.ndarray]) -> dict[str, float]:
    """The AUC of each of the paper's score's terms alone ("auc_d_real", ...) and of each score in
    ``terms`` ("auc_paper", "auc_encoder_mahalanobis", ...): a diagnostic that shows which ranks the clips
    and which is inverted (below 0.5); never used to choose anything."""
    names = [*SCORE_TERMS, *(name for name in SCORES if name in terms)]
    return {f"auc_{name}": float(skm.roc_auc_score(labels, _finite_scores(terms[name]))) for name in names}


def labelled_metrics(labels: np.ndarray, scores: np.ndarray, names: Sequence[str] = (),
                     terms: dict[str, np.ndarray] | None = None) -> dict:
    """``compute_metrics``, and where the test files have DCASE names the metrics DCASE reports per
    group: per machine id and their average for 2020 names ("machine_ids", "id_average_auc",
    "id_average_pauc"); per section and the official score for 2021-2024 names ("sections",
    "official_score"). With GRLNet's per-clip ``terms`` (D(x), D(R(x)), D(Lo(x)) and its scores), each
    one's AUC alone (``score_aucs``)."""
    metrics = compute_metrics(labels, scores)
    if terms is not None:
        metrics.update(score_aucs(labels, terms))
    ids = dcase_machine_ids(names)
    if ids is not None:
        metrics["machine_ids"], average = machine_id_metrics(labels, scores, ids)
        metrics["id_average_auc"], metrics["id_average_pauc"] = average["auc"], average["pauc"]
    sections = dcase_sections(names)
    if sections is not None:
        metrics["sections"], metrics["official_score"] = dcase_section_metrics(labels, scores, *sections)
    return metrics


def format_labelled_metrics(metrics: dict, with_auc: bool = True) -> str:
    """``format_metrics`` after the per-group tables where there are some (the last line stays the AUC)."""
    tables = []
    if "machine_ids" in metrics:
        tables.append(format_machine_ids(metrics))
    if "sections" in metrics:
        tables.append(format_sections(metrics["sections"], metrics["official_score"]))
    if TERM_AUC_COLUMNS.keys() <= metrics.keys():
        tables.append("AUC of each term alone (diagnostic): " + "  ".join(
            f"{label} {metrics[column]:.4f}" for column, label in TERM_AUC_COLUMNS.items()))
    if SCORE_AUC_COLUMNS.keys() & metrics.keys():
        tables.append("AUC of each score (diagnostic; --score picks one): " + "  ".join(
            f"{label} {metrics[column]:.4f}" for column, label in SCORE_AUC_COLUMNS.items() if column in metrics))
    return "\n".join(tables + [format_metrics(metrics, with_auc)])


def held_out_threshold(scores: np.ndarray, quantile: float) -> dict:
    """The decision threshold of a run without a labelled test set: the ``quantile`` of the scores of
    normal clips held out of training (so about 1 - quantile of normal recordings score above it)."""
    scores = _finite_scores(scores)
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
        (f"pAUC {m['pauc']:.4f} (max FPR {MAX_FPR})  EER {m['eer']:.4f} at threshold {m['threshold']:.6f}"
         f"  (release's ERR = FPR there: {m['release_err']:.4f})"),
        (f"normal class:   precision {m['precision_normal']:.4f} recall {m['recall_normal']:.4f}"
         f" F1 {m['f1_normal']:.4f}"),
        (f"abnormal class: precision {m['precision_abnormal']:.4f} recall {m['recall_abnormal']:.4f}"
         f" F1 {m['f1_abnormal']:.4f}"),
        (f"accuracy {m['accuracy']:.4f}  confusion [[TN {tn}, FP {fp}], [FN {fn}, TP {tp}]]"
         " (rows: true normal, abnormal)"),
    ]
    return "\n".join(lines + [f"AUC {m['auc']:.4f}"] * with_auc)

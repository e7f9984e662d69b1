"""Figures of a run, drawn from its files (metrics.csv, scores.csv, figures/examples.npz) without the model
(``python -m experiments.redraw runs/RUN`` draws them again)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from data.console import UserError
from data.files import atomic_write
from grlnet.metrics import MAX_FPR, SCORE_AUC_COLUMNS, TERM_AUC_COLUMNS, compute_metrics, equal_error_rate
from grlnet.results import EXAMPLE_SIGNALS, chosen_score, has_labels, read_columns, read_scores
from grlnet.scores import PAPER_SCORE

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

DPI = 150
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 9}
# Colour and line style both differ, so the curves stay distinct in grey-scale print.
# The input is drawn last, on top of both reconstructions.
SIGNAL_STYLES = {"regional": ("tab:blue", "--"), "local": ("tab:orange", ":"), "input": ("black", "-")}
CLASS_STYLES = {"normal": ("tab:blue", "//"), "abnormal": ("tab:red", "\\\\")}
EXAMPLE_KEYS = tuple(f"{signal}_{kind}" for kind in ("normal", "abnormal") for signal in EXAMPLE_SIGNALS)


@contextmanager
def styled_figure(out_png: str | Path, *args, **kwargs) -> Iterator[tuple]:
    """``plt.subplots(*args, **kwargs)`` in the house style; saved to ``out_png`` (atomically, data.files)
    and closed on exit."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(*args, **kwargs)
        try:
            yield fig, axes
            with atomic_write(out_png, "wb", "figure") as handle:
                fig.savefig(handle, format=Path(out_png).suffix[1:] or "png", dpi=DPI, bbox_inches="tight")
        finally:
            plt.close(fig)


# ---------------------------------------------------------------- the figures

def plot_training_curves(metrics_csv: str | Path, out_png: str | Path) -> None:
    """Losses, gradient norms, mean D outputs, the score terms' and scores' AUCs and AUC/pAUC per epoch
    (without a labelled test set: the held-out normal clips' scores and the threshold set on them): is
    training stable, is it learning, and does a term or score rank the clips the wrong way round?"""
    columns = read_columns(metrics_csv)
    epochs = columns["epoch"] + 1  # metrics.csv counts from 0, the log from 1
    labelled = "auc" in columns
    # (curves, y label, scale): "unit" panels lie in [0, 1], "auc" ones too, with chance marked; the terms'
    # and scores' AUCs need a labelled test set
    panels = [((("loss_d", "D loss"), ("loss_g", "G loss")), "training loss (epoch mean)", "linear"),
              ((("grad_d", "D"), ("grad_regional", "regional G"), ("grad_local", "local G")),
               "gradient L2 norm\n(epoch mean)", "log")]
    panels.append(((("d_real", "D(x), real input"), ("d_regional", "D(R(x)), regional rec."),
                    ("d_local", "D(Lo(x)), local rec.")), "mean D output\n(P[reconstruction])", "unit"))
    if TERM_AUC_COLUMNS.keys() <= columns.keys():
        panels.append((tuple((column, f"{label} alone") for column, label in TERM_AUC_COLUMNS.items()),
                       "test-set AUC of each\nscore term (diagnostic)", "auc"))
    scores = [(column, name) for column, name in SCORE_AUC_COLUMNS.items() if column in columns]
    if scores:
        panels.append((tuple(scores), "test-set AUC of\neach score (--score)", "auc"))
    panels.append(((("auc", "AUC"), ("pauc", f"pAUC (FPR ≤ {MAX_FPR})")), "test-set AUC / pAUC", "auc")
                  if labelled else
                  ((("threshold", "decision threshold"), ("held_out_mean", "mean"), ("held_out_max", "max")),
                   "anomaly score of\nheld-out normal clips", "linear"))
    with styled_figure(out_png, len(panels), 1, sharex=True, figsize=(7, 2.7 * len(panels))) as (fig, axes):
        for ax, (curves, ylabel, scale) in zip(axes, panels, strict=True):
            for (column, label), marker, style in zip(curves, "os^dv", ("-", "--", "-.", ":", "-"), strict=False):
                values = columns[column]
                if scale == "log":  # a log axis has no place for a zero gradient norm: not drawn
                    values = np.where(values > 0, values, np.nan)
                ax.plot(epochs, values, marker=marker, markersize=4, linestyle=style, label=label)
            ax.set_ylabel(ylabel)
            if scale == "log":
                ax.set_yscale("log")
            if scale in ("unit", "auc"):
                ax.set_ylim(-0.02, 1.02)
            if scale == "auc":
                ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (0.5)")
        for ax in axes:
            ax.legend(loc="best")
        axes[-1].set_xlabel("epoch")
        whole_epoch_axis(axes[-1], int(epochs.max()))
        axes[0].set_title("GRLNet training, per epoch")
        fig.align_ylabels(axes)


def whole_epoch_axis(ax: plt.Axes, last_epoch: int) -> None:
    """Epochs 1 to ``last_epoch`` on the x axis, ticked at whole epochs only (a single epoch too)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlim(0.5, last_epoch + 0.5)


def plot_roc(scores_csv: str | Path, out_png: str | Path) -> tuple[float, float]:
    """The ROC curve with AUC and the EER point; returns that point as (FPR, TPR)."""
    labels, scores = read_scores(scores_csv)
    metrics = compute_metrics(labels, scores)
    eer, _, fpr_at_eer = equal_error_rate(labels, scores)
    point = (fpr_at_eer, 1 - (2 * eer - fpr_at_eer))  # EER = (FPR + FNR) / 2 and TPR = 1 - FNR
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)  # every point, the EER's too
    with styled_figure(out_png, figsize=(5.5, 5.2)) as (fig, ax):
        ax.plot(fpr, tpr, color="tab:blue", linewidth=2,
                label=f"ROC (AUC = {metrics['auc']:.3f}, pAUC = {metrics['pauc']:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
        ax.axvline(MAX_FPR, color="grey", linestyle=":", linewidth=1, label=f"pAUC limit (FPR {MAX_FPR})")
        ax.plot(*point, marker="o", markersize=8, color="tab:red", linestyle="none",
                label=f"EER = {eer:.3f} (FPR {point[0]:.3f}, TPR {point[1]:.3f})")
        ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal",
               xlabel="false positive rate (normal flagged abnormal)",
               ylabel="true positive rate (abnormal detected)",
               title=f"ROC: {int(labels.sum())} abnormal, {int((labels == 0).sum())} normal items")
        ax.legend(loc="lower right")
    return point


def draw_class_histograms(ax: plt.Axes, labels: np.ndarray, scores: np.ndarray, edges: np.ndarray) -> None:
    """Normal and abnormal scores as overlaid histograms on ``ax``, in the class styles, counts in the legend."""
    for value, name in enumerate(CLASS_STYLES):
        color, hatch = CLASS_STYLES[name]
        ax.hist(scores[labels == value], bins=edges, color=color, alpha=0.35, hatch=hatch,
                edgecolor=color, label=f"{name} ({int((labels == value).sum())})")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def score_axis_label(score: str | None) -> str:
    """The score axis's label: the score's name (the paper's with its formula), or none where unknown."""
    if score == PAPER_SCORE:
        return "anomaly score: the paper's, γ·(D(R(x)) + D(Lo(x))) + (1 − γ)·D(x)  (no unit)"
    return f"anomaly score: {score}  (no unit)" if score else "anomaly score  (no unit)"


def plot_score_histograms(scores_csv: str | Path, out_png: str | Path) -> None:
    """Score distributions of normal and abnormal items with the EER threshold: how well they separate."""
    labels, scores = read_scores(scores_csv)
    _, threshold, _ = equal_error_rate(labels, scores)
    edges = np.histogram_bin_edges(scores, bins=min(40, max(10, len(scores) // 5)))
    with styled_figure(out_png, figsize=(7, 4)) as (fig, ax):
        draw_class_histograms(ax, labels, scores, edges)
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.5,
                   label=f"EER threshold {threshold:.4g}")
        ax.set(xlabel=score_axis_label(chosen_score(scores_csv)),
               ylabel="items (count)",
               title="Anomaly scores by true class")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))


def plot_confusion(scores_csv: str | Path, out_png: str | Path) -> None:
    """The confusion matrix at the EER threshold, with the count in each cell."""
    labels, scores = read_scores(scores_csv)
    metrics = compute_metrics(labels, scores)
    confusion = np.array(metrics["confusion"])
    names = ("normal", "abnormal")
    with styled_figure(out_png, figsize=(4.8, 4.2)) as (fig, ax):
        image = ax.imshow(confusion, cmap="Blues", vmin=0)
        for (row, column), count in np.ndenumerate(confusion):
            dark = count > confusion.max() / 2
            ax.text(column, row, str(count), ha="center", va="center", fontsize=14,
                    color="white" if dark else "black")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=names, yticklabels=names,
               xlabel="predicted class", ylabel="true class",
               title=f"At the EER threshold (score ≥ {metrics['threshold']:.4g}: abnormal)\n"
                     f"accuracy {metrics['accuracy']:.3f}")
        ax.grid(False)
        fig.colorbar(image, ax=ax, label="items (count)")


def plot_reconstructions(examples_npz: str | Path, out_png: str | Path) -> None:
    """Waveform and magnitude spectrum of one normal and one abnormal window with both reconstructions."""
    with np.load(examples_npz) as stored:
        missing = [key for key in (*EXAMPLE_KEYS, "sample_rate") if key not in stored]
        if missing:
            raise UserError(f"{examples_npz}: missing arrays {', '.join(missing)}")
        examples = {key: stored[key] for key in stored.files}
    rate, time_label, frequency_label = axis_units(float(examples["sample_rate"]))
    with styled_figure(out_png, 2, 2, figsize=(11, 6.5)) as (fig, axes):
        for row, kind in zip(axes, ("normal", "abnormal"), strict=True):
            for signal, (color, style) in SIGNAL_STYLES.items():
                values = examples[f"{signal}_{kind}"]
                label = signal if signal == "input" else f"{signal} reconstruction"
                row[0].plot(np.arange(len(values)) / rate, values, color=color, linestyle=style,
                            linewidth=1, label=label)
                row[1].plot(*_spectrum_db(values, rate), color=color, linestyle=style, linewidth=1,
                            label=label)
            errors = ", ".join(f"{signal} {relative_error(examples[f'input_{kind}'], examples[f'{signal}_{kind}']):.2g}"
                               for signal in ("regional", "local"))
            row[0].set(xlabel=time_label, ylabel="amplitude",
                       title=f"{kind} window: waveform (relative error {errors})")
            row[1].set(xlabel=frequency_label, ylabel="magnitude (dB)", title=f"{kind} window: spectrum")
        fig.text(0.5, 0.01, "The networks as saved, in eval mode, without input noise. The generators are trained "
                 "against D as well as on the squared error,\nso a reconstruction may be far from its input "
                 "(relative error 1 = as far as silence).", ha="center", fontsize=8)
        fig.tight_layout(rect=(0, 0.05, 1, 0.95))
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", ncol=3, frameon=False)


def relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    """||other - reference|| / ||reference||: 0 for a perfect reconstruction, 1 for silence."""
    return float(np.linalg.norm(other - reference) / max(np.linalg.norm(reference), np.finfo(np.float32).tiny))


def axis_units(sample_rate: float) -> tuple[float, str, str]:
    """The rate to divide sample indices by and the time and frequency axes' labels: seconds and Hz, or
    samples and cycles per sample where the rate is unknown (0: the release's CSV files carry none)."""
    if sample_rate > 0:
        return sample_rate, "time (s)", "frequency (Hz)"
    return 1.0, "time (samples)", "frequency (cycles per sample)"


def _spectrum_db(values: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (in units of ``rate``) and magnitude (dB re 1) of a signal's real FFT."""
    magnitude = np.abs(np.fft.rfft(values))
    return np.fft.rfftfreq(len(values), d=1 / rate), 20 * np.log10(magnitude + 1e-12)


# ---------------------------------------------------------------- a whole run folder

FIGURES = (  # (input file in the run folder, figure written to figures/, drawing function)
    ("metrics.csv", "training_curves.png", plot_training_curves),
    ("scores.csv", "roc.png", plot_roc),
    ("scores.csv", "score_histograms.png", plot_score_histograms),
    ("scores.csv", "confusion_matrix.png", plot_confusion),
    ("figures/examples.npz", "reconstructions.png", plot_reconstructions),
)


def _can_draw(source: Path) -> bool:
    """The input exists (and, for scores.csv, is labelled)."""
    return source.is_file() and (source.name != "scores.csv" or has_labels(source))


def redraw(run_folder: str | Path) -> list[Path]:
    """Draw every figure whose input is in ``run_folder`` into ``<run_folder>/figures/``."""
    folder = Path(run_folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: run folder not found")
    jobs = [(draw, folder / source, folder / "figures" / name) for source, name, draw in FIGURES
            if _can_draw(folder / source)]
    if not jobs:
        raise UserError(f"{folder}: nothing to draw; the folder has no metrics.csv, labelled scores.csv "
                        "or figures/examples.npz (is it a run folder written by train.py or test.py?)")
    (folder / "figures").mkdir(exist_ok=True)
    for draw, source, out_png in jobs:
        draw(source, out_png)
    return [out_png for _, _, out_png in jobs]

"""Draw our own diagram of the GRLNet architecture (matplotlib boxes and arrows) to Image/architecture.png.

    python -m experiments.tools.draw_architecture [OUT_PNG]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import Circle, FancyBboxPatch  # noqa: E402

from data.files import atomic_write  # noqa: E402
from network import DISCRIMINATOR_KERNEL, DISCRIMINATOR_STRIDE, LOCAL_KERNEL, REGIONAL_KERNEL  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "Image" / "architecture.png"
COLORS = {"filter": "#e4d7f5", "encoder": "#d6e6f5", "decoder": "#d8f0d8", "disc": "#fde2c8",
          "data": "#f2f2f2", "container": "#ffffff"}
FONT = 9
# Layout in data units: the figure is 200 x 100 units, 20 x 10 inches.
GENERATORS = (("R", REGIONAL_KERNEL, "Regional generator R: wide receptive field"),  # name, kernel, title
              ("Lo", LOCAL_KERNEL, "Local generator Lo: fine detail"))
GEN_ROWS = {"R": 64, "Lo": 22}  # bottom of each generator's frame
GEN_HEIGHT, BLOCK_Y, BLOCK_H = 25, 3, 15  # frame height; inner blocks' offset and height in the frame
GEN_BLOCK_X, GEN_BLOCK_W = (38, 60, 82), 18
RECON_X, RECON_W = 105, 13
D_FRAME = (128, 22, 70, 66)  # x, y, width, height
D_BLOCKS = (  # x, width, colour, text of each stage of D, left to right
    (130, 15, "filter", "global filter layer\n\nLayerNorm\n→ FFT → |·|\n\n(own LayerNorm\nweights)"),
    (149, 17, "disc", (f"4 strided convs\nk = {DISCRIMINATOR_KERNEL}, stride {DISCRIMINATOR_STRIDE}\n\n64 → 128\n"
                       "→ 256 → 512 ch\n(BN, ReLU)")),
    (170, 10, "disc", "flatten\n→ linear\n→ 1"),
    (184, 12, "disc", "sigmoid"),
)
MID_Y = 55


def box(ax: Axes, x: float, y: float, w: float, h: float, text: str, face: str, **text_kwargs) -> None:
    """A rounded box with centred text."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=1.2", facecolor=face,
                                edgecolor="black", linewidth=1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=FONT, **text_kwargs)


def arrow(ax: Axes, *points: tuple[float, float], label: str = "",
          label_at: tuple[float, float] | None = None) -> None:
    """A line through ``points`` with an arrow head on the last segment, optionally labelled."""
    xs, ys = zip(*points, strict=True)
    ax.plot(xs[:-1], ys[:-1], color="black", linewidth=1.2, solid_capstyle="butt")
    ax.annotate("", xy=points[-1], xytext=points[-2], arrowprops={
        "arrowstyle": "-|>", "color": "black", "linewidth": 1.2, "shrinkA": 0, "shrinkB": 0})
    if label:
        ax.text(*label_at, label, fontsize=FONT, ha="center", va="bottom")


def draw_generator(ax: Axes, title: str, kernel: int, bottom: float) -> float:
    """One generator's frame: global filter layer, encoder, decoder; returns its blocks' mid height."""
    left, right = GEN_BLOCK_X[0] - 2, GEN_BLOCK_X[-1] + GEN_BLOCK_W + 2
    box(ax, left, bottom, right - left, GEN_HEIGHT, "", COLORS["container"])
    ax.text(left + 1.5, bottom + GEN_HEIGHT - 1.2, title, fontsize=FONT + 1, fontweight="bold", va="top")
    texts = (("filter", "global filter layer\n\nLayerNorm\n→ FFT → |·|"),
             ("encoder", f"conv encoder\nk = {kernel}\n\n64 → 128\n→ 256 → 512 ch\n(BN, ReLU)"),
             ("decoder",
              f"transposed-conv\ndecoder, k = {kernel}\n\n256 → 128\n→ 64 → 1 ch\nthen tanh"))
    y, middle = bottom + BLOCK_Y, bottom + BLOCK_Y + BLOCK_H / 2
    for x, (kind, text) in zip(GEN_BLOCK_X, texts, strict=True):
        box(ax, x, y, GEN_BLOCK_W, BLOCK_H, text, COLORS[kind])
    for x in GEN_BLOCK_X[1:]:
        arrow(ax, (x - 4, middle), (x, middle))
    return middle


def draw_discriminator(ax: Axes) -> None:
    """D's frame and its four stages, left to right."""
    x, y, w, h = D_FRAME
    box(ax, x, y, w, h, "", COLORS["container"])
    ax.text(x + 1.5, y + h - 1.2, "Discriminator D", fontsize=FONT + 1, fontweight="bold", va="top")
    for (bx, bw, kind, text), following in zip(D_BLOCKS, (*D_BLOCKS[1:], None), strict=True):
        tall = kind == "filter"
        by, bh = (y + 2, h - 10) if tall else (MID_Y - 11, 22)
        box(ax, bx, by, bw, bh, text, COLORS[kind])
        if following:
            arrow(ax, (bx + bw, MID_Y), (following[0], MID_Y))


def draw_input(ax: Axes) -> None:
    """The input waveform and the noise added to it before the generators."""
    box(ax, 2, MID_Y - 6, 14, 12, "input x\nwaveform\n[B, 1, L]", COLORS["data"])
    ax.add_patch(Circle((26, MID_Y), 3, facecolor="white", edgecolor="black", linewidth=1.2))
    ax.text(26, MID_Y, "+", ha="center", va="center", fontsize=FONT + 6)
    ax.text(23, MID_Y + 4.5, "Gaussian noise\n(training only)", ha="center", va="bottom", fontsize=FONT)
    arrow(ax, (16, MID_Y), (23, MID_Y))


def draw_branch(ax: Axes, name: str, kernel: int, title: str) -> None:
    """Noisy input -> one generator -> its reconstruction -> D (target 1)."""
    middle = draw_generator(ax, f"{title}  (kernel {kernel})", kernel, GEN_ROWS[name])
    arrow(ax, (29, MID_Y), (32, MID_Y), (32, middle), (GEN_BLOCK_X[0], middle),
          label="x̃", label_at=(34.5, middle + 0.5))
    arrow(ax, (GEN_BLOCK_X[-1] + GEN_BLOCK_W, middle), (RECON_X, middle))
    box(ax, RECON_X, middle - 4, RECON_W, 8, f"{name}(x̃)\nreconstruction", COLORS["data"])
    arrow(ax, (RECON_X + RECON_W, middle), (D_BLOCKS[0][0], middle), label="target 1",
          label_at=((RECON_X + RECON_W + D_BLOCKS[0][0]) / 2, middle + 0.5))


def draw_real_path(ax: Axes) -> None:
    """The clean input, fed to D as the real example (target 0)."""
    centre = D_BLOCKS[0][0] + D_BLOCKS[0][1] / 2
    arrow(ax, (9, MID_Y - 6), (9, 12), (centre, 12), (centre, D_FRAME[1] + 2),
          label="clean input x (real, target 0)", label_at=(70, 12.6))


def draw_outputs(ax: Axes) -> None:
    """What D's output means, and the test-time anomaly score."""
    sigmoid_x, sigmoid_w = D_BLOCKS[-1][:2]
    arrow(ax, (sigmoid_x + sigmoid_w / 2, MID_Y - 11), (sigmoid_x + sigmoid_w / 2, 15))
    box(ax, 158, 5, 40, 10, "D(·) = P(input is a reconstruction)\n"
                            "real x → 0,  R(x̃) and Lo(x̃) → 1", COLORS["disc"])
    box(ax, 36, 1.5, 90, 8, "test time (no noise):  score = γ·(D(R(x)) + D(Lo(x))) + (1 − γ)·D(x)\n"
                            "averaged over a clip's windows; higher = more anomalous", COLORS["data"],
        fontweight="bold")


def draw(out_png: Path) -> None:
    """The whole diagram: data flow at training time, D's targets, and the test-time score."""
    fig, ax = plt.subplots(figsize=(20, 10))
    ax.set(xlim=(0, 200), ylim=(0, 100), aspect="equal")
    ax.axis("off")
    ax.text(2, 97, "GRLNet: global filter layer + regional / local generators + discriminator (our drawing)",
            fontsize=FONT + 4, fontweight="bold", va="top")
    draw_input(ax)
    for name, kernel, title in GENERATORS:
        draw_branch(ax, name, kernel, title)
    draw_discriminator(ax)
    draw_real_path(ax)
    draw_outputs(ax)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(out_png, "wb", "figure") as handle:
            fig.savefig(handle, format="png", dpi=150, bbox_inches="tight")
    finally:
        plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_png", nargs="?", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    draw(parser.parse_args().out_png)

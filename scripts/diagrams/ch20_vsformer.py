"""Chapter 20: VSFormer. Value tokens and shape tokens, a class-prior encoding, and prior-enhanced attention.

A series of C variables gives shape tokens (the distance and position of the best z-normalised match of each
class-specific motif, coloured by the motif's class) and value tokens (mean, std, min, max of each interval). The
encoding adds embeddings of the variable, the interval and the class prior kappa. The attention scores QK^T/sqrt d
receive a bias P_ij = Pi[kappa_i, kappa_j] that depends only on the two tokens' class priors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, op, proj, save, tensor, text  # noqa: E402

CLASS_COLORS = [COLORS["position"], COLORS["cache"], "#b5552f"]  # one colour per class prior; grey = value tokens
PRIORS = [0, 0, 1, 1, 2, 2, 3, 3, 3]  # six shape tokens (classes 0-2), three value tokens (prior 3)


def prior_color(kappa: int) -> str:
    return CLASS_COLORS[kappa] if kappa < 3 else COLORS["mask"]


def main() -> None:
    fig, ax = canvas(12.4, 4.7)
    text(ax, 0.2, 4.4, "VSFormer: value and shape tokens, a class-prior encoding, prior-enhanced attention", size=11)
    # the series: three variables
    t = np.linspace(0, 1, 60)
    rng = np.random.default_rng(0)
    for c, y in enumerate((3.35, 2.45, 1.55)):
        series = 0.18 * np.sin(2 * np.pi * (t * 1.5 + c / 3)) + 0.06 * rng.standard_normal(60)
        if c == 0:
            series[20:32] += np.linspace(0, 0.45, 12)
        if c == 1:
            series += 0.15
        ax.plot(0.3 + 1.6 * t, y + series, color=COLORS["output"], lw=1.0)
        text(ax, 0.05, y, f"$x_{c}$", va="center", size=9)
    ax.add_patch(Rectangle((0.3 + 1.6 * 20 / 60, 3.12), 1.6 * 12 / 60, 0.72, fill=False, ec=CLASS_COLORS[0], lw=1.4))
    text(ax, 1.1, 0.85, "series (C × T)", ha="center", size=9, color="output")
    # two kinds of token
    op(ax, 3.35, 3.3, "motif match", w=1.4)
    op(ax, 3.35, 1.6, "interval stats", w=1.5)
    arrow(ax, (2.0, 3.0), (2.6, 3.25))
    arrow(ax, (2.0, 1.9), (2.55, 1.65))
    text(ax, 3.35, 2.85, r"min$_t$ z-distance, argmin", ha="center", size=8.5, color="output")
    text(ax, 3.35, 1.15, "mean, std, min, max", ha="center", size=8.5, color="output")
    for i in range(6):
        tensor(ax, 4.55 + 0.2 * i, 3.3, 1, 1, prior_color(PRIORS[i]), cell=0.17)
    for i in range(3):
        tensor(ax, 4.75 + 0.2 * i, 1.6, 1, 1, prior_color(3), cell=0.17)
    text(ax, 5.05, 3.55, "shape tokens", ha="center", size=9)
    text(ax, 4.95, 1.85, "value tokens", ha="center", size=9)
    arrow(ax, (4.1, 3.3), (4.42, 3.3))
    arrow(ax, (4.15, 1.6), (4.62, 1.6))
    # encoding
    proj(ax, 7.0, 2.45, "encode: features\n+ variable + interval\n+ class prior κ", color="position", w=1.9, h=0.95)
    arrow(ax, (5.75, 3.3), (6.1, 2.75))
    arrow(ax, (5.3, 1.6), (6.1, 2.15))
    # scores + prior bias
    n = len(PRIORS)
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.1, 0.9, (n, n))
    tensor(ax, 9.05, 3.35, n, n, "weight", cell=0.1, values=scores, label=r"$QK^\top/\sqrt{d}$")
    bias = np.array([[0.9 if PRIORS[i] == PRIORS[j] else 0.2 for j in range(n)] for i in range(n)])
    tensor(ax, 9.05, 1.55, n, n, "weight", cell=0.1, values=bias, label=r"$P_{ij} = \Pi[\kappa_i, \kappa_j]$")
    arrow(ax, (7.95, 2.7), (8.55, 3.25))
    arrow(ax, (7.95, 2.2), (8.55, 1.6), color="mask", dashed=True)
    text(ax, 7.75, 1.3, "priors κ", size=9, color="output")
    op(ax, 10.05, 2.45, "+")
    arrow(ax, (9.55, 3.3), (9.87, 2.6))
    arrow(ax, (9.55, 1.6), (9.87, 2.3))
    op(ax, 10.95, 2.45, "softmax ·V", w=1.2)
    arrow(ax, (10.28, 2.45), (10.35, 2.45))
    proj(ax, 11.55, 1.25, "mean → class", color="output", w=1.35)
    arrow(ax, (10.95, 2.22), (11.4, 1.5))
    save(fig, "20-vsformer")


if __name__ == "__main__":
    main()

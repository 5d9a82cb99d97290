"""Chapter 15: four ways to attend in a feature map of T positions and D channels.

Panels, left to right: squeeze-and-excitation (a mean per channel, a bottleneck, a sigmoid gate per channel); ULSAM
(the channels split into subspaces, one softmax map over the positions per subspace); PAM (a T x T attention among
positions, narrow queries and keys); CAM (a D x D attention among channels, softmax(-X^T X), no projections).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import COLORS, arrow, canvas, op, proj, save, tensor, text  # noqa: E402

T, D = 6, 6  # the drawn feature map: 6 positions (rows) by 6 channels (columns)
CELL = 0.16
TOP = 3.55  # y of the panel titles
X_Y = 2.75  # y of the centre of the feature map
SUBSPACE_COLORS = [COLORS["value"], "#7fc79d"]


def feature_map(ax, x: float, colors=None) -> None:
    """X (T x D): rows are positions, columns channels; ``colors`` per column (subspaces)."""
    if colors is None:
        tensor(ax, x, X_Y, T, D, "value", cell=CELL)
    else:
        for c in range(D):
            tensor(ax, x - (D - 1) * CELL / 2 + c * CELL, X_Y, T, 1, colors[c], cell=CELL)
    text(ax, x - D * CELL / 2 - 0.08, X_Y, "$T$", ha="right", va="center", size=10)
    text(ax, x, X_Y + T * CELL / 2 + 0.05, "$D$ channels", ha="center", va="bottom", size=9)


def title(ax, x: float, line1: str, line2: str) -> None:
    text(ax, x, TOP + 0.28, line1, ha="center", va="bottom", size=12)
    text(ax, x, TOP + 0.02, line2, ha="center", va="bottom", size=9)


def squeeze_excitation(ax, x: float) -> None:
    title(ax, x, "Squeeze-and-excitation", "a gate per channel")
    feature_map(ax, x)
    bottom = X_Y - T * CELL / 2
    arrow(ax, (x, bottom - 0.02), (x, 1.95))
    op(ax, x, 1.75, "mean over $T$", w=1.5)
    arrow(ax, (x, 1.53), (x, 1.3))
    proj(ax, x, 1.08, r"$W_1$, ReLU, $W_2$, sigmoid", color="weight", w=2.3)
    arrow(ax, (x, 0.85), (x, 0.66))
    tensor(ax, x, 0.52, 1, D, "weight", cell=CELL, values=[[0.9, 0.2, 0.6, 1.0, 0.35, 0.7]])
    text(ax, x + D * CELL / 2 + 0.1, 0.52, "$z \\in (0,1)^D$", va="center", size=9)
    text(ax, x, 0.25, r"$Y = X\,\mathrm{diag}(z)$", ha="center", va="top", size=10)


def ulsam(ax, x: float) -> None:
    title(ax, x, "ULSAM", "a spatial map per subspace")
    colors = [SUBSPACE_COLORS[0]] * 3 + [SUBSPACE_COLORS[1]] * 3
    feature_map(ax, x, colors)
    bottom = X_Y - T * CELL / 2
    for n, dx in enumerate((-0.55, 0.55)):
        start_x = x + (-1.5 + 3 * n) * CELL
        arrow(ax, (start_x, bottom - 0.02), (x + dx, 1.98))
        proj(ax, x + dx, 1.75, f"$X_{n + 1}$: convs", color=SUBSPACE_COLORS[n], w=0.95)
        op(ax, x + dx, 1.22, "softmax$_T$", w=0.95)
        arrow(ax, (x + dx, 1.02), (x + dx, 0.9))
        values = [[v] for v in ((0.1, 0.2, 0.9, 0.5, 0.1, 0.2) if n == 0 else (0.7, 0.3, 0.1, 0.1, 0.2, 0.9))]
        tensor(ax, x + dx, 0.62, T, 1, "weight", cell=0.085, values=values)
        text(ax, x + dx + 0.12, 0.62, f"$a_{n + 1}$", va="center", size=9)
    text(ax, x, 0.25, r"$Y_n = a_n \odot X_n + X_n$", ha="center", va="top", size=10)


def pam(ax, x: float) -> None:
    title(ax, x, "PAM", "attention among positions")
    feature_map(ax, x)
    bottom = X_Y - T * CELL / 2
    for dx, label, color in ((-0.62, "$W_Q$", "query"), (0.0, "$W_K$", "key"), (0.62, "$W_V$", "value")):
        arrow(ax, (x, bottom - 0.02), (x + dx, 1.98))
        proj(ax, x + dx, 1.78, label, color=color, w=0.5, h=0.38)
    text(ax, x - 0.62, 1.52, "$D/8$", ha="center", va="top", size=8)
    text(ax, x, 1.52, "$D/8$", ha="center", va="top", size=8)
    arrow(ax, (x - 0.62, 1.3), (x - 0.2, 1.12))  # queries and keys form the scores
    arrow(ax, (x, 1.3), (x - 0.05, 1.12))
    arrow(ax, (x + 0.62, 1.59), (x + 0.36, 0.78), color="value")  # the values are weighted by A
    text(ax, x + 0.55, 0.74, "$AV$", ha="left", va="top", size=9)
    values = [[1.0 if i == j else 0.15 + 0.1 * ((i + 2 * j) % 3) for j in range(T)] for i in range(T)]
    tensor(ax, x, 0.78, T, T, "weight", cell=0.1, values=values)
    text(ax, x - 0.38, 0.78, r"$A$", ha="right", va="center", size=10)
    text(ax, x - 0.38, 0.6, r"$T \times T$", ha="right", va="center", size=9)
    text(ax, x, 0.25, r"$Y = \gamma\,\mathrm{softmax}(QK^\top)V + X$", ha="center", va="top", size=10)


def cam(ax, x: float) -> None:
    title(ax, x, "CAM (and channel tokens)", "attention among channels")
    feature_map(ax, x)
    bottom = X_Y - T * CELL / 2
    arrow(ax, (x, bottom - 0.02), (x, 1.95))
    op(ax, x, 1.75, r"$S = X^\top X$", w=1.3)
    arrow(ax, (x, 1.53), (x, 1.37))
    op(ax, x, 1.17, r"softmax$(-S)$", w=1.3)
    arrow(ax, (x, 0.95), (x, 0.82))
    values = [[0.15 if i == j else 0.25 + 0.2 * ((i * 5 + j) % 4) for j in range(D)] for i in range(D)]
    tensor(ax, x, 0.55, D, D, "weight", cell=0.075, values=values)
    text(ax, x + 0.3, 0.55, r"$D \times D$", ha="left", va="center", size=9)
    text(ax, x, 0.25, r"$Y = \gamma\,XA^\top + X$", ha="center", va="top", size=10)


def main() -> None:
    fig, ax = canvas(12.4, 4.2)
    for n, draw in enumerate((squeeze_excitation, ulsam, pam, cam)):
        draw(ax, 1.55 + n * 3.1)
    for n in range(1, 4):
        ax.plot([n * 3.1, n * 3.1], [0.1, 4.1], color=COLORS["light"], linewidth=1.5)
    save(fig, "15-channel")


if __name__ == "__main__":
    main()

"""Chapter 14: ConViT's gated positional self-attention (GPSA).

Patch tokens X (a 5 x 5 grid) go two ways. Content: W_Q and W_K give the content scores, a softmax over keys (purple).
Position: the relative offsets r_ij = (dx, dy, dx^2 + dy^2) (teal) go through the head's positional projection v_h;
at the local initialisation the positional softmax of head h is a bump at the query plus the head's offset Delta_h
(drawn on the grid for one query, the query outlined in blue). A sigmoid gate sigma(lambda_h) mixes the two
softmaxes; the mixed weights multiply the values X W_V, then W_O. Beside it, the nine heads of a 3 x 3 kernel: each
head's bump sits at one offset of the kernel.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, op, proj, save, tensor, text  # noqa: E402

SIDE = 5


def bump(offset: tuple[int, int], query: tuple[int, int] = (2, 2), alpha: float = 1.2) -> np.ndarray:
    """softmax(-alpha |delta - Delta|^2) over a SIDE x SIDE grid for one query, rows top to bottom."""
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    d2 = (cols - query[1] - offset[0]) ** 2 + (rows - query[0] - offset[1]) ** 2
    w = np.exp(-alpha * d2)
    return w / w.max()


def outline(ax, x: float, y: float, cell: float, row: int, col: int, color: str = "query") -> None:
    """Outline cell (row, col) of a SIDE x SIDE tensor centred at (x, y)."""
    x0, y0 = x - SIDE * cell / 2, y - SIDE * cell / 2
    ax.add_patch(
        Rectangle(
            (x0 + col * cell, y0 + (SIDE - 1 - row) * cell),
            cell,
            cell,
            fill=False,
            edgecolor=COLORS[color],
            linewidth=2.0,
        )
    )


def main() -> None:
    fig, ax = canvas(11.6, 5.2)
    cell = 0.17
    # input tokens
    tensor(ax, 0.85, 2.6, SIDE, SIDE, "output", label="patch tokens $X$", cell=cell, values=np.full((SIDE, SIDE), 0.35))
    text(ax, 0.85, 2.6 - SIDE * cell / 2 - 0.12, "grid of $T$ tokens", ha="center", va="top", size=9, color="output")
    # content branch (top)
    y_c, y_p, y_v = 4.25, 1.35, 2.6
    proj(ax, 2.45, y_c + 0.3, "$W_Q$", "query", w=0.7)
    proj(ax, 2.45, y_c - 0.3, "$W_K$", "key", w=0.7)
    arrow(ax, (1.35, 3.0), (2.08, y_c + 0.25))
    arrow(ax, (1.35, 2.95), (2.08, y_c - 0.3))
    op(ax, 4.05, y_c, "softmax", w=1.2)
    arrow(ax, (2.82, y_c + 0.3), (3.45, y_c + 0.05))
    arrow(ax, (2.82, y_c - 0.3), (3.45, y_c - 0.05))
    text(
        ax,
        4.35,
        y_c + 0.4,
        "content: $q_h k_h^\\top/\\sqrt{d}$, what the key shows",
        ha="center",
        va="bottom",
        size=9,
        color="weight",
    )
    # positional branch (bottom)
    tensor(ax, 2.1, y_p, 3, 3, "position", cell=0.16)
    text(
        ax,
        2.1,
        y_p - 0.4,
        "$r_{ij}=(\\delta_x, \\delta_y, |\\delta|^2)$",
        ha="center",
        va="top",
        size=9,
        color="position",
    )
    proj(ax, 3.3, y_p, "$v_h$", "position", w=0.6)
    arrow(ax, (2.4, y_p), (2.98, y_p))
    op(ax, 4.35, y_p, "softmax", w=1.0)
    arrow(ax, (3.62, y_p), (3.83, y_p))
    tensor(ax, 5.55, y_p, SIDE, SIDE, "weight", cell=cell, values=bump((1, 0)))
    outline(ax, 5.55, y_p, cell, 2, 2)
    arrow(ax, (4.87, y_p), (5.1, y_p))
    text(
        ax,
        5.55,
        y_p - SIDE * cell / 2 - 0.1,
        "peak at query $+\\Delta_h$",
        ha="center",
        va="top",
        size=9,
        color="weight",
    )
    text(ax, 4.35, y_p + 0.35, "position: where the key is", ha="center", va="bottom", size=9, color="position")
    # gate
    op(ax, 6.75, y_v, "mix", w=0.7)
    arrow(ax, (4.68, y_c - 0.12), (6.55, y_v + 0.2))
    arrow(ax, (6.0, y_p + 0.2), (6.55, y_v - 0.2))
    text(ax, 6.02, y_c - 0.55, "$1-\\sigma(\\lambda_h)$", ha="center", va="center", size=10, color="weight")
    text(ax, 6.55, y_p + 0.22, "$\\sigma(\\lambda_h)$", ha="left", va="center", size=10, color="weight")
    # values and output
    proj(ax, 6.75, 4.45, "$W_V$", "value", w=0.7)
    arrow(ax, (1.35, 3.1), (6.38, 4.5), rad=-0.12)
    op(ax, 7.75, y_v, "×")
    arrow(ax, (7.1, y_v), (7.52, y_v))
    arrow(ax, (6.75, 4.22), (7.62, y_v + 0.2))
    proj(ax, 8.55, y_v, "$W_O$", "output", w=0.65)
    arrow(ax, (7.98, y_v), (8.22, y_v))
    # the nine heads of a 3 x 3 kernel
    x0, y0, small = 9.2, 1.1, 0.11
    text(ax, 10.65, 4.0, "9 heads at init:\na $3\\times3$ kernel", ha="center", va="bottom", size=10)
    for dy, dx in [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]:
        cx = x0 + 0.5 + (dx + 1) * 0.72
        cy = y0 + 2.3 - (dy + 1) * 0.72
        tensor(ax, cx, cy, SIDE, SIDE, "weight", cell=small, values=bump((dx, dy), alpha=2.0))
        outline(ax, cx, cy, small, 2, 2)
    text(ax, 10.65, y0 - 0.05, "one bump per offset $\\Delta_h$", ha="center", va="top", size=9, color="weight")
    save(fig, "14-gpsa")


if __name__ == "__main__":
    main()

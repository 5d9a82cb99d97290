"""Chapter 17: reading a frozen encoder with attention: attentive probing and efficient probing.

Left: one learned query (blue) with W_Q, W_K, W_V and W_O cross-attends to the frozen tokens (orange). Right: n_q
projection-free queries score the raw tokens (purple weights, one row per query); one value projection (green) is
cut into n_q slices, query m reads only slice m, and the slices are concatenated.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import COLORS, arrow, canvas, op, proj, save, tensor, text  # noqa: E402

ROWS = [
    [0.9, 0.2, 0.1, 0.3, 0.1, 0.2],
    [0.1, 0.3, 0.9, 0.2, 0.1, 0.1],
    [0.2, 0.1, 0.2, 0.2, 0.8, 0.6],
    [0.5, 0.1, 0.1, 0.1, 0.2, 0.9],
]
SLICE = ["#2e9e5b", "#5cb882", "#8fd0a8", "#bfe6cd"]


def main() -> None:
    fig, ax = canvas(12.6, 4.6)
    text(ax, 0.2, 4.25, "Attentive probing", size=11.5)
    tensor(ax, 0.9, 2.2, 6, 1, "key", cell=0.3, shape="frozen $X$")
    tensor(ax, 0.9, 3.5, 1, 1, "query", cell=0.3)
    text(ax, 0.9, 3.75, "learned query", size=9, color="query", ha="center")
    proj(ax, 2.6, 3.1, "$W_Q$", color="query", w=0.7, h=0.4)
    proj(ax, 2.6, 2.35, "$W_K$", color="key", w=0.7, h=0.4)
    proj(ax, 2.6, 1.6, "$W_V$", color="value", w=0.7, h=0.4)
    arrow(ax, (1.05, 3.5), (2.25, 3.15), color="query")
    arrow(ax, (1.1, 2.35), (2.25, 2.35), color="key")
    arrow(ax, (1.1, 1.75), (2.25, 1.6), color="key")
    tensor(ax, 3.9, 2.7, 1, 6, "weight", cell=0.22, values=[ROWS[0]])
    text(ax, 3.9, 3.0, "softmax", ha="center", size=9, color="weight")
    arrow(ax, (2.95, 3.1), (3.2, 2.8))
    arrow(ax, (2.95, 2.35), (3.2, 2.6))
    op(ax, 3.9, 1.6, "×", r=0.2)
    arrow(ax, (2.95, 1.6), (3.68, 1.6), color="value")
    arrow(ax, (3.9, 2.55), (3.9, 1.82))
    proj(ax, 5.0, 1.6, "$W_O$", color="output", w=0.7, h=0.4)
    arrow(ax, (4.12, 1.6), (4.65, 1.6))
    arrow(ax, (5.35, 1.6), (5.75, 1.6))
    tensor(ax, 5.95, 1.6, 1, 1, "output", cell=0.3)
    text(ax, 5.2, 0.75, "$\\approx 4D^2$ parameters", ha="center", size=9, color="output")

    ax.plot([6.55, 6.55], [0.3, 4.3], color=COLORS["light"], lw=2)
    text(ax, 6.8, 4.25, "Efficient probing: no $W_Q$, $W_K$, $W_O$; concatenate", size=11.5)
    tensor(ax, 7.3, 2.4, 6, 1, "key", cell=0.3, shape="frozen $X$")
    tensor(ax, 8.5, 3.6, 1, 4, "query", cell=0.25)
    text(ax, 8.5, 3.9, "$n_q$ queries", ha="center", size=9, color="query")
    tensor(ax, 9.5, 2.55, 4, 6, "weight", cell=0.2, values=ROWS)
    text(ax, 9.5, 1.95, "$A$: $n_q\\times T$", ha="center", size=9, color="weight")
    arrow(ax, (7.5, 2.6), (8.85, 2.6), color="key")
    arrow(ax, (8.5, 3.42), (9.1, 3.0), color="query")
    proj(ax, 8.1, 1.0, "$W_V$", color="value", w=0.7, h=0.4)
    arrow(ax, (7.45, 1.65), (7.8, 1.15), color="key")
    for m, color in enumerate(SLICE):
        tensor(ax, 9.0 + m * 0.3, 1.0, 1, 1, color, cell=0.28)
    text(ax, 9.45, 0.55, "$V$ in $n_q$ slices", ha="center", size=9, color="value")
    arrow(ax, (8.45, 1.0), (8.82, 1.0), color="value")
    arrow(ax, (10.15, 2.55), (10.75, 1.75))
    arrow(ax, (10.2, 1.0), (10.75, 1.35), color="value")
    op(ax, 11.0, 1.55, "×", r=0.2)
    text(ax, 11.0, 2.0, "row $m$ · slice $m$", ha="center", size=8.5)
    for m, color in enumerate(SLICE):
        tensor(ax, 11.3 + m * 0.22, 0.85, 1, 1, color, cell=0.2)
    arrow(ax, (11.1, 1.35), (11.4, 1.0))
    text(ax, 11.63, 0.45, "concat: $D/\\kappa$", ha="center", size=9, color="output")
    save(fig, "17-probing")


if __name__ == "__main__":
    main()

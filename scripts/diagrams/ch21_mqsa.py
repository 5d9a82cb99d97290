"""Chapter 21: MQSA. A short query (the current item) and an L-query (the mean of the last w items) attend causally
over the same keys and values; each branch is scored against the item table, and the scores are mixed with alpha.

A session of items x_1 .. x_T (bottom) feeds both branches. The short branch's query at step t is LN(x_t); the long
branch's is LN(mean of x_(t-w+1) .. x_t). Keys and values come from the single items in both. The two states are
multiplied by the item table E^T and mixed: z_t = alpha h_short E^T + (1 - alpha) h_long E^T.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, op, proj, save, tensor, text  # noqa: E402

T, WINDOW, STEP = 7, 3, 6  # seven items; the query step t = 6 (0-based) averages items 4, 5, 6


def main() -> None:
    fig, ax = canvas(12.0, 5.0)
    text(ax, 0.2, 4.7, "MQSA: a short and a long query over one session, scores mixed", size=11)
    # the session
    xs = [0.8 + 0.55 * i for i in range(T)]
    for i, x in enumerate(xs):
        tensor(ax, x, 0.75, 1, 1, "output", cell=0.34)
        text(ax, x, 0.3, f"$x_{i + 1}$", ha="center", size=9)
    text(ax, 0.2, 1.15, "session (items embedded: $\\sqrt{D}E_{i_t} + p_t$)", size=9, color="output")
    ax.add_patch(
        Rectangle((xs[STEP - WINDOW + 1] - 0.24, 0.5), 0.55 * (WINDOW - 1) + 0.48, 0.5, fill=False, ec=COLORS["query"])
    )
    text(ax, xs[STEP] + 0.4, 0.72, f"window\n$w = {WINDOW}$", size=8.5, color="query", va="center")
    # short branch (top) and long branch (middle)
    for y, label, src, name in ((3.65, "LN($x_t$)", (xs[STEP], 0.95), "short"), (2.35, "LN(mean)", None, "long")):
        proj(ax, 5.4, y + 0.35, "$W_Q$", color="query", w=0.7, h=0.38)
        proj(ax, 5.4, y - 0.3, "$W_K$, $W_V$", color="key", w=1.0, h=0.38)
        op(ax, 4.35, y + 0.35, label, w=1.15)
        op(ax, 7.0, y, "causal\nsoftmax · V", w=1.45, h=0.7)
        arrow(ax, (4.95, y + 0.35), (5.05, y + 0.35))
        arrow(ax, (5.75, y + 0.35), (6.27, y + 0.12), color="query")
        arrow(ax, (5.9, y - 0.3), (6.27, y - 0.12), color="key")
        proj(ax, 8.55, y, "LN, FFN\n(+ query)", w=1.1, h=0.6)
        arrow(ax, (7.73, y), (7.98, y))
        text(ax, 9.2, y + 0.38, f"$h^{{{'s' if name == 'short' else chr(0x2113)}}}_t$", size=10)
        proj(ax, 9.95, y, "$\\cdot\\,E^\\top$", color="value", w=0.7, h=0.4)
        arrow(ax, (9.12, y), (9.58, y))
        text(ax, 3.3, y + 0.75, f"{name} query", size=9.5, color="query")
        if src is not None:
            arrow(ax, src, (3.8, y + 0.2), color="query", rad=-0.2)
    op(ax, 3.0, 1.75, "mean", w=0.7)
    arrow(ax, (xs[STEP - 1], 1.0), (3.2, 1.62), color="query", rad=0.15)
    arrow(ax, (3.0, 1.97), (3.9, 2.55), color="query")
    # keys and values from the single items, to both branches
    arrow(ax, (xs[3], 1.0), (4.9, 3.3), color="key", dashed=True)
    arrow(ax, (xs[4], 1.0), (4.9, 2.0), color="key", dashed=True)
    # weights hint
    tri = np.tril(np.ones((4, 4))) * np.linspace(0.4, 1.0, 4)[None, :]
    tensor(ax, 7.0, 4.45, 4, 4, "weight", cell=0.1, values=tri)
    text(ax, 7.3, 4.35, "causal weights", size=8.5, color="weight")
    # mix
    op(ax, 11.2, 3.0, "mix", w=0.7)
    arrow(ax, (10.3, 3.65), (11.05, 3.2))
    arrow(ax, (10.3, 2.35), (11.05, 2.8))
    text(ax, 10.45, 3.85, "$\\alpha$", size=10)
    text(ax, 10.35, 2.0, "$1-\\alpha$", size=10)
    text(ax, 10.6, 1.45, "$z_t$: scores\nof the next item", size=9, color="output")
    arrow(ax, (11.2, 2.78), (11.2, 2.05))
    save(fig, "21-mqsa")


if __name__ == "__main__":
    main()

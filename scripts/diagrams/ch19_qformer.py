"""Chapter 19: Granite-speech's windowed query-transformer projector.

A row of T = 30 frames (green: they give the keys and values) is cut into two windows of w = 15. The same m = 3
learned queries (blue) are normalised, attend among themselves, then attend to their window's frames (a 3 x 15
purple weight grid with its weight on a few frames), and pass a feed-forward network; each window gives 3 output
vectors (grey), which are concatenated in window order and projected by W_out: T frames become T / 5 vectors.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import arrow, canvas, op, proj, save, tensor, text  # noqa: E402

# a 3 x 15 weight pattern: each query concentrates on a burst, as the trained reader of the chapter does
PEAKS = (2, 7, 12)
WEIGHTS = [[0.95 if j == p else (0.45 if abs(j - p) == 1 else 0.05) for j in range(15)] for p in PEAKS]


def main() -> None:
    fig, ax = canvas(11.6, 5.6)
    text(ax, 0.2, 5.25, "Windowed query transformer: the same m learned queries read every window", size=11.5)
    cell = 0.16
    # the frames, two windows of w = 15
    x_left = 0.6
    for b in range(2):
        xc = x_left + 1.25 + b * 2.6
        tensor(ax, xc, 4.5, 1, 15, "value", cell=cell)
        text(ax, xc, 4.72, f"window {b + 1}: $X^{{({b + 1})}}$, $w$ frames", ha="center", size=9, color="value")
    text(ax, 0.2, 4.45, "$X$", size=11, color="value")
    text(ax, 6.35, 4.45, r"... $n = \lceil T/w \rceil$ windows", size=9, color="output")
    # detail of window 1
    xc = x_left + 1.25
    tensor(ax, 0.55, 3.35, 3, 1, "query", cell=0.2, label="$P$")
    text(ax, 0.55, 2.6, "$m$ learned\nqueries", ha="center", size=8.5, color="query")
    arrow(ax, (0.72, 3.35), (1.0, 3.35), color="query")
    op(ax, 1.25, 3.35, "LN", w=0.45)
    arrow(ax, (1.5, 3.35), (1.75, 3.35), color="query")
    proj(ax, 2.3, 3.35, "self-attn", color="query", w=1.0)
    arrow(ax, (2.82, 3.35), (3.1, 3.35), color="query")
    proj(ax, 3.75, 3.35, "cross-attn", color="weight", w=1.2)
    arrow(ax, (xc, 4.38), (3.55, 3.6), color="key")
    text(ax, 2.95, 4.08, "keys, values", size=8.5, color="key")
    tensor(ax, 3.75, 2.35, 3, 15, "weight", cell=cell, values=WEIGHTS)
    text(ax, 3.75, 1.8, r"$A^{(1)}$: $m\times w$ weights", ha="center", size=9, color="weight")
    arrow(ax, (3.75, 3.1), (3.75, 2.62), color="weight")
    arrow(ax, (4.38, 3.35), (4.75, 3.35), color="query")
    proj(ax, 5.2, 3.35, "FFN", color="output", w=0.7)
    text(
        ax,
        3.2,
        0.95,
        "post-norm layer (BERT layout), $L$ times:\nadd & LN after each block",
        ha="center",
        size=8.5,
        color="output",
    )
    arrow(ax, (5.56, 3.35), (5.95, 3.35))
    tensor(ax, 6.2, 3.35, 3, 1, "output", cell=0.2)
    # window 2, same weights
    tensor(ax, 6.75, 3.35, 3, 1, "output", cell=0.2)
    text(ax, 6.475, 2.72, "$Z^{(1)}_L$   $Z^{(2)}_L$", ha="center", size=10)
    text(ax, 6.5, 2.45, "window 2:\nsame queries,\nsame weights", ha="center", va="top", size=8.5, color="output")
    arrow(ax, (x_left + 3.85, 4.38), (6.9, 3.7), rad=-0.25)
    # concatenate and project
    arrow(ax, (7.0, 3.35), (7.45, 3.35))
    op(ax, 7.95, 3.35, "concat", w=0.85)
    arrow(ax, (8.4, 3.35), (8.75, 3.35))
    proj(ax, 9.2, 3.35, "$W_{out}$", color="output", w=0.7)
    arrow(ax, (9.57, 3.35), (9.95, 3.35))
    tensor(ax, 10.45, 3.35, 6, 1, "output", cell=0.2, label="$Y$")
    text(ax, 10.45, 2.3, "$nm \\approx T/r$\nvectors, in order", ha="center", va="top", size=9, color="output")
    text(
        ax,
        8.2,
        1.2,
        "Granite-speech: $w = 15$, $r = 5$, $m = 3$\nevery 15 frames become 3 vectors",
        ha="center",
        size=9,
        color="output",
    )
    save(fig, "19-qformer")


if __name__ == "__main__":
    main()

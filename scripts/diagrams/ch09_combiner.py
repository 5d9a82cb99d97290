"""Chapter 09: Combiner-Fixed, direct attention in the own segment and one summary per other segment.

A sequence of T = 16 keys in four segments of w = 4. The query (blue) belongs to segment 1. It scores the four keys
of its segment directly; each other segment r is max-pooled into one summary key (orange, outlined). One softmax
(purple) normalises the direct scores and the summary scores together. Each summary's weight is spread over its
segment by pi_r, a softmax shared by every query (light purple), which turns the segment's values into one summary
value (green), computed once per segment.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import FancyBboxPatch, Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, op, save, text  # noqa: E402

W, SEGMENTS, CELL, GAP = 4, 4, 0.36, 0.42
OWN = 1  # the query's segment


def cell(ax, x: float, y: float, color: str, alpha: float = 0.85, outline: bool = False) -> None:
    """One vector as a square cell with its lower-left corner at (x, y)."""
    ax.add_patch(
        Rectangle(
            (x, y),
            CELL,
            CELL,
            facecolor=COLORS.get(color, color),
            alpha=alpha,
            edgecolor=COLORS["text"] if outline else "white",
            linewidth=1.4 if outline else 0.8,
        )
    )


def segment_x(r: int) -> float:
    return 0.9 + r * (W * CELL + GAP)


def main() -> None:
    fig, ax = canvas(10.2, 5.3)
    y_keys, y_sum, y_soft, y_val = 4.0, 3.05, 2.2, 0.45
    text(ax, 0.15, y_keys + CELL / 2, "keys", va="center", size=10)
    for r in range(SEGMENTS):
        x0 = segment_x(r)
        for j in range(W):
            cell(ax, x0 + j * CELL, y_keys, "key", 0.85 if r == OWN else 0.45)
        middle = x0 + W * CELL / 2
        text(ax, middle, y_keys + CELL + 0.08, f"segment {r}", ha="center", va="bottom", size=9, color="output")
        if r == OWN:
            continue
        op(ax, middle, y_sum + 0.55, "max", w=0.62, h=0.3)
        arrow(ax, (middle, y_keys - 0.02), (middle, y_sum + 0.71))
        cell(ax, middle - CELL / 2, y_sum - 0.05, "key", 0.85, outline=True)
        text(ax, middle + CELL / 2 + 0.08, y_sum + 0.13, rf"$\bar k_{r}$", va="center", size=10)
    # the query above its own segment
    q_x = segment_x(OWN) + 1.5 * CELL
    cell(ax, q_x, y_keys + 0.62, "query")
    text(ax, q_x + CELL + 0.08, y_keys + 0.62 + CELL / 2, "query $q_i$", va="center", size=10, color="query")
    # the joint softmax: w direct weights, then one per other segment
    x_soft = 0.9
    text(ax, 0.15, y_soft + CELL / 2, "$p$", va="center", size=11, color="weight")
    values = [0.9, 0.5, 0.7, 0.3, 0.6, 0.45, 0.25]
    for n, a in enumerate(values):
        cell(ax, x_soft + n * CELL, y_soft, "weight", 0.15 + 0.85 * a)
    text(
        ax,
        x_soft + len(values) * CELL / 2,
        y_soft - 0.12,
        "one softmax over $w$ direct keys\nand $T/w - 1$ summaries",
        ha="center",
        va="top",
        size=9,
    )
    ax.add_patch(
        FancyBboxPatch(
            (x_soft - 0.04, y_soft - 0.04),
            W * CELL + 0.08,
            CELL + 0.08,
            boxstyle="round,pad=0.0,rounding_size=0.05",
            facecolor="none",
            edgecolor=COLORS["key"],
            linewidth=1.2,
        )
    )
    arrow(ax, (segment_x(OWN) + W * CELL / 2, y_keys - 0.02), (x_soft + W * CELL / 2, y_soft + CELL + 0.08), rad=0.2)
    for m, r in enumerate(r for r in range(SEGMENTS) if r != OWN):
        middle = segment_x(r) + W * CELL / 2
        arrow(ax, (middle - 0.05, y_sum - 0.07), (x_soft + (W + m + 0.5) * CELL, y_soft + CELL + 0.06), dashed=True)
    # summary values of the other segments: pi_r spreads the weight; v_bar_r = sum_j pi_r(j) v_j
    for r in range(SEGMENTS):
        if r == OWN:
            continue
        x0 = segment_x(r)
        for j, a in enumerate((0.5, 0.9, 0.3, 0.6)):
            cell(ax, x0 + j * CELL, y_val + 0.55, "weight", 0.1 + 0.6 * a)
        text(ax, x0 - 0.08, y_val + 0.55 + CELL / 2, rf"$\pi_{r}$", ha="right", va="center", size=10, color="weight")
        middle = x0 + W * CELL / 2
        arrow(ax, (middle, y_val + 0.53), (middle, y_val + 0.02))
        cell(ax, middle - CELL / 2, y_val - 0.35, "value", 0.85, outline=True)
        text(
            ax, middle + CELL / 2 + 0.08, y_val - 0.35 + CELL / 2, rf"$\bar v_{r}$", va="center", size=10, color="value"
        )
    text(
        ax,
        5.1,
        y_soft + 0.05,
        r"$\pi_r(j) = \mathrm{softmax}_{j \in r}(\bar q_r k_j^\top/\sqrt{d})$, the same for every query;"
        "\n"
        r"$\bar v_r = \sum_j \pi_r(j)\, v_j$ is computed once per segment",
        va="center",
        size=9.5,
    )
    text(
        ax,
        5.1,
        y_soft - 0.6,
        r"$o_i = \sum_{j \in \mathrm{own}} p_{ij}\, v_j + \sum_{r} p_{ir}\, \bar v_r$",
        va="center",
        size=11,
        color="output",
    )
    save(fig, "09-combiner")


if __name__ == "__main__":
    main()

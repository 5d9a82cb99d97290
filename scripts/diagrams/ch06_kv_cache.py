"""Chapter 06: one decoding step with a KV cache.

The new token x_t is projected once per layer; its key and value rows are appended to that layer's cache
(gold frame), and its single query reads every cached row: t scores, t weights, one output row. Below, each of
the L layers owns such a cache, and every step appends one row to each.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import FancyBboxPatch, Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, op, proj, save, tensor, text  # noqa: E402

ROWS, COLS, CELL = 6, 4, 0.2  # t = 6 cached positions (the last one new), head width d = 4


def cache_grid(ax, x: float, y_top: float, color: str, name: str) -> tuple[float, float]:
    """A cache of ROWS rows (the last one the new row, outlined); returns the centre of its new row."""
    x0 = x - COLS * CELL / 2
    for i in range(ROWS):
        new = i == ROWS - 1
        for j in range(COLS):
            ax.add_patch(
                Rectangle(
                    (x0 + j * CELL, y_top - (i + 1) * CELL),
                    CELL,
                    CELL,
                    facecolor=COLORS[color],
                    alpha=0.95 if new else 0.45,
                    edgecolor="white",
                    linewidth=0.8,
                )
            )
    ax.add_patch(
        Rectangle(
            (x0, y_top - ROWS * CELL),
            COLS * CELL,
            CELL,
            facecolor="none",
            edgecolor=COLORS["text"],
            linewidth=1.6,
            linestyle="--",
        )
    )
    ax.add_patch(
        FancyBboxPatch(
            (x0 - 0.08, y_top - ROWS * CELL - 0.08),
            COLS * CELL + 0.16,
            ROWS * CELL + 0.16,
            boxstyle="round,pad=0.02,rounding_size=0.06",
            facecolor="none",
            edgecolor=COLORS["cache"],
            linewidth=2.2,
        )
    )
    text(ax, x, y_top + 0.17, name, ha="center", va="bottom", size=10)
    text(ax, x0 - 0.2, y_top - ROWS * CELL / 2, "t rows", ha="right", va="center", size=9, color="output", rotation=90)
    return x, y_top - (ROWS - 0.5) * CELL


def main() -> None:
    fig, ax = canvas(11.6, 6.2)
    text(
        ax,
        0.25,
        5.9,
        r"Decoding step $t$ in layer $l$: project only the new token, append its $k_t, v_t$ to the "
        r"cache, let $q_t$ read all $t$ cached rows",
        size=11,
    )
    # the new token and its three projections
    tensor(ax, 0.75, 3.5, 1, COLS, "output", label=r"$x_t$", shape="1 × D")
    for y, name, color in ((4.6, r"$W_Q$", "query"), (3.5, r"$W_K$", "key"), (2.4, r"$W_V$", "value")):
        proj(ax, 2.15, y, name, color=color, w=0.75)
        arrow(ax, (1.2, 3.5), (1.75, y))
    # the caches
    k_new = cache_grid(ax, 4.0, 4.5, "key", r"K cache of layer $l$")
    v_new = cache_grid(ax, 4.0, 2.35, "value", r"V cache of layer $l$")
    arrow(ax, (2.55, 3.5), (k_new[0] - 0.45, k_new[1]), color="key")
    arrow(ax, (2.55, 2.4), (v_new[0] - 0.45, v_new[1]), color="value")
    text(ax, 4.55, k_new[1], r"$k_t$ appended", va="center", size=9, color="key")
    text(ax, 4.55, v_new[1], r"$v_t$ appended", va="center", size=9, color="value")
    # the query reads every cached key
    tensor(ax, 6.3, 5.05, 1, COLS, "query", label=r"$q_t$", shape="1 × d")
    arrow(ax, (2.55, 4.6), (5.85, 5.05), color="query")
    op(ax, 6.3, 3.9, r"$q_t K^\top / \sqrt{d}$", w=1.35)
    arrow(ax, (6.3, 4.8), (6.3, 4.12))
    arrow(ax, (4.5, 3.8), (5.6, 3.9), color="key")
    text(ax, 4.55, 4.1, "reads t rows", size=9, color="key")
    op(ax, 7.95, 3.9, "softmax", w=1.0)
    arrow(ax, (6.98, 3.9), (7.45, 3.9))
    tensor(
        ax,
        9.55,
        3.9,
        1,
        ROWS,
        "weight",
        label=r"weights $a_{t,1..t}$",
        shape="1 × t",
        values=[[0.15, 0.3, 0.1, 0.55, 0.25, 1.0]],
    )
    arrow(ax, (8.45, 3.9), (8.9, 3.9))
    op(ax, 9.55, 2.65, r"$\times V$", w=0.8)
    arrow(ax, (9.55, 3.65), (9.55, 2.87))
    arrow(ax, (4.5, 1.9), (9.15, 2.55), color="value")
    text(ax, 6.2, 2.35, "reads t rows", size=9, color="value")
    tensor(ax, 10.85, 2.65, 1, COLS, "output", label=r"$o_t$", shape="1 × d")
    arrow(ax, (9.95, 2.65), (10.45, 2.65))
    # every layer has its own cache, one row longer after each step
    y = 0.45
    text(
        ax,
        0.25,
        y,
        "every layer $l = 1..L$ keeps its own K and V cache;\nstep t appends one row to each:",
        va="center",
        size=9.5,
    )
    for layer in range(3):
        x = 4.35 + layer * 1.55
        for j, color in enumerate(("key", "value")):
            for i in range(ROWS):
                ax.add_patch(
                    Rectangle(
                        (x + j * 0.55 + i * 0.07, y - 0.12),
                        0.07,
                        0.24,
                        facecolor=COLORS[color],
                        alpha=0.95 if i == ROWS - 1 else 0.45,
                        edgecolor="white",
                        linewidth=0.4,
                    )
                )
        text(
            ax, x + 0.5, y + 0.2, "layer L" if layer == 2 else f"layer {layer + 1}", ha="center", va="bottom", size=8.5
        )
    text(ax, 8.55, y, r"cache: $2\,L\,G\,d$ numbers per token", va="center", size=9.5, color="cache")
    save(fig, "06-kv-cache")


if __name__ == "__main__":
    main()

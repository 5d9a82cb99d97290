"""Chapter 12: ring self-attention on R = 4 ranks.

Each rank holds one chunk of C positions: its queries, keys and values. Stage 1 passes the key chunks round the
ring (rank r sends to rank r + 1), and after R - 1 passes rank r has filled every column block of its score block
S_r (C x T); the number in a block is the pass at which that rank's keys arrived. The softmax over full rows is
local. Stage 2 passes the value chunks round the same ring and sums O_r = sum_m A_{r,m} V_m.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import FancyBboxPatch, Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, op, save, tensor, text  # noqa: E402

WORLD, CHUNK, DIM, CELL = 4, 2, 3, 0.17
PANEL_W, GAP, LEFT = 2.55, 0.45, 0.35


def score_block(ax, x: float, y: float, rank: int) -> None:
    """S_n as CHUNK rows x WORLD*CHUNK columns; the block of owner m is shaded by the pass that brought K_m."""
    x0 = x - WORLD * CHUNK * CELL / 2
    for owner in range(WORLD):
        step = (rank - owner) % WORLD
        for i in range(CHUNK):
            for j in range(CHUNK):
                ax.add_patch(
                    Rectangle(
                        (x0 + (owner * CHUNK + j) * CELL, y - (i + 1) * CELL),
                        CELL,
                        CELL,
                        facecolor=COLORS["weight"],
                        alpha=0.9 - 0.2 * step,
                        edgecolor="white",
                        linewidth=0.8,
                    )
                )
        text(ax, x0 + (owner + 0.5) * CHUNK * CELL, y + 0.06, str(step), ha="center", va="bottom", size=8.5)


def main() -> None:
    width = LEFT * 2 + WORLD * PANEL_W + (WORLD - 1) * GAP
    fig, ax = canvas(width, 6.2)
    text(
        ax,
        LEFT,
        5.95,
        r"Ring self-attention, $R = 4$ ranks: the keys (stage 1), then the values (stage 2) travel round the ring; "
        r"each rank keeps its queries",
        size=11,
    )
    centres = [LEFT + PANEL_W / 2 + n * (PANEL_W + GAP) for n in range(WORLD)]
    for n, x in enumerate(centres):
        ax.add_patch(
            FancyBboxPatch(
                (x - PANEL_W / 2, 0.95),
                PANEL_W,
                4.55,
                boxstyle="round,pad=0.02,rounding_size=0.1",
                facecolor="#fbfbfb",
                edgecolor=COLORS["mask"],
                linewidth=1.2,
            )
        )
        text(ax, x, 5.25, f"rank {n}", ha="center", va="center", size=11)
        for dx, color, name in ((-0.75, "query", "Q"), (0.0, "key", "K"), (0.75, "value", "V")):
            tensor(ax, x + dx, 4.45, CHUNK, DIM, color, label=rf"${name}_{n}$")
        text(ax, x, 3.95, r"$C \times d$ each", ha="center", va="top", size=8.5, color="output")
        score_block(ax, x, 3.35, n)
        text(ax, x, 2.88, rf"$S_{n} = Q_{n} K^\top$ ($C \times T$)", ha="center", va="top", size=9.5)
        arrow(ax, (x, 2.5), (x, 2.3))
        op(ax, x, 2.05, "softmax (local)", w=1.7, h=0.36)
        arrow(ax, (x - 0.7, 1.85), (x - 0.7, 1.68))
        tensor(ax, x - 0.7, 1.45, CHUNK, DIM, "output")
        text(ax, x - 0.3, 1.45, rf"$O_{n} = \sum_m A_{{{n},m}} V_m$", ha="left", va="center", size=9)
    for n in range(WORLD - 1):  # the ring: rank n sends to rank n + 1 ...
        a, b = centres[n] + PANEL_W / 2, centres[n + 1] - PANEL_W / 2
        arrow(ax, (a - 0.05, 4.45), (b + 0.05, 4.45), color="key")
        arrow(ax, (a - 0.05, 4.2), (b + 0.05, 4.2), color="value", dashed=True)
    # ... and the last rank sends to rank 0, under the panels
    arrow(ax, (centres[-1], 0.9), (centres[0], 0.9), color="key", rad=-0.07)
    arrow(ax, (centres[-1] + 0.3, 0.9), (centres[0] + 0.3, 0.9), color="value", dashed=True, rad=-0.07)
    text(
        ax,
        width / 2,
        0.22,
        r"and rank $R{-}1$ sends to rank 0: a ring",
        ha="center",
        va="center",
        size=9.5,
        color="output",
    )
    text(
        ax,
        LEFT,
        5.62,
        "numbers over the score block: the pass at which those keys arrived (0 = its own);  "
        "solid arrows: key chunks, dashed: value chunks",
        size=9,
        color="output",
    )
    save(fig, "12-ring")


if __name__ == "__main__":
    main()

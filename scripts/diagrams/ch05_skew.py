"""Chapter 05: the Music Transformer's skew (pad, reshape, slice) on a causal example with T = 4.

Each cell of the scores against offsets, S_off = Q Z^T, is q_i . r_(j - i) for one query i (the shade) and one
offset (the number). Padding a zero column on the left, reading the buffer as (T + 1) x T and dropping the first
row moves every row i left by T - 1 - i, so that cell (i, j) holds offset j - i for every j <= i.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, save, text  # noqa: E402

T = 4
CELL = 0.46
SHADES = [0.28, 0.48, 0.68, 0.9]  # one shade of the score colour per query row i


def entries() -> dict[str, list[list[tuple[int, int] | None]]]:
    """Every stage as a grid of (query row, offset) pairs; None is a zero from the padding."""
    scores = [[(i, c - (T - 1)) for c in range(T)] for i in range(T)]  # (T, T): column c is offset c - (T - 1)
    padded = [[None, *row] for row in scores]  # (T, T + 1)
    flat = [cell for row in padded for cell in row]  # T (T + 1) numbers in memory order
    reread = [flat[a * T : (a + 1) * T] for a in range(T + 1)]  # (T + 1, T)
    return {"scores": scores, "padded": padded, "reread": reread, "result": reread[1:]}


def grid(ax, x0: float, y_top: float, cells, title: str, result: bool = False) -> tuple[float, float]:
    """Draw a grid with its top-left corner at (x0, y_top); return its right edge and vertical centre."""
    rows, cols = len(cells), len(cells[0])
    for a, row in enumerate(cells):
        for b, cell in enumerate(row):
            x, y = x0 + b * CELL, y_top - (a + 1) * CELL
            leftover = result and b > a
            if cell is None:
                face, alpha, label, ink = COLORS["mask"], 0.35, "0", COLORS["text"]
            else:
                i, offset = cell
                face, alpha, ink = COLORS["weight"], SHADES[i], "white" if SHADES[i] > 0.5 else COLORS["text"]
                label = f"{offset}".replace("-", "\u2212")
            if leftover:
                face, alpha, ink = COLORS["mask"], 0.2, COLORS["mask"]
            ax.add_patch(Rectangle((x, y), CELL, CELL, facecolor=face, alpha=alpha, edgecolor="white", linewidth=1.2))
            ax.text(x + CELL / 2, y + CELL / 2, label, ha="center", va="center", fontsize=10, color=ink)
    text(ax, x0 + cols * CELL / 2, y_top + 0.12, title, ha="center", va="bottom", size=10)
    return x0 + cols * CELL, y_top - rows * CELL / 2


def main() -> None:
    stage = entries()
    fig, ax = canvas(12.4, 4.05)
    top = 3.05
    text(
        ax,
        0.25,
        3.8,
        "Skewing (Music Transformer), T = 4: shade = query i, number = offset j − i of  "
        r"$q_i \cdot r_{j-i}$",
        size=11,
    )
    right1, mid1 = grid(ax, 0.55, top, stage["scores"], r"1. $S^{\mathrm{off}} = Q Z^{\top}$ (T × T)")
    for i in range(T):
        text(ax, 0.42, top - (i + 0.5) * CELL, f"i={i}", ha="right", va="center", size=9)
    x2 = right1 + 0.8
    right2, mid2 = grid(ax, x2, top, stage["padded"], "2. pad a zero column (T × (T+1))")
    arrow(ax, (right1 + 0.08, mid1), (x2 - 0.08, mid2))
    x3 = right2 + 0.8
    right3, mid3 = grid(ax, x3, top + CELL / 2, stage["reread"], "3. read as (T+1) × T")
    arrow(ax, (right2 + 0.08, mid2), (x3 - 0.08, mid2))
    x4 = right3 + 0.8
    right4, mid4 = grid(ax, x4, top, stage["result"], r"4. drop row 0: $S^{\mathrm{rel}}$", result=True)
    arrow(ax, (right3 + 0.08, mid2), (x4 - 0.08, mid4))
    for j in range(T):
        text(ax, x4 + (j + 0.5) * CELL, top - T * CELL - 0.08, f"j={j}", ha="center", va="top", size=9)
    note = "grey: left-overs\nabove the diagonal,\nhidden by the\ncausal mask"
    text(ax, x4 + T * CELL + 0.15, top - 0.5 * CELL, note, va="top", size=9, color="mask")
    for c in range(T):
        text(
            ax,
            0.55 + (c + 0.5) * CELL,
            top - T * CELL - 0.08,
            f"{c - T + 1}".replace("-", "\u2212"),
            ha="center",
            va="top",
            size=9,
        )
    text(ax, 0.55 + T * CELL / 2, top - T * CELL - 0.36, "column = offset", ha="center", va="top", size=9)
    summary = (
        "One matmul, one pad, one reshape: the (T, T, d) tensor of the naive gather never exists. "
        "Below the diagonal, row i holds the offsets −i … 0, exactly the ones query i needs."
    )
    text(ax, 0.25, 0.3, summary, size=9.5)
    save(fig, "05-skew")


if __name__ == "__main__":
    main()

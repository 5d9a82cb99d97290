"""Chapter 08: the patterns of local attention, and how blocks compute a band in O(T w).

Figure 08-patterns: four (query x key) grids over T = 12 positions: a centred sliding window (w = 5), blocks
(w = 4, block-diagonal), blocks with a halo of 1, and shifted blocks (Swin's second layer, shift 2). Purple
cells may attend, grey ones are masked.

Figure 08-blocked: the blocked computation of a sliding window. Queries (blue) in blocks of r; each block
scores only its own key block and its neighbours (orange, 3r keys), then the band mask keeps |i - j| <= r.

Figure 08-cyclic-shift: Swin's cyclic-shift trick on an 8 x 8 grid (window 4, shift 2).

Figure 08-epipolar: CCNeXt's windowed epipolar cross-attention between the two images of a stereo pair.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, op, save, tensor, text  # noqa: E402

T, CELL = 12, 0.19


def visible(kind: str, i: int, j: int) -> bool:
    if kind == "sliding":
        return abs(i - j) <= 2
    if kind == "blocks":
        return i // 4 == j // 4
    if kind == "halo":
        start = i // 4 * 4
        return start - 1 <= j < start + 5
    # shifted blocks: window borders at 2, 6, 10
    return (i + 2) // 4 == (j + 2) // 4


def grid(ax, x0: float, y0: float, kind: str, title: str, subtitle: str) -> None:
    for i in range(T):
        for j in range(T):
            on = visible(kind, i, j)
            ax.add_patch(
                Rectangle(
                    (x0 + j * CELL, y0 + (T - 1 - i) * CELL),
                    CELL,
                    CELL,
                    facecolor=COLORS["weight"] if on else COLORS["light"],
                    alpha=0.85 if on else 1.0,
                    edgecolor="white" if on else "#dddddd",
                    linewidth=0.6,
                )
            )
    side = T * CELL
    text(ax, x0 + side / 2, y0 + side + 0.42, title, ha="center", va="bottom", size=11)
    text(ax, x0 + side / 2, y0 + side + 0.12, subtitle, ha="center", va="bottom", size=9, color="output")
    text(ax, x0 + side / 2, y0 - 0.1, "key $j$", ha="center", va="top", size=9, color="key")
    text(ax, x0 - 0.1, y0 + side / 2, "query $i$", ha="right", va="center", size=9, color="query", rotation=90)


def patterns() -> None:
    fig, ax = canvas(12.4, 3.6)
    panels = [
        ("sliding", "sliding window", "$|i-j| \\leq 2$, $w = 5$"),
        ("blocks", "blocks", "$w = 4$: block-diagonal"),
        ("halo", "blocks with a halo", "$w = 4$, halo $e = 1$"),
        ("shifted", "shifted blocks", "windows moved by $s = 2$"),
    ]
    for n, (kind, title, subtitle) in enumerate(panels):
        grid(ax, 0.55 + n * 3.05, 0.45, kind, title, subtitle)
    save(fig, "08-patterns")


def blocked() -> None:
    fig, ax = canvas(10.0, 3.4)
    r, blocks = 3, 4
    cell = 0.22
    # the sequence of queries, cut into blocks of r
    y_q, y_k = 2.55, 0.75
    x0 = 0.6
    for b in range(blocks):
        x = x0 + b * (r * cell + 0.12)
        tensor(ax, x + r * cell / 2, y_q, 1, r, "query", cell=cell)
        text(ax, x + r * cell / 2, y_q + 0.25, f"block {b}", ha="center", va="bottom", size=9, color="query")
    text(ax, x0 - 0.1, y_q, "$Q$", ha="right", va="center", color="query")
    # block 2's visible keys: blocks 1, 2, 3
    for b in range(blocks):
        x = x0 + b * (r * cell + 0.12)
        tensor(ax, x + r * cell / 2, y_k, 1, r, "key" if b in (1, 2, 3) else COLORS["light"], cell=cell)
    text(ax, x0 - 0.1, y_k, "$K$", ha="right", va="center", color="key")
    bx = x0 + 2 * (r * cell + 0.12) + r * cell / 2
    for b in (1, 2, 3):
        kx = x0 + b * (r * cell + 0.12) + r * cell / 2
        arrow(ax, (bx, y_q - 0.15), (kx, y_k + 0.18), color="key")
    # the band inside the gathered scores
    sx, sy = 5.0, 1.65
    op(ax, sx - 0.55, sy, "×")
    arrow(ax, (sx - 0.3, sy), (sx + 1.4 - 1.5 * r * cell - 0.05, sy), color="weight")
    band = [[1.0 if abs((r + i) - j) <= r else 0.0 for j in range(3 * r)] for i in range(r)]
    tensor(ax, sx + 1.4, sy, r, 3 * r, "weight", cell=cell, values=band)
    text(ax, sx + 1.4, sy + 0.55, "scores of block 2: $r \\times 3r$", ha="center", va="bottom", size=9)
    text(ax, sx + 1.4, sy - 0.5, "band mask keeps $|i-j| \\leq r$", ha="center", va="top", size=9, color="output")
    arrow(ax, (bx + 0.45, y_q), (sx - 0.72, sy + 0.12), color="query")
    kx3 = x0 + 3 * (r * cell + 0.12) + r * cell
    arrow(ax, (kx3 + 0.05, y_k), (sx - 0.72, sy - 0.12), color="key")
    text(
        ax,
        sx + 1.4,
        0.45,
        "cost: $T/r$ blocks $\\times$ $3r^2$ scores $= 3rT$, linear in $T$",
        ha="center",
        va="center",
        size=10,
    )
    save(fig, "08-blocked")


def cyclic_shift() -> None:
    """Figure 08-cyclic-shift: shifted windows on an 8 x 8 grid, the same cells rolled by -s into 4 regular windows,
    with each cell shaded by the region it came from (pairs of different shades are masked)."""
    n, w, s, cell = 8, 4, 2, 0.3
    fig, ax = canvas(9.3, 3.9)
    # region labels, not queries or keys: matplotlib's Pastel1, away from the book's Q/K/V colours
    shades = ["#fbb4ae", "#b3cde3", "#ccebc5", "#decbe4", "#fed9a6", "#ffffcc", "#e5d8bd", "#fddaec", "#f2f2f2"]

    def region(p: int) -> int:  # region of a grid coordinate after the roll: [0, n-w), [n-w, n-s), [n-s, n)
        return 0 if p < n - w else (1 if p < n - s else 2)

    def draw(x0: float, y0: float, label_of, borders, title: str, subtitle: str) -> None:
        for row in range(n):
            for col in range(n):
                ax.add_patch(
                    Rectangle(
                        (x0 + col * cell, y0 + (n - 1 - row) * cell),
                        cell,
                        cell,
                        facecolor=shades[label_of(row, col)],
                        alpha=1.0,
                        edgecolor="white",
                        linewidth=0.8,
                    )
                )
        for b in borders:  # window borders, thick
            ax.plot([x0 + b * cell] * 2, [y0, y0 + n * cell], color=COLORS["text"], lw=2)
            ax.plot([x0, x0 + n * cell], [y0 + (n - b) * cell] * 2, color=COLORS["text"], lw=2)
        ax.add_patch(Rectangle((x0, y0), n * cell, n * cell, fill=False, edgecolor=COLORS["text"], lw=2))
        text(ax, x0 + n * cell / 2, y0 + n * cell + 0.42, title, ha="center", va="bottom", size=11)
        text(ax, x0 + n * cell / 2, y0 + n * cell + 0.12, subtitle, ha="center", va="bottom", size=9, color="output")

    # left: the grid itself, with windows shifted by s (borders at s and s + w); shade = region after the roll
    def original(row: int, col: int) -> int:
        return 3 * region((row - s) % n) + region((col - s) % n)

    draw(0.4, 0.35, original, [s, s + w], "shifted windows", "9 windows, some cut by the border")
    arrow(ax, (3.05, 1.55), (4.15, 1.55), color="output")
    text(ax, 3.6, 1.7, "roll by $-s$", ha="center", va="bottom", size=10)

    # right: rolled grid, 4 regular windows; cells of one window from different regions are masked
    def rolled(row: int, col: int) -> int:
        return 3 * region(row) + region(col)

    draw(4.3, 0.35, rolled, [w], "rolled: 4 regular windows", "mask pairs of different shade")
    text(
        ax,
        6.95,
        1.55,
        "attend in each window\nwith the region mask,\nthen roll back by $+s$",
        ha="left",
        va="center",
        size=10,
    )
    save(fig, "08-cyclic-shift")


def epipolar() -> None:
    """Figure 08-epipolar: a query pixel of the left image attends to the same row of the right image, in a band."""
    Y, X, cell = 5, 12, 0.26
    fig, ax = canvas(9.2, 2.3)
    qy, qx, reach = 2, 6, 2

    def image(x0: float, title: str, colour_of) -> None:
        for row in range(Y):
            for col in range(X):
                face, alpha = colour_of(row, col)
                ax.add_patch(
                    Rectangle(
                        (x0 + col * cell, 0.35 + (Y - 1 - row) * cell),
                        cell,
                        cell,
                        facecolor=face,
                        alpha=alpha,
                        edgecolor="white",
                        linewidth=0.8,
                    )
                )
        text(ax, x0 + X * cell / 2, 0.35 + Y * cell + 0.12, title, ha="center", va="bottom", size=11)

    image(
        0.3,
        "left image $x_1$: queries",
        lambda r, c: (COLORS["query"], 0.9) if (r, c) == (qy, qx) else (COLORS["light"], 1.0),
    )
    image(
        5.5,
        "right image $x_2$: keys and values",
        lambda r, c: (COLORS["key"], 0.85) if r == qy and abs(c - qx) <= reach else (COLORS["light"], 1.0),
    )
    y_row = 0.35 + (Y - 1 - qy) * cell + cell / 2
    arrow(
        ax, (0.3 + (qx + 1) * cell + 0.05, y_row), (5.5 + (qx - reach) * cell - 0.05, y_row), color="query", rad=-0.25
    )
    text(
        ax,
        4.6,
        0.12,
        "same row, $|x - x'| \\leq w_{\\max} - 1$: the match of a rectified pair lies on this band",
        ha="center",
        va="center",
        size=9,
        color="output",
    )
    save(fig, "08-epipolar")


if __name__ == "__main__":
    patterns()
    blocked()
    cyclic_shift()
    epipolar()

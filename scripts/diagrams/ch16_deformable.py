"""Chapter 16: multi-scale deformable attention, for one query and one head.

The query (blue) predicts, through two learned projections, the offsets of its sampling points and their weights.
On each of two feature maps (levels, value maps in green, the coarser one below), the points sit at the query's
reference point (blue ring) plus the offsets; each point is read by bilinear interpolation of its four
neighbouring pixels, and the weights (one softmax over all levels and points, purple, dot size = weight) mix the
readings into the head's output, which the output projection maps back to the model width.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import Circle, Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, op, proj, save, text  # noqa: E402


def level(ax, x0, y0, rows, cols, cell, ref, points, weights, name):
    """A value map with its top-left corner at (x0, y0); ref and points in pixel units (x, y) from the top left."""
    for r in range(rows):
        for c in range(cols):
            ax.add_patch(
                Rectangle(
                    (x0 + c * cell, y0 - (r + 1) * cell),
                    cell,
                    cell,
                    facecolor=COLORS["value"],
                    alpha=0.25,
                    edgecolor="white",
                    linewidth=1.2,
                )  # fmt: skip
            )
    to_xy = lambda p: (x0 + p[0] * cell, y0 - p[1] * cell)
    rx, ry = to_xy(ref)
    for (px, py), w in zip(points, weights, strict=True):
        # the four pixels the bilinear read mixes (pixel centres at integer + 0.5)
        c0, r0 = int(px - 0.5), int(py - 0.5)
        for r in (r0, r0 + 1):
            for c in (c0, c0 + 1):
                ax.add_patch(Rectangle((x0 + c * cell, y0 - (r + 1) * cell), cell, cell, facecolor=COLORS["value"],
                                       alpha=0.55, edgecolor="white", linewidth=1.2))  # fmt: skip
        sx, sy = to_xy((px, py))
        arrow(ax, (rx, ry), (sx, sy), color="query", dashed=True)
        ax.add_patch(Circle((sx, sy), 0.05 + 0.12 * w, facecolor=COLORS["weight"], edgecolor="white", zorder=5))
    ax.add_patch(Circle((rx, ry), 0.09, facecolor="white", edgecolor=COLORS["query"], linewidth=2.2, zorder=6))
    text(ax, x0 + cols * cell / 2, y0 + 0.08, name, ha="center", va="bottom", size=10)


def main() -> None:
    fig, ax = canvas(10.4, 4.6)
    # the query and its two projections
    ax.add_patch(Rectangle((0.3, 2.05), 0.5, 0.5, facecolor=COLORS["query"], alpha=0.85, edgecolor="white"))
    text(ax, 0.55, 2.68, "query $q$", ha="center", va="bottom", size=10)
    text(ax, 0.55, 1.9, "+ reference\npoint $p$", ha="center", va="top", size=9, color="query")
    proj(ax, 2.0, 3.35, r"$W_{\Delta}$", color="query", w=0.8)
    proj(ax, 2.0, 1.25, "$W_a$", color="weight", w=0.8)
    arrow(ax, (0.85, 2.4), (1.58, 3.3))
    arrow(ax, (0.85, 2.2), (1.58, 1.3))
    text(ax, 2.0, 3.7, "offsets $\\Delta p_{\\ell k}$", ha="center", va="bottom", size=9)
    op(ax, 2.0, 0.45, "softmax over $\\ell, k$", w=1.75)
    arrow(ax, (2.0, 1.0), (2.0, 0.68))
    # two levels of value maps
    weights = [0.9, 0.35, 0.6, 0.2]
    name1, name2 = "level 1: $H_1\\times W_1$ values", "level 2: $H_2\\times W_2$"
    level(ax, 3.2, 4.15, 5, 7, 0.42, (3.3, 2.4), [(4.6, 1.6), (2.1, 3.5)], weights[:2], name1)
    level(ax, 3.6, 1.7, 2, 4, 0.42, (1.65, 1.2), [(2.8, 0.7), (0.9, 1.3)], weights[2:], name2)
    arrow(ax, (2.45, 3.35), (3.15, 3.35), color="query")
    note = "darker: the 4 pixels each point reads (bilinear)"
    text(ax, 6.3, 0.15, note, ha="center", va="bottom", size=9, color="value")
    # the weighted sum and the output projection
    op(ax, 7.2, 2.3, "Σ")
    arrow(ax, (6.2, 2.9), (7.0, 2.45), color="value")
    arrow(ax, (5.35, 1.2), (7.0, 2.15), color="value")
    arrow(ax, (2.95, 0.45), (7.15, 2.07), color="weight", rad=0.25)
    text(ax, 7.45, 1.55, "weights $a_{\\ell k}$", ha="left", va="center", size=9, color="weight")
    proj(ax, 8.45, 2.3, "$W_O$", w=0.7)
    arrow(ax, (7.43, 2.3), (8.08, 2.3))
    ax.add_patch(Rectangle((9.25, 2.05), 0.5, 0.5, facecolor=COLORS["output"], alpha=0.85, edgecolor="white"))
    arrow(ax, (8.82, 2.3), (9.23, 2.3))
    text(ax, 9.5, 2.68, "output", ha="center", va="bottom", size=10)
    text(ax, 8.6, 3.6, "no $q\\cdot k$ scores:\nthe weights come\nfrom the query alone", ha="center", va="center",
         size=9, color="output")  # fmt: skip
    save(fig, "16-deformable")


if __name__ == "__main__":
    main()

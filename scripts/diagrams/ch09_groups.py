"""Chapter 09: three groupings of tokens -- LRGT's long-range groups, Group Pose's two steps, DaViT's channel groups.

Left: three views of 4 x 4 tokens; the token at (row, col) of any view belongs to group (row mod 2, col mod 2), drawn
as one of four colours, so each group is a strided sample of every view. Middle: Group Pose's queries as a grid of
instances (rows) by query type (columns: the instance query, then keypoints); step 1 attends within a row, step 2
within a column. Right: DaViT's channels split into groups; a group's d x d channel map is formed from all T positions.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import FancyBboxPatch, Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, save, tensor, text  # noqa: E402

GROUP_COLORS = [COLORS["query"], COLORS["key"], COLORS["value"], COLORS["weight"]]


def square(ax, x: float, y: float, size: float, color: str, alpha: float = 0.85, edge: str = "white") -> None:
    ax.add_patch(
        Rectangle((x, y), size, size, facecolor=COLORS.get(color, color), alpha=alpha, edgecolor=edge, linewidth=0.8)
    )


def outline(ax, x: float, y: float, w: float, h: float, color: str) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.05",
            facecolor="none",
            edgecolor=COLORS.get(color, color),
            linewidth=2.0,
        )
    )


def long_range(ax, x0: float, y_top: float) -> None:
    cell, side, g = 0.22, 4, 2
    text(ax, x0 + 1.55, y_top + 0.5, "LRGT: long-range groups", ha="center", va="bottom", size=12)
    text(
        ax,
        x0 + 1.55,
        y_top + 0.22,
        r"group $(r\ \mathrm{mod}\ g,\ c\ \mathrm{mod}\ g)$, $g = 2$",
        ha="center",
        va="bottom",
        size=9,
    )
    for view in range(3):
        vx = x0 + view * (side * cell + 0.2)
        for r in range(side):
            for c in range(side):
                group = (r % g) * g + c % g
                square(
                    ax, vx + c * cell, y_top - (r + 1) * cell, cell, GROUP_COLORS[group], 0.9 if group == 0 else 0.35
                )
        text(ax, vx + side * cell / 2, y_top - side * cell - 0.08, f"view {view + 1}", ha="center", va="top", size=9)
    text(
        ax,
        x0 + 1.55,
        y_top - side * cell - 0.42,
        "one group (dark blue) = 4 tokens\nfrom every view, spread over each",
        ha="center",
        va="top",
        size=9,
    )


def group_pose(ax, x0: float, y_top: float) -> None:
    cell, n_inst, n_q = 0.3, 4, 5
    text(ax, x0 + 1.0, y_top + 0.5, "Group Pose: two steps", ha="center", va="bottom", size=12)
    text(ax, x0 + 1.0, y_top + 0.22, "instances x (instance query, keypoints)", ha="center", va="bottom", size=9)
    gx = x0 + 0.25
    for i in range(n_inst):
        for j in range(n_q):
            square(ax, gx + j * cell, y_top - (i + 1) * cell, cell, "query", 0.9 if j == 0 else 0.5)
    outline(ax, gx - 0.03, y_top - 2 * cell - 0.03, n_q * cell + 0.06, cell + 0.06, "output")
    outline(ax, gx + 2 * cell - 0.03, y_top - n_inst * cell - 0.03, cell + 0.06, n_inst * cell + 0.06, "weight")
    y_text = y_top - n_inst * cell - 0.15
    text(ax, gx, y_text, "1. within an instance (a row)", va="top", size=9, color="output")
    text(ax, gx, y_text - 0.28, "2. across instances, one type\n    (a column)", va="top", size=9, color="weight")


def channels(ax, x0: float, y_top: float) -> None:
    text(ax, x0 + 1.3, y_top + 0.5, "DaViT: channel groups", ha="center", va="bottom", size=12)
    text(ax, x0 + 1.3, y_top + 0.22, "channels are the tokens", ha="center", va="bottom", size=9)
    cell, T, D, d = 0.16, 8, 8, 4
    for t in range(T):
        for c in range(D):
            color = "query" if c < d else "light"
            square(ax, x0 + c * cell, y_top - (t + 1) * cell, cell, color, 0.8 if c < d else 1.0)
    text(ax, x0 - 0.08, y_top - T * cell / 2, "$T$", ha="right", va="center", size=10)
    text(
        ax, x0 + D * cell / 2, y_top - T * cell - 0.08, "$D$ channels, $H$ groups of $d$", ha="center", va="top", size=9
    )
    x_map = x0 + D * cell + 1.0
    values = [[0.9, 0.3, 0.2, 0.4], [0.2, 0.8, 0.5, 0.1], [0.3, 0.4, 0.9, 0.2], [0.5, 0.1, 0.3, 0.7]]
    tensor(ax, x_map, y_top - T * cell / 2, d, d, "weight", values=values, cell=0.2)
    arrow(ax, (x0 + d * cell + 0.05, y_top - T * cell / 2), (x_map - 0.5, y_top - T * cell / 2), color="weight")
    text(ax, x_map, y_top - T * cell / 2 - 0.55, r"$A$: $d \times d$", ha="center", va="top", size=9.5)
    text(ax, x_map, y_top - T * cell / 2 - 0.82, "summed over all $T$", ha="center", va="top", size=9)


def main() -> None:
    fig, ax = canvas(11.2, 3.0)
    y_top = 2.2
    long_range(ax, 0.3, y_top)
    group_pose(ax, 4.4, y_top)
    channels(ax, 7.7, y_top)
    save(fig, "09-groups")


if __name__ == "__main__":
    main()

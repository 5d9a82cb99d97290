"""Chapter 06: multi-head, grouped-query and multi-query attention share key-value heads among query heads.

Three panels with H = 4 query heads each: G = 4 key-value heads (multi-head, one per query head), G = 2
(grouped-query: query head h reads key-value head floor(h G / H)), and G = 1 (multi-query: all read one). The
cache (gold) stores only the G key-value heads, so it shrinks by H / G.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import FancyBboxPatch, Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, save, text  # noqa: E402

H, CELL = 4, 0.17


def head(ax, x: float, y: float, color: str, rows: int = 3, cols: int = 3) -> None:
    """One head's vectors as a small grid centred at (x, y)."""
    for i in range(rows):
        for j in range(cols):
            ax.add_patch(
                Rectangle(
                    (x - cols * CELL / 2 + j * CELL, y - rows * CELL / 2 + i * CELL),
                    CELL,
                    CELL,
                    facecolor=COLORS[color],
                    alpha=0.85,
                    edgecolor="white",
                    linewidth=0.7,
                )
            )


def panel(ax, x0: float, G: int, title: str) -> None:
    width = 3.3
    text(ax, x0 + width / 2, 4.05, title, ha="center", va="bottom", size=11)
    text(
        ax,
        x0 + width / 2,
        3.75,
        f"H = {H} query heads, G = {G} key-value head{'s' if G > 1 else ''}",
        ha="center",
        va="bottom",
        size=9,
        color="output",
    )
    q_x = [x0 + 0.45 + h * (width - 0.9) / (H - 1) for h in range(H)]
    for h, x in enumerate(q_x):
        head(ax, x, 3.2, "query")
        text(ax, x, 2.85, f"$q^{{({h})}}$", ha="center", va="top", size=9, color="query")
    kv_x = [x0 + width / 2] if G == 1 else [x0 + 0.45 + g * (width - 0.9) / (G - 1) for g in range(G)]
    if G == 2:
        kv_x = [(q_x[0] + q_x[1]) / 2, (q_x[2] + q_x[3]) / 2]
    y_k, y_v = 1.55, 0.85
    left, right = min(kv_x) - 0.4, max(kv_x) + 0.4
    ax.add_patch(
        FancyBboxPatch(
            (left, y_v - 0.32),
            right - left,
            y_k - y_v + 0.64,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor="none",
            edgecolor=COLORS["cache"],
            linewidth=2.0,
        )
    )
    for g, x in enumerate(kv_x):
        head(ax, x - 0.17, y_k, "key", rows=2, cols=2)
        head(ax, x + 0.17, y_k, "value", rows=2, cols=2)
        head(ax, x - 0.17, y_v, "key", rows=2, cols=2)
        head(ax, x + 0.17, y_v, "value", rows=2, cols=2)
        text(ax, x, y_k + 0.4, f"$k^{{({g})}}, v^{{({g})}}$", ha="center", va="bottom", size=9)
    for h, x in enumerate(q_x):
        g = h * G // H
        arrow(ax, (x, 2.68), (kv_x[g], y_k + 0.68), color="weight")
    saving = "the full cache" if G == H else f"{H // G}x smaller"
    text(
        ax,
        x0 + width / 2,
        0.22,
        f"cache: {G} of {H} heads per layer ({saving})",
        ha="center",
        va="center",
        size=9.5,
        color="cache",
    )


def main() -> None:
    fig, ax = canvas(11.6, 4.7)
    text(
        ax,
        0.2,
        4.45,
        r"Query head $h$ reads key–value head $\lfloor hG/H \rfloor$; the cache (gold) keeps only "
        r"the $G$ key–value heads, two cached positions drawn",
        size=11,
    )
    panel(ax, 0.25, 4, "multi-head")
    panel(ax, 4.15, 2, "grouped-query")
    panel(ax, 8.05, 1, "multi-query")
    save(fig, "06-gqa")


if __name__ == "__main__":
    main()

"""Chapter 10: routing attention. Queries and keys are routed to shared centroids; attention runs per cluster.

Nine tokens, three centroids (gold). Each cluster keeps the w = 3 queries and the w = 3 keys that score highest
against its centroid (balanced routing); a small w x w attention runs inside each cluster; the outputs go back
to their positions (a token in several clusters gets the mean). Dashed: the online k-means step that moves the
centroids towards the mean of the vectors assigned to them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import Circle, Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, op, save, tensor, text  # noqa: E402

CELL = 0.2
CLUSTERS = [  # (queries, keys) of each cluster: positions 1..9
    ((1, 4, 8), (2, 4, 8)),
    ((2, 5, 6), (1, 5, 6)),
    ((3, 7, 9), (3, 7, 9)),
]
WEIGHTS = [
    [[0.9, 0.3, 0.1], [0.2, 0.8, 0.2], [0.1, 0.3, 0.9]],
    [[0.7, 0.2, 0.3], [0.3, 0.9, 0.1], [0.2, 0.1, 0.8]],
    [[0.8, 0.1, 0.2], [0.4, 0.7, 0.1], [0.1, 0.2, 0.9]],
]


def cell(ax, x: float, y: float, color: str, label: str = "") -> None:
    ax.add_patch(Rectangle((x - CELL / 2, y - CELL / 2), CELL, CELL, facecolor=COLORS[color], alpha=0.85, ec="white"))
    if label:
        text(ax, x, y, label, ha="center", va="center", size=7.5, color="white")


def main() -> None:
    fig, ax = canvas(11.4, 5.0)
    text(
        ax,
        0.2,
        4.72,
        "Routing attention: queries and keys share C centroids; attention only inside each cluster",
        size=11,
    )
    # tokens: q, k, v per position
    rows = [4.05 - 0.36 * t for t in range(9)]
    text(ax, 0.55, 4.3, "Q", ha="center", color="query")
    text(ax, 0.8, 4.3, "K", ha="center", color="key")
    text(ax, 1.05, 4.3, "V", ha="center", color="value")
    for t, y in enumerate(rows, start=1):
        text(ax, 0.25, y, str(t), ha="center", va="center", size=9, color="output")
        cell(ax, 0.55, y, "query")
        cell(ax, 0.8, y, "key")
        cell(ax, 1.05, y, "value")
    # centroids and routing
    text(ax, 2.35, 4.3, "centroids", ha="center", color="cache", size=10)
    for c, y in enumerate((3.7, 3.1, 2.5), start=1):
        ax.add_patch(Circle((2.35, y), 0.16, facecolor=COLORS["cache"], edgecolor="white"))
        text(ax, 2.6, y, rf"$\mu_{c}$", va="center", size=10, color="cache")
    arrow(ax, (1.25, 2.6), (2.1, 3.05))
    op(ax, 2.35, 1.55, "top-w per centroid", w=1.75)
    text(ax, 2.35, 1.12, r"score $\hat x\cdot\mu_c$", ha="center", size=9, color="output")
    arrow(ax, (2.35, 2.3), (2.35, 1.78))
    # online k-means loop
    arrow(ax, (0.8, 0.75), (2.2, 2.35), color="cache", dashed=True, rad=-0.35)
    text(
        ax,
        1.45,
        0.25,
        r"online k-means: $\mu_c \leftarrow \lambda\mu_c + (1-\lambda)\,\bar x_c$",
        size=9.5,
        color="cache",
    )
    # clusters
    ys = (3.65, 2.45, 1.25)
    for (qs, ks), weights, y, c in zip(CLUSTERS, WEIGHTS, ys, (1, 2, 3), strict=True):
        arrow(ax, (3.25, 1.55), (3.85, y), color="output")
        text(ax, 4.05, y + 0.45, f"cluster {c}", size=9.5, color="cache")
        for i, (q, k) in enumerate(zip(qs, ks, strict=True)):
            cell(ax, 4.25, y + 0.2 - i * CELL, "query", str(q))
            cell(ax, 4.75 + i * CELL, y + 0.5, "key", str(k))
        tensor(ax, 4.95, y, 3, 3, "weight", values=weights, cell=CELL)
        for i, k in enumerate(ks):
            cell(ax, 5.55, y + 0.2 - i * CELL, "value", str(k))
        text(ax, 5.95, y, "=", ha="center", va="center", size=11)
        for i, q in enumerate(qs):
            cell(ax, 6.3, y + 0.2 - i * CELL, "output", str(q))
        arrow(ax, (6.5, y), (8.0, 2.45), color="output")
    text(ax, 5.25, 0.55, r"softmax$(Q_c K_c^\top/\sqrt{d})\,V_c$, causal: key $\leq$ query", ha="center", size=9.5)
    op(ax, 8.5, 2.45, "scatter, mean", w=1.45)
    arrow(ax, (9.25, 2.45), (9.85, 2.45))
    text(ax, 10.25, 4.3, "O", ha="center", color="output")
    for t, y in enumerate(rows, start=1):
        cell(ax, 10.25, y, "output", str(t))
    text(ax, 8.5, 0.9, r"$C\approx\sqrt{T}$ clusters of $w = T/C$:", ha="center", size=9.5)
    text(ax, 8.5, 0.55, r"cost $O(T^{1.5} d)$ instead of $O(T^2 d)$", ha="center", size=9.5)
    save(fig, "10-routing")


if __name__ == "__main__":
    main()

"""Chapter 05: RoPE rotates each pair of a query's and a key's components by an angle proportional to position.

Left: one pair (frequency omega_k) of a query at position i and a key at position j, before and after rotation by
i omega_k and j omega_k; shifting both positions by the same amount turns both vectors together, so the angle
between them -- and their dot product -- depends only on the offset j - i. Right: a head of width d = 8 is four such
pairs, each turned at its own frequency, fast to slow.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import Arc, Circle  # noqa: E402
from style import COLORS, arrow, canvas, save, text  # noqa: E402

OMEGA = 0.45  # the frequency of the pair drawn on the left (radians per position), chosen to be visible
Q_ANGLE, K_ANGLE = math.radians(20), math.radians(75)  # the unrotated pair's directions


def dial(ax, cx: float, cy: float, radius: float, i: int, j: int, title: str) -> None:
    """One pair of components: the unrotated q and k (dashed) and the rotated ones (solid)."""
    ax.add_patch(Circle((cx, cy), radius, facecolor="none", edgecolor=COLORS["mask"], linewidth=1.0))
    ax.plot([cx - radius * 1.1, cx + radius * 1.1], [cy, cy], color=COLORS["mask"], lw=0.6)
    ax.plot([cx, cx], [cy - radius * 1.1, cy + radius * 1.1], color=COLORS["mask"], lw=0.6)
    for base, pos, color, name in ((Q_ANGLE, i, "query", "q"), (K_ANGLE, j, "key", "k")):
        end = (cx + 0.8 * radius * math.cos(base), cy + 0.8 * radius * math.sin(base))
        arrow(ax, (cx, cy), end, color=color, dashed=True)
        turned = base + pos * OMEGA
        tip = (cx + radius * math.cos(turned), cy + radius * math.sin(turned))
        arrow(ax, (cx, cy), tip, color=color)
        label = rf"$\tilde {name}_{{{'i' if name == 'q' else 'j'}}}$"
        text(
            ax,
            cx + 1.22 * radius * math.cos(turned),
            cy + 1.22 * radius * math.sin(turned),
            label,
            color=color,
            ha="center",
            va="center",
        )
    lo, hi = sorted((Q_ANGLE + i * OMEGA, K_ANGLE + j * OMEGA))
    ax.add_patch(
        Arc(
            (cx, cy),
            0.7 * radius,
            0.7 * radius,
            theta1=math.degrees(lo),
            theta2=math.degrees(hi),
            color=COLORS["weight"],
            lw=2.0,
        )
    )
    text(ax, cx, cy - radius - 0.45, title, ha="center", va="top", size=10)


def main() -> None:
    fig, ax = canvas(12.0, 4.7)
    text(
        ax,
        0.25,
        4.4,
        r"RoPE: turn pair $k$ of $q_i$ by $i\,\omega_k$ and of $k_j$ by $j\,\omega_k$;"
        r" the angle between them (purple) is $(j - i)\,\omega_k$, whatever $i$ is",
        size=11,
    )
    dial(ax, 1.55, 2.75, 1.05, 1, 3, "i = 1, j = 3")
    dial(ax, 4.35, 2.75, 1.05, 5, 7, "i = 5, j = 7: both turned further,\nthe angle between them is the same")
    text(ax, 2.95, 2.75, "=", ha="center", va="center", size=18, color="weight")
    text(
        ax,
        0.3,
        0.25,
        r"dashed: $q_i$, $k_j$ before rotation; solid: after.  "
        r"$\tilde q_i \tilde k_j^{\top} = q_i R_{i} R_{j}^{\top} k_j^{\top} = q_i R_{i-j}\, k_j^{\top}$",
        size=10,
    )
    # right: a head of width d = 8 is four pairs, turned at frequencies omega_k = 10000^(-2k/8)
    d, i = 8, 3
    x0 = 7.0
    text(ax, x0 - 0.2, 3.9, rf"a query of width d = {d} at position i = {i}: four pairs, four speeds", size=10)
    for k in range(d // 2):
        omega = 10000 ** (-2 * k / d)
        cx, cy, radius = x0 + 0.55 + k * 1.25, 2.75, 0.45
        ax.add_patch(Circle((cx, cy), radius, facecolor=COLORS["light"], edgecolor=COLORS["query"], linewidth=1.2))
        arrow(ax, (cx, cy), (cx + radius, cy), color="mask", dashed=True)
        angle = i * omega
        arrow(ax, (cx, cy), (cx + radius * math.cos(angle), cy + radius * math.sin(angle)), color="query")
        text(ax, cx, cy + radius + 0.12, f"dims {k}, {k + d // 2}", ha="center", va="bottom", size=8.5)
        text(ax, cx, cy - radius - 0.1, rf"$\omega_{k}$ = {omega:.3g}", ha="center", va="top", size=9)
        text(ax, cx, cy - radius - 0.42, rf"$i\omega_{k}$ = {angle:.3g}", ha="center", va="top", size=9)
    text(
        ax,
        x0 - 0.2,
        1.3,
        "fast pairs resolve nearby offsets, slow pairs far ones\n(half layout: dimension k pairs with k + d/2)",
        size=9,
    )
    save(fig, "05-rope")


if __name__ == "__main__":
    main()

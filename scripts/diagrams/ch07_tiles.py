"""Chapter 07: tiled ("flash") attention (writes 07-tiles.svg).

The (T_q x T_k) score matrix is cut into tiles: Q into row blocks Q_r (blue), K into column blocks K_c (orange).
One block of queries sweeps over the key blocks; each tile S_rc = Q_r K_c^T / sqrt(d) lives only while it is
processed (purple), the tiles already swept are gone (pale), and under a causal mask the tiles above the
diagonal are never computed (grey hatch). On the right, the only state the block keeps: the running maximum m,
the running sum l and the unnormalised output O, updated with V_c (green) after each tile. For the backward pass
only the output and the log-sum-exp lse = m + log l of each row are saved.
"""

from __future__ import annotations

from matplotlib.patches import FancyBboxPatch, Rectangle
from style import COLORS, arrow, canvas, save, tensor, text

N = 6  # tiles per side
CELL = 0.46  # inches per tile
ROW, COL = 3, 2  # the tile being computed: query block r = ROW, key block c = COL (COL <= ROW: causal-visible)

fig, ax = canvas(10.4, 5.6)
x0, y_top = 1.55, 4.2  # top left corner of the score grid
text(
    ax,
    0.2,
    5.3,
    r"Tiled attention: a block of queries $Q_r$ sweeps over the key blocks $K_c$; one tile of scores exists at a time",
    size=11.5,
)

# Q blocks on the left, K^T blocks on top
for i in range(N):
    y = y_top - (i + 0.5) * CELL
    ax.add_patch(
        Rectangle(
            (x0 - 0.55, y - CELL / 2 + 0.02),
            0.4,
            CELL - 0.04,
            facecolor=COLORS["query"],
            alpha=0.95 if i == ROW else 0.35,
            edgecolor="white",
        )
    )
    x = x0 + (i + 0.5) * CELL
    ax.add_patch(
        Rectangle(
            (x - CELL / 2 + 0.02, y_top + 0.15),
            CELL - 0.04,
            0.4,
            facecolor=COLORS["key"],
            alpha=0.95 if i == COL else 0.35,
            edgecolor="white",
        )
    )
text(ax, x0 - 0.35, y_top - (ROW + 0.5) * CELL, "$Q_r$", ha="center", va="center", size=10, color="white")
text(ax, x0 - 0.9, y_top - N * CELL / 2, "$Q$", ha="center", va="center", size=12, color="query")
text(ax, x0 + (COL + 0.5) * CELL, y_top + 0.35, "$K_c$", ha="center", va="center", size=10, color="white")
text(ax, x0 + N * CELL + 0.15, y_top + 0.35, r"$K^\top$", va="center", size=12, color="key")

# the tiles of S
for i in range(N):
    for j in range(N):
        x, y = x0 + j * CELL, y_top - (i + 1) * CELL
        if j > i:  # causal: never computed
            ax.add_patch(
                Rectangle((x, y), CELL, CELL, facecolor="white", edgecolor=COLORS["mask"], hatch="///", linewidth=0.6)
            )
            continue
        if i == ROW and j == COL:
            face, alpha = COLORS["weight"], 0.95
        elif i == ROW and j < COL:
            face, alpha = COLORS["weight"], 0.25
        else:
            face, alpha = COLORS["light"], 1.0
        ax.add_patch(Rectangle((x, y), CELL, CELL, facecolor=face, alpha=alpha, edgecolor="white", linewidth=1.0))
        ax.add_patch(Rectangle((x, y), CELL, CELL, facecolor="none", edgecolor="#cccccc", linewidth=0.5))
text(ax, x0 + (COL + 0.5) * CELL, y_top - (ROW + 0.5) * CELL, "$S_{rc}$", ha="center", va="center", color="white")
legend = (
    (r"$S$: $T_q \times T_k$ scores, never stored whole", "output"),
    ("pale purple: tiles of block row $r$ already swept (freed)", "weight"),
    ("hatched: skipped under the causal mask", "mask"),
)
for line, (words, color) in enumerate(legend):
    text(
        ax, x0 + N * CELL / 2, y_top - N * CELL - 0.2 - 0.28 * line, words, ha="center", va="top", size=9.5, color=color
    )
arrow(ax, (x0, y_top + 0.75), (x0 + N * CELL, y_top + 0.75), color="weight")
text(ax, x0 + N * CELL + 0.15, y_top + 0.75, "sweep over the key blocks $c$", va="center", size=9.5, color="weight")

# the tile's computation and the running state
xs = x0 + N * CELL + 1.0  # left edge of the right-hand side
tile_c = (x0 + (COL + 1) * CELL, y_top - (ROW + 0.5) * CELL)
arrow(ax, tile_c, (xs + 0.1, 3.4), color="weight", rad=-0.15)
text(ax, xs + 0.15, 3.85, r"$S_{rc} = Q_r K_c^\top/\sqrt{d}$  (+ mask)", size=10.5)
text(ax, xs + 0.15, 3.5, r"$m' = \max(m,\ \mathrm{rowmax}\ S_{rc})$", size=10.5)
text(ax, xs + 0.15, 3.15, r"$\hat A = \exp(S_{rc} - m')$,   $\alpha = e^{\,m - m'}$", size=10.5)
text(ax, xs + 0.15, 2.8, r"$\ell' = \alpha\,\ell + \mathrm{rowsum}\ \hat A$", size=10.5)
text(ax, xs + 0.15, 2.45, r"$O' = \alpha\,O + \hat A\,V_c$", size=10.5)
tensor(ax, xs + 3.6, 2.9, 4, 3, "value", label="$V_c$", shape="$(b_k, d_v)$", cell=0.17)
arrow(ax, (xs + 3.3, 2.55), (xs + 2.0, 2.5), color="value")

# the state box: m, l, O of the block's rows
bx, by, bw, bh = xs + 0.05, 0.55, 4.6, 1.5
ax.add_patch(
    FancyBboxPatch(
        (bx, by),
        bw,
        bh,
        boxstyle="round,pad=0.02,rounding_size=0.08",
        facecolor="none",
        edgecolor=COLORS["cache"],
        linewidth=2.0,
    )
)
text(
    ax,
    bx + 0.12,
    by + bh - 0.12,
    "state of block $r$ (its $b_q$ rows): all the memory it needs",
    va="top",
    size=9.5,
    color="cache",
)
tensor(ax, bx + 0.6, by + 0.55, 4, 1, "output", label="$m$", cell=0.17)
tensor(ax, bx + 1.2, by + 0.55, 4, 1, "output", label=r"$\ell$", cell=0.17)
tensor(ax, bx + 2.0, by + 0.55, 4, 3, "output", label="$O$", cell=0.17)
text(ax, bx + 2.5, by + 0.75, r"after the last $c$:", va="center", size=9.5)
text(ax, bx + 2.5, by + 0.45, r"out $= O/\ell$,  lse $= m + \log \ell$", va="center", size=9.5)
text(ax, bx + 2.5, by + 0.15, r"saved for backward: out, lse", va="center", size=9.5, color="cache")
arrow(ax, (xs + 1.0, 2.3), (xs + 1.0, by + bh + 0.05), color="cache")

save(fig, "07-tiles")

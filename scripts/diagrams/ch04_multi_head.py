"""Chapter 04: multi-head attention.

One projection per role (W_Q, W_K, W_V, each D -> D) produces every head's queries, keys and values at once;
splitting the D columns into H groups of d = D/H gives each head its own slice. Each head runs scaled
dot-product attention on its slice (its own T x T weights), the H outputs are concatenated back to width D,
and W_O mixes them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import arrow, canvas, op, proj, save, tensor, text  # noqa: E402

T, D, H = 4, 6, 3
d = D // H
CELL = 0.15
HEAD_Y = (4.35, 2.85, 1.35)
HEAD_SHADE = ((1.0,) * d, (0.55,) * d, (0.2,) * d)  # head h's columns drawn in its own shade


def shaded(values_per_head, rows=T):
    """Rows of cell shades: head h's d columns share the shade HEAD_SHADE[h]."""
    row = [v for head in values_per_head for v in head]
    return [row] * rows


def main() -> None:
    fig, ax = canvas(12.9, 5.7)
    text(
        ax,
        0.2,
        5.4,
        r"Multi-head attention: project once, split the width $D$ into $H$ heads of $d = D/H$, "
        r"attend per head, concatenate, mix with $W_O$",
        size=11,
    )
    tensor(ax, 0.65, 2.85, T, D, "output", label=r"$X$", shape=r"$T \times D$", cell=CELL)
    roles = ((4.35, r"$W_Q$", "query", "Q"), (2.85, r"$W_K$", "key", "K"), (1.35, r"$W_V$", "value", "V"))
    for y, name, color, letter in roles:
        arrow(ax, (1.15, 2.85), (1.7, y))
        proj(ax, 2.15, y, name, color=color, w=0.8)
        tensor(ax, 3.45, y, T, D, color, shape=rf"${letter}$: $T \times D$", cell=CELL, values=shaded(HEAD_SHADE))
        arrow(ax, (2.57, y), (2.93, y), color=color)
    op(ax, 4.75, 2.85, "split\ninto\nH heads", w=0.95, h=3.7)
    for y in (4.35, 2.85, 1.35):
        arrow(ax, (3.98, y), (4.26, y))
    for h, y in enumerate(HEAD_Y):
        shade = [list(HEAD_SHADE[h])] * T
        for k, (color, letter) in enumerate((("query", "q"), ("key", "k"), ("value", "v"))):
            x = 5.6 + 0.45 * k
            tensor(ax, x, y, T, d, color, cell=CELL, values=shade)
            text(ax, x, y + T * CELL / 2 + 0.06, rf"${letter}_{h + 1}$", ha="center", va="bottom", size=9)
        arrow(ax, (5.23, y), (5.45, y))
        op(ax, 7.85, y + 0.12, r"softmax$\left(\frac{q_h k_h^\top}{\sqrt{d}}\right) v_h$", w=1.9, h=0.6)
        arrow(ax, (6.74, y + 0.12), (6.88, y + 0.12))
        weights = [[0.9, 0.2, 0.5, 0.1][(i + h) % T :] + [0.9, 0.2, 0.5, 0.1][: (i + h) % T] for i in range(T)]
        tensor(ax, 7.35, y - 0.52, T, T, "weight", cell=0.075, values=weights)
        text(ax, 7.6, y - 0.52, rf"weights $A_{h + 1}$: $T \times T$", va="center", size=8.5, color="weight")
        tensor(ax, 9.4, y, T, d, "output", cell=CELL, values=shade, label=rf"$o_{h + 1}$")
        arrow(ax, (8.82, y), (9.2, y))
    op(ax, 10.3, 2.85, "concat", w=0.85, h=3.7)
    for y in HEAD_Y:
        arrow(ax, (9.6, y), (9.86, y))
    text(ax, 10.3, 0.45, r"$T \times Hd = T \times D$", ha="center", size=9, color="output")
    proj(ax, 11.3, 2.85, r"$W_O$", color="output", w=0.65)
    arrow(ax, (10.74, 2.85), (10.96, 2.85))
    tensor(ax, 12.35, 2.85, T, D, "output", label="output", shape=r"$T \times D$", cell=CELL)
    arrow(ax, (11.64, 2.85), (11.88, 2.85))
    save(fig, "04-multi-head")


if __name__ == "__main__":
    main()

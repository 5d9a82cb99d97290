"""Chapter 04: the encoder-decoder Transformer, and its blocks in the two normalisation orders.

Left: token ids are embedded (times sqrt(D)), positions are added, L encoder blocks read the source and L
decoder blocks read the shifted target and, through cross-attention, the encoder's output (the memory);
each stack ends with a LayerNorm, and a linear head gives next-token logits. Right: one decoder block,
post-norm (the 2017 original, LN after each residual sum) beside pre-norm (LN inside the branch, the residual
stream a plain sum).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import FancyBboxPatch  # noqa: E402
from style import COLORS, arrow, canvas, op, proj, save, text  # noqa: E402


def stack_box(ax, x: float, y0: float, y1: float, w: float, label: str) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y0),
            w,
            y1 - y0,
            boxstyle="round,pad=0.02,rounding_size=0.12",
            facecolor="none",
            edgecolor=COLORS["output"],
            linewidth=1.4,
            linestyle="--",
        )
    )
    text(ax, x + w / 2 - 0.08, y1 - 0.1, label, ha="right", va="top", size=10)


def overview(ax) -> None:
    text(ax, 3.0, 7.45, "The encoder-decoder Transformer", ha="center", size=11.5)
    for x, ids in ((1.45, "source ids"), (4.45, "target ids, shifted right")):
        text(ax, x, 0.25, ids, ha="center", size=9.5)
        proj(ax, x, 0.85, r"embedding $\times\sqrt{D}$", w=1.75)
        arrow(ax, (x, 0.42), (x, 0.62))
        op(ax, x, 1.55, "+")
        arrow(ax, (x, 1.08), (x, 1.33))
        text(ax, x - 0.3, 1.55, "positions\n(chapter 05)", ha="right", va="center", size=8.5, color="position")
        arrow(ax, (x - 0.3, 1.55), (x - 0.22, 1.55), color="position")
        arrow(ax, (x, 1.77), (x, 2.15))
    # encoder stack
    stack_box(ax, 1.45, 2.15, 4.6, 2.1, r"$\times L$")
    op(ax, 1.45, 2.75, "self-attention", w=1.6)
    op(ax, 1.45, 3.65, "feed-forward", w=1.6)
    arrow(ax, (1.45, 2.97), (1.45, 3.43))
    arrow(ax, (1.45, 4.6), (1.45, 5.05))
    op(ax, 1.45, 5.3, "LayerNorm", w=1.3)
    text(ax, 1.45, 5.65, "memory", ha="center", size=9.5, color="cache")
    # decoder stack
    stack_box(ax, 4.45, 2.15, 5.05, 2.3, r"$\times L$")
    op(ax, 4.45, 2.65, "masked self-attention", w=2.0)
    op(ax, 4.45, 3.5, "cross-attention", w=2.0)
    op(ax, 4.45, 4.35, "feed-forward", w=2.0)
    arrow(ax, (4.45, 2.87), (4.45, 3.28))
    arrow(ax, (4.45, 3.72), (4.45, 4.13))
    arrow(ax, (1.45, 5.52), (3.45, 3.5), color="cache", rad=-0.25)
    text(ax, 2.75, 4.75, "keys, values", size=8.5, color="cache")
    arrow(ax, (4.45, 5.05), (4.45, 5.3))
    op(ax, 4.45, 5.55, "LayerNorm", w=1.3)
    proj(ax, 4.45, 6.3, r"linear head $\to |\mathcal{V}|$", w=1.9)
    arrow(ax, (4.45, 5.77), (4.45, 6.07))
    op(ax, 4.45, 7.0, "softmax: next token", w=1.9)
    arrow(ax, (4.45, 6.53), (4.45, 6.78))
    text(ax, 4.45, 2.28, "causal + padding masks", ha="center", size=8.5, color="mask", va="center")
    text(ax, 1.45, 2.35, "padding mask", ha="center", size=8.5, color="mask", va="center")


def block(ax, x: float, norm_first: bool) -> None:
    title = "pre-norm:  x + F(LN(x))" if norm_first else "post-norm (2017):  LN(x + F(x))"
    text(ax, x, 7.45, title, ha="center", size=10.5)
    note = "one LayerNorm after the last block" if norm_first else "the LayerNorm sits on the residual path"
    text(ax, x, 7.1, note, ha="center", size=8.5, color="output")
    y = 0.6
    text(ax, x, 0.2, "x (from the block below)", ha="center", size=9)
    sublayers = ("masked self-attention", "cross-attention", "feed-forward")
    for i, name in enumerate(sublayers):
        if norm_first:
            op(ax, x, y + 0.38, "LayerNorm", w=1.3)
            op(ax, x, y + 0.98, name, w=1.95)
            op(ax, x, y + 1.55, "+")
            arrow(ax, (x, y), (x, y + 0.17))
            arrow(ax, (x, y + 0.59), (x, y + 0.77))
            arrow(ax, (x, y + 1.19), (x, y + 1.33))
            plus_y = y + 1.55
            y_out = y + 1.77
        else:
            op(ax, x, y + 0.38, name, w=1.95)
            op(ax, x, y + 0.98, "+")
            op(ax, x, y + 1.55, "LayerNorm", w=1.3)
            arrow(ax, (x, y), (x, y + 0.17))
            arrow(ax, (x, y + 0.59), (x, y + 0.76))
            arrow(ax, (x, y + 1.2), (x, y + 1.34))
            plus_y = y + 0.98
            y_out = y + 1.76
        # the residual: branch off before the sublayer, rejoin at the sum
        side = x - 1.2
        ax.plot([x, side, side], [y + 0.07, y + 0.07, plus_y], color=COLORS["output"], linewidth=1.4)
        arrow(ax, (side, plus_y), (x - 0.22, plus_y))
        if i == 1:
            text(ax, x + 1.02, y + (0.98 if norm_first else 0.38), "memory", va="center", size=8.5, color="cache")
        if i < len(sublayers) - 1:
            arrow(ax, (x, y_out), (x, y_out + 0.2))
        y = y_out + 0.2
    arrow(ax, (x, y - 0.2), (x, y + 0.1))
    text(ax, x, y + 0.2, "to the next block", ha="center", va="bottom", size=9)


def main() -> None:
    fig, ax = canvas(12.6, 7.8)
    overview(ax)
    ax.plot([6.55, 6.55], [0.2, 7.55], color=COLORS["mask"], linewidth=0.8)
    block(ax, 8.05, norm_first=False)
    block(ax, 10.9, norm_first=True)
    save(fig, "04-transformer")


if __name__ == "__main__":
    main()

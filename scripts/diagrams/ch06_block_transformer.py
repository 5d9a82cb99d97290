"""Chapter 06: the Block Transformer's global-to-local decoding (Ho et al. 2024).

Bottom: the tokens, cut into blocks of L_B = 4. The embedder turns each block into one vector e_b (look up,
concatenate, project). The block decoder, a causal Transformer over block vectors shifted right by one (a start
vector first), gives each block a context c_b built only from earlier blocks. Top right: the token decoder turns
c_b into prefix vectors and decodes block b's tokens, attending only inside the block.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import FancyBboxPatch, Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, proj, save, tensor, text  # noqa: E402

BLOCK_LEN, N_BLOCKS, CELL = 4, 3, 0.3


def wide_box(ax, x0: float, x1: float, y: float, label: str, color: str, h: float = 0.55) -> None:
    """A learned stack drawn as one wide projection box from x0 to x1."""
    ax.add_patch(
        FancyBboxPatch(
            (x0, y - h / 2),
            x1 - x0,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor="white",
            edgecolor=COLORS[color],
            linewidth=1.8,
        )
    )
    ax.text((x0 + x1) / 2, y, label, ha="center", va="center", color=COLORS["text"], fontsize=10.5)


def main() -> None:
    fig, ax = canvas(11.6, 5.9)
    text(
        ax,
        0.25,
        5.6,
        "Block Transformer: a global decoder over block vectors, then a local decoder inside each block",
        size=11,
    )
    centres = []
    for b in range(N_BLOCKS):  # the tokens, in blocks
        x0 = 0.9 + b * 2.1
        for i in range(BLOCK_LEN):
            ax.add_patch(
                Rectangle(
                    (x0 + i * CELL, 0.55),
                    CELL,
                    CELL,
                    facecolor=COLORS["output"],
                    alpha=0.8,
                    edgecolor="white",
                    linewidth=1.0,
                )
            )
            text(ax, x0 + (i + 0.5) * CELL, 0.35, f"$x_{{{b * BLOCK_LEN + i + 1}}}$", ha="center", va="top", size=8.5)
        centre = x0 + BLOCK_LEN * CELL / 2
        centres.append(centre)
        text(ax, centre, 1.0, f"block {b + 1}", ha="center", va="bottom", size=9, color="output")
        proj(ax, centre, 1.75, "embedder", w=1.2)
        arrow(ax, (centre, 1.25), (centre, 1.52))
        tensor(ax, centre, 2.45, 1, 4, "output", cell=0.18)
        text(ax, centre + 0.45, 2.45, f"$e_{b + 1}$", va="center", size=10)
        arrow(ax, (centre, 1.98), (centre, 2.33))
    # the block decoder, fed with the block vectors shifted right by one
    y_dec = 3.55
    wide_box(
        ax, 0.35, 7.0, y_dec, r"block decoder: $L_\mathrm{blk}$ causal layers over block vectors (global)", "weight"
    )
    for b in range(N_BLOCKS - 1):  # e_b feeds the slot of block b + 1
        arrow(ax, (centres[b] + 0.1, 2.58), (centres[b + 1] - 0.35, y_dec - 0.3), color="output", rad=-0.1)
    tensor(ax, centres[0] - 0.35, 2.95, 1, 4, "mask", cell=0.14)
    text(ax, centres[0] - 0.7, 2.95, "start", ha="right", va="center", size=9, color="output")
    arrow(ax, (centres[0] - 0.35, 3.04), (centres[0] - 0.35, y_dec - 0.3), color="output")
    text(
        ax,
        0.35,
        5.2,
        "inputs shifted right by one block (a start vector first): $c_b$ sees only blocks $< b$",
        size=9.5,
        color="output",
    )
    for b, centre in enumerate(centres):
        tensor(ax, centre, 4.45, 1, 4, "weight", cell=0.18)
        text(ax, centre + 0.45, 4.45, f"$c_{b + 1}$", va="center", size=10)
        arrow(ax, (centre, y_dec + 0.3), (centre, 4.33))
    # the token decoder of the last block
    c_last = centres[-1]
    proj(ax, 8.35, 4.45, r"prefix $W_\mathrm{pre}$", w=1.35)
    arrow(ax, (c_last + 0.75, 4.45), (7.7, 4.45))
    y_tok = 3.0
    wide_box(
        ax, 7.45, 11.35, y_tok, "token decoder: $L_\\mathrm{tok}$ layers,\nonly inside block 3 (local)", "query", h=0.8
    )
    arrow(ax, (8.35, 4.22), (8.1, y_tok + 0.42))
    tensor(ax, 8.75, 1.9, 1, 1, "weight", shape="prefix", cell=0.24)
    arrow(ax, (8.75, 2.05), (8.75, y_tok - 0.42))
    for i in range(BLOCK_LEN - 1):
        x = 9.5 + i * 0.45
        ax.add_patch(Rectangle((x - 0.12, 1.78), 0.24, 0.24, facecolor=COLORS["output"], alpha=0.8, edgecolor="white"))
        text(ax, x, 1.68, f"$x_{{{2 * BLOCK_LEN + i + 1}}}$", ha="center", va="top", size=8.5)
        arrow(ax, (x, 2.05), (x, y_tok - 0.42))
    arrow(ax, (c_last + 0.65, 0.7), (9.4, 1.55), color="output", rad=0.15, dashed=True)
    for i in range(BLOCK_LEN):
        x = 8.75 + i * 0.6
        text(ax, x, 4.05, f"$x_{{{2 * BLOCK_LEN + i + 1}}}$", ha="center", va="bottom", size=8.5, color="weight")
        arrow(ax, (x, y_tok + 0.42), (x, 3.98), color="weight")
    text(ax, 9.3, 4.75, "predicts the block's 4 tokens", size=9, color="weight")
    text(
        ax,
        7.45,
        0.5,
        "per token: $L_\\mathrm{tok}$ layers read at most $n_\\mathrm{pre} + L_B - 1$ rows;\n"
        "the block decoder steps once per block",
        size=9,
        va="center",
    )
    save(fig, "06-block-transformer")


if __name__ == "__main__":
    main()

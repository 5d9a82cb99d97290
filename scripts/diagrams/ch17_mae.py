"""Chapter 17: the masked autoencoder, and CAE's cross-attention regressor.

Left to right: a 4 x 4 grid of patches, most hidden (grey); the visible ones (blue) alone enter the encoder; the
decoder's input is the encoded visible tokens plus one shared mask token at each hidden place, in raster order; a
light decoder predicts every patch and the loss counts the hidden ones. Below: CAE's regressor, whose mask queries
cross-attend to the visible latents and themselves (purple weights) before a decoder that sees only Z_m.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import COLORS, arrow, canvas, op, proj, save, tensor, text  # noqa: E402

VISIBLE = {1, 6, 11, 12}  # of the 16 patches, raster order
WEIGHTS = [[0.8, 0.3, 0.5, 0.2, 0.1, 0.2], [0.2, 0.9, 0.3, 0.4, 0.2, 0.1], [0.4, 0.2, 0.7, 0.2, 0.3, 0.1]]


def patch_grid(ax, x0, y0, cell, colors):
    for j, color in enumerate(colors):
        r, c = divmod(j, 4)
        tensor(ax, x0 + c * cell, y0 - r * cell, 1, 1, color, cell=cell * 0.92)


def main() -> None:
    fig, ax = canvas(12.4, 6.0)
    text(ax, 0.2, 5.65, "MAE: encode the visible patches only, reconstruct the hidden ones", size=11.5)
    cell = 0.36
    patch_grid(ax, 0.55, 4.65, cell, ["query" if j in VISIBLE else "mask" for j in range(16)])
    text(ax, 1.09, 5.05, "image patches", ha="center", size=9.5)
    text(ax, 1.09, 3.1, "shuffle: keep $T_v$,\nhide $T_m$", ha="center", size=9, color="mask")
    arrow(ax, (1.85, 4.1), (2.45, 4.1))
    tensor(ax, 2.85, 4.1, 4, 1, "query", cell=0.3, shape="$T_v\\times D$")
    text(ax, 2.85, 4.85, "visible", ha="center", size=9, color="query")
    arrow(ax, (3.1, 4.1), (3.6, 4.1))
    proj(ax, 4.35, 4.1, "encoder $f_\\theta$", color="weight", w=1.3, h=0.55)
    text(ax, 4.35, 3.55, "$O(T_v^2)$ scores", ha="center", size=9, color="weight")
    arrow(ax, (5.05, 4.1), (5.55, 4.1))
    tensor(ax, 5.85, 4.1, 4, 1, "output", cell=0.3, shape="$Z_v$")
    arrow(ax, (6.05, 4.1), (6.55, 4.1))
    op(ax, 7.0, 4.1, "+", r=0.2)
    tensor(ax, 7.0, 5.05, 1, 1, "mask", cell=0.3)
    text(ax, 6.8, 5.05, "mask token $m$\n(shared)", size=8.5, color="mask", va="center", ha="right")
    arrow(ax, (7.0, 4.85), (7.0, 4.32), color="mask")
    text(ax, 7.0, 3.55, "unshuffle\n+ positions", ha="center", size=8.5, va="top")
    arrow(ax, (7.22, 4.1), (7.75, 4.1))
    colors = ["output" if j in VISIBLE else "mask" for j in range(16)]
    for j, color in enumerate(colors):
        tensor(ax, 8.0, 5.0 - j * 0.12, 1, 1, color, cell=0.11)
    text(ax, 8.0, 5.25, "$T$ tokens", ha="center", size=9)
    arrow(ax, (8.2, 4.1), (8.6, 4.1))
    proj(ax, 9.3, 4.1, "light decoder", color="output", w=1.25, h=0.55)
    arrow(ax, (9.95, 4.1), (10.4, 4.1))
    patch_grid(ax, 10.6, 4.65, cell, ["value" if j not in VISIBLE else "light" for j in range(16)])
    text(ax, 11.14, 5.05, "prediction", ha="center", size=9.5)
    text(ax, 11.14, 3.1, "loss on hidden\npatches only", ha="center", size=9, color="value")

    ax.plot([0.2, 12.2], [2.45, 2.45], color=COLORS["light"], lw=2)
    text(ax, 0.2, 2.1, "CAE: a regressor made of cross-attention", size=11)
    tensor(ax, 1.1, 1.0, 3, 1, "mask", cell=0.3, shape="$Z_m$ queries")
    text(ax, 1.1, 1.6, "mask token + $\\Pi_m$", size=8.5, color="mask", ha="center")
    tensor(ax, 2.5, 1.45, 1, 4, "key", cell=0.25)
    tensor(ax, 3.5, 1.45, 1, 3, "mask", cell=0.25)
    text(ax, 3.0, 1.85, "keys, values: $[Z_v; Z_m]$", ha="center", size=9, color="key")
    arrow(ax, (1.35, 1.0), (4.85, 1.0))
    tensor(ax, 5.6, 1.0, 3, 6, "weight", cell=0.22, values=WEIGHTS)
    arrow(ax, (3.0, 1.25), (5.1, 1.25), color="key")
    text(ax, 5.6, 1.55, "cross-attention", ha="center", size=9, color="weight")
    arrow(ax, (6.35, 1.0), (6.95, 1.0))
    op(ax, 7.55, 1.0, "LN, MLP", w=1.0)
    arrow(ax, (8.1, 1.0), (8.5, 1.0))
    tensor(ax, 8.8, 1.0, 3, 1, "output", cell=0.3, shape="$Z_m$")
    arrow(ax, (8.8, 1.55), (8.8, 2.1), color="value", dashed=True)
    text(ax, 8.95, 1.85, "align with sg$(f_\\theta$(hidden patches))", size=8.5, color="value")
    arrow(ax, (9.05, 1.0), (9.55, 1.0))
    proj(ax, 10.3, 1.0, "decoder $h$", color="output", w=1.2, h=0.5)
    arrow(ax, (10.95, 1.0), (11.4, 1.0))
    tensor(ax, 11.7, 1.0, 3, 1, "value", cell=0.3, shape="hidden patches")
    text(
        ax,
        4.3,
        0.35,
        "$Z_v$ is read, never written: the encoder alone makes the representation",
        size=8.5,
        color="output",
    )
    save(fig, "17-mae")


if __name__ == "__main__":
    main()

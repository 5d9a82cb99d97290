"""Chapter 14: three ways a convolution becomes attention-like (weights computed from the input).

Row 1, VAN's large-kernel attention: x -> depth-wise 5 x 5 -> depth-wise 7 x 7 with dilation 3 -> 1 x 1 gives an
attention map (purple) that multiplies x element-wise. Row 2, attentive convolution: a small network reads x (1 x 1,
average over k^2 strips, linear) and writes a k x k kernel per sample and channel; lateral inhibition subtracts a
gated share of its mean; the kernel is convolved with a projection of x. Row 3, HyperZ.Z.W: a coordinate network
(slow, teal) writes a hyper-kernel from tap coordinates alone; sliding it over Z gives context-dependent weights
that multiply Z.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from style import arrow, canvas, op, proj, save, tensor, text  # noqa: E402

RNG = np.random.default_rng(0)


def main() -> None:
    fig, ax = canvas(11.0, 6.2)
    ys = (5.15, 3.15, 1.05)
    titles = ("large-kernel attention (VAN)", "attentive convolution (ATConv)", "HyperZ$\\cdot$Z$\\cdot$W")
    for y, title in zip(ys, titles, strict=True):
        text(ax, 0.15, y + 0.62, title, size=11, va="bottom")
        tensor(ax, 0.7, y, 4, 4, "output", cell=0.15, values=np.full((4, 4), 0.35))
        text(ax, 0.7, y - 0.42, "$x$" if y != ys[2] else "$Z$", ha="center", va="top", size=10)
    # row 1: LKA
    y = ys[0]
    proj(ax, 2.1, y, "DW $5\\times5$", w=1.15)
    proj(ax, 3.7, y, "DW-D $7\\times7$, d=3", w=1.75)
    proj(ax, 5.25, y, "$1\\times1$", w=0.8)
    arrow(ax, (1.05, y), (1.5, y))
    arrow(ax, (2.7, y), (2.8, y))
    arrow(ax, (4.6, y), (4.83, y))
    tensor(ax, 6.35, y, 4, 4, "weight", cell=0.15, values=RNG.uniform(0, 1, (4, 4)))
    arrow(ax, (5.67, y), (6.02, y))
    text(ax, 6.35, y - 0.42, "attention map", ha="center", va="top", size=9, color="weight")
    op(ax, 7.5, y, "×")
    arrow(ax, (6.68, y), (7.27, y))
    arrow(ax, (0.7, y + 0.32), (7.5, y + 0.24), rad=-0.12)
    text(ax, 7.85, y, "out = $x \\odot$ attn  (no softmax)", va="center", size=10)
    # row 2: ATConv
    y = ys[1]
    proj(ax, 2.05, y + 0.35, "$1\\times1$", w=0.7)
    op(ax, 3.25, y + 0.35, "pool $k^2$ strips", w=1.3, h=0.36)
    proj(ax, 4.45, y + 0.35, "linear $k^2$", w=0.95)
    arrow(ax, (1.05, y + 0.1), (1.68, y + 0.35))
    arrow(ax, (2.42, y + 0.35), (2.58, y + 0.35))
    arrow(ax, (3.86, y + 0.35), (3.96, y + 0.35))
    tensor(ax, 5.6, y + 0.35, 3, 3, "weight", cell=0.17, values=RNG.uniform(0, 1, (3, 3)))
    arrow(ax, (4.94, y + 0.35), (5.32, y + 0.35))
    op(ax, 6.75, y + 0.35, "$-\\sigma(\\lambda)$ mean", w=1.45, h=0.36)
    arrow(ax, (5.88, y + 0.35), (6.02, y + 0.35))
    text(ax, 6.75, y + 0.6, "lateral inhibition", ha="center", va="bottom", size=9, color="weight")
    text(ax, 4.45, y + 0.64, "adaptive routing", ha="center", va="bottom", size=9, color="weight")
    proj(ax, 2.05, y - 0.4, "$W_x$", w=0.6)
    arrow(ax, (1.05, y - 0.1), (1.74, y - 0.4))
    op(ax, 7.75, y - 0.4, "conv", w=0.7)
    arrow(ax, (2.36, y - 0.4), (7.39, y - 0.4))
    arrow(ax, (7.25, y + 0.17), (7.7, y - 0.2))
    proj(ax, 8.65, y - 0.4, "$W_o$", w=0.6)
    arrow(ax, (8.11, y - 0.4), (8.34, y - 0.4))
    text(ax, 9.1, y - 0.4, "one kernel per\nsample and channel", va="center", size=9)
    # row 3: HyperZ.Z.W
    y = ys[2]
    text(ax, 1.95, y + 0.32, "coordinates $c \\in [-1,1]^2$", ha="center", va="bottom", size=9, color="position")
    proj(ax, 2.1, y - 0.05, "slow net $g(c)$", "position", w=1.4)
    tensor(ax, 3.55, y - 0.05, 3, 3, "position", cell=0.17, values=RNG.uniform(0, 1, (3, 3)))
    arrow(ax, (2.82, y - 0.05), (3.27, y - 0.05))
    text(ax, 3.55, y + 0.27, "hyper-kernel $K$", ha="center", va="bottom", size=9, color="position")
    op(ax, 4.85, y - 0.05, "slide over $Z$", w=1.3)
    arrow(ax, (3.83, y - 0.05), (4.18, y - 0.05))
    arrow(ax, (0.7, y - 0.32), (4.85, y - 0.27), rad=0.12)
    tensor(ax, 6.35, y - 0.05, 4, 4, "weight", cell=0.15, values=RNG.uniform(0, 1, (4, 4)))
    arrow(ax, (5.52, y - 0.05), (6.02, y - 0.05))
    text(ax, 6.35, y - 0.42, "weights $\\hat W = K \\star Z$", ha="center", va="top", size=9, color="weight")
    op(ax, 7.5, y - 0.05, "×")
    arrow(ax, (6.68, y - 0.05), (7.27, y - 0.05))
    arrow(ax, (0.7, y + 0.32), (7.5, y + 0.19), rad=-0.2)
    text(ax, 7.85, y - 0.05, "out = $Z \\odot \\hat W$", va="center", size=10)
    save(fig, "14-conv-attention")


if __name__ == "__main__":
    main()

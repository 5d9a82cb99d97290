"""Chapter 10: Histoformer's histogram self-attention on one channel.

The channel's pixels (a 4 x 4 map, shaded by the value map v) are sorted by value; the sorted sequence is cut
into B = 4 bins, contiguous (bin-wise: pixels of similar intensity, wherever they are in the image) or strided
(frequency-wise: each bin samples the whole range). The (channel, bin) pairs are the tokens of a transposed
attention whose features are the bin's pixels; outputs are unsorted and the two branches multiplied.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import Rectangle  # noqa: E402
from style import arrow, canvas, op, proj, save, tensor, text  # noqa: E402

CELL = 0.3
BIN_COLORS = ("#d62728", "#17becf", "#e377c2", "#8c564b")  # bin identity only, outside the Q/K/V palette
IMAGE = [  # pixel intensities in [0, 1], a bright streak and a dark patch far apart
    [0.10, 0.55, 0.92, 0.30],
    [0.15, 0.62, 0.85, 0.40],
    [0.05, 0.48, 0.97, 0.35],
    [0.70, 0.20, 0.78, 0.25],
]


def square(ax, x, y, shade, edge="white", lw=0.8, size=CELL):
    grey = 0.95 - 0.85 * shade
    ax.add_patch(Rectangle((x, y), size, size, facecolor=(grey, grey, grey), edgecolor=edge, linewidth=lw))


def main() -> None:
    fig, ax = canvas(11.6, 4.9)
    text(
        ax,
        0.2,
        4.62,
        "Histogram self-attention: sort each channel's pixels by value, cut into bins, attend between bins",
        size=11,
    )
    values = [v for row in IMAGE for v in row]
    order = sorted(range(16), key=lambda p: values[p])
    rank = {p: r for r, p in enumerate(order)}
    # the image, each pixel outlined with the colour of its bin-wise bin
    text(ax, 1.0, 4.05, "one channel of v", ha="center", size=10)
    for p, v in enumerate(values):
        i, j = divmod(p, 4)
        square(ax, 0.4 + j * CELL, 3.55 - i * CELL, v, edge=BIN_COLORS[rank[p] // 4], lw=2.2)
    text(ax, 1.0, 2.2, "outline = bin-wise bin", ha="center", size=8.5, color="output")
    op(ax, 2.55, 3.1, "sort", w=0.75)
    arrow(ax, (1.7, 3.1), (2.15, 3.1))
    arrow(ax, (2.95, 3.1), (3.4, 3.6))
    arrow(ax, (2.95, 3.1), (3.4, 2.0))
    # bin-wise (contiguous) and frequency-wise (strided) bins of the sorted sequence
    for y, label, bin_of in (
        (3.6, "bin-wise: contiguous runs", lambda r: r // 4),
        (2.0, "frequency-wise: strided", lambda r: r % 4),
    ):
        text(ax, 3.45, y + 0.38, label, size=9.5)
        for r, p in enumerate(order):
            square(ax, 3.45 + r * CELL, y - CELL / 2, values[p], edge=BIN_COLORS[bin_of(r)], lw=2.2)
    text(
        ax,
        5.85,
        1.25,
        "the channel's pixels sorted by increasing v (light to dark)",
        ha="center",
        size=8.5,
        color="output",
    )
    # tokens = (channel, bin): weights between them
    for y, tag in ((3.6, "1"), (2.0, "2")):
        arrow(ax, (8.3, y), (8.8, y))
        tensor(
            ax,
            9.25,
            y,
            4,
            4,
            "weight",
            cell=0.16,
            values=[[0.9, 0.3, 0.1, 0.2], [0.3, 0.8, 0.3, 0.1], [0.1, 0.2, 0.9, 0.3], [0.2, 0.1, 0.3, 0.8]],
        )
        text(ax, 9.25, y - 0.5, rf"softmax$_1(\tau\hat Q_{tag}\hat K_{tag}^\top)$", ha="center", va="center", size=9)
        arrow(ax, (9.7, y), (10.2, 2.85 if y > 2.8 else 2.75))
    text(ax, 9.25, 4.15, "tokens: (channel, bin)", ha="center", size=9)
    text(ax, 10.55, 3.35, "unsort", ha="center", size=8.5, color="output")
    op(ax, 10.45, 2.8, "×")
    arrow(ax, (10.45, 2.56), (10.45, 1.5))
    proj(ax, 10.45, 1.2, r"$W_O$")
    text(
        ax,
        0.2,
        0.55,
        r"Tokens are the $cB$ (channel, bin) pairs of a head; each has the $n = N/B$ pixels of its bin as features.",
        size=9.5,
    )
    text(
        ax,
        0.2,
        0.2,
        r"Cost $O((cB)^2\, N/B)$ per head: linear in the number of pixels $N$. "
        r"With $B = 1$: channel attention (XCiT, Restormer).",
        size=9.5,
    )
    save(fig, "10-histogram")


if __name__ == "__main__":
    main()

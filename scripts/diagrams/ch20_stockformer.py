"""Chapter 20: Stockformer. A wavelet split feeds a low-band and a high-band stream; each attends across stocks.

Returns (T days x N stocks) -> wavelet split (low + high = x). Low band: causal temporal attention over the days;
high band: a causal convolution. Each then goes through sparse spatial attention across the N stocks of a day
(the code's "copy": stock n takes row c(n) of AV). The dual-frequency fusion is a causal cross-attention with
queries from the low band and ReLU keys and values from the high band; a multi-task head predicts the next return
and its direction.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import arrow, canvas, op, proj, save, tensor, text  # noqa: E402

LOW_Y, HIGH_Y = 3.25, 1.25


def main() -> None:
    fig, ax = canvas(12.6, 4.6)
    text(
        ax,
        0.2,
        4.3,
        "Stockformer: a wavelet split, two streams, attention across stocks, a cross-attention between the bands",
        size=11,
    )
    # input window
    tensor(ax, 0.85, 2.25, 6, 4, "output", label="returns", shape="T days × N stocks")
    op(ax, 2.35, 2.25, "wavelet split", w=1.45)
    arrow(ax, (1.25, 2.25), (1.6, 2.25))
    text(ax, 2.35, 1.78, "low + high = x", ha="center", size=9, color="output")
    # the two streams
    for y, band, first in (
        (LOW_Y, "low band", "temporal attention\n(causal, per stock)"),
        (HIGH_Y, "high band", "causal conv\n(dilated)"),
    ):
        arrow(ax, (2.8, 2.25 + (0.22 if y > 2 else -0.22)), (3.55, y))
        text(ax, 3.0, y + (0.3 if y > 2 else -0.42), band, size=9.5, color="output")
        tensor(ax, 3.95, y, 4, 4, "position", cell=0.13)
        arrow(ax, (4.3, y), (4.75, y))
        proj(ax, 5.75, y, first, color="weight", w=1.9, h=0.72)
        arrow(ax, (6.7, y), (7.05, y))
        proj(ax, 7.95, y, "sparse spatial\nattention (stocks)", color="weight", w=1.75, h=0.72)
    text(
        ax,
        7.95,
        2.25,
        r"copy: $o_n = (AV)_{c(n)}$, $c(n) = \arg\max_i A_{in}$",
        ha="center",
        va="center",
        size=9,
        color="weight",
    )
    # fusion
    proj(ax, 10.0, 2.25, "cross-attention\n(causal)", color="weight", w=1.6, h=0.72)
    arrow(ax, (8.85, LOW_Y), (9.6, 2.62), color="query")
    text(ax, 9.35, 3.05, "Q", color="query", size=10)
    arrow(ax, (8.85, HIGH_Y), (9.55, 1.88), color="key")
    arrow(ax, (8.85, HIGH_Y - 0.15), (9.8, 1.88), color="value")
    text(ax, 9.5, 1.2, "ReLU K, V", color="key", size=9)
    # heads
    proj(ax, 11.85, 2.85, "return", color="output", w=1.0)
    proj(ax, 11.85, 1.65, "up / down", color="output", w=1.0)
    arrow(ax, (10.8, 2.35), (11.33, 2.8))
    arrow(ax, (10.8, 2.15), (11.33, 1.7))
    text(ax, 11.85, 0.95, "MAE + λ·CE", ha="center", size=9, color="output")
    text(ax, 10.0, 0.55, "last day → multi-task head", ha="center", size=9, color="output")
    save(fig, "20-stockformer")


if __name__ == "__main__":
    main()

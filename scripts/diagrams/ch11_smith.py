"""Chapter 11: SMITH's two-level encoder. Sentence blocks are encoded alone; a document encoder reads the blocks.

A document of 16 tokens is packed into four sentence blocks; the block encoder (shared weights) attends inside each
block only (a small purple grid per block) and keeps the [CLS] output as the block's vector; block-position
embeddings (teal) are added and the document encoder attends over the four block vectors; a mean pool gives the
document vector, compared with another document's by cosine. One block vector is hidden (grey) in pretraining and
predicted from the document encoder's output at its place.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import arrow, canvas, op, proj, save, tensor, text  # noqa: E402

WEIGHTS = [[0.9, 0.4, 0.2, 0.1], [0.3, 0.8, 0.3, 0.2], [0.2, 0.3, 0.9, 0.4], [0.1, 0.2, 0.4, 0.8]]


def main() -> None:
    fig, ax = canvas(11.6, 5.2)
    text(ax, 0.2, 4.9, "SMITH: attention inside sentence blocks, then attention over the blocks", size=11.5)
    ys = (4.05, 3.05, 2.05, 1.05)
    text(ax, 0.95, 4.5, "blocks of b tokens", ha="center", size=9.5, color="output")
    for i, y in enumerate(ys):
        tensor(ax, 0.95, y, 1, 4, "query", cell=0.24)
        text(ax, 0.2, y, f"{i + 1}", va="center", size=9, color="output")
        arrow(ax, (1.5, y), (2.05, y))
        tensor(ax, 2.45, y, 4, 4, "weight", cell=0.1, values=WEIGHTS)
        arrow(ax, (2.85, y), (3.35, y))
        tensor(ax, 3.55, y, 1, 1, "mask" if i == 2 else "output", cell=0.24)
    text(ax, 2.45, 4.5, "block encoder", ha="center", size=9.5, color="weight")
    text(ax, 2.45, 0.35, r"$b\times b$ weights per block", ha="center", size=9, color="weight")
    text(ax, 3.55, 4.5, "block vectors", ha="center", size=9.5, color="output")
    text(ax, 3.55, 1.8, "hidden", ha="center", size=8, color="mask")
    op(ax, 5.1, 2.55, "+", r=0.2)
    tensor(ax, 5.1, 3.55, 4, 1, "position", cell=0.18)
    text(ax, 5.1, 4.05, "block positions", ha="center", size=9, color="position")
    arrow(ax, (5.1, 3.15), (5.1, 2.77), color="position")
    for y in ys:
        arrow(ax, (3.7, y), (4.88, 2.55), rad=0.0)
    arrow(ax, (5.32, 2.55), (5.95, 2.55))
    proj(ax, 6.75, 3.45, "document encoder", color="weight", w=1.65)
    tensor(ax, 6.75, 2.55, 4, 4, "weight", cell=0.16, values=WEIGHTS)
    text(ax, 6.75, 1.75, r"$n\times n$ weights, $n = T/b$", ha="center", size=9, color="weight")
    arrow(ax, (7.15, 2.55), (7.9, 2.55))
    op(ax, 8.5, 2.55, "mean pool", w=1.1)
    arrow(ax, (9.05, 2.55), (9.55, 2.55))
    tensor(ax, 9.75, 2.55, 1, 1, "output", cell=0.3, label="doc A")
    tensor(ax, 9.75, 1.3, 1, 1, "output", cell=0.3, label="doc B")
    text(ax, 9.75, 0.65, "same weights", ha="center", size=8.5, color="output")
    op(ax, 10.85, 1.95, "cos", w=0.6)
    arrow(ax, (9.95, 2.55), (10.6, 2.1))
    arrow(ax, (9.95, 1.3), (10.6, 1.8))
    text(
        ax,
        4.4,
        0.75,
        "pretraining: the output at a hidden block\npredicts its vector among the batch's hidden blocks",
        size=8.5,
        color="mask",
    )
    save(fig, "11-smith")


if __name__ == "__main__":
    main()

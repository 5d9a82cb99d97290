"""Chapter 25: three readings of a trained model's attention.

25-head-gates: each head's output z_h = A_h V_h is multiplied by a gate g_h before the concatenation and the output
projection W^O. Setting g_h = 0 prunes the head (the loss change is its importance); the derivative of the loss with
respect to g_h at 1 equals the sum of A_h times dL/dA_h (the Taylor score). On the right, the gradient saliency of
the output with respect to the input tokens is compared with one attention row: correlation and coverage.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import arrow, canvas, op, proj, save, tensor, text  # noqa: E402

H = 4


def head_gates() -> None:
    fig, ax = canvas(12.4, 4.6)
    title = "Gates on the heads give pruning and the Taylor score; saliency is what attention is compared with"
    text(ax, 0.2, 4.3, title, size=11)
    rng = np.random.default_rng(0)
    for h in range(H):
        y = 3.45 - 0.8 * h
        values = rng.uniform(size=(4, 4))
        values = np.tril(values) / values.max()
        tensor(ax, 0.7, y, 4, 4, "weight", cell=0.13, values=values)
        text(ax, 0.05, y, f"$A_{h + 1}$", va="center", size=9)
        op(ax, 1.55, y, f"·$V_{{{h + 1}}}$", w=0.6)
        arrow(ax, (0.98, y), (1.25, y))
        op(ax, 2.55, y, f"× $g_{h + 1}$", w=0.7)
        arrow(ax, (1.85, y), (2.2, y))
        arrow(ax, (2.9, y), (3.45, 2.25 + 0.05 * (1.5 - h)))
    text(ax, 1.55, 0.35, "head outputs $z_h = A_h V_h$", ha="center", size=9, color="value")
    text(ax, 2.55, 0.05, "all gates 1 = the model", ha="center", size=9, color="output")
    tensor(ax, 3.75, 2.25, 4, 1, "value", cell=0.22, label="concat", shape="$(B, T, HD)$")
    proj(ax, 4.75, 2.25, "$W^O$", color="output", w=0.6, h=0.42)
    arrow(ax, (3.95, 2.25), (4.42, 2.25))
    proj(ax, 5.95, 2.25, "rest of\nthe model", color="output", w=1.1, h=0.7)
    arrow(ax, (5.08, 2.25), (5.38, 2.25))
    op(ax, 7.1, 2.25, "loss $L$", w=0.85)
    arrow(ax, (6.52, 2.25), (6.65, 2.25))
    text(ax, 5.2, 3.85, "prune: $g_h = 0$, importance $L(g_h{=}0) - L$", size=9, color="mask")
    text(
        ax,
        5.2,
        3.5,
        r"Taylor: $\partial L / \partial g_h = \sum A_h \odot \partial L / \partial A_h$",
        size=9,
        color="weight",
    )
    arrow(ax, (7.1, 2.05), (2.6, 0.55), color="weight", dashed=True, rad=-0.15)
    # right: saliency against an attention row
    x0 = 8.2
    text(ax, x0, 3.85, "saliency against attention", size=10)
    sal = np.array([[0.05, 0.1, 0.9, 0.2, 0.05, 0.6, 0.1, 0.3]])
    att = np.array([[0.1, 0.05, 0.7, 0.1, 0.3, 0.2, 0.05, 0.9]])
    tensor(
        ax,
        x0 + 1.9,
        2.95,
        1,
        8,
        "query",
        cell=0.3,
        values=sal / sal.max(),
        label=r"$|x_t \cdot \partial y / \partial x_t|$ per token",
    )
    tensor(ax, x0 + 1.9, 1.75, 1, 8, "weight", cell=0.3, values=att / att.max(), label="attention row $A[t^*, :]$")
    text(ax, x0 + 1.9, 0.95, "rank correlation; coverage = saliency share", ha="center", size=9, color="output")
    text(ax, x0 + 1.9, 0.65, "on attention's top $k$ (random: $k/T$)", ha="center", size=9, color="output")
    save(fig, "25-head-gates")


def main() -> None:
    head_gates()


if __name__ == "__main__":
    main()

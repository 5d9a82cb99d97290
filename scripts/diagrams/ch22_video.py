"""Chapter 22: temporal self-attention over frame maps, control-aided attention, and a codebook bottleneck.

22-temporal-attention: each frame's feature map F_t is convolved into a map M_t (the values); its spatial average
with the encoding of t gives u_t; the last frame's query meets every frame's key; the softmax over time weighs whole
spatial maps, and the decoder predicts the next frame.

22-control-and-codebook: left, a spatial attention map alpha pools the features for the policy head; the gradient
of the control output u (not of the loss) gives a Grad-CAM map G that alpha is pulled towards. Right, a
task-conditioned embedding attends over K learned codes; the convex mix of codes is a bottleneck.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import arrow, canvas, op, proj, save, tensor, text  # noqa: E402

T = 4


def temporal() -> None:
    fig, ax = canvas(12.4, 4.6)
    text(ax, 0.2, 4.3, "Temporal self-attention: the last frame weighs whole spatial maps of the clip", size=11)
    rng = np.random.default_rng(0)
    weights = np.array([0.05, 0.1, 0.6, 0.25])
    for t in range(T):
        y = 3.4 - 0.85 * t
        blob = np.zeros((4, 4))
        blob[1 + t % 2, t % 3 : t % 3 + 2] = 1.0
        tensor(ax, 0.75, y, 4, 4, "output", cell=0.15, values=0.15 + 0.8 * blob)
        text(ax, 0.05, y, f"$F_{t + 1}$", va="center", size=9)
        proj(ax, 2.0, y, "conv$_h$", color="value", w=0.8, h=0.38)
        arrow(ax, (1.1, y), (1.58, y))
        tensor(ax, 3.1, y, 4, 4, "value", cell=0.15, values=0.2 + 0.7 * rng.uniform(size=(4, 4)))
        arrow(ax, (2.42, y), (2.78, y))
        op(ax, 4.25, y, "GAP ⊕ PE", w=1.05)
        arrow(ax, (3.42, y), (3.7, y))
        color = "query" if t == T - 1 else "key"
        proj(ax, 5.55, y, "$W_q u_4$" if t == T - 1 else f"$W_k u_{t + 1}$", color=color, w=0.95, h=0.38)
        arrow(ax, (4.8, y), (5.05, y))
    text(ax, 3.1, 0.45, "maps $M_t$ (values)", ha="center", size=9, color="value")
    text(ax, 5.55, 0.45, "frame vectors $u_t$", ha="center", size=9, color="output")
    # scores and softmax over time
    tensor(
        ax,
        7.35,
        2.15,
        1,
        T,
        "weight",
        cell=0.3,
        values=[weights / weights.max()],
        label="softmax$_t$",
        shape="$a_{4t}$",
    )
    arrow(ax, (6.05, 3.4 - 0.85 * (T - 1)), (6.7, 2.05), color="query")
    for t in range(T - 1):
        arrow(ax, (6.05, 3.4 - 0.85 * t), (6.7, 2.25), color="key")
    text(ax, 6.3, 3.75, r"$\frac{q_4 \cdot k_t}{\sqrt{d_k}}$", size=11)
    op(ax, 8.75, 2.15, "Σ$_t$ $a_{4t} M_t$", w=1.35)
    arrow(ax, (7.97, 2.15), (8.05, 2.15))
    arrow(ax, (3.45, 3.6), (8.4, 2.45), color="value", dashed=True, rad=-0.25)
    tensor(ax, 10.0, 2.15, 4, 4, "value", cell=0.15, values=0.2 + 0.7 * rng.uniform(size=(4, 4)), shape="$O_4$")
    arrow(ax, (9.45, 2.15), (9.66, 2.15))
    proj(ax, 11.3, 2.15, "decoder\n(with $F_4$)", color="output", w=1.25, h=0.7)
    arrow(ax, (10.33, 2.15), (10.66, 2.15))
    text(ax, 11.3, 1.45, "next frame $\\hat x_5$", ha="center", size=9)
    text(ax, 11.3, 1.1, "error = anomaly score", ha="center", size=9, color="output")
    save(fig, "22-temporal-attention")


def control_and_codebook() -> None:
    fig, ax = canvas(12.4, 4.4)
    text(ax, 0.2, 4.1, "Control-aided attention (left) and a task-conditioned codebook bottleneck (right)", size=11)
    rng = np.random.default_rng(1)
    # left: CAA
    tensor(ax, 0.8, 2.5, 5, 5, "output", cell=0.16, values=rng.uniform(0.1, 0.6, size=(5, 5)), shape="features $F$")
    alpha = np.full((5, 5), 0.05)
    alpha[1:3, 3:5] = 1.0
    proj(ax, 2.3, 3.2, "conv 1×1", color="weight", w=0.95, h=0.38)
    arrow(ax, (1.25, 2.9), (1.82, 3.15))
    tensor(ax, 3.55, 3.2, 5, 5, "weight", cell=0.12, values=alpha, label="α")
    arrow(ax, (2.78, 3.2), (3.22, 3.2))
    op(ax, 3.55, 1.8, "Σ α F", w=0.8)
    arrow(ax, (1.25, 2.2), (3.14, 1.8))
    arrow(ax, (3.55, 2.85), (3.55, 2.02), color="weight")
    proj(ax, 4.95, 1.8, "policy", color="output", w=0.9, h=0.42)
    arrow(ax, (3.95, 1.8), (4.5, 1.8))
    text(ax, 5.55, 1.75, "$u$", size=12)
    grad = np.full((5, 5), 0.1)
    grad[1:3, 3:5] = 0.9
    grad[2, 2] = 0.5
    tensor(ax, 4.95, 3.2, 5, 5, "weight", cell=0.12, values=grad, label="$G$ = Grad-CAM of $u$")
    arrow(ax, (5.5, 2.0), (5.3, 2.85), dashed=True, rad=0.3)
    text(ax, 5.62, 2.35, r"$\partial u / \partial F$", size=9)
    arrow(ax, (4.6, 3.2), (3.9, 3.2), color="mask", dashed=True)
    text(ax, 3.7, 0.7, "KL(sg(G) ‖ α) trains α", size=9, color="output")
    text(ax, 3.7, 0.4, "(not the imitation loss)", size=9, color="output")
    # right: codebook
    tensor(ax, 7.1, 2.5, 6, 1, "query", cell=0.16, shape="$e$ (obs ⊕ task)")
    proj(ax, 8.25, 2.5, "ReLU, $W$, $b$", color="key", w=1.2, h=0.42)
    arrow(ax, (7.25, 2.5), (7.63, 2.5))
    p = np.array([[0.1, 0.7, 0.05, 0.1, 0.05, 0.0]])
    tensor(ax, 9.6, 2.5, 1, 6, "weight", cell=0.2, values=p / p.max(), label="$p$ = softmax", shape="over $K$ codes")
    arrow(ax, (8.87, 2.5), (8.98, 2.5))
    tensor(ax, 9.6, 3.65, 2, 6, "value", cell=0.2, label="codebook $C$ ($K$ × $d_c$)")
    op(ax, 10.85, 2.5, "$pC$", w=0.6)
    arrow(ax, (10.22, 2.5), (10.53, 2.5))
    arrow(ax, (10.22, 3.6), (10.75, 2.75), color="value")
    proj(ax, 11.75, 2.5, "$U$ → GRU", color="output", w=0.95, h=0.42)
    arrow(ax, (11.17, 2.5), (11.27, 2.5))
    text(ax, 9.6, 1.15, "$d_c$ small: only what the codes hold passes", ha="center", size=9, color="output")
    save(fig, "22-control-and-codebook")


def main() -> None:
    temporal()
    control_and_codebook()


if __name__ == "__main__":
    main()

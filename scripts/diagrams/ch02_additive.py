"""Chapter 02: additive (Bahdanau) attention -- project query and keys, add, tanh, read out by v_a, softmax, mix."""

from __future__ import annotations

from style import COLORS, arrow, canvas, op, proj, save, tensor, text


def draw() -> None:
    fig, ax = canvas(11.6, 4.4)
    # inputs: one query (a decoder state) and T_k keys (encoder states)
    tensor(ax, 0.9, 3.3, 1, 4, "query", label="query $g_{i-1}$", cell=0.2, shape="$1 \\times D_q$")
    tensor(ax, 0.9, 1.2, 4, 4, "key", label="keys $h_j$", cell=0.2, shape="$T_k \\times D_k$")
    proj(ax, 2.6, 3.3, "$W_a$", color="query")
    proj(ax, 2.6, 1.2, "$U_a$", color="key")
    arrow(ax, (1.35, 3.3), (2.13, 3.3), color="query")
    arrow(ax, (1.35, 1.2), (2.13, 1.2), color="key")
    # the hidden layer: broadcast add, tanh, and the learned read-out vector v_a
    op(ax, 4.0, 2.25, "+")
    arrow(ax, (3.07, 3.3), (3.83, 2.42), color="query")
    arrow(ax, (3.07, 1.2), (3.83, 2.08), color="key")
    text(ax, 4.0, 1.8, "$T_k \\times d_a$", size=9, ha="center", va="top", color="output")
    op(ax, 5.1, 2.25, "tanh", w=0.75)
    arrow(ax, (4.23, 2.25), (4.71, 2.25))
    proj(ax, 6.3, 2.25, "$v_a$", color="weight", w=0.7)
    arrow(ax, (5.49, 2.25), (5.93, 2.25))
    tensor(ax, 7.35, 2.25, 4, 1, "weight", label="scores $s_{ij}$", cell=0.22, values=[[0.4]] * 4)
    arrow(ax, (6.67, 2.25), (7.2, 2.25))
    op(ax, 8.45, 2.25, "softmax", w=1.05)
    arrow(ax, (7.5, 2.25), (7.91, 2.25))
    tensor(ax, 9.55, 2.25, 4, 1, "weight", label="weights $a_{ij}$", cell=0.22, values=[[0.1], [0.7], [0.15], [0.05]])
    arrow(ax, (9.0, 2.25), (9.4, 2.25))
    # the context: the weights mix the values
    tensor(ax, 9.55, 0.55, 4, 3, "value", cell=0.12, shape="")
    text(ax, 8.9, 0.55, "values $v_j$", ha="right", va="center")
    op(ax, 10.75, 1.3, "Σ")
    arrow(ax, (9.72, 2.1), (10.58, 1.45), color="weight")
    arrow(ax, (9.78, 0.55), (10.6, 1.12), color="value")
    tensor(ax, 10.75, 2.75, 1, 3, "output", cell=0.18)
    text(ax, 10.75, 2.95, "context $c_i$", ha="center", va="bottom")
    arrow(ax, (10.75, 1.53), (10.75, 2.62))
    formula = "$s_{ij} = \\tanh(g_{i-1} W_a + h_j U_a)\\, v_a$"
    text(
        ax,
        5.8,
        4.05,
        f"{formula}: a one-hidden-layer network on each (query, key) pair",
        size=10,
        ha="center",
        color=COLORS["output"],
    )
    save(fig, "02-additive")


if __name__ == "__main__":
    draw()

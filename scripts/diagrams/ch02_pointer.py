"""Chapter 02: a pointer network -- the attention over the inputs is the output, with chosen inputs masked."""

from __future__ import annotations

from style import COLORS, arrow, canvas, op, proj, save, tensor, text

N = 5
POINTER = [[0.04], [0.0], [0.86], [0.1], [0.0]]  # inputs 1 and 4 were chosen already: probability exactly 0
MASKED = [[0.0], [1.0], [0.0], [0.0], [1.0]]


def draw() -> None:
    fig, ax = canvas(11.4, 5.2)
    # encoder: inputs x_j -> states h_j
    tensor(ax, 0.7, 2.0, N, 1, "output", label="inputs $x_j$", cell=0.3, values=[[0.45]] * N, shape="$n$ inputs")
    proj(ax, 2.05, 2.0, "encoder\nRNN", color="key", w=1.0, h=0.8)
    arrow(ax, (0.9, 2.0), (1.52, 2.0))
    tensor(ax, 3.3, 2.0, N, 1, "key", label="states $h_j$", cell=0.3)
    arrow(ax, (2.58, 2.0), (3.1, 2.0), color="key")
    # decoder state at step i
    proj(ax, 2.05, 3.95, "decoder\nRNN", color="query", w=1.0, h=0.8)
    tensor(ax, 3.3, 3.95, 1, 1, "query", cell=0.3)
    text(ax, 3.3, 4.2, "$g_i$", ha="center", va="bottom")
    arrow(ax, (2.58, 3.95), (3.1, 3.95), color="query")
    # additive scores of g_i against every h_j
    proj(ax, 4.9, 2.95, "additive score\n$W_a, U_a, v_a$", color="weight", w=1.7, h=0.8)
    arrow(ax, (3.5, 2.0), (4.1, 2.65), color="key")
    arrow(ax, (3.5, 3.95), (4.1, 3.25), color="query")
    tensor(ax, 6.5, 2.95, N, 1, "weight", label="scores $s_{ij}$", cell=0.3, values=[[0.4]] * N)
    arrow(ax, (5.77, 2.95), (6.3, 2.95))
    op(ax, 7.35, 2.95, "+")
    arrow(ax, (6.7, 2.95), (7.12, 2.95))
    tensor(ax, 7.35, 1.0, N, 1, "mask", cell=0.16, values=MASKED)
    text(ax, 7.58, 1.0, "mask $M$: $-\\infty$ at\ninputs already chosen", size=9, va="center")
    arrow(ax, (7.35, 1.43), (7.35, 2.72), color="mask")
    op(ax, 8.45, 2.95, "softmax", w=1.05)
    arrow(ax, (7.58, 2.95), (7.92, 2.95))
    tensor(ax, 9.65, 2.95, N, 1, "weight", cell=0.3, values=POINTER)
    text(ax, 9.65, 3.8, "output $p(C_i = j)$", ha="center", va="bottom", color="weight")
    arrow(ax, (8.98, 2.95), (9.45, 2.95))
    text(ax, 10.0, 2.95, "= the attention\nover the inputs", size=9, va="center", color=COLORS["weight"])
    # the chosen input feeds the next decoder step
    arrow(ax, (9.65, 4.12), (2.05, 4.4), color="output", dashed=True, rad=0.12)
    text(
        ax,
        5.9,
        4.95,
        "the chosen input $x_{C_i}$ is the decoder's next input",
        size=9,
        ha="center",
        color=COLORS["output"],
    )
    save(fig, "02-pointer")


if __name__ == "__main__":
    draw()

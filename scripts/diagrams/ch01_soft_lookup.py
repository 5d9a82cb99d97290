"""Chapter 01: attention as a soft lookup -- compare the query with every key, softmax, mix the values."""

from __future__ import annotations

from style import COLORS, arrow, canvas, op, save, tensor, text

WEIGHTS = [[0.13], [0.55], [0.30], [0.02]]  # the hand-worked example of the chapter: q = 1.2, keys 0..3


def draw() -> None:
    fig, ax = canvas(11.2, 3.6)
    # the dictionary: keys (orange) and values (green), one row per pair
    tensor(ax, 1.0, 1.4, 4, 1, "key", label="keys $k_j$", cell=0.34, shape="$T_k$ keys")
    tensor(ax, 8.1, 1.4, 4, 1, "value", label="values $v_j$", cell=0.34)
    tensor(ax, 1.0, 3.0, 1, 1, "query", cell=0.34)
    text(ax, 1.3, 3.0, "query $q$", va="center")
    # compare the query with every key
    op(ax, 3.0, 1.4, "score", w=1.0)
    text(ax, 3.0, 0.85, "$s_j = -\\Vert q - k_j\\Vert^2$", size=10, ha="center", va="top")
    arrow(ax, (1.25, 1.4), (2.48, 1.4), color="key")
    arrow(ax, (1.0, 2.8), (2.8, 1.65), color="query", rad=-0.15)
    tensor(ax, 4.5, 1.4, 4, 1, "weight", label="scores $s_j$", cell=0.34, values=[[0.35]] * 4)
    arrow(ax, (3.52, 1.4), (4.3, 1.4))
    op(ax, 5.7, 1.4, "softmax", w=1.1)
    text(ax, 5.7, 0.85, "temperature $\\tau$", size=10, ha="center", va="top")
    arrow(ax, (4.7, 1.4), (5.13, 1.4))
    tensor(ax, 6.9, 1.4, 4, 1, "weight", label="weights $a_j$", cell=0.34, values=WEIGHTS)
    arrow(ax, (6.27, 1.4), (6.7, 1.4))
    text(ax, 6.9, 0.55, "$a_j \\geq 0,\\ \\sum_j a_j = 1$", size=10, ha="center", va="top", color="weight")
    # weighted sum of the values: the weights and the values meet in the sum
    op(ax, 9.4, 1.4, "Σ")
    arrow(ax, (7.05, 0.72), (9.3, 1.18), color="weight", rad=0.25)
    arrow(ax, (8.3, 1.4), (9.17, 1.4), color="value")
    tensor(ax, 10.4, 1.4, 1, 1, "output", cell=0.34)
    text(ax, 10.4, 1.7, "$o = \\sum_j a_j v_j$", ha="center", va="bottom")
    arrow(ax, (9.63, 1.4), (10.2, 1.4))
    text(
        ax,
        5.6,
        3.25,
        "one query reads every key; the answer is a weighted mean of the values",
        size=10,
        ha="center",
        color=COLORS["output"],
    )
    save(fig, "01-soft-lookup")


if __name__ == "__main__":
    draw()

"""Chapter 13: the Vision Transformer, and the token orders and masks of a causal ViT.

``13-vit``: an image cut into P x P patches; each flattened patch times W_E (one strided convolution) is a token; a
class token joins, positions are added, the encoder mixes the tokens, and the class token's final state is classified.
``13-causal``: three (N + 1) x (N + 1) attention patterns over four patches and a class token: causal with the class
token first (its row sees only itself), causal with the class token last (its row sees everything), and iLLaMA's soft
mask M = r 1 + (1 - r) tril(1), shaded for r = 1/2.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, op, proj, save, tensor, text  # noqa: E402


def vit() -> None:
    fig, ax = canvas(11.0, 3.6)
    # the image: 4 x 4 pixels shown as a 2 x 2 grid of patches
    cell, x0, y0 = 0.34, 0.3, 0.9
    shades = [[0.1, 0.8, 0.9, 0.2], [0.2, 0.9, 0.3, 0.1], [0.1, 0.9, 0.2, 0.1], [0.6, 0.9, 0.8, 0.5]]
    for i in range(4):
        for j in range(4):
            ax.add_patch(
                Rectangle(
                    (x0 + j * cell, y0 + (3 - i) * cell),
                    cell,
                    cell,
                    facecolor="black",
                    alpha=shades[i][j],
                    edgecolor="white",
                    linewidth=0.6,
                )
            )
    ax.plot([x0 + 2 * cell] * 2, [y0, y0 + 4 * cell], color=COLORS["key"], lw=2)  # the patch borders
    ax.plot([x0, x0 + 4 * cell], [y0 + 2 * cell] * 2, color=COLORS["key"], lw=2)
    text(ax, x0 + 2 * cell, y0 + 4 * cell + 0.15, "image (C, H, W)", ha="center", va="bottom", size=10)
    text(ax, x0 + 2 * cell, y0 - 0.12, r"$N = HW/P^2$ patches", ha="center", va="top", size=9)
    arrow(ax, (1.75, 1.58), (2.35, 1.58))
    op(ax, 2.95, 1.58, "patchify", w=1.05)
    arrow(ax, (3.5, 1.58), (3.9, 1.58))
    tensor(ax, 4.35, 1.58, 4, 4, "output", cell=0.16, shape=r"$(N, CP^2)$")
    arrow(ax, (4.75, 1.58), (5.15, 1.58))
    proj(ax, 5.6, 1.58, r"$W_E$", w=0.75)
    text(ax, 5.6, 2.0, "= conv, stride P", ha="center", va="bottom", size=9)
    arrow(ax, (6.0, 1.58), (6.4, 1.58))
    # tokens: class token + N patch tokens, plus positions
    tensor(ax, 7.05, 1.58, 5, 4, "query", cell=0.16, shape=r"$(N{+}1, D)$")
    ax.add_patch(Rectangle((7.05 - 0.32, 1.58 + 0.24), 0.64, 0.16, facecolor=COLORS["weight"], edgecolor="white"))
    text(ax, 6.3, 2.35, "class token", ha="center", va="bottom", size=9, color="weight")
    arrow(ax, (6.55, 2.35), (6.75, 1.98), color="weight")
    op(ax, 7.05, 2.7, "+")
    text(ax, 7.05, 3.0, "positions", ha="center", va="bottom", size=9, color="position")
    arrow(ax, (7.05, 2.47), (7.05, 2.05), color="position")
    arrow(ax, (7.45, 1.58), (7.85, 1.58))
    proj(ax, 8.55, 1.58, "encoder\n(L layers)", w=1.25, h=0.8)
    arrow(ax, (9.2, 1.58), (9.55, 1.58))
    proj(ax, 10.2, 1.58, "head", w=0.75)
    text(ax, 10.2, 1.15, "reads the\nclass token", ha="center", va="top", size=9)
    save(fig, "13-vit")


def pattern(ax, x: float, y: float, values, title: str, note: str) -> None:
    tensor(ax, x, y, 5, 5, "weight", cell=0.3, values=values)
    text(ax, x, y + 0.95, title, ha="center", va="bottom", size=11)
    text(ax, x, y - 0.9, note, ha="center", va="top", size=9)


def causal() -> None:
    fig, ax = canvas(11.0, 3.5)
    tril = [[1.0 if j <= i else 0.0 for j in range(5)] for i in range(5)]
    pattern(ax, 1.8, 1.75, tril, "causal, class token first", "row 0 = class token:\nit sees only itself")
    ax.add_patch(Rectangle((1.8 - 0.75, 1.75 + 0.45), 1.5, 0.3, fill=False, edgecolor=COLORS["key"], lw=2))
    pattern(ax, 5.5, 1.75, tril, "causal, class token last", "row N = class token:\nit sees every patch")
    ax.add_patch(Rectangle((5.5 - 0.75, 1.75 - 0.75), 1.5, 0.3, fill=False, edgecolor=COLORS["value"], lw=2))
    soft = [[1.0 if j <= i else 0.5 for j in range(5)] for i in range(5)]
    pattern(
        ax,
        9.2,
        1.75,
        soft,
        r"soft mask $M = r\,\mathbf{1} + (1-r)\,\mathrm{tril}$",
        r"$A = \mathrm{softmax}(S) \odot M$, not renormalised;" + "\n" + r"$r$: 1 $\to$ 0 early in training",
    )
    text(ax, 9.2, 1.75 + 0.78, r"($r = 1/2$)", ha="center", va="bottom", size=9)
    for x in (1.8, 5.5, 9.2):
        text(ax, x - 0.95, 1.75, "query", ha="center", va="center", size=8, rotation=90)
        text(ax, x, 1.75 + 0.82, "key", ha="center", va="bottom", size=8) if x != 9.2 else None
    save(fig, "13-causal")


if __name__ == "__main__":
    vit()
    causal()

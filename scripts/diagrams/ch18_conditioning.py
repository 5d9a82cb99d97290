"""Chapter 18: three ways to condition with attention.

Top: token cross-attention, queries from the image tokens X, keys and values from the condition tokens C; the
weights have one row per image token and one column per condition token. Middle: decoupled image-prompt
cross-attention (IP-Adapter), a second softmax over image-prompt tokens with new projections W'_K, W'_V, scaled by
lambda and added. Bottom: reference attention, the reference image's keys and values (same projections) appended to
self-attention's, one softmax over both images.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import arrow, canvas, op, proj, save, tensor, text  # noqa: E402

CROSS = [[0.9, 0.2, 0.3], [0.2, 0.8, 0.4], [0.3, 0.3, 0.9], [0.8, 0.5, 0.1]]
PROMPT = [[0.7, 0.3], [0.2, 0.9], [0.6, 0.4], [0.3, 0.7]]
JOINT = [
    [0.9, 0.3, 0.2, 0.1, 0.5, 0.2, 0.1],
    [0.3, 0.8, 0.3, 0.2, 0.2, 0.6, 0.1],
    [0.2, 0.3, 0.9, 0.4, 0.1, 0.2, 0.7],
    [0.1, 0.2, 0.4, 0.8, 0.3, 0.1, 0.4],
]


def main() -> None:
    fig, ax = canvas(11.6, 7.6)
    # --- token cross-attention
    text(ax, 0.2, 7.25, "token cross-attention: queries from the image, keys and values from the condition", size=11)
    tensor(ax, 0.7, 6.2, 4, 1, "query", label="X: image", cell=0.22)
    arrow(ax, (0.9, 6.2), (1.45, 6.2), color="query")
    proj(ax, 1.9, 6.2, "$W_Q$", color="query", w=0.8)
    tensor(ax, 0.7, 4.85, 3, 1, "key", label="C: condition", cell=0.22)
    proj(ax, 1.9, 5.25, "$W_K$", color="key", w=0.8)
    proj(ax, 1.9, 4.65, "$W_V$", color="value", w=0.8)
    arrow(ax, (0.9, 4.9), (1.48, 5.22), color="key")
    arrow(ax, (0.9, 4.8), (1.48, 4.68), color="value")
    op(ax, 3.3, 5.75, "softmax", w=1.0)
    arrow(ax, (2.32, 6.2), (2.85, 5.85), color="query")
    arrow(ax, (2.32, 5.25), (2.85, 5.65), color="key")
    tensor(ax, 4.55, 5.75, 4, 3, "weight", cell=0.2, values=CROSS)
    text(ax, 4.55, 6.3, r"$T\times T_c$", ha="center", size=9, color="weight")
    arrow(ax, (3.82, 5.75), (4.2, 5.75))
    op(ax, 5.5, 5.2, "×", r=0.2)
    arrow(ax, (4.9, 5.7), (5.33, 5.3))
    arrow(ax, (2.32, 4.65), (5.28, 5.12), color="value")
    text(ax, 5.0, 6.3, "one map over the image per condition token", size=8.5, color="weight")
    # --- decoupled image-prompt branch
    text(
        ax,
        0.2,
        4.1,
        r"decoupled image prompt (IP-Adapter): new $W'_K, W'_V$, its own softmax, scaled by $\lambda$",
        size=10,
    )
    tensor(ax, 0.7, 3.05, 2, 1, "value", label="$C_i$", cell=0.22, shape="image prompt")
    proj(ax, 1.9, 3.3, "$W'_K$", color="key", w=0.8)
    proj(ax, 1.9, 2.75, "$W'_V$", color="value", w=0.8)
    arrow(ax, (0.9, 3.1), (1.48, 3.28), color="key")
    arrow(ax, (0.9, 3.0), (1.48, 2.77), color="value")
    op(ax, 3.3, 3.3, "softmax", w=1.0)
    arrow(ax, (2.32, 3.3), (2.8, 3.3), color="key")
    arrow(ax, (1.9, 5.97), (2.9, 3.5), color="query", rad=0.25)
    tensor(ax, 4.55, 3.3, 4, 2, "weight", cell=0.2, values=PROMPT)
    arrow(ax, (3.82, 3.3), (4.3, 3.3))
    op(ax, 5.5, 3.0, "×", r=0.2)
    arrow(ax, (4.78, 3.25), (5.33, 3.08))
    arrow(ax, (2.32, 2.75), (5.28, 2.95), color="value")
    op(ax, 6.35, 3.0, "λ", r=0.22)
    text(ax, 6.35, 2.55, "scale", ha="center", size=8.5, color="output")
    arrow(ax, (5.72, 3.0), (6.05, 3.0))
    op(ax, 7.3, 4.1, "+", r=0.22)
    arrow(ax, (5.72, 5.2), (7.15, 4.28))
    arrow(ax, (6.55, 3.12), (7.15, 3.95))
    proj(ax, 8.3, 4.1, "$W_O$", w=0.8)
    arrow(ax, (7.52, 4.1), (7.88, 4.1))
    tensor(ax, 9.4, 4.1, 4, 1, "output", cell=0.22, shape="out")
    arrow(ax, (8.72, 4.1), (9.25, 4.1))
    text(ax, 7.0, 5.6, r"$\lambda = 0$: text-only" + "\ncross-attention", size=9, color="output")
    # --- reference attention
    text(
        ax,
        0.2,
        1.95,
        "reference attention: a second image's keys and values join self-attention (one softmax)",
        size=10,
    )
    tensor(ax, 0.55, 0.8, 4, 1, "query", label="X", cell=0.2)
    tensor(ax, 1.15, 0.75, 3, 1, "mask", label="R", cell=0.2)
    op(ax, 2.05, 0.8, "[X; R]", w=0.8)
    arrow(ax, (1.3, 0.8), (1.63, 0.8))
    proj(ax, 3.25, 1.45, "$W_Q$", color="query", w=0.8)
    proj(ax, 3.25, 0.9, "$W_K$", color="key", w=0.8)
    proj(ax, 3.25, 0.35, "$W_V$", color="value", w=0.8)
    arrow(ax, (0.55, 1.22), (2.83, 1.45), color="query", rad=-0.1)
    arrow(ax, (3.67, 1.45), (4.6, 1.0), color="query")
    arrow(ax, (2.47, 0.82), (2.83, 0.9), color="key")
    arrow(ax, (2.47, 0.75), (2.83, 0.38), color="value")
    tensor(ax, 5.3, 0.85, 4, 7, "weight", cell=0.18, values=JOINT)
    arrow(ax, (3.67, 0.9), (4.6, 0.85), color="key")
    ax.plot([5.39, 5.39], [0.47, 1.23], color="white", lw=2.5)
    text(ax, 5.03, 1.35, "own keys", ha="center", size=8.5, color="weight")
    text(ax, 5.75, 1.35, "reference", ha="center", size=8.5, color="weight")
    text(
        ax,
        7.0,
        0.55,
        "same $W_Q, W_K, W_V$ for both images;\na bias $b$ on reference keys keeps\nthe subject (DreamTuner)",
        size=8.5,
        color="output",
    )
    save(fig, "18-conditioning")


if __name__ == "__main__":
    main()

"""Chapter 24: five kinds of causal attention, each relaxing one principle of the standard one.

24-variants: one column per kind. The values always come from the layer's input h (green); what changes is where the
mixing weights A (purple, 4 x 4, causal) come from: softmax of q.k from h (standard), the identity (no mixing), a
learned matrix P shared by every sequence (fixed), positive features phi(q).phi(k) divided by their row sum
(similarity), or softmax of q.k computed from the layer-0 embeddings x_0 (decoupled).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import arrow, canvas, op, proj, save, tensor, text  # noqa: E402


def causal(values: np.ndarray) -> np.ndarray:
    """Row-normalised lower-triangular weights, scaled to [0, 1] for shading."""
    w = np.tril(values)
    w = w / w.sum(1, keepdims=True)
    return w / w.max()


def variants() -> None:
    fig, ax = canvas(12.4, 4.4)
    title = "Five kinds of causal attention: the values are the same, the weights A come from elsewhere"
    text(ax, 0.2, 4.1, title, size=11)
    rng = np.random.default_rng(0)
    sharp = np.exp(2.5 * rng.normal(size=(4, 4)))
    kinds = [
        ("standard", "$q, k$ from $h$", "softmax$(qk^T/\\sqrt{d})$", causal(sharp)),
        ("no mixing", "no $q, k$", "$A = I$", np.eye(4)),
        ("fixed", "learned $P$", "softmax$(P)$", causal(np.exp(1.5 * rng.normal(size=(4, 4))))),
        ("similarity", "$q, k$ from $h$", "$\\phi(q)\\cdot\\phi(k)$ / row sum", causal(1 + rng.uniform(size=(4, 4)))),
        ("decoupled", "$q, k$ from $x_0$", "softmax$(qk^T/\\sqrt{d})$", causal(np.exp(2.5 * rng.normal(size=(4, 4))))),
    ]
    for n, (name, source, rule, weights) in enumerate(kinds):
        x = 1.25 + 2.45 * n
        text(ax, x, 3.6, name, ha="center", size=10)
        if name == "fixed":
            proj(ax, x, 3.0, "$P$ $(L\\times L)$", color="weight", w=1.1, h=0.42)
        elif name == "no mixing":
            text(ax, x, 3.0, source, ha="center", va="center", size=9, color="mask")
        else:
            proj(ax, x - 0.45, 3.0, "$W_Q$", color="query", w=0.7, h=0.38)
            proj(ax, x + 0.45, 3.0, "$W_K$", color="key", w=0.7, h=0.38)
            text(ax, x, 3.35, source, ha="center", size=8, color="position" if name == "decoupled" else "text")
        op(ax, x, 2.35, rule, w=2.1, h=0.36)
        if name != "no mixing":
            arrow(ax, (x, 2.78), (x, 2.55))
        tensor(ax, x - 0.45, 1.35, 4, 4, "weight", cell=0.17, values=weights, shape="$A$")
        arrow(ax, (x - 0.45, 2.15), (x - 0.45, 1.73))
        proj(ax, x + 0.6, 1.35, "$W_V$", color="value", w=0.6, h=0.38)
        text(ax, x + 0.6, 1.68, "$V = hW_V$", ha="center", size=8, color="value")
        op(ax, x + 0.05, 0.45, "$AV$", w=0.6, h=0.32)
        arrow(ax, (x - 0.45, 0.97), (x - 0.1, 0.6))
        arrow(ax, (x + 0.6, 1.15), (x + 0.2, 0.6), color="value")
    save(fig, "24-variants")


if __name__ == "__main__":
    variants()

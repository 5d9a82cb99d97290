"""Chapter 26: finding a circuit with a discrete sparse autoencoder, and editing one output projection.

26-circuits-and-editing: left, a layer of the attention-only model: each head's output z^{l,h} is read before W_O
mixes the heads; one shared sparse autoencoder encodes it, f = ReLU(W_e(z - b) + c), and its argmax is the head's
code; codes seen on positive prompts and never on negative ones score the head. Right, the rank-one edit: the input
k* of W_O on one prompt is sent to a new value v*, while the other inputs keep their outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import arrow, canvas, op, proj, save, tensor, text  # noqa: E402

H = 4


def circuits_and_editing() -> None:
    fig, ax = canvas(12.4, 4.8)
    title = "Head outputs before $W_O$ become discrete codes (left); one $W_O$ gets a rank-one edit (right)"
    text(ax, 0.2, 4.5, title, size=11)
    rng = np.random.default_rng(0)
    # left: one layer's heads
    for h in range(H):
        y = 3.6 - 0.8 * h
        proj(ax, 0.8, y, f"head {h}", color="value", w=0.95, h=0.4)
        tensor(ax, 2.1, y, 1, 4, "value", cell=0.16, values=rng.uniform(0.2, 0.9, size=(1, 4)), label=None)
        arrow(ax, (1.28, y), (1.72, y))
        text(ax, 2.1, y + 0.3, f"$z^{{l,{h}}}$", ha="center", size=9)
        arrow(ax, (2.45, y), (3.1, y), color="value")
        op(ax, 3.75, y, "SAE", w=0.9)
        arrow(ax, (4.2, y), (4.6, y))
        code = int(rng.integers(0, 64))
        text(ax, 5.05, y, f"code {code}", va="center", size=9, color="output")
    proj(ax, 2.1, 0.35, "$W_O$ (mixes the heads)", color="output", w=1.9, h=0.4)
    arrow(ax, (2.1, 3.6 - 0.8 * (H - 1) - 0.2), (2.1, 0.57), color="value", dashed=True)
    text(ax, 5.2, 0.35, r"$f = \mathrm{ReLU}(W_e(z-b)+c)$, code $= \arg\max_j f_j$", ha="center", size=9)
    op(ax, 7.25, 2.4, "positive codes \\ negative codes", w=2.6)
    for h in range(H):
        arrow(ax, (5.55, 3.6 - 0.8 * h), (5.92, 2.4))
    text(ax, 7.25, 1.85, "node score = how many", ha="center", size=9, color="output")
    text(ax, 7.25, 1.6, "→ circuit heads", ha="center", size=9, color="output")
    # right: the edit
    tensor(ax, 9.2, 3.3, 1, 5, "key", cell=0.16, shape="$k^\\ast$ (input of $W_O$)")
    proj(ax, 10.45, 3.3, "$W_O$", color="output", w=0.8, h=0.42)
    arrow(ax, (9.65, 3.3), (10.03, 3.3), color="key")
    tensor(ax, 11.75, 3.3, 1, 5, "value", cell=0.16, shape="$v^\\ast$: the new fact")
    arrow(ax, (10.87, 3.3), (11.33, 3.3), color="value")
    text(ax, 10.6, 2.3, r"$W' = W_O + (v^\ast - W_O k^\ast)\,u^\top$", ha="center", size=10)
    text(ax, 10.6, 1.85, r"$u = (K^\top K + \lambda I)^{-1} k^\ast$: rank one", ha="center", size=9)
    text(ax, 10.6, 1.4, "other keys $k_i$ keep $W_O k_i$", ha="center", size=9, color="output")
    save(fig, "26-circuits-and-editing")


def main() -> None:
    circuits_and_editing()


if __name__ == "__main__":
    main()

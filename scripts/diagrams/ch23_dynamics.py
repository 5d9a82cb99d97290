"""Chapter 23: the one-layer model of Scan and Snap.

23-scan-snap: the query token x_T picks a row of the pairwise logit matrix Z (no W_Q, W_K, no positions); the
entries of that row at the context tokens, softmaxed over t, weigh the context embeddings; the normalised mix goes
through the decoder Y to the next-token logits. Z learns with the rate eta_Z, Y with the faster eta_Y.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from style import arrow, canvas, op, proj, save, tensor, text  # noqa: E402


def scan_snap() -> None:
    fig, ax = canvas(12.4, 4.6)
    text(ax, 0.2, 4.3, "Scan and Snap's one-layer model: the query token reads a row of Z over the context", size=11)
    tokens = ["c", "d", "c", "c", "d'"]
    for t, tok in enumerate(tokens):
        y = 3.5 - 0.55 * t
        tensor(ax, 0.85, y, 1, 1, "key", cell=0.3)
        text(ax, 0.2, y - 0.08, f"$x_{t + 1}$", size=9)
        text(ax, 0.78, y - 0.08, tok, size=9, color="light")
    tensor(ax, 0.85, 0.55, 1, 1, "query", cell=0.3)
    text(ax, 0.2, 0.47, "$x_T$", size=9)
    text(ax, 0.79, 0.47, "m", size=9, color="light")
    text(ax, 0.2, 3.95, "context (common c, distinct d)", size=9, color="key")
    # Z: vocabulary x vocabulary, the query's row highlighted
    zvals = np.full((6, 6), 0.15)
    zvals[3] = [0.2, 0.9, 0.2, 0.5, 0.1, 0.3]
    tensor(ax, 2.9, 2.2, 6, 6, "weight", cell=0.26, values=zvals, label="$Z$ (M × M)", shape="row $z_{x_T,:}$")
    arrow(ax, (1.05, 0.55), (2.05, 1.95), color="query")
    text(ax, 1.2, 1.25, "pick row $x_T$", size=9, color="query")
    arrow(ax, (1.05, 2.4), (2.05, 2.4), color="key")
    text(ax, 1.12, 2.55, "read at $x_t$", size=9, color="key")
    op(ax, 4.75, 2.2, "softmax$_t$", w=1.05)
    arrow(ax, (3.75, 2.2), (4.2, 2.2))
    b = np.array([[0.1, 0.45, 0.1, 0.1, 0.25]])
    tensor(ax, 6.15, 2.2, 1, 5, "weight", cell=0.3, values=b / b.max(), label="$b_t$", shape="over $t < T$")
    op(ax, 7.75, 2.2, "Σ$_t$ $b_t u_{x_t}$", w=1.25)
    arrow(ax, (6.92, 2.2), (7.11, 2.2))
    arrow(ax, (1.05, 3.5), (7.6, 2.45), color="value", dashed=True, rad=-0.2)
    text(ax, 4.6, 3.75, "values: embeddings $u_{x_t}$", size=9, color="value")
    op(ax, 9.05, 2.2, "f / ‖f‖", w=0.85)
    arrow(ax, (8.39, 2.2), (8.61, 2.2))
    proj(ax, 10.25, 2.2, "$Y^T$", color="output", w=0.7, h=0.45)
    arrow(ax, (9.49, 2.2), (9.89, 2.2))
    op(ax, 11.45, 2.2, "softmax", w=0.9)
    arrow(ax, (10.61, 2.2), (10.99, 2.2))
    text(ax, 11.45, 1.6, "$x_{T+1}$", ha="center", size=10)
    text(ax, 2.9, 0.45, "learns at rate $\\eta_Z$ (slow)", ha="center", size=9, color="weight")
    text(ax, 10.25, 1.45, "rate $\\eta_Y$ (fast)", ha="center", size=9, color="output")
    save(fig, "23-scan-snap")


def main() -> None:
    scan_snap()


if __name__ == "__main__":
    main()

"""Chapter 03: the data flow of scaled dot-product attention with a mask and dropout (writes 03-sdpa.svg).

Q and K meet in a matrix product, the scores are scaled by 1/sqrt(d), the mask is added (an additive M, or a
boolean mask turned into -inf by masked_fill), the softmax normalises each row, dropout (training only) zeroes
and rescales weights, and a second matrix product with V gives the output. Shapes are written under each tensor.
"""

from __future__ import annotations

import numpy as np
from style import COLORS, arrow, canvas, op, save, tensor, text

fig, ax = canvas(13.4, 3.95)
MID = 2.2  # the height of the main flow

# inputs: queries above, keys below, meeting in the first product
tensor(ax, 0.75, 3.15, 3, 3, "query", label="$Q$", shape="$(T_q, d)$")
tensor(ax, 0.75, 1.05, 4, 3, "key", label="$K$", shape="$(T_k, d)$")
op(ax, 2.25, MID, "$QK^\\top$", w=0.95)
arrow(ax, (1.05, 3.0), (1.85, MID + 0.15))
arrow(ax, (1.05, 1.2), (1.85, MID - 0.15))

op(ax, 3.6, MID, "$\\times\\, 1/\\sqrt{d}$", w=1.05)
arrow(ax, (2.75, MID), (3.05, MID))

# the mask enters from above: additive M, or a boolean mask applied with masked_fill
op(ax, 4.75, MID, "+")
arrow(ax, (4.15, MID), (4.51, MID))
visible = np.tril(np.ones((3, 4)), k=1)
tensor(ax, 4.75, 3.55, 3, 4, "mask", values=visible, cell=0.13)
text(ax, 5.15, 3.55, "$M$  (0 or $-\\infty$), or", va="center", size=10)
text(ax, 5.15, 3.25, "masked_fill($\\neg\\mathcal{M}$, $-\\infty$)", va="center", size=10)
text(ax, 4.4, 3.55, "$(T_q, T_k)$, broadcast", ha="right", va="center", size=9, color="output")
arrow(ax, (4.75, 3.33), (4.75, MID + 0.24), color="mask")

rng = np.random.default_rng(3)
scores = rng.uniform(0.2, 1.0, size=(3, 4))
tensor(ax, 6.05, MID, 3, 4, "weight", label="$S$", shape="$(T_q, T_k)$", values=np.where(visible > 0, scores, 0.0))
arrow(ax, (4.99, MID), (5.65, MID))

op(ax, 7.45, MID, "softmax", w=1.05)
arrow(ax, (6.45, MID), (6.9, MID))
text(ax, 7.45, MID - 0.45, "over keys, each row", ha="center", size=9, color="output")
text(ax, 7.45, MID - 0.68, "(max subtracted)", ha="center", size=9, color="output")

weights = np.where(visible > 0, scores, 0.0)
weights = weights / weights.sum(1, keepdims=True)
tensor(ax, 8.85, MID, 3, 4, "weight", label="$A$", shape="$(T_q, T_k)$", values=weights / weights.max())
arrow(ax, (8.0, MID), (8.45, MID))

op(ax, 10.2, MID, "dropout", w=1.05)
arrow(ax, (9.25, MID), (9.65, MID))
text(ax, 10.2, MID + 0.42, "training only", ha="center", size=9, color="output")
text(ax, 10.2, MID - 0.45, "zero w.p. $p$,", ha="center", size=9, color="output")
text(ax, 10.2, MID - 0.68, "scale by $1/(1-p)$", ha="center", size=9, color="output")

op(ax, 11.45, MID, "$\\tilde A V$", w=0.75)
arrow(ax, (10.75, MID), (11.05, MID))
tensor(ax, 11.45, 0.75, 4, 2, "value", label="", shape="$(T_k, d_v)$")
text(ax, 11.0, 0.75, "$V$", ha="right", va="center")
arrow(ax, (11.45, 1.12), (11.45, MID - 0.23))

tensor(ax, 12.8, MID, 3, 2, "output", label="$O$", shape="$(T_q, d_v)$")
arrow(ax, (11.85, MID), (12.6, MID))

text(
    ax,
    0.2,
    0.12,
    "leading dims $(B, H)$ broadcast through every step; a row of $S$ with no visible key gives a row of zeros in $A$",
    size=9,
    color=COLORS["output"],
)

save(fig, "03-sdpa")

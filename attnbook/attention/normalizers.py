"""Normalisers other than softmax: parts that turn attention logits into weights (chapter 04).

Each is a :class:`~attnbook.attention.core.Normalizer`, so it drops into
``AttentionCore(normalizer=...)`` and from there into every multi-head attention and Transformer block.

**Sparsemax** :cite:`martins2016softmax` is the Euclidean projection of a logit row ``z`` onto the
probability simplex, ``sparsemax(z) = argmin_{p >= 0, sum p = 1} ||p - z||^2``. Its closed form: sort
``z`` in decreasing order, ``z_(1) >= ... >= z_(K)``; the support size is
``k* = max{k : 1 + k z_(k) > sum_{j <= k} z_(j)}``, the threshold ``tau = (sum_{j <= k*} z_(j) - 1) / k*``,
and ``sparsemax(z)_j = max(z_j - tau, 0)``. Weak keys get exactly zero weight.

Like softmax, sparsemax is unchanged by adding a constant to the row, so the row maximum is subtracted
first: every shifted logit is ``<= 0`` and the cumulative sums stay small, which keeps float32 exact at
logits of ``1e4`` (without the shift the cumulative sums of such logits lose the unit-sized differences
the threshold depends on). A fully masked row (all ``-inf``) gives zeros, with finite gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnbook.attention.core import Normalizer

__all__ = ["sparsemax", "SparsemaxNormalizer"]

_HALF = (torch.float16, torch.bfloat16)


def sparsemax(x: Tensor, dim: int = -1) -> Tensor:
    """Sparsemax of ``x`` along ``dim`` :cite:`martins2016softmax`: the projection onto the simplex.

    Args:
        x: floating-point logits of any shape; ``-inf`` marks an excluded entry.
        dim: the dimension to normalise over.

    Returns:
        A tensor of ``x``'s shape and dtype, non-negative, summing to 1 along ``dim`` (0 for a row whose
        every entry is ``-inf``). Half-precision inputs are computed on in float32.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"sparsemax: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"sparsemax: x must be a floating-point tensor, got {x.dtype}")
    if x.ndim == 0:
        raise ValueError("sparsemax: x must have at least one dimension, got a scalar")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"sparsemax: dim={dim} is out of range for x of shape {tuple(x.shape)}")
    if torch.isnan(x).any() or (x == float("inf")).any():
        raise ValueError("sparsemax: x contains NaN or +inf")
    work = (x.float() if x.dtype in _HALF else x).movedim(dim, -1)  # (..., K)
    empty = torch.isneginf(work).all(dim=-1, keepdim=True)  # (..., 1): rows with nothing to attend to
    work = work.masked_fill(empty, 0.0)  # computed on zeros, then zeroed: no inf - inf anywhere
    # sparsemax(z + c) = sparsemax(z): shift so that every logit is <= 0 (the shift needs no gradient).
    work = work - work.detach().amax(dim=-1, keepdim=True)  # (..., K)
    z, _ = work.sort(dim=-1, descending=True)  # (..., K)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)  # (K,)
    csum = z.cumsum(dim=-1)  # (..., K); -inf after the first masked entry, which never enters the support
    support = (1 + k * z > csum).sum(dim=-1, keepdim=True)  # (..., 1): k*, at least 1 (the maximum is 0)
    tau = (csum.gather(-1, support - 1) - 1) / support.to(z.dtype)  # (..., 1)
    weights = (work - tau).clamp_min(0).masked_fill(empty, 0.0)  # (..., K)
    return weights.movedim(-1, dim).to(x.dtype)


class SparsemaxNormalizer(Normalizer):
    """The sparsemax normaliser :cite:`martins2016softmax` for :class:`~attnbook.attention.core.AttentionCore`.

    ``logits (B, H, T_q, T_k)`` and a mask (boolean, True = may attend, or additive; broadcastable) ->
    weights of the same shape: each row a distribution over the visible keys, with exact zeros for keys
    whose logit falls below the row's threshold. Fully masked rows give zeros. Introduced in chapter 04.
    """

    def forward(self, logits: Tensor, mask: Tensor | None) -> Tensor:
        if mask is not None:
            if mask.dtype == torch.bool:
                logits = logits.masked_fill(~mask, float("-inf"))
            else:
                logits = logits + mask.to(logits.dtype)
        return sparsemax(logits, dim=-1)

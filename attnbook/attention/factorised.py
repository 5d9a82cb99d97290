"""Combiner: full attention with a factorised (structured) attention distribution. Introduced in chapter 09.

Paper: *Combiner: Full Attention Transformer with Sparse Computation Cost* (Ren et al., 2021,
:cite:`ren2021combiner`). Attention output ``o_i`` is the expectation of ``v_j`` under ``p(j | i)``. Combiner
keeps every ``p(j | i) > 0`` but factorises it: the keys are cut into regions, query ``i`` attends *directly*
to the keys of its own region ``Omega_i^0`` and to each other region ``Omega_r`` only through one summary
key, and inside a region a distribution ``q_r(j)`` shared by all queries spreads the region's weight:

.. math::
    p(j \\mid i) = \\frac{1}{Z_i} \\begin{cases} \\exp(q_i k_j^\\top / \\sqrt d) & j \\in \\Omega_i^0 \\\\
    \\exp(q_i \\bar k_r^\\top / \\sqrt d)\\, q_r(j) & j \\in \\Omega_r \\end{cases}, \\qquad
    q_r(j) = \\operatorname{softmax}_{j \\in \\Omega_r}(w_r k_j^\\top / \\sqrt d).

The partition implemented here is *Combiner-Fixed* (the ``_SelfAttSqrtn`` layer of the official JAX code):
regions are consecutive segments of ``s`` tokens; the summary key ``k̄_r`` is the element-wise maximum of
the segment's keys and the abstraction query ``w_r`` the element-wise maximum of its queries (the code's
"max pooling"). Because ``q_r`` does not depend on ``i``, each segment's summary value
``v̄_r = sum_j q_r(j) v_j`` is computed once, and every query attends to ``s`` keys plus ``T/s`` summaries:
``O(T (s + T/s) d)``, ``O(T sqrt(T) d)`` for ``s = sqrt(T)``. The official layer is causal (direct keys
``j <= i`` in the own segment, summaries of strictly earlier segments); ``causal=False`` uses the own segment
in full and the summaries of all other segments.

Exact limits: with one segment (``s = T``) or segments of one token (``s = 1``) it *is* full softmax
attention.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from attnbook.attention.axial import near_square_divisor
from attnbook.attention.functional import check_qkv, masked_softmax

__all__ = ["combiner_attention", "combiner_weights"]


def _segment_size(T: int, segment_size: int | None, where: str) -> int:
    if segment_size is None:
        return near_square_divisor(T)
    if isinstance(segment_size, bool) or not isinstance(segment_size, numbers.Integral):
        raise TypeError(f"{where}: segment_size must be an int or None, got {segment_size!r}")
    if segment_size <= 0 or T % segment_size:
        raise ValueError(f"{where}: segment_size={segment_size} must be positive and divide the length T={T}")
    return int(segment_size)


def _parts(q: Tensor, k: Tensor, v: Tensor, s: int, causal: bool, scale: float) -> tuple[Tensor, ...]:
    """Segment the sequence and compute the joint logits over [direct keys ; segment summaries]."""
    *lead, T, d = q.shape
    n = T // s  # number of segments
    qs, ks = q.reshape(*lead, n, s, d), k.reshape(*lead, n, s, d)  # (..., n, s, d)
    vs = v.reshape(*lead, n, s, v.shape[-1])  # (..., n, s, d_v)
    # Abstraction: one pooled query per segment scores the segment's own keys; the softmax q_r(j) is the same for
    # every query that looks at segment r, so the segment's summary value is computed once.
    w = qs.amax(dim=-2, keepdim=True)  # (..., n, 1, d)
    within = masked_softmax((w * scale) @ ks.transpose(-2, -1))  # (..., n, 1, s): q_r(j)
    summary_v = (within @ vs).squeeze(-2)  # (..., n, d_v): v̄_r
    summary_k = ks.amax(dim=-2)  # (..., n, d): k̄_r
    direct = (qs * scale) @ ks.transpose(-2, -1)  # (..., n, s, s): q_i k_j, own segment
    to_summaries = (qs * scale) @ summary_k[..., None, :, :].transpose(-2, -1)  # (..., n, s, n): q_i k̄_r
    seg = torch.arange(n, device=q.device)
    if causal:
        direct_mask = torch.ones(s, s, dtype=torch.bool, device=q.device).tril()  # (s, s)
        summary_mask = (seg[None, :] < seg[:, None])[:, None, :]  # (n, 1, n): strictly earlier segments
    else:
        direct_mask = torch.ones(s, s, dtype=torch.bool, device=q.device)
        summary_mask = (seg[None, :] != seg[:, None])[:, None, :]  # (n, 1, n): every other segment
    logits = torch.cat([direct, to_summaries], dim=-1)  # (..., n, s, s + n)
    mask = torch.cat([direct_mask.expand(n, s, s), summary_mask.expand(n, s, n)], dim=-1)  # (n, s, s + n)
    weights = masked_softmax(logits, mask)  # (..., n, s, s + n): one softmax over both kinds of keys
    return weights, within, vs, summary_v


def combiner_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    segment_size: int | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Combiner-Fixed attention :cite:`ren2021combiner`: direct attention in the own segment, one max-pooled
    summary key and one summary value per other segment, normalised together.

    Args:
        q, k: ``(..., T, d)``; v: ``(..., T, d_v)`` (self-attention: one length ``T``).
        segment_size: ``s``, which must divide ``T``; by default the largest divisor of ``T`` not above
            ``sqrt(T)``.
        causal: the official layer's causal form (own segment causally, summaries of earlier segments only).
        scale: logit scale, ``1/sqrt(d)`` by default (also used inside the segment summaries).

    Returns:
        ``(..., T, d_v)``. Every ``p(j | i)`` of the implied dense matrix (:func:`combiner_weights`) is
        positive (non-causal), and ``segment_size`` of ``1`` or ``T`` gives exactly softmax attention.
    """
    check_qkv(q, k, v, name="combiner_attention")
    T = q.shape[-2]
    if k.shape[-2] != T:
        raise ValueError(
            f"combiner_attention: needs T_k = T_q (self-attention), got q{tuple(q.shape)}, k{tuple(k.shape)}"
        )
    s = _segment_size(T, segment_size, "combiner_attention")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    weights, _, vs, summary_v = _parts(q, k, v, s, causal, scale)
    out = weights[..., :s] @ vs + weights[..., s:] @ summary_v[..., None, :, :]  # (..., n, s, d_v)
    return out.reshape(*q.shape[:-2], T, v.shape[-1])  # (..., T, d_v)


def combiner_weights(
    q: Tensor, k: Tensor, segment_size: int | None = None, *, causal: bool = False, scale: float | None = None
) -> Tensor:
    """The dense ``(..., T, T)`` matrix ``p(j | i)`` that :func:`combiner_attention` applies to ``v``.

    Built for checks and pictures (it costs ``O(T^2)``): ``combiner_attention(q, k, v) == combiner_weights(q, k) @ v``.
    The weight of key ``j`` in another segment ``r`` is the segment's weight times ``q_r(j)``.
    """
    check_qkv(q, k, k, name="combiner_weights")
    T = q.shape[-2]
    if k.shape[-2] != T:
        raise ValueError(f"combiner_weights: needs T_k = T_q, got q{tuple(q.shape)}, k{tuple(k.shape)}")
    s = _segment_size(T, segment_size, "combiner_weights")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    weights, within, _, _ = _parts(q, k, k, s, causal, scale)
    *lead, n, _, _ = weights.shape
    # Spread each segment's weight over its keys: (..., n_q, s_q, n_r) x (..., n_r, s_k) -> (..., n_q, s_q, n_r, s_k).
    spread = weights[..., s:, None] * within.squeeze(-2)[..., None, None, :, :]
    dense = spread.reshape(*lead, n, s, T).clone()  # (..., n, s, T); the own segment's summary weight is 0
    for seg in range(n):  # the own segment's block holds the direct weights
        dense[..., seg, :, seg * s : (seg + 1) * s] = weights[..., seg, :, :s]
    return dense.reshape(*lead, T, T)

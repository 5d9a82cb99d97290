"""Exact attention in linear memory: the online softmax and tiled ("flash") attention (chapter 07).

Papers: *Online normalizer calculation for softmax* (Milakov and Gimelshein, 2018, :cite:`milakov2018online`)
keeps a running maximum ``m`` and a running sum ``l`` so that the softmax's normaliser is found in one pass;
*Self-attention Does Not Need O(n^2) Memory* (Rabe and Staats, 2021, :cite:`rabe2021self`) applies it to
chunks of keys; *FlashAttention* (Dao et al., 2022, :cite:`dao2022flashattention`) tiles queries and keys
and recomputes the weights in the backward pass from the output ``O`` and one log-sum-exp per query row.

For each block of queries ``Q_i`` and each block of keys and values ``K_j, V_j``, with ``S_ij = scale Q_i K_j^T``:

.. math::
    m' = \\max(m, \\operatorname{rowmax} S_{ij}),\\quad
    \\ell' = e^{m - m'} \\ell + \\operatorname{rowsum} e^{S_{ij} - m'},\\quad
    O' = e^{m - m'} O + e^{S_{ij} - m'} V_j

and at the end ``O / l`` is the attention output and ``L = m + log l`` the row's log-sum-exp. Only tiles of
``block_q x block_k`` scores ever exist, so the memory is ``O(T d)`` instead of ``O(T_q T_k)``; the time is
still ``O(T_q T_k d)``. The backward pass rebuilds each tile's weights as ``exp(S_ij - L)``.

Shapes: ``q (..., T_q, d)``, ``k (..., T_k, d)``, ``v (..., T_k, d_v)``; output ``(..., T_q, d_v)``; the
log-sum-exp ``(..., T_q)``. The conventions are those of
:func:`~attnbook.attention.functional.scaled_dot_product_attention`: a boolean mask means ``True`` = may
attend, a floating mask is added to the scores, ``is_causal`` is aligned at the top left, and a query row
that sees no key gives zeros (never NaN) with zero gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from attnbook.attention.functional import check_mask, check_qkv
from attnbook.attention.masks import check_mask_dtype

__all__ = [
    "online_softmax",
    "online_softmax_stats",
    "tiled_attention",
    "tiled_attention_forward",
    "tiled_attention_backward",
    "TiledAttentionFunction",
]

_HALF = (torch.float16, torch.bfloat16)


def _check_block(name: str, value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    return value


def online_softmax_stats(scores: Tensor, block_size: int = 1) -> tuple[Tensor, Tensor]:
    """The running maximum ``m`` and running sum ``l = sum_j exp(s_j - m)`` of the last dim, in one pass.

    The scores are read ``block_size`` at a time (``block_size=1`` is the scalar recurrence of
    :cite:`milakov2018online`); after each block, ``m' = max(m, max(block))`` and
    ``l' = l exp(m - m') + sum(exp(block - m'))``. Returns ``m`` and ``l`` of shape ``scores.shape[:-1]``; a row
    of only ``-inf`` gives ``m = -inf`` and ``l = 0``.
    """
    if not isinstance(scores, Tensor) or not scores.is_floating_point():
        raise TypeError(f"online_softmax_stats: scores must be a floating tensor, got {type(scores).__name__}")
    if scores.ndim < 1 or scores.shape[-1] == 0:
        raise ValueError(f"online_softmax_stats: scores must have a non-empty last dim, got {tuple(scores.shape)}")
    block_size = _check_block("block_size", block_size, "online_softmax_stats")
    m = torch.full(scores.shape[:-1], -math.inf, dtype=scores.dtype, device=scores.device)
    total = torch.zeros(scores.shape[:-1], dtype=scores.dtype, device=scores.device)
    for start in range(0, scores.shape[-1], block_size):
        block = scores[..., start : start + block_size]  # (..., b)
        m_new = torch.maximum(m, block.amax(dim=-1))
        shift = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)  # nothing finite seen yet: 0
        total = total * torch.exp(m - shift) + torch.exp(block - shift[..., None]).sum(dim=-1)
        m = m_new
    return m, total


def online_softmax(scores: Tensor, block_size: int = 1) -> Tensor:
    """Softmax over the last dim from the one-pass statistics of :func:`online_softmax_stats`.

    Equals ``torch.softmax(scores, -1)`` (tests/test_tiled.py proves it on random inputs with hypothesis);
    a row of only ``-inf`` gives zeros instead of NaN.
    """
    m, total = online_softmax_stats(scores, block_size)
    shift = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    weights = torch.exp(scores - shift[..., None])
    return weights / torch.where(total > 0, total, torch.ones_like(total))[..., None]


def _validate(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    is_causal: bool,
    scale: float | None,
    block_q: int,
    block_k: int,
    where: str,
) -> float:
    """Check the inputs of the tiled functions; return the scale to use."""
    check_qkv(q, k, v, name=where)
    if not isinstance(is_causal, bool):
        raise TypeError(f"{where}: is_causal must be a bool, got {type(is_causal).__name__}")
    _check_block("block_q", block_q, where)
    _check_block("block_k", block_k, where)
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (scale > 0 and math.isfinite(scale))
    ):
        raise ValueError(f"{where}: scale must be a positive finite number or None, got {scale!r}")
    if mask is not None:
        check_mask_dtype(mask, name=f"{where}: mask")
        check_mask(mask, (*q.shape[:-1], k.shape[-2]), q.dtype, name=f"{where}: mask")
        if mask.device != q.device:
            raise TypeError(f"{where}: mask is on {mask.device} but q is on {q.device}")
        if mask.requires_grad:
            raise ValueError(
                f"{where}: the mask requires grad, but tiled attention does not differentiate the mask; pass "
                "mask.detach(), or use scaled_dot_product_attention(backend='manual') for a learned bias"
            )
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _tile_scores(
    q_tile: Tensor,
    k_tile: Tensor,
    mask: Tensor | None,
    is_causal: bool,
    rows: tuple[int, int],
    cols: tuple[int, int],
) -> Tensor:
    """Scores of one tile, ``q_tile k_tile^T`` (the scale is already in ``q_tile``), masked. ``(..., bq, bk)``."""
    s = q_tile @ k_tile.transpose(-2, -1)  # (..., bq, d) @ (..., d, bk) -> (..., bq, bk)
    if mask is not None:
        tile = mask[..., rows[0] : rows[1], cols[0] : cols[1]]  # a view of the broadcast mask
        if tile.dtype == torch.bool:
            s.masked_fill_(~tile, -math.inf)
        else:
            s += tile.to(s.dtype)
    if is_causal and cols[1] - 1 > rows[0]:  # the tile reaches above the diagonal j <= i
        i = torch.arange(rows[0], rows[1], device=s.device)[:, None]  # (bq, 1)
        j = torch.arange(cols[0], cols[1], device=s.device)[None, :]  # (1, bk)
        s.masked_fill_(j > i, -math.inf)
    return s


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF else dtype


def _broadcast_mask(mask: Tensor | None, q: Tensor, k: Tensor) -> Tensor | None:
    return None if mask is None else mask.expand(*q.shape[:-1], k.shape[-2])  # a view: no memory


def _forward(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, scale: float, block_q: int, block_k: int
) -> tuple[Tensor, Tensor]:
    """The tiled forward pass; returns the output (q's dtype) and the log-sum-exp per row (work dtype)."""
    work = _work_dtype(q.dtype)
    batch, (T_q, T_k), d_v = q.shape[:-2], (q.shape[-2], k.shape[-2]), v.shape[-1]
    q_scaled = q.to(work) * scale  # (..., T_q, d)
    k, v = k.to(work), v.to(work)  # (..., T_k, d), (..., T_k, d_v)
    mask = _broadcast_mask(mask, q, k)
    out = torch.empty(*batch, T_q, d_v, dtype=q.dtype, device=q.device)  # (..., T_q, d_v)
    lse = torch.empty(*batch, T_q, dtype=work, device=q.device)  # (..., T_q)
    for i0 in range(0, T_q, block_q):
        i1 = min(i0 + block_q, T_q)
        q_i = q_scaled[..., i0:i1, :]  # (..., bq, d)
        m = torch.full((*batch, i1 - i0), -math.inf, dtype=work, device=q.device)  # running max (..., bq)
        total = torch.zeros(*batch, i1 - i0, dtype=work, device=q.device)  # running sum (..., bq)
        acc = torch.zeros(*batch, i1 - i0, d_v, dtype=work, device=q.device)  # unnormalised output (..., bq, d_v)
        key_end = min(T_k, i1) if is_causal else T_k  # causal: keys after the block's last query are invisible
        for j0 in range(0, key_end, block_k):
            j1 = min(j0 + block_k, key_end)
            s = _tile_scores(q_i, k[..., j0:j1, :], mask, is_causal, (i0, i1), (j0, j1))  # (..., bq, bk)
            m_new = torch.maximum(m, s.amax(dim=-1))  # (..., bq)
            shift = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)  # no visible key yet: 0
            p = s.sub_(shift[..., None]).exp_()  # (..., bq, bk), entries in [0, 1] (in place: the tile is ours)
            rescale = torch.exp(m - shift)  # (..., bq): re-bases what was summed under the old maximum
            total = rescale * total + p.sum(dim=-1)
            acc = acc.mul_(rescale[..., None]).add_(p @ v[..., j0:j1, :])  # (..., bq, d_v)
            m = m_new
        seen = total > 0
        out[..., i0:i1, :] = (acc / torch.where(seen, total, torch.ones_like(total))[..., None]).to(q.dtype)
        shift = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        lse[..., i0:i1] = torch.where(seen, shift + torch.log(total), torch.full_like(total, -math.inf))
    return out, lse


def _backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    grad_out: Tensor,
    mask: Tensor | None,
    is_causal: bool,
    scale: float,
    block_q: int,
    block_k: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """The tiled backward pass by recomputation: each tile's weights are ``exp(S_ij - L_i)``."""
    work = _work_dtype(q.dtype)
    T_q, T_k = q.shape[-2], k.shape[-2]
    q_scaled = q.to(work) * scale  # (..., T_q, d)
    k, v, grad_out = k.to(work), v.to(work), grad_out.to(work)
    mask = _broadcast_mask(mask, q, k)
    lse = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse.to(work))  # empty rows: exp(-inf - 0) = 0
    delta = (grad_out * out.to(work)).sum(dim=-1)  # (..., T_q): D_i = sum_c dO_ic O_ic = sum_j a_ij dP_ij
    grad_q = torch.zeros_like(q_scaled)  # (..., T_q, d)
    grad_k = torch.empty_like(k)  # (..., T_k, d)
    grad_v = torch.empty_like(v)  # (..., T_k, d_v)
    for j0 in range(0, T_k, block_k):
        j1 = min(j0 + block_k, T_k)
        k_j, v_j = k[..., j0:j1, :], v[..., j0:j1, :]  # (..., bk, d), (..., bk, d_v)
        grad_k_j = torch.zeros_like(k_j)
        grad_v_j = torch.zeros_like(v_j)
        first = (j0 // block_q) * block_q if is_causal else 0  # causal: query blocks above key j0 see none of it
        for i0 in range(first, T_q, block_q):
            i1 = min(i0 + block_q, T_q)
            s = _tile_scores(q_scaled[..., i0:i1, :], k_j, mask, is_causal, (i0, i1), (j0, j1))  # (..., bq, bk)
            p = s.sub_(lse[..., i0:i1, None]).exp_()  # (..., bq, bk): the weights a_ij, recomputed
            grad_o_i = grad_out[..., i0:i1, :]  # (..., bq, d_v)
            grad_v_j += p.transpose(-2, -1) @ grad_o_i  # (..., bk, d_v)
            grad_p = grad_o_i @ v_j.transpose(-2, -1)  # (..., bq, bk)
            grad_s = grad_p.sub_(delta[..., i0:i1, None]).mul_(p)  # (..., bq, bk): the softmax's Jacobian
            grad_q[..., i0:i1, :] += grad_s @ k_j
            grad_k_j += grad_s.transpose(-2, -1) @ q_scaled[..., i0:i1, :]
        grad_k[..., j0:j1, :] = grad_k_j
        grad_v[..., j0:j1, :] = grad_v_j
    return (grad_q * scale).to(q.dtype), grad_k.to(q.dtype), grad_v.to(q.dtype)


def tiled_attention_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    block_q: int = 128,
    block_k: int = 128,
) -> tuple[Tensor, Tensor]:
    """The forward pass of tiled attention without autograd: the output and the log-sum-exp of every row.

    Returns ``out (..., T_q, d_v)`` and ``lse (..., T_q)`` with ``lse_i = log sum_j exp(s_ij)`` (``-inf`` for a
    row that sees no key; float32 for half-precision inputs). ``out`` and ``lse`` are all that the backward
    pass (:func:`tiled_attention_backward`) keeps, and two partial results over disjoint key sets merge
    exactly through their log-sum-exps. Arguments as in :func:`tiled_attention`.
    """
    scale = _validate(q, k, v, mask, is_causal, scale, block_q, block_k, "tiled_attention_forward")
    with torch.no_grad():
        return _forward(q, k, v, mask, is_causal, scale, block_q, block_k)


def tiled_attention_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    grad_out: Tensor,
    mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    block_q: int = 128,
    block_k: int = 128,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(dq, dk, dv)`` of tiled attention, recomputing each tile's weights from ``lse``.

    With ``P_ij = exp(S_ij - L_i)`` and ``D_i = rowsum(dO_i * O_i)``: ``dV_j = sum_i P_ij^T dO_i``,
    ``dS_ij = P_ij * (dO_i V_j^T - D_i)``, ``dQ_i = scale sum_j dS_ij K_j``, ``dK_j = scale sum_i dS_ij^T Q_i``.
    ``out (..., T_q, d_v)`` and ``lse (..., T_q)`` come from :func:`tiled_attention_forward` with the same
    arguments; ``grad_out`` has the shape of ``out``.
    """
    scale = _validate(q, k, v, mask, is_causal, scale, block_q, block_k, "tiled_attention_backward")
    expected = (*q.shape[:-1], v.shape[-1])
    for name, t, shape in (("out", out, expected), ("grad_out", grad_out, expected), ("lse", lse, q.shape[:-1])):
        if not isinstance(t, Tensor) or tuple(t.shape) != tuple(shape):
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"tiled_attention_backward: {name} must have shape {tuple(shape)}, got {got}")
    with torch.no_grad():
        return _backward(q, k, v, out, lse, grad_out, mask, is_causal, scale, block_q, block_k)


class TiledAttentionFunction(torch.autograd.Function):
    """Tiled attention as an autograd function: it saves ``q, k, v``, the output and the log-sum-exp only.

    ``TiledAttentionFunction.apply(q, k, v, mask, is_causal, scale, block_q, block_k)`` with validated
    arguments (``scale`` a float); call :func:`tiled_attention`, which validates them. Once differentiable:
    the backward pass itself is not differentiated (no double backward).
    """

    @staticmethod
    def forward(ctx, q, k, v, mask, is_causal, scale, block_q, block_k):  # noqa: D102
        out, lse = _forward(q, k, v, mask, is_causal, scale, block_q, block_k)
        ctx.save_for_backward(q, k, v, out, lse, mask)
        ctx.settings = (is_causal, scale, block_q, block_k)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        q, k, v, out, lse, mask = ctx.saved_tensors
        grads = _backward(q, k, v, out, lse, grad_out, mask, *ctx.settings)
        grads = tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:3], strict=True))
        return (*grads, None, None, None, None, None)


def tiled_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    block_q: int = 128,
    block_k: int = 128,
) -> Tensor:
    """Exact attention ``softmax(scale q k^T + mask) v`` computed tile by tile in ``O(T d)`` memory.

    The FlashAttention algorithm :cite:`dao2022flashattention` in PyTorch operations: the forward pass keeps a
    running maximum, sum and output per query row over blocks of keys (the online softmax of
    :cite:`milakov2018online`); the backward pass recomputes each tile's weights from the saved log-sum-exp,
    so neither pass ever holds more than ``block_q x block_k`` scores per batch element and head.

    Args:
        q: queries ``(..., T_q, d)``.
        k: keys ``(..., T_k, d)``.
        v: values ``(..., T_k, d_v)``.
        mask: boolean (``True`` = may attend) or additive (the dtype of ``q``, no gradient) mask that
            broadcasts to ``(..., T_q, T_k)``, e.g. a key-padding mask ``(B, 1, 1, T_k)``. Tiles are sliced
            from its broadcast view, so a thin mask costs no memory.
        is_causal: also hide key ``j > i`` from query ``i`` (top-left aligned, as in PyTorch); tiles wholly
            above the diagonal are skipped.
        scale: score scale; ``1/sqrt(d)`` by default.
        block_q: queries per tile (a positive int; the last block may be shorter).
        block_k: keys per tile (a positive int; the last block may be shorter).

    Returns:
        ``(..., T_q, d_v)``; a query row that sees no key gives zeros.

    Raises:
        TypeError: non-tensor, non-floating or mixed-dtype inputs; a mask neither boolean nor of ``q``'s dtype.
        ValueError: mismatched shapes, a mask that does not broadcast to ``(..., T_q, T_k)``, a block size that
            is not a positive int, a bad scale, or a mask that requires grad.
    """
    scale = _validate(q, k, v, mask, is_causal, scale, block_q, block_k, "tiled_attention")
    return TiledAttentionFunction.apply(q, k, v, mask, is_causal, scale, block_q, block_k)

"""Scaled dot-product attention, the functional core of the book (chapter 03).

.. math::  \\operatorname{Attention}(Q, K, V) = \\operatorname{softmax}\\!\\left(\\frac{Q K^\\top}{\\sqrt{d}} + M\\right) V

Two paths compute the same thing:

* ``backend="fused"`` calls :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory
  efficient kernels where available) and only adds the book's guarantees around it;
* ``backend="manual"`` spells the equation out in readable tensor operations and can return the weights.

``backend="auto"`` (the default) takes the fused path unless the weights are asked for.

The book's guarantees on both paths: boolean masks mean ``True`` = may attend, floating masks are added to
the logits; a query row with no visible key returns zeros (never NaN); half precision is computed without
overflow; bad input raises an error naming the argument and the shapes seen.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbook.attention.masks import causal_mask, fully_masked_rows

__all__ = ["scaled_dot_product_attention", "check_qkv", "check_mask", "masked_softmax"]

Backend = Literal["auto", "fused", "manual"]


def check_qkv(q: Tensor, k: Tensor, v: Tensor, *, name: str = "scaled_dot_product_attention") -> None:
    """Validate query, key and value tensors of shapes ``(..., L_q, D)``, ``(..., L_k, D)``, ``(..., L_k, D_v)``."""
    for arg, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: {arg} must be a floating tensor, got dtype {t.dtype}")
        if t.ndim < 2:
            raise ValueError(f"{name}: {arg} must have shape (..., L, D) with at least 2 dims, got {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{name}: q, k, v must share a dtype, got q={q.dtype}, k={k.dtype}, v={v.dtype}")
    if not (q.ndim == k.ndim == v.ndim):
        raise ValueError(
            f"{name}: q, k, v must have the same rank, got q{tuple(q.shape)}, k{tuple(k.shape)}, v{tuple(v.shape)}"
        )
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        raise ValueError(
            f"{name}: batch/head dims of q, k, v must match, got q{tuple(q.shape)}, k{tuple(k.shape)}, v{tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"{name}: q and k must have the same feature dim D, got q{tuple(q.shape)} and k{tuple(k.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{name}: k and v must have the same length L_k, got k{tuple(k.shape)} and v{tuple(v.shape)}")
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        raise ValueError(f"{name}: empty sequence: q{tuple(q.shape)}, k{tuple(k.shape)} (L_q and L_k must be > 0)")
    if q.shape[-1] == 0:
        raise ValueError(f"{name}: q and k have feature dim D=0, got q{tuple(q.shape)}")


def check_mask(mask: Tensor, logits_shape: tuple[int, ...], dtype: torch.dtype, *, name: str = "mask") -> None:
    """Check that ``mask`` is boolean or of ``dtype`` and broadcasts to ``logits_shape`` = ``(..., L_q, L_k)``."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool and mask.dtype != dtype:
        raise TypeError(
            f"{name} must be bool (True = attend) or an additive mask of the query dtype {dtype}, got {mask.dtype}"
        )
    try:
        shape = torch.broadcast_shapes(mask.shape, logits_shape)
    except RuntimeError:
        shape = None
    if shape != torch.Size(logits_shape):
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} does not broadcast to the attention logits' shape "
            f"{tuple(logits_shape)} = (..., L_q, L_k)"
        )


def masked_softmax(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Numerically stable softmax over the last dim; rows with every key masked give zeros, not NaN.

    ``mask`` is boolean (``True`` = keep) or additive. The maximum is subtracted before ``exp``; it is
    computed in float32 at least, so half precision neither overflows nor underflows to NaN.
    """
    work = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if mask is not None:
        work = work.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else work + mask.to(work.dtype)
    row_max = work.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(work - row_max)
    total = e.sum(dim=-1, keepdim=True)
    weights = e / torch.where(total > 0, total, torch.ones_like(total))
    return weights.to(logits.dtype)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    need_weights: bool = False,
    backend: Backend = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Scaled dot-product attention :cite:`vaswani2017attention`, ``softmax(q k^T * scale + mask) v``.

    Args:
        q: queries ``(..., L_q, D)``.
        k: keys ``(..., L_k, D)``.
        v: values ``(..., L_k, D_v)``.
        mask: boolean (``True`` = may attend) or additive float mask broadcastable to ``(..., L_q, L_k)``.
        is_causal: also hide key ``j > i`` from query ``i`` (top-left aligned, as in PyTorch).
        dropout_p: dropout on the attention weights (pass 0 at evaluation time).
        scale: logit scale; ``1/sqrt(D)`` by default.
        need_weights: also return the weights ``(..., L_q, L_k)`` (forces the manual path).
        backend: ``"auto"``, ``"fused"`` (PyTorch's SDPA kernels) or ``"manual"`` (readable ops).

    Returns:
        ``(..., L_q, D_v)``, or ``(output, weights)`` when ``need_weights``.
    """
    check_qkv(q, k, v)
    if backend not in ("auto", "fused", "manual"):
        raise ValueError(f"backend must be 'auto', 'fused' or 'manual', got {backend!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if scale is not None and not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number or None, got {scale}")
    logits_shape = (*q.shape[:-1], k.shape[-2])
    if mask is not None:
        check_mask(mask, logits_shape, q.dtype)
    if need_weights and backend == "fused":
        raise ValueError("need_weights=True needs backend='manual' or 'auto': the fused kernel returns no weights")
    manual = backend == "manual" or (backend == "auto" and need_weights)
    if mask is None and not manual:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal, scale=scale)
    mask_full = mask
    if is_causal:
        causal = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
        if mask is None:
            mask_full = causal
        elif mask.dtype == torch.bool:
            mask_full = mask & causal
        else:
            mask_full = mask.masked_fill(~causal, float("-inf"))
    if manual:
        return _manual(q, k, v, mask_full, dropout_p, scale, need_weights)
    # Rows that see no key: let the kernel attend everywhere there (finite values and gradients), then zero them.
    empty = fully_masked_rows(mask_full)
    safe = mask_full | empty if mask_full.dtype == torch.bool else mask_full.masked_fill(empty, 0.0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, dropout_p=dropout_p, scale=scale)
    return out.masked_fill(empty, 0.0)


def _manual(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, scale: float | None, need_weights: bool
) -> Tensor | tuple[Tensor, Tensor]:
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    # Scale q before the product: in half precision q k^T itself could overflow.
    logits = (q * scale) @ k.transpose(-2, -1)  # (..., L_q, L_k)
    weights = masked_softmax(logits, mask)  # (..., L_q, L_k)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    out = attn @ v  # (..., L_q, D_v)
    return (out, weights) if need_weights else out

"""Scaled dot-product attention, the functional core of the book (chapter 03).

Paper: *Attention Is All You Need* (Vaswani et al., 2017, :cite:`vaswani2017attention`), eq. (1):

.. math::
    \\operatorname{Attention}(Q, K, V) = \\operatorname{softmax}\\!\\left(\\frac{Q K^\\top}{\\sqrt{d}} + M\\right) V

Two paths compute the same thing:

* ``backend="fused"`` calls :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory
  efficient kernels where available) and only adds the book's guarantees around it;
* ``backend="manual"`` spells the equation out in readable tensor operations and can return the weights.

``backend="auto"`` (the default) takes the fused path unless the weights are asked for.

The book's guarantees on both paths: boolean masks mean ``True`` = may attend, floating masks are added to
the logits; a query row with no visible key returns zeros (never NaN) with finite gradients; half precision
is computed without overflow (logits and softmax in float32, the maximum subtracted before ``exp``,
:cite:`milakov2018online`); bad input raises an error naming the argument and the shapes seen.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbook.attention.masks import causal_mask, check_mask_dtype, fully_masked_rows

__all__ = [
    "scaled_dot_product_attention",
    "check_qkv",
    "check_mask",
    "check_input_dtype",
    "masked_softmax",
    "attention_dropout",
]

Backend = Literal["auto", "fused", "manual"]

_HALF = (torch.float16, torch.bfloat16)


def check_qkv(q: Tensor, k: Tensor, v: Tensor, *, name: str = "scaled_dot_product_attention") -> None:
    """Validate query, key and value tensors of shapes ``(..., T_q, D)``, ``(..., T_k, D)``, ``(..., T_k, D_v)``.

    Raises ``TypeError`` for non-tensors, non-floating or mixed dtypes and mixed devices, ``ValueError`` for
    ranks below 2, mismatched batch/head dims, feature dims or key/value lengths, and empty sequences.
    Valid input is recognised by one combined test (this runs on every attention call, so it must cost
    next to nothing); only invalid input pays for the diagnosis that names the argument and the shapes.
    """
    try:
        qs, ks, vs = q.shape, k.shape, v.shape
        if qs == ks == vs:  # self-attention: one comparison instead of slicing three shapes
            shapes_ok = len(qs) >= 2 and qs[-2] > 0 and qs[-1] > 0
        else:
            shapes_ok = (
                len(qs) == len(ks) == len(vs) >= 2
                and qs[:-2] == ks[:-2] == vs[:-2]
                and qs[-1] == ks[-1]
                and ks[-2] == vs[-2]
                and qs[-2] > 0
                and ks[-2] > 0
                and qs[-1] > 0
                and vs[-1] > 0
            )
        valid = (
            shapes_ok and q.dtype == k.dtype == v.dtype and q.is_floating_point() and q.device == k.device == v.device
        )
    except AttributeError:  # not tensors
        valid = False
    if not valid:
        _diagnose_qkv(q, k, v, name)


def _diagnose_qkv(q: Tensor, k: Tensor, v: Tensor, name: str) -> None:
    """Raise the error that explains why ``check_qkv`` rejected its input."""
    for arg, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: {arg} must be a floating tensor, got dtype {t.dtype} (shape {tuple(t.shape)})")
        if t.ndim < 2:
            raise ValueError(f"{name}: {arg} must have shape (..., L, D) with at least 2 dims, got {tuple(t.shape)}")
    shapes = f"q{tuple(q.shape)}, k{tuple(k.shape)}, v{tuple(v.shape)}"
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{name}: q, k, v must share a dtype, got q={q.dtype}, k={k.dtype}, v={v.dtype}")
    if not (q.device == k.device == v.device):
        raise TypeError(f"{name}: q, k, v must be on one device, got q={q.device}, k={k.device}, v={v.device}")
    if not (q.ndim == k.ndim == v.ndim):
        raise ValueError(f"{name}: q, k, v must have the same rank, got {shapes}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"{name}: batch/head dims of q, k, v must match, got {shapes}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"{name}: q and k must have the same feature dim D, got q{tuple(q.shape)} and k{tuple(k.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{name}: k and v must have the same length T_k, got k{tuple(k.shape)} and v{tuple(v.shape)}")
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        raise ValueError(f"{name}: empty sequence: q{tuple(q.shape)}, k{tuple(k.shape)} (T_q and T_k must be > 0)")
    raise ValueError(f"{name}: feature dims must be > 0, got {shapes}")


def _autocasting(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_enabled()


def check_input_dtype(module: torch.nn.Module, where: str, **inputs: Tensor) -> None:
    """Raise ``TypeError`` unless every input is floating and of the dtype of ``module``'s parameters.

    ``nn.Linear`` would otherwise fail deep inside with "mat1 and mat2 must have the same dtype"; this names the
    argument, both dtypes and the two ways out (convert the module, or the input). Under ``torch.autocast``
    mixed dtypes are expected (autocast casts inside each op), so only the floating check applies there.
    """
    param = next(module.parameters(), None)
    for name, t in inputs.items():
        if not t.is_floating_point():
            raise TypeError(f"{where}: {name} must be a floating tensor, got {t.dtype}")
        if param is not None and t.dtype != param.dtype and not _autocasting(t.device.type):
            raise TypeError(
                f"{where}: {name} is {t.dtype} but the module's parameters are {param.dtype}; convert one to the "
                f"other, e.g. module.to({t.dtype}) or {name}.to({param.dtype})"
            )


def check_mask(mask: Tensor, logits_shape: tuple[int, ...], dtype: torch.dtype, *, name: str = "mask") -> None:
    """Check that ``mask`` is boolean or of ``dtype`` and broadcasts to ``logits_shape`` = ``(..., T_q, T_k)``.

    An attention mask has at least two dims, ``(T_q, T_k)``: a 1-D mask is ambiguous (does it index keys or
    queries?) and a 0-D one masks nothing in particular, so both raise ``ValueError`` (a key-padding mask
    ``(B, T_k)`` becomes ``(B, 1, 1, T_k)`` with :func:`~attnbook.attention.masks.key_mask_to_attn_mask`).
    "Broadcasts to" is one-way: every mask dim, aligned from the right, is 1 or equals the logits' dim, and
    the mask has no more dims than the logits (it may not enlarge them).
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool and mask.dtype != dtype:
        raise TypeError(
            f"{name} must be bool (True = attend) or an additive mask of the query dtype {dtype}, "
            f"got {mask.dtype} (shape {tuple(mask.shape)})"
        )
    if mask.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dims, (T_q, T_k) or one that broadcasts to the logits' shape "
            f"{tuple(logits_shape)}, got shape {tuple(mask.shape)}; for a (B, T_k) key-padding mask use "
            "key_mask_to_attn_mask"
        )
    _check_broadcasts(mask, logits_shape, name)


def _check_broadcasts(mask: Tensor, logits_shape: tuple[int, ...], name: str) -> None:
    """Raise ``ValueError`` unless ``mask`` broadcasts (one-way) to ``logits_shape``."""
    mask_shape = mask.shape
    if len(mask_shape) > len(logits_shape) or not all(
        m == 1 or m == n for m, n in zip(reversed(mask_shape), reversed(logits_shape), strict=False)
    ):
        raise ValueError(
            f"{name} of shape {tuple(mask_shape)} does not broadcast to the attention logits' shape "
            f"{tuple(logits_shape)} = (..., T_q, T_k)"
        )


def masked_softmax(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Numerically stable softmax over the last dim; rows with every key masked give zeros, not NaN.

    ``softmax(x)_j = exp(x_j - m) / sum_i exp(x_i - m)`` with ``m = max_i x_i`` (any ``m`` gives the same
    value; the maximum makes every exponent ``<= 0``, so ``exp`` cannot overflow). ``mask`` is boolean
    (``True`` = keep) or additive. Half-precision logits are computed on in float32 and cast back. A row
    whose every entry is ``-inf`` would give ``exp(-inf - (-inf)) = exp(nan)``; here its maximum is replaced
    by 0 and its zero denominator by 1, so the row is all zeros with zero (finite) gradients.

    Shapes: ``logits (..., T_q, T_k)``, ``mask`` broadcastable to it (one-way: it may not enlarge the logits);
    returns ``(..., T_q, T_k)``. A mask of another shape raises ``ValueError`` naming both shapes, one neither
    boolean nor floating raises ``TypeError``, and so do integer logits (a softmax of integers is not defined).
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        got = logits.dtype if isinstance(logits, Tensor) else type(logits).__name__
        raise TypeError(f"masked_softmax: logits must be a floating tensor, got {got} (convert with .float())")
    if mask is not None:
        check_mask_dtype(mask, name="masked_softmax: mask")
        _check_broadcasts(mask, tuple(logits.shape), "masked_softmax: mask")
    work = logits.float() if logits.dtype in _HALF else logits
    if mask is not None:
        work = work.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else work + mask.to(work.dtype)
    # The softmax does not depend on the shift, so the maximum needs no gradient.
    row_max = work.detach().amax(dim=-1, keepdim=True)  # (..., T_q, 1)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(work - row_max)  # (..., T_q, T_k), every entry in [0, 1]
    total = e.sum(dim=-1, keepdim=True)  # (..., T_q, 1)
    weights = e / torch.where(total > 0, total, torch.ones_like(total))
    return weights.to(logits.dtype)


def attention_dropout(weights: Tensor, p: float) -> Tensor:
    """Dropout on attention weights: zero each ``a_ij`` with probability ``p``, scale the rest by ``1/(1-p)``.

    ``keep ~ Bernoulli(1 - p)`` is drawn with ``torch.empty_like(weights).bernoulli_(1 - p)`` from the global
    generator, so a seeded call can be reproduced by hand (chapter 03 does); the scale keeps the expectation,
    ``E[keep * a / (1 - p)] = a``. The rows of the result no longer sum to 1, only in expectation.
    ``p = 0`` returns ``weights`` itself. Shapes: any; returns the shape of ``weights``.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"attention_dropout: p must be a number in [0, 1), got {p!r}")
    if p == 0:
        return weights
    keep = torch.empty_like(weights).bernoulli_(1.0 - p)  # 1 with probability 1 - p
    return weights * keep / (1.0 - p)


_EMPTY_ROWS_SAFE: dict[str, bool] = {}


def _kernel_zeroes_empty_rows(device: torch.device) -> bool:
    """Whether PyTorch's own SDPA already returns zeros (and finite gradients) for fully masked rows.

    Recent PyTorch versions do on CPU; older ones return NaN. Probed once per device type, on CPU only
    (GPU kernels are chosen per input shape, so there the book always applies its own guard).
    """
    if device.type != "cpu":
        return False
    if "cpu" not in _EMPTY_ROWS_SAFE:
        safe = True
        with torch.inference_mode(False), torch.enable_grad():
            for length in (4, 96):
                q = torch.ones(1, 1, length, 8, requires_grad=True)
                mask = torch.ones(length, length, dtype=torch.bool)
                mask[1] = False
                out = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
                (grad,) = torch.autograd.grad(out.sum(), q)
                safe = safe and bool((out[..., 1, :] == 0).all()) and bool(torch.isfinite(grad).all())
        _EMPTY_ROWS_SAFE["cpu"] = safe
    return _EMPTY_ROWS_SAFE["cpu"]


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
        q: queries ``(..., T_q, D)``.
        k: keys ``(..., T_k, D)``.
        v: values ``(..., T_k, D_v)``.
        mask: boolean (``True`` = may attend) or additive float mask (the dtype of ``q``) broadcastable to
            ``(..., T_q, T_k)``: ``(T_q, T_k)``, ``(B, 1, 1, T_k)`` for padding, ``(B, H, T_q, T_k)``, ...
        is_causal: also hide key ``j > i`` from query ``i`` (top-left aligned, as in PyTorch).
        dropout_p: dropout on the attention weights, applied after the softmax: each weight is zeroed with
            probability ``dropout_p`` and the rest are scaled by ``1/(1 - dropout_p)``
            (:func:`attention_dropout` on the manual path). This function has no train/eval mode: pass 0
            at evaluation time (:class:`~attnbook.attention.AttentionCore` does so in ``eval()`` mode).
        scale: logit scale; ``1/sqrt(D)`` by default.
        need_weights: also return the weights ``(..., T_q, T_k)``, before dropout (forces the manual path).
        backend: ``"auto"``, ``"fused"`` (PyTorch's SDPA kernels) or ``"manual"`` (readable ops).

    Returns:
        ``(..., T_q, D_v)``, or ``(output, weights)`` when ``need_weights``. Query rows that see no key
        give zeros.

    Second derivatives (double backward: gradient penalties, :func:`torch.autograd.gradgradcheck`, Hessian-vector
    products) need ``backend="manual"``: PyTorch's fused CPU kernel has no derivative of its backward pass, so
    ``"fused"`` (and ``"auto"``, which picks it) raise there. The manual path is plain differentiable tensor
    operations, twice differentiable everywhere, fully masked rows included.
    """
    check_qkv(q, k, v)
    if backend not in ("auto", "fused", "manual"):
        raise ValueError(f"backend must be 'auto', 'fused' or 'manual', got {backend!r}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a number in [0, 1), got {dropout_p!r}")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (scale > 0 and math.isfinite(scale))
    ):
        raise ValueError(f"scale must be a positive finite number or None, got {scale!r}")
    if need_weights and backend == "fused":
        raise ValueError("need_weights=True needs backend='manual' or 'auto': the fused kernel returns no weights")
    manual = backend == "manual" or need_weights
    if mask is None and not manual:
        # The hot path: nothing to add to PyTorch's kernel (a top-left causal mask never empties a row).
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal, scale=scale)
    if mask is not None:
        check_mask(mask, (*q.shape[:-1], k.shape[-2]), q.dtype)
        if mask.device != q.device:
            raise TypeError(f"mask is on {mask.device} but q is on {q.device} (mask shape {tuple(mask.shape)})")
    mask_full = mask
    if is_causal:
        causal = causal_mask(q.shape[-2], k.shape[-2], device=q.device)  # (T_q, T_k)
        if mask is None:
            mask_full = causal
        elif mask.dtype == torch.bool:
            mask_full = mask & causal
        else:
            mask_full = mask.masked_fill(~causal, float("-inf"))
    if manual:
        return _manual(q, k, v, mask_full, dropout_p, scale, need_weights)
    if _kernel_zeroes_empty_rows(q.device):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask_full, dropout_p=dropout_p, scale=scale)
    # Rows that see no key: let the kernel attend everywhere there (finite values and gradients), then zero them.
    empty = fully_masked_rows(mask_full)  # (..., T_q, 1)
    safe = mask_full | empty if mask_full.dtype == torch.bool else mask_full.masked_fill(empty, 0.0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, dropout_p=dropout_p, scale=scale)
    return out.masked_fill(empty, 0.0)


def _manual(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, scale: float | None, need_weights: bool
) -> Tensor | tuple[Tensor, Tensor]:
    """The equation as written: logits, masked stable softmax, dropout, weighted sum of values."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if q.dtype in _HALF:
        # float16 tops out at 65504: a dot product of 64 entries of size 40 already overflows. Accumulate in float32.
        logits = (q.float() * scale) @ k.float().transpose(-2, -1)  # (..., T_q, T_k), float32
    else:
        logits = (q * scale) @ k.transpose(-2, -1)  # (..., T_q, T_k)
    weights = masked_softmax(logits, mask).to(q.dtype)  # (..., T_q, T_k)
    attn = attention_dropout(weights, dropout_p)  # (..., T_q, T_k); the weights returned are before dropout
    out = attn @ v  # (..., T_q, D_v)
    return (out, weights) if need_weights else out

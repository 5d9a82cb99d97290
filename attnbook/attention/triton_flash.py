"""An optional Triton kernel for the forward pass of tiled ("flash") attention, for readers with a GPU (chapter 07).

The kernel is the loop of :func:`~attnbook.attention.tiled.tiled_attention_forward` written for one GPU
program per block of ``BLOCK_Q`` queries of one (batch, head): the program keeps the running maximum, sum and
output of its rows in registers while it streams blocks of keys and values through, and writes the output and
one log-sum-exp per row :cite:`dao2022flashattention`. The backward pass is the package's PyTorch one
(:func:`~attnbook.attention.tiled.tiled_attention_backward`), which recomputes the weights from that
log-sum-exp, so the kernel needs no backward of its own.

Triton and a CUDA device are optional: this module imports without them, :func:`triton_available` then
returns ``False``, and :func:`triton_flash_attention` raises ``RuntimeError`` telling the reader to use
:func:`~attnbook.attention.tiled.tiled_attention`. The book's CPU test suite checks that path; where Triton is
installed without a GPU, a test runs the kernel on the CPU in Triton's interpreter (``TRITON_INTERPRET=1``), and
the test on a GPU is marked to skip where there is none.

Shapes: ``q (B, H, T_q, d)``, ``k (B, H, T_k, d)``, ``v (B, H, T_k, d)`` with ``d`` a power of two from 16 to
256, float16, bfloat16 or float32 (``tl.dot`` may use TF32 for float32 inputs); returns ``(B, H, T_q, d)``.
Masks: ``is_causal`` only (top-left aligned, as in PyTorch).
"""

from __future__ import annotations

import importlib.util
import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from attnbook.attention.functional import check_qkv
from attnbook.attention.tiled import tiled_attention_backward

__all__ = ["triton_available", "triton_flash_attention"]

_HAVE_TRITON = importlib.util.find_spec("triton") is not None
BLOCK_Q = 64
BLOCK_K = 64

if _HAVE_TRITON:  # pragma: no cover - needs triton and a GPU; tests/test_tiled.py runs it where both exist
    import triton
    import triton.language as tl

    @triton.jit
    def _flash_forward_kernel(
        Q,
        K,
        V,
        O,
        LSE,
        scale,
        T_q,
        T_k,
        H,
        stride_qb,
        stride_qh,
        stride_qt,
        stride_kb,
        stride_kh,
        stride_kt,
        stride_vb,
        stride_vh,
        stride_vt,
        stride_ob,
        stride_oh,
        stride_ot,
        IS_CAUSAL: tl.constexpr,
        BLOCK_Q: tl.constexpr,
        BLOCK_K: tl.constexpr,
        HEAD_DIM: tl.constexpr,
    ):
        block = tl.program_id(0)  # which block of queries
        bh = tl.program_id(1)  # which (batch, head)
        b = bh // H
        h = bh % H
        rows = block * BLOCK_Q + tl.arange(0, BLOCK_Q)  # (BLOCK_Q,)
        dims = tl.arange(0, HEAD_DIM)  # (HEAD_DIM,)
        q = tl.load(
            Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qt + dims[None, :],
            mask=rows[:, None] < T_q,
            other=0.0,
        )  # (BLOCK_Q, HEAD_DIM)
        m = tl.full([BLOCK_Q], float("-inf"), tl.float32)  # running maximum
        total = tl.zeros([BLOCK_Q], tl.float32)  # running sum
        acc = tl.zeros([BLOCK_Q, HEAD_DIM], tl.float32)  # unnormalised output
        key_end = T_k
        if IS_CAUSAL:
            key_end = tl.minimum(T_k, (block + 1) * BLOCK_Q)  # keys after the block's last query are invisible
        for start in range(0, key_end, BLOCK_K):
            cols = start + tl.arange(0, BLOCK_K)  # (BLOCK_K,)
            k = tl.load(
                K + b * stride_kb + h * stride_kh + cols[:, None] * stride_kt + dims[None, :],
                mask=cols[:, None] < T_k,
                other=0.0,
            )  # (BLOCK_K, HEAD_DIM)
            s = tl.dot(q, tl.trans(k)) * scale  # (BLOCK_Q, BLOCK_K), float32
            visible = cols[None, :] < T_k
            if IS_CAUSAL:
                visible = visible & (cols[None, :] <= rows[:, None])
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))  # key 0 is visible to every row, so this is finite
            p = tl.exp(s - m_new[:, None])
            rescale = tl.exp(m - m_new)
            total = total * rescale + tl.sum(p, 1)
            v = tl.load(
                V + b * stride_vb + h * stride_vh + cols[:, None] * stride_vt + dims[None, :],
                mask=cols[:, None] < T_k,
                other=0.0,
            )  # (BLOCK_K, HEAD_DIM)
            acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        acc = acc / total[:, None]
        tl.store(
            O + b * stride_ob + h * stride_oh + rows[:, None] * stride_ot + dims[None, :],
            acc.to(O.dtype.element_ty),
            mask=rows[:, None] < T_q,
        )
        tl.store(LSE + bh * T_q + rows, m + tl.log(total), mask=rows < T_q)


def triton_available() -> bool:
    """True when Triton is installed and a CUDA device is present, i.e. when the kernel can run."""
    return _HAVE_TRITON and torch.cuda.is_available()


def _validate(q: Tensor, k: Tensor, v: Tensor, is_causal: bool, scale: float | None) -> float:
    check_qkv(q, k, v, name="triton_flash_attention")
    if q.ndim != 4:
        raise ValueError(f"triton_flash_attention: q, k, v must be (B, H, T, d), got q{tuple(q.shape)}")
    d = q.shape[-1]
    if v.shape[-1] != d or d < 16 or d > 256 or d & (d - 1):
        raise ValueError(
            f"triton_flash_attention: the head width d must be a power of two from 16 to 256 and the same for "
            f"q, k and v, got q{tuple(q.shape)}, v{tuple(v.shape)}"
        )
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"triton_flash_attention: dtype must be float16, bfloat16 or float32, got {q.dtype}")
    if not isinstance(is_causal, bool):
        raise TypeError(f"triton_flash_attention: is_causal must be a bool, got {type(is_causal).__name__}")
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"triton_flash_attention: scale must be a positive finite number or None, got {scale!r}")
    if not triton_available():
        raise RuntimeError(
            "triton_flash_attention needs the triton package and a CUDA GPU "
            f"(triton installed: {_HAVE_TRITON}, CUDA available: {torch.cuda.is_available()}); "
            "attnbook.attention.tiled.tiled_attention computes the same thing on any device"
        )
    if q.device.type != "cuda":
        raise ValueError(f"triton_flash_attention: q, k, v must be on a CUDA device, got {q.device}")
    return 1.0 / math.sqrt(d) if scale is None else float(scale)


def _forward(q: Tensor, k: Tensor, v: Tensor, is_causal: bool, scale: float) -> tuple[Tensor, Tensor]:
    """Launch the kernel: one program per (block of queries, batch x head). Returns the output and the lse."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, H, T_q, d = q.shape
    T_k = k.shape[-2]
    out = torch.empty_like(q)  # (B, H, T_q, d)
    lse = torch.empty(B, H, T_q, dtype=torch.float32, device=q.device)  # (B, H, T_q)
    grid = (triton.cdiv(T_q, BLOCK_Q), B * H)
    _flash_forward_kernel[grid](
        q,
        k,
        v,
        out,
        lse,
        scale,
        T_q,
        T_k,
        H,
        *q.stride()[:3],
        *k.stride()[:3],
        *v.stride()[:3],
        *out.stride()[:3],
        IS_CAUSAL=is_causal,
        BLOCK_Q=BLOCK_Q,
        BLOCK_K=BLOCK_K,
        HEAD_DIM=d,
    )
    return out, lse


class _TritonFlashFunction(torch.autograd.Function):
    """Triton forward, the package's tiled PyTorch backward (recomputation from the log-sum-exp)."""

    @staticmethod
    def forward(ctx, q, k, v, is_causal, scale):
        out, lse = _forward(q, k, v, is_causal, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.settings = (is_causal, scale)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        is_causal, scale = ctx.settings
        grads = tiled_attention_backward(q, k, v, out, lse, grad_out, is_causal=is_causal, scale=scale)
        grads = tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:3], strict=True))
        return (*grads, None, None)


def triton_flash_attention(
    q: Tensor, k: Tensor, v: Tensor, *, is_causal: bool = False, scale: float | None = None
) -> Tensor:
    """Tiled attention with a Triton forward kernel; differentiable through the PyTorch tiled backward.

    Args:
        q: queries ``(B, H, T_q, d)`` on a CUDA device.
        k: keys ``(B, H, T_k, d)``.
        v: values ``(B, H, T_k, d)`` (the same width as ``q`` and ``k``).
        is_causal: hide key ``j > i`` from query ``i`` (top-left aligned).
        scale: score scale; ``1/sqrt(d)`` by default.

    Returns:
        ``(B, H, T_q, d)``, equal to :func:`~attnbook.attention.tiled.tiled_attention` up to the dtype's rounding.

    Raises:
        RuntimeError: Triton or a CUDA device is missing.
        ValueError: shapes other than 4-D, a head width that is not a power of two in [16, 256], CPU tensors.
        TypeError: a dtype other than float16, bfloat16, float32.
    """
    scale = _validate(q, k, v, is_causal, scale)
    return _TritonFlashFunction.apply(q, k, v, is_causal, scale)

"""Axial attention: attend along one axis of a grid at a time. Introduced in chapter 09.

Paper: *Axial Attention in Multidimensional Transformers* (Ho et al., 2019, :cite:`ho2019axial`). A
``H x W`` image of ``T = HW`` tokens is treated as ``H`` independent sequences of length ``W`` (row attention)
and ``W`` sequences of length ``H`` (column attention). One axial step costs ``O(T (H + W) d)`` instead of
full attention's ``O(T^2 d)``; two steps (rows, then columns) connect every position to every other.

As a mask on the flattened grid, attention along axis ``a`` is full attention in which token ``i`` may see
token ``j`` exactly when their coordinates agree on every axis except ``a`` (:func:`axial_mask`):

.. math::
    \\operatorname{Axial}_a(Q, K, V) = \\operatorname{softmax}\\!\\left(\\frac{QK^\\top}{\\sqrt d} + M_a\\right) V,
    \\qquad (M_a)_{ij} = 0 \\text{ if } c(i)_b = c(j)_b \\;\\forall b \\ne a, \\text{ else } -\\infty.

Two compositions are in use. The paper's Axial Transformer stacks row and column layers (each with its own
projections, residual and feed-forward); lucidrains' ``axial-attention`` package, the reimplementation the
book checks against, runs one attention per axis on the same input and *sums* the outputs.
:class:`AxialAttention` offers both (``mode="sum"`` or ``"sequential"``).
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch
from torch import Tensor, nn

from attnbook.attention.functional import check_qkv, scaled_dot_product_attention

__all__ = ["axial_attention", "axial_mask", "axial_attention_2d", "AxialAttention", "near_square_divisor"]


def _check_axis(axis: int, num_axes: int, where: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{where}: axis must be an int, got {axis!r} ({type(axis).__name__})")
    if not -num_axes <= axis < num_axes:
        raise ValueError(f"{where}: axis={axis} is out of range for a grid of {num_axes} axes")
    return int(axis) % num_axes


def _check_grid(shape: tuple[int, ...] | list[int], where: str) -> tuple[int, ...]:
    shape = tuple(shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0 for s in shape):
        raise ValueError(f"{where}: grid shape must be a non-empty tuple of positive ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def near_square_divisor(n: int) -> int:
    """The largest divisor of ``n`` that is at most ``sqrt(n)`` (``sqrt(n)`` itself for a square)."""
    divisor = max(1, math.isqrt(n))
    while n % divisor:
        divisor -= 1
    return divisor


def axial_attention(
    q: Tensor, k: Tensor, v: Tensor, *, axis: int, num_axes: int = 2, causal: bool = False, scale: float | None = None
) -> Tensor:
    """Attention along one axis of a grid: every line of the grid parallel to ``axis`` is its own sequence.

    Args:
        q, k: ``(..., *grid, d)`` where ``grid`` is the last ``num_axes`` dims before the features, e.g.
            ``(B, H, rows, cols, d)``; ``k`` has the same grid as ``q`` (self-attention over the grid).
        v: ``(..., *grid, d_v)``.
        axis: which grid axis to attend along (``0`` = the first grid axis; negative counts from the last).
            For an image ``(rows, cols)``: ``axis=1`` is row attention (along a row, over the columns),
            ``axis=0`` column attention.
        num_axes: how many dims before the features form the grid.
        causal: token ``i`` sees only tokens at or before it along ``axis`` (the Axial Transformer's masked
            column / row attention).
        scale: logit scale, ``1/sqrt(d)`` by default.

    Returns:
        ``(..., *grid, d_v)``.
    """
    check_qkv(q, k, v, name="axial_attention")
    if isinstance(num_axes, bool) or not isinstance(num_axes, numbers.Integral) or num_axes < 1:
        raise ValueError(f"axial_attention: num_axes must be a positive int, got {num_axes!r}")
    if q.ndim < num_axes + 1:
        raise ValueError(
            f"axial_attention: q must have shape (..., *grid, d) with {num_axes} grid dims, got {tuple(q.shape)}"
        )
    if k.shape[:-1] != q.shape[:-1] or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(
            f"axial_attention: q, k, v must share the grid (..., *grid), got q{tuple(q.shape)}, "
            f"k{tuple(k.shape)}, v{tuple(v.shape)}"
        )
    axis = _check_axis(axis, num_axes, "axial_attention")
    dim = q.ndim - 1 - num_axes + axis  # the tensor dim of the attended axis
    # Move the attended axis next to the features: every other grid axis becomes a batch dim.
    qa, ka, va = (t.movedim(dim, -2) for t in (q, k, v))  # (..., other axes, n_axis, d)
    out = scaled_dot_product_attention(qa, ka, va, is_causal=causal, scale=scale)  # (..., other axes, n_axis, d_v)
    return out.movedim(-2, dim)  # (..., *grid, d_v)


def axial_mask(
    grid: tuple[int, ...] | list[int], axis: int, *, causal: bool = False, device: torch.device | str | None = None
) -> Tensor:
    """Boolean ``(T, T)`` mask, ``T = prod(grid)``, of attention along ``axis`` on the row-major flattened grid.

    ``True`` where tokens ``i`` and ``j`` agree on every coordinate but ``axis`` (and, with ``causal``,
    ``j`` is not after ``i`` along ``axis``). Full attention with this mask equals :func:`axial_attention`.
    """
    grid = _check_grid(grid, "axial_mask")
    axis = _check_axis(axis, len(grid), "axial_mask")
    coords = torch.stack(
        torch.meshgrid(*(torch.arange(n, device=device) for n in grid), indexing="ij"), dim=-1
    ).reshape(-1, len(grid))  # (T, num_axes), row-major
    same = coords[:, None, :] == coords[None, :, :]  # (T, T, num_axes)
    others = [a for a in range(len(grid)) if a != axis]
    mask = same[..., others].all(dim=-1) if others else torch.ones_like(same[..., 0])  # (T, T)
    if causal:
        mask = mask & (coords[None, :, axis] <= coords[:, None, axis])
    return mask


def axial_attention_2d(q: Tensor, k: Tensor, v: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
    """A ``(q, k, v) -> out`` form for sequence benchmarks: the mean of row and column attention on a grid.

    ``q, k, v`` are ``(..., T, d)`` sequences of a row-major ``rows x cols`` grid (``grid``; by default the most
    nearly square one, ``rows`` the largest divisor of ``T`` not above ``sqrt(T)``: a square for square ``T``).
    Both attentions share ``q, k, v`` and their outputs are averaged, as lucidrains' summed axial outputs with one
    shared projection (halved). Cost ``O(T (rows + cols) d)``: ``O(T^1.5 d)`` on a square.
    """
    check_qkv(q, k, v, name="axial_attention_2d")
    T = q.shape[-2]
    if k.shape[-2] != T:
        raise ValueError(
            f"axial_attention_2d: self-attention on a grid needs T_k = T_q, got q{tuple(q.shape)}, k{tuple(k.shape)}"
        )
    if grid is None:
        rows = near_square_divisor(T)
        grid = (rows, T // rows)
    rows, cols = _check_grid(grid, "axial_attention_2d")
    if rows * cols != T:
        raise ValueError(f"axial_attention_2d: grid {grid} has {rows * cols} cells but the sequence has T={T}")
    shaped = [t.reshape(*t.shape[:-2], rows, cols, t.shape[-1]) for t in (q, k, v)]  # (..., rows, cols, d)
    along_rows = axial_attention(*shaped, axis=1)  # (..., rows, cols, d_v)
    along_cols = axial_attention(*shaped, axis=0)  # (..., rows, cols, d_v)
    return (0.5 * (along_rows + along_cols)).reshape(*q.shape[:-2], T, v.shape[-1])  # (..., T, d_v)


class _AxisAttention(nn.Module):
    """Multi-head self-attention along one grid axis: ``q_proj``, ``k_proj``, ``v_proj`` (no bias), ``out_proj``."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, axis: int, causal: bool) -> Tensor:
        *lead, E = x.shape  # (B, *grid, E)
        split = [
            p(x).reshape(*lead, self.num_heads, self.head_dim).movedim(-2, 1)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        ]
        out = axial_attention(*split, axis=axis, num_axes=len(lead) - 1, causal=causal)  # (B, H, *grid, d)
        return self.out_proj(out.movedim(1, -2).reshape(*lead, E))  # (B, *grid, E)


class AxialAttention(nn.Module):
    """Multi-head axial self-attention on a channel-last grid ``(B, *grid, E)`` :cite:`ho2019axial`.

    Args:
        embed_dim: ``E``; ``num_heads`` must divide it.
        num_heads: heads per axis.
        num_axes: the grid's number of axes (2 for images, 3 for video).
        mode: ``"sum"`` runs one attention per axis on the input and sums their outputs (lucidrains'
            ``AxialAttention(sum_axial_out=True)``); ``"sequential"`` applies them one after the other, the first
            axis first (``x -> attend_0(x) -> attend_1(...)``), so that two axes already reach the whole image.
        causal: mask each axis causally (the autoregressive Axial Transformer's masked attention).

    Parameters: ``axes[a].{q_proj, k_proj, v_proj, out_proj}`` for each axis ``a`` (the three input projections
    without bias, like the reference package). Returns ``(B, *grid, E)``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        num_axes: int = 2,
        mode: Literal["sum", "sequential"] = "sum",
        causal: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads), ("num_axes", num_axes)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"AxialAttention: {name} must be an int, got {value!r} ({type(value).__name__})")
            if value <= 0:
                raise ValueError(f"AxialAttention: {name} must be positive, got {value}")
        if embed_dim % num_heads:
            raise ValueError(f"AxialAttention: num_heads={num_heads} must divide embed_dim={embed_dim}")
        if mode not in ("sum", "sequential"):
            raise ValueError(f"AxialAttention: mode must be 'sum' or 'sequential', got {mode!r}")
        self.embed_dim, self.num_axes, self.mode, self.causal = int(embed_dim), int(num_axes), mode, bool(causal)
        self.axes = nn.ModuleList(_AxisAttention(self.embed_dim, int(num_heads)) for _ in range(self.num_axes))

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"AxialAttention: x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != self.num_axes + 2 or x.shape[-1] != self.embed_dim:
            raise ValueError(
                f"AxialAttention: x must have shape (B, *grid, E) with {self.num_axes} grid axes and "
                f"E={self.embed_dim}, got {tuple(x.shape)}"
            )
        if self.mode == "sum":
            return sum(attend(x, axis, self.causal) for axis, attend in enumerate(self.axes))
        for axis, attend in enumerate(self.axes):
            x = attend(x, axis, self.causal)
        return x

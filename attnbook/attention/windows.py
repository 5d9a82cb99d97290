"""Local attention on grids: (shifted) windows in 1, 2 or 3 dimensions, and blocks with halos (chapter 08).

* **Windows** (Swin; Swin UNETR's 3-D windows, Hatamizadeh et al., 2022, :cite:`hatamizadeh2022swin`): cut the
  grid into non-overlapping windows of ``w_1 x ... x w_n`` cells; attention inside each window, with a learned
  relative-position bias ``B`` looked up by the offset between two cells:
  ``softmax(Q K^T / sqrt(d) + B) V``. Every second layer shifts the windows by ``s = w // 2``; the cyclic-shift
  trick rolls the grid by ``-s``, attends in the regular windows, masks the pairs that the roll brought
  together from opposite borders, and rolls back. :func:`window_attention_mask` states the same pattern as an
  explicit mask over the whole grid.
* **Blocks with halos** (HaloNet, Vaswani et al., 2021, :cite:`vaswani2021scaling`): queries in blocks of
  ``b x b``, each block attending to the ``(b + 2h) x (b + 2h)`` neighbourhood around it, with factorised 2-D
  relative logits ``q . (r^Y + r^X)``.

Grids are flattened row-major (last axis fastest), as ``torch.flatten`` does.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.functional import check_qkv, masked_softmax

_HALF = (torch.float16, torch.bfloat16)

__all__ = [
    "window_partition",
    "window_reverse",
    "window_ids",
    "window_attention_mask",
    "shifted_window_mask",
    "relative_position_index",
    "window_attention",
    "WindowAttention",
    "halo_attention",
    "halo_attention_mask",
    "HaloAttention",
]


def _as_tuple(name: str, value: int | tuple[int, ...], ndim: int, *, minimum: int = 1) -> tuple[int, ...]:
    values = (value,) * ndim if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(values) != ndim or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
        raise ValueError(f"{name} must be an int >= {minimum} or {ndim} of them (one per grid axis), got {value!r}")
    return values


def _check_grid(spatial: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...]) -> None:
    for axis, (n, w, s) in enumerate(zip(spatial, window, shift, strict=True)):
        if n % w:
            raise ValueError(f"grid size {n} on axis {axis} is not a multiple of window_size {w} (grid {spatial})")
        if s >= w:
            raise ValueError(f"shift_size {s} on axis {axis} must be smaller than window_size {w}")


def window_partition(x: Tensor, window_size: tuple[int, ...]) -> Tensor:
    """``(B, n_1, ..., n_k, C)`` -> ``(B, N_w, w_1 ... w_k, C)``: the cells of each window, windows row-major."""
    spatial = tuple(x.shape[1:-1])
    k = len(spatial)
    shape = [x.shape[0]]
    for n, w in zip(spatial, window_size, strict=True):
        shape += [n // w, w]
    x = x.reshape(*shape, x.shape[-1])  # (B, n_1/w_1, w_1, ..., C)
    order = [0, *range(1, 2 * k, 2), *range(2, 2 * k + 1, 2), 2 * k + 1]  # window indices first, then offsets
    return x.permute(order).reshape(x.shape[0], -1, math.prod(window_size), x.shape[-1])


def window_reverse(windows: Tensor, window_size: tuple[int, ...], spatial: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B, N_w, w_1 ... w_k, C)`` -> ``(B, n_1, ..., n_k, C)``."""
    k = len(spatial)
    counts = [n // w for n, w in zip(spatial, window_size, strict=True)]
    x = windows.reshape(windows.shape[0], *counts, *window_size, windows.shape[-1])
    order = [0]
    for axis in range(k):
        order += [1 + axis, 1 + k + axis]
    return x.permute(*order, 2 * k + 1).reshape(windows.shape[0], *spatial, windows.shape[-1])


def window_ids(spatial: tuple[int, ...], window_size: tuple[int, ...], shift_size: tuple[int, ...]) -> Tensor:
    """``(n_1 ... n_k,)`` the window each cell belongs to, in the grid's own coordinates.

    Shifting the windows by ``s`` along an axis moves their borders to ``s - w, s, s + w, ...``: cell ``p`` lies
    in window ``floor((p + w - s) / w)`` (the first and last windows are cut by the border). Two cells attend to
    each other iff they share this id on every axis: the explicit form of Swin's shifted windows.
    """
    ids = torch.zeros((), dtype=torch.long)
    for n, w, s in zip(spatial, window_size, shift_size, strict=True):
        axis_ids = (torch.arange(n) + (w - s if s else 0)) // w  # (n,)
        ids = ids[..., None] * (n // w + 1) + axis_ids  # mixed radix: one integer per combination
    return ids.flatten()


def window_attention_mask(
    spatial: tuple[int, ...], window_size: int | tuple[int, ...], shift_size: int | tuple[int, ...] = 0
) -> Tensor:
    """Boolean ``(T, T)`` mask (``T = n_1 ... n_k``) of (shifted) window attention over the whole grid."""
    spatial = tuple(spatial)
    window = _as_tuple("window_size", window_size, len(spatial))
    shift = _as_tuple("shift_size", shift_size, len(spatial), minimum=0)
    _check_grid(spatial, window, shift)
    ids = window_ids(spatial, window, shift)
    return ids[:, None] == ids[None, :]


def shifted_window_mask(spatial: tuple[int, ...], window_size: tuple[int, ...], shift_size: tuple[int, ...]) -> Tensor:
    """Swin's cyclic-shift mask: ``(N_w, N, N)`` boolean, ``True`` where two cells of a rolled window may attend.

    Label each cell of the grid (after rolling by ``-s``) by the region it came from: per axis, the regions are
    ``[0, n - w)``, ``[n - w, n - s)`` and ``[n - s, n)``: the last window holds cells from both borders.
    Two cells of a window attend iff their labels agree on every axis.
    """
    labels = torch.zeros((), dtype=torch.long)
    for n, w, s in zip(spatial, window_size, shift_size, strict=True):
        region = torch.zeros(n, dtype=torch.long)
        if s:
            region[n - w : n - s] = 1
            region[n - s :] = 2
        labels = labels[..., None] * 3 + region  # (n_1, ..., n_axis)
    windows = window_partition(labels[None, ..., None], window_size)[0, :, :, 0]  # (N_w, N)
    return windows[:, :, None] == windows[:, None, :]  # (N_w, N, N)


def relative_position_index(window_size: tuple[int, ...]) -> Tensor:
    """``(N, N)`` index into a table of ``prod(2 w_a - 1)`` biases: the offset ``p_i - p_j`` of two cells of a
    window, each axis shifted to ``[0, 2 w_a - 2]`` and combined row-major (Swin's 2-D and Swin UNETR's 3-D index).
    """
    coords = torch.stack(torch.meshgrid(*(torch.arange(w) for w in window_size), indexing="ij")).flatten(1)
    offset = coords[:, :, None] - coords[:, None, :]  # (k, N, N)
    index = torch.zeros(offset.shape[1:], dtype=torch.long)
    for axis, w in enumerate(window_size):
        index = index * (2 * w - 1) + offset[axis] + w - 1
    return index


def window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    spatial: tuple[int, ...],
    window_size: int | tuple[int, ...],
    shift_size: int | tuple[int, ...] = 0,
    *,
    bias: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """(Shifted) window attention on a ``k``-dimensional grid, by the cyclic-shift trick.

    ``q, k (B, H, T, d)``, ``v (B, H, T, d_v)`` with ``T = prod(spatial)`` cells in row-major order;
    ``bias (H, N, N)`` is added inside every window (``N = prod(window_size)``), e.g. the relative-position
    bias. Returns ``(B, H, T, d_v)``. Equals full attention with :func:`window_attention_mask` (and the bias
    placed at each pair's offset). Cost ``O(T N)``.
    """
    check_qkv(q, k, v, name="window_attention")
    spatial = tuple(spatial)
    ndim = len(spatial)
    window = _as_tuple("window_size", window_size, ndim)
    shift = _as_tuple("shift_size", shift_size, ndim, minimum=0)
    if q.ndim != 4 or q.shape[-2] != math.prod(spatial) or k.shape[-2] != q.shape[-2]:
        raise ValueError(
            f"window_attention: q, k, v must be (B, H, T, d) with T = prod(spatial) = {math.prod(spatial)}, "
            f"got q{tuple(q.shape)}, k{tuple(k.shape)}"
        )
    _check_grid(spatial, window, shift)
    size = math.prod(window)
    if bias is not None and (bias.ndim != 3 or bias.shape[1:] != (size, size) or bias.shape[0] not in (1, q.shape[1])):
        raise ValueError(f"bias must be (H, N, N) with N = {size}, got {tuple(bias.shape)}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    B, H = q.shape[:2]
    axes = tuple(range(1, ndim + 1))

    def to_windows(x: Tensor) -> Tensor:  # (B, H, T, e) -> (B, H, N_w, N, e)
        x = x.reshape(B * H, *spatial, x.shape[-1])  # (B H, n_1, ..., n_k, e)
        if any(shift):
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=axes)  # cyclic shift: shifted windows -> regular
        return window_partition(x, window).unflatten(0, (B, H))  # (B, H, N_w, N, e)

    if q.dtype in _HALF:  # logits and softmax in float32: a half-precision dot product overflows easily
        q, k = q.float(), k.float()
    qw, kw, vw = to_windows(q), to_windows(k), to_windows(v)
    logits = (qw * scale) @ kw.transpose(-2, -1)  # (B, H, N_w, N, N)
    if bias is not None:
        logits = logits + bias.to(logits.dtype)[None, :, None]
    mask = shifted_window_mask(spatial, window, shift).to(q.device) if any(shift) else None  # (N_w, N, N)
    out = masked_softmax(logits, mask).to(v.dtype) @ vw  # (B, H, N_w, N, d_v)
    out = window_reverse(out.flatten(0, 1), window, spatial)  # (B H, n_1, ..., n_k, d_v)
    if any(shift):
        out = torch.roll(out, shifts=shift, dims=axes)
    return out.reshape(B, H, -1, out.shape[-1])  # (B, H, T, d_v)


class WindowAttention(nn.Module):
    """Swin's (shifted) window multi-head self-attention with a relative-position bias, in 1, 2 or 3 dimensions.

    ``x (B, n_1, ..., n_k, C)`` -> same shape. Parameters: ``qkv`` (``C -> 3C``), ``proj`` (``C -> C``) and
    ``relative_position_bias_table`` ``(prod(2 w_a - 1), H)``, named as in timm's and MONAI's Swin so weights
    load one to one. With ``k = 3`` it is Swin UNETR's 3-D window attention :cite:`hatamizadeh2022swin`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: tuple[int, ...],
        shift_size: int | tuple[int, ...] = 0,
        *,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads must be a positive divisor of dim={dim}, got {num_heads!r}")
        self.window_size = _as_tuple("window_size", window_size, len(tuple(window_size)))
        self.shift_size = _as_tuple("shift_size", shift_size, len(self.window_size), minimum=0)
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        table_size = math.prod(2 * w - 1 for w in self.window_size)
        self.relative_position_bias_table = nn.Parameter(torch.randn(table_size, num_heads) * 0.02)
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)

    def relative_bias(self) -> Tensor:
        """``(H, N, N)``: the bias of every pair of cells of a window."""
        return self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)

    def forward(self, x: Tensor) -> Tensor:
        spatial = tuple(x.shape[1:-1])
        if len(spatial) != len(self.window_size) or x.shape[-1] != self.proj.in_features:
            raise ValueError(
                f"WindowAttention: x must be (B, {len(self.window_size)} grid axes, C={self.proj.in_features}), "
                f"got {tuple(x.shape)}"
            )
        B, C = x.shape[0], x.shape[-1]
        qkv = self.qkv(x.reshape(B, -1, C)).unflatten(-1, (3, self.num_heads, C // self.num_heads))  # (B, T, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, d)
        out = window_attention(q, k, v, spatial, self.window_size, self.shift_size, bias=self.relative_bias())
        return self.proj(out.transpose(1, 2).reshape(B, *spatial, C))  # (B, n_1, ..., n_k, C)


# --------------------------------------------------------------------------------------------------------------
# HaloNet: blocks with halos
# --------------------------------------------------------------------------------------------------------------


def halo_attention_mask(height: int, width: int, block_size: int, halo_size: int) -> Tensor:
    """Boolean ``(Y X, Y X)``: pixel ``p`` sees key ``k`` iff ``k`` lies in the block of ``p`` grown by the halo."""
    for name, value in (("height", height), ("width", width), ("block_size", block_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if isinstance(halo_size, bool) or not isinstance(halo_size, int) or halo_size < 0:
        raise ValueError(f"halo_size must be an int >= 0, got {halo_size!r}")
    y = torch.arange(height * width) // width
    x = torch.arange(height * width) % width

    def near(c: Tensor) -> Tensor:  # (T, T): key coordinate within the query block's extended range
        start = (c // block_size * block_size)[:, None]
        return (c[None, :] >= start - halo_size) & (c[None, :] < start + block_size + halo_size)

    return near(y) & near(x)


def halo_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_size: int,
    halo_size: int,
    *,
    rel_height: Tensor | None = None,
    rel_width: Tensor | None = None,
    padding: Literal["zeros", "mask"] = "zeros",
    scale: float | None = None,
) -> Tensor:
    """HaloNet's blocked local self-attention on a ``Y x X`` grid.

    ``q, k (B, H, Y, X, d)``, ``v (B, H, Y, X, d_v)``; ``Y`` and ``X`` multiples of ``b = block_size``. Each
    ``b x b`` query block attends to the ``(b + 2h) x (b + 2h)`` window around it (``h = halo_size``):
    ``s = q . k * scale + q . (r^Y_{u - i} + r^X_{v - j})`` with ``rel_height, rel_width (2(b + 2h) - 1, d)``
    indexed by window-minus-block coordinate (as timm's ``HaloAttn``). At the border the halo is
    ``padding="zeros"`` (the paper and timm: zero keys and values that still take part in the softmax) or
    ``"mask"`` (they are masked: then this equals full attention with :func:`halo_attention_mask`).
    Returns ``(B, H, Y, X, d_v)``. Cost ``O(Y X (b + 2h)^2)``.
    """
    if q.ndim != 5:
        raise ValueError(f"halo_attention: q, k, v must be (B, H, Y, X, d), got q{tuple(q.shape)}")
    check_qkv(q, k, v, name="halo_attention")
    if q.shape[:-1] != k.shape[:-1]:
        raise ValueError(f"halo_attention: q and k must share a grid, got q{tuple(q.shape)} and k{tuple(k.shape)}")
    if padding not in ("zeros", "mask"):
        raise ValueError(f"padding must be 'zeros' or 'mask', got {padding!r}")
    B, H, Y, X, d = q.shape
    b, h = block_size, halo_size
    if isinstance(b, bool) or not isinstance(b, int) or b < 1 or Y % b or X % b:
        raise ValueError(f"block_size must be a positive int dividing the grid {Y} x {X}, got {block_size!r}")
    if isinstance(h, bool) or not isinstance(h, int) or h < 0:
        raise ValueError(f"halo_size must be an int >= 0, got {halo_size!r}")
    win = b + 2 * h
    for name, rel in (("rel_height", rel_height), ("rel_width", rel_width)):
        if rel is not None and rel.shape != (2 * win - 1, d):
            raise ValueError(f"{name} must be (2(b + 2h) - 1, d) = ({2 * win - 1}, {d}), got {tuple(rel.shape)}")
    scale = d**-0.5 if scale is None else scale
    ny, nx = Y // b, X // b
    if q.dtype in _HALF:  # logits and softmax in float32: a half-precision dot product overflows easily
        q, k = q.float(), k.float()
    q_blocks = q.reshape(B, H, ny, b, nx, b, d).transpose(3, 4).reshape(B, H, ny, nx, b * b, d)

    def neighbourhoods(t: Tensor) -> Tensor:  # (B, H, Y, X, e) -> (B, H, ny, nx, win^2, e)
        t = F.pad(t, (0, 0, h, h, h, h))  # zero halo around the grid
        t = t.unfold(2, win, b).unfold(3, win, b)  # (B, H, ny, nx, e, win, win)
        return t.flatten(-2).transpose(-2, -1)  # (B, H, ny, nx, win^2, e)

    k_win, v_win = neighbourhoods(k), neighbourhoods(v)
    logits = (q_blocks * scale) @ k_win.transpose(-2, -1)  # (B, H, ny, nx, b^2, win^2)
    offset = torch.arange(win, device=q.device)[None, :] - torch.arange(b, device=q.device)[:, None] + win - 1
    if rel_height is not None:  # q_(i, j) . r^Y[u - i + win - 1], the same for every key column v
        rel = torch.einsum("...ijd,iud->...iju", q_blocks.unflatten(-2, (b, b)), rel_height.to(q.dtype)[offset])
        logits = logits + rel[..., None].expand(*rel.shape, win).flatten(-4, -3).flatten(-2)
    if rel_width is not None:  # q_(i, j) . r^X[v - j + win - 1], the same for every key row u
        rel = torch.einsum("...ijd,jvd->...ijv", q_blocks.unflatten(-2, (b, b)), rel_width.to(q.dtype)[offset])
        logits = logits + rel[..., None, :].expand(*rel.shape[:-1], win, win).flatten(-4, -3).flatten(-2)
    mask = None
    if padding == "mask":
        inside = torch.ones(1, 1, Y, X, 1, dtype=torch.bool, device=q.device)  # the halo pads it with False
        mask = neighbourhoods(inside)[0, 0, :, :, None, :, 0]  # (ny, nx, 1, win^2)
    out = masked_softmax(logits, mask).to(v.dtype) @ v_win  # (B, H, ny, nx, b^2, d_v)
    return out.reshape(B, H, ny, nx, b, b, -1).transpose(3, 4).reshape(B, H, Y, X, -1)


class HaloAttention(nn.Module):
    """HaloNet's multi-head blocked local self-attention (Vaswani et al., 2021, :cite:`vaswani2021scaling`).

    ``x (B, Y, X, C)`` -> ``(B, Y, X, C)``: ``q = x W_Q``, ``k = x W_K``, ``v = x W_V`` (1x1 convolutions, i.e.
    linear maps per pixel), :func:`halo_attention` per head with per-module relative tables ``rel_height``,
    ``rel_width`` (shared by the heads, as in timm), no output projection (HaloNet's bottleneck block follows
    it with a 1x1 convolution of its own). Stride 1 only.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        block_size: int,
        halo_size: int,
        *,
        head_dim: int | None = None,
        qkv_bias: bool = False,
        padding: Literal["zeros", "mask"] = "zeros",
    ) -> None:
        super().__init__()
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads must be a positive divisor of dim={dim}, got {num_heads!r}")
        self.num_heads, self.block_size, self.halo_size, self.padding = num_heads, block_size, halo_size, padding
        self.head_dim = dim // num_heads if head_dim is None else head_dim
        self.value_dim = dim // num_heads
        self.q = nn.Linear(dim, num_heads * self.head_dim, bias=qkv_bias)
        self.k = nn.Linear(dim, num_heads * self.head_dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        rows = 2 * (block_size + 2 * halo_size) - 1
        self.rel_height = nn.Parameter(torch.randn(rows, self.head_dim) * self.head_dim**-0.5)
        self.rel_width = nn.Parameter(torch.randn(rows, self.head_dim) * self.head_dim**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[-1] != self.v.in_features:
            raise ValueError(f"HaloAttention: x must be (B, Y, X, C={self.v.in_features}), got {tuple(x.shape)}")

        def heads(t: Tensor) -> Tensor:  # (B, Y, X, H e) -> (B, H, Y, X, e)
            return t.unflatten(-1, (self.num_heads, -1)).permute(0, 3, 1, 2, 4)

        out = halo_attention(
            heads(self.q(x)),
            heads(self.k(x)),
            heads(self.v(x)),
            self.block_size,
            self.halo_size,
            rel_height=self.rel_height,
            rel_width=self.rel_width,
            padding=self.padding,
        )  # (B, H, Y, X, d_v)
        return out.permute(0, 2, 3, 1, 4).flatten(-2)  # (B, Y, X, C)

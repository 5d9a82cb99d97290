"""Local attention on sequences: sliding windows, blocks, Conformer block attention, epipolar rows (chapter 08).

Every function here computes ``softmax(q k^T * scale + bias + M) v`` for a *banded* mask ``M``: query ``i``
sees only keys near ``i``. Each has two forms that the tests prove equal:

* the **mask** form: an explicit ``(T, T)`` boolean mask (``sliding_window_mask``, ``block_mask``,
  ``epipolar_mask``) handed to full attention, :func:`~attnbook.attention.scaled_dot_product_attention`.
  Its cost is that of full attention, ``O(T^2)``: a mask says *what* is computed, not how cheaply;
* the **blocked** form: cut the sequence into blocks of ``w`` positions, gather for each block only the key
  blocks its queries can see, and attend inside those. Time and memory ``O(T w)``, linear in ``T``.

Papers: *Scaling Local Self-Attention for Parameter Efficient Visual Backbones* (HaloNet; Vaswani et al.,
2021, :cite:`vaswani2021scaling`): blocks and halos, the 1-D form here and the 2-D one in
:mod:`~attnbook.attention.windows`; *Granite-speech* (Saon et al., 2025, :cite:`saon2025granite`): the
Conformer encoder's block attention with Shaw relative positions (:class:`ConformerBlockAttention`);
*CCNeXt* (2025, :cite:`ccnext2025`): windowed epipolar cross-attention between a stereo pair
(:class:`WindowedEpipolarCrossAttention`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.core import Pattern
from attnbook.attention.functional import check_qkv, masked_softmax

_HALF = (torch.float16, torch.bfloat16)

__all__ = [
    "sliding_window_mask",
    "SlidingWindowPattern",
    "block_mask",
    "blocked_attention",
    "sliding_window_attention",
    "local_attention",
    "conformer_block_distances",
    "block_relative_attention",
    "ConformerBlockAttention",
    "epipolar_mask",
    "epipolar_attention",
    "WindowedEpipolarCrossAttention",
]


def _check_positive_int(name: str, value: object, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_scale(scale: float | None) -> None:
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (scale > 0 and math.isfinite(scale))
    ):
        raise ValueError(f"scale must be a positive finite number or None, got {scale!r}")


def _window_reach(window_size: int, causal: bool) -> int:
    """How far a query looks: ``w - 1`` keys back (causal) or ``(w - 1) / 2`` each side (``w`` odd)."""
    _check_positive_int("window_size", window_size)
    if causal:
        return window_size - 1
    if window_size % 2 == 0:
        raise ValueError(
            f"window_size must be odd for a centred (non-causal) window of w = 2r + 1 keys, got {window_size}"
        )
    return (window_size - 1) // 2


# --------------------------------------------------------------------------------------------------------------
# The mask form
# --------------------------------------------------------------------------------------------------------------


def sliding_window_mask(
    T_q: int,
    T_k: int | None = None,
    *,
    window_size: int,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Boolean ``(T_q, T_k)`` mask of a sliding window of ``w = window_size`` keys (``True`` = may attend).

    Causal: query ``i`` sees ``i - w + 1 <= j <= i``. Centred (``w`` odd): ``|i - j| <= (w - 1) / 2``.
    Either way each query sees at most ``w`` keys, and ``L`` stacked layers reach ``L (w - 1) + 1`` positions.
    """
    T_k = T_q if T_k is None else T_k
    _check_positive_int("T_q", T_q)
    _check_positive_int("T_k", T_k)
    reach = _window_reach(window_size, causal)
    offset = torch.arange(T_k, device=device)[None, :] - torch.arange(T_q, device=device)[:, None]  # j - i
    if causal:
        return (offset <= 0) & (offset >= -reach)
    return offset.abs() <= reach


class SlidingWindowPattern(Pattern):
    """The sliding window as a part of the attention core: query position ``i`` sees key positions ``j`` with
    ``i - w + 1 <= j <= i`` (``causal``) or ``|i - j| <= (w - 1) / 2`` (centred, ``w`` odd).

    It reads the positions, so it stays right when decoding with a KV cache (queries ``P..P+T-1`` against keys
    ``0..P+T-1``); ``AttentionCore(pattern=SlidingWindowPattern(w))`` equals full attention with
    :func:`sliding_window_mask`.
    """

    def __init__(self, window_size: int, *, causal: bool = True) -> None:
        super().__init__()
        self.reach = _window_reach(window_size, causal)
        self.window_size, self.causal = window_size, causal

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, causal={self.causal}"

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        offset = k_pos[None, :] - q_pos[:, None]  # (T_q, T_k): j - i
        if self.causal:
            return (offset <= 0) & (offset >= -self.reach)
        return offset.abs() <= self.reach


def block_mask(
    T: int,
    block_size: int,
    *,
    look_backward: int = 0,
    look_forward: int = 0,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Boolean ``(T, T)`` mask of blocked attention: query ``i`` sees the keys of blocks ``i // w - look_backward``
    to ``i // w + look_forward`` (``w = block_size``), and with ``causal`` only keys ``j <= i``.

    ``look_backward = look_forward = 0`` is block-diagonal attention (Granite-speech's encoder, Swin's windows
    in 1-D); ``look_backward = 1, causal=True`` is the blocked local attention of lucidrains'
    ``local-attention`` package.
    """
    _check_positive_int("T", T)
    _check_positive_int("block_size", block_size)
    _check_positive_int("look_backward", look_backward, minimum=0)
    _check_positive_int("look_forward", look_forward, minimum=0)
    block = torch.arange(T, device=device) // block_size
    diff = block[None, :] - block[:, None]  # key block - query block
    mask = (diff >= -look_backward) & (diff <= look_forward)
    if causal:
        mask = mask & torch.ones(T, T, dtype=torch.bool, device=device).tril()
    return mask


# --------------------------------------------------------------------------------------------------------------
# The blocked form: O(T w)
# --------------------------------------------------------------------------------------------------------------


def _banded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_size: int,
    look_backward: int,
    look_forward: int,
    allowed: Callable[[Tensor, Tensor], Tensor] | None,
    scale: float,
    bias: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Attention of each block of ``block_size`` queries to its own and neighbouring key blocks.

    ``q, k (..., T, d)``, ``v (..., T, d_v)``; returns ``(..., T, d_v)``. Keys outside ``[0, T)`` (padding)
    are masked, and ``allowed(i, j)`` (absolute positions, broadcast) can narrow the band further.
    ``bias(q_blocks)`` adds logits of shape ``(..., n_b, w, (look_backward + 1 + look_forward) w)``.
    """
    T = q.shape[-2]
    w = block_size
    if q.dtype in _HALF:  # logits and softmax in float32: a half-precision dot product overflows easily
        q, k = q.float(), k.float()
    num_blocks = -(-T // w)
    pad = num_blocks * w - T
    q_blocks = F.pad(q, (0, 0, 0, pad)).unflatten(-2, (num_blocks, w))  # (..., n_b, w, d)
    span = look_backward + 1 + look_forward

    def gather(x: Tensor) -> Tensor:  # (..., T, e) -> (..., n_b, span * w, e): each block's visible keys
        x = F.pad(x, (0, 0, look_backward * w, pad + look_forward * w))  # (..., (n_b + span - 1) w, e)
        x = x.unflatten(-2, (num_blocks + span - 1, w))  # (..., n_b + span - 1, w, e)
        return torch.cat([x[..., s : s + num_blocks, :, :] for s in range(span)], dim=-2)  # (..., n_b, span w, e)

    k_blocks, v_blocks = gather(k), gather(v)  # (..., n_b, span w, d), (..., n_b, span w, d_v)
    q_pos = torch.arange(num_blocks * w, device=q.device).view(num_blocks, w)  # (n_b, w)
    k_pos = (torch.arange(num_blocks, device=q.device)[:, None] - look_backward) * w + torch.arange(
        span * w, device=q.device
    )  # (n_b, span w)
    visible = (k_pos >= 0) & (k_pos < T)  # (n_b, span w): no padding
    visible = visible[:, None, :] & (q_pos < T)[:, :, None]  # (n_b, w, span w)
    if allowed is not None:
        visible = visible & allowed(q_pos[:, :, None], k_pos[:, None, :])
    logits = (q_blocks * scale) @ k_blocks.transpose(-2, -1)  # (..., n_b, w, span w)
    if bias is not None:
        logits = logits + bias(q_blocks)
    weights = masked_softmax(logits, visible).to(v.dtype)  # (..., n_b, w, span w); padded query rows are zeros
    out = weights @ v_blocks  # (..., n_b, w, d_v)
    return out.flatten(-3, -2)[..., :T, :]  # (..., T, d_v)


def _check_self(q: Tensor, k: Tensor, v: Tensor, name: str) -> None:
    check_qkv(q, k, v, name=name)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"{name}: local attention needs queries and keys on one axis (T_q == T_k), "
            f"got q{tuple(q.shape)} and k{tuple(k.shape)}"
        )


def blocked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_size: int,
    *,
    look_backward: int = 0,
    look_forward: int = 0,
    causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Blocked local attention in ``O(T w)``: equals full attention with :func:`block_mask` of the same arguments.

    Shapes: ``q, k (..., T, d)``, ``v (..., T, d_v)`` -> ``(..., T, d_v)``; ``T`` need not be a multiple of
    ``w = block_size`` (the last block is ragged: its missing keys are masked, not zero-filled).
    """
    _check_self(q, k, v, "blocked_attention")
    _check_positive_int("block_size", block_size)
    _check_positive_int("look_backward", look_backward, minimum=0)
    _check_positive_int("look_forward", look_forward, minimum=0)
    _check_scale(scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    allowed = (lambda i, j: j <= i) if causal else None
    return _banded_attention(q, k, v, block_size, look_backward, look_forward, allowed, scale)


def sliding_window_attention(
    q: Tensor, k: Tensor, v: Tensor, window_size: int, *, causal: bool = False, scale: float | None = None
) -> Tensor:
    """Sliding-window attention in ``O(T w)``: equals full attention with :func:`sliding_window_mask`.

    The band of reach ``r`` (``r = w - 1`` causal, ``(w - 1) / 2`` centred) is computed in blocks of ``r``
    queries: every key a block can see lies in the block itself or its neighbour on each side, so each query
    scores ``3r`` (``2r`` causal) keys and the band mask discards the ones beyond ``r``.
    Shapes: ``q, k (..., T, d)``, ``v (..., T, d_v)`` -> ``(..., T, d_v)``.
    """
    _check_self(q, k, v, "sliding_window_attention")
    reach = _window_reach(window_size, causal)
    _check_scale(scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    block = max(reach, 1)
    if causal:
        return _banded_attention(q, k, v, block, 1, 0, lambda i, j: (j <= i) & (i - j <= reach), scale)
    return _banded_attention(q, k, v, block, 1, 1, lambda i, j: (i - j).abs() <= reach, scale)


def local_attention(q: Tensor, k: Tensor, v: Tensor, *, window_size: int = 128, causal: bool = True) -> Tensor:
    """The benchmarks' local attention, ``(q, k, v) -> out``: causal sliding window of 128 keys by default.

    A thin wrapper of :func:`sliding_window_attention` with the window fixed, so that a registry of mechanisms
    can call every entry as ``fn(q, k, v)``. Shapes: ``(B, H, T, d)`` in, ``(B, H, T, d_v)`` out.
    """
    return sliding_window_attention(q, k, v, window_size, causal=causal)


# --------------------------------------------------------------------------------------------------------------
# Granite-speech: Conformer block attention with Shaw relative positions
# --------------------------------------------------------------------------------------------------------------


def conformer_block_distances(block_size: int, max_distance: int) -> Tensor:
    """``(w, w)`` row indices into the relative table: ``clamp(i - j, -w, w) + max_distance`` (``w = block_size``).

    Granite-speech's encoder indexes its table of ``2 max_distance + 1`` vectors by the query-minus-key offset
    inside a block. Offsets in a block of ``w`` lie in ``[-(w - 1), w - 1]``, so the clamp at ``w`` never bites.
    """
    _check_positive_int("block_size", block_size)
    _check_positive_int("max_distance", max_distance)
    if block_size > max_distance:
        raise ValueError(f"block_size={block_size} must be <= max_distance={max_distance} (the table's reach)")
    pos = torch.arange(block_size)
    return (pos[:, None] - pos[None, :]).clamp(-block_size, block_size) + max_distance  # (w, w)


def block_relative_attention(
    q: Tensor, k: Tensor, v: Tensor, block_size: int, rel_table: Tensor, *, scale: float | None = None
) -> Tensor:
    """Block-diagonal attention with Shaw relative positions (Granite-speech's Conformer attention).

    Within each block of ``w = block_size`` frames: ``s_ij = (q_i . k_j + q_i . a_{i - j}) * scale`` with
    ``a = rel_table`` of shape ``(2P + 1, d)`` indexed by :func:`conformer_block_distances`; no attention
    crosses a block boundary; the ragged last block sees only its real frames. Shapes: ``q, k (..., T, d)``,
    ``v (..., T, d_v)``, returns ``(..., T, d_v)``. Cost ``O(T w)``.
    """
    _check_self(q, k, v, "block_relative_attention")
    _check_scale(scale)
    if rel_table.ndim != 2 or rel_table.shape[-1] != q.shape[-1] or rel_table.shape[0] % 2 != 1:
        raise ValueError(
            f"rel_table must be (2P + 1, d={q.shape[-1]}) with an odd number of rows, got {tuple(rel_table.shape)}"
        )
    max_distance = (rel_table.shape[0] - 1) // 2
    idx = conformer_block_distances(block_size, max_distance).to(q.device)  # (w, w)
    rel = rel_table.to(q.dtype)[idx]  # (w, w, d): one vector per (query, key) offset, shared by all blocks
    scale = q.shape[-1] ** -0.5 if scale is None else scale

    def bias(q_blocks: Tensor) -> Tensor:  # (..., n_b, w, d) -> (..., n_b, w, w)
        return torch.einsum("...icd,cjd->...icj", q_blocks, rel.to(q_blocks.dtype)) * scale

    return _banded_attention(q, k, v, block_size, 0, 0, None, scale, bias)


class ConformerBlockAttention(nn.Module):
    """Granite-speech's encoder self-attention (Saon et al., 2025, :cite:`saon2025granite`).

    ``LayerNorm -> q, (k, v) projections -> block attention with Shaw relative positions -> output projection``,
    in blocks of ``context_size`` frames (:func:`block_relative_attention`). The parameter names follow the
    Granite-speech encoder (``pre_norm``, ``to_q``, ``to_kv``, ``to_out``, ``rel_pos_emb``) so that weights load
    one to one. Shapes: ``x (B, T, D)`` -> ``(B, T, D)``; the residual connection is the caller's.
    """

    def __init__(
        self, dim: int, num_heads: int, head_dim: int, context_size: int, max_pos_emb: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_heads", num_heads), ("head_dim", head_dim)):
            _check_positive_int(name, value)
        conformer_block_distances(context_size, max_pos_emb)  # validates both
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.context_size = num_heads, head_dim, context_size
        self.pre_norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.rel_pos_emb = nn.Embedding(2 * max_pos_emb + 1, head_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.pre_norm.normalized_shape[0]:
            raise ValueError(
                f"ConformerBlockAttention: x must be (B, T, D={self.pre_norm.normalized_shape[0]}), "
                f"got {tuple(x.shape)}"
            )
        x = self.pre_norm(x)
        q = self.to_q(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # (B, H, T, d)
        k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2) for t in self.to_kv(x).chunk(2, -1))
        out = block_relative_attention(q, k, v, self.context_size, self.rel_pos_emb.weight)  # (B, H, T, d)
        return self.dropout(self.to_out(out.transpose(1, 2).flatten(-2)))  # (B, T, D)


# --------------------------------------------------------------------------------------------------------------
# CCNeXt: windowed epipolar cross-attention
# --------------------------------------------------------------------------------------------------------------


def epipolar_mask(height: int, width: int, max_offset: int, *, device: torch.device | str | None = None) -> Tensor:
    """Boolean ``(Y X, Y X)`` mask over a ``Y x X`` grid flattened row-major: same row and ``|x_i - x_j| <= r``.

    In a rectified stereo pair a pixel's match lies on the same row of the other image (its epipolar line),
    within the largest disparity; ``r = max_offset`` bounds how far along the row a query looks.
    """
    _check_positive_int("height", height)
    _check_positive_int("width", width)
    _check_positive_int("max_offset", max_offset, minimum=0)
    row = torch.arange(height * width, device=device) // width
    col = torch.arange(height * width, device=device) % width
    return (row[:, None] == row[None, :]) & ((col[:, None] - col[None, :]).abs() <= max_offset)


def epipolar_attention(q: Tensor, k: Tensor, v: Tensor, max_offset: int, *, scale: float | None = 1.0) -> Tensor:
    """Row-wise banded cross-attention between two images (CCNeXt, :cite:`ccnext2025`), in ``O(Y X r)``.

    ``q`` comes from one image, ``k, v`` from the other, each ``(..., Y, X, d)`` (``d_v`` for ``v``); query
    pixel ``(y, x)`` attends to pixels ``(y, x')`` of the other image with ``|x - x'| <= max_offset``.
    ``scale=1.0`` by default: CCNeXt's logits are the raw dot products (no ``1/sqrt(d)``); ``None`` gives
    ``1/sqrt(d)``. Returns ``(..., Y, X, d_v)``. Equals full attention over the ``Y X`` pixels with
    :func:`epipolar_mask`.
    """
    if q.ndim < 3:
        raise ValueError(f"epipolar_attention: q must be (..., Y, X, d), got {tuple(q.shape)}")
    check_qkv(q, k, v, name="epipolar_attention")
    if q.shape[:-1] != k.shape[:-1]:
        raise ValueError(
            f"epipolar_attention: the two images must have one grid, got q{tuple(q.shape)} and k{tuple(k.shape)}"
        )
    _check_positive_int("max_offset", max_offset, minimum=0)
    _check_scale(scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    block = max(max_offset, 1)
    return _banded_attention(q, k, v, block, 1, 1, lambda i, j: (i - j).abs() <= max_offset, scale)


class WindowedEpipolarCrossAttention(nn.Module):
    """CCNeXt's windowed cross-attention module between a stereo pair (``W_CA_Module``, :cite:`ccnext2025`).

    Shared 1x1 convolutions give ``Q``, ``K`` (plain) and ``V`` (conv + BatchNorm); for each row,
    ``y_1 = softmax(Q(x_1) K(x_2)^T + M) V(x_2)`` with the band ``|x_i - x_j| <= w_max - 1`` and
    ``w_max = floor(fraction * X)`` (CCNeXt: ``fraction = 0.26`` on KITTI), no ``1/sqrt(d)``;
    ``z_1 = x_1 + W(y_1)`` with ``W`` a 1x1 conv + BatchNorm; symmetrically ``z_2`` with ``x_2`` querying
    ``x_1``. Both BatchNorms start at weight 0 and bias 0, so the module starts as the identity.
    Shapes: ``x_1, x_2 (B, C, Y, X)`` -> ``(z_1, z_2)`` of the same shape.
    """

    def __init__(self, channels: int, fraction: float = 0.26) -> None:
        super().__init__()
        _check_positive_int("channels", channels)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
        self.fraction = fraction
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels))
        self.out = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels))
        for norm in (self.value[1], self.out[1]):
            nn.init.zeros_(norm.weight)
            nn.init.zeros_(norm.bias)

    def max_offset(self, width: int) -> int:
        """``w_max - 1`` for an image ``width`` pixels wide; ``w_max = floor(fraction * X)`` must be >= 1."""
        window = int(width * self.fraction)
        if window < 1:
            raise ValueError(
                f"WindowedEpipolarCrossAttention: the window floor(fraction * X) = floor({self.fraction} * {width}) "
                "is 0: no key would be visible; use a wider image or a larger fraction"
            )
        return window - 1

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        if x1.ndim != 4 or x1.shape != x2.shape or x1.shape[1] != self.query.in_channels:
            raise ValueError(
                f"WindowedEpipolarCrossAttention: x1 and x2 must both be (B, C={self.query.in_channels}, Y, X), "
                f"got {tuple(x1.shape)} and {tuple(x2.shape)}"
            )
        r = self.max_offset(x1.shape[-1])

        def channels_last(t: Tensor) -> Tensor:
            return t.permute(0, 2, 3, 1)  # (B, C, Y, X) -> (B, Y, X, C)

        q1, q2 = channels_last(self.query(x1)), channels_last(self.query(x2))
        k1, k2 = channels_last(self.key(x1)), channels_last(self.key(x2))
        v1, v2 = channels_last(self.value(x1)), channels_last(self.value(x2))
        y1 = epipolar_attention(q1, k2, v2, r).permute(0, 3, 1, 2)  # (B, C, Y, X): image 1 reads image 2
        y2 = epipolar_attention(q2, k1, v1, r).permute(0, 3, 1, 2)  # (B, C, Y, X): and the other way
        return x1 + self.out(y1), x2 + self.out(y2)

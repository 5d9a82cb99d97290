"""Grouped attention: tokens attend only within their group, and the grouping is the design. Introduced in chapter 09.

Three groupings from three papers, each an exact reshape of full attention under a block mask
(:func:`group_mask`, ``True`` where two tokens share a group):

* **Long-range grouping across views** (LRGT, Yang et al., 2023, :cite:`yang2023long`, ``LGAtention`` in the
  official code): ``V`` views of a ``S x S`` token grid; the token at ``(row, col)`` belongs to group
  ``(row mod G, col mod G)``, so each of the ``G^2`` groups is a strided ``(S/G)^2`` sample of *every* view,
  and attention inside a group mixes the views at long range (:func:`long_range_grouping_attention`,
  :class:`LongRangeGroupingAttention`, which adds the paper's depth-wise "inter-view feature signature").
* **Group self-attention** (Group Pose, Liu et al., 2023, :cite:`liu2023group`, the decoder's ``within_attn``
  and ``across_attn``): ``N`` instances of ``K + 1`` queries (one instance query, ``K`` keypoint queries).
  First each instance's queries attend among themselves, then the queries of one type (the same slot) attend
  across the instances (:func:`group_pose_masks`, :class:`GroupPoseSelfAttention`).
* **Channel group attention** (DaViT, Ding et al., 2022, :cite:`ding2022davit`): the *channels* are the tokens;
  inside each of ``H`` channel groups of ``C_g`` channels, a ``C_g x C_g`` attention map is formed over all
  ``N`` spatial positions, so the cost is linear in ``N`` (:func:`channel_attention`,
  :class:`ChannelGroupAttention`).
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch
from torch import Tensor, nn

from attnbook.attention.core import MultiHeadAttention
from attnbook.attention.functional import check_qkv, scaled_dot_product_attention

__all__ = [
    "group_mask",
    "long_range_group_ids",
    "long_range_grouping_attention",
    "LongRangeGroupingAttention",
    "group_pose_masks",
    "GroupPoseSelfAttention",
    "channel_attention",
    "ChannelGroupAttention",
]


def _positive_int(value: object, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{where}: {name} must be positive, got {value}")
    return int(value)


def group_mask(group_ids: Tensor) -> Tensor:
    """Boolean ``(T, T)`` mask from integer group labels ``(T,)``: ``True`` where two tokens share a group."""
    if not isinstance(group_ids, Tensor) or group_ids.ndim != 1 or group_ids.is_floating_point():
        got = tuple(group_ids.shape) if isinstance(group_ids, Tensor) else type(group_ids).__name__
        raise ValueError(f"group_mask: group_ids must be a 1-D integer tensor (T,), got {got}")
    return group_ids[:, None] == group_ids[None, :]


# --- Long-range grouping across views (LRGT) ------------------------------------------------------------------


def long_range_group_ids(num_views: int, side: int, group_size: int) -> Tensor:
    """Group label ``(row mod G) * G + (col mod G)`` of each token of ``num_views`` row-major ``side x side`` grids.

    Returns ``(num_views * side^2,)``, view-major (all tokens of view 0, then view 1, ...).
    """
    num_views = _positive_int(num_views, "num_views", "long_range_group_ids")
    side = _positive_int(side, "side", "long_range_group_ids")
    G = _positive_int(group_size, "group_size", "long_range_group_ids")
    if side % G:
        raise ValueError(f"long_range_group_ids: group_size={G} must divide the grid side={side}")
    r = torch.arange(side)
    ids = (r[:, None] % G) * G + (r[None, :] % G)  # (side, side)
    return ids.reshape(-1).repeat(num_views)  # (V * side^2,)


def long_range_grouping_attention(
    q: Tensor, k: Tensor, v: Tensor, group_size: int, *, scale: float | None = None
) -> Tensor:
    """Attention inside long-range groups spanning all views :cite:`yang2023long`.

    Args:
        q, k, v: ``(B, H, V, S*S, d)``: ``V`` views, each a row-major ``S x S`` grid of tokens.
        group_size: ``G`` (the code's ``patch_group``), which must divide ``S``. Token ``(row, col)`` of any
            view is in group ``(row mod G, col mod G)``: ``G^2`` groups of ``V (S/G)^2`` tokens each.
        scale: logit scale, ``1/sqrt(d)`` by default.

    Returns:
        ``(B, H, V, S*S, d_v)``. Equals full attention over the ``V S^2`` tokens under
        ``group_mask(long_range_group_ids(V, S, G))``.
    """
    check_qkv(q, k, v, name="long_range_grouping_attention")
    if q.ndim != 5 or k.shape[:-1] != q.shape[:-1] or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(
            "long_range_grouping_attention: q, k, v must be (B, H, V, S*S, d) with one grid, got "
            f"q{tuple(q.shape)}, k{tuple(k.shape)}, v{tuple(v.shape)}"
        )
    G = _positive_int(group_size, "group_size", "long_range_grouping_attention")
    B, H, V, N, _ = q.shape
    S = math.isqrt(N)
    if S * S != N or S % G:
        raise ValueError(
            f"long_range_grouping_attention: each view must be an S x S grid with group_size={G} dividing S, "
            f"got {N} tokens per view"
        )
    t = S // G  # tokens per group along each axis, per view

    def to_groups(x: Tensor) -> Tensor:
        # row = t1 * G + s1, col = t2 * G + s2: the group is (s1, s2), its members (view, t1, t2).
        x = x.reshape(B, H, V, t, G, t, G, x.shape[-1])  # (B, H, V, t1, s1, t2, s2, d)
        return x.permute(0, 1, 4, 6, 2, 3, 5, 7).reshape(B, H, G * G, V * t * t, x.shape[-1])  # (B, H, G^2, V t^2, d)

    out = scaled_dot_product_attention(to_groups(q), to_groups(k), to_groups(v), scale=scale)  # (B, H, G^2, V t^2, d_v)
    d_v = v.shape[-1]
    out = out.reshape(B, H, G, G, V, t, t, d_v).permute(0, 1, 4, 5, 2, 6, 3, 7)  # (B, H, V, t1, s1, t2, s2, d_v)
    return out.reshape(B, H, V, N, d_v)


class LongRangeGroupingAttention(nn.Module):
    """The LRGT's long-range grouping attention layer (``LGAtention``) :cite:`yang2023long`.

    ``x (B, V, S*S, E)`` -> ``to_q, to_k, to_v`` -> :func:`long_range_grouping_attention` per head, plus the
    "inter-view feature signature": a depth-wise 3x3 convolution of ``v`` on each view's grid (``ifs``), added
    to the attention output -> ``proj``. Returns ``(B, V, S*S, E)``.
    """

    def __init__(self, embed_dim: int, num_heads: int, group_size: int, *, qkv_bias: bool = False) -> None:
        super().__init__()
        embed_dim = _positive_int(embed_dim, "embed_dim", "LongRangeGroupingAttention")
        num_heads = _positive_int(num_heads, "num_heads", "LongRangeGroupingAttention")
        if embed_dim % num_heads:
            raise ValueError(f"LongRangeGroupingAttention: num_heads={num_heads} must divide embed_dim={embed_dim}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.group_size = _positive_int(group_size, "group_size", "LongRangeGroupingAttention")
        self.to_q = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.to_k = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.to_v = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.ifs = nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1, groups=embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[-1] != self.embed_dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"LongRangeGroupingAttention: x must be (B, V, S*S, E={self.embed_dim}), got {got}")
        B, V, N, E = x.shape
        S = math.isqrt(N)
        if S * S != N:
            raise ValueError(f"LongRangeGroupingAttention: each view must be a square grid, got {N} tokens per view")
        q, k, v = (
            p(x).reshape(B, V, N, self.num_heads, self.head_dim).permute(0, 3, 1, 2, 4)
            for p in (self.to_q, self.to_k, self.to_v)
        )  # (B, H, V, N, d)
        out = long_range_grouping_attention(q, k, v, self.group_size)  # (B, H, V, N, d)
        out = out.permute(0, 2, 3, 1, 4).reshape(B, V, N, E)  # (B, V, N, E), heads concatenated
        grid_v = v.permute(0, 2, 1, 4, 3).reshape(B * V, E, S, S)  # (B V, H d, S, S): channel h*d + c
        signature = self.ifs(grid_v).reshape(B, V, E, N).transpose(-2, -1)  # (B, V, N, E)
        return self.proj(out + signature)


# --- Group Pose's group self-attention --------------------------------------------------------------------------


def group_pose_masks(num_instances: int, queries_per_instance: int) -> tuple[Tensor, Tensor]:
    """The two masks of Group Pose's decoder over ``N (K+1)`` instance-major queries :cite:`liu2023group`.

    Returns ``(within, across)``, both boolean ``(N (K+1), N (K+1))``: ``within`` joins the ``K + 1`` queries of
    one instance; ``across`` joins the ``N`` queries of one type (the same slot ``0..K`` in every instance).
    """
    N = _positive_int(num_instances, "num_instances", "group_pose_masks")
    P = _positive_int(queries_per_instance, "queries_per_instance", "group_pose_masks")
    instance = torch.arange(N).repeat_interleave(P)  # (N P,)
    slot = torch.arange(P).repeat(N)  # (N P,)
    return group_mask(instance), group_mask(slot)


class GroupPoseSelfAttention(nn.Module):
    """Group Pose's two group self-attentions, each followed by add & LayerNorm :cite:`liu2023group`.

    ``x (B, N, P, E)``: ``N`` instances, ``P = K + 1`` queries each (instance query first), and ``pos`` of the same
    shape (the query positional embeddings; zeros by default):

    1. within-instance: ``x = LN(x + MHA(q = k = x + pos, v = x))`` over the ``P`` queries of each instance;
    2. across-instance: ``x = LN(x + MHA(q = k = v = x))`` over the ``N`` queries of each type (no ``pos``).

    ``within``/``across`` are :class:`~attnbook.attention.core.MultiHeadAttention` modules; the deformable
    cross-attention and feed-forward of the decoder layer come after and are not part of this module.
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.within = MultiHeadAttention(embed_dim, num_heads)
        self.within_norm = nn.LayerNorm(embed_dim)
        self.across = MultiHeadAttention(embed_dim, num_heads)
        self.across_norm = nn.LayerNorm(embed_dim)
        self.embed_dim = self.within.embed_dim

    def forward(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[-1] != self.embed_dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"GroupPoseSelfAttention: x must be (B, N, K+1, E={self.embed_dim}), got {got}")
        if pos is not None and (not isinstance(pos, Tensor) or pos.shape != x.shape):
            got = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
            raise ValueError(f"GroupPoseSelfAttention: pos must have the shape of x {tuple(x.shape)}, got {got}")
        B, N, P, E = x.shape
        qk = x if pos is None else x + pos
        flat, flat_qk = x.reshape(B * N, P, E), qk.reshape(B * N, P, E)  # (B N, P, E): one instance per row
        inner, _ = self.within(flat_qk, flat_qk, flat)  # (B N, P, E)
        x = self.within_norm(flat + inner).reshape(B, N, P, E)
        by_type = x.transpose(1, 2).reshape(B * P, N, E)  # (B P, N, E): one query type per row
        outer, _ = self.across(by_type)  # (B P, N, E)
        x = self.across_norm(by_type + outer).reshape(B, P, N, E).transpose(1, 2)  # (B, N, P, E)
        return x


# --- DaViT's channel group attention ----------------------------------------------------------------------------


def channel_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None) -> Tensor:
    """Attention among channels: each channel is a token whose features are its values at the ``N`` positions.

    ``q, k, v (..., N, C_g)`` -> ``(..., N, C_g)``: ``A = softmax(q^T k * scale)`` is ``(C_g, C_g)`` and
    ``out = (A v^T)^T``, i.e. scaled dot-product attention on the transposes (:cite:`ding2022davit`, the
    paper's equation). ``scale`` is ``1/sqrt(C_g)`` by default. Cost ``O(N C_g^2)``: linear in ``N``.
    """
    check_qkv(q, k, v, name="channel_attention")
    if q.shape != k.shape or k.shape != v.shape:
        raise ValueError(
            f"channel_attention: q, k, v must have one shape (..., N, C_g), got q{tuple(q.shape)}, "
            f"k{tuple(k.shape)}, v{tuple(v.shape)}"
        )
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = scaled_dot_product_attention(q.mT, k.mT, v.mT, scale=scale)  # (..., C_g, N): channels are the tokens
    return out.mT  # (..., N, C_g)


class ChannelGroupAttention(nn.Module):
    """DaViT's channel group attention :cite:`ding2022davit`: ``x (B, N, C)`` -> ``qkv`` -> per group -> ``proj``.

    Args:
        embed_dim: ``C``; ``num_heads`` (the number of channel groups ``H``) must divide it, ``C_g = C / H``.
        num_heads: ``H``.
        qkv_bias: bias of the ``qkv`` projection.
        convention: which product forms the ``C_g x C_g`` map.

            * ``"davit"`` -- the official code (and timm's ``ChannelAttention``): ``A = softmax(k^T v / sqrt(C_g))``
              applied to ``q``, ``out = (A q^T)^T``.
            * ``"paper"`` -- the paper's equation (and timm's ``ChannelAttentionV2(dynamic_scale=False)``):
              ``A = softmax(q^T k / sqrt(C_g))`` applied to ``v``.

    Both are :func:`channel_attention` with the roles of ``q, k, v`` assigned differently. Parameters ``qkv``
    (``C -> 3C``, laid out ``[q | k | v]``, each split into ``H`` groups) and ``proj``.
    """

    def __init__(
        self, embed_dim: int, num_heads: int, *, qkv_bias: bool = False, convention: Literal["davit", "paper"] = "davit"
    ) -> None:
        super().__init__()
        embed_dim = _positive_int(embed_dim, "embed_dim", "ChannelGroupAttention")
        num_heads = _positive_int(num_heads, "num_heads", "ChannelGroupAttention")
        if embed_dim % num_heads:
            raise ValueError(f"ChannelGroupAttention: num_heads={num_heads} must divide embed_dim={embed_dim}")
        if convention not in ("davit", "paper"):
            raise ValueError(f"ChannelGroupAttention: convention must be 'davit' or 'paper', got {convention!r}")
        self.embed_dim, self.num_heads, self.convention = embed_dim, num_heads, convention
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=qkv_bias)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != self.embed_dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"ChannelGroupAttention: x must be (B, N, C={self.embed_dim}), got {got}")
        B, N, C = x.shape
        qkv = (
            self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        )  # (3, B, H, N, C_g)
        q, k, v = qkv.unbind(0)  # each (B, H, N, C_g)
        out = channel_attention(k, v, q) if self.convention == "davit" else channel_attention(q, k, v)  # (B, H, N, C_g)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))  # (B, N, C)

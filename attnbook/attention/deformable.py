"""Multi-scale deformable attention: each query reads a few sampled points instead of every key. Chapter 16.

Deformable DETR's attention (Zhu et al., 2021, :cite:`zhu2021deformable`), the encoder and decoder attention of
MFDS-DETR (:cite:`chen2024accurate`, ``models/ops/modules/ms_deform_attn.py`` of its code) and of SpecDETR
(:cite:`li2024specdetr`, ``MultiScaleDeformableAttention_1``). A query ``q`` with a reference point ``p`` (normalised
``(x, y)`` in ``[0, 1]``) attends, in each head ``h``, to ``K`` points on each of ``L`` feature maps:

.. math::
    \\operatorname{out}(q) = \\sum_h W_O^{(h)} \\sum_{l=1}^{L} \\sum_{k=1}^{K} a_{hlk}\\,
    x_l^{(h)}\\!\\left(p + \\Delta p_{hlk} / (W_l, H_l)\\right),

where ``x_l^{(h)}`` is head ``h``'s slice of the projected value map of level ``l`` (``H_l x W_l``), read at a
fractional position by bilinear interpolation (zero outside the map), the offsets ``Delta p_{hlk}`` (in pixels of
level ``l``) and the logits of ``a_{hlk}`` are linear maps of the query, and ``a`` is a softmax over the ``L K``
points of the head. No query-key dot product is computed: the weights come from the query alone.

Conventions (those of the reference code and of ``transformers``' ``DeformableDetrMultiscaleDeformableAttention``):
the value tokens are the ``L`` maps flattened row-major and concatenated, ``S = sum_l H_l W_l``; pixel ``(i, j)`` of
a level has its centre at ``((j + 0.5) / W_l, (i + 0.5) / H_l)``; sampling uses
:func:`torch.nn.functional.grid_sample` with ``align_corners=False`` and zero padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.grouped import _positive_int

__all__ = [
    "check_spatial_shapes",
    "deformable_sampling_locations",
    "multi_scale_deformable_attention",
    "ring_offsets",
    "MultiScaleDeformableAttention",
]


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def check_spatial_shapes(spatial_shapes: Sequence[Sequence[int]], where: str) -> list[tuple[int, int]]:
    """Validate a list of per-level ``(H_l, W_l)`` pairs of positive ints; returns them as a list of tuples."""
    if isinstance(spatial_shapes, Tensor):
        spatial_shapes = spatial_shapes.tolist()
    try:
        shapes = [(int(h), int(w)) for h, w in spatial_shapes]
    except (TypeError, ValueError):
        got = repr(spatial_shapes)
        raise ValueError(f"{where}: spatial_shapes must be a list of (H_l, W_l) pairs, got {got}") from None
    if not shapes or any(h <= 0 or w <= 0 for h, w in shapes):
        raise ValueError(f"{where}: spatial_shapes must be a non-empty list of positive (H_l, W_l), got {shapes}")
    return shapes


def deformable_sampling_locations(
    reference_points: Tensor, offsets: Tensor, spatial_shapes: Sequence[Sequence[int]]
) -> Tensor:
    """Sampling locations ``p + Delta p / (W_l, H_l)``: offsets in pixels of each level, locations in ``[0, 1]``.

    Args:
        reference_points: ``(B, T_q, L, 2)`` normalised ``(x, y)``, one per level (the same point for every level
            unless the caller rescales it).
        offsets: ``(B, T_q, H, L, K, 2)`` in pixels of level ``l``, ``(x, y)``.
        spatial_shapes: ``L`` pairs ``(H_l, W_l)``.

    Returns:
        ``(B, T_q, H, L, K, 2)`` normalised ``(x, y)``.
    """
    where = "deformable_sampling_locations"
    shapes = check_spatial_shapes(spatial_shapes, where)
    L = len(shapes)
    if not isinstance(reference_points, Tensor) or reference_points.ndim != 4 or reference_points.shape[2:] != (L, 2):
        raise ValueError(f"{where}: reference_points must be (B, T_q, L={L}, 2), got {_shape(reference_points)}")
    if not isinstance(offsets, Tensor) or offsets.ndim != 6 or offsets.shape[3] != L or offsets.shape[-1] != 2:
        raise ValueError(f"{where}: offsets must be (B, T_q, H, L={L}, K, 2), got {_shape(offsets)}")
    if offsets.shape[:2] != reference_points.shape[:2]:
        raise ValueError(
            f"{where}: offsets {tuple(offsets.shape)} and reference_points "
            f"{tuple(reference_points.shape)} disagree on (B, T_q)"
        )
    normaliser = torch.tensor([[w, h] for h, w in shapes], dtype=offsets.dtype, device=offsets.device)  # (L, 2)
    return reference_points[:, :, None, :, None, :] + offsets / normaliser[:, None, :]  # (B, T_q, H, L, K, 2)


def multi_scale_deformable_attention(
    value: Tensor,
    spatial_shapes: Sequence[Sequence[int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The core of multi-scale deformable attention: bilinear samples of each head's value maps, weighted and summed.

    Args:
        value: ``(B, S, H, d)``, the ``L`` value maps flattened row-major and concatenated, ``S = sum H_l W_l``.
        spatial_shapes: ``L`` pairs ``(H_l, W_l)``.
        sampling_locations: ``(B, T_q, H, L, K, 2)``, normalised ``(x, y)``; points outside ``[0, 1]`` read zeros.
        attention_weights: ``(B, T_q, H, L, K)`` (a softmax over ``L K`` per head in the module; any weights here).

    Returns:
        ``(B, T_q, H d)``: the heads' outputs concatenated (before the output projection).
    """
    where = "multi_scale_deformable_attention"
    shapes = check_spatial_shapes(spatial_shapes, where)
    if not isinstance(value, Tensor) or value.ndim != 4 or not value.is_floating_point():
        raise ValueError(f"{where}: value must be a floating (B, S, H, d) tensor, got {_shape(value)}")
    B, S, H, d = value.shape
    if S != sum(h * w for h, w in shapes):
        raise ValueError(
            f"{where}: value has S={S} tokens but spatial_shapes {shapes} hold {sum(h * w for h, w in shapes)}"
        )
    if not isinstance(sampling_locations, Tensor) or sampling_locations.ndim != 6:
        raise ValueError(f"{where}: sampling_locations must be (B, T_q, H, L, K, 2), got {_shape(sampling_locations)}")
    _, T_q, _, L, K, _ = sampling_locations.shape
    if sampling_locations.shape != (B, T_q, H, len(shapes), K, 2):
        raise ValueError(
            f"{where}: sampling_locations must be (B={B}, T_q, H={H}, L={len(shapes)}, K, 2), "
            f"got {tuple(sampling_locations.shape)}"
        )
    if not isinstance(attention_weights, Tensor) or attention_weights.shape != (B, T_q, H, L, K):
        raise ValueError(
            f"{where}: attention_weights must be (B, T_q, H, L, K) = {(B, T_q, H, L, K)}, "
            f"got {_shape(attention_weights)}"
        )
    if not (value.dtype == sampling_locations.dtype == attention_weights.dtype):
        raise TypeError(
            f"{where}: value, sampling_locations and attention_weights must share a dtype, got {value.dtype}, "
            f"{sampling_locations.dtype}, {attention_weights.dtype}"
        )
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1] coordinates, (x, y) order as ours
    samples = []
    for level, (value_l, (h, w)) in enumerate(zip(value.split([h * w for h, w in shapes], dim=1), shapes, strict=True)):
        maps = value_l.permute(0, 2, 3, 1).reshape(B * H, d, h, w)  # (B H, d, H_l, W_l)
        grid = grids[:, :, :, level].transpose(1, 2).reshape(B * H, T_q, K, 2)  # (B H, T_q, K, 2)
        samples.append(F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    sampled = torch.stack(samples, dim=-2)  # (B H, d, T_q, L, K)
    weights = attention_weights.transpose(1, 2).reshape(B * H, 1, T_q, L, K)  # (B H, 1, T_q, L, K)
    out = (sampled * weights).sum((-2, -1))  # (B H, d, T_q)
    return out.reshape(B, H * d, T_q).transpose(1, 2)  # (B, T_q, H d)


def ring_offsets(num_heads: int, num_levels: int = 1) -> Tensor:
    """SpecDETR's fixed sampling rings (``local_attn_type='fix_same_distance'``, :cite:`li2024specdetr`).

    ``K = 4`` points per head: head 0 samples the four neighbours ``(+-1, 0), (0, +-1)``, head 1 the four diagonals
    ``(+-1, +-1)``; head ``h`` repeats head ``h mod 2``'s pattern scaled by ``floor(h / 2) + 1`` pixels, so the heads
    read rings at growing distances. Returns ``(H, L, 4, 2)`` pixel offsets ``(x, y)``, the same on every level.
    """
    H = _positive_int(num_heads, "num_heads", "ring_offsets")
    L = _positive_int(num_levels, "num_levels", "ring_offsets")
    cross = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    diagonal = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    rings = torch.stack([(cross if h % 2 == 0 else diagonal) * (h // 2 + 1) for h in range(H)])  # (H, 4, 2)
    return rings[:, None].expand(H, L, 4, 2).clone()


class MultiScaleDeformableAttention(nn.Module):
    """Multi-scale deformable attention with its projections :cite:`zhu2021deformable`.

    Parameters (named as in the reference code and ``transformers``, so a state dict copies across):
    ``sampling_offsets`` (``E -> H L K 2``), ``attention_weights`` (``E -> H L K``), ``value_proj`` and
    ``output_proj`` (``E -> E``). Initialised as Deformable DETR: zero offset weights, offset biases on a ring
    (head ``h`` points in direction ``2 pi h / H``, point ``k`` at ``k + 1`` pixels), zero attention logits
    (uniform weights), Xavier-uniform value and output projections.

    ``offsets="rings"`` replaces the learned offsets by SpecDETR's fixed rings (:func:`ring_offsets`, ``K = 4``).

    Args:
        embed_dim: ``E``; num_heads: ``H`` (divides ``E``); num_levels: ``L``; num_points: ``K``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_levels: int = 1,
        num_points: int = 4,
        *,
        offsets: Literal["learned", "rings"] = "learned",
    ) -> None:
        super().__init__()
        where = "MultiScaleDeformableAttention"
        E = _positive_int(embed_dim, "embed_dim", where)
        H = _positive_int(num_heads, "num_heads", where)
        L = _positive_int(num_levels, "num_levels", where)
        K = _positive_int(num_points, "num_points", where)
        if E % H:
            raise ValueError(f"{where}: num_heads={H} must divide embed_dim={E}")
        if offsets not in ("learned", "rings"):
            raise ValueError(f"{where}: offsets must be 'learned' or 'rings', got {offsets!r}")
        if offsets == "rings" and K != 4:
            raise ValueError(f"{where}: offsets='rings' samples 4 points per head, got num_points={K}")
        self.embed_dim, self.num_heads, self.num_levels, self.num_points = E, H, L, K
        self.offsets = offsets
        if offsets == "learned":
            self.sampling_offsets = nn.Linear(E, H * L * K * 2)
        else:
            self.register_buffer("fixed_offsets", ring_offsets(H, L))  # (H, L, 4, 2)
        self.attention_weights = nn.Linear(E, H * L * K)
        self.value_proj = nn.Linear(E, E)
        self.output_proj = nn.Linear(E, E)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        H, L, K = self.num_heads, self.num_levels, self.num_points
        if self.offsets == "learned":
            nn.init.zeros_(self.sampling_offsets.weight)
            theta = torch.arange(H, dtype=torch.float64) * (2 * math.pi / H)
            ring = torch.stack([theta.cos(), theta.sin()], -1)  # (H, 2)
            ring = ring / ring.abs().amax(-1, keepdim=True)  # on the square of side 2: a pixel step per point
            grid = ring[:, None, None, :] * torch.arange(1, K + 1, dtype=torch.float64)[None, None, :, None]
            self.sampling_offsets.bias.copy_(grid.expand(H, L, K, 2).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: Tensor,
        value: Tensor,
        reference_points: Tensor,
        spatial_shapes: Sequence[Sequence[int]],
        *,
        query_pos: Tensor | None = None,
        value_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attend from ``query (B, T_q, E)`` to the flattened maps ``value (B, S, E)``.

        Args:
            reference_points: ``(B, T_q, 2)`` (the same point on every level) or ``(B, T_q, L, 2)``, normalised.
            spatial_shapes: ``L`` pairs ``(H_l, W_l)``.
            query_pos: ``(B, T_q, E)`` added to the query before the offsets and weights are predicted.
            value_mask: ``(B, S)`` bool, ``True`` for real tokens (padding reads zeros).

        Returns:
            ``(output (B, T_q, E), weights (B, T_q, H, L, K), sampling_locations (B, T_q, H, L, K, 2))``.
        """
        where = "MultiScaleDeformableAttention"
        E, H, L, K = self.embed_dim, self.num_heads, self.num_levels, self.num_points
        shapes = check_spatial_shapes(spatial_shapes, where)
        if len(shapes) != L:
            raise ValueError(f"{where}: spatial_shapes has {len(shapes)} levels, the module was built for {L}")
        if not isinstance(query, Tensor) or query.ndim != 3 or query.shape[-1] != E:
            raise ValueError(f"{where}: query must be (B, T_q, E={E}), got {_shape(query)}")
        B, T_q, _ = query.shape
        S = sum(h * w for h, w in shapes)
        if not isinstance(value, Tensor) or value.shape != (B, S, E):
            got = _shape(value)
            raise ValueError(f"{where}: value must be (B={B}, S={S}, E={E}) for spatial_shapes {shapes}, got {got}")
        if isinstance(reference_points, Tensor) and reference_points.shape == (B, T_q, 2):
            reference_points = reference_points[:, :, None].expand(B, T_q, L, 2)
        if not isinstance(reference_points, Tensor) or reference_points.shape != (B, T_q, L, 2):
            raise ValueError(
                f"{where}: reference_points must be (B={B}, T_q={T_q}, 2) or (B, T_q, L={L}, 2), "
                f"got {_shape(reference_points)}"
            )
        if query_pos is not None:
            if not isinstance(query_pos, Tensor) or query_pos.shape != query.shape:
                got = _shape(query_pos)
                raise ValueError(f"{where}: query_pos must have the shape of query {tuple(query.shape)}, got {got}")
            query = query + query_pos
        v = self.value_proj(value)  # (B, S, E)
        if value_mask is not None:
            if not isinstance(value_mask, Tensor) or value_mask.dtype != torch.bool or value_mask.shape != (B, S):
                raise ValueError(f"{where}: value_mask must be a bool (B={B}, S={S}) tensor, got {_shape(value_mask)}")
            v = v.masked_fill(~value_mask[..., None], 0.0)
        v = v.reshape(B, S, H, E // H)  # (B, S, H, d)
        if self.offsets == "learned":
            offsets = self.sampling_offsets(query).reshape(B, T_q, H, L, K, 2)  # pixels of each level
        else:
            offsets = self.fixed_offsets.to(query.dtype).expand(B, T_q, H, L, K, 2)
        weights = self.attention_weights(query).reshape(B, T_q, H, L * K).softmax(-1).reshape(B, T_q, H, L, K)
        locations = deformable_sampling_locations(reference_points, offsets, shapes)  # (B, T_q, H, L, K, 2)
        out = multi_scale_deformable_attention(v, shapes, locations, weights)  # (B, T_q, E)
        return self.output_proj(out), weights, locations

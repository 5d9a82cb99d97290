"""Masked image modelling: MAE, CAE's regressor, MemMC-MAE's memory, LUT's unmasked tokens, Mask & Match (ch. 17).

**MAE** (He et al. 2022, :cite:`he2022masked`). Cut an image into ``N`` patches, hide a random fraction ``r`` of
them, encode only the ``n = floor(N (1 - r))`` visible ones, and let a light decoder reconstruct the hidden
patches from the encoded visible tokens plus one shared learned *mask token* per hidden position. The loss is the
mean squared error on the hidden patches only.

* :func:`random_masking` draws the mask by a per-sample shuffle: ``order = argsort(noise)`` with ``noise`` uniform
  ``(B, N)``; the first ``n`` of ``order`` are kept, the rest hidden; ``restore = argsort(order)`` puts a sequence
  laid out as ``[kept; hidden]`` back in raster order (:func:`unshuffle_tokens`).
* :class:`MaskedAutoencoder` -- patch embedding (:class:`~attnbook.models.vit.PatchEmbedding`) and learned
  positions, a pre-norm :class:`~attnbook.models.transformer.Encoder` run on the visible tokens only, a decoder
  (``Linear`` to its width, mask tokens, unshuffle, positions, a small ``Encoder``, ``Linear`` to pixels).

**CAE** (Chen et al. 2022, :cite:`chen2022context`), from its code (``modeling_cae_helper.py``):
:class:`CrossAttentionRegressor` predicts the hidden patches' *latents* from the visible ones with cross-attention
only -- queries are mask tokens plus the hidden positions, keys and values the visible latents and the queries
themselves: ``Z_m <- Z_m + CA(LN(Z_m + P_m), LN([Z_v; Z_m] + [P_v; P_m]), LN([Z_v; Z_m]))``, then
``Z_m <- LN(Z_m); Z_m <- Z_m + MLP(Z_m)``. :class:`ContextAutoencoder` adds the *alignment* loss
``||Z_m - sg(Encoder(hidden patches))||^2`` and a decoder from ``Z_m`` alone to the hidden patches.

**MemMC-MAE** (Tian et al. 2022, :cite:`tian2022unsupervised`), reconstructed from its abstract:
:class:`MemoryCore` appends ``N_m`` learned memory slots to every head's keys and values,
``K = [X W_K; M_K]``, ``V = [X W_V; M_V]``; :class:`MultiLevelCrossDecoder` lets the decoder tokens cross-attend to
the concatenation of encoder outputs from several depths, ``K, V = [E_{l_1}; ...; E_{l_k}]``.
``MaskedAutoencoder(num_memory=..., decoder="multilevel", levels=...)`` builds it.

**LUT** (Kim et al. 2023, :cite:`kim2023learning`), from its code (``models_lut.py``, ``engine_lut.py``):
:func:`disjoint_masking` gives two views complementary visible sets from one shuffle, and
:class:`UnmaskedTokenLearner` adds to MAE's loss ``2 - 2 cos(s_v, sg(t_u))`` between the student's summary of the
visible tokens of view ``v`` and an EMA teacher's summary of the *whole* other view ``u``.

**Mask & Match** (Mitra et al. 2025, :cite:`mitra2025mask`), reconstructed from its abstract:
:class:`SpatialAttentionPool` (``a = softmax_HW(conv(F))``, ``z = sum a F``) trained so that the pooled feature of a
masked image matches that of the whole image, with :func:`progressive_mask_ratio` raising the masked fraction
over training and :func:`block_masking` hiding random square blocks.

Shapes: images ``(B, C, H, W)``; patches ``(B, N, C P^2)`` in raster order; tokens ``(B, N, D)``.
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.core import AttentionCore, MultiHeadAttention
from attnbook.models.transformer import DecoderBlock, Encoder
from attnbook.models.vit import PatchEmbedding

__all__ = [
    "MaskingPlan",
    "random_masking",
    "disjoint_masking",
    "gather_tokens",
    "unshuffle_tokens",
    "masked_patch_loss",
    "MemoryCore",
    "MultiLevelCrossDecoder",
    "MaskedAutoencoder",
    "MAEOutput",
    "RegressorBlock",
    "CrossAttentionRegressor",
    "ContextAutoencoder",
    "CAEOutput",
    "UnmaskedTokenLearner",
    "progressive_mask_ratio",
    "block_masking",
    "SpatialAttentionPool",
]


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def _check_ratio(mask_ratio: object, upper_inclusive: bool = False) -> float:
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, numbers.Real):
        raise TypeError(f"mask_ratio must be a number, got {mask_ratio!r}")
    ok = 0.0 <= mask_ratio <= 1.0 if upper_inclusive else 0.0 <= mask_ratio < 1.0
    if not ok:
        raise ValueError(f"mask_ratio must be in [0, 1{']' if upper_inclusive else ')'}, got {mask_ratio}")
    return float(mask_ratio)


class MaskingPlan(NamedTuple):
    """One random masking of ``N`` patches per sample.

    ``order (B, N)``: the shuffle, kept patches first; ``keep (B, n)`` = ``order[:, :n]``; ``hidden (B, N - n)`` =
    ``order[:, n:]``; ``masked (B, N)`` bool, True where a patch is hidden (a patch mask, not an attention mask);
    ``restore (B, N)`` = ``argsort(order)``, which undoes the shuffle.
    """

    order: Tensor
    keep: Tensor
    hidden: Tensor
    masked: Tensor
    restore: Tensor


def _plan_from_order(order: Tensor, num_keep: int) -> MaskingPlan:
    restore = torch.argsort(order, dim=1)  # (B, N): position of patch j in the shuffled layout
    masked = torch.ones_like(order, dtype=torch.bool)
    masked[:, :num_keep] = False  # in shuffled layout: the first n are kept
    masked = torch.gather(masked, 1, restore)  # (B, N) back to raster order
    return MaskingPlan(order, order[:, :num_keep], order[:, num_keep:], masked, restore)


def random_masking(
    num_samples: int,
    num_patches: int,
    mask_ratio: float,
    *,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    device: torch.device | str | None = None,
) -> MaskingPlan:
    """MAE's per-sample random masking: keep ``n = int(N (1 - mask_ratio))`` patches (at least one).

    ``order = argsort(noise)`` with ``noise (B, N)`` uniform (drawn from ``generator`` unless given): each sample
    gets its own uniformly random subset of ``n`` kept patches. Same convention as MAE's ``random_masking``.
    """
    num_samples, num_patches = _positive("num_samples", num_samples), _positive("num_patches", num_patches)
    mask_ratio = _check_ratio(mask_ratio)
    num_keep = max(1, int(num_patches * (1 - mask_ratio)))
    if noise is None:
        noise = torch.rand(num_samples, num_patches, generator=generator, device=device)
    elif not isinstance(noise, Tensor) or noise.shape != (num_samples, num_patches):
        got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
        raise ValueError(
            f"noise must be a tensor of shape (num_samples, num_patches)={(num_samples, num_patches)}, got {got}"
        )
    order = torch.argsort(noise, dim=1)  # (B, N): ascending noise, the first n are kept
    return _plan_from_order(order, num_keep)


def disjoint_masking(
    num_samples: int, num_patches: int, mask_ratio: float, *, generator: torch.Generator | None = None
) -> tuple[MaskingPlan, MaskingPlan]:
    """LUT's two views from one shuffle: view 1 keeps ``order[:n]``, view 2 ``order[n:2n]`` (disjoint sets).

    Needs ``2 n <= N``, i.e. ``mask_ratio >= 0.5``.
    """
    first = random_masking(num_samples, num_patches, mask_ratio, generator=generator)
    n = first.keep.shape[1]
    if 2 * n > num_patches:
        raise ValueError(
            f"disjoint_masking: mask_ratio={mask_ratio} keeps {n} of {num_patches}; two disjoint views "
            "need mask_ratio >= 0.5"
        )
    second_order = torch.cat([first.order[:, n:], first.order[:, :n]], dim=1)  # (B, N): order[n:2n] first
    return first, _plan_from_order(second_order, n)


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """``x (B, N, D)``, ``index (B, K)`` long -> ``(B, K, D)``: row ``k`` of sample ``b`` is ``x[b, index[b, k]]``."""
    if not isinstance(x, Tensor) or x.ndim != 3:
        raise ValueError(f"gather_tokens: x must be (B, N, D), got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(index, Tensor) or index.ndim != 2 or index.shape[0] != x.shape[0]:
        raise ValueError(
            f"gather_tokens: index must be (B={x.shape[0]}, K), got {getattr(index, 'shape', type(index).__name__)}"
        )
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))


def unshuffle_tokens(x: Tensor, restore: Tensor) -> Tensor:
    """Tokens in shuffled layout ``[kept; hidden]`` ``(B, N, D)`` back to raster order with ``restore (B, N)``."""
    if x.ndim != 3 or restore.shape != x.shape[:2]:
        raise ValueError(
            f"unshuffle_tokens: x (B, N, D) and restore (B, N) must agree, got {tuple(x.shape)}, {tuple(restore.shape)}"
        )
    return gather_tokens(x, restore)


def masked_patch_loss(pred: Tensor, target: Tensor, masked: Tensor) -> Tensor:
    """Mean squared error over the hidden patches: ``sum_b,j masked_bj mean_c (pred - target)^2 / sum masked``.

    ``pred``, ``target`` ``(B, N, C P^2)``; ``masked (B, N)`` bool. Returns a scalar.
    """
    if pred.shape != target.shape or masked.shape != pred.shape[:2] or masked.dtype != torch.bool:
        raise ValueError(
            f"masked_patch_loss: pred{tuple(pred.shape)} and target{tuple(target.shape)} must agree and masked "
            f"must be bool (B, N), got {masked.dtype} {tuple(masked.shape)}"
        )
    per_patch = (pred - target).pow(2).mean(-1)  # (B, N)
    return (per_patch * masked).sum() / masked.sum().clamp(min=1)


class MemoryCore(AttentionCore):
    """Softmax attention with ``num_memory`` learned key and value slots per head appended to the keys/values.

    ``K' = [K; M_K]``, ``V' = [V; M_V]`` with ``M_K, M_V (H, N_m, d)`` parameters (in the heads' projected space, as
    x-transformers' ``num_mem_kv``). Every query can always attend to the memory: a prototype of what the training
    images looked like. A boolean ``mask (.., T_q, T_k)`` is extended with ``True`` columns (additive: zeros).
    Plug it into a block with ``core=lambda: MemoryCore(num_heads, head_dim, num_memory)``.
    """

    def __init__(self, num_heads: int, head_dim: int, num_memory: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_heads, self.head_dim = _positive("num_heads", num_heads), _positive("head_dim", head_dim)
        self.num_memory = _positive("num_memory", num_memory)
        self.memory_k = nn.Parameter(torch.randn(num_heads, num_memory, head_dim))
        self.memory_v = nn.Parameter(torch.randn(num_heads, num_memory, head_dim))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *, is_causal: bool = False, **kw):
        if is_causal:
            raise ValueError("MemoryCore: is_causal is ambiguous with memory slots; pass an explicit mask")
        if q.ndim != 4 or q.shape[1] != self.num_heads or k.shape[-1] != self.head_dim:
            raise ValueError(
                f"MemoryCore: q, k must be (B, H={self.num_heads}, T, d={self.head_dim}), got q{tuple(q.shape)}, "
                f"k{tuple(k.shape)}"
            )
        B = q.shape[0]
        k = torch.cat([k, self.memory_k.to(k.dtype).expand(B, -1, -1, -1)], dim=-2)  # (B, H, T_k + N_m, d)
        v = torch.cat([v, self.memory_v.to(v.dtype).expand(B, -1, -1, -1)], dim=-2)  # (B, H, T_k + N_m, d)
        if mask is not None:
            fill = torch.ones if mask.dtype == torch.bool else torch.zeros
            extra = fill(*mask.shape[:-1], self.num_memory, dtype=mask.dtype, device=mask.device)
            mask = torch.cat([mask, extra], dim=-1)  # (.., T_q, T_k + N_m)
        return super().forward(q, k, v, mask, **kw)


class MultiLevelCrossDecoder(nn.Module):
    """MemMC-MAE's multi-level cross-attention decoder (reconstruction): pre-norm blocks of self-attention among
    the decoder tokens, cross-attention to the concatenated encoder levels, and a feed-forward network.

    ``forward(x (B, N, D_dec), levels: list of (B, n, D_dec)) -> (B, N, D_dec)``; the memory is
    ``[E_{l_1}; ...; E_{l_k}]`` ``(B, k n, D_dec)``.
    """

    def __init__(self, depth: int, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderBlock(
                dim, num_heads, round(mlp_ratio * dim), activation="gelu", norm_first=True, layer_norm_eps=1e-6
            )
            for _ in range(_positive("depth", depth))
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, levels: list[Tensor]) -> Tensor:
        if not levels:
            raise ValueError("MultiLevelCrossDecoder: levels must hold at least one encoder output")
        memory = torch.cat(levels, dim=1)  # (B, k n, D_dec)
        for layer in self.layers:
            x = layer(x, memory, is_causal=False)
        return self.norm(x)


class MAEOutput(NamedTuple):
    """``loss`` (scalar), ``pred (B, N, C P^2)`` for every patch, ``plan`` the masking used."""

    loss: Tensor
    pred: Tensor
    plan: MaskingPlan


class _PatchTokens(nn.Module):
    """Patch embedding plus learned positions; shared by the MAE and CAE models."""

    def __init__(self, image_size: int | tuple[int, int], patch_size: int, in_channels: int, dim: int) -> None:
        super().__init__()
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_channels, dim)
        self.num_patches = self.patch_embed.num_patches
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches, dim) * 0.02)

    def tokens(self, images: Tensor) -> Tensor:
        return self.patch_embed(images) + self.pos_embed  # (B, N, D)

    def patchify(self, images: Tensor) -> Tensor:
        return self.patch_embed.patchify(images)  # (B, N, C P^2)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """``(B, N, C P^2) -> (B, C, H, W)``, the inverse of :meth:`patchify`."""
        p, c = self.patch_embed.patch_size, self.patch_embed.in_channels
        gh, gw = self.patch_embed.grid
        x = patches.reshape(patches.shape[0], gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5)  # (B, C, gh, P, gw, P)
        return x.reshape(patches.shape[0], c, gh * p, gw * p)

    def plan(self, images: Tensor, mask_ratio: float, generator: torch.Generator | None) -> MaskingPlan:
        return random_masking(images.shape[0], self.num_patches, mask_ratio, generator=generator, device=images.device)


class MaskedAutoencoder(_PatchTokens):
    """MAE, and MemMC-MAE with ``num_memory > 0`` and ``decoder="multilevel"`` (see the module docstring).

    Args:
        image_size, patch_size, in_channels: as :class:`~attnbook.models.vit.PatchEmbedding`.
        dim, depth, num_heads: the encoder (``D``, ``L``, ``H``); decoder_dim, decoder_depth, decoder_heads: the
            decoder; mlp_ratio: feed-forward width over the model width; mask_ratio: ``r``, the default hidden fraction.
        num_memory: learned memory slots per head in every encoder block (:class:`MemoryCore`); 0 for MAE.
        decoder: ``"self"`` (MAE: self-attention over mask and visible tokens) or ``"multilevel"``
            (:class:`MultiLevelCrossDecoder` over the encoder outputs after the blocks in ``levels``).
        levels: encoder block indices (0-based) whose outputs the multi-level decoder reads; all blocks by default.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        patch_size: int,
        in_channels: int,
        dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        decoder_dim: int = 32,
        decoder_depth: int = 1,
        decoder_heads: int = 2,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        num_memory: int = 0,
        decoder: str = "self",
        levels: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(image_size, patch_size, in_channels, dim)
        self.mask_ratio = _check_ratio(mask_ratio)
        if decoder not in ("self", "multilevel"):
            raise ValueError(f"decoder must be 'self' or 'multilevel', got {decoder!r}")
        if isinstance(num_memory, bool) or not isinstance(num_memory, int) or num_memory < 0:
            raise ValueError(f"num_memory must be a non-negative int, got {num_memory!r}")
        depth = _positive("depth", depth)
        self.levels = tuple(range(depth)) if levels is None else tuple(levels)
        if decoder == "multilevel" and (not self.levels or any(not 0 <= i < depth for i in self.levels)):
            raise ValueError(f"levels must be encoder block indices in [0, {depth}), got {levels!r}")
        self.decoder_kind = decoder
        head_dim = dim // num_heads if num_heads > 0 and dim % num_heads == 0 else 1
        core = (lambda: MemoryCore(num_heads, head_dim, num_memory)) if num_memory else None
        self.encoder = Encoder(
            depth,
            dim,
            num_heads,
            round(mlp_ratio * dim),
            activation="gelu",
            norm_first=True,
            core=core,
            layer_norm_eps=1e-6,
        )
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.randn(1, 1, decoder_dim) * 0.02)
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, self.num_patches, decoder_dim) * 0.02)
        if decoder == "self":
            self.decoder = Encoder(
                decoder_depth,
                decoder_dim,
                decoder_heads,
                round(mlp_ratio * decoder_dim),
                activation="gelu",
                norm_first=True,
                layer_norm_eps=1e-6,
            )
        else:
            self.decoder = MultiLevelCrossDecoder(decoder_depth, decoder_dim, decoder_heads, mlp_ratio)
        p = self.patch_embed.patch_size
        self.decoder_pred = nn.Linear(decoder_dim, in_channels * p * p)

    def encode(self, images: Tensor, keep: Tensor | None = None, *, return_levels: bool = False):
        """Encode the kept patches ``keep (B, n)`` (all patches if None): ``(B, n, D)`` after the final norm.

        With ``return_levels``, also the outputs of the blocks in ``levels``, each through the final norm.
        """
        x = self.tokens(images)  # (B, N, D)
        if keep is not None:
            x = gather_tokens(x, keep)  # (B, n, D): the encoder never sees the hidden patches
        levels = []
        for i, layer in enumerate(self.encoder.layers):
            x = layer(x)
            if return_levels and i in self.levels:
                levels.append(self.encoder.norm(x))
        x = self.encoder.norm(x)
        return (x, levels) if return_levels else x

    def decode(self, latents: Tensor, plan: MaskingPlan, levels: list[Tensor] | None = None) -> Tensor:
        """Visible latents ``(B, n, D)`` -> predicted patches ``(B, N, C P^2)`` for every position."""
        y = self.decoder_embed(latents)  # (B, n, D_dec)
        B, n, _ = y.shape
        mask_tokens = self.mask_token.expand(B, plan.order.shape[1] - n, -1)  # (B, N - n, D_dec)
        y = unshuffle_tokens(torch.cat([y, mask_tokens], dim=1), plan.restore) + self.decoder_pos_embed  # (B, N, D_dec)
        if self.decoder_kind == "self":
            y = self.decoder(y)
        else:
            y = self.decoder(y, [self.decoder_embed(level) for level in levels])
        return self.decoder_pred(y)  # (B, N, C P^2)

    def forward(
        self,
        images: Tensor,
        *,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        plan: MaskingPlan | None = None,
    ) -> MAEOutput:
        """Mask, encode the visible patches, decode all, MSE on the hidden ones."""
        self.patch_embed.check_images(images)
        if plan is None:
            plan = self.plan(images, self.mask_ratio if mask_ratio is None else mask_ratio, generator)
        multilevel = self.decoder_kind == "multilevel"
        out = self.encode(images, plan.keep, return_levels=multilevel)
        latents, levels = out if multilevel else (out, None)
        pred = self.decode(latents, plan, levels)
        return MAEOutput(masked_patch_loss(pred, self.patchify(images), plan.masked), pred, plan)

    @torch.no_grad()
    def reconstruction_error(
        self,
        images: Tensor,
        *,
        mask_ratio: float | None = None,
        repeats: int = 8,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Anomaly score per image ``(B,)``: the hidden patches' squared error, averaged over ``repeats`` maskings."""
        repeats = _positive("repeats", repeats)
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        target = self.patchify(images)
        total = torch.zeros(images.shape[0], device=images.device)
        for _ in range(repeats):
            out = self(images, mask_ratio=ratio, generator=generator)
            per_patch = (out.pred - target).pow(2).mean(-1)  # (B, N)
            total += (per_patch * out.plan.masked).sum(1) / out.plan.masked.sum(1)
        return total / repeats


class RegressorBlock(nn.Module):
    """CAE's regressor block: hidden-patch queries cross-attend to ``[visible; hidden]`` latents (module docstring)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_q, self.norm_k, self.norm_v = (nn.LayerNorm(dim, eps=1e-6) for _ in range(3))
        self.cross_attn = MultiHeadAttention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        hidden = round(mlp_ratio * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, z_m: Tensor, z_v: Tensor, pos_m: Tensor, pos_v: Tensor, *, need_weights: bool = False):
        """``z_m (B, N - n, D)``, ``z_v (B, n, D)`` with their positions -> updated ``z_m`` (and weights)."""
        kv, pos_kv = torch.cat([z_v, z_m], dim=1), torch.cat([pos_v, pos_m], dim=1)  # (B, N, D): keys see both
        h, weights = self.cross_attn(
            self.norm_q(z_m + pos_m),
            self.norm_k(kv + pos_kv),
            self.norm_v(kv),
            need_weights=need_weights,
            average_attn_weights=False,
        )  # (B, N - n, D)
        z_m = self.norm_mlp(z_m + h)
        z_m = z_m + self.mlp(z_m)
        return (z_m, weights) if need_weights else z_m


class CrossAttentionRegressor(nn.Module):
    """A stack of :class:`RegressorBlock` and a final LayerNorm: ``(z_v, pos_v, pos_m, mask_token) -> z_m``.

    The visible latents ``z_v`` are never updated: the regressor only *reads* them, so the encoder alone is
    responsible for the representation (CAE's point).
    """

    def __init__(self, depth: int, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(RegressorBlock(dim, num_heads, mlp_ratio) for _ in range(_positive("depth", depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, z_v: Tensor, pos_v: Tensor, pos_m: Tensor, mask_token: Tensor) -> Tensor:
        z_m = mask_token.expand(pos_m.shape[0], pos_m.shape[1], -1)  # (B, N - n, D): every query starts equal
        for block in self.blocks:
            z_m = block(z_m, z_v, pos_m, pos_v)
        return self.norm(z_m)


class CAEOutput(NamedTuple):
    """``loss`` = reconstruction + ``alignment_weight`` * alignment; ``pred (B, N - n, C P^2)`` for the hidden
    patches in ``plan.hidden`` order; ``latent_pred`` and ``latent_target`` ``(B, N - n, D)``."""

    loss: Tensor
    reconstruction: Tensor
    alignment: Tensor
    pred: Tensor
    latent_pred: Tensor
    latent_target: Tensor
    plan: MaskingPlan


class ContextAutoencoder(_PatchTokens):
    """CAE: encoder on visible patches, cross-attention regressor, latent alignment, decoder on ``Z_m`` only.

    The paper's decoder predicts a tokenizer's ids of the hidden patches; here it predicts their pixels (MSE),
    like MAE, so that the two models share one target.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        patch_size: int,
        in_channels: int,
        dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        regressor_depth: int = 2,
        decoder_depth: int = 1,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.5,
        alignment_weight: float = 1.0,
    ) -> None:
        super().__init__(image_size, patch_size, in_channels, dim)
        self.mask_ratio, self.alignment_weight = _check_ratio(mask_ratio), float(alignment_weight)
        ff = round(mlp_ratio * dim)
        self.encoder = Encoder(depth, dim, num_heads, ff, activation="gelu", norm_first=True, layer_norm_eps=1e-6)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.regressor = CrossAttentionRegressor(regressor_depth, dim, num_heads, mlp_ratio)
        self.decoder = Encoder(
            decoder_depth, dim, num_heads, ff, activation="gelu", norm_first=True, layer_norm_eps=1e-6
        )
        p = self.patch_embed.patch_size
        self.decoder_pred = nn.Linear(dim, in_channels * p * p)

    def encode(self, images: Tensor, keep: Tensor | None = None) -> Tensor:
        x = self.tokens(images)  # (B, N, D)
        return self.encoder(x if keep is None else gather_tokens(x, keep))

    def forward(
        self,
        images: Tensor,
        *,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        plan: MaskingPlan | None = None,
    ) -> CAEOutput:
        self.patch_embed.check_images(images)
        if plan is None:
            plan = self.plan(images, self.mask_ratio if mask_ratio is None else mask_ratio, generator)
        pos = self.pos_embed.expand(images.shape[0], -1, -1)  # (B, N, D)
        pos_v, pos_m = gather_tokens(pos, plan.keep), gather_tokens(pos, plan.hidden)
        z_v = self.encode(images, plan.keep)  # (B, n, D)
        z_m = self.regressor(z_v, pos_v, pos_m, self.mask_token)  # (B, N - n, D)
        with torch.no_grad():  # the target latents: the same encoder on the hidden patches, no gradient
            target = self.encode(images, plan.hidden)  # (B, N - n, D)
        alignment = F.mse_loss(z_m, target)
        pred = self.decoder_pred(self.decoder(z_m + pos_m))  # (B, N - n, C P^2)
        reconstruction = F.mse_loss(pred, gather_tokens(self.patchify(images), plan.hidden))
        loss = reconstruction + self.alignment_weight * alignment
        return CAEOutput(loss, reconstruction, alignment, pred, z_m, target, plan)


def _mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Linear(hidden, dim_out))


class UnmaskedTokenLearner(nn.Module):
    """LUT: MAE plus a loss that makes the visible tokens' summary predict an EMA teacher's view of a whole image.

    ``loss(view1, view2)`` draws :func:`disjoint_masking`; the student MAE reconstructs view 1's hidden patches
    (``L_mae``); for each view ``v`` the student's summary ``s_v = predictor(head(mean of its visible latents))``
    is compared with the teacher's ``t_u = head_T(mean of the latents of the *unmasked* other view)``:
    ``L_bc = mean_v (2 - 2 cos(s_v, sg(t_u)))``. Total ``w_mae L_mae + w_bc L_bc``. The teacher (encoder and head)
    is an exponential moving average of the student, :meth:`update_teacher`.
    """

    def __init__(self, student: MaskedAutoencoder, proj_dim: int = 32, mae_weight: float = 1.0, bc_weight: float = 1.0):
        super().__init__()
        if not isinstance(student, MaskedAutoencoder):
            raise TypeError(f"student must be a MaskedAutoencoder, got {type(student).__name__}")
        dim = student.pos_embed.shape[-1]
        self.student = student
        self.head = _mlp(dim, 2 * dim, _positive("proj_dim", proj_dim))
        self.predictor = _mlp(proj_dim, 2 * proj_dim, proj_dim)
        self.teacher = copy.deepcopy(student)
        self.teacher_head = copy.deepcopy(self.head)
        for p in (*self.teacher.parameters(), *self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.mae_weight, self.bc_weight = float(mae_weight), float(bc_weight)

    @torch.no_grad()
    def update_teacher(self, momentum: float = 0.99) -> None:
        """``theta_T <- m theta_T + (1 - m) theta_S`` for the teacher's encoder and head."""
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        pairs = [
            *zip(self.teacher.parameters(), self.student.parameters(), strict=True),
            *zip(self.teacher_head.parameters(), self.head.parameters(), strict=True),
        ]
        for t, s in pairs:
            t.mul_(momentum).add_(s, alpha=1 - momentum)

    def loss(
        self, view1: Tensor, view2: Tensor, *, mask_ratio: float | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Returns ``(total, L_mae, L_bc)`` for two augmented views ``(B, C, H, W)`` of the same images."""
        if view1.shape != view2.shape:
            raise ValueError(f"view1{tuple(view1.shape)} and view2{tuple(view2.shape)} must have the same shape")
        ratio = self.student.mask_ratio if mask_ratio is None else mask_ratio
        plan1, plan2 = disjoint_masking(view1.shape[0], self.student.num_patches, ratio, generator=generator)
        mae = self.student(view1, plan=plan1).loss
        summaries = [
            self.predictor(self.head(self.student.encode(v, p.keep).mean(1)))
            for v, p in ((view1, plan1), (view2, plan2))
        ]  # s_1, s_2: (B, proj_dim)
        with torch.no_grad():
            targets = [self.teacher_head(self.teacher.encode(v).mean(1)) for v in (view2, view1)]  # t_2, t_1
        bc = torch.stack(
            [(2 - 2 * F.cosine_similarity(s, t, dim=-1)).mean() for s, t in zip(summaries, targets, strict=True)]
        ).mean()
        return self.mae_weight * mae + self.bc_weight * bc, mae, bc


def progressive_mask_ratio(step: int, total_steps: int, start: float = 0.1, end: float = 0.6) -> float:
    """Mask & Match's progressive masking (reconstruction): the hidden fraction rises linearly from ``start`` at
    step 0 to ``end`` at ``total_steps - 1`` (and stays there)."""
    total_steps = _positive("total_steps", total_steps)
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    start, end = _check_ratio(start, True), _check_ratio(end, True)
    t = min(step / max(total_steps - 1, 1), 1.0)
    return start + (end - start) * t


def block_masking(
    num_samples: int,
    height: int,
    width: int,
    mask_ratio: float,
    *,
    block: int = 2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Hide random ``block x block`` squares until at least ``round(mask_ratio H W)`` cells are hidden.

    Returns ``(B, H, W)`` bool, True = hidden. Squares may overlap; the last one may overshoot the target.
    """
    num_samples, height, width = (
        _positive(n, v) for n, v in (("num_samples", num_samples), ("height", height), ("width", width))
    )
    block = _positive("block", block)
    if block > min(height, width):
        raise ValueError(f"block={block} must fit the {height} x {width} grid")
    target = round(_check_ratio(mask_ratio, True) * height * width)
    masked = torch.zeros(num_samples, height, width, dtype=torch.bool)
    for b in range(num_samples):
        while int(masked[b].sum()) < target:
            r = int(torch.randint(height - block + 1, (1,), generator=generator))
            c = int(torch.randint(width - block + 1, (1,), generator=generator))
            masked[b, r : r + block, c : c + block] = True
    return masked


class SpatialAttentionPool(nn.Module):
    """Mask & Match's spatial attention pooling (reconstruction): ``a = softmax_{HW}(conv_1x1(F))``,
    ``z = sum_ij a_ij F_ij``. Hidden positions (``masked`` True) get zero weight.

    ``features (B, C, H, W)``, ``masked (B, H, W)`` bool or None -> ``(z (B, C), a (B, H, W))``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = _positive("channels", channels)
        self.score = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, features: Tensor, masked: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if features.ndim != 4 or features.shape[1] != self.channels:
            raise ValueError(f"features must be (B, C={self.channels}, H, W), got {tuple(features.shape)}")
        B, C, H, W = features.shape
        logits = self.score(features).reshape(B, H * W)  # (B, HW)
        if masked is not None:
            if masked.shape != (B, H, W) or masked.dtype != torch.bool:
                raise ValueError(f"masked must be bool (B, H, W)={(B, H, W)}, got {masked.dtype} {tuple(masked.shape)}")
            if bool(masked.flatten(1).all(1).any()):
                raise ValueError("masked hides every position of some image: nothing left to pool")
            logits = logits.masked_fill(masked.reshape(B, H * W), -math.inf)
        a = torch.softmax(logits, dim=-1)  # (B, HW)
        z = torch.einsum("bn,bcn->bc", a, features.reshape(B, C, H * W))  # (B, C)
        return z, a.reshape(B, H, W)

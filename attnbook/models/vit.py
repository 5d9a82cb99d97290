"""The Vision Transformer: an image cut into patches, one token per patch, a class token, a Transformer encoder.

ViT :cite:`dosovitskiy2021image` reads an image ``(B, C, H, W)`` as a sequence: :class:`PatchEmbedding` cuts it into
non-overlapping ``P x P`` patches and maps each (flattened, ``C P^2`` numbers) linearly to a ``D``-wide token --
one strided convolution does both. :class:`ViT` prepends a learned class token, adds learned position
embeddings, runs a pre-norm :class:`~attnbook.models.transformer.Encoder` (GELU feed-forward), and classifies
from the class token's final state (``pool="cls"``) or the mean of the patch tokens (``pool="mean"``).

Parameter layout follows timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``, ``pos_embed``, a
final ``norm``, ``head``; each block's ``norm1``/``norm2`` and feed-forward), so weights can be copied across;
the attention is the book's :class:`~attnbook.attention.core.MultiHeadAttention`, and a ``core`` factory swaps
in any other attention core, as for every Transformer in the book.

Shapes: ``images (B, C, H, W) -> logits (B, num_classes)``; with ``need_weights=True`` also the per-layer
attention weights, a list of ``(B, H, N + 1, N + 1)`` with ``N = (H / P)(W / P)`` patches and the class token first
(or last, with ``class_token="last"``).

**A causal ViT** (iLLaMA, :cite:`wang2024adapting`; chapter 13): the same model with a causal attention core
(``core=lambda: AttentionCore(pattern=CausalPattern())``) needs its class token *after* the patches
(``class_token="last"``), the only place where a causal token sees the whole image. iLLaMA trains it with a
*soft mask* (:class:`SoftCausalMask`): the softmax weights are multiplied, after the softmax and without
renormalising, by ``M = r 1 + (1 - r) tril(1)``, with ``r`` ramped from 1 (bidirectional) to 0 (causal) over the
first part of training (:func:`soft_mask_schedule`, :func:`set_soft_mask_rate`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnbook.attention.core import Normalizer
from attnbook.attention.functional import masked_softmax
from attnbook.attention.masks import causal_mask
from attnbook.models.transformer import CoreFactory, Encoder

__all__ = ["PatchEmbedding", "ViT", "SoftCausalMask", "soft_mask_schedule", "set_soft_mask_rate"]


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class PatchEmbedding(nn.Module):
    """Non-overlapping ``patch_size x patch_size`` patches to tokens: ``(B, C, H, W) -> (B, N, dim)``.

    Tokens are in raster order (row by row). A convolution with kernel and stride ``patch_size`` is exactly a
    linear map of each flattened patch (:meth:`patchify` gives those patches, for checking).
    """

    def __init__(self, image_size: int | tuple[int, int], patch_size: int, in_channels: int, dim: int) -> None:
        super().__init__()
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        for name, value in (
            ("image height", height),
            ("image width", width),
            ("patch_size", patch_size),
            ("in_channels", in_channels),
            ("dim", dim),
        ):
            _positive_int(name, value)
        if height % patch_size or width % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide the image size {height} x {width}")
        self.image_size, self.patch_size, self.in_channels = (height, width), patch_size, in_channels
        self.grid = (height // patch_size, width // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def check_images(self, images: Tensor) -> None:
        """Raise ``ValueError`` naming the shape unless ``images`` is ``(B, in_channels, *image_size)``."""
        if images.dim() != 4 or images.shape[1] != self.in_channels or tuple(images.shape[2:]) != self.image_size:
            raise ValueError(
                f"images must have shape (B, {self.in_channels}, {self.image_size[0]}, {self.image_size[1]}), "
                f"got {tuple(images.shape)}"
            )

    def patchify(self, images: Tensor) -> Tensor:
        """The flattened patches ``(B, N, C * P * P)`` in raster order, each flattened channel-first."""
        self.check_images(images)
        p = self.patch_size
        b, c = images.shape[:2]
        gh, gw = self.grid
        x = images.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)
        return x.reshape(b, gh * gw, c * p * p)

    def forward(self, images: Tensor) -> Tensor:
        self.check_images(images)
        return self.proj(images).flatten(2).transpose(1, 2)  # (B, N, dim)


class ViT(nn.Module):
    """A Vision Transformer classifier (see the module docstring).

    Args:
        image_size: ``H`` (square) or ``(H, W)``; patch_size: ``P`` (divides both); in_channels: ``C``;
        num_classes: classes of the head; dim: token width ``D``; depth: encoder layers ``L``; num_heads: ``H``;
        mlp_ratio: feed-forward width over ``D``; dropout: attention and residual dropout;
        pool: ``"cls"`` (class token) or ``"mean"`` (mean of the patch tokens; the class token is still there);
        core: a zero-argument factory of the attention core (standard softmax attention by default);
        class_token: ``"first"`` (ViT: ``[cls; patches]``) or ``"last"`` (iLLaMA's post-sequence class token,
            ``[patches; cls]``, for causal attention); the position embedding follows the token order.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        patch_size: int,
        in_channels: int,
        num_classes: int,
        dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        pool: str = "cls",
        core: CoreFactory | None = None,
        class_token: str = "first",
    ) -> None:
        super().__init__()
        _positive_int("num_classes", num_classes)
        if class_token not in ("first", "last"):
            raise ValueError(f"class_token must be 'first' or 'last', got {class_token!r}")
        self.class_token = class_token
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio!r}")
        self.pool = pool
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_channels, dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.encoder = Encoder(
            depth,
            dim,
            num_heads,
            dim_feedforward=round(mlp_ratio * dim),
            dropout=dropout,
            activation="gelu",
            norm_first=True,
            core=core,
            layer_norm_eps=1e-6,
        )
        self.head = nn.Linear(dim, num_classes)

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def tokens(self, images: Tensor) -> Tensor:
        """The encoder's input: class and patch tokens (in ``class_token`` order) plus positions, ``(B, N + 1, D)``."""
        x = self.patch_embed(images)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        parts = [cls, x] if self.class_token == "first" else [x, cls]
        return torch.cat(parts, dim=1) + self.pos_embed  # (B, N + 1, D)

    def features(self, images: Tensor, *, need_weights: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """The final (normalised) token states ``(B, N + 1, D)``, and the attention weights if asked."""
        return self.encoder(self.tokens(images), need_weights=need_weights)

    def forward(self, images: Tensor, *, need_weights: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        out = self.features(images, need_weights=need_weights)
        x, weights = out if need_weights else (out, None)
        cls_index = 0 if self.class_token == "first" else -1
        patches = x[:, 1:] if self.class_token == "first" else x[:, :-1]  # (B, N, D)
        pooled = x[:, cls_index] if self.pool == "cls" else patches.mean(dim=1)  # (B, D)
        logits = self.head(pooled)  # (B, num_classes)
        return (logits, weights) if need_weights else logits


class SoftCausalMask(Normalizer):
    """iLLaMA's soft mask :cite:`wang2024adapting`: softmax weights times ``M = r 1 + (1 - r) tril(1)``, unnormalised.

    ``weights = softmax(S) * M`` (elementwise) with ``S`` the logits over *all* keys: ``r = 1`` is bidirectional
    attention, ``r = 0`` zeroes the weights on later keys. As in the authors' code (``models/illama.py``), the
    mask multiplies *after* the softmax and the rows are not renormalised, so for ``r < 1`` a row sums to less
    than 1 and, even at ``r = 0``, later keys still enter the softmax's denominator. Set ``rate`` during training
    (:func:`set_soft_mask_rate`, with :func:`soft_mask_schedule`). Shapes: logits ``(B, H, T_q, T_k)`` in and out.
    """

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = _check_rate(rate)

    def forward(self, logits: Tensor, mask: Tensor | None) -> Tensor:
        weights = masked_softmax(logits, mask)  # (B, H, T_q, T_k), rows sum to 1
        T_q, T_k = logits.shape[-2:]
        causal = causal_mask(T_q, T_k, device=logits.device).to(weights.dtype)  # (T_q, T_k): tril(1)
        return weights * (self.rate + (1.0 - self.rate) * causal)  # (B, H, T_q, T_k)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"soft mask rate must be a number in [0, 1], got {rate!r}")
    return float(rate)


def soft_mask_schedule(total_steps: int, cutoff_steps: int, start: float = 1.0) -> list[float]:
    """iLLaMA's soft-mask rates, one per step: linear from ``start`` to 0 over ``cutoff_steps``, then 0 (causal).

    The authors' ``mask_scheduler.py`` (mode "soft", schedule "linear") ramps ``r`` over the first epochs this way.
    """
    _positive_int("total_steps", total_steps)
    if isinstance(cutoff_steps, bool) or not isinstance(cutoff_steps, int) or not 0 <= cutoff_steps <= total_steps:
        raise ValueError(f"cutoff_steps must be an int in [0, total_steps={total_steps}], got {cutoff_steps!r}")
    start = _check_rate(start)
    ramp = torch.linspace(start, 0.0, cutoff_steps, dtype=torch.float64).tolist() if cutoff_steps else []
    return ramp + [0.0] * (total_steps - cutoff_steps)


def set_soft_mask_rate(model: nn.Module, rate: float) -> int:
    """Set ``rate`` on every :class:`SoftCausalMask` inside ``model``; returns how many were set (0 raises)."""
    rate = _check_rate(rate)
    found = [m for m in model.modules() if isinstance(m, SoftCausalMask)]
    if not found:
        raise ValueError(f"set_soft_mask_rate: {type(model).__name__} has no SoftCausalMask normaliser")
    for m in found:
        m.rate = rate
    return len(found)

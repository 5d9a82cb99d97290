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
attention weights, a list of ``(B, H, N + 1, N + 1)`` with ``N = (H / P)(W / P)`` patches and the class token first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnbook.models.transformer import CoreFactory, Encoder

__all__ = ["PatchEmbedding", "ViT"]


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
        core: a zero-argument factory of the attention core (standard softmax attention by default).
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
    ) -> None:
        super().__init__()
        _positive_int("num_classes", num_classes)
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
        """The encoder's input: class token then patch tokens, plus positions, ``(B, N + 1, D)``."""
        x = self.patch_embed(images)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        return torch.cat([cls, x], dim=1) + self.pos_embed  # (B, N + 1, D)

    def features(self, images: Tensor, *, need_weights: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """The final (normalised) token states ``(B, N + 1, D)``, and the attention weights if asked."""
        return self.encoder(self.tokens(images), need_weights=need_weights)

    def forward(self, images: Tensor, *, need_weights: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        out = self.features(images, need_weights=need_weights)
        x, weights = out if need_weights else (out, None)
        pooled = x[:, 0] if self.pool == "cls" else x[:, 1:].mean(dim=1)  # (B, D)
        logits = self.head(pooled)  # (B, num_classes)
        return (logits, weights) if need_weights else logits

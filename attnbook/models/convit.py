"""ConViT: a Vision Transformer whose first blocks use gated positional self-attention (chapter 14).

:cite:`dascoli2021convit`. Patch tokens (with learned positions) pass through ``local_layers`` blocks of
:class:`~attnbook.attention.convolutional.GPSA`, initialised as a convolution; then the class token joins and ordinary
self-attention blocks follow. With ``local_layers=0`` it is a plain ViT of the same size (the paper's baseline).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from attnbook.attention.convolutional import GatedPositionalCore, local_init
from attnbook.attention.core import AttentionCore
from attnbook.models.transformer import EncoderBlock
from attnbook.models.vit import PatchEmbedding

__all__ = ["ConViT"]


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class ConViT(nn.Module):
    """A small ConViT :cite:`dascoli2021convit`: patch tokens with learned positions, ``local_layers`` pre-norm
    blocks of :class:`GPSA` (locally initialised), then the class token joins and ``depth - local_layers``
    ordinary self-attention blocks follow; the class token's final state is classified.

    ``pool="mean"`` classifies the mean of the patch tokens instead (timm's ``global_pool="avg"``).
    ``local_layers = 0`` is a plain ViT (DeiT) of the same size, the baseline the paper compares with.
    ``images (B, C, H, W) -> logits (B, num_classes)``; ``need_weights=True`` also returns the per-layer weights
    (GPSA layers over the ``N`` patches, later layers over ``N + 1`` tokens, class token first).
    Parameter names follow timm's ``ConVit`` (``patch_embed``, ``pos_embed``, ``cls_token``, ``blocks``, ``norm``,
    ``head``); blocks are the book's :class:`~attnbook.models.transformer.EncoderBlock` (``self_attn``,
    ``linear1/2``, ``norm1/2``), LayerNorm epsilon ``1e-6``.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        patch_size: int,
        in_channels: int,
        num_classes: int,
        dim: int = 36,
        depth: int = 3,
        num_heads: int = 9,
        local_layers: int = 2,
        mlp_ratio: float = 4.0,
        locality_strength: float = 1.0,
        dropout: float = 0.0,
        pool: str = "cls",
    ) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.pool = pool
        _positive_int("num_classes", num_classes)
        depth = _positive_int("depth", depth)
        if isinstance(local_layers, bool) or not isinstance(local_layers, int) or not 0 <= local_layers < depth:
            raise ValueError(
                f"local_layers must be an int in [0, depth={depth}) (the class token needs a later block), "
                f"got {local_layers!r}"
            )
        self.local_layers = local_layers
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_channels, dim)
        grid = self.patch_embed.grid
        self.pos_embed = nn.Parameter(torch.randn(1, self.patch_embed.num_patches, dim) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)

        def block(core: Callable[[], AttentionCore] | None) -> EncoderBlock:
            return EncoderBlock(
                dim, num_heads, round(mlp_ratio * dim), dropout, "gelu", True, layer_norm_eps=1e-6, core=core
            )

        self.blocks = nn.ModuleList(
            block((lambda: GatedPositionalCore(num_heads, grid, dropout)) if i < local_layers else None)
            for i in range(depth)
        )
        for blk in self.blocks[:local_layers]:
            local_init(blk.self_attn, locality_strength)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def gpsa_cores(self) -> list[GatedPositionalCore]:
        """The :class:`GatedPositionalCore` of each GPSA block, first to last."""
        return [blk.self_attn.core for blk in self.blocks[: self.local_layers]]

    def gates(self) -> Tensor:
        """``sigma(lambda)`` of every GPSA block and head: ``(local_layers, H)`` (empty for a plain ViT)."""
        if not self.local_layers:
            return torch.empty(0, self.blocks[0].num_heads)
        return torch.stack([core.gates() for core in self.gpsa_cores()])

    def forward(self, images: Tensor, *, need_weights: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        x = self.patch_embed(images) + self.pos_embed  # (B, N, D)
        weights = []
        for i, blk in enumerate(self.blocks):
            if i == self.local_layers:
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N + 1, D)
            if need_weights:
                x, w = blk(x, need_weights=True)
                weights.append(w)
            else:
                x = blk(x)
        x = self.norm(x)
        pooled = x[:, 0] if self.pool == "cls" else x[:, 1:].mean(dim=1)  # (B, D)
        logits = self.head(pooled)  # (B, num_classes)
        return (logits, weights) if need_weights else logits

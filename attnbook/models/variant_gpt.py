"""The book's GPT with one deconstructed kind of attention per layer (chapter 24, :cite:`xue2025deconstructing`).

:class:`VariantGPT` replaces each block's attention of :class:`~attnbook.models.gpt.GPT` by a
:class:`~attnbook.attention.variants.VariantSelfAttention` of the kind named for that layer (``"standard"``,
``"no_mixing"``, ``"fixed"``, ``"similarity"``, ``"decoupled"``), and keeps the layer-0 embeddings for the decoupled
layers. Hybrids are lists of kinds, e.g. ``("standard", "no_mixing")``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbook.attention.variants import VariantSelfAttention
from attnbook.models.gpt import GPT, GPTConfig, check_token_ids
from attnbook.models.pointer import IGNORE_INDEX

__all__ = ["VariantGPT"]


class VariantGPT(GPT):
    """The book's character GPT with one attention kind per layer: ``kinds[l]`` for block ``l``.

    Everything else (embeddings, LayerNorms, MLPs, tied head, initialisation) is :class:`~attnbook.models.gpt.GPT`'s.
    With every kind ``"standard"`` it computes what a GPT with the same weights computes. ``forward(idx (B, T),
    targets (B, T) | None) -> (logits (B, T, V), loss | None)``; decoding with a KV cache is not supported.
    """

    def __init__(self, config: GPTConfig, kinds: Sequence[str]) -> None:
        super().__init__(config)
        kinds = tuple(kinds)
        if len(kinds) != config.n_layer:
            raise ValueError(f"kinds must name one kind per layer (n_layer={config.n_layer}), got {len(kinds)}")
        if config.attn_window is not None or config.n_kv_head != config.n_head:
            raise ValueError("VariantGPT supports neither attn_window nor grouped key-value heads")
        self.kinds = kinds
        for block, kind in zip(self.decoder.blocks, kinds, strict=True):
            variant = VariantSelfAttention(config.n_embd, config.n_head, kind, config.block_size, bias=config.bias)
            old = block.attn.mha
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                if getattr(variant.mha, name) is not None:
                    setattr(variant.mha, name, getattr(old, name))  # keep GPT's initialisation
            block.attn = variant

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, *, cache: None = None
    ) -> tuple[Tensor, Tensor | None]:
        if cache is not None:
            raise ValueError("VariantGPT does not decode with a KV cache: pass cache=None")
        check_token_ids(idx, "idx", max_len=self.config.block_size, vocab_size=self.config.vocab_size)
        if targets is not None and (not isinstance(targets, Tensor) or targets.shape != idx.shape):
            raise ValueError(f"targets must be a tensor of the shape of idx {tuple(idx.shape)}")
        decoder = self.decoder
        pos = torch.arange(idx.shape[1], device=idx.device)  # (T,)
        x0 = decoder.dropout(self.token_embedding(idx) + decoder.position_embedding(pos))  # (B, T, E): layer 0
        x = x0
        for block in decoder.blocks:
            source = block.ln_1(x0) if block.attn.kind == "decoupled" else None
            x = x + block.attn(block.ln_1(x), source)  # (B, T, E)
            x = x + block.mlp(block.ln_2(x))  # (B, T, E)
        logits = self.lm_head(decoder.ln_f(x))  # (B, T, V)
        if targets is None:
            return logits, None
        flat = logits.reshape(-1, logits.shape[-1])  # (B T, V)
        return logits, F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE_INDEX)

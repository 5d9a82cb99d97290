"""Hierarchies and multiple scales (chapter 11): SMITH's two-level document encoder and MEDUSA's shared body.

**SMITH** :cite:`yang2020beyond` (built from the authors' code, ``google-research/smith``):

* :func:`greedy_sentence_blocks` packs a document's sentences greedily into blocks of at most ``block_length``
  tokens (a sentence longer than a block is cut), padded, at most ``max_blocks`` of them.
* :class:`BlockEncoder`: token embedding + in-block position embedding, a learned ``[CLS]`` vector in front of every
  block, Transformer encoder blocks whose self-attention stays inside the block; the block vector is the ``[CLS]``
  output. ``tokens (N, b), mask (N, b) -> (N, D)``.
* :class:`DocumentEncoder`: block vectors + learned block-position embeddings, Transformer encoder blocks over the
  blocks, masked mean pooling. ``blocks (B, n, D), block_mask (B, n) -> (B, n, D), (B, D)``.
* :class:`SmithEncoder`: the two together; :meth:`SmithEncoder.match` is the siamese cosine score;
  :meth:`SmithEncoder.masked_block_loss` is the masked sentence-block pretraining loss.
* :func:`masked_block_loss`: each hidden block's prediction is scored by dot products against *all* the hidden
  block vectors of the batch; the cross-entropy takes its own block as the class (as in SMITH's loss).
* :func:`hierarchical_score_count`: attention scores of the two levels, ``T b + (T/b)^2`` against ``T^2`` flat.

**MEDUSA** :cite:`aboutalebi2021medusa` (a reconstruction from the abstract): :class:`MultiScaleGatedCNN`, a small
CNN whose stage features are gated by sigmoid maps that light heads derive from *one* shared encoder-decoder body.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.models.transformer import EncoderBlock

__all__ = [
    "greedy_sentence_blocks",
    "hierarchical_score_count",
    "masked_block_loss",
    "BlockEncoder",
    "DocumentEncoder",
    "SmithEncoder",
    "MultiScaleGatedCNN",
]


def greedy_sentence_blocks(
    sentences: list[list[int]], block_length: int, max_blocks: int | None = None, pad_id: int = 0
) -> tuple[Tensor, Tensor]:
    """Pack sentences (lists of token ids) greedily into blocks of at most ``block_length`` tokens.

    A sentence joins the current block if it fits, else it starts a new block; a sentence longer than a block is
    cut into full blocks and its rest. Blocks beyond ``max_blocks`` are dropped. Returns ``tokens (n, block_length)``
    long, padded with ``pad_id``, and ``mask (n, block_length)`` bool, True for real tokens.
    """
    if not isinstance(block_length, int) or block_length <= 0:
        raise ValueError(f"greedy_sentence_blocks: block_length must be a positive int, got {block_length!r}")
    if max_blocks is not None and max_blocks <= 0:
        raise ValueError(f"greedy_sentence_blocks: max_blocks must be positive or None, got {max_blocks}")
    blocks: list[list[int]] = []
    current: list[int] = []
    for i, sentence in enumerate(sentences):
        if len(sentence) == 0:
            raise ValueError(f"greedy_sentence_blocks: sentence {i} is empty")
        if current and len(current) + len(sentence) > block_length:
            blocks.append(current)
            current = []
        while len(sentence) > block_length:  # cut an over-long sentence
            blocks.append(list(sentence[:block_length]))
            sentence = sentence[block_length:]
        current = current + list(sentence)
    if current:
        blocks.append(current)
    if not blocks:
        raise ValueError("greedy_sentence_blocks: sentences is empty")
    blocks = blocks[:max_blocks] if max_blocks is not None else blocks
    tokens = torch.full((len(blocks), block_length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(blocks), block_length, dtype=torch.bool)
    for n, block in enumerate(blocks):
        tokens[n, : len(block)] = torch.tensor(block, dtype=torch.long)
        mask[n, : len(block)] = True
    return tokens, mask


def hierarchical_score_count(length: int, block_length: int) -> tuple[int, int]:
    """Attention scores per layer: ``(flat, hierarchical) = (T^2, T b + n^2)`` with ``n = ceil(T / b)`` blocks
    (the ``[CLS]`` tokens left out)."""
    if length <= 0 or block_length <= 0:
        raise ValueError(
            f"hierarchical_score_count: length and block_length must be positive, got {length}, {block_length}"
        )
    n = math.ceil(length / block_length)
    return length * length, n * block_length * block_length + n * n


def masked_block_loss(predicted: Tensor, targets: Tensor) -> Tensor:
    """SMITH's masked sentence-block loss: ``predicted (N, D)``, ``targets (N, D)`` (row i the true vector of hidden
    block i). Logits ``predicted @ targets.T`` (N, N); cross-entropy with class i for row i, averaged."""
    if predicted.dim() != 2 or predicted.shape != targets.shape:
        raise ValueError(
            f"masked_block_loss: predicted and targets must both be (N, D), got {tuple(predicted.shape)} "
            f"and {tuple(targets.shape)}"
        )
    if predicted.shape[0] == 0:
        raise ValueError("masked_block_loss: no hidden block (N = 0)")
    logits = predicted @ targets.T  # (N, N)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def _stack(num_layers: int, d_model: int, num_heads: int) -> nn.ModuleList:
    if num_layers <= 0:
        raise ValueError(f"num_layers must be positive, got {num_layers}")
    return nn.ModuleList(EncoderBlock(d_model, num_heads, 2 * d_model, norm_first=True) for _ in range(num_layers))


class BlockEncoder(nn.Module):
    """SMITH's first level: ``tokens (N, b) long, mask (N, b) bool -> block vectors (N, D)``.

    Each block gets a learned ``[CLS]`` vector in front (position 0), token embeddings plus in-block position
    embeddings after it; pre-norm encoder blocks attend inside the block only (padding masked); the block vector is
    the final LayerNorm of the ``[CLS]`` output. :meth:`encode_flat` runs the same layers on a whole document laid
    out flat with a block-diagonal mask, which gives the same vectors.
    """

    def __init__(self, vocab_size: int, d_model: int, block_length: int, num_heads: int = 2, num_layers: int = 1):
        super().__init__()
        if vocab_size <= 0 or d_model <= 0 or block_length <= 0:
            raise ValueError(
                f"BlockEncoder: vocab_size, d_model, block_length must be positive, got {vocab_size}, {d_model}, "
                f"{block_length}"
            )
        self.block_length, self.d_model = block_length, d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Parameter(torch.randn(block_length + 1, d_model) * 0.02)
        self.cls = nn.Parameter(torch.randn(d_model) * 0.02)
        self.layers = _stack(num_layers, d_model, num_heads)
        self.norm = nn.LayerNorm(d_model)

    def _inputs(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if tokens.dim() != 2 or tokens.shape[1] != self.block_length:
            raise ValueError(f"BlockEncoder: tokens must be (N, {self.block_length}), got {tuple(tokens.shape)}")
        if mask.shape != tokens.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"BlockEncoder: mask must be bool {tuple(tokens.shape)}, got {mask.dtype} {tuple(mask.shape)}"
            )
        x = torch.cat([self.cls.expand(tokens.shape[0], 1, -1), self.embed(tokens)], dim=1)  # (N, b + 1, D)
        keep = torch.cat([mask.new_ones(tokens.shape[0], 1), mask], dim=1)  # (N, b + 1)
        return x + self.position, keep

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        x, keep = self._inputs(tokens, mask)
        for layer in self.layers:
            x = layer(x, key_mask=keep)  # attention inside each block
        return self.norm(x[:, 0])  # (N, D): the [CLS] outputs

    def encode_flat(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """The same computation as one flat sequence of ``N (b + 1)`` tokens with a block-diagonal mask."""
        x, keep = self._inputs(tokens, mask)
        n, width = keep.shape
        block_id = torch.arange(n, device=x.device).repeat_interleave(width)  # (N (b+1),)
        allowed = (block_id[:, None] == block_id[None, :]) & keep.reshape(-1)[None, :]  # (N(b+1), N(b+1))
        x = x.reshape(1, n * width, -1)  # (1, N (b+1), D)
        for layer in self.layers:
            x = layer(x, attn_mask=allowed)
        return self.norm(x.reshape(n, width, -1)[:, 0])


class DocumentEncoder(nn.Module):
    """SMITH's second level: ``blocks (B, n, D), block_mask (B, n) bool -> (outputs (B, n, D), document (B, D))``.

    Adds learned block-position embeddings (``max_blocks`` of them), runs pre-norm encoder blocks over the blocks
    (padding blocks masked) and pools the real blocks' outputs by their mean.
    """

    def __init__(self, d_model: int, max_blocks: int, num_heads: int = 2, num_layers: int = 1):
        super().__init__()
        if max_blocks <= 0:
            raise ValueError(f"DocumentEncoder: max_blocks must be positive, got {max_blocks}")
        self.max_blocks, self.d_model = max_blocks, d_model
        self.position = nn.Parameter(torch.randn(max_blocks, d_model) * 0.02)
        self.layers = _stack(num_layers, d_model, num_heads)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, blocks: Tensor, block_mask: Tensor) -> tuple[Tensor, Tensor]:
        if blocks.dim() != 3 or blocks.shape[-1] != self.d_model or blocks.shape[1] > self.max_blocks:
            raise ValueError(
                f"DocumentEncoder: blocks must be (B, n <= {self.max_blocks}, {self.d_model}), "
                f"got {tuple(blocks.shape)}"
            )
        if block_mask.shape != blocks.shape[:2] or block_mask.dtype != torch.bool:
            raise ValueError(
                f"DocumentEncoder: block_mask must be bool {tuple(blocks.shape[:2])}, got {tuple(block_mask.shape)}"
            )
        if not block_mask.any(dim=1).all():
            raise ValueError("DocumentEncoder: every document needs at least one real block")
        x = blocks + self.position[: blocks.shape[1]]  # (B, n, D)
        for layer in self.layers:
            x = layer(x, key_mask=block_mask)
        x = self.norm(x)
        weights = block_mask.to(x.dtype)[..., None]  # (B, n, 1)
        return x, (x * weights).sum(1) / weights.sum(1)


class SmithEncoder(nn.Module):
    """SMITH: :class:`BlockEncoder` then :class:`DocumentEncoder`; siamese (one set of weights for both documents).

    ``forward(tokens (B, n, b) long, mask (B, n, b) bool) -> document vectors (B, D)``; a block with no real token
    is a padding block. ``mask_vector`` replaces hidden blocks in :meth:`masked_block_loss`.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 32,
        block_length: int = 16,
        max_blocks: int = 32,
        num_heads: int = 2,
        block_layers: int = 1,
        document_layers: int = 1,
    ):
        super().__init__()
        self.blocks = BlockEncoder(vocab_size, d_model, block_length, num_heads, block_layers)
        self.document = DocumentEncoder(d_model, max_blocks, num_heads, document_layers)
        self.mask_vector = nn.Parameter(torch.zeros(d_model))

    def block_vectors(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, n, b)`` tokens and mask -> block vectors ``(B, n, D)`` and ``block_mask (B, n)``."""
        if tokens.dim() != 3 or mask.shape != tokens.shape:
            raise ValueError(
                f"SmithEncoder: tokens and mask must both be (B, n, b), got {tuple(tokens.shape)} "
                f"and {tuple(mask.shape)}"
            )
        B, n, b = tokens.shape
        vectors = self.blocks(tokens.reshape(B * n, b), mask.reshape(B * n, b)).reshape(B, n, -1)
        return vectors, mask.any(dim=-1)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        vectors, block_mask = self.block_vectors(tokens, mask)
        return self.document(vectors, block_mask)[1]

    def match(self, tokens_a: Tensor, mask_a: Tensor, tokens_b: Tensor, mask_b: Tensor) -> Tensor:
        """Cosine similarity of the two documents' vectors, ``(B,)``."""
        return F.cosine_similarity(self(tokens_a, mask_a), self(tokens_b, mask_b), dim=-1)

    def masked_block_loss(self, tokens: Tensor, mask: Tensor, hidden: Tensor) -> Tensor:
        """Hide the blocks where ``hidden (B, n)`` is True (they must be real blocks): their vectors are replaced by
        ``mask_vector`` before the document encoder, whose outputs there predict the hidden vectors
        (:func:`masked_block_loss` over all hidden blocks of the batch)."""
        vectors, block_mask = self.block_vectors(tokens, mask)
        if hidden.shape != block_mask.shape or hidden.dtype != torch.bool:
            raise ValueError(
                f"masked_block_loss: hidden must be bool {tuple(block_mask.shape)}, got {tuple(hidden.shape)}"
            )
        if (hidden & ~block_mask).any():
            raise ValueError("masked_block_loss: hidden marks a padding block")
        inputs = torch.where(hidden[..., None], self.mask_vector.expand_as(vectors), vectors)
        outputs, _ = self.document(inputs, block_mask)
        return masked_block_loss(outputs[hidden], vectors[hidden])


class MultiScaleGatedCNN(nn.Module):
    """MEDUSA in miniature (a reconstruction): one shared attention body feeds sigmoid gates at every CNN stage.

    Backbone stage s: ``F_s = pool(relu(conv3x3(F_{s-1})))`` with ``channels[s]`` channels (halving the grid).
    Body: a small encoder-decoder CNN on the image, ``Phi (B, body_channels, H, W)``. Head s: a 1x1 convolution on
    ``Phi`` resized to stage s's grid, ``a_s = sigmoid(head_s(resize(Phi)))`` with ``channels[s]`` maps. Gated
    features ``F'_s = F_s * a_s`` feed stage s + 1; the classifier averages the last stage over the grid.
    ``forward(x (B, C_in, H, W), gates=None) -> logits (B, num_classes)``; ``gates`` overrides the computed ones
    (a list of tensors broadcastable to each stage), e.g. all ones, which gives :meth:`plain`, the ungated CNN.
    """

    def __init__(
        self, in_channels: int, num_classes: int, channels: tuple[int, ...] = (8, 16, 32), body_channels: int = 8
    ):
        super().__init__()
        if len(channels) == 0 or min(channels) <= 0 or in_channels <= 0 or num_classes <= 0 or body_channels <= 0:
            raise ValueError(
                f"MultiScaleGatedCNN: channels must be a non-empty tuple of positive ints and in_channels, "
                f"num_classes, body_channels positive, got {channels}, {in_channels}, {num_classes}, {body_channels}"
            )
        widths = (in_channels, *channels)
        self.in_channels = in_channels
        self.stages = nn.ModuleList(nn.Conv2d(widths[s], widths[s + 1], 3, padding=1) for s in range(len(channels)))
        self.body = nn.Sequential(  # encoder-decoder: down, convolve, up
            nn.Conv2d(in_channels, body_channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(body_channels, body_channels, 3, padding=1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(body_channels, body_channels, 3, padding=1),
        )
        self.heads = nn.ModuleList(nn.Conv2d(body_channels, c, 1) for c in channels)
        self.classifier = nn.Linear(channels[-1], num_classes)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"MultiScaleGatedCNN: x must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        step = 2 ** len(self.stages)
        if x.shape[-2] % step or x.shape[-1] % step:
            raise ValueError(f"MultiScaleGatedCNN: H and W must be multiples of {step}, got {tuple(x.shape[-2:])}")

    def gates(self, x: Tensor) -> list[Tensor]:
        """The gates ``a_s (B, channels[s], H / 2^(s+1), W / 2^(s+1))`` from the shared body."""
        self._check(x)
        phi = self.body(x)  # (B, body_channels, H, W)
        size = x.shape[-2:]
        out = []
        for head in self.heads:
            size = (size[0] // 2, size[1] // 2)
            out.append(torch.sigmoid(head(F.interpolate(phi, size=size, mode="bilinear", align_corners=False))))
        return out

    def forward(self, x: Tensor, gates: list[Tensor] | None = None) -> Tensor:
        gates = self.gates(x) if gates is None else gates
        if len(gates) != len(self.stages):
            raise ValueError(f"MultiScaleGatedCNN: need {len(self.stages)} gates, got {len(gates)}")
        self._check(x)
        h = x
        for stage, gate in zip(self.stages, gates, strict=True):
            h = F.max_pool2d(F.relu(stage(h)), 2) * gate  # (B, C_s, H_s, W_s)
        return self.classifier(h.mean(dim=(-2, -1)))

    def plain(self, x: Tensor) -> Tensor:
        """The backbone without gates (what ``gates = 1`` must reproduce)."""
        self._check(x)
        h = x
        for stage in self.stages:
            h = F.max_pool2d(F.relu(stage(h)), 2)
        return self.classifier(h.mean(dim=(-2, -1)))

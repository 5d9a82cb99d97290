"""Attention for recommendation and tagging: MQSA-TED and CRENER (chapter 21).

**MQSA-TED** (*Collaboration and Transition: Distilling Item Transitions into Multi-Query Self-Attention for
Sequential Recommendation*, Zhu et al., 2023, :cite:`collaboration2023`), built from its code (``MQSA_TED.py``
of ``zhuty16/MQSA-TED``). A session ``x (B, T, E)`` of embedded items is read by causal self-attention twice. The
*short-query* branch is SASRec's: the query at step ``t`` is the (layer-normalised) state of item ``t`` itself. The
*L-query* branch asks with the mean of the last ``L`` items instead (:func:`window_mean`),

.. math::
    \\bar x_t = \\frac{1}{|W_t|}\\sum_{j \\in W_t} x_j,\\qquad
    W_t = \\{j : t - L < j \\le t,\\ j \\text{ not padding}\\},

so one query summarises a few recent interactions -- the *collaborative* signal of what this user is into now --
while keys and values stay single items (:class:`LQuerySelfAttention`; ``window=1`` is SASRec's block exactly).
The recommender (:class:`MultiQueryRecommender`) mixes the two branches' scores over all items,
``logits = alpha * h_short E^T + (1 - alpha) * h_long E^T``; ``alpha = 1`` is SASRec. *Transition-aware embedding
distillation* (:func:`transition_counts`, :func:`transition_distillation_loss`) teaches the item embeddings the
global item-to-item transition counts: soft labels ``softmax(c_i / max c_i / tau)`` against the student
``softmax(e_i E^T sqrt(E) / tau)``.

**CRENER** (*A Character Relation Enhanced Chinese NER Model*, Qiao and Peng, 2024, :cite:`qiao2024crener`). The
encoder is TENER's unscaled, direction- and distance-aware attention (:cite:`yan2019tener`,
:class:`~attnbook.attention.positional.TENERRelativePosition`, chapter 05), built here by
:func:`relative_encoder_attention`; ``direction_aware=False`` gives the ablation of chapter 21,
:class:`DirectionBlindRelativePosition`, whose relative sinusoid depends on ``|j - i|`` only. NER becomes the
classification of every character pair ``(i, j)`` into relation tags (a W2NER-style grid,
:data:`attnbook.data.sessions.RELATION_TAGS`); a relation-representation module lets the pair features attend to
learned tag embeddings that have attended to each other (:class:`RelationRepresentation`). No CRENER code was found:
the grid head and the relation module are reconstructions from the abstract (chapter 21 says which parts).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.core import AttentionCore, DotProductScores, MultiHeadAttention
from attnbook.attention.positional import TENERRelativePosition, relative_logits_skew, tener_sinusoid

__all__ = [
    "window_mean",
    "LQuerySelfAttention",
    "MultiQueryRecommender",
    "transition_counts",
    "transition_distillation_loss",
    "hit_rate_at_k",
    "DirectionBlindRelativePosition",
    "relative_encoder_attention",
    "RelativeEncoderLayer",
    "RelationRepresentation",
    "CharacterRelationTagger",
    "decode_relation_grid",
    "entity_f1",
]


def _check_int(where: str, name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: {name} must be an int >= {low}, got {value!r}")
    return value


def _check_key_mask(where: str, key_mask: Tensor | None, batch: int, length: int) -> None:
    if key_mask is None:
        return
    if not isinstance(key_mask, Tensor) or key_mask.dtype != torch.bool:
        raise TypeError(f"{where}: key_mask must be a bool tensor (True = real item), got {type(key_mask).__name__}")
    if tuple(key_mask.shape) != (batch, length):
        raise ValueError(f"{where}: key_mask must have shape (B, T)=({batch}, {length}), got {tuple(key_mask.shape)}")


# ----------------------------------------------------------------------------------------------------------------
# MQSA: L-query self-attention and the multi-query recommender
# ----------------------------------------------------------------------------------------------------------------


def window_mean(x: Tensor, window: int, key_mask: Tensor | None = None) -> Tensor:
    """The L-query input of MQSA-TED: the mean of the last ``window`` real items at each step.

    ``out[b, t] = sum_{j in W_t} x[b, j] / |W_t|`` with ``W_t = {j : t - window < j <= t, key_mask[b, j]}``; a
    step whose window holds no real item gives zeros (the code divides by ``count + 1e-24``). ``window = 1`` returns
    ``x`` on real items; ``window >= T`` is the running mean of the causal prefix.

    Args:
        x: ``(B, T, E)`` item states.
        window: ``L >= 1``.
        key_mask: ``(B, T)`` bool, ``True`` for real items; all real by default.

    Returns:
        ``(B, T, E)``.
    """
    if not isinstance(x, Tensor) or x.ndim != 3:
        raise ValueError(f"window_mean: x must be a (B, T, E) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    _check_int("window_mean", "window", window)
    B, T, _ = x.shape
    _check_key_mask("window_mean", key_mask, B, T)
    real = torch.ones(B, T, dtype=x.dtype, device=x.device) if key_mask is None else key_mask.to(x.dtype)
    both = torch.cat([x * real[..., None], real[..., None]], dim=-1)  # (B, T, E + 1): sums and counts together
    padded = F.pad(both, (0, 0, window - 1, 0))  # (B, T + L - 1, E + 1): zeros before the first step
    sums = padded.unfold(1, window, 1).sum(-1)  # (B, T, E + 1): the window ending at each step
    total, count = sums[..., :-1], sums[..., -1:]
    return total / count.clamp(min=1.0)  # (B, T, E); an empty window has total 0


class LQuerySelfAttention(nn.Module):
    """One L-query self-attention block of MQSA-TED (:cite:`collaboration2023`; ``window=1``: SASRec's block).

    Following the code: ``q = LN(window_mean(x, L))``; ``a = MHA(q, x, x)`` causal, padding keys masked;
    ``y = LN(a + q)``; ``out = (y + FFN(y)) * real``, with ``FFN = Linear -> ReLU -> Linear`` of width ``E``.
    Queries come from the window mean, keys and values from the single items. The book's
    :class:`~attnbook.attention.core.MultiHeadAttention` has an output projection, which the code's attention lacks.

    Args:
        embed_dim: ``E``.
        num_heads: ``H`` (divides ``E``).
        window: ``L``, the number of recent items a query averages.
        dropout: dropout on the attention weights and in the FFN.

    Shapes: ``x (B, T, E)``, ``key_mask (B, T)`` bool -> ``(B, T, E)`` (and weights ``(B, H, T, T)`` when asked).
    """

    def __init__(self, embed_dim: int, num_heads: int = 1, window: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        _check_int("LQuerySelfAttention", "embed_dim", embed_dim)
        _check_int("LQuerySelfAttention", "num_heads", num_heads)
        self.window = _check_int("LQuerySelfAttention", "window", window)
        self.attn = MultiHeadAttention(embed_dim, num_heads, dropout=dropout)
        self.query_norm = nn.LayerNorm(embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        self.ffn = nn.Sequential(
            nn.Linear(embed_dim, embed_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(embed_dim, embed_dim),
            nn.Dropout(dropout),
        )

    def queries(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """``LN(window_mean(x, L))``: ``(B, T, E)``."""
        return self.query_norm(x if self.window == 1 else window_mean(x, self.window, key_mask))

    def forward(
        self, x: Tensor, key_mask: Tensor | None = None, *, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.ndim != 3:
            raise ValueError(f"LQuerySelfAttention: x must be (B, T, E), got {getattr(x, 'shape', type(x).__name__)}")
        B, T, _ = x.shape
        _check_key_mask("LQuerySelfAttention", key_mask, B, T)
        q = self.queries(x, key_mask)  # (B, T, E)
        a, weights = self.attn(
            q, x, x, key_mask=key_mask, is_causal=True, need_weights=need_weights, average_attn_weights=False
        )  # (B, T, E), (B, H, T, T) or None
        y = self.norm(a + q)
        out = y + self.ffn(y)  # (B, T, E)
        if key_mask is not None:
            out = out * key_mask[..., None].to(out.dtype)
        return (out, weights) if need_weights else out


class MultiQueryRecommender(nn.Module):
    """MQSA (:cite:`collaboration2023`): a short-query (SASRec) and an L-query branch whose scores are mixed.

    Items ``0 .. num_items - 1``; the id ``num_items`` is padding (a zero embedding). The input of both branches is
    ``E_items[x] * sqrt(E) + P[t]`` (learned positions), times the padding mask. Each branch is ``num_blocks``
    :class:`LQuerySelfAttention` blocks (window 1 for the short branch, ``long_window`` for the long one) and a
    final LayerNorm; the logits over items are ``alpha * h_short E^T + (1 - alpha) * h_long E^T``. ``alpha=1``
    builds no long branch: SASRec.

    Shapes: ``items (B, T)`` long -> logits ``(B, T, num_items)``; ``logits[:, t]`` scores the item after step ``t``.
    """

    def __init__(
        self,
        num_items: int,
        max_len: int,
        embed_dim: int = 32,
        num_heads: int = 1,
        num_blocks: int = 1,
        long_window: int = 3,
        alpha: float = 0.5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        where = "MultiQueryRecommender"
        self.num_items = _check_int(where, "num_items", num_items)
        self.max_len = _check_int(where, "max_len", max_len)
        self.embed_dim = _check_int(where, "embed_dim", embed_dim)
        _check_int(where, "num_blocks", num_blocks)
        self.long_window = _check_int(where, "long_window", long_window)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"{where}: alpha must be a number in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.item_embedding = nn.Embedding(num_items + 1, embed_dim, padding_idx=num_items)
        self.position_embedding = nn.Embedding(max_len, embed_dim)
        nn.init.normal_(self.item_embedding.weight, std=0.01)
        nn.init.normal_(self.position_embedding.weight, std=0.01)
        with torch.no_grad():
            self.item_embedding.weight[num_items].zero_()
        self.dropout = nn.Dropout(dropout)
        self.short = nn.ModuleList(LQuerySelfAttention(embed_dim, num_heads, 1, dropout) for _ in range(num_blocks))
        self.short_norm = nn.LayerNorm(embed_dim)
        self.long: nn.ModuleList | None = None
        self.long_norm: nn.LayerNorm | None = None
        if self.alpha < 1.0:
            self.long = nn.ModuleList(
                LQuerySelfAttention(embed_dim, num_heads, long_window, dropout) for _ in range(num_blocks)
            )
            self.long_norm = nn.LayerNorm(embed_dim)

    def embed(self, items: Tensor) -> tuple[Tensor, Tensor]:
        """``(x (B, T, E), key_mask (B, T))`` for item ids ``(B, T)``."""
        if not isinstance(items, Tensor) or items.ndim != 2 or items.dtype != torch.long:
            raise ValueError(
                f"MultiQueryRecommender: items must be a (B, T) long tensor, got {getattr(items, 'shape', items)!r}"
            )
        B, T = items.shape
        if T > self.max_len:
            raise ValueError(f"MultiQueryRecommender: items has T={T} steps, more than max_len={self.max_len}")
        if items.numel() and (items.min() < 0 or items.max() > self.num_items):
            raise ValueError(
                f"MultiQueryRecommender: item ids must be in [0, {self.num_items}] ({self.num_items} = padding)"
            )
        key_mask = items != self.num_items  # (B, T)
        positions = torch.arange(T, device=items.device)
        x = self.item_embedding(items) * math.sqrt(self.embed_dim) + self.position_embedding(positions)  # (B, T, E)
        return self.dropout(x) * key_mask[..., None].to(x.dtype), key_mask

    def branch_states(self, items: Tensor) -> tuple[Tensor, Tensor | None]:
        """The final states ``(h_short, h_long)``, each ``(B, T, E)``; ``h_long`` is None when ``alpha = 1``."""
        x, key_mask = self.embed(items)
        states = []
        for blocks, norm in ((self.short, self.short_norm), (self.long, self.long_norm)):
            if blocks is None or norm is None:
                states.append(None)
                continue
            h = x
            for block in blocks:
                h = block(h, key_mask)
            states.append(norm(h))
        return states[0], states[1]

    def forward(self, items: Tensor) -> Tensor:
        h_short, h_long = self.branch_states(items)
        table = self.item_embedding.weight[: self.num_items]  # (N, E): scores over real items only
        logits = h_short @ table.T  # (B, T, N)
        if h_long is not None:
            logits = self.alpha * logits + (1.0 - self.alpha) * (h_long @ table.T)
        return logits


def transition_counts(items: Tensor, num_items: int, span: int = 1) -> Tensor:
    """Global item-to-item transition counts ``c[i, j]`` = how often ``j`` follows ``i`` within ``span`` steps.

    ``items (S, T)`` long with padding id ``num_items`` (pairs touching padding are not counted). Returns
    ``(num_items, num_items)`` float32. The code's ``get_seq_matrix_sparse`` with ``time_span = span``.
    """
    if not isinstance(items, Tensor) or items.ndim != 2:
        raise ValueError(f"transition_counts: items must be (S, T), got {getattr(items, 'shape', items)!r}")
    _check_int("transition_counts", "num_items", num_items)
    _check_int("transition_counts", "span", span)
    counts = torch.zeros(num_items * num_items)
    for s in range(1, span + 1):
        a, b = items[:, :-s].reshape(-1), items[:, s:].reshape(-1)
        real = (a != num_items) & (b != num_items)
        counts.index_add_(0, a[real] * num_items + b[real], torch.ones(int(real.sum())))
    return counts.reshape(num_items, num_items)


def transition_distillation_loss(item_embedding: Tensor, heads: Tensor, counts: Tensor, tau: float = 0.1) -> Tensor:
    """TED's loss :cite:`collaboration2023`: distil transition counts into the item embeddings.

    Teacher ``p_i = softmax(c_i / (max_j c_ij + 1e-24) / tau)``; student ``s_i = softmax(e_i sqrt(E) E^T / tau)``;
    the loss is the cross-entropy ``-mean_i sum_j p_ij log s_ij`` over the ``heads`` items ``i``.

    Args:
        item_embedding: ``(N, E)``, the real items' embeddings.
        heads: ``(M,)`` long item ids (the code uses the items of the batch).
        counts: ``(N, N)`` from :func:`transition_counts`.
        tau: temperature, positive.
    """
    if item_embedding.ndim != 2 or counts.shape != (item_embedding.shape[0],) * 2:
        raise ValueError(
            f"transition_distillation_loss: need item_embedding (N, E) and counts (N, N), got "
            f"{tuple(item_embedding.shape)} and {tuple(counts.shape)}"
        )
    if not tau > 0:
        raise ValueError(f"transition_distillation_loss: tau must be positive, got {tau!r}")
    rows = counts[heads].to(item_embedding.dtype)  # (M, N)
    teacher = torch.softmax(rows / (rows.amax(-1, keepdim=True) + 1e-24) / tau, -1)
    student = item_embedding[heads] * math.sqrt(item_embedding.shape[1]) @ item_embedding.T  # (M, N)
    return -(teacher * torch.log_softmax(student / tau, -1)).sum(-1).mean()


def hit_rate_at_k(logits: Tensor, targets: Tensor, k: int = 10) -> Tensor:
    """The fraction of rows whose target is among the ``k`` highest logits: ``logits (M, N)``, ``targets (M,)``."""
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"hit_rate_at_k: need logits (M, N) and targets (M,), got {tuple(logits.shape)}, {tuple(targets.shape)}"
        )
    _check_int("hit_rate_at_k", "k", k)
    if k > logits.shape[1]:
        raise ValueError(f"hit_rate_at_k: k={k} exceeds the number of items {logits.shape[1]}")
    target_logit = logits.gather(1, targets[:, None])  # (M, 1)
    rank = (logits > target_logit).sum(1)  # (M,): items strictly better than the target
    return (rank < k).float().mean()


# ----------------------------------------------------------------------------------------------------------------
# CRENER: direction-aware relative attention, the relation grid and the relation representation
# ----------------------------------------------------------------------------------------------------------------


class DirectionBlindRelativePosition(TENERRelativePosition):
    """TENER's relative attention with a *direction-blind* sinusoid ``R_|j - i|`` (chapter 21's ablation).

    Everything of :class:`~attnbook.attention.positional.TENERRelativePosition` stays (the biases ``u``, ``v``, the
    key-side term, no scale); only the offset loses its sign, so ``s_ij`` depends on the distance ``|j - i|`` but
    not on which side the key is. With no other position information, a model built from it is
    reflection-equivariant: reversing a sequence reverses its outputs.
    """

    def _relative(self, x: Tensor, x_pos: Tensor, y_pos: Tensor) -> Tensor:
        L_x, L_y = x_pos.shape[0], y_pos.shape[0]
        start = int(y_pos[0] - x_pos[0]) - (L_x - 1)
        offsets = torch.arange(start, start + L_x + L_y - 1, device=x.device).abs()  # (L_x + L_y - 1,): |offset|
        return relative_logits_skew(x, tener_sinusoid(offsets, self.head_dim, self.base, dtype=x.dtype))


def relative_encoder_attention(embed_dim: int, num_heads: int, *, direction_aware: bool = True) -> MultiHeadAttention:
    """CRENER's (TENER's) encoder attention: unscaled dot products plus the relative terms of ``eq-tener``.

    ``MultiHeadAttention(E, H, core=AttentionCore(DotProductScores(scale=1.0), TENERRelativePosition(H, E/H)))``;
    ``direction_aware=False`` swaps in :class:`DirectionBlindRelativePosition`.
    """
    _check_int("relative_encoder_attention", "embed_dim", embed_dim)
    _check_int("relative_encoder_attention", "num_heads", num_heads)
    if embed_dim % num_heads:
        raise ValueError(f"relative_encoder_attention: num_heads={num_heads} must divide embed_dim={embed_dim}")
    part = TENERRelativePosition if direction_aware else DirectionBlindRelativePosition
    core = AttentionCore(scores=DotProductScores(scale=1.0), positions=part(num_heads, embed_dim // num_heads))
    return MultiHeadAttention(embed_dim, num_heads, core=core)


class RelativeEncoderLayer(nn.Module):
    """A post-norm encoder layer with :func:`relative_encoder_attention`: ``LN(x + MHA(x))``, then ``LN(y + FFN(y))``.

    Shapes: ``x (B, L, E)``, ``key_mask (B, L)`` bool -> ``(B, L, E)``.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, direction_aware: bool = True, ffn_mult: int = 2) -> None:
        super().__init__()
        self.attn = relative_encoder_attention(embed_dim, num_heads, direction_aware=direction_aware)
        self.norm1, self.norm2 = nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)
        self.ffn = nn.Sequential(
            nn.Linear(embed_dim, ffn_mult * embed_dim), nn.ReLU(), nn.Linear(ffn_mult * embed_dim, embed_dim)
        )

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        positions = torch.arange(x.shape[1], device=x.device)
        a, _ = self.attn(x, key_mask=key_mask, q_pos=positions, k_pos=positions)  # (B, L, E)
        y = self.norm1(x + a)
        return self.norm2(y + self.ffn(y))


class RelationRepresentation(nn.Module):
    """CRENER's relation-representation module (a reconstruction from the abstract, :cite:`qiao2024crener`).

    ``C`` learned tag embeddings ``G (C, E)`` first attend to each other (tag-tag relations):
    ``G' = LN(G + MHA(G, G, G))``. Every character pair's feature ``p_ij (E,)`` then attends to the tags
    (character-tag relations): ``p'_ij = LN(p_ij + MHA(p_ij, G', G'))``, and the tag scores are
    ``logits_ijc = p'_ij . G'_c / sqrt(E)``.

    Shapes: ``pairs (B, L, L, E)`` -> logits ``(B, L, L, C)``.
    """

    def __init__(self, embed_dim: int, num_tags: int = 4, num_heads: int = 1) -> None:
        super().__init__()
        _check_int("RelationRepresentation", "num_tags", num_tags, low=2)
        self.tags = nn.Parameter(torch.randn(num_tags, embed_dim) / math.sqrt(embed_dim))
        self.tag_attn = MultiHeadAttention(embed_dim, num_heads)
        self.pair_attn = MultiHeadAttention(embed_dim, num_heads)
        self.tag_norm, self.pair_norm = nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)

    def tag_states(self) -> Tensor:
        """``G' (C, E)``: the tag embeddings after tag-tag attention."""
        g = self.tags[None]  # (1, C, E)
        return self.tag_norm(g + self.tag_attn(g)[0])[0]

    def forward(self, pairs: Tensor) -> Tensor:
        if pairs.ndim != 4 or pairs.shape[-1] != self.tags.shape[1]:
            raise ValueError(
                f"RelationRepresentation: pairs must be (B, L, L, {self.tags.shape[1]}), got {tuple(pairs.shape)}"
            )
        B, L, _, E = pairs.shape
        tags = self.tag_states()  # (C, E)
        flat = pairs.reshape(B, L * L, E)  # (B, L L, E): one query per pair
        keys = tags[None].expand(B, -1, -1)  # (B, C, E)
        attended = self.pair_norm(flat + self.pair_attn(flat, keys, keys)[0])  # (B, L L, E)
        return (attended @ tags.T / math.sqrt(E)).reshape(B, L, L, -1)  # (B, L, L, C)


class CharacterRelationTagger(nn.Module):
    """A CRENER-style tagger: relative encoder, pair features, relation representation -> ``(B, L, L, C)`` logits.

    Characters are embedded (no absolute positions, as in TENER); ``num_layers`` :class:`RelativeEncoderLayer`
    give ``h (B, L, E)``; the pair feature is ``p_ij = W [h_i; h_j] + D[min(|i - j|, max_distance)]`` (a distance
    embedding, reconstruction); :class:`RelationRepresentation` scores the tags. ``direction_aware=False`` builds the
    ablation whose encoder sees distances only.
    """

    def __init__(
        self,
        vocab_size: int,
        num_tags: int = 4,
        embed_dim: int = 32,
        num_heads: int = 2,
        num_layers: int = 1,
        max_distance: int = 8,
        *,
        direction_aware: bool = True,
    ) -> None:
        super().__init__()
        where = "CharacterRelationTagger"
        _check_int(where, "vocab_size", vocab_size)
        _check_int(where, "num_layers", num_layers)
        self.max_distance = _check_int(where, "max_distance", max_distance)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.layers = nn.ModuleList(
            RelativeEncoderLayer(embed_dim, num_heads, direction_aware=direction_aware) for _ in range(num_layers)
        )
        self.pair = nn.Linear(2 * embed_dim, embed_dim)
        self.distance = nn.Embedding(max_distance + 1, embed_dim)
        self.relation = RelationRepresentation(embed_dim, num_tags, num_heads=1)

    def encode(self, chars: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """``h (B, L, E)`` for ``chars (B, L)`` long."""
        if not isinstance(chars, Tensor) or chars.ndim != 2 or chars.dtype != torch.long:
            raise ValueError(
                f"CharacterRelationTagger: chars must be a (B, L) long tensor, got {getattr(chars, 'shape', chars)!r}"
            )
        _check_key_mask("CharacterRelationTagger", key_mask, *chars.shape)
        h = self.embedding(chars)
        for layer in self.layers:
            h = layer(h, key_mask)
        return h

    def forward(self, chars: Tensor, key_mask: Tensor | None = None) -> Tensor:
        h = self.encode(chars, key_mask)  # (B, L, E)
        B, L, E = h.shape
        pos = torch.arange(L, device=h.device)
        dist = (pos[None, :] - pos[:, None]).abs().clamp(max=self.max_distance)  # (L, L)
        both = torch.cat([h[:, :, None].expand(B, L, L, E), h[:, None].expand(B, L, L, E)], -1)  # (B, L, L, 2E)
        pairs = self.pair(both) + self.distance(dist)  # (B, L, L, E)
        return self.relation(pairs)  # (B, L, L, C)


def decode_relation_grid(tags: Tensor) -> list[list[tuple[int, int, int]]]:
    """Entities ``(head, tail, type)`` from a grid of tags ``(B, L, L)``: every ``HEAD_TAIL`` cell ``(tail, head)``
    with ``head <= tail`` whose ``NEXT`` chain ``head -> head + 1 -> ... -> tail`` is complete."""
    if tags.ndim != 3 or tags.shape[1] != tags.shape[2]:
        raise ValueError(f"decode_relation_grid: tags must be (B, L, L), got {tuple(tags.shape)}")
    out = []
    for grid in tags.tolist():
        spans = []
        for tail, row in enumerate(grid):
            for head in range(tail + 1):
                if row[head] >= 2 and all(grid[i][i + 1] == 1 for i in range(head, tail)):
                    spans.append((head, tail, row[head] - 2))
        out.append(spans)
    return out


def entity_f1(predicted: list[list[tuple[int, int, int]]], gold: list[list[tuple[int, int, int]]]) -> float:
    """Micro F1 of exact entity matches (head, tail and type), over all sentences."""
    if len(predicted) != len(gold):
        raise ValueError(f"entity_f1: {len(predicted)} predicted sentences but {len(gold)} gold ones")
    hits = sum(len(set(p) & set(g)) for p, g in zip(predicted, gold, strict=True))
    n_pred, n_gold = sum(len(p) for p in predicted), sum(len(g) for g in gold)
    if n_pred + n_gold == 0:
        return 1.0
    return 2.0 * hits / (n_pred + n_gold)

"""Deconstructed attention: controlled variants of causal attention, each relaxing one principle (chapter 24).

*Deconstructing Attention: Investigating Design Principles for Effective Language Modeling* (Xue, Moosavi and
Aletras, 2025, :cite:`xue2025deconstructing`) names four principles that dot-product attention interweaves --
mixing across positions, weights that depend on the sequence, a specific mathematical form (dot products and a
softmax), and queries and keys computed from the current hidden states -- and trains language models in which one
of them is relaxed, in every layer or only in some. The paper's exact variants are not public (only its abstract
is); the forms below are the book's reconstruction, one per principle, each built from the parts of
:class:`~attnbook.attention.core.AttentionCore` (chapter 24 says so in a labelled box):

* ``"standard"``: ``A = causal-softmax(Q K^T / sqrt(d))`` with ``Q, K, V`` from the layer's input ``h``.
* ``"no_mixing"``: ``A = I``, each token sees only itself (``out = V``); no queries or keys exist.
* ``"fixed"``: ``A = causal-softmax(P)``, ``P (H, L, L)`` a learned matrix per head, the same for every sequence
  (:class:`LearnedMixingScores`); ``P = 0`` is the causal running mean.
* ``"similarity"``: ``A_ij = phi(q_i).phi(k_j) / sum_{j' <= i} phi(q_i).phi(k_j')`` with the positive feature map
  ``phi(x) = elu(x) + 1`` (:class:`PositiveSimilarityScores`, :class:`SumNormalizer`): non-negative and normalised
  like softmax weights, but no exponential of a dot product (the kernel of linear attention,
  :cite:`katharopoulos2020transformers`).
* ``"decoupled"``: standard attention whose ``Q, K`` come from the layer-0 embeddings ``x_0`` (token plus position,
  through this layer's LayerNorm) instead of ``h``; ``V`` still comes from ``h``.

:class:`~attnbook.models.variant_gpt.VariantGPT` is the book's :class:`~attnbook.models.gpt.GPT` with one kind per
layer, so that hybrids (standard attention in some layers only) are a list such as ``("standard", "fixed")``.

Shapes: heads already split, ``(B, H, T, d)``; models take token ids ``(B, T)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.core import AttentionCore, MultiHeadAttention, Normalizer, Scores
from attnbook.attention.functional import check_qkv, masked_softmax
from attnbook.attention.masks import causal_mask

__all__ = [
    "VARIANT_KINDS",
    "positive_feature_map",
    "PositiveSimilarityScores",
    "SumNormalizer",
    "LearnedMixingScores",
    "similarity_attention",
    "fixed_mixing_attention",
    "VariantSelfAttention",
]

VARIANT_KINDS = ("standard", "no_mixing", "fixed", "similarity", "decoupled")
_USES_QK = ("standard", "similarity", "decoupled")


def positive_feature_map(x: Tensor) -> Tensor:
    """``phi(x) = elu(x) + 1``, elementwise: positive everywhere, ``x + 1`` for ``x > 0``, ``exp(x)`` below."""
    return F.elu(x) + 1.0


class PositiveSimilarityScores(Scores):
    """Scores ``phi(q) phi(k)^T`` ``(B, H, T_q, T_k)``, every entry positive; no scale (the sum normaliser
    divides any scale out)."""

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        return positive_feature_map(q) @ positive_feature_map(k).transpose(-2, -1)  # (B, H, T_q, T_k)


class SumNormalizer(Normalizer):
    """Weights ``s_ij / sum_j' s_ij'`` over the visible keys, for non-negative scores ``s`` ``(B, H, T_q, T_k)``.

    ``mask`` is boolean (``True`` = visible) or additive (``-inf`` = hidden); hidden entries get weight 0, and a
    row with no visible key (or only zero scores) gives zeros, not NaN. Negative scores raise ``ValueError``.
    """

    def forward(self, logits: Tensor, mask: Tensor | None) -> Tensor:
        if bool((logits < 0).any()):
            raise ValueError(f"SumNormalizer needs non-negative scores, got a minimum of {float(logits.min()):.3g}")
        if mask is not None:
            visible = mask if mask.dtype == torch.bool else torch.isfinite(mask)
            logits = logits.masked_fill(~visible, 0.0)
        total = logits.sum(dim=-1, keepdim=True)  # (B, H, T_q, 1)
        return logits / torch.where(total > 0, total, torch.ones_like(total))  # (B, H, T_q, T_k)


class LearnedMixingScores(Scores):
    """Sequence-independent logits: a learned ``P (H, L, L)``, cut to ``P[:, :T_q, :T_k]`` whatever ``q`` and ``k``.

    ``P`` starts at zero, so a causal softmax of it starts as the running mean over the visible positions.
    """

    def __init__(self, num_heads: int, max_len: int) -> None:
        super().__init__()
        for name, value in (("num_heads", num_heads), ("max_len", max_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"LearnedMixingScores: {name} must be a positive int, got {value!r}")
        self.mix_logits = nn.Parameter(torch.zeros(num_heads, max_len, max_len))  # (H, L, L)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        num_heads, max_len, _ = self.mix_logits.shape
        T_q, T_k = q.shape[-2], k.shape[-2]
        if q.shape[1] != num_heads or max(T_q, T_k) > max_len:
            raise ValueError(
                f"LearnedMixingScores holds P of shape {tuple(self.mix_logits.shape)} = (H, L, L); got H={q.shape[1]}, "
                f"T_q={T_q}, T_k={T_k}"
            )
        return self.mix_logits[None, :, :T_q, :T_k].expand(q.shape[0], -1, -1, -1)  # (B, H, T_q, T_k)


def similarity_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = True) -> Tensor:
    """Attention with weights ``phi(q_i).phi(k_j)`` normalised to sum to 1 over the visible keys ``j (<= i)``.

    Shapes: ``q (B, H, T_q, d)``, ``k (B, H, T_k, d)``, ``v (B, H, T_k, d_v)`` -> ``(B, H, T_q, d_v)``.
    """
    check_qkv(q, k, v, name="similarity_attention")
    core = AttentionCore(scores=PositiveSimilarityScores(), normalizer=SumNormalizer())
    out, _ = core(q, k, v, is_causal=causal)
    return out


def fixed_mixing_attention(mix_logits: Tensor, v: Tensor) -> Tensor:
    """``causal-softmax(P[:, :T, :T]) @ v``: the same mixing weights for every sequence.

    Shapes: ``mix_logits (H, L, L)`` with ``L >= T``, ``v (B, H, T, d)`` -> ``(B, H, T, d)``.
    """
    if not isinstance(mix_logits, Tensor) or mix_logits.ndim != 3 or mix_logits.shape[1] != mix_logits.shape[2]:
        raise ValueError(f"mix_logits must have shape (H, L, L), got {getattr(mix_logits, 'shape', mix_logits)}")
    if not isinstance(v, Tensor) or v.ndim != 4:
        raise ValueError(f"v must have shape (B, H, T, d), got {getattr(v, 'shape', v)}")
    H, L, _ = mix_logits.shape
    T = v.shape[-2]
    if v.shape[1] != H or T > L:
        raise ValueError(f"v has shape {tuple(v.shape)}; mix_logits {tuple(mix_logits.shape)} needs H={H}, T <= {L}")
    weights = masked_softmax(mix_logits[:, :T, :T], causal_mask(T, T, device=v.device))  # (H, T, T)
    return weights.to(v.dtype) @ v  # (B, H, T, d)


class VariantSelfAttention(nn.Module):
    """Causal self-attention of one ``kind`` of :data:`VARIANT_KINDS`, as a layer of a decoder.

    The projections and head split are those of :class:`~attnbook.attention.core.MultiHeadAttention`; for the kinds
    that read no queries or keys (``"no_mixing"``, ``"fixed"``) ``mha.q_proj`` and ``mha.k_proj`` are removed, so
    they hold no parameters. Names match :class:`~attnbook.models.gpt.CausalSelfAttention`, so a standard GPT's
    state dict loads into it.

    ``forward(h (B, T, E), source (B, T, E) | None) -> (B, T, E)``: ``source`` (the normalised layer-0 embeddings)
    is required by ``"decoupled"`` and refused by the others.
    """

    def __init__(self, n_embd: int, n_head: int, kind: str, max_len: int, *, bias: bool = True) -> None:
        super().__init__()
        if kind not in VARIANT_KINDS:
            raise ValueError(f"kind must be one of {VARIANT_KINDS}, got {kind!r}")
        self.kind = kind
        if kind == "similarity":
            core = AttentionCore(scores=PositiveSimilarityScores(), normalizer=SumNormalizer())
        elif kind == "fixed":
            core = AttentionCore(scores=LearnedMixingScores(n_head, max_len))
        else:
            core = AttentionCore()  # the fused causal softmax kernel
        self.mha = MultiHeadAttention(n_embd, n_head, bias=bias, core=core)
        if kind not in _USES_QK:
            self.mha.q_proj = None
            self.mha.k_proj = None

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"

    def forward(self, h: Tensor, source: Tensor | None = None) -> Tensor:
        mha = self.mha
        if h.ndim != 3 or h.shape[-1] != mha.embed_dim:
            raise ValueError(f"h must have shape (B, T, {mha.embed_dim}), got {tuple(h.shape)}")
        if (source is not None) != (self.kind == "decoupled"):
            need = "needs" if self.kind == "decoupled" else "takes no"
            raise ValueError(f"VariantSelfAttention(kind={self.kind!r}) {need} source (the layer-0 embeddings)")
        if source is not None and source.shape != h.shape:
            raise ValueError(f"source must have the shape of h {tuple(h.shape)}, got {tuple(source.shape)}")
        v = mha.split_heads(mha.v_proj(h))  # (B, H, T, d)
        if self.kind == "no_mixing":
            out = v  # A = I
        elif self.kind == "fixed":
            out, _ = mha.core(v, v, v, is_causal=True)  # the scores ignore q and k: P alone sets the weights
        else:
            qk_input = source if source is not None else h
            q = mha.split_heads(mha.q_proj(qk_input))  # (B, H, T, d)
            k = mha.split_heads(mha.k_proj(qk_input))  # (B, H, T, d)
            out, _ = mha.core(q, k, v, is_causal=True)  # (B, H, T, d)
        return mha.out_proj(mha.merge_heads(out))  # (B, T, E)

    def weights(self, h: Tensor, source: Tensor | None = None) -> Tensor:
        """The mixing weights ``A (B, H, T, T)`` this layer applies to ``h (B, T, E)``."""
        T = h.shape[1]
        mha = self.mha
        if self.kind == "no_mixing":
            return torch.eye(T, dtype=h.dtype, device=h.device).expand(h.shape[0], mha.num_heads, T, T)
        if self.kind == "fixed":
            v = mha.split_heads(mha.v_proj(h))  # (B, H, T, d)
            return mha.core(v, v, v, is_causal=True, need_weights=True)[1]
        qk_input = source if source is not None else h
        q, k = mha.split_heads(mha.q_proj(qk_input)), mha.split_heads(mha.k_proj(qk_input))  # (B, H, T, d) each
        return mha.core(q, k, k, is_causal=True, need_weights=True)[1]  # (B, H, T, T)

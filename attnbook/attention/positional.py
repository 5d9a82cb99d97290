"""Positional information for attention (chapter 05, "Where am I?").

Attention is permutation-equivariant: without positions, "dog bites man" and "man bites dog" give the same
set of outputs. This module collects the two ways of telling attention where things are.

**Additive encodings** -- ``nn.Module``\\ s that map positions to embeddings you add to the inputs:

* :class:`SinusoidalPositionalEncoding` -- fixed sines and cosines (*Attention Is All You Need*, 2017,
  :cite:`vaswani2017attention`), interleaved layout ``PE[p, 2i] = sin(p w_i)``, ``PE[p, 2i+1] = cos(p w_i)``.
* :class:`LearnedPositionalEmbedding` -- a trained lookup table; it cannot represent positions it never saw.
* :class:`SeqPE` -- a position index written as a digit sequence and read by a small attention encoder
  (*SeqPE*, 2025, :cite:`li2025seqpe`).
* :class:`SinusoidalPositionalEncoding2D` -- 2-D coordinates; :class:`ObjectPositionalEncoding` -- OAT's
  sinusoid per axis of an object's grid cell (*OAT*, 2024, :cite:`fang2024oat`).
* :class:`ClassPriorPositionalEncoding` -- positions enriched with a class prior learned from labels, the book's
  reconstruction of an idea of *VSFormer* (2024, :cite:`xi2024vsformer`), whose exact method is not reproduced.

**Parts that act inside attention** -- :class:`~attnbook.attention.core.PositionPart` subclasses for
:class:`~attnbook.attention.core.AttentionCore`, e.g.
``MultiHeadAttention(E, H, core=AttentionCore(positions=ALiBi(H)))``:

* :class:`ShawRelativePosition` -- learned, clipped relative-position keys (Shaw et al., 2018,
  :cite:`shaw2018self`), computed either naively (an ``(T_q, T_k, D)`` gather) or with the Music Transformer's
  *skewing* trick (Huang et al., 2018, :cite:`huang2018music`) in ``O(L D)`` extra memory.
* :class:`RotaryPositionEmbedding` -- RoPE (RoFormer, :cite:`su2024roformer`), both dimension layouts.
* :class:`ALiBi` -- linear distance penalties with per-head slopes (Press et al., 2022, :cite:`press2022train`).
* :class:`TENERRelativePosition` -- TENER's unscaled, direction- and distance-aware relative attention (2019,
  :cite:`yan2019tener`), which CRENER (2024, :cite:`qiao2024crener`) uses in its encoder; use it with
  ``DotProductScores(scale=1.0)``.
* :class:`ClassPriorBias` -- a reconstruction of VSFormer-style prior-enhanced attention: an additive, per-head
  bias towards time steps where the class prior is discriminative.

Shapes: parts receive heads already split, ``q (B, H, T_q, D)``, ``k (B, H, T_k, D)`` and integer positions
``q_pos (T_q,)``, ``k_pos (T_k,)``; a bias broadcasts to ``(B, H, T_q, T_k)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.core import MultiHeadAttention, PositionPart

__all__ = [
    "sinusoidal_encoding",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "relative_distances",
    "relative_logits_naive",
    "relative_logits_skew",
    "music_transformer_skew",
    "ShawRelativePosition",
    "rotate_half",
    "rope_cos_sin",
    "apply_rope",
    "RotaryPositionEmbedding",
    "alibi_slopes",
    "ALiBi",
    "tener_sinusoid",
    "TENERRelativePosition",
    "position_digits",
    "SeqPE",
    "SinusoidalPositionalEncoding2D",
    "ObjectPositionalEncoding",
    "class_prior",
    "prior_discriminability",
    "ClassPriorPositionalEncoding",
    "ClassPriorBias",
]


def _check_dim(name: str, value: int, multiple: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % multiple:
        raise ValueError(f"{name} must be a positive int divisible by {multiple}, got {value!r}")


def _check_heads(part: str, q: Tensor, num_heads: int) -> None:
    if q.ndim != 4 or q.shape[1] != num_heads:
        raise ValueError(f"{part}: q must have shape (B, H={num_heads}, T_q, D), got {tuple(q.shape)}")


# --------------------------------------------------------------------------------------------------------------
# Absolute encodings
# --------------------------------------------------------------------------------------------------------------


def sinusoidal_encoding(
    positions: Tensor, dim: int, base: float = 10000.0, *, dtype: torch.dtype | None = None
) -> Tensor:
    """The sinusoidal encoding of *Attention Is All You Need* (2017, :cite:`vaswani2017attention`), eq. (PE).

    ``PE[p, 2i] = sin(p * w_i)``, ``PE[p, 2i + 1] = cos(p * w_i)`` with ``w_i = base^(-2i / dim)``: the
    interleaved layout. ``PE[p + k]`` is a fixed rotation of ``PE[p]`` (per frequency pair), so relative offsets
    are linear functions of the encodings.

    Args:
        positions: integer or real positions of any shape ``(...)``.
        dim: encoding width (even).
        base: the wavelength scale (``10000`` in the paper).
        dtype: output dtype (float32 by default; float64 positions give float64).

    Returns:
        ``(..., dim)``.
    """
    if not isinstance(positions, Tensor):
        raise TypeError(f"positions must be a torch.Tensor, got {type(positions).__name__}")
    _check_dim("dim", dim, 2)
    if not base > 0:
        raise ValueError(f"base must be positive, got {base!r}")
    work = torch.float64 if positions.dtype == torch.float64 or dtype == torch.float64 else torch.float32
    freqs = base ** (-torch.arange(0, dim, 2, dtype=work, device=positions.device) / dim)  # (dim/2,)
    angles = positions.to(work)[..., None] * freqs  # (..., dim/2)
    pe = torch.stack((angles.sin(), angles.cos()), dim=-1)  # (..., dim/2, 2)
    return pe.flatten(-2).to(dtype or (work if positions.is_floating_point() else torch.float32))  # (..., dim)


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoidal position embeddings, optionally scaled by a trained ``alpha`` (Transformer TTS).

    ``forward(positions (...)) -> (..., dim)``; add the result to token embeddings ``(B, L, dim)``.
    See :func:`sinusoidal_encoding`.
    """

    def __init__(self, dim: int, base: float = 10000.0, *, learnable_scale: bool = False) -> None:
        super().__init__()
        _check_dim("dim", dim, 2)
        self.dim, self.base = dim, base
        self.alpha = nn.Parameter(torch.ones(())) if learnable_scale else None

    def forward(self, positions: Tensor) -> Tensor:
        pe = sinusoidal_encoding(positions, self.dim, self.base)  # (..., dim)
        return pe if self.alpha is None else self.alpha * pe


class LearnedPositionalEmbedding(nn.Module):
    """A learned table of ``max_len`` position vectors (as in BERT/GPT-2): ``forward(positions) -> (..., dim)``.

    It knows only the rows that training updated: positions beyond the training length keep their
    initialisation, and positions ``>= max_len`` raise ``ValueError`` rather than index out of range.
    """

    def __init__(self, max_len: int, dim: int, *, init_std: float = 0.02) -> None:
        super().__init__()
        _check_dim("max_len", max_len)
        _check_dim("dim", dim)
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len, dim) * init_std)

    def forward(self, positions: Tensor) -> Tensor:
        if not isinstance(positions, Tensor) or positions.is_floating_point() or positions.dtype == torch.bool:
            raise TypeError(f"positions must be an integer tensor, got {getattr(positions, 'dtype', type(positions))}")
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= self.max_len):
            raise ValueError(
                f"positions must lie in [0, max_len={self.max_len}), got range "
                f"[{int(positions.min())}, {int(positions.max())}] (shape {tuple(positions.shape)})"
            )
        return F.embedding(positions, self.weight)  # (..., dim)


# --------------------------------------------------------------------------------------------------------------
# Relative attention (Shaw) and the Music Transformer skew
# --------------------------------------------------------------------------------------------------------------


def relative_distances(q_pos: Tensor, k_pos: Tensor, max_distance: int | None = None) -> Tensor:
    """``(T_q, T_k)`` signed distances ``k_pos[j] - q_pos[i]``, clipped to ``[-max_distance, max_distance]``."""
    if q_pos.ndim != 1 or k_pos.ndim != 1:
        raise ValueError(f"q_pos and k_pos must be 1-D, got {tuple(q_pos.shape)} and {tuple(k_pos.shape)}")
    dist = k_pos[None, :] - q_pos[:, None]  # (T_q, T_k)
    if max_distance is not None:
        dist = dist.clamp(-max_distance, max_distance)
    return dist


def relative_logits_naive(q: Tensor, table: Tensor, q_pos: Tensor, k_pos: Tensor, max_distance: int) -> Tensor:
    """Shaw's relative logits by definition: ``S[b, h, i, j] = q[b, h, i] . a[clip(j - i)]``.

    Gathers the full ``(H_t, T_q, T_k, D)`` tensor of relative embeddings first: memory ``O(T_q T_k D)``.
    ``table`` is ``(2 max_distance + 1, D)`` (shared by the heads) or ``(H, 2 max_distance + 1, D)``.
    Returns ``(B, H, T_q, T_k)``.
    """
    idx = relative_distances(q_pos, k_pos, max_distance) + max_distance  # (T_q, T_k)
    table = table if table.ndim == 3 else table[None]  # (H_t, 2K+1, D)
    a = table[:, idx]  # (H_t, T_q, T_k, D)  <- the O(L^2 D) tensor
    return torch.einsum("bhid,hijd->bhij", q, a.expand(q.shape[1], -1, -1, -1))  # (B, H, T_q, T_k)


def relative_logits_skew(q: Tensor, rel: Tensor) -> Tensor:
    """Relative logits from per-*distance* embeddings with the skewing trick (Music Transformer, generalised).

    ``rel[..., c, :]`` embeds the distance ``r = c - (T_q - 1)``, for ``r = -(T_q - 1) .. (T_k - 1)``, so
    ``rel`` is ``(..., M, D)`` with ``M = T_q + T_k - 1``. Returns ``(..., T_q, T_k)`` with
    ``out[i, j] = q[i] . rel[j - i + T_q - 1]``: one ``(T_q, M)`` matmul, then *pad, reshape, slice* moves each
    row ``i`` left by ``T_q - 1 - i``. Extra memory ``O(L D + L^2)`` instead of ``O(L^2 D)``.
    """
    T_q, M = q.shape[-2], rel.shape[-2]
    T_k = M - T_q + 1
    if T_k < 1:
        raise ValueError(f"rel must have T_q + T_k - 1 >= T_q rows, got q{tuple(q.shape)} and rel{tuple(rel.shape)}")
    s = q @ rel.transpose(-2, -1)  # (..., T_q, M): logits against every distance
    s = F.pad(s, (0, 1))  # (..., T_q, M + 1): one zero column makes the row stride M + 1
    flat = s.reshape(*s.shape[:-2], T_q * (M + 1))  # (..., T_q (M + 1))
    # element (i, j) of the result sits at i (M + 1) + (T_q - 1 - i) + j = i M + (T_q - 1) + j of `flat`
    out = flat[..., T_q - 1 : T_q - 1 + T_q * M].reshape(*s.shape[:-2], T_q, M)  # (..., T_q, M)
    return out[..., :T_k]  # (..., T_q, T_k)


def music_transformer_skew(s_rel: Tensor) -> Tensor:
    """The Music Transformer's skewing procedure (Huang et al., 2018, :cite:`huang2018music`, sec. 3.4.1).

    ``s_rel = Q E_r^T`` is ``(..., L, L)``, column ``c`` holding the logit against distance ``c - (L - 1)``
    (``E_r`` ordered from ``-(L-1)`` to ``0``). Pad a zero column on the *left*, reshape to ``(L + 1, L)``,
    drop the first row: the result's entry ``(i, j)`` for ``j <= i`` is ``q_i . e_{j - i}``. Entries above the
    diagonal are left-overs that a causal mask hides.
    """
    L = s_rel.shape[-1]
    if s_rel.shape[-2] != L:
        raise ValueError(f"s_rel must be square (..., L, L), got {tuple(s_rel.shape)}")
    padded = F.pad(s_rel, (1, 0))  # (..., L, L + 1)
    return padded.reshape(*s_rel.shape[:-2], L + 1, L)[..., 1:, :]  # (..., L, L)


def _contiguous(pos: Tensor) -> bool:
    return pos.numel() <= 1 or bool((pos[1:] - pos[:-1] == 1).all())


class ShawRelativePosition(PositionPart):
    """Relative position keys, clipped (Shaw et al., 2018, :cite:`shaw2018self`, eq. 4), as a position part.

    ``e_ij = q_i . (k_j + a_clip(j - i)) * scale``; the part returns the bias ``q_i . a_clip(j - i) * scale``
    (the core adds ``q_i . k_j * scale``). ``a`` is a learned table of ``2 max_distance + 1`` vectors of the
    head width ``D``, shared by all heads (Shaw) or one per head (``num_heads``, as the Music Transformer).

    ``method="skew"`` (default) builds the ``T_q + T_k - 1`` distance embeddings and uses
    :func:`relative_logits_skew`: extra memory ``O(L D + L^2)``; ``"naive"`` gathers ``(T_q, T_k, D)``.
    Non-contiguous positions fall back to the naive gather.
    """

    def __init__(
        self,
        head_dim: int,
        max_distance: int,
        *,
        num_heads: int | None = None,
        scale: float | None = None,
        method: Literal["skew", "naive"] = "skew",
    ) -> None:
        super().__init__()
        _check_dim("head_dim", head_dim)
        _check_dim("max_distance", max_distance)
        if num_heads is not None:
            _check_dim("num_heads", num_heads)
        if method not in ("skew", "naive"):
            raise ValueError(f"method must be 'skew' or 'naive', got {method!r}")
        self.head_dim, self.max_distance, self.num_heads, self.method = head_dim, max_distance, num_heads, method
        self.scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
        shape = (2 * max_distance + 1, head_dim) if num_heads is None else (num_heads, 2 * max_distance + 1, head_dim)
        self.table = nn.Parameter(torch.randn(shape) * head_dim**-0.5)

    def bias(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        if q.ndim != 4 or q.shape[-1] != self.head_dim:
            raise ValueError(f"ShawRelativePosition: q must be (B, H, T_q, D={self.head_dim}), got {tuple(q.shape)}")
        if self.num_heads is not None:
            _check_heads("ShawRelativePosition", q, self.num_heads)
        table = self.table.to(q.dtype)
        if self.method == "naive" or not (_contiguous(q_pos) and _contiguous(k_pos)):
            return relative_logits_naive(q, table, q_pos, k_pos, self.max_distance) * self.scale
        T_q, T_k = q.shape[-2], k.shape[-2]
        start = int(k_pos[0] - q_pos[0]) - (T_q - 1)  # the distance of row 0 of `rel`
        dist = torch.arange(start, start + T_q + T_k - 1, device=q.device)  # (M,)
        rel = table[..., dist.clamp(-self.max_distance, self.max_distance) + self.max_distance, :]  # (H_t?, M, D)
        if rel.ndim == 3:
            rel = rel[None]  # (1, H, M, D)
        return relative_logits_skew(q, rel) * self.scale  # (B, H, T_q, T_k)


# --------------------------------------------------------------------------------------------------------------
# RoPE
# --------------------------------------------------------------------------------------------------------------

RopeLayout = Literal["half", "interleaved"]


def rotate_half(x: Tensor, layout: RopeLayout = "half") -> Tensor:
    """Multiply each 2-D pair by ``i``: ``(x1, x2) -> (-x2, x1)``.

    ``"half"`` (GPT-NeoX, Hugging Face's Llama) pairs dim ``i`` with ``i + D/2``; ``"interleaved"`` (RoFormer) pairs
    ``2i`` with ``2i + 1``.
    """
    if layout == "half":
        x1, x2 = x.chunk(2, dim=-1)  # (..., D/2) each
        return torch.cat((-x2, x1), dim=-1)  # (..., D)
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (..., D/2) each
    return torch.stack((-x2, x1), dim=-1).flatten(-2)  # (..., D)


def rope_cos_sin(
    positions: Tensor,
    head_dim: int,
    base: float = 10000.0,
    layout: RopeLayout = "half",
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """``cos`` and ``sin`` of the rotation angles ``p * theta_i``, ``theta_i = base^(-2i/D)``: each ``(L, D)``.

    Angles are computed in float64 for float64 outputs and in float32 otherwise.
    """
    _check_dim("head_dim", head_dim, 2)
    if not base > 0:
        raise ValueError(f"rope_cos_sin: base must be positive, got {base!r}")
    work = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=work, device=positions.device) / head_dim)  # (D/2,)
    angles = positions.to(work)[:, None] * inv_freq  # (L, D/2)
    angles = torch.cat((angles, angles), -1) if layout == "half" else angles.repeat_interleave(2, -1)  # (L, D)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor, layout: RopeLayout = "half") -> Tensor:
    """Rotate ``x (..., L, D)`` pair-wise: ``x * cos + rotate_half(x) * sin`` (RoFormer eq. 34)."""
    return x * cos + rotate_half(x, layout) * sin


class RotaryPositionEmbedding(PositionPart):
    """RoPE (RoFormer, :cite:`su2024roformer`): rotate query and key pairs by angles proportional to position.

    ``<R_m q, R_n k> = <q, R_(n - m) k>``: the score depends on positions only through the offset ``n - m``.
    ``layout="half"`` is the layout of GPT-NeoX and Hugging Face's Llama port (pairs ``i, i + D/2``), the default;
    ``"interleaved"`` is RoFormer's and Meta's reference Llama code's (pairs ``2i, 2i + 1``). The two differ by a
    fixed permutation of the head dimensions. No parameters; no bias.
    """

    def __init__(self, head_dim: int, base: float = 10000.0, layout: RopeLayout = "half") -> None:
        super().__init__()
        _check_dim("head_dim", head_dim, 2)
        if layout not in ("half", "interleaved"):
            raise ValueError(f"layout must be 'half' or 'interleaved', got {layout!r}")
        if not isinstance(base, (int, float)) or not base > 0:
            raise ValueError(f"RotaryPositionEmbedding: base must be a positive number, got {base!r}")
        self.head_dim, self.base, self.layout = head_dim, base, layout

    def rotate(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> tuple[Tensor, Tensor]:
        if q.shape[-1] != self.head_dim or k.shape[-1] != self.head_dim:
            raise ValueError(
                f"RotaryPositionEmbedding: q and k must have head_dim={self.head_dim}, "
                f"got {tuple(q.shape)}, {tuple(k.shape)}"
            )
        cos_q, sin_q = rope_cos_sin(q_pos, self.head_dim, self.base, self.layout, q.dtype)  # (T_q, D)
        cos_k, sin_k = rope_cos_sin(k_pos, self.head_dim, self.base, self.layout, k.dtype)  # (T_k, D)
        return apply_rope(q, cos_q, sin_q, self.layout), apply_rope(k, cos_k, sin_k, self.layout)


# --------------------------------------------------------------------------------------------------------------
# ALiBi
# --------------------------------------------------------------------------------------------------------------


def alibi_slopes(num_heads: int) -> Tensor:
    """ALiBi's head slopes (Press et al., 2022, :cite:`press2022train`, sec. 3), float64 ``(num_heads,)``.

    For ``n`` a power of two: the geometric sequence ``m_h = 2^(-8 h / n)``, ``h = 1..n``. Otherwise take the
    ``2^floor(log2 n)`` slopes of the nearest smaller power of two, then the first ``n - 2^floor(log2 n)``
    *odd-indexed* slopes of the sequence for ``2 * 2^floor(log2 n)`` heads (they fall between the others).
    """
    _check_dim("num_heads", num_heads)
    closest = 2 ** int(math.floor(math.log2(num_heads)))
    start, start_extra = 2.0 ** (-8.0 / closest), 2.0 ** (-8.0 / (2 * closest))  # the paper's start ** h form
    slopes = [start**h for h in range(1, closest + 1)]
    extra = [start_extra**h for h in range(1, 2 * closest + 1, 2)]
    return torch.tensor(slopes + extra[: num_heads - closest], dtype=torch.float64)


class ALiBi(PositionPart):
    """Attention with Linear Biases (Press et al., 2022, :cite:`press2022train`): ``bias = -m_h |j - i|``.

    No position embeddings at all: each head ``h`` penalises a key linearly in its distance to the query,
    with the fixed slope of :func:`alibi_slopes`. The paper is causal (``j <= i``), where ``|j - i| = i - j``;
    the absolute value extends it symmetrically to bidirectional attention. Returns ``(H, T_q, T_k)``.
    """

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)

    def bias(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        _check_heads("ALiBi", q, self.num_heads)
        dist = relative_distances(q_pos, k_pos).abs().to(q.dtype)  # (T_q, T_k)
        return -self.slopes.to(q.dtype)[:, None, None] * dist  # (H, T_q, T_k)


# --------------------------------------------------------------------------------------------------------------
# TENER (and CRENER's encoder): unscaled, direction- and distance-aware relative attention
# --------------------------------------------------------------------------------------------------------------


def tener_sinusoid(offsets: Tensor, dim: int, base: float = 10000.0, *, dtype: torch.dtype | None = None) -> Tensor:
    """The relative sinusoid of TENER (Yan et al., 2019, :cite:`yan2019tener`) for signed offsets ``t``.

    ``R_t = [sin(t w_0), ..., sin(t w_(h-1)), cos(t w_0), ..., cos(t w_(h-1))]`` with ``h = dim / 2`` and
    ``w_k = base^(-k / (h - 1))``: TENER's code uses the tensor2tensor layout (all sines, then all cosines) and
    spreads the frequencies from 1 to ``1 / base`` exactly. The sine half is odd in ``t``, so ``R_t != R_-t``:
    the code tells left from right. ``offsets (...)`` -> ``(..., dim)``; ``dim`` even and at least 4.
    """
    if not isinstance(offsets, Tensor):
        raise TypeError(f"offsets must be a torch.Tensor, got {type(offsets).__name__}")
    _check_dim("dim", dim, 2)
    if dim < 4:
        raise ValueError(f"dim must be at least 4 (two frequencies), got {dim}")
    work = torch.float64 if offsets.dtype == torch.float64 or dtype == torch.float64 else torch.float32
    half = dim // 2
    freqs = base ** (-torch.arange(half, dtype=work, device=offsets.device) / (half - 1))  # (h,)
    angles = offsets.to(work)[..., None] * freqs  # (..., h)
    return torch.cat((angles.sin(), angles.cos()), dim=-1).to(dtype or work)  # (..., dim)


class TENERRelativePosition(PositionPart):
    """TENER's relative attention (Yan et al., 2019, :cite:`yan2019tener`), CRENER's encoder attention.

    CRENER (Qiao et al., 2024, :cite:`qiao2024crener`) names its encoder attention "unscaled direction-aware and
    distance-aware masked self-attention"; that is TENER's ``RelativeMultiHeadAttn`` with ``scale=False``. With
    ``R`` of :func:`tener_sinusoid` and the signed offset ``j - i`` (key minus query position), TENER's code
    computes, *without* a ``1/sqrt(D)`` scale,

    ``s_ij = (q_i + u) . k_j + (q_i + v) . R_(j - i) + k_j . R_(i - j)``

    (the paper writes the offset the other way round, ``i - j``; flipping it negates the sine half of ``R``,
    which the learned query projection absorbs). This part returns everything but ``q_i . k_j``: pair it with
    ``DotProductScores(scale=1.0)``. ``u``, ``v`` are learned ``(H, D)``; ``key_term=False`` drops the last term,
    which the paper's equation does not show. All relative terms use the skew of :func:`relative_logits_skew`
    (contiguous positions). TENER also leaves the keys unprojected; here the attention module's key projection
    stays, which can learn the identity. Returns ``(B, H, T_q, T_k)``.
    """

    def __init__(self, num_heads: int, head_dim: int, base: float = 10000.0, *, key_term: bool = True) -> None:
        super().__init__()
        _check_dim("num_heads", num_heads)
        _check_dim("head_dim", head_dim, 2)
        if head_dim < 4:
            raise ValueError(f"head_dim must be at least 4 (two frequencies), got {head_dim}")
        self.num_heads, self.head_dim, self.base, self.key_term = num_heads, head_dim, base, key_term
        self.u = nn.Parameter(torch.zeros(num_heads, head_dim))
        self.v = nn.Parameter(torch.zeros(num_heads, head_dim))

    def _relative(self, x: Tensor, x_pos: Tensor, y_pos: Tensor) -> Tensor:
        """``out[..., a, b] = x[..., a, :] . R_(y_pos[b] - x_pos[a])`` with the skew: ``(..., L_x, L_y)``."""
        L_x, L_y = x_pos.shape[0], y_pos.shape[0]
        start = int(y_pos[0] - x_pos[0]) - (L_x - 1)  # the offset of row 0 of `rel`
        offsets = torch.arange(start, start + L_x + L_y - 1, device=x.device)  # (L_x + L_y - 1,)
        return relative_logits_skew(x, tener_sinusoid(offsets, self.head_dim, self.base, dtype=x.dtype))

    def bias(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        _check_heads("TENERRelativePosition", q, self.num_heads)
        if q.shape[-1] != self.head_dim:
            raise ValueError(f"TENERRelativePosition: q must have head_dim={self.head_dim}, got {tuple(q.shape)}")
        if not (_contiguous(q_pos) and _contiguous(k_pos)):
            raise ValueError("TENERRelativePosition needs contiguous q_pos and k_pos (consecutive integers)")
        T_q = q.shape[-2]
        u, v = self.u.to(q.dtype), self.v.to(q.dtype)
        content = u[:, None, :] @ k.transpose(-2, -1)  # (B, H, 1, T_k): u . k_j
        pos_q = self._relative(q, q_pos, k_pos)  # (B, H, T_q, T_k): q_i . R_(j - i)
        pos_v = self._relative(v[:, None, :].expand(-1, T_q, -1), q_pos, k_pos)  # (H, T_q, T_k): v . R_(j - i)
        out = content + pos_q + pos_v
        if self.key_term:
            out = out + self._relative(k, k_pos, q_pos).transpose(-2, -1)  # (B, H, T_q, T_k): k_j . R_(i - j)
        return out


# --------------------------------------------------------------------------------------------------------------
# SeqPE: positions as digit sequences read by a small encoder
# --------------------------------------------------------------------------------------------------------------


def position_digits(positions: Tensor, num_digits: int, base: int = 10) -> Tensor:
    """Write non-negative integer positions as ``num_digits`` base-``base`` digits, most significant first.

    ``(...) -> (..., num_digits)`` long; ``37 -> [0, 0, 3, 7]`` for 4 digits. Positions ``>= base**num_digits``
    raise ``ValueError`` (they need more digits).
    """
    if not isinstance(positions, Tensor) or positions.is_floating_point() or positions.dtype == torch.bool:
        raise TypeError(f"positions must be an integer tensor, got {getattr(positions, 'dtype', type(positions))}")
    _check_dim("num_digits", num_digits)
    if base < 2:
        raise ValueError(f"base must be >= 2, got {base}")
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= base**num_digits):
        raise ValueError(
            f"positions must lie in [0, {base}**{num_digits}), "
            f"got range [{int(positions.min())}, {int(positions.max())}]"
        )
    powers = base ** torch.arange(num_digits - 1, -1, -1, device=positions.device)  # (num_digits,)
    return (positions[..., None] // powers) % base  # (..., num_digits)


class SeqPE(nn.Module):
    """Sequential position encoding (SeqPE, 2025, :cite:`li2025seqpe`), small version.

    An ``n``-dimensional position index is written as a symbol sequence -- ``num_digits`` base-``base`` digits
    per coordinate -- and a lightweight encoder (one pre-norm attention block over the digit tokens, with a
    summary token) maps it to a ``dim``-wide embedding. Digits at each place are shared by every position, so
    an unseen position is still made of known symbols. SeqPE's contrastive and distillation regularisers are
    training losses outside this module. As in the authors' ``SequentialPE``, the summary token has no place
    embedding and there is one place embedding per digit and axis; unlike it, the summary token comes first (the
    block is bidirectional, so its place does not matter), there is one block and no output temperature.

    ``forward(positions)``: ``(...)`` for ``ndim=1`` or ``(..., ndim)``; returns ``(..., dim)``. Each distinct
    position is encoded once.
    """

    def __init__(
        self, dim: int, *, num_digits: int = 4, base: int = 10, ndim: int = 1, hidden_dim: int = 32, num_heads: int = 2
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_digits", num_digits), ("ndim", ndim), ("hidden_dim", hidden_dim)):
            _check_dim(name, value)
        self.dim, self.num_digits, self.base, self.ndim = dim, num_digits, base, ndim
        self.digit = nn.Embedding(base, hidden_dim)
        self.place = nn.Parameter(torch.randn(ndim * num_digits, hidden_dim) * 0.02)  # digit place and axis
        self.summary = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.norm1, self.norm2 = nn.LayerNorm(hidden_dim), nn.LayerNorm(hidden_dim)
        self.attn = MultiHeadAttention(hidden_dim, num_heads)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, 2 * hidden_dim), nn.GELU(), nn.Linear(2 * hidden_dim, hidden_dim)
        )
        self.out = nn.Linear(hidden_dim, dim)

    def forward(self, positions: Tensor) -> Tensor:
        if not isinstance(positions, Tensor):
            raise TypeError(f"positions must be a torch.Tensor, got {type(positions).__name__}")
        coords = positions[..., None] if self.ndim == 1 else positions  # (..., ndim)
        if coords.shape[-1] != self.ndim:
            raise ValueError(f"positions must have shape (..., ndim={self.ndim}), got {tuple(positions.shape)}")
        unique, inverse = torch.unique(coords.reshape(-1, self.ndim), dim=0, return_inverse=True)  # (N, ndim)
        tokens = position_digits(unique, self.num_digits, self.base).flatten(1)  # (N, ndim * num_digits)
        x = self.digit(tokens) + self.place  # (N, S, hidden)
        x = torch.cat((self.summary.expand(x.shape[0], -1, -1), x), dim=1)  # (N, 1 + S, hidden)
        x = x + self.attn(self.norm1(x))[0]
        x = x + self.mlp(self.norm2(x))
        emb = self.out(x[:, 0])  # (N, dim)
        return emb[inverse].reshape(*coords.shape[:-1], self.dim)  # (..., dim)


# --------------------------------------------------------------------------------------------------------------
# 2-D and object positions (OAT)
# --------------------------------------------------------------------------------------------------------------


class SinusoidalPositionalEncoding2D(nn.Module):
    """2-D sinusoidal encoding: half the width encodes ``x`` and half encodes ``y`` (:func:`sinusoidal_encoding`).

    ``forward(coords (..., 2))`` with ``(x, y)`` integer or real coordinates returns ``(..., dim)``,
    ``dim % 4 == 0``. :meth:`grid` gives the raster-ordered encoding of an ``height x width`` grid.
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        _check_dim("dim", dim, 4)
        self.dim, self.base = dim, base

    def forward(self, coords: Tensor) -> Tensor:
        if not isinstance(coords, Tensor) or coords.ndim < 1 or coords.shape[-1] != 2:
            raise ValueError(f"coords must have shape (..., 2), got {tuple(getattr(coords, 'shape', ()))}")
        ex = sinusoidal_encoding(coords[..., 0], self.dim // 2, self.base)  # (..., dim/2)
        ey = sinusoidal_encoding(coords[..., 1], self.dim // 2, self.base)  # (..., dim/2)
        return torch.cat((ex, ey), dim=-1)  # (..., dim)

    def grid(self, height: int, width: int) -> Tensor:
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")  # (H, W) each
        return self(torch.stack((xs, ys), dim=-1).reshape(height * width, 2))  # (H W, dim)


OatFrequencies = Literal["original", "exp1", "exp2", "linear"]


class ObjectPositionalEncoding(nn.Module):
    """OAT's object positions (Fang et al., 2024, :cite:`fang2024oat`): a sinusoid per axis of the object's grid cell.

    OAT's objects sit in the cells of a grid (on a shelf: row, column, slot). The authors' code
    (``PositionalEncoding3D``) gives each of the ``num_axes`` coordinates an interleaved sinusoid
    (``sin``, ``cos`` per frequency) of width ``D_a = 2 ceil(dim / (2 num_axes))``, concatenates them and keeps the
    first ``dim`` features. The model then *concatenates* this code to the object's image features. The
    frequencies are ``base^(-2k / D_a)`` (``"original"``) or the code's alternatives ``(2k)^alpha / D_a``
    (``"exp1"``), ``(2k / D_a)^alpha`` (``"exp2"``) and ``2k alpha / D_a`` (``"linear"``).

    ``forward(cells (..., num_axes))`` with integer or real coordinates returns ``(..., dim)``.
    """

    def __init__(
        self,
        dim: int,
        num_axes: int = 3,
        *,
        base: float = 10000.0,
        frequencies: OatFrequencies = "original",
        alpha: float = 1.0,
    ) -> None:
        super().__init__()
        _check_dim("dim", dim, 2)
        _check_dim("num_axes", num_axes)
        if frequencies not in ("original", "exp1", "exp2", "linear"):
            raise ValueError(f"frequencies must be 'original', 'exp1', 'exp2' or 'linear', got {frequencies!r}")
        self.dim, self.num_axes = dim, num_axes
        self.axis_dim = 2 * math.ceil(dim / (2 * num_axes))
        two_k = torch.arange(0, self.axis_dim, 2, dtype=torch.float64)  # (D_a / 2,): 2k
        freqs = {
            "original": lambda: base ** (-two_k / self.axis_dim),
            "exp1": lambda: two_k**alpha / self.axis_dim,
            "exp2": lambda: (two_k / self.axis_dim) ** alpha,
            "linear": lambda: two_k * alpha / self.axis_dim,
        }[frequencies]()
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, cells: Tensor) -> Tensor:
        if not isinstance(cells, Tensor) or cells.ndim < 1 or cells.shape[-1] != self.num_axes:
            raise ValueError(
                f"cells must have shape (..., num_axes={self.num_axes}), got {tuple(getattr(cells, 'shape', ()))}"
            )
        work = torch.float64 if cells.dtype == torch.float64 else torch.float32
        angles = cells.to(work)[..., None] * self.freqs.to(work)  # (..., num_axes, D_a / 2)
        code = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-3)  # (..., num_axes * D_a): axis by axis
        return code[..., : self.dim]  # (..., dim)


# --------------------------------------------------------------------------------------------------------------
# VSFormer: class-prior-enhanced positions and attention
# --------------------------------------------------------------------------------------------------------------


def class_prior(series: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """A class prior in the spirit of VSFormer (2024, :cite:`xi2024vsformer`): the class-mean series.

    A reconstruction: VSFormer's abstract says class-specific priors from the labels enrich its encoding and
    attention, not how; the class means are the book's choice.

    ``series (N, T, C)`` labelled training examples, ``labels (N,)`` in ``[0, num_classes)``; returns
    ``(num_classes, T, C)`` (zeros for a class with no example).
    """
    if series.ndim != 3:
        raise ValueError(f"series must have shape (N, T, C), got {tuple(series.shape)}")
    if labels.shape != series.shape[:1]:
        raise ValueError(f"labels must have shape (N,)=({series.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, num_classes={num_classes})")
    onehot = F.one_hot(labels, num_classes).to(series.dtype)  # (N, K)
    sums = torch.einsum("nk,ntc->ktc", onehot, series)  # (K, T, C)
    return sums / onehot.sum(0).clamp(min=1)[:, None, None]


def prior_discriminability(prior: Tensor) -> Tensor:
    """Per time step, how much the class means differ: variance over classes, averaged over channels, standardised.

    ``(K, T, C) -> (T,)`` with zero mean and unit standard deviation over time.
    """
    if prior.ndim != 3:
        raise ValueError(f"prior must have shape (K, T, C), got {tuple(prior.shape)}")
    spread = prior.var(dim=0, unbiased=False).mean(-1)  # (T,)
    return (spread - spread.mean()) / spread.std().clamp(min=1e-12)


class ClassPriorPositionalEncoding(nn.Module):
    """Positions enriched by the class prior (a reconstruction after VSFormer, :cite:`xi2024vsformer`).

    ``PE'(t) = PE_sin(t) + W vec(prior[:, t, :])``: each time step's encoding also carries what every class
    looks like there, so attention can relate a value to the class-typical values at its position. The
    prior ``(K, T, C)`` comes from :func:`class_prior` on the training split only. ``forward(positions (L,))``
    returns ``(L, dim)``; positions must be ``< T``.
    """

    def __init__(self, prior: Tensor, dim: int) -> None:
        super().__init__()
        if prior.ndim != 3:
            raise ValueError(f"prior must have shape (K, T, C), got {tuple(prior.shape)}")
        _check_dim("dim", dim, 2)
        K, T, C = prior.shape
        self.length, self.dim = T, dim
        self.register_buffer("prior", prior.permute(1, 0, 2).reshape(T, K * C).clone())  # (T, K C)
        self.proj = nn.Linear(K * C, dim)

    def forward(self, positions: Tensor) -> Tensor:
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= self.length):
            raise ValueError(f"positions must lie in [0, T={self.length}), got shape {tuple(positions.shape)}")
        return sinusoidal_encoding(positions, self.dim) + self.proj(self.prior[positions])  # (..., dim)


class ClassPriorBias(PositionPart):
    """Prior-enhanced attention, reconstructed after VSFormer (:cite:`xi2024vsformer`).

    ``bias[h, :, j] = gamma_h d(j)``: ``d`` (:func:`prior_discriminability`) is large where the class means
    differ, so a head with ``gamma_h > 0`` attends more to the time steps that tell classes apart. ``gamma`` is
    learned, starting at ``init_gamma``. Returns ``(H, 1, T_k)``.
    """

    def __init__(self, num_heads: int, prior: Tensor, init_gamma: float = 1.0) -> None:
        super().__init__()
        _check_dim("num_heads", num_heads)
        self.num_heads = num_heads
        self.register_buffer("score", prior_discriminability(prior))  # (T,)
        self.gamma = nn.Parameter(torch.full((num_heads,), float(init_gamma)))

    def bias(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        _check_heads("ClassPriorBias", q, self.num_heads)
        T = self.score.shape[0]
        if k_pos.numel() and (int(k_pos.min()) < 0 or int(k_pos.max()) >= T):  # a negative index would wrap round
            raise ValueError(
                f"ClassPriorBias: k_pos must lie in [0, T={T}), got range [{int(k_pos.min())}, {int(k_pos.max())}]"
            )
        return (self.gamma[:, None, None] * self.score[k_pos][None, None, :]).to(q.dtype)  # (H, 1, T_k)

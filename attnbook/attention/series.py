"""Attention for time series and markets: VSFormer and Stockformer (chapter 20).

Two papers, two ways of telling attention what a series *is* before it attends.

**VSFormer** (*Value and Shape-Aware Transformer with Prior-Enhanced Self-Attention for Multivariate Time Series
Classification*, Xi et al., 2024, :cite:`xi2024vsformer`). A series ``x (B, C, T)`` of ``C`` variables becomes two
kinds of tokens: *shape tokens*, one per class-specific motif ``s`` (of its variable ``c_s`` and its class
``\\kappa_s``), whose features are how well and where the motif matches (:func:`shape_features`: the smallest
z-normalised distance over sliding windows, and the matching position); and *value tokens*, one per variable and
interval, whose features are raw statistics (:func:`value_features`: mean, standard deviation, minimum, maximum).
Each token's encoding adds embeddings of its variable, its position and its *class prior* (the class a motif was
found in; value tokens carry the extra label ``K``). Prior-enhanced attention adds a bias that depends on the two
tokens' class priors:

.. math::
    A = \\operatorname{softmax}\\!\\left(\\frac{QK^\\top}{\\sqrt d} + P\\right),
    \\qquad P_{ij} = \\Pi[\\kappa_i, \\kappa_j],

with a learned table ``\\Pi (H, K + 1, K + 1)`` (:func:`prior_bias`, :func:`prior_enhanced_attention`). The paper
is known to the book from its abstract and reviews only: motif discovery (:func:`discover_shapes`), the exact
features and the form of ``P`` are reconstructions (chapter 20 says which).

**Stockformer** (*Stockformer: A Price-Volume Factor Stock Selection Model Based on Wavelet Transform and
Multi-Task Self-Attention Networks*, Ma et al., 2023, :cite:`ma2023stockformer`), built from its code
(``Stockformermodel/Multitask_Stockformer_models.py`` of ``Eric991005/Multitask-Stockformer``). A window of returns
``x (B, T, N)`` (``T`` days, ``N`` stocks) is split by a discrete wavelet transform into a low-frequency and a
high-frequency band (:func:`wavelet_split`; the code uses ``sym2`` = ``db2`` at one level). The low band goes
through causal temporal attention, the high band through a dilated causal convolution; each then attends across
the ``N`` stocks of its day with *sparse spatial attention* (:func:`sparse_spatial_attention`: the code's "copy",
or top-``k``); the two bands meet in a causal cross-attention whose queries come from the low band and whose keys
and values are ``ReLU`` projections of the high band (:class:`DualFrequencyFusion`); a multi-task head predicts the
next return and its direction (:class:`MultiTaskHead`, :func:`multitask_loss`).

The wavelet transform (:func:`dwt`, :func:`idwt`, :func:`wavedec`, :func:`waverec`) is implemented in torch with
periodic extension; it equals PyWavelets' ``mode="periodization"`` (``tests/test_series.py``).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.functional import scaled_dot_product_attention

__all__ = [
    "WAVELETS",
    "wavelet_filters",
    "dwt",
    "idwt",
    "wavedec",
    "waverec",
    "wavelet_split",
    "sparse_spatial_attention",
    "SparseSpatialAttention",
    "CausalTemporalAttention",
    "DilatedCausalConv",
    "DualFrequencyFusion",
    "MultiTaskHead",
    "multitask_loss",
    "Stockformer",
    "value_features",
    "shape_features",
    "discover_shapes",
    "Shapes",
    "prior_bias",
    "prior_enhanced_attention",
    "PriorEnhancedAttention",
    "VSFormer",
]

WAVELETS = ("haar", "db2", "sym2")
SpatialMode = Literal["copy", "topk", "full", "none"]


# ----------------------------------------------------------------------------------------------------------------
# The discrete wavelet transform (periodic extension)
# ----------------------------------------------------------------------------------------------------------------


def wavelet_filters(wavelet: str, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The decomposition filters ``(dec_lo, dec_hi)`` of an orthogonal wavelet, in PyWavelets' order.

    ``"haar"``: ``(1, 1)/sqrt 2``. ``"db2"`` (Daubechies, two vanishing moments; ``"sym2"`` is the same filter):
    the reconstruction low-pass is ``((1+sqrt 3), (3+sqrt 3), (3-sqrt 3), (1-sqrt 3)) / (4 sqrt 2)``; the
    decomposition low-pass is its reverse and the high-pass its quadrature mirror,
    ``dec_hi[n] = (-1)^(n+1) rec_lo[n]``.
    """
    if wavelet == "haar":
        rec_lo = torch.tensor([1.0, 1.0], dtype=torch.float64) / math.sqrt(2)
    elif wavelet in ("db2", "sym2"):
        r3 = math.sqrt(3)
        rec_lo = torch.tensor([1 + r3, 3 + r3, 3 - r3, 1 - r3], dtype=torch.float64) / (4 * math.sqrt(2))
    else:
        raise ValueError(f"wavelet_filters: wavelet must be one of {WAVELETS}, got {wavelet!r}")
    sign = torch.tensor([(-1.0) ** (n + 1) for n in range(len(rec_lo))], dtype=torch.float64)
    return rec_lo.flip(0).to(dtype), (sign * rec_lo).to(dtype)


def _check_series(x: object, name: str, where: str) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] < 2 or x.shape[-1] % 2:
        raise ValueError(f"{where}: {name} must have an even length >= 2 in its last dim, got {tuple(x.shape)}")
    return x


def _filters_as_kernel(wavelet: str, x: Tensor) -> tuple[Tensor, int]:
    lo, hi = wavelet_filters(wavelet, x.dtype)
    kernel = torch.stack([lo.flip(0), hi.flip(0)])[:, None].to(x.device)  # (2, 1, L): cross-correlation form
    return kernel, len(lo) // 2 - 1  # the periodic padding on each side


def dwt(x: Tensor, wavelet: str = "haar") -> tuple[Tensor, Tensor]:
    """One level of the discrete wavelet transform along the last dim, periodic extension.

    ``cA[k] = sum_n dec_lo[n] x[(2k + L/2 - n) mod T]`` and the same with ``dec_hi`` for ``cD``: ``x (..., T)``
    with ``T`` even -> ``(cA, cD)``, each ``(..., T/2)``. Equals ``pywt.dwt(x, wavelet, mode="periodization")``.
    The transform is orthogonal: ``|cA|^2 + |cD|^2 = |x|^2``.
    """
    _check_series(x, "x", "dwt")
    kernel, pad = _filters_as_kernel(wavelet, x)
    n = x.shape[-1]
    index = (torch.arange(n + 2 * pad, device=x.device) - pad) % n  # periodic extension by L/2 - 1 each side
    flat = x.reshape(-1, 1, n)[..., index]  # (M, 1, T + 2 pad)
    coeffs = F.conv1d(flat, kernel, stride=2)  # (M, 2, T/2)
    shape = (*x.shape[:-1], n // 2)
    return coeffs[:, 0].reshape(shape), coeffs[:, 1].reshape(shape)


def idwt(approx: Tensor, detail: Tensor, wavelet: str = "haar") -> Tensor:
    """The inverse of :func:`dwt`: ``(cA, cD)`` each ``(..., T/2)`` -> ``x (..., T)``.

    :func:`dwt` is an orthogonal matrix, so its inverse is its transpose: a transposed strided convolution, then the
    periodic extension folded back (the adjoint of the gather in :func:`dwt`).
    """
    for name, t in (("approx", approx), ("detail", detail)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"idwt: {name} must be a floating torch.Tensor, got {type(t).__name__}")
    if approx.shape != detail.shape or approx.ndim < 1:
        raise ValueError(
            f"idwt: approx and detail must share a shape, got {tuple(approx.shape)}, {tuple(detail.shape)}"
        )
    kernel, pad = _filters_as_kernel(wavelet, approx)
    half = approx.shape[-1]
    n = 2 * half
    coeffs = torch.stack([approx.reshape(-1, half), detail.reshape(-1, half)], dim=1)  # (M, 2, T/2)
    extended = F.conv_transpose1d(coeffs, kernel, stride=2)[:, 0]  # (M, T + 2 pad)
    index = (torch.arange(n + 2 * pad, device=approx.device) - pad) % n
    out = extended.new_zeros(extended.shape[0], n).index_add_(1, index, extended)  # fold the extension back
    return out.reshape(*approx.shape[:-1], n)


def _check_level(level: int, n: int, where: str) -> None:
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise ValueError(f"{where}: level must be a positive int, got {level!r}")
    if n % (2**level):
        raise ValueError(f"{where}: the length {n} must be divisible by 2**level = {2**level} (level={level})")


def wavedec(x: Tensor, wavelet: str = "haar", level: int = 1) -> list[Tensor]:
    """Multilevel decomposition ``[cA_level, cD_level, ..., cD_1]``, as ``pywt.wavedec(..., mode="periodization")``."""
    _check_series(x, "x", "wavedec")
    _check_level(level, x.shape[-1], "wavedec")
    details = []
    approx = x
    for _ in range(level):
        approx, detail = dwt(approx, wavelet)
        details.append(detail)
    return [approx, *details[::-1]]


def waverec(coeffs: list[Tensor], wavelet: str = "haar") -> Tensor:
    """The inverse of :func:`wavedec`."""
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) < 2:
        raise ValueError(f"waverec: coeffs must be a list [cA, cD_level, ..., cD_1] of >= 2 tensors, got {coeffs!r}")
    approx = coeffs[0]
    for detail in coeffs[1:]:
        approx = idwt(approx, detail, wavelet)
    return approx


def wavelet_split(x: Tensor, wavelet: str = "db2", level: int = 1, dim: int = -1) -> tuple[Tensor, Tensor]:
    """Split ``x`` along ``dim`` into a low- and a high-frequency band with ``low + high = x``.

    ``low`` is the reconstruction from the level-``level`` approximation alone (all details set to zero),
    ``high`` the reconstruction from the details alone, as in Stockformer's ``disentangle``. Both have ``x``'s shape.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"wavelet_split: x must be a torch.Tensor, got {type(x).__name__}")
    moved = x.movedim(dim, -1)
    coeffs = wavedec(moved, wavelet, level)
    low = waverec([coeffs[0], *(torch.zeros_like(c) for c in coeffs[1:])], wavelet)
    high = waverec([torch.zeros_like(coeffs[0]), *coeffs[1:]], wavelet)
    return low.movedim(-1, dim), high.movedim(-1, dim)


# ----------------------------------------------------------------------------------------------------------------
# Stockformer
# ----------------------------------------------------------------------------------------------------------------


def sparse_spatial_attention(
    q: Tensor, k: Tensor, v: Tensor, mode: SpatialMode = "copy", top_k: int | None = None
) -> Tensor:
    """Attention across the ``N`` stocks of one day: ``q, k (..., N, d)``, ``v (..., N, d_v)`` -> ``(..., N, d_v)``.

    ``A = softmax(q k^T / sqrt d)`` over the stocks. ``mode="full"`` returns ``A v``; ``"copy"`` is Stockformer's
    code: stock ``n`` takes row ``c(n)`` of ``A v``, where ``c(n) = argmax_i A[i, n]`` is the query that attends
    most to ``n``; ``"topk"`` keeps each query's ``top_k`` largest scores and renormalises over them.
    """
    where = "sparse_spatial_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{where}: {name} must be a floating torch.Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise ValueError(f"{where}: {name} must have shape (..., N, d), got {tuple(t.shape)}")
    if q.shape != k.shape or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(
            f"{where}: q and k must share a shape (..., N, d) and v be (..., N, d_v), "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if mode not in ("copy", "topk", "full"):
        raise ValueError(f"{where}: mode must be 'copy', 'topk' or 'full', got {mode!r}")
    n = q.shape[-2]
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (..., N, N)
    if mode == "topk":
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= n:
            raise ValueError(f"{where}: top_k must be an int in [1, N={n}] for mode='topk', got {top_k!r}")
        threshold = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., N, 1): the k-th largest score
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    weights = logits.softmax(dim=-1)
    out = weights @ v  # (..., N, d_v)
    if mode != "copy":
        return out
    source = weights.argmax(dim=-2)  # (..., N): the query that attends most to each stock
    return out.gather(-2, source[..., None].expand(*source.shape, v.shape[-1]))


class SparseSpatialAttention(nn.Module):
    """Stockformer's spatial block on ``x (B, T, N, D)``: attention across stocks at each day, residual, LayerNorm, MLP.

    As in the code's ``sparseSpatialAttention``: ``x' = x + G`` (a learned stock embedding ``G (N, D)``), ``q, k, v``
    linear maps of ``x'``, output ``MLP(LN(W_o sparse_attention(q, k, v) + x'))``. ``mode="none"`` returns zeros
    (the block switched off; the caller adds its output residually).
    """

    def __init__(self, width: int, num_stocks: int, mode: SpatialMode = "copy", top_k: int | None = None):
        super().__init__()
        if mode not in ("copy", "topk", "full", "none"):
            raise ValueError(f"SparseSpatialAttention: mode must be 'copy', 'topk', 'full' or 'none', got {mode!r}")
        self.mode, self.top_k = mode, top_k
        self.stock_embedding = nn.Parameter(torch.randn(num_stocks, width) * 0.02)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x: Tensor) -> Tensor:  # (B, T, N, D)
        if self.mode == "none":
            return torch.zeros_like(x)
        if x.ndim != 4 or x.shape[-2:] != self.stock_embedding.shape:
            raise ValueError(
                f"SparseSpatialAttention: x must be (B, T, N, D) with (N, D) = {tuple(self.stock_embedding.shape)}, "
                f"got {tuple(x.shape)}"
            )
        x = x + self.stock_embedding
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (B, T, N, D)
        attended = sparse_spatial_attention(q, k, v, self.mode, self.top_k)  # (B, T, N, D)
        return self.mlp(self.norm(self.out(attended) + x))


class CausalTemporalAttention(nn.Module):
    """Single-head causal self-attention along the days of each stock, ``x (B, T, N, D)`` -> ``(B, T, N, D)``.

    The code's ``temporalAttention``: a learned day embedding is added, day ``t`` sees days ``<= t``, then
    ``LN(W_o A v + x)`` and a residual MLP.
    """

    def __init__(self, width: int, max_days: int):
        super().__init__()
        self.day_embedding = nn.Parameter(torch.randn(max_days, 1, width) * 0.02)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x: Tensor) -> Tensor:
        days = x.shape[1]
        if days > self.day_embedding.shape[0]:
            raise ValueError(f"CausalTemporalAttention: T={days} days exceeds max_days={self.day_embedding.shape[0]}")
        x = x + self.day_embedding[:days]
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))  # each (B, N, T, D): days are tokens
        attended = scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)  # (B, T, N, D)
        h = self.norm(self.out(attended) + x)
        return h + self.mlp(h)


class DilatedCausalConv(nn.Module):
    """The code's high-band ``temporalConvNet``: a causal convolution over days (kernel 2, dilation 1), ReLU."""

    def __init__(self, width: int, kernel_size: int = 2, dilation: int = 1):
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(width, width, kernel_size, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, N, D)
        b, t, n, d = x.shape
        seq = x.permute(0, 2, 3, 1).reshape(b * n, d, t)  # (B N, D, T)
        out = F.relu(self.conv(F.pad(seq, (self.pad, 0))))  # left padding only: day t sees days <= t
        return out.reshape(b, n, d, t).permute(0, 3, 1, 2)


class DualFrequencyFusion(nn.Module):
    """Causal cross-attention from the low band to the high band, ``(x_low, x_high) (B, T, N, D)`` -> ``(B, T, N, D)``.

    The code's ``adaptiveFusion``: ``Q = W_q x_low``, ``K = ReLU(W_k x_high)``, ``V = ReLU(W_v x_high)``, day ``t``
    sees days ``<= t``; output ``LN(W_o A V + x_low)`` and a residual MLP.
    """

    def __init__(self, width: int):
        super().__init__()
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x_low: Tensor, x_high: Tensor) -> Tensor:
        if x_low.shape != x_high.shape or x_low.ndim != 4:
            raise ValueError(
                f"DualFrequencyFusion: x_low and x_high must share a shape (B, T, N, D), "
                f"got {tuple(x_low.shape)}, {tuple(x_high.shape)}"
            )
        q = self.q(x_low).transpose(1, 2)  # (B, N, T, D)
        k, v = (F.relu(t).transpose(1, 2) for t in self.kv(x_high).chunk(2, dim=-1))
        attended = scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)  # (B, T, N, D)
        h = self.norm(self.out(attended) + x_low)
        return h + self.mlp(h)


class MultiTaskHead(nn.Module):
    """Two heads on one state ``(..., D)``: the next return ``(...)`` and up/down logits ``(..., 2)``."""

    def __init__(self, width: int):
        super().__init__()
        self.regress = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))
        self.classify = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.regress(h).squeeze(-1), self.classify(h)


def multitask_loss(
    predicted_return: Tensor, direction_logits: Tensor, target_return: Tensor, class_weight: float = 1.0
) -> Tensor:
    """``MAE(predicted, target) + class_weight * CE(logits, target > 0)``: Stockformer's two losses, summed.

    ``predicted_return``, ``target_return (...)``, ``direction_logits (..., 2)``; class 1 means "up".
    """
    if predicted_return.shape != target_return.shape or direction_logits.shape != (*target_return.shape, 2):
        raise ValueError(
            "multitask_loss: predicted_return and target_return must share a shape S and direction_logits be "
            f"(*S, 2), got {tuple(predicted_return.shape)}, {tuple(target_return.shape)}, "
            f"{tuple(direction_logits.shape)}"
        )
    up = (target_return > 0).long()
    ce = F.cross_entropy(direction_logits.reshape(-1, 2), up.reshape(-1))
    return (predicted_return - target_return).abs().mean() + class_weight * ce


class Stockformer(nn.Module):
    """A small Stockformer: ``returns (B, T, N)`` -> ``(next return (B, N), direction logits (B, N, 2))``.

    ``wavelet=None`` switches the split off (both streams get the raw returns); ``spatial="none"`` switches the
    spatial blocks off. The state of the last day after the fusion feeds the multi-task head.
    """

    def __init__(
        self,
        num_stocks: int,
        days: int,
        width: int = 16,
        num_layers: int = 1,
        wavelet: str | None = "db2",
        level: int = 1,
        spatial: SpatialMode = "copy",
        top_k: int | None = None,
    ):
        super().__init__()
        if wavelet is not None:
            wavelet_filters(wavelet)  # validates the name
            _check_level(level, days, "Stockformer")
        self.wavelet, self.level = wavelet, level
        self.embed_low, self.embed_high = nn.Linear(1, width), nn.Linear(1, width)
        self.temporal = nn.ModuleList(CausalTemporalAttention(width, days) for _ in range(num_layers))
        self.conv = nn.ModuleList(DilatedCausalConv(width, dilation=2**i) for i in range(num_layers))
        self.spatial_low = nn.ModuleList(
            SparseSpatialAttention(width, num_stocks, spatial, top_k) for _ in range(num_layers)
        )
        self.spatial_high = nn.ModuleList(
            SparseSpatialAttention(width, num_stocks, spatial, top_k) for _ in range(num_layers)
        )
        self.fusion = DualFrequencyFusion(width)
        self.head = MultiTaskHead(width)

    def forward(self, returns: Tensor) -> tuple[Tensor, Tensor]:
        if returns.ndim != 3:
            raise ValueError(f"Stockformer: returns must be (B, T, N), got {tuple(returns.shape)}")
        if self.wavelet is None:
            low, high = returns, returns
        else:
            low, high = wavelet_split(returns, self.wavelet, self.level, dim=1)  # along the days
        x_low, x_high = self.embed_low(low[..., None]), self.embed_high(high[..., None])  # (B, T, N, D)
        for temporal, conv, s_low, s_high in zip(
            self.temporal, self.conv, self.spatial_low, self.spatial_high, strict=True
        ):
            x_low, x_high = temporal(x_low), conv(x_high)
            x_low, x_high = x_low + s_low(x_low), x_high + s_high(x_high)
        fused = self.fusion(x_low, x_high)  # (B, T, N, D)
        return self.head(fused[:, -1])  # the last day: (B, N), (B, N, 2)


# ----------------------------------------------------------------------------------------------------------------
# VSFormer
# ----------------------------------------------------------------------------------------------------------------


def value_features(x: Tensor, num_intervals: int) -> Tensor:
    """Raw statistics per variable and interval: ``x (B, C, T)`` -> ``(B, C, num_intervals, 4)``.

    The ``T`` steps are cut into ``num_intervals`` equal intervals; the features are mean, standard deviation
    (population), minimum and maximum of each.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 3:
        raise ValueError(f"value_features: x must be a floating tensor (B, C, T), got {getattr(x, 'shape', x)!r}")
    if isinstance(num_intervals, bool) or not isinstance(num_intervals, int) or num_intervals < 1:
        raise ValueError(f"value_features: num_intervals must be a positive int, got {num_intervals!r}")
    if x.shape[-1] % num_intervals:
        raise ValueError(f"value_features: T={x.shape[-1]} must be divisible by num_intervals={num_intervals}")
    parts = x.reshape(*x.shape[:2], num_intervals, -1)  # (B, C, I, T/I)
    return torch.stack(
        [parts.mean(-1), parts.std(-1, correction=0), parts.amin(-1), parts.amax(-1)], dim=-1
    )  # (B, C, I, 4)


def _znorm(x: Tensor, eps: float = 1e-8) -> Tensor:
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True, correction=0) + eps)


def shape_features(x: Tensor, shapes: Tensor, shape_variables: Tensor) -> Tensor:
    """How well and where each shape matches: ``x (B, C, T)``, ``shapes (S, m)`` of variables ``(S,)`` -> ``(B, S, 2)``.

    Feature 0: the smallest z-normalised Euclidean distance, divided by ``sqrt m``, between shape ``s`` and the
    length-``m`` windows of its variable; feature 1: where that window starts, as a fraction of ``T - m``.
    """
    where = "shape_features"
    if not isinstance(x, Tensor) or x.ndim != 3:
        raise ValueError(f"{where}: x must be (B, C, T), got {getattr(x, 'shape', x)!r}")
    if not isinstance(shapes, Tensor) or shapes.ndim != 2:
        raise ValueError(f"{where}: shapes must be (S, m), got {getattr(shapes, 'shape', shapes)!r}")
    m = shapes.shape[-1]
    if not 2 <= m <= x.shape[-1]:
        raise ValueError(f"{where}: the shape length m={m} must be in [2, T={x.shape[-1]}]")
    if (
        shape_variables.shape != shapes.shape[:1]
        or (shape_variables < 0).any()
        or (shape_variables >= x.shape[1]).any()
    ):
        raise ValueError(
            f"{where}: shape_variables must be (S,) = {tuple(shapes.shape[:1])} with values in [0, C={x.shape[1]}), "
            f"got shape {tuple(shape_variables.shape)}"
        )
    windows = _znorm(x.unfold(-1, m, 1))  # (B, C, W, m): every window, z-normalised
    corr = torch.einsum("bcwm,sm->bcsw", windows, _znorm(shapes)) / m  # (B, C, S, W): Pearson correlations
    corr = corr[:, shape_variables, torch.arange(len(shapes), device=x.device)]  # (B, S, W): each shape's variable
    # |a - b|^2 = 2m (1 - corr) for z-normalised a, b (population std), so the scaled distance is sqrt(2 - 2 corr)
    dist = (2 - 2 * corr).clamp(min=0).sqrt()
    best, where_best = dist.min(dim=-1)
    span = max(x.shape[-1] - m, 1)
    return torch.stack([best, where_best.to(x.dtype) / span], dim=-1)


class Shapes(NamedTuple):
    """Discovered motifs: ``shapes (S, m)``, their ``variables (S,)`` and ``classes (S,)``."""

    shapes: Tensor
    variables: Tensor
    classes: Tensor


def discover_shapes(x: Tensor, labels: Tensor, length: int, per_class: int = 1, stride: int = 4) -> Shapes:
    """Class-specific motifs, ``per_class`` per (class, variable), from series ``x (B, C, T)`` and ``labels (B,)``.

    Candidates are the length-``length`` windows (every ``stride`` steps) of the class's series; a candidate's score
    is how much closer it matches the other series of its class than the series of the other classes (mean of
    :func:`shape_features`' distance over the other classes minus over its class). The best ``per_class``
    candidates of each (class, variable) are kept. A reconstruction: VSFormer finds motifs with the matrix profile
    (STOMP) on the class's concatenated series.
    """
    if not isinstance(x, Tensor) or x.ndim != 3 or not isinstance(labels, Tensor) or labels.shape != x.shape[:1]:
        raise ValueError(
            f"discover_shapes: x must be (B, C, T) and labels (B,), got {getattr(x, 'shape', x)!r}, "
            f"{getattr(labels, 'shape', labels)!r}"
        )
    classes = labels.unique().tolist()
    found, variables, kinds = [], [], []
    for var in range(x.shape[1]):
        for cls in classes:
            own = labels == cls
            candidates = x[own, var].unfold(-1, length, stride).reshape(-1, length)  # (n_cand, m)
            cand_vars = torch.full((len(candidates),), var, dtype=torch.long)
            dist = shape_features(x, candidates, cand_vars)[..., 0]  # (B, n_cand)
            score = dist[~own].mean(0) - dist[own].mean(0)
            for index in score.topk(per_class).indices.tolist():
                found.append(candidates[index])
                variables.append(var)
                kinds.append(cls)
    return Shapes(torch.stack(found), torch.tensor(variables), torch.tensor(kinds))


def prior_bias(token_classes: Tensor, table: Tensor) -> Tensor:
    """The prior bias ``P[h, i, j] = table[h, kappa_i, kappa_j]``, ``(H, T, T)``.

    ``token_classes (T,)`` holds each token's class prior in ``[0, K]``; ``table`` is ``(H, K + 1, K + 1)``.
    """
    if table.ndim != 3 or table.shape[1] != table.shape[2]:
        raise ValueError(f"prior_bias: table must be (H, K+1, K+1), got {tuple(table.shape)}")
    if token_classes.ndim != 1 or token_classes.min() < 0 or token_classes.max() >= table.shape[1]:
        raise ValueError(
            f"prior_bias: token_classes must be (T,) with values in [0, {table.shape[1]}), got shape "
            f"{tuple(token_classes.shape)}"
        )
    return table[:, token_classes][:, :, token_classes]


def prior_enhanced_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
    """``softmax(q k^T / sqrt d + P) v`` with ``P`` broadcastable to ``(..., T_q, T_k)`` (``None``: no prior)."""
    if bias is not None and bias.dtype != q.dtype:
        raise TypeError(f"prior_enhanced_attention: bias must have q's dtype {q.dtype}, got {bias.dtype}")
    return scaled_dot_product_attention(q, k, v, bias)


class PriorEnhancedAttention(nn.Module):
    """Multi-head self-attention with the class-prior bias ``P = Pi[kappa_i, kappa_j]`` (a learned table per head)."""

    def __init__(self, width: int, num_heads: int, num_priors: int, use_prior: bool = True):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"PriorEnhancedAttention: width={width} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.table = nn.Parameter(torch.zeros(num_heads, num_priors, num_priors)) if use_prior else None

    def forward(self, x: Tensor, token_classes: Tensor) -> Tensor:  # (B, T, D), (T,)
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = None if self.table is None else prior_bias(token_classes, self.table).to(x.dtype)  # (H, T, T)
        out = prior_enhanced_attention(q, k, v, bias)  # (B, H, T, d)
        return self.out(out.transpose(1, 2).reshape(b, t, d))


class VSFormer(nn.Module):
    """A small VSFormer classifier over shape and value tokens.

    Inputs: ``shape_feats (B, S, 2)`` from :func:`shape_features` and ``value_feats (B, C, I, 4)`` from
    :func:`value_features`. Encoding (the time-series-information encoding): a linear map of the features plus
    embeddings of the token's variable, its class prior (the motif's class, or ``K`` for value tokens) and, for
    value tokens, its interval. ``use_shape``/``use_value`` drop a kind of token; ``use_prior`` switches off both
    the prior embedding and the attention bias.
    """

    def __init__(
        self,
        shapes: Shapes,
        num_variables: int,
        num_classes: int,
        num_intervals: int,
        width: int = 32,
        num_heads: int = 2,
        num_layers: int = 2,
        use_shape: bool = True,
        use_value: bool = True,
        use_prior: bool = True,
    ):
        super().__init__()
        if not (use_shape or use_value):
            raise ValueError("VSFormer: at least one of use_shape and use_value must be True")
        self.use_shape, self.use_value, self.use_prior = use_shape, use_value, use_prior
        self.register_buffer("shape_variables", shapes.variables.clone())
        self.register_buffer("shape_classes", shapes.classes.clone())
        self.num_classes, self.num_intervals = num_classes, num_intervals
        self.shape_in, self.value_in = nn.Linear(2, width), nn.Linear(4, width)
        self.variable = nn.Embedding(num_variables, width)
        self.prior = nn.Embedding(num_classes + 1, width)
        self.interval = nn.Embedding(num_intervals, width)
        self.attn = nn.ModuleList(
            PriorEnhancedAttention(width, num_heads, num_classes + 1, use_prior) for _ in range(num_layers)
        )
        self.norm1 = nn.ModuleList(nn.LayerNorm(width) for _ in range(num_layers))
        self.norm2 = nn.ModuleList(nn.LayerNorm(width) for _ in range(num_layers))
        self.mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
            for _ in range(num_layers)
        )
        self.head = nn.Linear(width, num_classes)

    def tokens(self, shape_feats: Tensor, value_feats: Tensor) -> tuple[Tensor, Tensor]:
        """The encoded tokens ``(B, T, D)`` and their class priors ``(T,)``."""
        parts, priors = [], []
        if self.use_shape:
            x = self.shape_in(shape_feats) + self.variable(self.shape_variables)  # (B, S, D)
            if self.use_prior:
                x = x + self.prior(self.shape_classes)
            parts.append(x)
            priors.append(self.shape_classes)
        if self.use_value:
            b, c, i, _ = value_feats.shape
            var = torch.arange(c, device=value_feats.device).repeat_interleave(i)  # (C I,)
            ivl = torch.arange(i, device=value_feats.device).repeat(c)
            x = self.value_in(value_feats.reshape(b, c * i, 4)) + self.variable(var) + self.interval(ivl)
            value_prior = torch.full((c * i,), self.num_classes, device=value_feats.device)
            if self.use_prior:
                x = x + self.prior(value_prior)
            parts.append(x)
            priors.append(value_prior)
        return torch.cat(parts, dim=1), torch.cat(priors)

    def forward(self, shape_feats: Tensor, value_feats: Tensor) -> Tensor:
        x, priors = self.tokens(shape_feats, value_feats)
        for attn, n1, n2, mlp in zip(self.attn, self.norm1, self.norm2, self.mlp, strict=True):
            x = x + attn(n1(x), priors)
            x = x + mlp(n2(x))
        return self.head(x.mean(dim=1))  # (B, num_classes)

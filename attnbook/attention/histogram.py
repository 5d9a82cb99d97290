"""Histogram self-attention: pixels sorted by intensity into bins, attention between bins (chapter 10).

Paper: *Restoring Images in Adverse Weather Conditions via Histogram Transformer* (Sun et al., ECCV 2024,
:cite:`sun2024restoring`); built from its code, ``Attention_histogram`` in ``basicsr/models/archs/histoformer_arch.py``
of ``sunshangquan/Histoformer``.

Routing (:mod:`~attnbook.attention.routing`) clusters tokens by learned centroids; Histoformer groups pixels by
*value*: per channel, the ``T`` pixels (rows x columns) are sorted by the value map ``v``, and the sorted sequence
is cut into ``num_bins`` bins, either contiguous runs of similar intensity ("bin-wise", ``layout="bin"``) or strided
samples across the whole range ("frequency-wise", ``layout="frequency"``). As in Restormer and XCiT the attention is
*transposed*: its tokens are the (channel, bin) pairs of a head, ``d * num_bins`` of them (``d = D / H`` channels
per head), and their features are the ``T / num_bins`` sorted pixels of the bin, L2-normalised:

.. math::
    A = \\operatorname{softmax}_1(\\tau\\, \\hat Q \\hat K^\\top), \\qquad
    \\operatorname{softmax}_1(z)_j = \\frac{e^{z_j}}{1 + \\sum_l e^{z_l}}, \\qquad O = A V

(the code's ``softmax_1`` lets a row give less than total weight). The cost is ``O(d^2 num_bins T)`` per head:
*linear* in the number of pixels. Two such attentions (bin-wise with ``q1, k1``, frequency-wise with ``q2, k2``,
both on the same sorted ``v``) are unsorted and multiplied elementwise.

Shapes: the functions take ``(B, D, T)`` maps (channels first, pixels flattened); the module takes images
``(B, D, rows, columns)`` (``H`` is the number of heads, as everywhere in the book).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "softmax_one",
    "binned_attention",
    "histogram_attention",
    "sort_rows_then_columns",
    "unsort_rows_then_columns",
    "HistogramSelfAttention",
]

Layout = Literal["bin", "frequency"]
NormalizerName = Literal["softmax_one", "softmax"]


def softmax_one(x: Tensor, dim: int = -1) -> Tensor:
    """``exp(x_j) / (1 + sum_l exp(x_l))`` along ``dim``, computed stably (shifted by ``max(0, max_l x_l)``)."""
    shift = x.detach().amax(dim=dim, keepdim=True).clamp(min=0)
    e = torch.exp(x - shift)
    return e / (torch.exp(-shift) + e.sum(dim=dim, keepdim=True))


def _check_map(name: str, t: object, where: str) -> Tensor:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating torch.Tensor, got {type(t).__name__}")
    if t.ndim != 3:
        raise ValueError(f"{where}: {name} must have shape (B, D, T), got {tuple(t.shape)}")
    return t


def binned_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    num_heads: int,
    num_bins: int,
    *,
    layout: Layout = "bin",
    temperature: float | Tensor = 1.0,
    normalizer: NormalizerName = "softmax_one",
) -> Tensor:
    """Transposed attention between the (channel, bin) tokens of already-sorted maps ``(B, D, T)`` -> ``(B, D, T)``.

    ``T`` is zero-padded to a multiple of ``num_bins`` (zeros change neither the norms nor the dot products, so
    the padding is exact) and cut off again. ``layout="bin"``: bin ``b`` holds sorted positions
    ``b n .. (b+1) n - 1``; ``"frequency"``: positions ``b, b + num_bins, ...``. ``temperature`` is a number or a
    ``(num_heads, 1, 1)`` tensor (the module's learned one). ``normalizer="softmax"`` gives XCiT's cross-covariance
    attention when ``num_bins = 1``.
    """
    where = "binned_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_map(name, t, where)
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            f"{where}: q, k, v must share a shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    b, c, n_pix = q.shape
    for name, value in (("num_heads", num_heads), ("num_bins", num_bins)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    if c % num_heads:
        raise ValueError(f"{where}: channels C={c} must be divisible by num_heads={num_heads}")
    if layout not in ("bin", "frequency"):
        raise ValueError(f"{where}: layout must be 'bin' or 'frequency', got {layout!r}")
    if normalizer not in ("softmax_one", "softmax"):
        raise ValueError(f"{where}: normalizer must be 'softmax_one' or 'softmax', got {normalizer!r}")
    n = -(-n_pix // num_bins)  # pixels per bin after padding
    pad = n * num_bins - n_pix
    c_h = c // num_heads

    def tokens(x: Tensor) -> Tensor:
        x = F.pad(x, (0, pad))  # (B, D, num_bins * n)
        if layout == "bin":
            x = x.reshape(b, num_heads, c_h, num_bins, n)  # bin index outer: contiguous runs
        else:
            x = x.reshape(b, num_heads, c_h, n, num_bins).transpose(-1, -2)  # bin index inner: strided
        return x.reshape(b, num_heads, c_h * num_bins, n)  # (B, heads, c*bins tokens, n features)

    qt, kt, vt = F.normalize(tokens(q), dim=-1), F.normalize(tokens(k), dim=-1), tokens(v)
    logits = (qt @ kt.transpose(-1, -2)) * temperature  # (B, heads, c*bins, c*bins)
    weights = softmax_one(logits) if normalizer == "softmax_one" else logits.softmax(dim=-1)
    out = (weights @ vt).reshape(b, num_heads, c_h, num_bins, n)  # (B, heads, c, bins, n)
    if layout == "frequency":
        out = out.transpose(-1, -2)  # (B, heads, c, n, bins)
    return out.reshape(b, c, n * num_bins)[..., :n_pix]  # (B, D, T)


def histogram_attention(
    q1: Tensor,
    k1: Tensor,
    q2: Tensor,
    k2: Tensor,
    v: Tensor,
    num_heads: int,
    num_bins: int | None = None,
    *,
    temperature: float | Tensor = 1.0,
    normalizer: NormalizerName = "softmax_one",
) -> Tensor:
    """Dynamic-range histogram self-attention on ``(B, D, T)`` maps -> ``(B, D, T)``.

    Each channel's pixels are sorted by ``v``; ``q1, k1, q2, k2`` follow ``v``'s order. Bin-wise attention
    (``q1, k1``) and frequency-wise attention (``q2, k2``) run on the sorted maps, are unsorted, and multiplied.
    ``num_bins`` defaults to ``num_heads``, as in the reference code (which ties the two).
    """
    where = "histogram_attention"
    for name, t in (("q1", q1), ("k1", k1), ("q2", q2), ("k2", k2), ("v", v)):
        _check_map(name, t, where)
        if t.shape != v.shape:
            raise ValueError(f"{where}: {name} {tuple(t.shape)} must have the shape of v {tuple(v.shape)}")
    num_bins = num_heads if num_bins is None else num_bins
    v_sorted, order = v.sort(dim=-1)  # (B, D, T): each channel's pixels by increasing value
    q1, k1, q2, k2 = (t.gather(-1, order) for t in (q1, k1, q2, k2))
    options = {"temperature": temperature, "normalizer": normalizer}
    out1 = binned_attention(q1, k1, v_sorted, num_heads, num_bins, layout="bin", **options)
    out2 = binned_attention(q2, k2, v_sorted, num_heads, num_bins, layout="frequency", **options)
    inverse = order.argsort(dim=-1)  # sorted position of each original pixel
    return out1.gather(-1, inverse) * out2.gather(-1, inverse)


def sort_rows_then_columns(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sort ``x (B, D, rows, columns)`` down each column, then along each row; returns ``(sorted, idx_h, idx_w)``."""
    by_h, idx_h = x.sort(dim=-2)
    by_hw, idx_w = by_h.sort(dim=-1)
    return by_hw, idx_h, idx_w


def unsort_rows_then_columns(x: Tensor, idx_h: Tensor, idx_w: Tensor) -> Tensor:
    """Undo :func:`sort_rows_then_columns`: put every value back where it came from (rows first, then columns)."""
    x = torch.empty_like(x).scatter_(-1, idx_w, x)
    return torch.empty_like(x).scatter_(-2, idx_h, x)


class HistogramSelfAttention(nn.Module):
    """Histoformer's dynamic-range histogram self-attention block (DHSA) on images ``(B, D, rows, columns)``.

    ``1x1`` conv to five maps then a ``3x3`` depthwise conv (``q1, k1, q2, k2, v``); the first ``D // 2``
    channels of the input are sorted down the columns, then along the rows, beforehand and the matching output
    channels unsorted after the ``1x1`` output projection, as in the reference code (which sorts the input in
    place; this one does not).
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__()
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1 or dim % num_heads:
            raise ValueError(f"HistogramSelfAttention: dim={dim} must be divisible by num_heads={num_heads!r} >= 1")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 5, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 5, dim * 5, kernel_size=3, padding=1, groups=dim * 5, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.qkv.in_channels:
            raise ValueError(
                f"HistogramSelfAttention: x must be (B, {self.qkv.in_channels}, rows, columns), got {tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        half = c // 2
        sorted_half, idx_h, idx_w = sort_rows_then_columns(x[:, :half])
        x = torch.cat([sorted_half, x[:, half:]], dim=1)
        q1, k1, q2, k2, v = self.qkv_dwconv(self.qkv(x)).chunk(5, dim=1)  # five (B, C, H, W)
        maps = (t.reshape(b, c, h * w) for t in (q1, k1, q2, k2, v))
        out = histogram_attention(*maps, self.num_heads, temperature=self.temperature).reshape(b, c, h, w)
        out = self.project_out(out)
        return torch.cat([unsort_rows_then_columns(out[:, :half], idx_h, idx_w), out[:, half:]], dim=1)

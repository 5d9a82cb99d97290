"""Histogram self-attention (chapter 10): brute force per bin, the one-bin limit, timm's XCA, equivariance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention.histogram import (
    HistogramSelfAttention,
    binned_attention,
    histogram_attention,
    softmax_one,
    sort_rows_then_columns,
    unsort_rows_then_columns,
)

F64 = torch.float64


def maps(count, b=2, c=6, n=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, n, generator=gen, dtype=F64) for _ in range(count)]


def brute_binned(q, k, v, num_heads, num_bins, layout, temperature=1.0):
    """Loops over heads, (channel, bin) tokens and bin positions, straight from the definition."""
    b, c, n_pix = q.shape
    n = -(-n_pix // num_bins)
    c_h = c // num_heads
    out = torch.zeros_like(v)

    def positions(bin_index):
        if layout == "bin":
            return [bin_index * n + j for j in range(n)]
        return [j * num_bins + bin_index for j in range(n)]

    def feature(x, batch, channel, bin_index):  # the bin's n sorted pixels, zero where padded
        return torch.stack([x[batch, channel, p] if p < n_pix else x.new_zeros(()) for p in positions(bin_index)])

    for batch in range(b):
        for head in range(num_heads):
            toks = [(head * c_h + ch, bn) for ch in range(c_h) for bn in range(num_bins)]
            qs = torch.stack([F.normalize(feature(q, batch, ch, bn), dim=0) for ch, bn in toks])
            ks = torch.stack([F.normalize(feature(k, batch, ch, bn), dim=0) for ch, bn in toks])
            vs = torch.stack([feature(v, batch, ch, bn) for ch, bn in toks])
            weights = torch.exp(temperature * qs @ ks.T)
            weights = weights / (1 + weights.sum(-1, keepdim=True))
            result = weights @ vs
            for (ch, bn), row in zip(toks, result, strict=True):
                for j, p in enumerate(positions(bn)):
                    if p < n_pix:
                        out[batch, ch, p] = row[j]
    return out


@pytest.mark.parametrize("layout", ["bin", "frequency"])
@pytest.mark.parametrize(("num_heads", "num_bins", "n"), [(1, 1, 8), (2, 3, 12), (3, 4, 10), (2, 5, 7)])
def test_binned_matches_brute_force(layout, num_heads, num_bins, n):
    q, k, v = maps(3, n=n)
    want = brute_binned(q, k, v, num_heads, num_bins, layout, temperature=1.7)
    got = binned_attention(q, k, v, num_heads, num_bins, layout=layout, temperature=1.7)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_one_bin_is_full_channel_attention_on_the_sorted_maps():
    """With one bin, each branch is full transposed attention (all N pixels) on the maps sorted by v, unsorted."""
    q1, k1, q2, k2, v = maps(5, c=4, n=9)
    num_heads = 2
    order = v.argsort(dim=-1)  # each channel sorted by its own values
    full = []
    for q, k in ((q1, k1), (q2, k2)):
        qh, kh, vh = (t.gather(-1, order).reshape(2, num_heads, 2, 9) for t in (q, k, v))  # (B, heads, c, N)
        a = softmax_one(F.normalize(qh, dim=-1) @ F.normalize(kh, dim=-1).transpose(-1, -2))
        sorted_out = (a @ vh).reshape(2, 4, 9)
        full.append(torch.empty_like(sorted_out).scatter_(-1, order, sorted_out))  # back to pixel order
    got = histogram_attention(q1, k1, q2, k2, v, num_heads, num_bins=1)
    torch.testing.assert_close(got, full[0] * full[1], rtol=0, atol=1e-12)


def test_one_bin_softmax_equals_timm_xca():
    xcit = pytest.importorskip("timm.models.xcit")
    torch.manual_seed(0)
    ref = xcit.XCA(dim=8, num_heads=2, qkv_bias=True).double().eval()
    ref.fused_attn = False
    with torch.no_grad():
        ref.temperature.copy_(torch.tensor([0.7, 1.9], dtype=F64).view(2, 1, 1))
    x = torch.randn(2, 11, 8, dtype=F64)  # (B, N, C)
    q, k, v = (t.transpose(1, 2) for t in ref.qkv(x).chunk(3, dim=-1))  # (B, C, N) each
    mixed = binned_attention(q, k, v, 2, 1, temperature=ref.temperature, normalizer="softmax")
    torch.testing.assert_close(ref.proj(mixed.transpose(1, 2)), ref(x), rtol=0, atol=1e-12)


def test_equivariant_to_any_permutation_of_pixels():
    q1, k1, q2, k2, v = maps(5, c=6, n=13)
    perm = torch.randperm(13, generator=torch.Generator().manual_seed(2))
    out = histogram_attention(q1, k1, q2, k2, v, num_heads=3)
    permuted = histogram_attention(*(t[..., perm] for t in (q1, k1, q2, k2, v)), num_heads=3)
    torch.testing.assert_close(permuted, out[..., perm], rtol=0, atol=1e-12)


def test_softmax_one_is_stable_and_below_one():
    x = torch.tensor([[1000.0, 999.0], [-1000.0, -1000.0], [0.0, 0.0]], dtype=F64)
    y = softmax_one(x)
    assert torch.isfinite(y).all() and (y.sum(-1) <= 1).all() and y[1].sum() < 1e-300
    torch.testing.assert_close(y[2], torch.full((2,), 1 / 3, dtype=F64))
    torch.testing.assert_close(softmax_one(x[2:]), x[2:].exp() / (1 + x[2:].exp().sum(-1, keepdim=True)))


def test_sort_and_unsort_round_trip():
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(3), dtype=F64)
    s, idx_h, idx_w = sort_rows_then_columns(x)
    assert (s.diff(dim=-1) >= 0).all()
    torch.testing.assert_close(unsort_rows_then_columns(s, idx_h, idx_w), x, rtol=0, atol=0)


def test_module_shapes_gradients_and_no_mutation():
    torch.manual_seed(0)
    attn = HistogramSelfAttention(dim=8, num_heads=2).double()
    x = torch.randn(2, 8, 5, 6, dtype=F64, requires_grad=True)
    before = x.detach().clone()
    out = attn(x)
    assert out.shape == x.shape
    torch.testing.assert_close(x.detach(), before, rtol=0, atol=0)
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and attn.temperature.grad.abs().sum() > 0


def test_bad_input_raises():
    q, k, v = maps(3)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        binned_attention(q, k, v, 4, 2)
    with pytest.raises(ValueError, match="layout"):
        binned_attention(q, k, v, 2, 2, layout="rows")
    with pytest.raises(ValueError, match=r"\(B, D, T\)"):
        binned_attention(q[0], k[0], v[0], 2, 2)
    with pytest.raises(ValueError, match="num_bins"):
        binned_attention(q, k, v, 2, 0)
    with pytest.raises(ValueError, match="shape of v"):
        histogram_attention(q, k, q, k, v[..., :4], 2)
    with pytest.raises(ValueError, match="divisible"):
        HistogramSelfAttention(dim=6, num_heads=4)
    with pytest.raises(ValueError, match=r"\(B, 8, rows, columns\)"):
        HistogramSelfAttention(dim=8, num_heads=2)(torch.randn(1, 6, 4, 4))

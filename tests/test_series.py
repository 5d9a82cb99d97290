"""Chapter 20: the wavelet transform against PyWavelets and its definition, Stockformer's blocks and VSFormer's
tokens and prior-enhanced attention against brute-force loops, and the series generators."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention.series import (
    CausalTemporalAttention,
    DilatedCausalConv,
    DualFrequencyFusion,
    MultiTaskHead,
    PriorEnhancedAttention,
    Shapes,
    SparseSpatialAttention,
    Stockformer,
    VSFormer,
    discover_shapes,
    dwt,
    idwt,
    multitask_loss,
    prior_bias,
    prior_enhanced_attention,
    shape_features,
    sparse_spatial_attention,
    value_features,
    wavedec,
    wavelet_filters,
    wavelet_split,
    waverec,
)
from attnbook.data.series import shape_value_series, stock_windows, synthetic_stock_returns

F64 = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---------------------------------------------------------------------------------------------------------------
# The wavelet transform
# ---------------------------------------------------------------------------------------------------------------


def dwt_loop(x, wavelet):
    """The definition, one coefficient at a time: cA[k] = sum_n dec_lo[n] x[(2k + L/2 - n) mod T]."""
    lo, hi = wavelet_filters(wavelet)
    n, taps = len(x), len(lo)
    approx = [sum(lo[j] * x[(2 * k + taps // 2 - j) % n] for j in range(taps)) for k in range(n // 2)]
    detail = [sum(hi[j] * x[(2 * k + taps // 2 - j) % n] for j in range(taps)) for k in range(n // 2)]
    return torch.stack(approx), torch.stack(detail)


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_filters_are_orthogonal_wavelet_filters(wavelet):
    lo, hi = wavelet_filters(wavelet)
    taps = len(lo)
    assert abs(lo.sum().item() - math.sqrt(2)) < 1e-14 and abs(hi.sum().item()) < 1e-14  # low-pass, high-pass
    for shift in range(0, taps, 2):  # orthonormal to their even shifts, and to each other
        assert abs((lo[shift:] @ lo[: taps - shift]).item() - (shift == 0)) < 1e-14
        assert abs((hi[shift:] @ hi[: taps - shift]).item() - (shift == 0)) < 1e-14
        assert abs((lo[shift:] @ hi[: taps - shift]).item()) < 1e-14
    n = torch.arange(taps, dtype=F64)
    moments = 1 if wavelet == "haar" else 2  # vanishing moments of the high-pass filter
    for p in range(moments):
        assert abs((hi * n**p).sum().item()) < 1e-13


@pytest.mark.parametrize("wavelet", ["haar", "db2", "sym2"])
@pytest.mark.parametrize("length", [2, 4, 6, 16])
def test_dwt_matches_its_definition_and_inverts(wavelet, length):
    x = randn(length, seed=length)
    approx, detail = dwt(x, wavelet)
    ref_a, ref_d = dwt_loop(x, wavelet)
    torch.testing.assert_close(approx, ref_a, rtol=0, atol=1e-13)
    torch.testing.assert_close(detail, ref_d, rtol=0, atol=1e-13)
    torch.testing.assert_close(idwt(approx, detail, wavelet), x, rtol=0, atol=1e-13)
    assert abs((approx.square().sum() + detail.square().sum() - x.square().sum()).item()) < 1e-12  # orthogonal


def test_haar_is_pairwise_sums_and_differences():
    x = randn(3, 10)
    approx, detail = dwt(x, "haar")
    torch.testing.assert_close(approx, (x[..., 0::2] + x[..., 1::2]) / math.sqrt(2), rtol=0, atol=1e-15)
    torch.testing.assert_close(detail, (x[..., 0::2] - x[..., 1::2]) / math.sqrt(2), rtol=0, atol=1e-15)


@pytest.mark.parametrize("wavelet", ["haar", "db2", "sym2"])
def test_matches_pywavelets_periodization(wavelet):
    pywt = pytest.importorskip("pywt")
    x = randn(2, 3, 32, seed=1)
    approx, detail = dwt(x, wavelet)
    ref_a, ref_d = pywt.dwt(x.numpy(), wavelet, mode="periodization")
    tol = dict(rtol=0, atol=1e-11)  # PyWavelets' sym2 table differs from the closed-form db2 in the 13th digit
    torch.testing.assert_close(approx, torch.from_numpy(ref_a), **tol)
    torch.testing.assert_close(detail, torch.from_numpy(ref_d), **tol)
    torch.testing.assert_close(
        idwt(approx, detail, wavelet), torch.from_numpy(pywt.idwt(ref_a, ref_d, wavelet, mode="periodization")), **tol
    )
    coeffs = wavedec(x, wavelet, level=3)
    ref = pywt.wavedec(x.numpy(), wavelet, mode="periodization", level=3)
    assert len(coeffs) == len(ref) == 4
    for mine, theirs in zip(coeffs, ref, strict=True):
        torch.testing.assert_close(mine, torch.from_numpy(theirs), **tol)
    torch.testing.assert_close(waverec(coeffs, wavelet), x, rtol=0, atol=1e-12)
    # the split: the low band is PyWavelets' reconstruction from the approximation alone
    low, high = wavelet_split(x, wavelet, level=2)
    two_levels = pywt.wavedec(x.numpy(), wavelet, mode="periodization", level=2)
    zeroed = [two_levels[0], *(c * 0 for c in two_levels[1:])]
    torch.testing.assert_close(low, torch.from_numpy(pywt.waverec(zeroed, wavelet, mode="periodization")), **tol)
    torch.testing.assert_close(low + high, x, rtol=0, atol=1e-12)


def test_wavelet_split_properties():
    x = randn(4, 16, 3)
    low, high = wavelet_split(x, "db2", level=2, dim=1)
    torch.testing.assert_close(low + high, x, rtol=0, atol=1e-13)
    assert abs((low * high).sum().item()) < 1e-10  # orthogonal bands: the transform is orthogonal
    constant = torch.full((16,), 3.0, dtype=F64)
    lo_c, hi_c = wavelet_split(constant, "db2", level=2)
    torch.testing.assert_close(lo_c, constant, rtol=0, atol=1e-13)  # a constant is all low frequency
    assert hi_c.abs().max() < 1e-13
    alternating = torch.tensor([1.0, -1.0] * 8, dtype=F64)
    lo_a, _ = wavelet_split(alternating, "haar", level=1)
    assert lo_a.abs().max() < 1e-14  # the Nyquist frequency is all high frequency


def test_wavelet_bad_inputs():
    with pytest.raises(ValueError, match="wavelet must be one of"):
        wavelet_filters("db4")
    with pytest.raises(ValueError, match="even length"):
        dwt(randn(7), "haar")
    with pytest.raises(TypeError, match="floating"):
        dwt(torch.arange(8), "haar")
    with pytest.raises(ValueError, match="divisible by 2\\*\\*level"):
        wavedec(randn(12), "haar", level=3)
    with pytest.raises(ValueError, match="level must be a positive int"):
        wavelet_split(randn(8), "haar", level=0)
    with pytest.raises(ValueError, match="share a shape"):
        idwt(randn(4), randn(5), "haar")


# ---------------------------------------------------------------------------------------------------------------
# Stockformer
# ---------------------------------------------------------------------------------------------------------------


def spatial_loop(q, k, v, mode, top_k=None):
    """Loops over days and stocks, straight from the definitions (q, k, v: (days, N, d))."""
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    d = q.shape[-1]
    for day in range(q.shape[0]):
        scores = torch.stack(
            [torch.stack([q[day, i] @ k[day, j] / math.sqrt(d) for j in range(q.shape[1])]) for i in range(q.shape[1])]
        )  # (N, N)
        if mode == "topk":
            weights = torch.zeros_like(scores)
            for i in range(len(scores)):
                keep = scores[i].topk(top_k).indices
                weights[i, keep] = scores[i, keep].softmax(0)
        else:
            weights = scores.softmax(-1)
        attended = weights @ v[day]
        for n in range(q.shape[1]):
            source = int(weights[:, n].argmax()) if mode == "copy" else n
            out[day, n] = attended[source]
    return out


@pytest.mark.parametrize(("mode", "top_k"), [("full", None), ("copy", None), ("topk", 1), ("topk", 3), ("topk", 5)])
def test_sparse_spatial_attention_matches_loops(mode, top_k):
    q, k, v = randn(4, 5, 6, seed=1), randn(4, 5, 6, seed=2), randn(4, 5, 3, seed=3)
    got = sparse_spatial_attention(q, k, v, mode, top_k)
    torch.testing.assert_close(got, spatial_loop(q, k, v, mode, top_k), rtol=0, atol=1e-12)


def test_spatial_copy_is_the_codes_gather_and_limits():
    q, k, v = randn(2, 3, 6, 4, seed=4), randn(2, 3, 6, 4, seed=5), randn(2, 3, 6, 4, seed=6)
    b, t, n, _ = q.shape
    attn = (q @ k.transpose(-1, -2) / 2).softmax(-1)
    source = attn.argmax(dim=-2, keepdim=True).transpose(-2, -1)  # (B, T, N, 1), as in the official code
    code = (
        (attn @ v)
        .unsqueeze(-3)
        .expand(b, t, n, n, 4)[
            torch.arange(b)[:, None, None, None],
            torch.arange(t)[None, :, None, None],
            torch.arange(n)[None, None, :, None],
            source,
            :,
        ]
        .squeeze(-2)
    )
    torch.testing.assert_close(sparse_spatial_attention(q, k, v, "copy"), code, rtol=0, atol=1e-12)
    full = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(sparse_spatial_attention(q, k, v, "topk", top_k=n), full, rtol=0, atol=1e-12)
    torch.testing.assert_close(sparse_spatial_attention(q, k, v, "full"), full, rtol=0, atol=1e-12)
    # copy outputs are rows of the full output: every stock copies some stock's attended value
    rows = sparse_spatial_attention(q, k, v, "copy")
    gaps = (rows[..., :, None, :] - full[..., None, :, :]).abs().amax(-1).amin(-1)  # (B, T, N): nearest full row
    assert gaps.max() < 1e-12


def test_sparse_spatial_bad_inputs():
    q = randn(3, 4)
    with pytest.raises(ValueError, match="mode must be"):
        sparse_spatial_attention(q, q, q, "random")
    with pytest.raises(ValueError, match="top_k must be an int in \\[1, N=3\\]"):
        sparse_spatial_attention(q, q, q, "topk", top_k=4)
    with pytest.raises(ValueError, match="must share a shape"):
        sparse_spatial_attention(q, randn(2, 4), q)
    with pytest.raises(TypeError, match="floating"):
        sparse_spatial_attention(q, q, torch.ones(3, 4, dtype=torch.long))


def test_temporal_blocks_do_not_see_the_future():
    torch.manual_seed(0)
    x, y = randn(2, 8, 3, 6, seed=1), randn(2, 8, 3, 6, seed=2)
    changed_x, changed_y = x.clone(), y.clone()
    changed_x[:, 5:] += 10.0
    changed_y[:, 5:] -= 10.0
    temporal, conv, fusion = (
        CausalTemporalAttention(6, 8).double(),
        DilatedCausalConv(6, dilation=2).double(),
        DualFrequencyFusion(6).double(),
    )
    for before, after in (
        (temporal(x), temporal(changed_x)),
        (conv(x), conv(changed_x)),
        (fusion(x, y), fusion(changed_x, changed_y)),
    ):
        torch.testing.assert_close(before[:, :5], after[:, :5], rtol=0, atol=1e-12)
        assert (before[:, 5:] - after[:, 5:]).abs().max() > 1e-3


def test_fusion_matches_a_loop_over_days():
    torch.manual_seed(1)
    fusion = DualFrequencyFusion(4).double()
    low, high = randn(1, 5, 2, 4, seed=3), randn(1, 5, 2, 4, seed=4)
    q = fusion.q(low)
    k, v = (F.relu(t) for t in fusion.kv(high).chunk(2, dim=-1))
    expected = torch.zeros_like(low)
    for n in range(2):
        for t in range(5):
            weights = torch.stack([q[0, t, n] @ k[0, s, n] / 2 for s in range(t + 1)]).softmax(0)
            attended = sum(w * v[0, s, n] for s, w in enumerate(weights))
            h = fusion.norm(fusion.out(attended) + low[0, t, n])
            expected[0, t, n] = h + fusion.mlp(h)
    torch.testing.assert_close(fusion(low, high), expected, rtol=0, atol=1e-12)


def test_multitask_head_and_loss():
    torch.manual_seed(2)
    head = MultiTaskHead(8)
    h = torch.randn(3, 5, 8)
    ret, logits = head(h)
    assert ret.shape == (3, 5) and logits.shape == (3, 5, 2)
    target = torch.randn(3, 5)
    expected = (ret - target).abs().mean() + 0.5 * F.cross_entropy(logits.reshape(-1, 2), (target > 0).long().flatten())
    torch.testing.assert_close(multitask_loss(ret, logits, target, class_weight=0.5), expected)
    with pytest.raises(ValueError, match="direction_logits be"):
        multitask_loss(ret, logits[..., :1], target)


@pytest.mark.parametrize(("wavelet", "spatial"), [("db2", "copy"), ("haar", "topk"), (None, "none"), ("db2", "full")])
def test_stockformer_shapes_and_switches(wavelet, spatial):
    torch.manual_seed(3)
    model = Stockformer(5, 16, width=8, num_layers=2, wavelet=wavelet, level=2, spatial=spatial, top_k=2)
    ret, logits = model(torch.randn(3, 16, 5))
    assert ret.shape == (3, 5) and logits.shape == (3, 5, 2)
    assert torch.isfinite(ret).all() and torch.isfinite(logits).all()


def test_stockformer_bad_inputs():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*level"):
        Stockformer(5, 12, wavelet="db2", level=3)
    with pytest.raises(ValueError, match="wavelet must be one of"):
        Stockformer(5, 16, wavelet="morlet")
    with pytest.raises(ValueError, match="returns must be \\(B, T, N\\)"):
        Stockformer(5, 16)(torch.randn(16, 5))
    with pytest.raises(ValueError, match="x must be \\(B, T, N, D\\)"):
        SparseSpatialAttention(8, 5)(torch.randn(2, 3, 4, 8))
    with pytest.raises(ValueError, match="mode must be"):
        SparseSpatialAttention(8, 5, mode="dense")


# ---------------------------------------------------------------------------------------------------------------
# VSFormer
# ---------------------------------------------------------------------------------------------------------------


def test_value_features_match_loops():
    x = randn(2, 3, 12)
    feats = value_features(x, 3)
    assert feats.shape == (2, 3, 3, 4)
    for b in range(2):
        for c in range(3):
            for i in range(3):
                part = x[b, c, 4 * i : 4 * i + 4].tolist()
                mean = sum(part) / 4
                std = math.sqrt(sum((p - mean) ** 2 for p in part) / 4)
                expected = torch.tensor([mean, std, min(part), max(part)], dtype=F64)
                torch.testing.assert_close(feats[b, c, i], expected, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="divisible by num_intervals"):
        value_features(x, 5)
    with pytest.raises(ValueError, match="\\(B, C, T\\)"):
        value_features(x[0], 3)


def test_shape_features_match_brute_force():
    x, shapes = randn(2, 3, 20, seed=1), randn(4, 5, seed=2)
    variables = torch.tensor([0, 2, 1, 2])
    feats = shape_features(x, shapes, variables)
    assert feats.shape == (2, 4, 2)

    def znorm(a):
        return (a - a.mean()) / a.std(correction=0)

    for b in range(2):
        for s in range(4):
            dists = [(znorm(x[b, variables[s], t : t + 5]) - znorm(shapes[s])).norm() / math.sqrt(5) for t in range(16)]
            best = min(range(16), key=lambda t: dists[t])
            assert abs(feats[b, s, 0].item() - dists[best].item()) < 1e-6
            assert feats[b, s, 1].item() == best / 15
    # a window equal to a shape, up to scale and offset, is a perfect match at its position
    planted = x.clone()
    planted[0, 2, 7:12] = 3.0 * shapes[1] - 1.0
    assert shape_features(planted, shapes, variables)[0, 1, 0] < 1e-3
    assert shape_features(planted, shapes, variables)[0, 1, 1] == 7 / 15
    with pytest.raises(ValueError, match="shape_variables must be"):
        shape_features(x, shapes, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="shape length m=21"):
        shape_features(x, randn(1, 21), torch.tensor([0]))


def test_discover_shapes_matches_a_brute_force_search():
    task = shape_value_series(12, length=20, motif_length=6, seed=5)
    found = discover_shapes(task.x, task.labels, length=5, per_class=1, stride=3)
    classes = task.labels.unique().tolist()
    assert found.shapes.shape == (3 * len(classes), 5)
    assert found.variables.tolist() == [v for v in range(3) for _ in classes]
    assert found.classes.tolist() == classes * 3
    row = 0
    for var in range(3):
        for cls in classes:
            best, best_score = None, -math.inf
            for b in range(12):
                if task.labels[b] != cls:
                    continue
                for start in range(0, 20 - 5 + 1, 3):
                    cand = task.x[b, var, start : start + 5]
                    dist = shape_features(task.x, cand[None], torch.tensor([var]))[:, 0, 0]
                    score = (dist[task.labels != cls].mean() - dist[task.labels == cls].mean()).item()
                    if score > best_score:
                        best, best_score = cand, score
            torch.testing.assert_close(found.shapes[row], best)
            row += 1


def test_discovered_shapes_separate_the_shape_cue():
    task = shape_value_series(200, seed=0)
    found = discover_shapes(task.x, task.labels, length=16, per_class=1, stride=4)
    dist = shape_features(task.x, found.shapes[:4], found.variables[:4])[..., 0]  # variable 0's motifs
    for s in range(4):  # classes 0, 1 carry the rising ramp (shape 0), 2, 3 the falling one
        own = task.shape == found.classes[s] // 2
        assert dist[own, s].mean() < dist[~own, s].mean() - 0.1


def test_prior_bias_and_attention_match_references():
    table = randn(2, 3, 3)
    classes = torch.tensor([0, 2, 2, 1, 0])
    bias = prior_bias(classes, table)
    for h in range(2):
        for i in range(5):
            for j in range(5):
                assert bias[h, i, j] == table[h, classes[i], classes[j]]
    q, k, v = randn(4, 2, 5, 8, seed=1), randn(4, 2, 5, 8, seed=2), randn(4, 2, 5, 8, seed=3)
    torch.testing.assert_close(
        prior_enhanced_attention(q, k, v, bias),
        F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
        rtol=0,
        atol=1e-12,
    )
    torch.testing.assert_close(
        prior_enhanced_attention(q, k, v, None), F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-12
    )
    with pytest.raises(ValueError, match="token_classes must be"):
        prior_bias(torch.tensor([0, 3]), table)
    with pytest.raises(TypeError, match="bias must have"):
        prior_enhanced_attention(q, k, v, bias.float())


def test_prior_enhanced_module_with_zero_table_is_plain_attention():
    torch.manual_seed(4)
    with_prior, without = (
        PriorEnhancedAttention(8, 2, 3).double(),
        PriorEnhancedAttention(8, 2, 3, use_prior=False).double(),
    )
    without.load_state_dict({k: v for k, v in with_prior.state_dict().items() if k != "table"})
    x, classes = randn(2, 6, 8), torch.tensor([0, 1, 2, 2, 1, 0])
    torch.testing.assert_close(with_prior(x, classes), without(x, classes), rtol=0, atol=1e-12)
    with torch.no_grad():
        with_prior.table[0, 0, 1] = 2.0
    assert (with_prior(x, classes) - without(x, classes)).abs().max() > 1e-4


def test_vsformer_tokens_and_switches():
    torch.manual_seed(5)
    shapes = Shapes(torch.randn(6, 5), torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 0, 1, 0, 1]))
    x = torch.randn(4, 3, 20)
    sf, vf = shape_features(x, shapes.shapes, shapes.variables), value_features(x, 4)
    for kwargs, count in (({}, 6 + 12), ({"use_shape": False}, 12), ({"use_value": False}, 6)):
        model = VSFormer(shapes, 3, 2, 4, width=8, num_heads=2, **kwargs)
        tokens, priors = model.tokens(sf, vf)
        assert tokens.shape == (4, count, 8) and priors.shape == (count,)
        assert model(sf, vf).shape == (4, 2)
    assert VSFormer(shapes, 3, 2, 4, width=8).tokens(sf, vf)[1].tolist() == [0, 1] * 3 + [2] * 12
    with pytest.raises(ValueError, match="at least one of use_shape and use_value"):
        VSFormer(shapes, 3, 2, 4, use_shape=False, use_value=False)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        VSFormer(shapes, 3, 2, 4, width=10, num_heads=3)


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def test_shape_value_series():
    task = shape_value_series(50, seed=3)
    again = shape_value_series(50, seed=3)
    assert torch.equal(task.x, again.x) and not torch.equal(task.x, shape_value_series(50, seed=4).x)
    assert task.x.shape == (50, 3, 64) and torch.equal(task.labels, 2 * task.shape + task.level)
    clean = shape_value_series(50, noise=0.0, seed=3)  # the motif rises or falls where it was put
    ramp = torch.linspace(0, 2.5, 16)
    for b in range(50):
        window = clean.x[b, 0, clean.position[b] : clean.position[b] + 16]
        rise = torch.corrcoef(torch.stack([window, ramp]))[0, 1]
        assert (rise > 0.9) if clean.shape[b] == 0 else (rise < -0.9)
    with pytest.raises(ValueError, match="length must be an int >= 16"):
        shape_value_series(4, length=10)


def test_stock_returns_and_windows():
    market = synthetic_stock_returns(120, num_stocks=6, num_sectors=3, seed=1)
    assert market.returns.shape == market.trend.shape == (120, 6) and market.sectors.tolist() == [0, 1, 2] * 2
    assert torch.equal(market.returns, synthetic_stock_returns(120, num_stocks=6, num_sectors=3, seed=1).returns)
    past, nxt = stock_windows(market.returns, 20)
    assert past.shape == (100, 20, 6) and nxt.shape == (100, 6)
    for s in (0, 37, 99):
        assert torch.equal(past[s], market.returns[s : s + 20]) and torch.equal(nxt[s], market.returns[s + 20])
    low, _ = wavelet_split(market.trend[:64].double(), "db2", level=2, dim=0)
    assert (low - market.trend[:64].double()).square().mean() < 0.1 * market.trend[:64].double().square().mean()
    with pytest.raises(ValueError, match="need more than window"):
        stock_windows(market.returns[:10], 20)
    with pytest.raises(ValueError, match="min_period"):
        synthetic_stock_returns(50, min_period=10.0, max_period=5.0)

"""Tests of :func:`attnbook.attention.functional.scaled_dot_product_attention` (chapter 03).

Parity with PyTorch's SDPA (math kernel) for every mask kind, dtype, backend and the causal flag; property
tests (permutation equivariance, rows sum to one, no future leak, fully masked rows, half precision);
dropout, ``need_weights``, and bad inputs that must fail with an error naming the argument and the shapes.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel

import attnbook.attention.functional as functional
from attnbook.attention.core import AttentionCore
from attnbook.attention.functional import masked_softmax, scaled_dot_product_attention
from attnbook.attention.masks import causal_mask, fully_masked_rows, key_mask_to_attn_mask, padding_mask

B, H, LQ, LK, D, DV = 2, 3, 5, 6, 8, 7
TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
BACKENDS = ["fused", "manual"]
MASK_KINDS = ["none", "bool-2d", "bool-key-padding", "bool-4d", "bool-empty-rows", "float-2d", "float-4d"]
PROPS = settings(max_examples=25, deadline=None)


def make_qkv(dtype=torch.float64, seed=0, shape=(B, H), lq=LQ, lk=LK, d=D, dv=DV):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape, lq, d, generator=g, dtype=dtype)
    k = torch.randn(*shape, lk, d, generator=g, dtype=dtype)
    v = torch.randn(*shape, lk, dv, generator=g, dtype=dtype)
    return q, k, v


def make_mask(kind: str, dtype: torch.dtype, seed: int = 1) -> torch.Tensor | None:
    """Masks of every kind the book uses; ``True`` = may attend, floats are added to the logits."""
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return None
    if kind == "bool-2d":
        m = torch.rand(LQ, LK, generator=g) > 0.4
        m[:, 0] = True  # every row sees a key (rows without one are tested by "bool-empty-rows")
        return m
    if kind == "bool-key-padding":  # left padding: under the causal flag the first queries see nothing
        return key_mask_to_attn_mask(padding_mask(torch.tensor([4, LK])).flip(-1))  # (B, 1, 1, T_k)
    if kind == "bool-4d":
        m = torch.rand(B, H, LQ, LK, generator=g) > 0.4
        m[..., 0] = True
        return m
    if kind == "bool-empty-rows":
        m = torch.rand(1, H, LQ, LK, generator=g) > 0.4
        m[..., 0] = True
        m[0, 1, 2] = False  # head 1, query 2: no visible key
        m[0, :, 4] = False  # query 4 in every head
        return m
    if kind == "float-2d":
        m = torch.randn(LQ, LK, generator=g, dtype=dtype)
        m[1, 2:] = float("-inf")
        m[3] = float("-inf")  # a fully masked row given additively
        return m
    if kind == "float-4d":
        m = torch.randn(B, H, LQ, LK, generator=g, dtype=dtype)
        m[..., 3] = float("-inf")
        return m
    raise ValueError(kind)


def reference(q, k, v, mask, is_causal):
    """PyTorch's math SDPA on the same logical mask, and the rows that see no key at all."""
    full = mask
    if is_causal:
        c = causal_mask(q.shape[-2], k.shape[-2])
        full = c if mask is None else (mask & c if mask.dtype == torch.bool else mask.masked_fill(~c, -math.inf))
    with sdpa_kernel(SDPBackend.MATH):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=full)
    empty = torch.zeros(*out.shape[:-1], 1, dtype=torch.bool) if full is None else fully_masked_rows(full)
    return out, empty.expand(*out.shape[:-1], 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_parity_with_pytorch_sdpa(kind, is_causal, dtype, backend):
    q, k, v = make_qkv(dtype)
    mask = make_mask(kind, dtype)
    out = scaled_dot_product_attention(q, k, v, mask, is_causal=is_causal, backend=backend)
    ref, empty = reference(q, k, v, mask, is_causal)
    assert out.shape == (B, H, LQ, DV) and out.dtype == dtype
    seen = ~empty[..., 0]  # (B, H, T_q): PyTorch may give NaN on the other rows; attnbook must give zeros
    torch.testing.assert_close(out[seen], ref[seen], atol=TOL[dtype], rtol=TOL[dtype])
    assert torch.equal(out[~seen], torch.zeros_like(out[~seen]))
    assert torch.isfinite(out).all()


def test_mask_kinds_cover_empty_rows():
    """The parity grid really contains fully masked rows (so the zero-row branch above is exercised)."""
    for kind, causal in [("bool-empty-rows", False), ("float-2d", False), ("bool-key-padding", True)]:
        q, k, v = make_qkv()
        assert reference(q, k, v, make_mask(kind, torch.float64), causal)[1].any(), kind


@pytest.mark.parametrize("backend", BACKENDS)
def test_explicit_scale_and_cross_lengths(backend):
    q, k, v = make_qkv(lq=3, lk=9)
    out = scaled_dot_product_attention(q, k, v, scale=0.3, backend=backend)
    with sdpa_kernel(SDPBackend.MATH):
        ref = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_and_extra_batch_dims(backend):
    for shape in [(), (2,), (2, 2, 3)]:
        q, k, v = make_qkv(shape=shape)
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.testing.assert_close(
            scaled_dot_product_attention(q, k, v, is_causal=True, backend=backend), ref, atol=1e-12, rtol=1e-12
        )


# ----------------------------------------------------------------------------------------------- properties


@st.composite
def qkv_sizes(draw):
    return (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 7)),
        draw(st.integers(1, 7)),
        draw(st.integers(1, 6)),
        draw(st.integers(0, 2**16)),
    )


@PROPS
@given(sizes=qkv_sizes(), backend=st.sampled_from(BACKENDS))
def test_permuting_keys_and_values_changes_nothing(sizes, backend):
    b, h, lq, lk, d, seed = sizes
    q, k, v = make_qkv(shape=(b, h), lq=lq, lk=lk, d=d, dv=d, seed=seed)
    perm = torch.randperm(lk, generator=torch.Generator().manual_seed(seed))
    out = scaled_dot_product_attention(q, k, v, backend=backend)
    permuted = scaled_dot_product_attention(q, k[..., perm, :], v[..., perm, :], backend=backend)
    torch.testing.assert_close(permuted, out, atol=1e-12, rtol=1e-12)


@PROPS
@given(sizes=qkv_sizes(), backend=st.sampled_from(BACKENDS))
def test_permuting_queries_permutes_outputs(sizes, backend):
    b, h, lq, lk, d, seed = sizes
    q, k, v = make_qkv(shape=(b, h), lq=lq, lk=lk, d=d, dv=d, seed=seed)
    perm = torch.randperm(lq, generator=torch.Generator().manual_seed(seed + 1))
    out = scaled_dot_product_attention(q, k, v, backend=backend)
    torch.testing.assert_close(
        scaled_dot_product_attention(q[..., perm, :], k, v, backend=backend), out[..., perm, :], atol=1e-12, rtol=1e-12
    )


@PROPS
@given(sizes=qkv_sizes(), density=st.floats(0.0, 1.0), causal=st.booleans())
def test_weight_rows_sum_to_one_or_zero(sizes, density, causal):
    b, h, lq, lk, d, seed = sizes
    q, k, v = make_qkv(shape=(b, h), lq=lq, lk=lk, d=d, seed=seed)
    mask = torch.rand(b, 1, lq, lk, generator=torch.Generator().manual_seed(seed)) < density
    out, weights = scaled_dot_product_attention(q, k, v, mask, is_causal=causal, need_weights=True)
    visible = mask & causal_mask(lq, lk) if causal else mask
    sees = visible.expand(b, h, lq, lk).any(-1)  # (B, H, T_q)
    sums = weights.sum(-1)
    torch.testing.assert_close(sums[sees], torch.ones_like(sums[sees]), atol=1e-12, rtol=0)
    assert torch.equal(sums[~sees], torch.zeros_like(sums[~sees]))
    hidden = ~visible.expand_as(weights)
    assert (weights >= 0).all() and not weights[hidden].any()
    assert torch.equal(out[~sees], torch.zeros_like(out[~sees]))


@PROPS
@given(length=st.integers(2, 9), cut=st.integers(1, 8), seed=st.integers(0, 2**16), backend=st.sampled_from(BACKENDS))
def test_causal_mask_leaks_no_future(length, cut, seed, backend):
    cut = min(cut, length - 1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, length, 4, generator=g, dtype=torch.float64)
    y = x.clone()
    y[..., cut:, :] = 100 * torch.randn(2, 2, length - cut, 4, generator=g, dtype=torch.float64)  # a new future
    out_x = scaled_dot_product_attention(x, x, x, is_causal=True, backend=backend)
    out_y = scaled_dot_product_attention(y, y, y, is_causal=True, backend=backend)
    torch.testing.assert_close(out_y[..., :cut, :], out_x[..., :cut, :], atol=1e-14, rtol=0)
    assert not torch.allclose(out_y[..., cut:, :], out_x[..., cut:, :])  # the future itself did change


@PROPS
@given(
    sizes=qkv_sizes(),
    rows=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    additive=st.booleans(),
    backend=st.sampled_from(BACKENDS),
)
def test_fully_masked_rows_give_zeros_and_finite_gradients(sizes, rows, additive, backend):
    b, h, lq, lk, d, seed = sizes
    q, k, v = (t.requires_grad_() for t in make_qkv(shape=(b, h), lq=lq, lk=lk, d=d, seed=seed))
    mask = torch.ones(lq, lk, dtype=torch.bool)
    rows = sorted({r % lq for r in rows})
    mask[rows] = False
    if additive:
        mask = torch.zeros(lq, lk, dtype=torch.float64).masked_fill(~mask, -math.inf)
    out = scaled_dot_product_attention(q, k, v, mask, backend=backend)
    assert torch.equal(out[..., rows, :], torch.zeros_like(out[..., rows, :]))
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[..., rows, :], torch.zeros_like(q.grad[..., rows, :]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@given(seed=st.integers(0, 2**16), magnitude=st.floats(70.0, 150.0))
@settings(max_examples=10, deadline=None)
def test_half_precision_does_not_overflow(dtype, backend, seed, magnitude):
    """Entries of size 70-300 and D=64: even (q / 8) k^T exceeds float16's 65504; exp of the logits overflows both.

    A correct implementation accumulates the logits in float32 (or wider) and subtracts the row maximum.
    """
    g = torch.Generator().manual_seed(seed)
    q = magnitude * (1 + torch.rand(1, 2, 6, 64, generator=g))
    k = magnitude * (1 + torch.rand(1, 2, 6, 64, generator=g))
    v = torch.randn(1, 2, 6, 64, generator=g)
    qh, kh, vh = (t.to(dtype) for t in (q, k, v))
    naive_logits = qh @ kh.transpose(-2, -1) / 8
    naive = torch.exp(naive_logits) / torch.exp(naive_logits).sum(-1, keepdim=True) @ vh
    assert not torch.isfinite(naive).all()  # the textbook formula, computed as written, breaks
    out = scaled_dot_product_attention(qh, kh, vh, is_causal=True, backend=backend)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = F.scaled_dot_product_attention(*(t.to(dtype).double() for t in (q, k, v)), is_causal=True)
    # The logits are ~1e4 apart, so the weights are one-hot-like: compare at the dtype's resolution of v.
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2)


def test_masked_softmax_in_half_precision_matches_float64():
    logits = torch.tensor([[60000.0, 59990.0, -60000.0], [1.0, 2.0, 3.0]], dtype=torch.float16)
    want = torch.softmax(logits.double(), -1)
    torch.testing.assert_close(masked_softmax(logits).double(), want, atol=1e-3, rtol=1e-3)
    assert not torch.isfinite(torch.exp(logits[0])).all()  # exp without the shift overflows


# ----------------------------------------------------------------------------------------- dropout and weights


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_random_unbiased_and_off_at_zero(backend):
    q, k, v = make_qkv(torch.float64, lq=3, lk=4, d=4, dv=4, shape=(1, 1))
    plain = scaled_dot_product_attention(q, k, v, backend=backend)
    assert torch.equal(plain, scaled_dot_product_attention(q, k, v, dropout_p=0.0, backend=backend))
    torch.manual_seed(0)
    a = scaled_dot_product_attention(q, k, v, dropout_p=0.5, backend=backend)
    torch.manual_seed(0)
    assert torch.equal(a, scaled_dot_product_attention(q, k, v, dropout_p=0.5, backend=backend))  # seeded
    assert not torch.allclose(a, plain)
    n = 4000  # dropout rescales the kept weights by 1/(1-p), so the mean output is the plain one
    many = scaled_dot_product_attention(*(t.expand(n, 1, -1, -1) for t in (q, k, v)), dropout_p=0.5, backend=backend)
    spread = many.std(0) / math.sqrt(n)
    assert ((many.mean(0) - plain[0]).abs() <= 5 * spread + 1e-12).all()


def test_manual_dropout_equals_a_brute_force_bernoulli_mask():
    """The manual path zeroes weights with keep ~ Bernoulli(1 - p) from the global generator, scales by 1/(1-p)."""
    q, k, v = make_qkv(torch.float64)
    mask = make_mask("bool-empty-rows", torch.float64)
    p = 0.3
    torch.manual_seed(11)
    out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p, backend="manual", need_weights=True)
    torch.manual_seed(11)
    keep = torch.empty(B, H, LQ, LK, dtype=torch.float64).bernoulli_(1 - p)
    logits = (q @ k.transpose(-2, -1) / math.sqrt(D)).masked_fill(~mask, -math.inf)
    plain = torch.softmax(logits, -1).nan_to_num(0.0)  # the empty rows: zeros
    torch.testing.assert_close(weights, plain, atol=1e-12, rtol=1e-12)  # weights are returned before dropout
    torch.testing.assert_close(out, (plain * keep / (1 - p)) @ v, atol=1e-12, rtol=1e-12)
    assert 0 < (keep == 0).sum() < keep.numel()


def test_attention_dropout_validates_p_and_is_identity_at_zero():
    w = torch.rand(3, 4)
    assert functional.attention_dropout(w, 0.0) is w
    for bad in (1.0, -0.5, True, "0.1"):
        with pytest.raises(ValueError, match=r"attention_dropout: p must be a number in \[0, 1\)"):
            functional.attention_dropout(w, bad)


@pytest.mark.parametrize("backend", ["auto", "manual"])
def test_attention_core_dropout_in_train_mode_only(backend):
    q, k, v = make_qkv(torch.float64)
    core = AttentionCore(dropout=0.4, backend=backend)
    plain, _ = AttentionCore(backend=backend)(q, k, v)
    torch.manual_seed(0)
    train, _ = core(q, k, v)
    assert not torch.allclose(train, plain)
    core.eval()
    assert torch.equal(core(q, k, v)[0], plain)


# ------------------------------------------------------------------------------------------- double backward


def test_double_backward_works_on_the_manual_path():
    """gradgradcheck in float64 on a tiny input, with a mask that empties one row (the guarded case)."""
    q, k, v = (t.requires_grad_() for t in make_qkv(torch.float64, shape=(1, 2), lq=3, lk=4, d=3, dv=2))
    mask = torch.rand(3, 4, generator=torch.Generator().manual_seed(0)) > 0.3
    mask[1] = False
    for m, causal in ((None, True), (mask, False)):

        def fn(q, k, v, m=m, causal=causal):
            return scaled_dot_product_attention(q, k, v, m, is_causal=causal, backend="manual")

        assert torch.autograd.gradcheck(fn, (q, k, v))
        assert torch.autograd.gradgradcheck(fn, (q, k, v))
    core = AttentionCore(backend="manual")
    assert torch.autograd.gradgradcheck(lambda q, k, v: core(q, k, v, mask)[0], (q, k, v))


def test_the_fused_cpu_kernel_has_no_double_backward():
    """Why the docstrings say backend="manual": if PyTorch adds the derivative, this test tells us to update them.

    (With equal head widths of q and v PyTorch picks its flash CPU kernel, the one without double backward.)
    """
    q, k, v = (t.requires_grad_() for t in make_qkv(torch.float64, shape=(1, 2), lq=3, lk=4, d=4, dv=4))
    out = scaled_dot_product_attention(q, k, v, backend="fused")
    (grad_q,) = torch.autograd.grad(out.square().sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="derivative for .*scaled_dot_product.* is not implemented"):
        torch.autograd.grad(grad_q.sum(), (q, k, v))


def test_need_weights_returns_the_softmax_and_auto_switches_path():
    q, k, v = make_qkv(torch.float64)
    mask = make_mask("bool-4d", torch.float64)
    out, weights = scaled_dot_product_attention(q, k, v, mask, is_causal=True, need_weights=True)
    assert weights.shape == (B, H, LQ, LK)
    logits = (q @ k.transpose(-2, -1) / math.sqrt(D)).masked_fill(~(mask & causal_mask(LQ, LK)), -math.inf)
    torch.testing.assert_close(weights, torch.softmax(logits, -1), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out, weights @ v, atol=1e-12, rtol=1e-12)
    manual = scaled_dot_product_attention(q, k, v, mask, is_causal=True, need_weights=True, backend="manual")
    assert torch.equal(manual[0], out) and torch.equal(manual[1], weights)


def test_attention_core_fused_and_manual_paths_agree():
    q, k, v = make_qkv(torch.float64)
    mask = make_mask("bool-empty-rows", torch.float64)
    fused = AttentionCore(backend="fused")
    manual = AttentionCore(backend="manual")
    for causal in (False, True):
        out_f, none = fused(q, k, v, mask, is_causal=causal)
        out_m, weights = manual(q, k, v, mask, is_causal=causal, need_weights=True)
        assert none is None and weights.shape == (B, H, LQ, LK)
        torch.testing.assert_close(out_f, out_m, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(out_m, scaled_dot_product_attention(q, k, v, mask, is_causal=causal))


# ------------------------------------------------------------------------------------------------ bad input


def _qkv32():
    return make_qkv(torch.float32)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda q, k, v: (q[0, 0, 0], k, v), ValueError, r"q must have shape \(\.\.\., L, D\).*\(8,\)"),
        (lambda q, k, v: (q, k[0], v), ValueError, r"same rank.*k\(3, 6, 8\)"),
        (lambda q, k, v: (q, k[:, :2], v[:, :2]), ValueError, r"batch/head dims.*q\(2, 3, 5, 8\), k\(2, 2, 6, 8\)"),
        (lambda q, k, v: (q, k[..., :4], v), ValueError, r"same feature dim D.*q\(2, 3, 5, 8\) and k\(2, 3, 6, 4\)"),
        (lambda q, k, v: (q, k, v[..., :5, :]), ValueError, r"same length T_k.*k\(2, 3, 6, 8\) and v\(2, 3, 5, 7\)"),
        (lambda q, k, v: (q[..., :0, :], k, v), ValueError, r"empty sequence.*q\(2, 3, 0, 8\)"),
        (lambda q, k, v: (q, k[..., :0, :], v[..., :0, :]), ValueError, r"empty sequence.*k\(2, 3, 0, 8\)"),
        (lambda q, k, v: (q.int(), k, v), TypeError, r"q must be a floating tensor.*torch.int32"),
        (lambda q, k, v: (q, k.long(), v), TypeError, r"k must be a floating tensor.*torch.int64"),
        (lambda q, k, v: (q, k, v.double()), TypeError, r"share a dtype.*v=torch.float64"),
        (lambda q, k, v: (q.tolist(), k, v), TypeError, r"q must be a torch.Tensor, got list"),
    ],
    ids=[
        "rank",
        "mixed-rank",
        "heads",
        "feature-dim",
        "kv-length",
        "empty-q",
        "empty-k",
        "int-q",
        "int-k",
        "mixed-dtype",
        "not-a-tensor",
    ],
)
def test_bad_qkv(change, error, match):
    with pytest.raises(error, match=match):
        scaled_dot_product_attention(*change(*_qkv32()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("mask", "error", "match"),
    [
        (
            torch.ones(LQ, LK + 1, dtype=torch.bool),
            ValueError,
            r"mask of shape \(5, 7\) does not broadcast.*\(2, 3, 5, 6\)",
        ),
        (torch.ones(3, 1, 1, LK, dtype=torch.bool), ValueError, r"mask of shape \(3, 1, 1, 6\) does not broadcast"),
        (torch.ones(1, B, H, LQ, LK, dtype=torch.bool), ValueError, r"mask of shape \(1, 2, 3, 5, 6\) does not"),
        (torch.zeros(LQ, LK, dtype=torch.float64), TypeError, r"mask must be bool.*query dtype torch.float32.*float64"),
        (torch.ones(LQ, LK, dtype=torch.int64), TypeError, r"mask must be bool.*got torch.int64 \(shape \(5, 6\)\)"),
        ([[True] * LK] * LQ, TypeError, r"mask must be a torch.Tensor or None, got list"),
        (torch.ones(LQ, LK, dtype=torch.bool, device="meta"), TypeError, r"mask is on meta but q is on cpu"),
        (torch.ones(LK, dtype=torch.bool), ValueError, r"mask must have at least 2 dims.*got shape \(6,\)"),
        (torch.tensor(True), ValueError, r"mask must have at least 2 dims.*got shape \(\)"),
        (torch.zeros(LK), ValueError, r"mask must have at least 2 dims.*got shape \(6,\)"),
    ],
    ids=["last-dim", "batch", "rank", "float64-mask", "int-mask", "list", "device", "1-d", "0-d", "1-d-float"],
)
def test_bad_mask(mask, error, match, backend):
    with pytest.raises(error, match=match):
        scaled_dot_product_attention(*_qkv32(), mask, backend=backend)


@pytest.mark.parametrize("backend", ["fused", "manual"])
@pytest.mark.parametrize("mask", [torch.ones(LK, dtype=torch.bool), torch.tensor(True)], ids=["1-d", "0-d"])
def test_attention_core_rejects_masks_below_two_dims(mask, backend):
    """Both paths of the core, too: once the fused path crashed with an IndexError that named nothing."""
    with pytest.raises(
        ValueError, match=rf"mask must have at least 2 dims.*got shape {re.escape(str(tuple(mask.shape)))}"
    ):
        AttentionCore(backend=backend)(*_qkv32(), mask)


@pytest.mark.parametrize(
    ("mask", "error", "match"),
    [
        (
            torch.ones(3, 5, dtype=torch.bool),
            ValueError,
            r"masked_softmax: mask of shape \(3, 5\) does not broadcast.*\(3, 4\)",
        ),
        (torch.ones(2, 3, 4, dtype=torch.bool), ValueError, r"masked_softmax: mask of shape \(2, 3, 4\) does not"),
        (torch.ones(3, 4, dtype=torch.int64), TypeError, r"masked_softmax: mask must be bool .*got dtype torch.int64"),
    ],
    ids=["last-dim", "enlarges", "int"],
)
def test_masked_softmax_rejects_bad_masks(mask, error, match):
    with pytest.raises(error, match=match):
        masked_softmax(torch.randn(3, 4), mask)


def test_masked_softmax_accepts_masks_that_broadcast():
    logits = torch.randn(2, 3, 4, dtype=torch.float64)
    keys = torch.tensor([True, True, False, True])
    torch.testing.assert_close(masked_softmax(logits, keys), masked_softmax(logits, keys.expand(2, 3, 4)))
    assert torch.equal(masked_softmax(logits, keys)[..., 2], torch.zeros(2, 3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dropout_p": -0.1}, r"dropout_p must be a number in \[0, 1\), got -0.1"),
        ({"dropout_p": 1.0}, r"dropout_p must be a number in \[0, 1\), got 1.0"),
        ({"dropout_p": "0.1"}, r"dropout_p must be a number in \[0, 1\), got '0.1'"),
        ({"scale": 0.0}, r"scale must be a positive finite number or None, got 0.0"),
        ({"scale": -1.0}, r"scale must be a positive finite number or None, got -1.0"),
        ({"scale": math.inf}, r"scale must be a positive finite number or None, got inf"),
        ({"scale": math.nan}, r"scale must be a positive finite number or None, got nan"),
        ({"backend": "flash"}, r"backend must be 'auto', 'fused' or 'manual', got 'flash'"),
        ({"backend": "fused", "need_weights": True}, r"need_weights=True needs backend='manual' or 'auto'"),
    ],
    ids=lambda x: str(x) if isinstance(x, dict) else "",
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scaled_dot_product_attention(*_qkv32(), **kwargs)


@pytest.mark.parametrize("kind", ["bool-empty-rows", "float-2d", "bool-key-padding"])
def test_own_guard_for_kernels_that_return_nan(kind, monkeypatch):
    """Where PyTorch's kernel gives NaN for rows without keys (older versions, GPU), the fused path guards them."""
    monkeypatch.setitem(functional._EMPTY_ROWS_SAFE, "cpu", False)
    q, k, v = (t.requires_grad_() for t in make_qkv())
    mask = make_mask(kind, torch.float64)
    out = scaled_dot_product_attention(q, k, v, mask, is_causal=True, backend="fused")
    want = scaled_dot_product_attention(q, k, v, mask, is_causal=True, backend="manual")
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-12)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_mixed_devices_are_rejected():
    q, k, v = _qkv32()
    with pytest.raises(TypeError, match=r"q, k, v must be on one device, got q=meta, k=cpu, v=cpu"):
        scaled_dot_product_attention(q.to("meta"), k, v)


@pytest.mark.parametrize(
    ("kwargs", "kernel_calls"),
    [({}, 1), ({"backend": "fused"}, 1), ({"backend": "manual"}, 0), ({"need_weights": True}, 0)],
    ids=["auto", "fused", "manual", "auto+weights"],
)
def test_backend_dispatch(kwargs, kernel_calls, monkeypatch):
    """``auto`` takes PyTorch's kernel unless the weights are asked for; ``manual`` never does."""
    functional._kernel_zeroes_empty_rows(torch.device("cpu"))  # its one-off probe calls the kernel too
    calls = []
    kernel = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    mask = make_mask("bool-2d", torch.float64)
    for m in (None, mask):
        calls.clear()
        scaled_dot_product_attention(*make_qkv(), m, **kwargs)
        assert len(calls) == kernel_calls

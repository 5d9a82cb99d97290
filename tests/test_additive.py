"""Additive (Bahdanau) attention: brute-force parity, mask properties, the pluggable Scores part, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention.additive import AdditiveAttention, AdditiveScores, additive_attention, additive_logits
from attnbook.attention.core import AttentionCore, MultiHeadAttention

TOL = 1e-12


def brute_force(query, keys, values, W_q, W_k, v, mask=None, bias=None):
    """The definition, one (b, i, j) at a time, in Python floats where it matters."""
    B, T_q, T_k = query.shape[0], query.shape[1], keys.shape[1]
    bias = torch.zeros(W_k.shape[0], dtype=query.dtype) if bias is None else bias
    weights = torch.zeros(B, T_q, T_k, dtype=query.dtype)
    context = torch.zeros(B, T_q, values.shape[-1], dtype=query.dtype)
    for b in range(B):
        for i in range(T_q):
            allowed = [j for j in range(T_k) if mask is None or bool(mask[b, i, j])]
            if not allowed:
                continue
            e = {j: float(v @ torch.tanh(W_k @ keys[b, j] + bias + W_q @ query[b, i])) for j in allowed}
            top = max(e.values())
            z = sum(math.exp(s - top) for s in e.values())
            for j in allowed:
                weights[b, i, j] = math.exp(e[j] - top) / z
                context[b, i] += weights[b, i, j] * values[b, j]
    return context, weights


def make(B=2, T_q=3, T_k=5, D_q=4, D_k=6, D_v=3, A=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(B, T_q, D_q, generator=g, dtype=dtype)
    keys = torch.randn(B, T_k, D_k, generator=g, dtype=dtype)
    values = torch.randn(B, T_k, D_v, generator=g, dtype=dtype)
    module = AdditiveAttention(D_q, D_k, A).to(dtype)
    return query, keys, values, module


def weights_of(module):
    return module.W_q.weight, module.W_k.weight, module.v, module.W_k.bias


@pytest.mark.parametrize("masked", [False, True])
def test_module_and_functional_equal_brute_force(masked):
    query, keys, values, module = make()
    mask = None
    if masked:
        mask = torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(1)) > 0.4
        mask[0, 1] = False  # a fully masked row
    W_q, W_k, v, bias = weights_of(module)
    with torch.no_grad():
        ref_ctx, ref_w = brute_force(query, keys, values, W_q, W_k, v, mask, bias)
        ctx, w = module(query, keys, values, mask)
        ctx_f, w_f = additive_attention(query, keys, values, W_q, W_k, v, mask, bias=bias)
    for got in (ctx, ctx_f):
        torch.testing.assert_close(got, ref_ctx, rtol=0, atol=TOL)
    for got in (w, w_f):
        torch.testing.assert_close(got, ref_w, rtol=0, atol=TOL)


def test_single_step_query_and_key_padding_mask():
    query, keys, values, module = make()
    key_mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    with torch.no_grad():
        ctx, w = module(query[:, 0], keys, values, key_mask)  # (B, D_q) query, (B, T_k) mask
        ctx3, w3 = module(query[:, :1], keys, values, key_mask[:, None, :].expand(2, 1, 5))
    assert ctx.shape == (2, 3) and w.shape == (2, 5)
    torch.testing.assert_close(ctx, ctx3[:, 0], rtol=0, atol=TOL)
    torch.testing.assert_close(w, w3[:, 0], rtol=0, atol=TOL)
    assert (w[0, 3:] == 0).all()


def test_values_default_to_keys():
    query, keys, _, module = make(D_k=6)
    with torch.no_grad():
        torch.testing.assert_close(module(query, keys)[0], module(query, keys, keys)[0], rtol=0, atol=0)


def test_core_with_additive_scores_is_the_module():
    query, keys, values, module = make()
    core = AttentionCore(scores=AdditiveScores(7)).double()
    with torch.no_grad():
        core.scores.v.copy_(module.v)
        q = module.W_q(query)[:, None]  # (B, 1, T_q, A)
        k = module.W_k(keys)[:, None]  # (B, 1, T_k, A)
        ctx, w = core(q, k, values[:, None], need_weights=True)
        ref_ctx, ref_w = module(query, keys, values)
    torch.testing.assert_close(ctx[:, 0], ref_ctx, rtol=0, atol=TOL)
    torch.testing.assert_close(w[:, 0], ref_w, rtol=0, atol=TOL)


def test_logits_are_the_scores():
    query, keys, _, module = make()
    W_q, W_k, v, bias = weights_of(module)
    with torch.no_grad():
        rows = [[[v @ torch.tanh(W_k @ k + bias + W_q @ q) for k in keys[b]] for q in query[b]] for b in range(2)]
        expected = torch.tensor([[[float(e) for e in row] for row in batch] for batch in rows], dtype=torch.float64)
        torch.testing.assert_close(module.logits(query, keys), expected, rtol=0, atol=TOL)
        torch.testing.assert_close(module.logits(query[:, 0], keys), expected[:, 0], rtol=0, atol=TOL)


def test_multi_head_additive_attention_shapes_and_grads():
    mha = MultiHeadAttention(16, 4, core=AttentionCore(scores=AdditiveScores(4)))
    x = torch.randn(2, 5, 16, requires_grad=True)
    out, w = mha(x, need_weights=True)
    assert out.shape == (2, 5, 16) and w.shape == (2, 5, 5)
    out.sum().backward()
    assert mha.core.scores.v.grad is not None and torch.isfinite(x.grad).all()


def test_a_two_dimensional_mask_is_per_query_even_when_the_batch_size_equals_T_q():
    # B == T_q == 3: the old code read this (T_q, T_k) causal-style mask as a (B, T_k) key mask -- wrong weights.
    query, keys, values, module = make(B=3, T_q=3, T_k=3)
    causal = torch.tril(torch.ones(3, 3, dtype=torch.bool))  # (T_q, T_k): query i sees keys 0..i
    W_q, W_k, v, bias = weights_of(module)
    explicit = causal[None].expand(3, 3, 3)  # (B, T_q, T_k), unambiguous
    with torch.no_grad():
        ref_ctx, ref_w = brute_force(query, keys, values, W_q, W_k, v, explicit, bias)
        ctx, w = module(query, keys, values, causal)
        ctx_f, w_f = additive_attention(query, keys, values, W_q, W_k, v, causal, bias=bias)
    for got_ctx, got_w in ((ctx, w), (ctx_f, w_f)):
        torch.testing.assert_close(got_w, ref_w, rtol=0, atol=TOL)
        torch.testing.assert_close(got_ctx, ref_ctx, rtol=0, atol=TOL)
    assert (w[:, 0, 1:] == 0).all()  # query 0 of every batch element sees key 0 only


def test_key_mask_is_a_separate_argument_and_combines_with_mask():
    query, keys, values, module = make(B=3, T_q=3, T_k=5)
    key_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 0, 1]], dtype=torch.bool)  # (B, T_k)
    per_query = torch.rand(3, 5, generator=torch.Generator().manual_seed(3)) > 0.3  # (T_q, T_k)
    W_q, W_k, v, bias = weights_of(module)
    combined = key_mask[:, None, :] & per_query[None]  # (B, T_q, T_k)
    with torch.no_grad():
        ref_ctx, ref_w = brute_force(query, keys, values, W_q, W_k, v, combined, bias)
        ctx, w = module(query, keys, values, per_query, key_mask=key_mask)
        ctx_f, w_f = additive_attention(query, keys, values, W_q, W_k, v, per_query, key_mask=key_mask, bias=bias)
        ctx_k, w_k = module(query, keys, values, key_mask=key_mask)
        ctx_ref_k, w_ref_k = module(query, keys, values, key_mask[:, None, :])
    for got_ctx, got_w in ((ctx, w), (ctx_f, w_f)):
        torch.testing.assert_close(got_w, ref_w, rtol=0, atol=TOL)
        torch.testing.assert_close(got_ctx, ref_ctx, rtol=0, atol=TOL)
    torch.testing.assert_close(w_k, w_ref_k, rtol=0, atol=0)
    torch.testing.assert_close(ctx_k, ctx_ref_k, rtol=0, atol=0)


def test_a_key_mask_passed_as_mask_raises_a_clear_error():
    query, keys, values, module = make(B=2, T_q=3, T_k=5)
    key_mask = torch.ones(2, 5, dtype=torch.bool)  # (B, T_k) with B != T_q: not an (T_q, T_k) mask
    with pytest.raises(ValueError, match=r"mask of shape \(2, 5\).*\(T_q, T_k\).*key_mask="):
        module(query, keys, values, key_mask)
    with pytest.raises(ValueError, match=r"key_mask= .*"):
        additive_attention(query, keys, values, *weights_of(module)[:3], key_mask)
    with pytest.raises(ValueError, match=r"key_mask of shape \(3, 5\) must be \(B, T_k\) = \(2, 5\)"):
        module(query, keys, values, key_mask=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_mask must be a bool tensor"):
        module(query, keys, values, key_mask=torch.ones(2, 5))


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 3),
    T_q=st.integers(1, 4),
    T_k=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    p_keep=st.floats(0.0, 1.0),
)
def test_mask_properties(B, T_q, T_k, seed, p_keep):
    query, keys, values, module = make(B=B, T_q=T_q, T_k=T_k, seed=seed)
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, T_q, T_k, generator=g) < p_keep
    with torch.no_grad():
        ctx, w = module(query, keys, values, mask)
    assert not ctx.isnan().any() and not w.isnan().any()
    assert (w[~mask] == 0).all(), "a masked key gets weight exactly 0"
    seen = mask.any(-1)  # (B, T_q)
    torch.testing.assert_close(w.sum(-1)[seen], torch.ones(int(seen.sum()), dtype=w.dtype), rtol=0, atol=TOL)
    assert (w[~seen] == 0).all() and (ctx[~seen] == 0).all(), "a fully masked row gives zeros"
    # Permutation equivariance over keys: permuting keys and values permutes the weights, keeps the context.
    perm = torch.randperm(T_k, generator=g)
    with torch.no_grad():
        ctx_p, w_p = module(query, keys[:, perm], values[:, perm], mask[:, :, perm])
    torch.testing.assert_close(w_p, w[:, :, perm], rtol=0, atol=TOL)
    torch.testing.assert_close(ctx_p, ctx, rtol=0, atol=TOL)


def test_fully_masked_rows_have_finite_gradients():
    query, keys, values, module = make(dtype=torch.float32)
    query.requires_grad_(True)
    mask = torch.zeros(2, 3, 5, dtype=torch.bool)
    mask[0, 0, :2] = True
    ctx, _ = module(query, keys, values, mask)
    ctx.sum().backward()
    assert torch.isfinite(query.grad).all() and torch.isfinite(module.v.grad).all()


def test_half_precision_does_not_overflow():
    query, keys, values, module = make(dtype=torch.float32)
    module = module.to(torch.bfloat16)
    ctx, w = module(query.bfloat16() * 100, keys.bfloat16() * 100, values.bfloat16())
    assert torch.isfinite(ctx).all() and torch.isfinite(w).all()


def test_additive_logits_shapes():
    assert additive_logits(torch.randn(2, 3, 4, 5), torch.randn(2, 3, 6, 5), torch.randn(5)).shape == (2, 3, 4, 6)


# ------------------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs_module():
    query, keys, values, module = make()
    with pytest.raises(ValueError, match="query"):
        module(query[0, 0], keys, values)  # 1-D query
    with pytest.raises(ValueError, match="keys"):
        module(query, keys[0], values)
    with pytest.raises(TypeError, match="query"):
        module(query.long(), keys, values)
    with pytest.raises(TypeError, match="dtype"):
        module(query.float(), keys, values)
    with pytest.raises(ValueError, match="batch sizes"):
        module(query[:1], keys, values)
    with pytest.raises(ValueError, match="T_k"):
        module(query, keys, values[:, :4])
    with pytest.raises(ValueError, match="query_dim=4"):
        module(query[..., :3], keys, values)
    with pytest.raises(ValueError, match="key_dim=6"):
        module(query, keys[..., :5], values)
    with pytest.raises(ValueError, match="mask of shape"):
        module(query, keys, values, torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        module(query, keys, values, torch.ones(2, 3, 5))
    with pytest.raises(ValueError, match="empty"):
        module(query, keys[:, :0], values[:, :0])
    with pytest.raises(TypeError, match="keys"):
        module(query, keys.numpy(), values)


def test_bad_inputs_functional_and_constructors():
    query, keys, values, module = make()
    W_q, W_k, v, _ = weights_of(module)
    with pytest.raises(ValueError, match="W_q"):
        additive_attention(query, keys, values, W_q.T, W_k, v)
    with pytest.raises(ValueError, match="W_k"):
        additive_attention(query, keys, values, W_q, W_k[:, :5], v)
    with pytest.raises(ValueError, match="v must have 1 dims"):
        additive_attention(query, keys, values, W_q, W_k, v[None])
    with pytest.raises(ValueError, match="bias"):
        additive_attention(query, keys, values, W_q, W_k, v, bias=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="hidden_dim"):
        AdditiveAttention(4, 6, 0)
    with pytest.raises(ValueError, match="query_dim"):
        AdditiveAttention(-1, 6, 3)
    with pytest.raises(ValueError, match="hidden_dim"):
        AdditiveScores(0)
    with pytest.raises(ValueError, match="hidden_dim=3"):
        AdditiveScores(3)(torch.randn(1, 1, 2, 4), torch.randn(1, 1, 2, 4))

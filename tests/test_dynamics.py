"""Chapter 23: Scan and Snap's one-layer model against brute-force loops, autograd and PyTorch's attention in the
one-hot limit; its properties; the synthetic next-token generator; errors on bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention.dynamics import (
    attention_entropy,
    count_attention,
    expected_attention,
    scan_snap_gradients,
    scan_snap_layer,
    token_attention,
    token_counts,
    train_scan_snap,
)
from attnbook.data.next_token import NextTokenFacts, scan_snap_facts, scan_snap_sequences

F64 = torch.float64
TOL = dict(rtol=0, atol=1e-12)


def problem(seed=0, vocab=7, dim=5, n=4, length=6, embeddings=True):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(vocab, vocab, generator=g, dtype=F64)
    y = torch.randn(dim if embeddings else vocab, vocab, generator=g, dtype=F64)
    u = torch.randn(vocab, dim, generator=g, dtype=F64) if embeddings else None
    query = torch.randint(vocab, (n,), generator=g)
    context = torch.randint(vocab, (n, length), generator=g)
    target = torch.randint(vocab, (n,), generator=g)
    return z, y, u, query, context, target


def loop_layer(z, y, query, context, u):
    """The definition, one sequence and one position at a time."""
    out = []
    for n in range(len(query)):
        scores = torch.stack([z[query[n], tok] for tok in context[n]])
        b = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()
        f = sum(b[t] * u[context[n, t]] for t in range(context.shape[1]))
        out.append((f / f.norm()) @ y)
    return torch.stack(out)


# --- the layer ---------------------------------------------------------------------------------------------------


def test_layer_equals_loop_and_weights_sum_to_one():
    z, y, u, query, context, _ = problem()
    logits, b = scan_snap_layer(z, y, query, context, embeddings=u, need_weights=True)
    assert logits.shape == (4, 7) and b.shape == (4, 6)
    torch.testing.assert_close(logits, loop_layer(z, y, query, context, u), **TOL)
    torch.testing.assert_close(b.sum(-1), torch.ones(4, dtype=F64), **TOL)
    torch.testing.assert_close(token_attention(z, query, context), b, **TOL)


def test_one_hot_default_embeddings():
    z, y, _, query, context, _ = problem(embeddings=False)
    eye = torch.eye(7, dtype=F64)
    torch.testing.assert_close(scan_snap_layer(z, y, query, context), scan_snap_layer(z, y, query, context, eye), **TOL)


def test_parity_with_torch_sdpa_in_the_one_hot_limit():
    """With one-hot queries and keys, the layer is single-head attention with W_Q W_K^T = Z (scale folded in)."""
    z, y, u, query, context, _ = problem(seed=1)
    b = token_attention(z, query, context)
    f = torch.einsum("nt,ntd->nd", b, u[context])
    q = (F.one_hot(query, 7).to(F64) @ z)[:, None]  # (N, 1, M)
    k = F.one_hot(context, 7).to(F64)  # (N, T-1, M)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, u[context], scale=1.0)[:, 0], f, **TOL)
    g = torch.Generator().manual_seed(2)
    w_q, w_k = (torch.randn(7, 3, generator=g, dtype=F64) for _ in range(2))
    ref = F.scaled_dot_product_attention((F.one_hot(query, 7).to(F64) @ w_q)[:, None], k @ w_k, u[context])[:, 0]
    b_factor = token_attention(w_q @ w_k.T / math.sqrt(3), query, context)
    torch.testing.assert_close(ref, torch.einsum("nt,ntd->nd", b_factor, u[context]), **TOL)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), length=st.integers(1, 9))
def test_properties_uniform_at_zero_and_no_position_effect(seed, length):
    z, y, u, query, context, _ = problem(seed=seed, length=length)
    b0 = token_attention(torch.zeros(7, 7, dtype=F64), query, context)
    torch.testing.assert_close(b0, torch.full_like(b0, 1 / length), **TOL)
    perm = torch.randperm(length, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(
        scan_snap_layer(z, y, query, context[:, perm], u), scan_snap_layer(z, y, query, context, u), **TOL
    )


# --- gradients ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("embeddings", [True, False])
def test_closed_form_gradients_equal_autograd(embeddings):
    z, y, u, query, context, target = problem(seed=3, embeddings=embeddings)
    z_a, y_a = z.clone().requires_grad_(True), y.clone().requires_grad_(True)
    F.cross_entropy(scan_snap_layer(z_a, y_a, query, context, u), target).backward()
    grad_z, grad_y = scan_snap_gradients(z, y, query, context, target, u)
    torch.testing.assert_close(grad_z, z_a.grad, **TOL)
    torch.testing.assert_close(grad_y, y_a.grad, **TOL)


def test_count_form_equals_position_form():
    z, y, u, query, context, target = problem(seed=4)
    counts = token_counts(context, 7)
    assert counts.shape == (4, 7) and (counts.sum(-1) == 6).all()
    a = count_attention(z, query, counts)
    b = token_attention(z, query, context)
    torch.testing.assert_close(a @ u, torch.einsum("nt,ntd->nd", b, u[context]), **TOL)
    run = train_scan_snap(query, context, target, 7, lr_z=0.3, lr_y=0.7, num_steps=3, embeddings=u)
    zs, ys = torch.zeros(7, 7, dtype=F64), torch.zeros(5, 7, dtype=F64)
    for step in range(1, 4):
        grad_z, grad_y = scan_snap_gradients(zs, ys, query, context, target, u)
        zs, ys = zs - 0.3 * grad_z, ys - 0.7 * grad_y
        torch.testing.assert_close(run.z[step], zs, **TOL)
        torch.testing.assert_close(run.y[step], ys, **TOL)
    assert run.loss.shape == (3,) and run.steps.tolist() == [0, 1, 2, 3]


def test_attention_does_not_learn_before_the_decoder():
    _, _, _, query, context, target = problem(seed=5, embeddings=False)
    grad_z, grad_y = scan_snap_gradients(
        torch.zeros(7, 7, dtype=F64), torch.zeros(7, 7, dtype=F64), query, context, target
    )
    assert (grad_z == 0).all() and grad_y.abs().max() > 0


def test_expected_attention_and_entropy():
    facts = scan_snap_facts(num_common=3, num_distinct=4)
    z = torch.zeros(facts.vocab_size, facts.vocab_size, dtype=F64)
    c = expected_attention(z, facts.probs, facts.query)
    torch.testing.assert_close(c, facts.probs, **TOL)  # Z = 0: the context distribution itself
    stacked = expected_attention(torch.stack([z, z]), facts.probs, facts.query)
    assert stacked.shape == (2, *facts.probs.shape)
    uniform = torch.full((3, 8), 1 / 8, dtype=F64)
    torch.testing.assert_close(attention_entropy(uniform), torch.full((3,), math.log(8), dtype=F64), **TOL)
    assert attention_entropy(torch.tensor([1.0, 0.0, 0.0], dtype=F64)).item() == 0.0


def test_a_short_run_scans_toward_distinct_tokens():
    facts = scan_snap_facts(num_common=4, num_distinct=4)
    data = scan_snap_sequences(facts, 64, 31, seed=0)
    run = train_scan_snap(data.query, data.context, data.target, facts.vocab_size, 2.0, 4.0, 150, record_every=50)
    c = expected_attention(run.z, facts.probs, facts.query)
    distinct = c.gather(-1, facts.distinct.expand(len(c), -1, -1)).sum(-1).mean(-1)
    assert distinct[-1] > distinct[0] + 0.05
    assert (run.z[-1][facts.query[:, None], facts.common[None]] < 0).all()
    assert run.loss[-1] < 0.2 * run.loss[0]


# --- data --------------------------------------------------------------------------------------------------------


def test_facts_layout_and_distributions():
    facts = scan_snap_facts(num_queries=2, nexts_per_query=3, num_common=5, num_distinct=4)
    assert isinstance(facts, NextTokenFacts)
    assert facts.vocab_size == 5 + 6 * 4 + 2 + 6
    torch.testing.assert_close(facts.probs.sum(-1), torch.ones(6, dtype=F64), **TOL)
    assert facts.query.tolist() == [29, 29, 29, 30, 30, 30] and facts.next.tolist() == list(range(31, 37))
    # common tokens in every fact, distinct tokens in one fact only, increasing in probability
    assert (facts.probs[:, facts.common] > 0).all()
    owners = (facts.probs[:, facts.distinct.flatten()] > 0).sum(0)
    assert (owners == 1).all()
    assert (facts.probs.gather(1, facts.distinct).diff(dim=1) > 0).all()


def test_sequences_are_deterministic_and_consistent():
    facts = scan_snap_facts()
    a = scan_snap_sequences(facts, 32, 10, seed=3)
    b = scan_snap_sequences(facts, 32, 10, seed=3)
    assert torch.equal(a.context, b.context) and torch.equal(a.fact, b.fact)
    assert a.context.shape == (32, 10)
    assert torch.equal(a.query, facts.query[a.fact]) and torch.equal(a.target, facts.next[a.fact])
    assert (facts.probs[a.fact[:, None], a.context] > 0).all()  # every context token is allowed by its fact
    assert not torch.equal(a.context, scan_snap_sequences(facts, 32, 10, seed=4).context)


# --- errors ------------------------------------------------------------------------------------------------------


def test_errors_name_the_argument():
    z, y, u, query, context, target = problem()
    with pytest.raises(ValueError, match="z must be a square"):
        token_attention(z[:, :3], query, context)
    with pytest.raises(ValueError, match="query must be"):
        token_attention(z, query[:2], context)
    with pytest.raises(TypeError, match="context must hold integer"):
        token_attention(z, query, context.double())
    with pytest.raises(ValueError, match="outside"):
        token_attention(z, query, context + 100)
    with pytest.raises(ValueError, match="y must be"):
        scan_snap_layer(z, y[:3], query, context, u)
    with pytest.raises(ValueError, match="embeddings must be"):
        scan_snap_layer(z, y, query, context, u[:3])
    with pytest.raises(ValueError, match="target must be"):
        scan_snap_gradients(z, y, query, context, target[:2], u)
    with pytest.raises(ValueError, match="counts must be"):
        count_attention(z, query, torch.ones(4, 3, dtype=F64))
    with pytest.raises(ValueError, match="at least one token"):
        count_attention(z, query, torch.zeros(4, 7, dtype=F64))
    with pytest.raises(ValueError, match="learning rates"):
        train_scan_snap(query, context, target, 7, lr_z=-1.0, lr_y=1.0, num_steps=1)
    with pytest.raises(ValueError, match="num_steps"):
        train_scan_snap(query, context, target, 7, lr_z=1.0, lr_y=1.0, num_steps=0)
    with pytest.raises(ValueError, match="non-negative"):
        attention_entropy(torch.tensor([-0.1, 1.1]))
    with pytest.raises(ValueError, match="probs"):
        expected_attention(z, torch.ones(2, 3, dtype=F64), torch.zeros(2, dtype=torch.long))


def test_data_errors():
    with pytest.raises(ValueError, match="num_queries"):
        scan_snap_facts(num_queries=0)
    with pytest.raises(ValueError, match="distinct_min"):
        scan_snap_facts(distinct_min=2.0, distinct_max=1.0)
    with pytest.raises(TypeError, match="facts must be"):
        scan_snap_sequences("facts", 4, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="context_length"):
        scan_snap_sequences(scan_snap_facts(), 4, 0)

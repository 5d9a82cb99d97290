"""Chapter 24: the deconstructed attention variants against PyTorch's attention, brute-force loops, exact limits
and the book's GPT with copied weights; causality, parameter counts and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention.core import AttentionCore
from attnbook.attention.variants import (
    VARIANT_KINDS,
    LearnedMixingScores,
    PositiveSimilarityScores,
    SumNormalizer,
    VariantSelfAttention,
    fixed_mixing_attention,
    positive_feature_map,
    similarity_attention,
)
from attnbook.models.gpt import GPT, GPTConfig
from attnbook.models.variant_gpt import VariantGPT

F64 = torch.float64
TOL = dict(rtol=0, atol=1e-12)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def config(n_layer=2, **kw):
    return GPTConfig(vocab_size=13, block_size=10, n_layer=n_layer, n_head=2, n_embd=8, **kw)


def tokens(seed=0, batch=3, length=10):
    return torch.randint(13, (batch, length), generator=torch.Generator().manual_seed(seed))


def running_mean(v):
    return v.cumsum(-2) / torch.arange(1, v.shape[-2] + 1, dtype=v.dtype)[:, None]


def similarity_loop(q, k, v):
    out = torch.zeros_like(v)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            for i in range(q.shape[2]):
                sims = torch.stack([positive_feature_map(q[b, h, i]) @ positive_feature_map(k[b, h, j])
                                    for j in range(i + 1)])  # fmt: skip
                out[b, h, i] = (sims[:, None] * v[b, h, : i + 1]).sum(0) / sims.sum()
    return out


# --- functions ------------------------------------------------------------------------------------------------------


def test_positive_feature_map_is_positive_and_matches_its_pieces():
    x = torch.linspace(-30, 5, 101, dtype=F64)
    phi = positive_feature_map(x)
    assert (phi > 0).all()
    torch.testing.assert_close(phi[x > 0], x[x > 0] + 1, **TOL)
    torch.testing.assert_close(phi[x <= 0], torch.exp(x[x <= 0]), **TOL)


def test_similarity_attention_equals_its_loop():
    q, k, v = randn(2, 3, 5, 4, seed=1), randn(2, 3, 5, 4, seed=2), randn(2, 3, 5, 4, seed=3)
    torch.testing.assert_close(similarity_attention(q, k, v), similarity_loop(q, k, v), **TOL)


def test_similarity_attention_with_identical_keys_is_the_running_mean():
    q, v = randn(2, 2, 6, 3, seed=4), randn(2, 2, 6, 3, seed=5)
    k = randn(2, 2, 1, 3, seed=6).expand(-1, -1, 6, -1)
    torch.testing.assert_close(similarity_attention(q, k, v), running_mean(v), **TOL)


def test_similarity_non_causal_weights_are_a_convex_combination():
    q, k = randn(1, 2, 4, 3, seed=7), randn(1, 2, 5, 3, seed=8)
    core = AttentionCore(scores=PositiveSimilarityScores(), normalizer=SumNormalizer())
    _, w = core(q, k, randn(1, 2, 5, 3, seed=9), need_weights=True)
    assert (w > 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 4, dtype=F64), **TOL)


def test_sum_normalizer_masks_and_handles_empty_rows():
    scores = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, 0.0]], dtype=F64)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    w = SumNormalizer()(scores, mask)
    torch.testing.assert_close(w, torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.0, 0.0]], dtype=F64), **TOL)
    additive = torch.zeros(2, 3, dtype=F64).masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(SumNormalizer()(scores, additive), w, **TOL)
    with pytest.raises(ValueError, match="non-negative"):
        SumNormalizer()(-scores - 1, None)


def test_fixed_mixing_with_zero_logits_is_the_running_mean_and_ignores_the_sequence():
    v = randn(2, 3, 7, 4, seed=10)
    torch.testing.assert_close(fixed_mixing_attention(torch.zeros(3, 9, 9, dtype=F64), v), running_mean(v), **TOL)
    P = randn(3, 9, 9, seed=11)
    out = fixed_mixing_attention(P, v)
    weights = torch.softmax(P[:, :7, :7].masked_fill(~torch.ones(7, 7, dtype=torch.bool).tril(), float("-inf")), -1)
    torch.testing.assert_close(out, weights @ v, **TOL)
    # the same weights for another sequence: mixing a one-hot value column reads them back
    eye = torch.eye(7, dtype=F64).expand(1, 3, 7, 7)
    torch.testing.assert_close(fixed_mixing_attention(P, eye), weights[None], **TOL)


def test_learned_mixing_scores_shapes_and_errors():
    part = LearnedMixingScores(2, 6)
    assert part.mix_logits.shape == (2, 6, 6) and (part.mix_logits == 0).all()
    assert part(torch.zeros(3, 2, 4, 5), torch.zeros(3, 2, 4, 5)).shape == (3, 2, 4, 4)
    with pytest.raises(ValueError, match="T_q=7"):
        part(torch.zeros(1, 2, 7, 5), torch.zeros(1, 2, 7, 5))
    with pytest.raises(ValueError, match="num_heads"):
        LearnedMixingScores(0, 6)


def test_function_errors_name_the_argument():
    with pytest.raises(ValueError, match="mix_logits"):
        fixed_mixing_attention(torch.zeros(3, 4, 5), torch.zeros(1, 3, 4, 2))
    with pytest.raises(ValueError, match="T <= 4"):
        fixed_mixing_attention(torch.zeros(3, 4, 4), torch.zeros(1, 3, 6, 2))
    with pytest.raises(ValueError, match="v must"):
        fixed_mixing_attention(torch.zeros(3, 4, 4), torch.zeros(3, 6, 2))
    with pytest.raises(ValueError):
        similarity_attention(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 5), torch.zeros(1, 2, 3, 4))


# --- layers ---------------------------------------------------------------------------------------------------------


def test_standard_layer_equals_torch_sdpa():
    layer = VariantSelfAttention(8, 2, "standard", max_len=10).double()
    h = randn(2, 6, 8, seed=12)
    mha = layer.mha
    q, k, v = (mha.split_heads(p(h)) for p in (mha.q_proj, mha.k_proj, mha.v_proj))
    expected = mha.out_proj(mha.merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True)))
    torch.testing.assert_close(layer(h), expected, **TOL)
    w = layer.weights(h)
    torch.testing.assert_close(w @ v, F.scaled_dot_product_attention(q, k, v, is_causal=True), **TOL)


@pytest.mark.parametrize("kind", VARIANT_KINDS)
def test_layer_weights_are_causal_rows_summing_to_one(kind):
    layer = VariantSelfAttention(8, 2, kind, max_len=10).double()
    h = randn(2, 6, 8, seed=13)
    source = randn(2, 6, 8, seed=14) if kind == "decoupled" else None
    w = layer.weights(h, source)
    assert w.shape == (2, 2, 6, 6)
    assert (w.triu(1) == 0).all() and (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 6, dtype=F64), **TOL)


def test_parameter_counts():
    E, H, L = 8, 2, 10
    count = {kind: sum(p.numel() for p in VariantSelfAttention(E, H, kind, L).parameters()) for kind in VARIANT_KINDS}
    standard = 4 * (E * E + E)
    assert count["standard"] == count["similarity"] == count["decoupled"] == standard
    assert count["no_mixing"] == standard - 2 * (E * E + E)
    assert count["fixed"] == count["no_mixing"] + H * L * L


def test_layer_errors():
    with pytest.raises(ValueError, match="kind"):
        VariantSelfAttention(8, 2, "linear", 10)
    with pytest.raises(ValueError, match="needs source"):
        VariantSelfAttention(8, 2, "decoupled", 10)(torch.zeros(1, 3, 8))
    with pytest.raises(ValueError, match="takes no source"):
        VariantSelfAttention(8, 2, "standard", 10)(torch.zeros(1, 3, 8), torch.zeros(1, 3, 8))
    with pytest.raises(ValueError, match="h must"):
        VariantSelfAttention(8, 2, "standard", 10)(torch.zeros(1, 3, 7))
    with pytest.raises(ValueError, match="source must"):
        VariantSelfAttention(8, 2, "decoupled", 10)(torch.zeros(1, 3, 8), torch.zeros(1, 4, 8))


# --- models ---------------------------------------------------------------------------------------------------------


def test_all_standard_variant_gpt_equals_gpt_with_copied_weights():
    torch.manual_seed(0)
    reference = GPT(config()).double().eval()
    model = VariantGPT(config(), ["standard", "standard"]).double().eval()
    model.load_state_dict(reference.state_dict())
    idx = tokens()
    logits, loss = model(idx, idx)
    ref_logits, ref_loss = reference(idx, idx)
    torch.testing.assert_close(logits, ref_logits, **TOL)
    torch.testing.assert_close(loss, ref_loss, **TOL)


def test_same_seed_gives_the_same_shared_initialisation():
    torch.manual_seed(5)
    reference = GPT(config())
    torch.manual_seed(5)
    model = VariantGPT(config(), ["fixed", "decoupled"])
    ref = reference.state_dict()
    for name, value in model.state_dict().items():
        if name in ref:
            torch.testing.assert_close(value, ref[name], rtol=0, atol=0)


def test_no_mixing_equals_a_window_of_one_and_sees_only_its_token():
    torch.manual_seed(1)
    window = GPT(config(attn_window=1)).double().eval()
    model = VariantGPT(config(), ["no_mixing"] * 2).double().eval()
    missing, unexpected = model.load_state_dict(window.state_dict(), strict=False)
    assert not missing and all("q_proj" in n or "k_proj" in n for n in unexpected)
    idx = tokens(1)
    torch.testing.assert_close(model(idx)[0], window(idx)[0], rtol=0, atol=1e-10)
    other = tokens(2)
    other[:, 4] = idx[:, 4]
    torch.testing.assert_close(model(other)[0][:, 4], model(idx)[0][:, 4], **TOL)


def test_decoupled_one_layer_equals_standard_and_differs_deeper():
    torch.manual_seed(2)
    one = GPT(config(1)).double().eval()
    model = VariantGPT(config(1), ["decoupled"]).double().eval()
    model.load_state_dict(one.state_dict())
    idx = tokens(3)
    torch.testing.assert_close(model(idx)[0], one(idx)[0], **TOL)
    # decoupling only the first layer changes nothing either
    two = GPT(config(2)).double().eval()
    first = VariantGPT(config(2), ["decoupled", "standard"]).double().eval()
    first.load_state_dict(two.state_dict())
    torch.testing.assert_close(first(idx)[0], two(idx)[0], **TOL)
    second = VariantGPT(config(2), ["standard", "decoupled"]).double().eval()
    second.load_state_dict(two.state_dict())
    assert (second(idx)[0] - two(idx)[0]).abs().max() > 1e-7


@settings(max_examples=15, deadline=None)
@given(
    kinds=st.tuples(st.sampled_from(VARIANT_KINDS), st.sampled_from(VARIANT_KINDS)),
    cut=st.integers(1, 9),
    seed=st.integers(0, 1000),
)
def test_no_future_leak_for_every_kind_and_hybrid(kinds, cut, seed):
    torch.manual_seed(seed)
    model = VariantGPT(config(), kinds).double().eval()
    idx = tokens(seed)
    changed = idx.clone()
    changed[:, cut:] = (idx[:, cut:] + 1) % 13
    with torch.no_grad():
        torch.testing.assert_close(model(changed)[0][:, :cut], model(idx)[0][:, :cut], **TOL)


def test_variant_gpt_trains_and_gradients_are_finite():
    torch.manual_seed(3)
    model = VariantGPT(config(), ["fixed", "similarity"])
    idx = tokens(4)
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    P = model.decoder.blocks[0].attn.mha.core.scores.mix_logits
    assert P.grad.abs().sum() > 0


def test_variant_gpt_errors():
    with pytest.raises(ValueError, match="one kind per layer"):
        VariantGPT(config(), ["standard"])
    with pytest.raises(ValueError, match="attn_window"):
        VariantGPT(config(attn_window=2), ["standard"] * 2)
    model = VariantGPT(config(), ["standard"] * 2)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 11, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        model(tokens(), tokens()[:, :5])
    with pytest.raises(ValueError, match="cache"):
        model(tokens(), cache=object())

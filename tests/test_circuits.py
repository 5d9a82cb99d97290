"""Chapter 26: head outputs, the discrete sparse autoencoder, node scores, ablation, causal tracing and the
closed-form edit of W_O against recomputation from the weights, loops, zeroed weights and torch.linalg.lstsq; the
generated prompts."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention.circuits import (
    AttentionOnlyTransformer,
    DiscreteSAE,
    ablate_heads,
    causal_trace,
    circuit_heads,
    edit_output_projection,
    head_outputs,
    head_summary,
    last_position_accuracy,
    mean_ablate_heads,
    mean_head_outputs,
    node_scores,
    output_projection_inputs,
    sae_codes,
    train_circuit_model,
    train_sae,
)
from attnbook.data.circuits import (
    CircuitVocab,
    comparison_prompts,
    fact_prompts,
    induction_prompts,
    make_facts,
    task_mixture,
)
from attnbook.models.pointer import IGNORE_INDEX

F64 = torch.float64
VOCAB = CircuitVocab()


def small_model(seed: int = 0, embed_dim: int = 16, num_heads: int = 4) -> AttentionOnlyTransformer:
    torch.manual_seed(seed)
    return AttentionOnlyTransformer(VOCAB.size, VOCAB.seq_len, embed_dim=embed_dim, num_heads=num_heads).double()


def heads_from_weights(model: AttentionOnlyTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Every head recomputed from the weights, one head at a time: (B, L, H, T, D)."""
    B, T = tokens.shape
    E, D = model.embed.weight.shape[1], model.head_dim
    x = model.embed(tokens) + model.pos[:T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    layers = []
    for layer in range(model.num_layers):
        w = model.qkv[layer].weight
        heads = []
        for h in range(model.num_heads):
            q, k, v = (x @ w[i * E + h * D : i * E + (h + 1) * D].T for i in range(3))
            a = (q @ k.transpose(1, 2) / D**0.5).masked_fill(~causal, float("-inf")).softmax(-1)
            heads.append(a @ v)
        z = torch.stack(heads, 1)
        x = x + z.transpose(1, 2).reshape(B, T, E) @ model.w_o[layer].weight.T
        layers.append(z)
    return torch.stack(layers, 1)


# ---------------------------------------------------------------------------------------------------------------
# The model, hooks and ablation
# ---------------------------------------------------------------------------------------------------------------


def test_head_outputs_equal_recomputation_from_weights():
    model = small_model()
    tokens = induction_prompts(4, VOCAB, seed=1).tokens
    with torch.no_grad():
        logits, z = head_outputs(model, tokens)
        assert z.shape == (4, 2, 4, VOCAB.seq_len, 4)
        torch.testing.assert_close(z, heads_from_weights(model, tokens), rtol=0, atol=1e-10)
        torch.testing.assert_close(logits, model(tokens), rtol=0, atol=0)


@pytest.mark.parametrize("heads", [[(0, 0)], [(1, 2)], [(0, 1), (1, 3)]])
def test_ablation_by_hook_equals_zeroed_wo_block(heads):
    model = small_model()
    tokens = comparison_prompts(5, VOCAB, seed=2).tokens
    zeroed = copy.deepcopy(model)
    D = model.head_dim
    with torch.no_grad():
        for layer, head in heads:
            zeroed.w_o[layer].weight[:, head * D : (head + 1) * D] = 0.0
        torch.testing.assert_close(ablate_heads(model, tokens, heads), zeroed(tokens), rtol=0, atol=1e-10)
        torch.testing.assert_close(ablate_heads(model, tokens, []), model(tokens), rtol=0, atol=0)


def test_mean_head_outputs_are_the_batch_mean_of_the_recomputed_heads():
    model = small_model()
    tokens = induction_prompts(6, VOCAB, seed=2).tokens
    with torch.no_grad():
        means = mean_head_outputs(model, tokens)
        by_hand = sum(heads_from_weights(model, tokens[i : i + 1])[0] for i in range(6)) / 6
    assert means.shape == (2, 4, VOCAB.seq_len, 4)
    torch.testing.assert_close(means, by_hand, rtol=0, atol=1e-12)


def test_mean_ablation_of_a_last_layer_head_by_hand():
    """In the last layer, replacing z by m changes the logits by exactly -(W_O block (z - m)) @ W_U^T."""
    model = small_model()
    tokens = induction_prompts(5, VOCAB, seed=3).tokens
    means = mean_head_outputs(model, comparison_prompts(7, VOCAB, seed=4).tokens)  # (L, H, T, D)
    head, D = 2, model.head_dim
    with torch.no_grad():
        logits, z = head_outputs(model, tokens)
        delta = (z[:, 1, head] - means[1, head]) @ model.w_o[1].weight[:, head * D : (head + 1) * D].T  # (B, T, E)
        expected = logits - delta @ model.unembed.weight.T
        torch.testing.assert_close(mean_ablate_heads(model, tokens, [(1, head)], means), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("heads", [[(0, 1)], [(0, 0), (1, 3)], []])
def test_mean_ablation_limits(heads):
    model = small_model()
    tokens = induction_prompts(4, VOCAB, seed=5).tokens
    with torch.no_grad():
        zeros = torch.zeros(2, 4, VOCAB.seq_len, 4, dtype=F64)
        torch.testing.assert_close(mean_ablate_heads(model, tokens, heads, zeros), ablate_heads(model, tokens, heads))
        one = tokens[:1]  # the mean over one prompt is that prompt's own output: nothing changes
        own = mean_head_outputs(model, one)
        torch.testing.assert_close(mean_ablate_heads(model, one, heads, own), model(one), rtol=0, atol=1e-12)
        short = tokens[:, :5]  # shorter prompts read the first positions of the means
        torch.testing.assert_close(mean_ablate_heads(model, short, heads, zeros), ablate_heads(model, short, heads))


def test_no_future_leak():
    model = small_model()
    tokens = induction_prompts(2, VOCAB, seed=3).tokens
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB.num_symbols
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[:, :-1], model(changed)[:, :-1], rtol=0, atol=0)


def test_training_learns_the_facts_quickly():
    vocab = CircuitVocab(num_symbols=8, num_subjects=3, seq_len=8, copy_len=3)
    facts = make_facts(vocab, seed=0)
    torch.manual_seed(0)
    model = AttentionOnlyTransformer(vocab.size, vocab.seq_len, embed_dim=16, num_heads=2)
    g = torch.Generator().manual_seed(0)
    losses = train_circuit_model(model, lambda s: task_mixture(48, vocab, facts, seed=g)[:2], steps=150)
    assert losses[-1] < losses[0]
    p = fact_prompts(torch.arange(3), vocab, facts)
    with torch.no_grad():
        assert last_position_accuracy(model(p.tokens), p.answer) == 1.0


# ---------------------------------------------------------------------------------------------------------------
# The sparse autoencoder and the node scores
# ---------------------------------------------------------------------------------------------------------------


def test_sae_equals_its_loop_and_has_unit_atoms():
    torch.manual_seed(0)
    sae = DiscreteSAE(5, 7).double()
    sae.renormalise_()
    with torch.no_grad():
        sae.pre_bias.normal_()
        sae.encoder_bias.normal_()
    z = torch.randn(6, 5, dtype=F64)
    with torch.no_grad():
        f, z_hat = sae(z)
    _check_sae_loop(sae, z, f, z_hat)


@torch.no_grad()
def _check_sae_loop(sae, z, f, z_hat):
    for n in range(6):
        for j in range(7):
            want = max(0.0, float(sae.encoder[j] @ (z[n] - sae.pre_bias) + sae.encoder_bias[j]))
            assert abs(f[n, j].item() - want) < 1e-12
        recon = sum(sae.decoder[:, j] * f[n, j] for j in range(7)) + sae.pre_bias
        torch.testing.assert_close(z_hat[n], recon, rtol=0, atol=1e-12)
    assert torch.equal(sae.codes(z), f.argmax(-1))
    torch.testing.assert_close(sae.decoder.norm(dim=0), torch.ones(7, dtype=F64))
    torch.testing.assert_close(sae.encoder.norm(dim=1), torch.ones(7, dtype=F64))


def test_train_sae_lowers_the_loss_and_keeps_unit_atoms():
    torch.manual_seed(0)
    sae = DiscreteSAE(4, 16)
    data = torch.randn(40, 4)
    losses = train_sae(sae, data, steps=100, lr=1e-2)
    assert losses[-1] < losses[0]
    torch.testing.assert_close(sae.decoder.norm(dim=0), torch.ones(16))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=8), st.lists(st.integers(0, 5), min_size=1, max_size=8))
def test_node_score_is_the_set_difference(pos, neg):
    scores = node_scores(torch.tensor(pos)[:, None, None], torch.tensor(neg)[:, None, None])
    assert scores.item() == len(set(pos) - set(neg))
    normalised = node_scores(torch.tensor(pos)[:, None, None], torch.tensor(neg)[:, None, None], normalise=True)
    assert normalised.item() == pytest.approx(len(set(pos) - set(neg)) / len(set(pos) | set(neg)))


def test_codes_and_circuit_heads():
    z = torch.randn(3, 2, 4, VOCAB.seq_len, 6)
    torch.testing.assert_close(head_summary(z), z.mean(3))
    torch.testing.assert_close(head_summary(z, -1), z[:, :, :, -1])
    sae = DiscreteSAE(6, 8)
    assert sae_codes(sae, z, -1).shape == (3, 2, 4)
    scores = torch.tensor([[1.0, 5.0], [3.0, 0.0]])
    assert circuit_heads(scores, 2.5) == [(0, 1), (1, 0)]
    assert circuit_heads(scores, 10.0) == []


# ---------------------------------------------------------------------------------------------------------------
# Causal tracing and the edit
# ---------------------------------------------------------------------------------------------------------------


def test_causal_trace_limits():
    model = small_model()
    p = fact_prompts(torch.arange(4), VOCAB, make_facts(VOCAB))
    bad = fact_prompts(torch.arange(4), VOCAB, make_facts(VOCAB), corrupt=True)
    restored, p_clean, p_bad = causal_trace(model, p.tokens, bad.tokens, p.answer)
    assert restored.shape == (2, 4, VOCAB.seq_len)
    # positions where clean and corrupted runs agree (the leading PADs) restore nothing
    torch.testing.assert_close(restored[:, :, : VOCAB.seq_len - 2], torch.full_like(restored[:, :, :-2], p_bad))
    # the same prompt as clean and corrupted: every restoration gives the clean probability
    same, p1, p2 = causal_trace(model, p.tokens, p.tokens, p.answer)
    assert p1 == pytest.approx(p2)
    torch.testing.assert_close(same, torch.full_like(same, p1))


def test_edit_equals_lstsq_and_has_rank_one():
    model = small_model()
    tokens = fact_prompts(torch.arange(6), VOCAB, make_facts(VOCAB)).tokens
    keys = output_projection_inputs(model, tokens, layer=1)
    w = model.w_o[1].weight.detach()
    targets = keys @ w.T
    targets[2] += torch.randn(keys.shape[1], dtype=F64)
    lam = 1e-2
    edited = edit_output_projection(model, 1, keys, targets, strength=lam).w_o[1].weight.detach()
    E = keys.shape[1]
    system = torch.cat([keys, lam**0.5 * torch.eye(E, dtype=F64)])
    rhs = torch.cat([targets, lam**0.5 * w.T])
    torch.testing.assert_close(edited, torch.linalg.lstsq(system, rhs).solution.T, rtol=0, atol=1e-8)
    assert torch.linalg.matrix_rank(edited - w, rtol=1e-8).item() == 1
    assert torch.equal(model.w_o[1].weight.detach(), w)  # the original model is not touched


# ---------------------------------------------------------------------------------------------------------------
# The prompts
# ---------------------------------------------------------------------------------------------------------------


def test_induction_prompts_are_answerable_by_copying_and_corruption_removes_it():
    p = induction_prompts(50, VOCAB, seed=0)
    bad = induction_prompts(50, VOCAB, corrupt=True, seed=0)
    T, c = VOCAB.seq_len, VOCAB.copy_len
    assert p.tokens.shape == (50, T) and (p.tokens[:, 0] == VOCAB.ind).all()
    for n in range(50):
        row = p.tokens[n].tolist()
        first = row[1 : T - c + 1]
        assert len(set(first)) == len(first)  # distinct symbols before the second copy
        i = first.index(row[-1])  # the earlier copy of the last token ...
        assert first[i + 1] == p.answer[n]  # ... is followed by the answer
        assert p.answer[n].item() not in bad.tokens[n, : T - c + 1].tolist()
    assert (p.targets[:, : T - c + 1] == IGNORE_INDEX).all() and (p.targets[:, T - c + 1 :] >= 0).all()
    assert torch.equal(bad.tokens[:, T - c + 1 :], p.tokens[:, T - c + 1 :])
    assert torch.equal(induction_prompts(5, VOCAB, seed=3).tokens, induction_prompts(5, VOCAB, seed=3).tokens)


def test_comparison_and_fact_prompts():
    p = comparison_prompts(100, VOCAB, seed=0)
    x, y = p.tokens[:, -2], p.tokens[:, -1]
    assert (x != y).all()
    assert torch.equal(p.answer, torch.where(x > y, VOCAB.yes, VOCAB.no))
    bad = comparison_prompts(100, VOCAB, corrupt=True, seed=0)
    assert torch.equal(bad.tokens[:, -1], bad.tokens[:, -2])
    facts = make_facts(VOCAB, seed=1)
    assert len(set(facts.tolist())) == VOCAB.num_subjects
    f = fact_prompts(torch.arange(VOCAB.num_subjects), VOCAB, facts)
    assert torch.equal(f.answer, facts) and (f.tokens[:, -1] == VOCAB.ask).all()
    assert (fact_prompts(torch.arange(3), VOCAB, facts, corrupt=True).tokens[:, -2] == VOCAB.pad).all()
    mix = task_mixture(30, VOCAB, facts, seed=0)
    assert mix.tokens.shape == (30, VOCAB.seq_len) and (mix.tokens < VOCAB.size).all()


# ---------------------------------------------------------------------------------------------------------------
# Errors that name the bad argument
# ---------------------------------------------------------------------------------------------------------------


def test_errors_name_the_argument():
    model = small_model()
    with pytest.raises(ValueError, match="embed_dim"):
        AttentionOnlyTransformer(10, 8, embed_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="tokens"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, VOCAB.seq_len + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="head"):
        ablate_heads(model, induction_prompts(2, VOCAB).tokens, [(2, 0)])
    with pytest.raises(ValueError, match="means"):
        mean_ablate_heads(model, induction_prompts(2, VOCAB).tokens, [(0, 0)], torch.zeros(2, 4, 5, 4))
    with pytest.raises(ValueError, match="head"):
        mean_ablate_heads(model, induction_prompts(2, VOCAB).tokens, [(0, 4)], torch.zeros(2, 4, 12, 4))
    with pytest.raises(ValueError, match="tokens"):
        mean_head_outputs(model, torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="z must be"):
        DiscreteSAE(4, 8).encode(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="positive and negative"):
        node_scores(torch.zeros(3, 2, 2, dtype=torch.long), torch.zeros(3, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="layer"):
        edit_output_projection(model, 5, torch.zeros(1, 16), torch.zeros(1, 16))
    with pytest.raises(ValueError, match="keys"):
        edit_output_projection(model, 0, torch.zeros(1, 15), torch.zeros(1, 16))
    with pytest.raises(ValueError, match="seq_len"):
        CircuitVocab(num_symbols=6, seq_len=12, copy_len=4)
    with pytest.raises(ValueError, match="num"):
        induction_prompts(0, VOCAB)
    with pytest.raises(ValueError, match="subjects"):
        fact_prompts(torch.tensor([VOCAB.num_subjects]), VOCAB, make_facts(VOCAB))
    with pytest.raises(ValueError, match="answer"):
        last_position_accuracy(torch.zeros(2, 3, 4), torch.zeros(3, dtype=torch.long))

"""Chapter 25: head gates, pruning, the gate (Taylor) gradient, captured attention, input x gradient and attention
distance, against PyTorch's multi-head attention, rebuilt models, finite differences and closed forms."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attnbook.attention.core import FunctionCore, MultiHeadAttention
from attnbook.attention.interpret import (
    ablate_heads,
    attention_by_offset,
    attention_layers,
    attention_weight_gradients,
    capture_attention,
    head_ablation,
    head_gate_gradients,
    head_gates,
    input_x_gradient,
    mean_attention_distance,
    record_output,
    token_distances,
)
from attnbook.attention.rollout import patch_distances
from attnbook.models.gpt import GPT, GPTConfig
from attnbook.models.vit import ViT

TOL = dict(rtol=1e-9, atol=1e-12)


def _vit(seed: int = 0) -> ViT:
    torch.manual_seed(seed)
    return ViT(8, 4, 1, 5, dim=16, depth=2, num_heads=4).double().eval()


def _gpt(seed: int = 0, n_kv_head: int | None = None) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=9, block_size=8, n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=16)
    return GPT(config).double().eval()


def test_pruning_a_head_equals_torch_mha_with_a_zeroed_output_block():
    torch.manual_seed(0)
    E, H = 12, 3
    ref = nn.MultiheadAttention(E, H, batch_first=True).double()
    ours = MultiHeadAttention(E, H).double().load_torch(ref)
    x = torch.randn(2, 5, E, dtype=torch.float64)
    for h in range(H):
        pruned = copy.deepcopy(ref)
        with torch.no_grad():
            pruned.out_proj.weight[:, h * 4 : (h + 1) * 4] = 0
        with ablate_heads(ours, [(0, h)]):
            torch.testing.assert_close(ours(x)[0], pruned(x, x, x, need_weights=False)[0], **TOL)
    torch.testing.assert_close(ours(x)[0], ref(x, x, x, need_weights=False)[0], **TOL)  # hooks removed on exit


@pytest.mark.parametrize("model_fn", [_vit, _gpt, lambda: _gpt(n_kv_head=2)], ids=["vit", "gpt", "gpt-gqa"])
def test_ablation_equals_a_rebuilt_model_with_a_zeroed_w_o_slice(model_fn):
    model = model_fn()
    inputs = torch.randn(2, 1, 8, 8, dtype=torch.float64) if isinstance(model, ViT) else torch.randint(9, (2, 8))
    run = (lambda m: m(inputs)) if isinstance(model, ViT) else (lambda m: m(inputs)[0])
    for layer, head in [(0, 0), (1, 3)]:
        rebuilt = copy.deepcopy(model)
        mha = attention_layers(rebuilt)[layer]
        with torch.no_grad():
            mha.out_proj.weight[:, head * mha.head_dim : (head + 1) * mha.head_dim] = 0
        with ablate_heads(model, [(layer, head)]):
            torch.testing.assert_close(run(model), run(rebuilt), **TOL)


def test_head_ablation_loops_over_every_head():
    model = _vit()
    images = torch.randn(3, 1, 8, 8, dtype=torch.float64)

    def evaluate():
        with torch.no_grad():
            return model(images).sum().item()

    base, ablated = head_ablation(model, evaluate)
    assert ablated.shape == (2, 4) and base == evaluate()
    with ablate_heads(model, [(1, 2)]):
        assert ablated[1, 2].item() == evaluate()


@pytest.mark.parametrize("model_fn", [_vit, _gpt], ids=["vit", "gpt"])
def test_gate_gradient_equals_attention_weight_form_and_finite_differences(model_fn):
    model = model_fn(1)
    if isinstance(model, ViT):
        images, labels = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 2, 4])

        def losses():
            return F.cross_entropy(model(images), labels, reduction="none")
    else:
        ids = torch.randint(9, (3, 8))

        def losses():
            logits = model(ids[:, :-1])[0]
            return F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").mean(1)

    grads = head_gate_gradients(model, losses, batch_size=3)
    assert grads.shape == (3, 2, 4)
    torch.testing.assert_close(grads, attention_weight_gradients(model, losses), **TOL)
    eps = 1e-6
    for layer, head in [(0, 1), (1, 2)]:
        step = torch.zeros(2, 4, dtype=torch.float64)
        step[layer, head] = eps
        with torch.no_grad(), head_gates(model, 1 + step):
            up = losses()
        with torch.no_grad(), head_gates(model, 1 - step):
            down = losses()
        torch.testing.assert_close((up - down) / (2 * eps), grads[:, layer, head], rtol=1e-6, atol=1e-9)


def test_per_example_gates_gate_each_example():
    model = _vit()
    images = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    gates = torch.ones(2, 2, 4, dtype=torch.float64)
    gates[1, 0, 2] = 0.0  # remove head (0, 2) for the second example only
    with head_gates(model, gates):
        out = model(images)
    with ablate_heads(model, [(0, 2)]):
        removed = model(images)
    torch.testing.assert_close(out[0], model(images)[0], **TOL)
    torch.testing.assert_close(out[1], removed[1], **TOL)


def test_capture_attention_records_softmax_rows_and_restores_the_backend():
    model = _gpt()
    ids = torch.randint(9, (2, 6))
    with capture_attention(model) as weights:
        model(ids)
    assert len(weights) == 2 and weights[0].shape == (2, 4, 6, 6)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(2, 4, 6, dtype=torch.float64), **TOL)
    assert torch.triu(weights[1][0, 0], diagonal=1).abs().max() == 0  # causal
    assert all(m.core.backend == "auto" for m in attention_layers(model))


def test_input_x_gradient_is_exact_for_a_linear_model():
    torch.manual_seed(0)
    W = torch.randn(4, 3, dtype=torch.float64)
    x = torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True)
    y = (W * x).sum(dim=(1, 2)) - 1.5
    s = input_x_gradient(y, x)
    torch.testing.assert_close(s, (W * x).sum(-1).detach(), **TOL)
    torch.testing.assert_close(s.sum(-1), y.detach() + 1.5, **TOL)  # completeness


def test_record_output_keeps_the_embedding_in_the_graph():
    model = _vit()
    images = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with record_output(model.patch_embed) as outputs:
        logits = model(images)
    assert len(outputs) == 1 and outputs[0].shape == (2, 4, 16)
    s = input_x_gradient(logits[:, 0], outputs[0])
    assert s.shape == (2, 4) and torch.isfinite(s).all()


def test_distance_closed_forms():
    for T in (1, 5, 12):
        uniform = torch.tril(torch.ones(T, T, dtype=torch.float64))
        uniform = (uniform / uniform.sum(-1, keepdim=True))[None, None]
        assert abs(mean_attention_distance(uniform, token_distances(T)).item() - (T - 1) / 4) < 1e-12
        profile = attention_by_offset(uniform)[0]
        means = [sum(1 / (t + 1) for t in range(d, T)) / (T - d) for d in range(T)]  # mean_(t >= d) 1 / (t + 1)
        expected = torch.tensor(means, dtype=torch.float64)
        torch.testing.assert_close(profile, expected, **TOL)
    identity = torch.eye(6, dtype=torch.float64)[None, None]
    assert mean_attention_distance(identity, token_distances(6)).item() == 0.0
    grid = patch_distances((3, 3))
    torch.testing.assert_close(mean_attention_distance(torch.full((1, 1, 9, 9), 1 / 9), grid), grid.mean()[None])


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(2, 6), st.integers(0, 10_000))
def test_mean_distance_lies_between_the_row_extremes(B, H, T, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.softmax(torch.randn(B, H, T, T, generator=g, dtype=torch.float64), -1)
    d = token_distances(T)
    out = mean_attention_distance(w, d)
    assert out.shape == (H,) and (out >= 0).all() and (out <= T - 1).all()
    torch.testing.assert_close(mean_attention_distance(w * 3.0, d), out, **TOL)  # rows are renormalised


def test_errors_name_the_argument():
    model = _vit()
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        attention_layers("vit")
    with pytest.raises(ValueError, match="has no MultiHeadAttention"):
        attention_layers(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="batch_first"):
        attention_layers(MultiHeadAttention(4, 2, batch_first=False))
    with pytest.raises(ValueError, match=r"gates must be \(L, H\) = \(2, 4\)"):
        with head_gates(model, torch.ones(3, 4)):
            pass
    with pytest.raises(TypeError, match="gates must be a floating-point tensor"):
        with head_gates(model, torch.ones(2, 4, dtype=torch.long)):
            pass
    with pytest.raises(ValueError, match="gates hold 3 examples, the batch has 2"):
        with head_gates(model, torch.ones(3, 2, 4, dtype=torch.float64)):
            model(torch.randn(2, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="each entry must be \\(layer, head\\)"):
        with ablate_heads(model, [(2, 0)]):
            pass
    with pytest.raises(TypeError, match="evaluate must be callable"):
        head_ablation(model, 3.0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        head_gate_gradients(model, lambda: torch.zeros(2), 0)
    with pytest.raises(ValueError, match="per-example losses"):
        head_gate_gradients(model, lambda: model(torch.randn(2, 1, 8, 8, dtype=torch.float64)).sum(), 2)
    with pytest.raises(ValueError, match="returned 2 losses, batch_size=3"):
        head_gate_gradients(model, lambda: model(torch.randn(3, 1, 8, 8, dtype=torch.float64))[:2, 0], 3)
    mha = MultiHeadAttention(4, 2, core=FunctionCore(lambda q, k, v: v))
    with pytest.raises(ValueError, match="computes no attention weights"):
        with capture_attention(mha):
            pass
    with pytest.raises(ValueError, match=r"inputs must be a float tensor \(B, T, E\)"):
        input_x_gradient(torch.zeros(2), torch.zeros(2, 3))
    x = torch.randn(2, 3, 4, requires_grad=True)
    with pytest.raises(ValueError, match="one number per example"):
        input_x_gradient(x.sum(), x)
    with pytest.raises(ValueError, match="not in the autograd graph"):
        input_x_gradient(torch.zeros(2), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="length must be a positive int"):
        token_distances(0)
    with pytest.raises(ValueError, match=r"distances must be \(T_q, T_k\)"):
        mean_attention_distance(torch.rand(1, 1, 3, 3), token_distances(4))
    with pytest.raises(ValueError, match=r"weights must be a float tensor \(B, H, T_q, T_k\)"):
        mean_attention_distance(torch.rand(3, 3), token_distances(3))
    with pytest.raises(ValueError, match=r"weights must be \(B, H, T, T\) self-attention"):
        attention_by_offset(torch.rand(1, 1, 3, 4))

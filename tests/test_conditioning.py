"""Conditioning parts of chapter 18 against brute-force definitions (loops, explicit softmax) and torch's SDPA."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention.conditioning import (
    DecoupledCrossAttention,
    ReferenceAttention,
    closed_form_edit,
    global_local_cross_attention,
    proxy_affinity_attention,
    reference_attention,
    region_attention_loss,
    splice_then_aggregate,
)
from attnbook.attention.rollout import attention_rollout
from attnbook.data.conditional_shapes import conditioned_shapes, draw_shape

F64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def softmax_attention_loop(q, k, v, bias=None):
    """(T_q, d), (T_k, d), (T_k, d_v) -> (T_q, d_v), one query at a time."""
    rows = []
    for i in range(q.shape[0]):
        scores = torch.stack([q[i] @ k[j] / math.sqrt(q.shape[1]) for j in range(k.shape[0])])
        if bias is not None:
            scores = scores + bias[i]
        weights = torch.exp(scores - scores.max())
        rows.append((weights / weights.sum()) @ v)
    return torch.stack(rows)


def test_reference_attention_equals_loop_and_torch():
    q, k, v = rand(2, 3, 5, 4, seed=1), rand(2, 3, 6, 4, seed=2), rand(2, 3, 6, 4, seed=3)
    k_ref, v_ref = rand(2, 3, 7, 4, seed=4), rand(2, 3, 7, 4, seed=5)
    bias = rand(2, 1, 1, 7, seed=6)
    out = reference_attention(q, k, v, k_ref, v_ref, bias)
    for b in range(2):
        for h in range(3):
            full_bias = torch.cat([torch.zeros(5, 6, dtype=F64), bias[b, 0].expand(5, 7)], dim=-1)
            want = softmax_attention_loop(
                q[b, h], torch.cat([k[b, h], k_ref[b, h]]), torch.cat([v[b, h], v_ref[b, h]]), full_bias
            )
            torch.testing.assert_close(out[b, h], want, rtol=0, atol=1e-12)
    torch_out = F.scaled_dot_product_attention(q, torch.cat([k, k_ref], 2), torch.cat([v, v_ref], 2))
    torch.testing.assert_close(reference_attention(q, k, v, k_ref, v_ref), torch_out, rtol=0, atol=1e-12)


def test_reference_attention_properties():
    q, k, v = rand(1, 2, 4, 8, seed=1), rand(1, 2, 5, 8, seed=2), rand(1, 2, 5, 8, seed=3)
    # a reference that duplicates the own keys and values changes nothing (each key's weight halves, twice over)
    torch.testing.assert_close(
        reference_attention(q, k, v, k, v), F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-12
    )
    # a -inf bias on every reference key removes the reference
    k_ref, v_ref = rand(1, 2, 3, 8, seed=4), rand(1, 2, 3, 8, seed=5)
    drop = torch.full((1, 1, 1, 3), float("-inf"), dtype=F64)
    torch.testing.assert_close(
        reference_attention(q, k, v, k_ref, v_ref, drop), F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-12
    )
    out, weights = reference_attention(q, k, v, k_ref, v_ref, need_weights=True)
    assert weights.shape == (1, 2, 4, 8)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2, 4, dtype=F64))


def test_reference_attention_module_is_idm_vton_fusion():
    torch.manual_seed(0)
    layer = ReferenceAttention(16, 4).double().eval()
    x, garment = rand(2, 6, 16, seed=1), rand(2, 9, 16, seed=2)
    joint, _ = layer.attn(torch.cat([x, garment], 1))  # IDM-VTON: self-attention over [X; G] ...
    out, weights = layer(x, garment, need_weights=True)
    torch.testing.assert_close(out, joint[:, :6], rtol=0, atol=1e-12)  # ... keeping the first T rows
    assert weights.shape == (2, 6, 15)
    torch.testing.assert_close(layer(x)[0], layer.attn(x)[0], rtol=0, atol=0)
    bias = torch.zeros(2, 9, dtype=F64)
    bias[:, 4:] = float("-inf")  # DreamTuner: background reference tokens dropped
    torch.testing.assert_close(layer(x, garment, bias)[0], layer(x, garment[:, :4])[0], rtol=0, atol=1e-12)


def test_reference_attention_errors():
    q = rand(1, 2, 4, 8)
    with pytest.raises(ValueError, match="k_ref"):
        reference_attention(q, q, q, rand(2, 2, 3, 8), rand(2, 2, 3, 8))
    with pytest.raises(ValueError, match="ref_bias"):
        reference_attention(q, q, q, q, q, torch.zeros(1, 1, 1, 5, dtype=F64))
    with pytest.raises(TypeError, match="ref_bias"):
        reference_attention(q, q, q, q, q, torch.zeros(1, 1, 1, 4, dtype=torch.int64))
    keep = torch.tensor([True, False, True, True]).reshape(1, 1, 1, 4)  # bool: True = may attend
    additive = torch.zeros(1, 1, 1, 4, dtype=F64).masked_fill(~keep, float("-inf"))
    torch.testing.assert_close(reference_attention(q, q, q, q, q, keep), reference_attention(q, q, q, q, q, additive))
    layer = ReferenceAttention(8, 2).double()
    with pytest.raises(ValueError, match="reference must be"):
        layer(rand(1, 4, 8), rand(1, 3, 6))
    with pytest.raises(ValueError, match="reference_bias must have shape"):
        layer(rand(1, 4, 8), rand(1, 3, 8), torch.zeros(1, 4, dtype=F64))
    with pytest.raises(ValueError, match="needs a reference"):
        layer(rand(1, 4, 8), None, torch.zeros(1, 4, dtype=F64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        layer([1.0])


def test_decoupled_cross_attention_brute_force():
    torch.manual_seed(0)
    layer = DecoupledCrossAttention(12, 3, text_dim=5, image_dim=7, scale=0.6).double()
    x, text, image = rand(2, 4, 12, seed=1), rand(2, 6, 5, seed=2), rand(2, 3, 7, seed=3)
    out = layer(x, text, image)
    q = x @ layer.q_proj.weight.T
    kt, vt = text @ layer.k_proj.weight.T, text @ layer.v_proj.weight.T
    ki, vi = image @ layer.k_image.weight.T, image @ layer.v_image.weight.T
    want = torch.zeros(2, 4, 12, dtype=F64)
    for b in range(2):
        for h in range(3):
            s = slice(4 * h, 4 * h + 4)
            want[b, :, s] = softmax_attention_loop(q[b, :, s], kt[b, :, s], vt[b, :, s]) + 0.6 * softmax_attention_loop(
                q[b, :, s], ki[b, :, s], vi[b, :, s]
            )
    torch.testing.assert_close(out, layer.out_proj(want), rtol=0, atol=1e-12)
    # scale 0 (or no image) is text-only cross-attention; torch's multi-head attention with the same weights agrees
    ref = torch.nn.MultiheadAttention(12, 3, kdim=5, vdim=5, bias=False, batch_first=True).double()
    with torch.no_grad():
        ref.q_proj_weight.copy_(layer.q_proj.weight)
        ref.k_proj_weight.copy_(layer.k_proj.weight)
        ref.v_proj_weight.copy_(layer.v_proj.weight)
        ref.out_proj.weight.copy_(layer.out_proj.weight)
    expected = ref(x, text, text, need_weights=False)[0] + layer.out_proj.bias
    torch.testing.assert_close(layer(x, text, image, scale=0.0), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer(x, text), expected, rtol=0, atol=1e-12)


def test_decoupled_cross_attention_errors():
    with pytest.raises(ValueError, match="must divide"):
        DecoupledCrossAttention(10, 3, 4, 4)
    with pytest.raises(ValueError, match="image_dim"):
        DecoupledCrossAttention(8, 2, 4, 0)
    layer = DecoupledCrossAttention(8, 2, 4, 6).double()
    with pytest.raises(ValueError, match="image must be"):
        layer(rand(1, 3, 8), rand(1, 2, 4), rand(1, 2, 4))
    with pytest.raises(ValueError, match="text must be 3-D"):
        layer(rand(1, 3, 8), rand(2, 4))


def region_loss_loop(weights, subject_of_key, regions):
    B, H, T_img, T_k = weights.shape
    S = regions.shape[1]
    total = 0.0
    for b in range(B):
        for s in range(S):
            keys = [j for j in range(T_k) if subject_of_key[j] == s]
            m = torch.stack([sum(weights[b, h, i, j] for h in range(H) for j in keys) for i in range(T_img)])
            m = m / m.sum()
            total = total - torch.log(sum(m[i] for i in range(T_img) if regions[b, s, i]))
    return total / (B * S)


def test_region_attention_loss():
    weights = torch.softmax(rand(2, 3, 10, 5, seed=1), dim=-1)
    subject_of_key = torch.tensor([0, 0, 1, -1, 1])
    regions = torch.zeros(2, 2, 10, dtype=torch.bool)
    regions[:, 0, :4] = True
    regions[:, 1, 5:] = True
    regions[1, 1, 2] = True
    torch.testing.assert_close(
        region_attention_loss(weights, subject_of_key, regions), region_loss_loop(weights, subject_of_key, regions)
    )
    inside = torch.zeros(2, 3, 10, 5, dtype=F64)  # all of each subject's mass inside its region: loss 0
    inside[:, :, :4, :2] = 1
    inside[:, :, 5:, 2] = inside[:, :, 5:, 4] = 1
    assert region_attention_loss(inside, subject_of_key, regions).abs() < 1e-7
    with pytest.raises(ValueError, match="every subject"):
        region_attention_loss(weights, torch.tensor([0, 0, 0, -1, 0]), regions)
    with pytest.raises(ValueError, match="regions must be a bool"):
        region_attention_loss(weights, subject_of_key, regions.double())
    with pytest.raises(ValueError, match="subject_of_key values"):
        region_attention_loss(weights, torch.tensor([0, 2, 1, -1, 1]), regions)


def test_attention_rollout_and_glca():
    A = [torch.softmax(rand(2, 6, 6, seed=s), -1) for s in range(3)]
    rollout = attention_rollout([a[:, None] for a in A])  # the book's rollout, one head per block
    want = torch.eye(6, dtype=F64).expand(2, 6, 6)
    for a in A:
        want = torch.stack([(0.5 * a[b] + 0.5 * torch.eye(6, dtype=F64)) @ want[b] for b in range(2)])
    torch.testing.assert_close(rollout, want)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 6, dtype=F64))
    q, k, v = rand(2, 2, 6, 4, seed=7), rand(2, 2, 6, 4, seed=8), rand(2, 2, 6, 4, seed=9)
    out, index = global_local_cross_attention(q, k, v, rollout, ratio=0.4)
    assert index.shape == (2, 2) and (index >= 1).all()
    for b in range(2):
        best = sorted(range(1, 6), key=lambda j: -rollout[b, 0, j].item())[:2]
        assert index[b].tolist() == best
        for h in range(2):
            torch.testing.assert_close(out[b, h], softmax_attention_loop(q[b, h, best], k[b, h], v[b, h]))
    full, _ = global_local_cross_attention(q, k, v, rollout, ratio=1.0)  # every patch query: plain attention rows
    torch.testing.assert_close(
        full.sort(dim=2).values, F.scaled_dot_product_attention(q, k, v)[:, :, 1:].sort(dim=2).values
    )
    with pytest.raises(ValueError, match="ratio"):
        global_local_cross_attention(q, k, v, rollout, ratio=0.0)
    with pytest.raises(ValueError, match="rollout must be"):
        global_local_cross_attention(q, k, v, rollout[:, :5, :5], ratio=0.5)


def test_proxy_affinity_attention_and_splice():
    feats, values = rand(2, 9, 5, seed=1), rand(2, 9, 3, seed=2)
    out = proxy_affinity_attention(feats, values, beta=1.2, gamma=3.0)
    for b in range(2):
        f = feats[b] / feats[b].norm(dim=-1, keepdim=True)
        s = f @ f.T
        s = 3.0 * (s - 1.2 * s.mean())
        for i in range(9):
            keep = [j for j in range(9) if s[i, j] >= 0]
            w = torch.exp(s[i, keep] - s[i, keep].max())
            torch.testing.assert_close(out[b, i], (w / w.sum()) @ values[b, keep])
    fmap, vmap = rand(1, 5, 4, 6, seed=3), rand(1, 3, 4, 6, seed=4)
    spliced = splice_then_aggregate(fmap, vmap, window=2)
    for r in range(0, 4, 2):
        for c in range(0, 6, 2):
            f = fmap[:, :, r : r + 2, c : c + 2].flatten(2).transpose(1, 2)
            v = vmap[:, :, r : r + 2, c : c + 2].flatten(2).transpose(1, 2)
            want = proxy_affinity_attention(f, v).transpose(1, 2).reshape(1, 3, 2, 2)
            torch.testing.assert_close(spliced[:, :, r : r + 2, c : c + 2], want)
    identity = torch.eye(24, dtype=F64)[None]
    torch.testing.assert_close(splice_then_aggregate(fmap, vmap, 2, identity), spliced)
    uniform = torch.full((1, 24, 24), 1 / 24, dtype=F64)
    torch.testing.assert_close(
        splice_then_aggregate(fmap, vmap, 2, uniform), spliced.mean((2, 3), keepdim=True).expand_as(spliced)
    )
    same = torch.ones(1, 4, 3, dtype=F64, requires_grad=True)  # all cosines 1: S' = gamma (1 - beta) < 0
    empty = proxy_affinity_attention(same, values[:1, :4])
    assert torch.equal(empty, torch.zeros_like(empty))
    empty.sum().backward()
    assert torch.isfinite(same.grad).all()
    with pytest.raises(ValueError, match="window"):
        splice_then_aggregate(fmap, vmap, window=3)
    with pytest.raises(ValueError, match="global_affinity"):
        splice_then_aggregate(fmap, vmap, 2, identity[:, :10])
    with pytest.raises(ValueError, match="values"):
        proxy_affinity_attention(feats, values[:, :4])


def test_closed_form_edit_is_the_least_squares_solution():
    W0, K, V = rand(4, 6, seed=1), rand(3, 6, seed=2), rand(3, 4, seed=3)
    lam = 0.7
    W = closed_form_edit(W0, K, V, lam)
    # independent reference: the stacked least-squares problem [K; sqrt(lam) I] W^T = [V; sqrt(lam) W0^T]
    A = torch.cat([K, math.sqrt(lam) * torch.eye(6, dtype=F64)])
    Y = torch.cat([V, math.sqrt(lam) * W0.T])
    torch.testing.assert_close(W, torch.linalg.lstsq(A, Y).solution.T)
    torch.testing.assert_close(closed_form_edit(W0, K, V, 1e-9) @ K.T, V.T, rtol=0, atol=1e-6)  # fits the targets
    torch.testing.assert_close(closed_form_edit(W0, K, V, 1e9), W0, rtol=0, atol=1e-6)  # keeps W0
    keep = K @ W0.T  # targets equal to what W0 already gives, but for one key: a rank-one change
    keep[1] = V[1]
    change = closed_form_edit(W0.float(), K.float(), keep.float(), 1e-3).double() - W0.float().double()
    singular = torch.linalg.svdvals(change)
    assert singular[1] < 1e-5 * singular[0]
    with pytest.raises(ValueError, match="strength"):
        closed_form_edit(W0, K, V, 0.0)
    with pytest.raises(ValueError, match="targets"):
        closed_form_edit(W0, K, V[:, :3])


def test_conditioned_shapes():
    data = conditioned_shapes(50, image_size=8, shape_size=3, seed=4)
    assert data.images.shape == (50, 3, 8, 8) and data.tokens.shape == (50, 3)
    again = conditioned_shapes(50, image_size=8, shape_size=3, seed=4)
    assert torch.equal(data.images, again.images) and torch.equal(data.tokens, again.tokens)
    for i in range(50):
        lit = data.images[i] > 0  # (3, S, S)
        assert lit.any((1, 2)).nonzero().flatten().tolist() == [int(data.colour[i])]  # one colour channel
        rows, cols = lit.any(0).nonzero().T
        assert int(rows.float().mean() >= 4) * 2 + int(cols.float().mean() >= 4) == int(data.quadrant[i])
        r, c = data.corner[i].tolist()
        assert torch.equal(lit[data.colour[i], r : r + 3, c : c + 3], draw_shape(int(data.shape[i]), 3))
    assert (
        data.tokens[:, 0].max() < 3 <= data.tokens[:, 1].min()
        and data.tokens[:, 1].max() < 6 <= data.tokens[:, 2].min()
    )
    with pytest.raises(ValueError, match="shape_size"):
        conditioned_shapes(4, image_size=8, shape_size=5)
    with pytest.raises(ValueError, match="num_samples"):
        conditioned_shapes(0)
    with pytest.raises(ValueError, match="shape must be"):
        draw_shape(3, 4)

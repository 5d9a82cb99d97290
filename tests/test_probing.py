"""Attentive and efficient probing (attnbook.attention.probing) against PyTorch's attention with copied weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnbook.attention.probing import AttentiveProbe, EfficientProbe, efficient_probing


@pytest.mark.parametrize("num_heads, num_queries", [(1, 1), (4, 1), (2, 3)])
def test_attentive_probe_matches_torch_multihead_attention(num_heads, num_queries):
    torch.manual_seed(0)
    probe = AttentiveProbe(16, num_heads, num_queries).double()
    ref = nn.MultiheadAttention(16, num_heads, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.normal_()
        ref.in_proj_bias.normal_()
        ref.out_proj.bias.normal_()
        probe.queries.normal_()
    probe.attn.load_torch(ref)
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    out, weights = probe(x, need_weights=True)
    expected, ref_weights = ref(probe.queries.expand(3, -1, -1), x, x, average_attn_weights=False)
    assert out.shape == (3, num_queries * 16) and weights.shape == (3, num_heads, num_queries, 7)
    torch.testing.assert_close(out, expected.flatten(1), rtol=0, atol=1e-12)
    torch.testing.assert_close(weights, ref_weights, rtol=0, atol=1e-12)


def test_attentive_probe_is_permutation_invariant_and_classifies():
    torch.manual_seed(0)
    probe = AttentiveProbe(8, 2, 2, num_classes=5)
    x = torch.randn(4, 6, 8)
    logits = probe(x)
    assert logits.shape == (4, 5)
    torch.testing.assert_close(probe(x[:, torch.randperm(6)]), logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_queries, d_out", [(1, 1), (4, 1), (2, 2), (8, 2)])
def test_efficient_probing_matches_sdpa_and_concatenates(num_queries, d_out):
    torch.manual_seed(0)
    B, T, D = 3, 9, 16
    probe = EfficientProbe(D, num_queries, d_out).double()
    with torch.no_grad():
        probe.queries.normal_()
    x = torch.randn(B, T, D, dtype=torch.float64)
    out, weights = probe(x, need_weights=True)
    assert out.shape == (B, D // d_out) and weights.shape == (B, num_queries, T)
    # SDPA with one "head" per query: the query compares with the raw tokens, reads only its own value chunk
    q = probe.queries[None, :, None, :].expand(B, -1, -1, -1)  # (B, M, 1, D)
    k = x[:, None].expand(-1, num_queries, -1, -1)  # (B, M, T, D)
    v = probe.value(x).reshape(B, T, num_queries, -1).transpose(1, 2)  # (B, M, T, D_v / M)
    expected = F.scaled_dot_product_attention(q, k, v).reshape(B, -1)  # (B, D_v): concatenated, not averaged
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # brute force, query by query
    for m in range(num_queries):
        a = torch.softmax(x @ probe.queries[m] / D**0.5, dim=-1)  # (B, T)
        width = D // d_out // num_queries
        chunk = probe.value(x)[..., m * width : (m + 1) * width]  # (B, T, width)
        torch.testing.assert_close(
            out[:, m * width : (m + 1) * width], torch.einsum("bt,btc->bc", a, chunk), rtol=0, atol=1e-12
        )
        torch.testing.assert_close(weights[:, m], a, rtol=0, atol=1e-12)


def test_efficient_probe_has_only_the_value_projection():
    probe = EfficientProbe(12, 3, 2)
    names = {n for n, _ in probe.named_parameters()}
    assert names == {"queries", "value.weight"}
    assert probe.value.weight.shape == (6, 12)


def test_probing_bad_inputs():
    with pytest.raises(ValueError, match="num_queries=5 must divide"):
        EfficientProbe(16, 5)
    with pytest.raises(ValueError, match="d_out=3 must divide dim=16"):
        EfficientProbe(16, 1, 3)
    with pytest.raises(TypeError, match="num_queries must be an int"):
        AttentiveProbe(16, 2, 1.5)
    with pytest.raises(ValueError, match="num_heads=3 must divide embed_dim=16"):
        AttentiveProbe(16, 3)
    with pytest.raises(ValueError, match=r"tokens must have shape \(B, T, D=16\)"):
        AttentiveProbe(16)(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"EfficientProbe: tokens must have shape"):
        EfficientProbe(16)(torch.randn(5, 16))
    with pytest.raises(TypeError, match="tokens must be a torch.Tensor"):
        EfficientProbe(16)([1.0])
    with pytest.raises(ValueError, match="value must be"):
        efficient_probing(torch.randn(2, 5, 8), torch.randn(3, 8), torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="queries"):
        efficient_probing(torch.randn(2, 5, 8), torch.randn(3, 4), torch.randn(2, 5, 6))

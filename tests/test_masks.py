"""Tests of the mask helpers in :mod:`attnbook.attention.masks` (chapter 03): ``True`` = may attend."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention.functional import scaled_dot_product_attention
from attnbook.attention.masks import (
    causal_mask,
    combine_masks,
    from_torch_convention,
    fully_masked_rows,
    key_mask_to_attn_mask,
    padding_mask,
    to_additive,
)


def test_causal_mask_is_lower_triangular():
    assert torch.equal(causal_mask(4), torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]).bool())
    assert causal_mask(2, 5).shape == (2, 5) and causal_mask(2, 5).sum() == 3  # top-left aligned, like PyTorch


@given(q_len=st.integers(1, 9), k_len=st.integers(1, 9))
@settings(max_examples=30, deadline=None)
def test_causal_mask_equals_pytorch_is_causal(q_len, k_len):
    q, k = torch.randn(1, q_len, 4, dtype=torch.float64), torch.randn(1, k_len, 4, dtype=torch.float64)
    v = torch.randn(1, k_len, 3, dtype=torch.float64)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(q_len, k_len))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_causal_mask_offset_for_decoding_with_a_cache():
    """The last 2 queries of 5 positions see keys up to their own position."""
    m = causal_mask(2, 5, offset=3)
    assert torch.equal(m, causal_mask(5)[3:])
    with pytest.raises(ValueError, match=r"q_len and k_len must be >= 0, got q_len=-1, k_len=3"):
        causal_mask(-1, 3)


def test_padding_mask_marks_real_positions():
    m = padding_mask([3, 1, 0], max_len=4)
    assert m.dtype == torch.bool and m.shape == (3, 4)
    assert m.sum(1).tolist() == [3, 1, 0] and torch.equal(m[0], torch.tensor([True, True, True, False]))
    assert padding_mask(torch.tensor([2, 5])).shape == (2, 5)
    with pytest.raises(ValueError, match=r"lengths must be 1-D \(B,\), got shape \(2, 1\)"):
        padding_mask(torch.tensor([[1], [2]]))
    with pytest.raises(ValueError, match=r"lengths must be >= 0, got \[2, -1\]"):
        padding_mask([2, -1])
    with pytest.raises(ValueError, match=r"max_len=2 is shorter than the longest length 3"):
        padding_mask([3, 1], max_len=2)


def test_key_mask_broadcasts_over_heads_and_queries():
    key_mask = padding_mask([2, 3])  # (B, T_k)
    m = key_mask_to_attn_mask(key_mask)
    assert m.shape == (2, 1, 1, 3)
    q = torch.randn(2, 4, 5, 8, dtype=torch.float64)
    kv = torch.randn(2, 4, 3, 8, dtype=torch.float64)
    out = scaled_dot_product_attention(q, kv, kv, m)
    torch.testing.assert_close(out[0], scaled_dot_product_attention(q[:1], kv[:1, :, :2], kv[:1, :, :2])[0])
    with pytest.raises(ValueError, match=r"key_mask must have shape \(B, T_k\), got \(3,\)"):
        key_mask_to_attn_mask(torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"key_mask must be a bool tensor.*torch.int64"):
        key_mask_to_attn_mask(torch.ones(2, 3, dtype=torch.long))


def test_to_additive():
    m = torch.tensor([[True, False], [False, False]])
    add = to_additive(m, torch.float64)
    assert add.dtype == torch.float64 and add[0, 0] == 0 and torch.isneginf(add[0, 1]) and torch.isneginf(add[1]).all()
    assert to_additive(torch.ones(2, dtype=torch.float16)).dtype == torch.float32


@given(seed=st.integers(0, 2**16), density=st.floats(0.2, 1.0))
@settings(max_examples=25, deadline=None)
def test_boolean_and_additive_forms_give_the_same_attention(seed, density):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 2, 4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    a = torch.rand(4, 4, generator=g) < density
    b = torch.rand(2, 1, 1, 4, generator=g) < density
    both_bool = combine_masks(a, b)
    both_add = combine_masks(a, to_additive(b, torch.float64), dtype=torch.float64)
    assert both_bool.dtype == torch.bool and both_add.dtype == torch.float64
    assert torch.equal(both_bool, a & b)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, both_add), scaled_dot_product_attention(q, k, v, both_bool)
    )
    assert torch.equal(fully_masked_rows(both_bool), fully_masked_rows(both_add))


def test_combine_masks_skips_none_and_adds_biases():
    assert combine_masks(None, None) is None
    a = torch.tensor([[True, False]])
    assert combine_masks(None, a) is a
    bias = torch.tensor([[0.5, 1.0]])
    out = combine_masks(a, bias, dtype=torch.float32)
    assert out[0, 0] == 0.5 and torch.isneginf(out[0, 1])


def test_from_torch_convention_matches_multihead_attention():
    """``torch.nn.MultiheadAttention`` blocks where its boolean mask is True; the book attends there."""
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(4, 1, batch_first=True, bias=False).double()
    x = torch.randn(1, 5, 4, dtype=torch.float64)
    blocked = ~causal_mask(5)
    want, _ = mha(x, x, x, attn_mask=blocked)
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    out = scaled_dot_product_attention(x @ w_q.T, x @ w_k.T, x @ w_v.T, from_torch_convention(blocked))
    torch.testing.assert_close(mha.out_proj(out), want)
    additive = to_additive(causal_mask(5), torch.float64)
    assert from_torch_convention(additive) is additive


def test_fully_masked_rows():
    m = torch.tensor([[True, False], [False, False]])
    assert fully_masked_rows(m).tolist() == [[False], [True]]
    assert fully_masked_rows(to_additive(m)).tolist() == [[False], [True]]
    big_negative = torch.tensor([[-1e9, -1e9]])  # finite: softmax still spreads weight uniformly, not empty
    assert fully_masked_rows(big_negative).tolist() == [[False]]
    assert math.isclose(float(torch.softmax(big_negative, -1)[0, 0]), 0.5)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.complex64], ids=str)
def test_masks_that_are_neither_bool_nor_float_are_rejected(dtype):
    """An integer 0/1 mask read as an additive bias would mask nothing (adding 0 or 1 forbids no key)."""
    ones_and_zeros = causal_mask(4).to(dtype)
    for fn in (to_additive, from_torch_convention, fully_masked_rows):
        with pytest.raises(TypeError, match=rf"mask must be bool .* or floating .*got dtype {dtype}.*\(4, 4\)"):
            fn(ones_and_zeros)
    with pytest.raises(TypeError, match=rf"combine_masks: mask 1 must be bool .*got dtype {dtype}"):
        combine_masks(causal_mask(4), ones_and_zeros)
    with pytest.raises(TypeError, match=rf"combine_masks: mask 0 must be bool .*got dtype {dtype}"):
        combine_masks(ones_and_zeros, None, torch.zeros(4, 4))
    with pytest.raises(TypeError, match="mask must be a torch.Tensor, got list"):
        to_additive([[True]])


def test_converted_integer_masks_mean_what_they_say():
    """The error's advice works: ``.bool()`` reads 1 as "may attend", ``.float()`` as a bias of +1."""
    ints = causal_mask(3).long()
    assert torch.equal(to_additive(ints.bool()), to_additive(causal_mask(3)))
    assert torch.equal(combine_masks(ints.float(), torch.zeros(3, 3)), ints.float())

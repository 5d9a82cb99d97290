"""FunctionCore: a mechanism given as fn(q, k, v) drops into multi-head attention and the Transformer blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention import FunctionCore, MultiHeadAttention
from attnbook.attention.local import sliding_window_attention, sliding_window_mask
from attnbook.attention.tiled import tiled_attention
from attnbook.models.transformer import EncoderBlock


def test_function_core_with_exact_attention_equals_the_standard_core():
    torch.manual_seed(0)
    standard = MultiHeadAttention(32, 4).double()
    wrapped = MultiHeadAttention(32, 4, core=FunctionCore(F.scaled_dot_product_attention)).double()
    wrapped.load_state_dict(standard.state_dict())
    x = torch.randn(3, 11, 32, dtype=torch.float64)
    torch.testing.assert_close(wrapped(x, x, x)[0], standard(x, x, x)[0])


def test_tiled_attention_in_an_encoder_block_equals_the_standard_block():
    torch.manual_seed(1)
    standard = EncoderBlock(16, 2, activation="gelu", norm_first=True).double()
    tiled = EncoderBlock(
        16, 2, activation="gelu", norm_first=True,
        core=lambda: FunctionCore(lambda q, k, v: tiled_attention(q, k, v, block_q=4, block_k=4), "tiled"),
    ).double()  # fmt: skip
    tiled.load_state_dict(standard.state_dict())
    x = torch.randn(2, 13, 16, dtype=torch.float64, requires_grad=True)
    out, ref = tiled(x), standard(x)
    torch.testing.assert_close(out, ref)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g, g_ref)


def test_a_local_mechanism_equals_the_standard_core_with_its_mask():
    torch.manual_seed(2)
    window = 5
    local = MultiHeadAttention(16, 2, core=FunctionCore(lambda q, k, v: sliding_window_attention(q, k, v, window)))
    standard = MultiHeadAttention(16, 2).double()
    local = local.double()
    local.load_state_dict(standard.state_dict())
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    mask = sliding_window_mask(12, window_size=window)
    torch.testing.assert_close(local(x, x, x)[0], standard(x, x, x, attn_mask=mask)[0])


def test_refusals_name_the_function_and_the_argument():
    core = FunctionCore(F.scaled_dot_product_attention, "sdpa")
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match=r"FunctionCore\(sdpa\).*no mask"):
        core(q, q, q, torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="is_causal"):
        core(q, q, q, is_causal=True)
    with pytest.raises(ValueError, match="need_weights"):
        MultiHeadAttention(8, 2, core=core)(torch.randn(1, 5, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8),
                                           need_weights=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"fn returned \(1, 2, 4\), expected shape \(1, 2, 5, 4\)"):
        FunctionCore(lambda q, k, v: v[..., 0, :])(q, q, q)
    with pytest.raises(TypeError, match="callable"):
        FunctionCore("sdpa")  # type: ignore[arg-type]

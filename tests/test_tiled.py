"""Tiled ("flash") attention and the online softmax (chapter 07): equal to PyTorch's SDPA and to the brute-force
definition in float64, forward and backward, for odd lengths, causal and padding masks, T_q != T_k."""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention import tiled as tiled_module
from attnbook.attention.tiled import (
    online_softmax,
    online_softmax_stats,
    tiled_attention,
    tiled_attention_backward,
    tiled_attention_forward,
)
from attnbook.profiling import peak_memory

TOL64 = {"atol": 1e-12, "rtol": 1e-12}
ROOT = Path(__file__).resolve().parents[1]

scores_rows = st.lists(
    st.one_of(st.floats(-300, 300, allow_nan=False), st.just(-math.inf)), min_size=1, max_size=40
).filter(lambda row: any(math.isfinite(x) for x in row))


@settings(max_examples=200, deadline=None)
@given(row=scores_rows, block_size=st.integers(1, 50))
def test_online_softmax_equals_softmax(row, block_size):
    x = torch.tensor(row, dtype=torch.float64)
    torch.testing.assert_close(online_softmax(x, block_size), torch.softmax(x, -1), **TOL64)
    m, total = online_softmax_stats(x, block_size)
    assert m.item() == max(row)
    assert math.isclose(total.item(), sum(math.exp(s - max(row)) for s in row), rel_tol=1e-12)


@settings(max_examples=50, deadline=None)
@given(rows=st.integers(1, 5), cols=st.integers(1, 30), block_size=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_online_softmax_batched_and_large_scores(rows, cols, block_size, seed):
    gen = torch.Generator().manual_seed(seed)
    x = 1e4 * torch.randn(rows, cols, generator=gen, dtype=torch.float64)  # exp would overflow without the shift
    torch.testing.assert_close(online_softmax(x, block_size), torch.softmax(x, -1), **TOL64)
    assert torch.isfinite(online_softmax(x.float(), block_size)).all()


def test_online_softmax_empty_row_gives_zeros():
    x = torch.tensor([[-math.inf, -math.inf], [0.0, 1.0]])
    out = online_softmax(x, 1)
    assert torch.equal(out[0], torch.zeros(2))
    m, total = online_softmax_stats(x)
    assert m[0].item() == -math.inf and total[0].item() == 0


def brute_force(q, k, v, mask=None, is_causal=False, scale=None):
    """The definition softmax(scale q k^T + M) v, one explicit exp and sum; empty rows give zeros."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = scale * q @ k.transpose(-2, -1)  # (..., T_q, T_k)
    keep = torch.ones(s.shape, dtype=torch.bool)
    if mask is not None and mask.dtype == torch.bool:
        keep = keep & mask
    elif mask is not None:
        s = s + mask
    if is_causal:
        keep = keep & torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    s = s.masked_fill(~keep, -math.inf)
    row_max = s.amax(-1, keepdim=True)
    e = torch.exp(s - torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max)))
    total = e.sum(-1, keepdim=True)
    return (e / torch.where(total > 0, total, torch.ones_like(total))) @ v


def sdpa(q, k, v, mask=None, is_causal=False, scale=None):
    """PyTorch's kernel; it takes no mask together with is_causal, so the two are combined into one mask."""
    if is_causal and mask is not None:
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        mask = mask & causal if mask.dtype == torch.bool else mask.masked_fill(~causal, -math.inf)
        is_causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


def make_inputs(T_q, T_k, d=8, d_v=6, batch=(2, 3), seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, T_q, d, generator=gen, dtype=dtype).requires_grad_()
    k = torch.randn(*batch, T_k, d, generator=gen, dtype=dtype).requires_grad_()
    v = torch.randn(*batch, T_k, d_v, generator=gen, dtype=dtype).requires_grad_()
    return q, k, v


def make_mask(kind, T_q, T_k, seed=1):
    gen = torch.Generator().manual_seed(seed)
    if kind is None:
        return None
    if kind == "padding":  # (B, 1, 1, T_k): the second sequence's last keys are padding
        lengths = torch.tensor([T_k, max(1, T_k - 5)])
        return (torch.arange(T_k) < lengths[:, None])[:, None, None, :]
    if kind == "bool":
        return torch.rand(2, 3, T_q, T_k, generator=gen) > 0.3
    if kind == "additive":
        return torch.randn(T_q, T_k, generator=gen, dtype=torch.float64)
    raise ValueError(kind)


SHAPES = [(1, 1), (7, 13), (13, 7), (33, 65), (64, 64), (100, 37)]
BLOCKS = [(4, 8), (5, 3), (16, 16), (128, 128)]


@pytest.mark.parametrize("T_q, T_k", SHAPES)
@pytest.mark.parametrize("block_q, block_k", BLOCKS)
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "padding", "bool", "additive"])
def test_forward_and_gradients_equal_sdpa_and_brute_force(T_q, T_k, block_q, block_k, is_causal, mask_kind):
    q, k, v = make_inputs(T_q, T_k)
    mask = make_mask(mask_kind, T_q, T_k)
    out = tiled_attention(q, k, v, mask, is_causal=is_causal, block_q=block_q, block_k=block_k)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    for reference in (brute_force, sdpa):
        want = reference(q, k, v, mask, is_causal)
        torch.testing.assert_close(out, want, **TOL64)
        for got, expected in zip(grads, torch.autograd.grad(want, (q, k, v), grad_out), strict=True):
            torch.testing.assert_close(got, expected, **TOL64)


@pytest.mark.parametrize("is_causal", [False, True])
def test_log_sum_exp_and_explicit_backward(is_causal):
    q, k, v = make_inputs(21, 30)
    mask = make_mask("padding", 21, 30)
    out, lse = tiled_attention_forward(q, k, v, mask, is_causal=is_causal, block_q=8, block_k=7)
    s = q @ k.transpose(-2, -1) / math.sqrt(8)
    keep = mask & (torch.ones(21, 30, dtype=torch.bool).tril() if is_causal else True)
    torch.testing.assert_close(lse, torch.logsumexp(s.masked_fill(~keep, -math.inf), -1), **TOL64)
    grad_out = torch.randn_like(out)
    got = tiled_attention_backward(q, k, v, out, lse, grad_out, mask, is_causal=is_causal, block_q=8, block_k=7)
    want = torch.autograd.grad(brute_force(q, k, v, mask, is_causal), (q, k, v), grad_out)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **TOL64)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "padding", "additive"])
def test_gradcheck(is_causal, mask_kind):
    q, k, v = make_inputs(7, 9, d=4, d_v=3, batch=(2,))
    mask = make_mask(mask_kind, 7, 9)
    if mask is not None and mask.ndim == 4:
        mask = mask[:, 0]  # (B, 1, T_k) for 3-D inputs
    fn = lambda q, k, v: tiled_attention(q, k, v, mask, is_causal=is_causal, block_q=3, block_k=4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_scale_two_dim_inputs_and_single_grads():
    q, k, v = make_inputs(9, 11, batch=())
    out = tiled_attention(q, k, v, scale=0.3, block_q=4, block_k=4)
    torch.testing.assert_close(out, brute_force(q, k, v, scale=0.3), **TOL64)
    (grad_v,) = torch.autograd.grad(tiled_attention(q.detach(), k.detach(), v, block_q=2, block_k=5).sum(), (v,))
    (want,) = torch.autograd.grad(brute_force(q.detach(), k.detach(), v).sum(), (v,))
    torch.testing.assert_close(grad_v, want, **TOL64)


def test_rows_that_see_no_key_give_zeros_and_finite_gradients():
    q, k, v = make_inputs(6, 10, batch=(2,))
    mask = torch.ones(2, 6, 10, dtype=torch.bool)
    mask[0, 2] = False  # one query sees nothing
    mask[1, :, 4:] = False  # the second sequence's keys 4.. are padding
    out = tiled_attention(q, k, v, mask, block_q=4, block_k=3)
    assert torch.equal(out[0, 2], torch.zeros(6, dtype=torch.float64))
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.equal(grads[0][0, 2], torch.zeros(8, dtype=torch.float64))
    torch.testing.assert_close(out, brute_force(q, k, v, mask), **TOL64)
    padded = torch.ones(1, 1, 4, dtype=torch.bool)
    padded[..., 0] = False  # causal + key 0 padding: query 0 sees no key
    out = tiled_attention(*(t[:1, :4, :] for t in (q, k, v)), padded, is_causal=True, block_q=2, block_k=2)
    assert torch.equal(out[0, 0], torch.zeros(6, dtype=torch.float64)) and torch.isfinite(out).all()


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_lower_precision_is_close_and_does_not_overflow(dtype, tol):
    q, k, v = (t.detach() for t in make_inputs(40, 50, d=64, d_v=64))
    q = q * 30  # scores of several hundred: exp overflows in every dtype without the running maximum
    want = sdpa(q, k, v, is_causal=True)
    got = tiled_attention(q.to(dtype), k.to(dtype), v.to(dtype), is_causal=True, block_q=16, block_k=16)
    assert got.dtype == dtype and torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, atol=tol * 10, rtol=tol * 10)
    q32, k32, v32 = (t.to(dtype).requires_grad_() for t in (q / 30, k, v))
    grads = torch.autograd.grad(tiled_attention(q32, k32, v32, block_q=16, block_k=16).sum(), (q32, k32, v32))
    assert all(g.dtype == dtype and torch.isfinite(g).all() for g in grads)


def test_memory_grows_linearly():
    """Peak tensor memory of forward + backward: tiled doubles with T, the materialised definition quadruples."""

    def step(fn, T):
        q, k, v = make_inputs(T, T, d=16, d_v=16, batch=(1, 2), dtype=torch.float32)
        return peak_memory(lambda: fn(q, k, v).sum().backward())

    tiled = lambda q, k, v: tiled_attention(q, k, v, is_causal=True, block_q=32, block_k=32)  # noqa: E731
    ratio_tiled = step(tiled, 512) / step(tiled, 256)
    ratio_naive = step(brute_force, 512) / step(brute_force, 256)
    assert ratio_tiled < 2.2, ratio_tiled
    assert ratio_naive > 3.5, ratio_naive
    assert step(tiled, 512) < step(brute_force, 512) / 8


def test_bad_input_raises_clear_errors():
    q, k, v = (t.detach() for t in make_inputs(5, 6))
    for name in ("block_q", "block_k"):
        for bad in (0, -3, 2.5, True, "8"):
            with pytest.raises(ValueError, match=f"{name} must be a positive int, got {bad!r}"):
                tiled_attention(q, k, v, **{name: bad})
    with pytest.raises(ValueError, match=r"feature dim D.*q\(2, 3, 5, 8\).*k\(2, 3, 6, 7\)"):
        tiled_attention(q, k[..., :7], v)
    with pytest.raises(ValueError, match=r"same length T_k"):
        tiled_attention(q, k, v[..., :4, :])
    with pytest.raises(ValueError, match=r"batch/head dims"):
        tiled_attention(q, k[:1], v[:1])
    with pytest.raises(TypeError, match="floating tensor"):
        tiled_attention(q.long(), k, v)
    with pytest.raises(ValueError, match=r"mask of shape \(5, 7\) does not broadcast to .*\(2, 3, 5, 6\)"):
        tiled_attention(q, k, v, torch.ones(5, 7, dtype=torch.bool))
    with pytest.raises(TypeError, match="int64"):
        tiled_attention(q, k, v, torch.ones(5, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="requires grad"):
        tiled_attention(q, k, v, torch.zeros(5, 6, dtype=torch.float64, requires_grad=True))
    with pytest.raises(TypeError, match="is_causal must be a bool"):
        tiled_attention(q, k, v, is_causal=1)
    with pytest.raises(ValueError, match="scale must be a positive"):
        tiled_attention(q, k, v, scale=-1.0)
    out, lse = tiled_attention_forward(q, k, v)
    with pytest.raises(ValueError, match=r"lse must have shape \(2, 3, 5\), got \(2, 3, 4\)"):
        tiled_attention_backward(q, k, v, out, lse[..., :4], out)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 3, 5, 6\)"):
        tiled_attention_backward(q, k, v, out, lse, out[..., :2])
    for fn in (online_softmax, online_softmax_stats):
        with pytest.raises(ValueError, match="block_size must be a positive int"):
            fn(torch.zeros(3), 0)
        with pytest.raises(ValueError, match="non-empty last dim"):
            fn(torch.zeros(2, 0))


def test_no_unexpected_exports():
    assert set(tiled_module.__all__) == {
        "online_softmax",
        "online_softmax_stats",
        "tiled_attention",
        "tiled_attention_forward",
        "tiled_attention_backward",
        "TiledAttentionFunction",
    }


# The optional Triton kernel: it must import and refuse cleanly without Triton or a GPU, and run where both exist.


def test_triton_module_imports_and_refuses_cleanly_without_a_gpu():
    triton_flash = importlib.import_module("attnbook.attention.triton_flash")
    if triton_flash.triton_available():
        pytest.skip("Triton and a GPU are present: the kernel test below runs instead")
    q, k, v = (t.detach().float() for t in make_inputs(8, 8, d=16, d_v=16))
    with pytest.raises(RuntimeError, match="needs the triton package and a CUDA GPU.*tiled_attention"):
        triton_flash.triton_flash_attention(q, k, v)
    with pytest.raises(ValueError, match="power of two"):
        triton_flash.triton_flash_attention(q[..., :12], k[..., :12], v[..., :12])


def _gpu_and_triton() -> bool:
    try:
        return importlib.import_module("attnbook.attention.triton_flash").triton_available()
    except ImportError:
        return False


@pytest.mark.skipif(not _gpu_and_triton(), reason="needs triton and a CUDA GPU")
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_kernel_equals_sdpa_on_gpu(is_causal, dtype):  # pragma: no cover - runs on a GPU machine only
    from attnbook.attention.triton_flash import triton_flash_attention

    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 3, 200, 64, generator=gen, device="cuda", dtype=dtype, requires_grad=True) for _ in "qkv")
    out = triton_flash_attention(q, k, v, is_causal=is_causal)
    want = F.scaled_dot_product_attention(*(t.float() for t in (q, k, v)), is_causal=is_causal)
    torch.testing.assert_close(out.float(), want, atol=2e-2, rtol=2e-2)
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    wants = torch.autograd.grad(want.sum(), (q, k, v))
    for g, w in zip(grads, wants, strict=True):
        torch.testing.assert_close(g.float(), w, atol=5e-2, rtol=5e-2)


INTERPRETER_CHECK = """
import torch, torch.nn.functional as F
from attnbook.attention import triton_flash
torch.manual_seed(0)
for is_causal in (False, True):
    for T_q, T_k in ((70, 70), (100, 37), (37, 100)):  # lengths that no block of 64 divides, T_q != T_k
        q, k, v = (torch.randn(2, 2, T, 16, dtype=torch.float64).float().requires_grad_() for T in (T_q, T_k, T_k))
        out = triton_flash._TritonFlashFunction.apply(q, k, v, is_causal, 0.25)
        want = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=0.25)
        torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
        grad_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, (q, k, v), grad_out)
        for got, ref in zip(grads, torch.autograd.grad(want, (q, k, v), grad_out)):
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
print("interpreted kernel == SDPA")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs the triton package")
def test_triton_kernel_in_triton_interpreter_on_cpu():
    """Where Triton is installed but no GPU is present, Triton's interpreter runs the kernel on the CPU."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", INTERPRETER_CHECK], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "interpreted kernel == SDPA" in result.stdout

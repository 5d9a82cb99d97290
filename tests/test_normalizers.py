"""Sparsemax (attnbook.attention.normalizers) against two independent references: the sorting-based closed
form written as a float64 loop, and the simplex-projection definition solved by bisection on the threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnbook.attention.core import AttentionCore, MultiHeadAttention
from attnbook.attention.normalizers import SparsemaxNormalizer, sparsemax


def closed_form_reference(z: np.ndarray) -> np.ndarray:
    """Martins & Astudillo (2016), Algorithm 1, one row at a time in float64: sort, find k*, threshold."""
    out = np.zeros_like(z, dtype=np.float64)
    for row_index, row in enumerate(z.reshape(-1, z.shape[-1]).astype(np.float64)):
        visible = row[np.isfinite(row)]
        if visible.size == 0:
            continue
        s = np.sort(visible)[::-1]
        k_star, total = 0, 0.0
        for k in range(1, s.size + 1):
            total += s[k - 1]
            if 1 + k * s[k - 1] > total:
                k_star = k
        tau = (s[:k_star].sum() - 1) / k_star
        out.reshape(-1, z.shape[-1])[row_index] = np.where(np.isfinite(row), np.maximum(row - tau, 0), 0.0)
    return out


def projection_reference(z: np.ndarray, iterations: int = 200) -> np.ndarray:
    """The definition: the Euclidean projection onto the simplex, p = max(z - tau, 0) with sum(p) = 1.

    sum(max(z - tau, 0)) falls monotonically in tau, so bisection finds tau without sorting anything.
    """
    rows = z.reshape(-1, z.shape[-1]).astype(np.float64)
    out = np.zeros_like(rows)
    for r, row in enumerate(rows):
        finite = row[np.isfinite(row)]
        if finite.size == 0:
            continue
        lo, hi = finite.max() - 1.0, finite.max()  # sum >= 1 at lo, = 0 at hi
        for _ in range(iterations):
            mid = (lo + hi) / 2
            if np.maximum(finite - mid, 0).sum() > 1:
                lo = mid
            else:
                hi = mid
        out[r] = np.where(np.isfinite(row), np.maximum(row - (lo + hi) / 2, 0), 0.0)
    return out.reshape(z.shape)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (4, 17), (2, 3, 64)])
@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_matches_both_references(shape: tuple[int, ...], scale: float):
    torch.manual_seed(0)
    x = scale * torch.randn(shape, dtype=torch.float64)
    got = sparsemax(x).numpy()
    np.testing.assert_allclose(got, closed_form_reference(x.numpy()), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got, projection_reference(x.numpy()), rtol=0, atol=1e-10)


def test_is_the_projection():
    """No other point of the simplex is closer to z (the defining optimisation problem)."""
    torch.manual_seed(1)
    z = torch.randn(8, dtype=torch.float64)
    p = sparsemax(z)
    others = torch.distributions.Dirichlet(torch.ones(8, dtype=torch.float64)).sample((5000,))  # (5000, 8)
    assert ((others - z).norm(dim=-1) >= (p - z).norm() - 1e-12).all()


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_properties_and_dim(dim: int):
    torch.manual_seed(2)
    x = 3 * torch.randn(6, 7, 8)
    p = sparsemax(x, dim=dim)
    assert p.shape == x.shape and p.dtype == x.dtype and (p >= 0).all()
    torch.testing.assert_close(p.sum(dim), torch.ones(p.sum(dim).shape))
    assert (p == 0).any()  # sparse: at this scale some keys get exactly zero
    expect = sparsemax(x.movedim(dim, -1)).movedim(-1, dim)
    torch.testing.assert_close(p, expect, rtol=0, atol=0)
    # the same ordering as the logits: a larger logit never gets a smaller weight
    row = x.movedim(dim, -1)[0, 0]
    weights = p.movedim(dim, -1)[0, 0]
    order = row.argsort()
    assert (weights[order].diff() >= 0).all()


def test_limit_is_argmax_one_hot():
    torch.manual_seed(3)
    x = torch.randn(10, 12, dtype=torch.float64)
    top2 = x.topk(2).values
    gap = (top2[:, 0] - top2[:, 1]).min()
    one_hot = torch.nn.functional.one_hot(x.argmax(-1), 12).to(x.dtype)
    # exact once the scaled gap between the two largest logits reaches 1 (just over, against rounding), not before
    torch.testing.assert_close(sparsemax(x * (1.001 / gap)), one_hot, rtol=0, atol=0)
    assert (sparsemax(x * (0.5 / gap)) != one_hot).any()


def test_stable_at_large_logits():
    """Shift invariance holds in float32 at logits 1e4: the row maximum is subtracted first."""
    torch.manual_seed(4)
    x = torch.randn(16, 512)
    for shift in (1e4, -1e4):
        shifted = x + shift  # float32 logits near 1e4 (already rounded to their float32 spacing)
        expect = torch.from_numpy(closed_form_reference(shifted.double().numpy())).float()
        torch.testing.assert_close(sparsemax(shifted), expect, rtol=0, atol=1e-5)
    naive = x + 1e4  # the same closed form without the shift: cumulative sums of ~5e6 lose the unit digits
    expect = torch.from_numpy(closed_form_reference(naive.double().numpy())).float()
    z = naive.sort(-1, descending=True).values
    k = torch.arange(1, 513, dtype=z.dtype)
    csum = z.cumsum(-1)
    support = (1 + k * z > csum).sum(-1, keepdim=True).clamp_min(1)
    naive_out = (naive - (csum.gather(-1, support - 1) - 1) / support).clamp_min(0)
    assert (naive_out - expect).abs().max() > 1e-4  # 10x the tolerance above: so the check above can fail


def test_masked_rows_zero_and_finite_gradients():
    x = torch.randn(3, 5, dtype=torch.float64)
    x[0] = float("-inf")  # fully masked
    x[1, :2] = float("-inf")  # partly masked
    x.requires_grad_(True)
    p = sparsemax(x)
    assert (p[0] == 0).all() and (p[1, :2] == 0).all() and not p.isnan().any()
    torch.testing.assert_close(p[1:].sum(-1), torch.ones(2, dtype=torch.float64))
    expect = closed_form_reference(x.detach().numpy())
    np.testing.assert_allclose(p.detach().numpy(), expect, rtol=0, atol=1e-12)
    (p * torch.randn(3, 5, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[0] == 0).all()


def test_gradient_is_the_closed_form_jacobian():
    """J = diag(s) - s s^T / |S| with s the support indicator (Martins & Astudillo 2016, Eq. 12)."""
    torch.manual_seed(5)
    z = 2 * torch.randn(9, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(sparsemax, z)
    s = (sparsemax(z) > 0).to(z.dtype)
    torch.testing.assert_close(jacobian, torch.diag(s) - torch.outer(s, s) / s.sum(), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(sparsemax, (z.clone().requires_grad_(True),))


def test_half_precision():
    torch.manual_seed(6)
    x = (4 * torch.randn(4, 33)).half()
    p = sparsemax(x)
    assert p.dtype == torch.float16 and not p.isnan().any()
    torch.testing.assert_close(p.float(), sparsemax(x.float()), rtol=0, atol=1e-3)


def test_normalizer_in_attention_core():
    torch.manual_seed(7)
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4)
    mask = torch.rand(2, 1, 5, 6) > 0.3
    mask[0, 0, 0] = False  # one query with nothing to see
    core = AttentionCore(normalizer=SparsemaxNormalizer())
    out, w = core(q, k, v, mask, need_weights=True)
    logits = (q @ k.transpose(-2, -1)) / 2.0  # (B, H, T_q, T_k); scale 1/sqrt(4)
    expect = sparsemax(logits.masked_fill(~mask, float("-inf")))
    torch.testing.assert_close(w, expect)
    torch.testing.assert_close(out, expect @ v)
    assert (w[0, :, 0] == 0).all() and (w[~mask.expand_as(w)] == 0).all()
    additive = torch.zeros(2, 1, 5, 6).masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(core(q, k, v, additive, need_weights=True)[1], w)
    assert not core.can_fuse()
    mha = MultiHeadAttention(12, 3, core=AttentionCore(normalizer=SparsemaxNormalizer()))
    y, weights = mha(torch.randn(2, 7, 12), is_causal=True, need_weights=True, average_attn_weights=False)
    assert y.shape == (2, 7, 12) and (weights.triu(1) == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 7))


def test_bad_inputs():
    with pytest.raises(TypeError, match="floating-point"):
        sparsemax(torch.arange(4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        sparsemax([1.0, 2.0])
    with pytest.raises(ValueError, match="dim=2"):
        sparsemax(torch.randn(3, 4), dim=2)
    with pytest.raises(ValueError, match="scalar"):
        sparsemax(torch.tensor(1.0))
    with pytest.raises(ValueError, match="NaN"):
        sparsemax(torch.tensor([1.0, float("nan")]))

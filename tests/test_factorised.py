"""Factorised and grouped attention (chapter 09): axial, Combiner, long-range grouping, Group Pose, DaViT channels.

Each mechanism equals full attention under its explicit mask (or its exact limit) in float64; axial attention and
DaViT's channel attention match lucidrains' ``axial-attention`` and timm's DaViT with copied weights.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention.axial import AxialAttention, axial_attention, axial_attention_2d, axial_mask
from attnbook.attention.factorised import combiner_attention, combiner_weights
from attnbook.attention.grouped import (
    ChannelGroupAttention,
    GroupPoseSelfAttention,
    LongRangeGroupingAttention,
    channel_attention,
    group_mask,
    group_pose_masks,
    long_range_group_ids,
    long_range_grouping_attention,
)

TOL = {"rtol": 0, "atol": 1e-12}


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def sdpa(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# --- axial ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(4, 5), (3, 4, 2)])
@pytest.mark.parametrize("causal", [False, True])
def test_axial_equals_masked_full_attention(grid, causal):
    T = math.prod(grid)
    q, k, v = (rand(2, 3, *grid, 8, seed=s) for s in range(3))
    flat = [t.reshape(2, 3, T, 8) for t in (q, k, v)]
    for axis in range(len(grid)):
        out = axial_attention(q, k, v, axis=axis, num_axes=len(grid), causal=causal)
        ref = sdpa(*flat, axial_mask(grid, axis, causal=causal)).reshape(out.shape)
        torch.testing.assert_close(out, ref, **TOL)


def test_axial_rows_then_columns_equals_two_masked_layers():
    """Rows then columns, each with its own projections, is two full-attention layers with the two axial masks."""
    grid, E = (4, 6), 8
    x = rand(2, *grid, E)
    layer = AxialAttention(E, 2, mode="sequential").double()
    out = layer(x)
    h = x.reshape(2, -1, E)
    for axis, part in ((0, layer.axes[0]), (1, layer.axes[1])):
        q, k, v = (p(h).reshape(2, -1, 2, 4).transpose(1, 2) for p in (part.q_proj, part.k_proj, part.v_proj))
        h = part.out_proj(sdpa(q, k, v, axial_mask(grid, axis)).transpose(1, 2).reshape(2, -1, E))
    torch.testing.assert_close(out, h.reshape(out.shape), **TOL)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 7), cols=st.integers(1, 7), first=st.integers(0, 1))
def test_every_position_reachable_in_two_axial_steps(rows, cols, first):
    """The product of the two axial connectivity matrices (either order) is all-positive: full receptive field."""
    a = axial_mask((rows, cols), first).double()
    b = axial_mask((rows, cols), 1 - first).double()
    assert bool(((a @ b) > 0).all())
    if rows > 1 and cols > 1:  # one step alone does not reach everything
        assert not bool(a.all())


def test_axial_matches_lucidrains_with_copied_weights():
    axial_pkg = pytest.importorskip("axial_attention")
    E, H = 16, 4
    ref = axial_pkg.AxialAttention(dim=E, num_dimensions=2, heads=H, dim_index=-1, sum_axial_out=True).double()
    own = AxialAttention(E, H, mode="sum").double()
    with torch.no_grad():
        for mine, theirs in zip(own.axes, ref.axial_attentions, strict=True):
            att = theirs.fn
            mine.q_proj.weight.copy_(att.to_q.weight)
            w_k, w_v = att.to_kv.weight.chunk(2, dim=0)
            mine.k_proj.weight.copy_(w_k)
            mine.v_proj.weight.copy_(w_v)
            mine.out_proj.load_state_dict(att.to_out.state_dict())
    x = rand(2, 5, 7, E)
    torch.testing.assert_close(own(x), ref(x), **TOL)


def test_axial_attention_2d_is_mean_of_rows_and_columns():
    q, k, v = (rand(2, 12, 6, seed=s) for s in range(3))
    ref = 0.5 * (sdpa(q, k, v, axial_mask((3, 4), 0)) + sdpa(q, k, v, axial_mask((3, 4), 1)))
    torch.testing.assert_close(axial_attention_2d(q, k, v, grid=(3, 4)), ref, **TOL)
    torch.testing.assert_close(axial_attention_2d(q, k, v), ref, **TOL)  # default grid: the most nearly square
    q, k, v = (rand(1, 16, 4, seed=s) for s in range(3))  # a square T: 4 x 4
    ref = 0.5 * (sdpa(q, k, v, axial_mask((4, 4), 0)) + sdpa(q, k, v, axial_mask((4, 4), 1)))
    torch.testing.assert_close(axial_attention_2d(q, k, v), ref, **TOL)


def test_axial_bad_inputs():
    q = rand(2, 4, 5, 8)
    with pytest.raises(ValueError, match="axis=2"):
        axial_attention(q, q, q, axis=2)
    with pytest.raises(TypeError, match="axis must be an int"):
        axial_attention(q, q, q, axis=0.5)
    with pytest.raises(ValueError, match="share the grid"):
        axial_attention(q, rand(2, 4, 6, 8), rand(2, 4, 6, 8), axis=0)
    with pytest.raises(ValueError, match="has 12 cells but the sequence has T=10"):
        axial_attention_2d(rand(10, 4), rand(10, 4), rand(10, 4), grid=(3, 4))
    with pytest.raises(ValueError, match="grid shape"):
        axial_mask((3, 0), 0)
    with pytest.raises(ValueError, match="must divide"):
        AxialAttention(10, 4)
    with pytest.raises(ValueError, match="mode"):
        AxialAttention(8, 2, mode="product")
    with pytest.raises(ValueError, match=r"\(B, \*grid, E\)"):
        AxialAttention(8, 2)(rand(2, 3, 8))


# --- Combiner ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T", [12, 16])
def test_combiner_exact_limits(causal, T):
    """One segment (s = T) or one token per segment (s = 1): Combiner is softmax attention exactly."""
    q, k, v = (rand(2, 3, T, 8, seed=s) for s in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    for s in (1, T):
        torch.testing.assert_close(combiner_attention(q, k, v, s, causal=causal), ref, **TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_combiner_dense_weights(causal):
    T, s = 16, 4
    q, k, v = (rand(2, T, 8, seed=s_) for s_ in range(3))
    weights = combiner_weights(q, k, s, causal=causal)
    torch.testing.assert_close(combiner_attention(q, k, v, s, causal=causal), weights @ v, **TOL)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, T, dtype=torch.float64), **TOL)
    if causal:  # support: exactly j <= i, every such j with a positive weight
        assert torch.equal(weights > 0, torch.ones(T, T, dtype=torch.bool).tril().expand(2, T, T))
    else:  # full attention: every key has a positive weight
        assert bool((weights > 0).all())
    # brute force of the factorisation for query 5 (segment 1): direct keys 4..7, summaries of segments 0, 2, 3
    i, scale = 5, 1 / math.sqrt(8)
    segs = list(range(T // s))
    others = [r for r in segs if (r < 1 if causal else r != 1)]
    direct = range(4, i + 1) if causal else range(4, 8)
    logits = [q[0, i] @ k[0, j] * scale for j in direct]
    logits += [q[0, i] @ k[0, r * s : (r + 1) * s].amax(0) * scale for r in others]
    p = torch.softmax(torch.stack(logits), 0)
    row = torch.zeros(T, dtype=torch.float64)
    for n, j in enumerate(direct):
        row[j] = p[n]
    for n, r in enumerate(others):
        block = slice(r * s, (r + 1) * s)
        within = torch.softmax(k[0, block] @ q[0, block].amax(0) * scale, 0)
        row[block] = p[len(direct) + n] * within
    torch.testing.assert_close(weights[0, i], row, **TOL)


def test_combiner_default_segment_and_errors():
    q = rand(1, 36, 4)
    torch.testing.assert_close(combiner_attention(q, q, q), combiner_attention(q, q, q, 6), **TOL)
    with pytest.raises(ValueError, match="segment_size=5 must be positive and divide"):
        combiner_attention(q, q, q, 5)
    with pytest.raises(TypeError, match="segment_size"):
        combiner_attention(q, q, q, 2.0)
    with pytest.raises(ValueError, match="T_k = T_q"):
        combiner_attention(q, rand(1, 12, 4), rand(1, 12, 4))


# --- long-range grouping across views ---------------------------------------------------------------------------


@pytest.mark.parametrize(("views", "side", "G"), [(3, 4, 2), (2, 6, 3), (1, 4, 4), (2, 4, 1)])
def test_long_range_grouping_equals_masked_full_attention(views, side, G):
    N = side * side
    q, k, v = (rand(2, 2, views, N, 8, seed=s) for s in range(3))
    out = long_range_grouping_attention(q, k, v, G)
    mask = group_mask(long_range_group_ids(views, side, G))
    ref = sdpa(*(t.reshape(2, 2, views * N, 8) for t in (q, k, v)), mask).reshape(out.shape)
    torch.testing.assert_close(out, ref, **TOL)
    # each group holds V (S/G)^2 tokens, the same strided sample of every view
    counts = torch.bincount(long_range_group_ids(views, side, G))
    assert counts.tolist() == [views * (side // G) ** 2] * (G * G)


def test_long_range_grouping_module_matches_brute_force():
    B, V, S, E, H, G = 2, 3, 4, 8, 2, 2
    layer = LongRangeGroupingAttention(E, H, G).double()
    x = rand(B, V, S * S, E)
    mask = group_mask(long_range_group_ids(V, S, G))
    flat = x.reshape(B, V * S * S, E)
    q, k, v = (p(flat).reshape(B, -1, H, E // H).transpose(1, 2) for p in (layer.to_q, layer.to_k, layer.to_v))
    attn = sdpa(q, k, v, mask).transpose(1, 2).reshape(B, V, S * S, E)
    v_img = layer.to_v(x).reshape(B * V, S, S, E).permute(0, 3, 1, 2)  # (B V, E, S, S)
    sig = F.conv2d(v_img, layer.ifs.weight, layer.ifs.bias, padding=1, groups=E).permute(0, 2, 3, 1)
    ref = layer.proj(attn + sig.reshape(B, V, S * S, E))
    torch.testing.assert_close(layer(x), ref, **TOL)
    with pytest.raises(ValueError, match="must divide the grid side"):
        long_range_group_ids(2, 6, 4)
    with pytest.raises(ValueError, match=r"\(B, V, S\*S, E=8\)"):
        layer(rand(2, 16, 8))


# --- Group Pose -------------------------------------------------------------------------------------------------


def test_group_pose_equals_full_attention_with_masks():
    B, N, P, E, H = 2, 5, 4, 8, 2
    layer = GroupPoseSelfAttention(E, H).double()
    x, pos = rand(B, N, P, E), rand(B, N, P, E, seed=1)
    within, across = group_pose_masks(N, P)
    flat, flat_pos = x.reshape(B, N * P, E), pos.reshape(B, N * P, E)
    h, _ = layer.within(flat + flat_pos, flat + flat_pos, flat, attn_mask=within)
    h = layer.within_norm(flat + h)
    h2, _ = layer.across(h, attn_mask=across)
    ref = layer.across_norm(h + h2).reshape(B, N, P, E)
    torch.testing.assert_close(layer(x, pos), ref, **TOL)
    # the masks: within joins an instance's K+1 queries, across one slot over the N instances
    assert within.sum(-1).tolist() == [P] * (N * P) and across.sum(-1).tolist() == [N] * (N * P)
    assert not bool((within & across & ~torch.eye(N * P, dtype=torch.bool)).any())
    with pytest.raises(ValueError, match="pos must have the shape"):
        layer(x, pos[:, :2])


# --- DaViT channel group attention ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def davit():
    return pytest.importorskip("timm.models.davit")


def test_channel_attention_matches_timm_davit(davit):
    C, H = 24, 3
    x = rand(2, 10, C)
    for ref, convention in (
        (davit.ChannelAttention(C, num_heads=H, qkv_bias=True), "davit"),
        (davit.ChannelAttentionV2(C, num_heads=H, qkv_bias=True, dynamic_scale=False), "paper"),
    ):
        ref = ref.double()
        own = ChannelGroupAttention(C, H, qkv_bias=True, convention=convention).double()
        own.load_state_dict(ref.state_dict())
        torch.testing.assert_close(own(x), ref(x), **TOL)


def test_channel_attention_is_attention_on_transposes():
    q, k, v = (rand(2, 3, 50, 6, seed=s) for s in range(3))
    logits = q.mT @ k / math.sqrt(6)  # (2, 3, 6, 6): channel i against channel j, summed over 50 positions
    torch.testing.assert_close(channel_attention(q, k, v), (logits.softmax(-1) @ v.mT).mT, **TOL)
    # permuting the positions of q, k, v together permutes the output's positions: channels see a set of positions
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        channel_attention(q[..., perm, :], k[..., perm, :], v[..., perm, :]),
        channel_attention(q, k, v)[..., perm, :],
        **TOL,
    )
    with pytest.raises(ValueError, match="one shape"):
        channel_attention(q, k, v[..., :4])
    with pytest.raises(ValueError, match="convention"):
        ChannelGroupAttention(8, 2, convention="v3")
    with pytest.raises(ValueError, match="must divide"):
        ChannelGroupAttention(10, 3)

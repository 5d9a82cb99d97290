"""Convolution meets attention (chapter 14): GPSA, large-kernel attention, attentive convolution, hyper-kernels.

GPSA and ConViT match timm's ``GPSA`` / ``ConVit`` with copied weights; GPSA at its local initialisation attends like
the convolution it is initialised as. VAN's LKA, ATConv and HyperZ.Z.W match brute-force definitions written as
loops over pixels and kernel taps (zero padding by skipping taps outside the image).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention.convolutional import (
    GPSA,
    AttentiveConv,
    CoordinateKernelNet,
    GatedPositionalCore,
    HyperZZW,
    LargeKernelAttention,
    VANAttention,
    kernel_offsets,
    lka_effective_kernel,
    load_timm_gpsa,
    per_sample_depthwise_conv2d,
    relative_offsets,
)
from attnbook.models.convit import ConViT

TOL = {"rtol": 0, "atol": 1e-12}


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def perturb(module, scale=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def depthwise_conv_loops(x, weight, bias=None, dilation=1):
    """Brute force 'same' depth-wise cross-correlation: out[b, c, i, j] = bias[c] + sum over taps (u, v) of
    weight[c, 0, u, v] * x[b, c, i + dilation (u - k//2), j + dilation (v - k//2)], taps outside the image skipped."""
    B, C, H, W = x.shape
    k = weight.shape[-1]
    out = torch.zeros_like(x)
    for b in range(B):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    total = bias[c].item() if bias is not None else 0.0
                    for u in range(k):
                        for v in range(k):
                            y, z = i + dilation * (u - k // 2), j + dilation * (v - k // 2)
                            if 0 <= y < H and 0 <= z < W:
                                total += weight[c, 0, u, v].item() * x[b, c, y, z].item()
                    out[b, c, i, j] = total
    return out


def pointwise(x, conv):
    """A 1 x 1 convolution as a matrix product over channels."""
    return torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x) + conv.bias[None, :, None, None]


# ------------------------------------------------------------------------------------------------------------------
# GPSA / ConViT
# ------------------------------------------------------------------------------------------------------------------


def test_relative_offsets_match_timm_and_definition():
    timm = pytest.importorskip("timm")
    ref = timm.models.convit.GPSA(8, num_heads=4)
    torch.testing.assert_close(relative_offsets(5), ref.get_rel_indices(25)[0], **TOL)
    r = relative_offsets((2, 3), dtype=torch.float64)  # rectangular grid: t = row * 3 + col
    assert r.shape == (6, 6, 3)
    assert r[0, 5].tolist() == [2.0, 1.0, 5.0]  # from (row 0, col 0) to (row 1, col 2): dx = 2, dy = 1
    assert r[4, 0].tolist() == [-1.0, -1.0, 2.0]


@pytest.mark.parametrize("num_heads", [4, 9, 16])
@pytest.mark.parametrize("strength", [1.0, 2.5])
def test_local_init_matches_timm(num_heads, strength):
    timm = pytest.importorskip("timm")
    ref = timm.models.convit.GPSA(2 * num_heads, num_heads=num_heads, locality_strength=strength)
    ref.local_init()
    ours = GPSA(2 * num_heads, num_heads, grid=4, locality_strength=strength)
    torch.testing.assert_close(ours.core.pos_proj.weight, ref.pos_proj.weight, **TOL)
    torch.testing.assert_close(ours.v_proj.weight, ref.v.weight, **TOL)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_gpsa_matches_timm_with_copied_weights(qkv_bias):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.models.convit.GPSA(36, num_heads=9, qkv_bias=qkv_bias).double().eval()
    ref.local_init()
    perturb(ref)  # gates away from 1, positional weights away from the init
    model = load_timm_gpsa(GPSA(36, 9, grid=(4, 4), locality_strength=None).double().eval(), ref)
    x = rand(3, 16, 36)
    out, weights = model(x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, ref(x), **TOL)
    torch.testing.assert_close(weights, ref.get_attention(x), **TOL)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 9, 16, dtype=torch.float64), **TOL)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_convit_matches_timm_convit_with_copied_weights(pool):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.models.convit.ConVit(
        img_size=8,
        patch_size=2,
        in_chans=1,
        num_classes=10,
        embed_dim=4,
        depth=3,
        num_heads=4,
        local_up_to_layer=2,
        global_pool="token" if pool == "cls" else "avg",
    )  # embed_dim is per head in timm: width 16
    ref = perturb(ref.double().eval(), 0.05)
    model = ConViT(8, 2, 1, 10, dim=16, depth=3, num_heads=4, local_layers=2, pool=pool).double().eval()
    with torch.no_grad():
        model.patch_embed.proj.load_state_dict(ref.patch_embed.proj.state_dict())
        model.pos_embed.copy_(ref.pos_embed)
        model.cls_token.copy_(ref.cls_token)
        for ours, theirs in zip(model.blocks, ref.blocks, strict=True):
            assert ours.norm1.eps == theirs.norm1.eps
            ours.norm1.load_state_dict(theirs.norm1.state_dict())
            ours.norm2.load_state_dict(theirs.norm2.state_dict())
            load_timm_gpsa(ours.self_attn, theirs.attn)
            ours.linear1.load_state_dict(theirs.mlp.fc1.state_dict())
            ours.linear2.load_state_dict(theirs.mlp.fc2.state_dict())
        model.norm.load_state_dict(ref.norm.state_dict())
        model.head.load_state_dict(ref.head.state_dict())
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-10)
    logits, weights = model(x, need_weights=True)
    assert [tuple(w.shape) for w in weights] == [(4, 4, 16, 16)] * 2 + [(4, 4, 17, 17)]
    assert model.gates().shape == (2, 4)


def test_kernel_offsets_cover_the_kernel():
    off = kernel_offsets(9)
    assert sorted(map(tuple, off.tolist())) == [(x, y) for x in (-1.0, 0.0, 1.0) for y in (-1.0, 0.0, 1.0)]
    assert kernel_offsets(4).abs().unique().tolist() == [0.5]  # an even kernel: half-integer offsets
    with pytest.raises(ValueError, match="square number of heads"):
        kernel_offsets(6)
    with pytest.raises(TypeError, match="num_heads"):
        kernel_offsets(2.0)


@pytest.mark.parametrize("strength", [0.5, 1.0, 3.0])
def test_gpsa_at_init_each_head_peaks_at_its_offset(strength):
    """The property: at local initialisation, head h's positional attention from every query peaks at the key
    query + Delta_h (wherever that key exists), and falls off with the distance from it."""
    side = 6
    core = GatedPositionalCore(9, side)
    core.local_init(strength)
    pos = core.positional_weights().detach()  # (H, T, T)
    offsets = kernel_offsets(9)
    rows, cols = torch.arange(side).repeat_interleave(side), torch.arange(side).repeat(side)
    for h in range(9):
        dx, dy = int(offsets[h, 0]), int(offsets[h, 1])
        for t in range(side * side):
            r, c = rows[t] + dy, cols[t] + dx
            if 0 <= r < side and 0 <= c < side:
                assert pos[h, t].argmax().item() == r * side + c
                dist2 = (rows - r) ** 2 + (cols - c) ** 2
                w = pos[h, t][torch.argsort(dist2, stable=True)]
                assert torch.all(w[1:] <= w[:-1] + 1e-7)  # the weight falls off with the distance from the peak


def test_gpsa_with_strong_locality_and_closed_content_is_a_convolution():
    """alpha -> inf and sigma(lambda) -> 1: each head copies the token at its offset, so GPSA (with W_V = I) is a
    3 x 3 convolution whose tap Delta_h is head h's block of W_O, on every query whose 3 x 3 window is inside."""
    side, heads, d = 5, 9, 2
    E = heads * d
    model = GPSA(E, heads, grid=side, locality_strength=40.0).double()
    with torch.no_grad():
        model.core.gating_param.fill_(60.0)
    x = rand(2, side * side, E)
    out, _ = model(x)
    v = x @ model.v_proj.weight.T + model.v_proj.bias  # (B, T, E)
    grid = v.reshape(2, side, side, E).permute(0, 3, 1, 2)  # (B, E, R, C)
    kernel = torch.zeros(E, E, 3, 3, dtype=torch.float64)
    for h, (dx, dy) in enumerate(kernel_offsets(heads).long().tolist()):
        kernel[:, h * d : (h + 1) * d, dy + 1, dx + 1] = model.out_proj.weight[:, h * d : (h + 1) * d]
    conv = F.conv2d(grid, kernel, model.out_proj.bias, padding=1)  # (B, E, R, C)
    interior = out.reshape(2, side, side, E)[:, 1:-1, 1:-1]
    torch.testing.assert_close(interior, conv.permute(0, 2, 3, 1)[:, 1:-1, 1:-1], rtol=0, atol=1e-9)


def test_gates_mix_content_and_position():
    model = GPSA(8, 4, grid=3, locality_strength=1.0).double()
    x = rand(2, 9, 8)
    q = model.split_heads(model.q_proj(x))
    k = model.split_heads(model.k_proj(x))
    content = (q @ k.transpose(-2, -1) / math.sqrt(2)).softmax(-1)
    with torch.no_grad():
        model.core.gating_param.copy_(torch.tensor([-80.0, 80.0, 0.0, 0.0]))
    _, w = model(x, need_weights=True, average_attn_weights=False)
    positional = model.core.positional_weights()
    torch.testing.assert_close(w[:, 0], content[:, 0], **TOL)  # gate closed: pure content
    torch.testing.assert_close(w[:, 1], positional[1].expand(2, -1, -1), **TOL)  # gate open: pure position
    torch.testing.assert_close(w[:, 2], (content[:, 2] + positional[2]) / 2, **TOL)


def test_gpsa_bad_inputs():
    model = GPSA(8, 4, grid=3)
    with pytest.raises(ValueError, match=r"\(B, 4, 9, d\)"):
        model(torch.randn(2, 10, 8))
    with pytest.raises(ValueError, match="whole grid"):
        model(torch.randn(2, 9, 8), is_causal=True)
    with pytest.raises(ValueError, match="self-attention"):
        model(torch.randn(2, 9, 8), torch.randn(2, 9, 8))
    with pytest.raises(ValueError, match="square number of heads"):
        GPSA(12, 6, grid=3)
    with pytest.raises(ValueError, match="locality_strength"):
        GPSA(8, 4, grid=3, locality_strength=0.0)
    with pytest.raises(ValueError, match="grid rows"):
        GatedPositionalCore(4, (0, 3))
    with pytest.raises(ValueError, match="local_layers"):
        ConViT(8, 2, 1, 10, dim=16, depth=2, num_heads=4, local_layers=2)
    with pytest.raises(ValueError, match="pool"):
        ConViT(8, 2, 1, 10, dim=16, depth=2, num_heads=4, pool="max")


def test_convit_without_local_layers_has_no_gates_and_trains():
    torch.manual_seed(0)
    model = ConViT(8, 2, 1, 10, dim=16, depth=2, num_heads=4, local_layers=0)
    assert model.gates().shape == (0, 4)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(10, (8,))
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# ------------------------------------------------------------------------------------------------------------------
# VAN: large-kernel attention
# ------------------------------------------------------------------------------------------------------------------


def test_lka_matches_brute_force_depthwise_definition():
    torch.manual_seed(0)
    lka = perturb(LargeKernelAttention(3, kernel_size=9, dilation=2).double())  # 3 x 3, then 5 x 5 dilated 2
    assert lka.conv0.kernel_size == (3, 3) and lka.conv_spatial.kernel_size == (5, 5)
    x = rand(2, 3, 9, 10)
    a = depthwise_conv_loops(x, lka.conv0.weight, lka.conv0.bias)
    a = depthwise_conv_loops(a, lka.conv_spatial.weight, lka.conv_spatial.bias, dilation=2)
    attn = pointwise(a, lka.conv1)
    torch.testing.assert_close(lka.attention_map(x), attn, **TOL)
    torch.testing.assert_close(lka(x), x * attn, **TOL)


def test_lka_defaults_are_the_papers():
    lka = LargeKernelAttention(4)
    assert lka.conv0.kernel_size == (5, 5) and lka.conv0.padding == (2, 2) and lka.conv0.groups == 4
    assert lka.conv_spatial.kernel_size == (7, 7) and lka.conv_spatial.dilation == (3, 3)
    assert lka.conv_spatial.padding == (9, 9)
    assert lka.conv1.kernel_size == (1, 1)
    assert lka_effective_kernel(lka)[0].shape == (4, 1, 23, 23)


def test_lka_is_one_large_kernel_away_from_the_borders():
    torch.manual_seed(0)
    lka = perturb(LargeKernelAttention(2, kernel_size=9, dilation=2).double())
    kernel, bias = lka_effective_kernel(lka)  # (2, 1, 11, 11)
    assert kernel.shape[-1] == 11
    x = rand(1, 2, 25, 25)
    two_steps = lka.conv_spatial(lka.conv0(x))
    one_step = depthwise_conv_loops(x, kernel, bias)
    m = 5  # the two-step form reads its zero padding only within 5 pixels of the border
    torch.testing.assert_close(one_step[..., m:-m, m:-m], two_steps[..., m:-m, m:-m], **TOL)
    assert (one_step - two_steps).abs().max() > 1e-6  # ...and differs there


def test_van_attention_block():
    torch.manual_seed(0)
    block = perturb(VANAttention(3, kernel_size=9, dilation=2).double())
    x = rand(2, 3, 7, 7)
    h = F.gelu(pointwise(x, block.proj_1))
    expected = x + pointwise(block.spatial_gating_unit(h), block.proj_2)
    torch.testing.assert_close(block(x), expected, **TOL)


def test_lka_bad_inputs():
    lka = LargeKernelAttention(4)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        lka(torch.randn(2, 3, 8, 8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        lka([1.0])
    with pytest.raises(ValueError, match="dilation"):
        LargeKernelAttention(4, dilation=0)
    with pytest.raises(TypeError, match="dim"):
        LargeKernelAttention(4.5)


# ------------------------------------------------------------------------------------------------------------------
# Attentive convolution
# ------------------------------------------------------------------------------------------------------------------


def test_per_sample_depthwise_conv_matches_loops():
    x, kernels = rand(3, 2, 6, 5), rand(3, 2, 3, 3, seed=1)
    expected = torch.cat([depthwise_conv_loops(x[b : b + 1], kernels[b][:, None]) for b in range(3)])
    torch.testing.assert_close(per_sample_depthwise_conv2d(x, kernels), expected, **TOL)
    with pytest.raises(ValueError, match="same B, C"):
        per_sample_depthwise_conv2d(x, kernels[:2])


def test_attentive_conv_matches_its_equations_written_out():
    torch.manual_seed(0)
    k = 3
    module = perturb(AttentiveConv(2, kernel_size=k).double(), 0.3)
    x = rand(2, 2, 5, 6)
    B, C, H, W = x.shape
    flat = pointwise(x, module.kernel_proj).reshape(B, C, H * W)
    # adaptive average pooling to k^2 bins: bin i averages positions floor(i N / k^2) .. ceil((i + 1) N / k^2) - 1
    n = H * W
    bins = [flat[..., (i * n) // k**2 : -((-(i + 1) * n) // k**2)].mean(-1) for i in range(k * k)]
    routed = F.gelu(torch.stack(bins, -1))  # (B, C, k^2)
    k0 = routed @ module.kernel_gen.weight.T + module.kernel_gen.bias
    k0 = k0.reshape(B, C, k, k)
    kernel = k0 - torch.sigmoid(module.difference_control)[None, :, None, None] * k0.mean((2, 3), keepdim=True)
    torch.testing.assert_close(module.kernels(x), kernel, **TOL)
    xs = pointwise(x, module.x_proj)
    conv = torch.cat([depthwise_conv_loops(xs[b : b + 1], kernel[b][:, None]) for b in range(B)])
    torch.testing.assert_close(module(x), pointwise(conv, module.proj), **TOL)


def test_attentive_conv_routes_by_content_and_inhibits_flat_regions():
    torch.manual_seed(0)
    module = perturb(AttentiveConv(3).double(), 0.3)
    a, b = rand(1, 3, 6, 6), rand(1, 3, 6, 6, seed=1)
    assert (module.kernels(a) - module.kernels(b)).abs().max() > 1e-3  # the kernel depends on the input
    with torch.no_grad():
        module.difference_control.fill_(50.0)  # full inhibition: every kernel sums to zero
    torch.testing.assert_close(module.kernels(a).sum((2, 3)), torch.zeros(1, 3, dtype=torch.float64), **TOL)
    flat = torch.full((1, 3, 6, 6), 0.7, dtype=torch.float64)
    inner = module(flat)[..., 1:-1, 1:-1]  # a flat image: no response away from the zero-padded border
    expected = module.proj.bias + module.proj.weight[:, :, 0, 0] @ torch.zeros(3, dtype=torch.float64)
    torch.testing.assert_close(inner, expected[None, :, None, None].expand_as(inner), rtol=0, atol=1e-9)


def test_attentive_conv_bad_inputs():
    with pytest.raises(ValueError, match="odd"):
        AttentiveConv(4, kernel_size=4)
    module = AttentiveConv(4, kernel_size=3)
    with pytest.raises(ValueError, match="k\\^2 = 9 pixels"):
        module(torch.randn(1, 4, 2, 2))
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        module(torch.randn(1, 4, 8))


# ------------------------------------------------------------------------------------------------------------------
# HyperZ.Z.W
# ------------------------------------------------------------------------------------------------------------------


def test_coordinate_kernel_net_is_a_multiplicative_filter_network():
    torch.manual_seed(0)
    net = CoordinateKernelNet(3, hidden=5, num_layers=3).double()
    c = rand(7, 2)
    h = torch.sin(c @ net.filters[0].weight.T + net.filters[0].bias)
    for i in range(2):
        h = (h @ net.linears[i].weight.T + net.linears[i].bias) * torch.sin(
            c @ net.filters[i + 1].weight.T + net.filters[i + 1].bias
        )
    torch.testing.assert_close(net(c), h @ net.out.weight.T + net.out.bias, **TOL)
    k = net.kernel(5)
    assert k.shape == (3, 5, 5)
    corner = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)  # tap (0, 0) sits at (y, x) = (-1, -1)
    torch.testing.assert_close(k[:, 0, 0], net(corner)[0], **TOL)
    n_params = sum(p.numel() for p in net.parameters())
    assert net.kernel(31).shape == (3, 31, 31) and sum(p.numel() for p in net.parameters()) == n_params


def test_hyperzzw_matches_loops():
    torch.manual_seed(0)
    layer = HyperZZW(2, (5, 6), kernel_size=3, hidden=8).double()
    z = rand(2, 2, 5, 6)
    k_local = layer.local_net.kernel(3)[:, None]  # (C, 1, 3, 3)
    k_global = layer.global_net.kernel(5, 6)  # (C, 5, 6)
    w_local = depthwise_conv_loops(z, k_local)
    w_global = torch.stack([torch.stack([(k_global[c] * z[b, c]).sum() / 30 for c in range(2)]) for b in range(2)])[
        ..., None, None
    ]
    expected = pointwise(torch.cat([w_local * z, w_global * z], 1), layer.bottleneck)
    torch.testing.assert_close(layer(z), expected, **TOL)


def test_hyperzzw_bad_inputs():
    layer = HyperZZW(2, 6)
    with pytest.raises(ValueError, match=r"\(B, 2, 6, 6\)"):
        layer(torch.randn(1, 2, 5, 6))
    with pytest.raises(ValueError, match="odd"):
        HyperZZW(2, 6, kernel_size=2)

"""Channel and subspace attention (chapter 15): each module against a brute-force definition written with loops,
squeeze-and-excitation against timm's ``SEModule`` and PAM against timm's ``NonLocalAttn`` with copied weights, and
the bad-input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention.channel import (
    ULSAM,
    ChannelAttentionModule,
    ClassSemanticsAttention,
    GuidedAttentionBlock,
    PositionAttentionModule,
    SelfGuidedAttention,
    SemanticModule,
    SqueezeExcitation,
    channel_self_attention,
    guided_losses,
    position_attention,
)

TOL = dict(rtol=0, atol=1e-12)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """float64, eval mode, every parameter and BatchNorm statistic random (variances positive)."""
    module = module.double().eval()
    g = gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=torch.float64))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
    return module


def batch_norm_eval(x: torch.Tensor, bn: torch.nn.BatchNorm2d, c: int) -> torch.Tensor:
    """One channel of an eval-mode BatchNorm, written out."""
    return (x - bn.running_mean[c]) / math.sqrt(bn.running_var[c] + bn.eps) * bn.weight[c] + bn.bias[c]


# --- squeeze-and-excitation -------------------------------------------------------------------------------------


@torch.no_grad()
def se_loop(x: torch.Tensor, se: SqueezeExcitation) -> torch.Tensor:
    B, C, H, W = x.shape
    w1, b1 = se.fc1.weight[:, :, 0, 0], se.fc1.bias
    w2, b2 = se.fc2.weight[:, :, 0, 0], se.fc2.bias
    out = torch.empty_like(x)
    for b in range(B):
        s = [sum(x[b, c, i, j] for i in range(H) for j in range(W)) / (H * W) for c in range(C)]
        z = [max(0.0, float(sum(w1[h, c] * s[c] for c in range(C)) + b1[h])) for h in range(len(b1))]
        for c in range(C):
            gate = 1 / (1 + math.exp(-float(sum(w2[c, h] * z[h] for h in range(len(z))) + b2[c])))
            out[b, c] = x[b, c] * gate
    return out


def test_squeeze_excitation_matches_loops():
    se = randomise(SqueezeExcitation(6, hidden=3))
    x = torch.randn(2, 6, 3, 4, generator=gen(1), dtype=torch.float64)
    torch.testing.assert_close(se(x), se_loop(x, se), **TOL)
    assert se.gate(x).shape == (2, 6, 1, 1)
    assert SqueezeExcitation(64).fc1.out_channels == 4  # C // 16


@pytest.mark.parametrize("channels, hidden", [(32, 8), (16, 2), (12, 3)])
def test_squeeze_excitation_matches_timm(channels, hidden):
    timm_se = pytest.importorskip("timm.layers.squeeze_excite")
    ref = randomise(timm_se.SEModule(channels, rd_channels=hidden), seed=2)
    ours = SqueezeExcitation(channels, hidden=hidden).double().eval()
    ours.load_state_dict(ref.state_dict())  # fc1, fc2: same names and shapes
    x = torch.randn(3, channels, 5, 7, generator=gen(3), dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), **TOL)


# --- ULSAM ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def ulsam_loop(x: torch.Tensor, m: ULSAM) -> torch.Tensor:
    """The official per-subspace definition, with the pooling and the softmax as loops over positions."""
    B, C, H, W = x.shape
    g = m.num_subspaces
    n = C // g
    out = torch.empty_like(x)
    for b in range(B):
        for s in range(g):
            chans = range(s * n, (s + 1) * n)
            dws = {}
            for c in chans:  # depth-wise 1x1 conv: one scale and bias per channel, then BN, ReLU
                h = x[b, c] * m.depthwise.weight[c, 0, 0, 0] + m.depthwise.bias[c]
                dws[c] = torch.relu(batch_norm_eval(h, m.depthwise_norm, c))
            pooled = {}
            for c in chans:  # 3x3 max-pool, stride 1, padding 1 (padding never wins)
                p = torch.empty(H, W, dtype=x.dtype)
                for i in range(H):
                    for j in range(W):
                        p[i, j] = dws[c][max(0, i - 1) : i + 2, max(0, j - 1) : j + 2].max()
                pooled[c] = p
            logit = sum(m.pointwise.weight[s, k, 0, 0] * pooled[c] for k, c in enumerate(chans)) + m.pointwise.bias[s]
            logit = torch.relu(batch_norm_eval(logit, m.pointwise_norm, s))  # (H, W)
            total = sum(math.exp(float(logit[i, j])) for i in range(H) for j in range(W))
            a = torch.tensor(
                [[math.exp(float(logit[i, j])) / total for j in range(W)] for i in range(H)], dtype=x.dtype
            )
            for c in chans:
                out[b, c] = a * x[b, c] + x[b, c]
    return out


@pytest.mark.parametrize("channels, groups", [(8, 4), (6, 1), (6, 6)])
def test_ulsam_matches_per_subspace_loops(channels, groups):
    m = randomise(ULSAM(channels, groups), seed=4)
    x = torch.randn(2, channels, 4, 5, generator=gen(5), dtype=torch.float64)
    torch.testing.assert_close(m(x), ulsam_loop(x, m), **TOL)


def test_ulsam_maps_are_distributions_and_the_block_is_light():
    m = ULSAM(32, 4).train()
    x = torch.randn(3, 32, 6, 6, generator=gen(6))
    a = m.maps(x)
    assert a.shape == (3, 4, 6, 6) and (a >= 0).all()
    torch.testing.assert_close(a.sum((2, 3)), torch.ones(3, 4), rtol=0, atol=1e-5)
    # parameters: C (dw) + C (bias) + 2C (BN) + C (pw) + g (bias) + 2g (BN): linear in C, no C^2 term
    assert sum(p.numel() for p in m.parameters()) == 5 * 32 + 3 * 4


# --- PAM and CAM ------------------------------------------------------------------------------------------------


@torch.no_grad()
def pam_loop(x: torch.Tensor, m: PositionAttentionModule) -> torch.Tensor:
    B, C, H, W = x.shape
    conv = lambda layer, v: layer.weight[:, :, 0, 0] @ v + layer.bias  # noqa: E731  a 1x1 conv on one position
    out = torch.empty_like(x)
    for b in range(B):
        pos = [(i, j) for i in range(H) for j in range(W)]
        q = [conv(m.query, x[b, :, i, j]) for i, j in pos]
        k = [conv(m.key, x[b, :, i, j]) for i, j in pos]
        v = [conv(m.value, x[b, :, i, j]) for i, j in pos]
        for t, (i, j) in enumerate(pos):
            scores = [float(q[t] @ k[s]) for s in range(len(pos))]  # no 1/sqrt(d)
            top = max(scores)
            w = [math.exp(sc - top) for sc in scores]
            o = sum(w[s] * v[s] for s in range(len(pos))) / sum(w)
            out[b, :, i, j] = m.gamma * o + x[b, :, i, j]
    return out


@torch.no_grad()
def cam_loop(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    for b in range(B):
        feats = [x[b, c].flatten() for c in range(C)]
        for c in range(C):
            energy = [float(feats[c] @ feats[e]) for e in range(C)]
            shifted = [max(energy) - en for en in energy]
            top = max(shifted)
            w = [math.exp(s - top) for s in shifted]
            o = sum(w[e] * x[b, e] for e in range(C)) / sum(w)
            out[b, c] = gamma * o + x[b, c]
    return out


def test_position_attention_module_matches_loops_and_starts_as_identity():
    m = PositionAttentionModule(16, reduction=8).double()
    x = torch.randn(2, 16, 3, 4, generator=gen(7), dtype=torch.float64)
    assert torch.equal(m(x), x)  # gamma = 0 at initialisation
    m = randomise(m, seed=8)
    torch.testing.assert_close(m(x), pam_loop(x, m), **TOL)
    q, k, v = (torch.randn(2, 5, d, generator=gen(9), dtype=torch.float64) for d in (3, 3, 4))
    torch.testing.assert_close(position_attention(q, k, v), (q @ k.mT).softmax(-1) @ v, **TOL)


def test_position_attention_module_matches_timm_non_local():
    """PAM is timm's NonLocalAttn with no scale, the q/k convs zero-padded from C/8 to C, z = I, BN = gamma."""
    non_local = pytest.importorskip("timm.layers.non_local_attn")
    C = 16
    pam = randomise(PositionAttentionModule(C), seed=10)
    ref = non_local.NonLocalAttn(C, use_scale=False, rd_channels=C).double().eval()
    with torch.no_grad():
        for ours, theirs in ((pam.query, ref.t), (pam.key, ref.p)):
            theirs.weight.zero_()
            theirs.bias.zero_()
            theirs.weight[: ours.out_channels] = ours.weight
            theirs.bias[: ours.out_channels] = ours.bias
        ref.g.load_state_dict(pam.value.state_dict())
        ref.z.weight.copy_(torch.eye(C, dtype=torch.float64)[:, :, None, None])
        ref.z.bias.zero_()
        ref.norm.eps = 0.0
        ref.norm.running_mean.zero_()
        ref.norm.running_var.fill_(1.0)
        ref.norm.weight.fill_(float(pam.gamma))
        ref.norm.bias.zero_()
    x = torch.randn(2, C, 4, 3, generator=gen(11), dtype=torch.float64)
    torch.testing.assert_close(pam(x), ref(x), **TOL)


def test_channel_attention_module_matches_loops():
    m = ChannelAttentionModule(5).double()
    x = torch.randn(2, 5, 3, 3, generator=gen(12), dtype=torch.float64) * 0.3
    assert torch.equal(m(x), x)
    with torch.no_grad():
        m.gamma.fill_(0.7)
    torch.testing.assert_close(m(x), cam_loop(x, m.gamma), **TOL)
    # the row-max shift does not change the softmax: CAM's weights are softmax(-E)
    flat = x.flatten(2)
    torch.testing.assert_close(channel_self_attention(flat), (-(flat @ flat.mT)).softmax(-1) @ flat, **TOL)


# --- the self-guided block --------------------------------------------------------------------------------------


def test_guided_block_is_its_parts_and_the_losses_are_their_definitions():
    C = 4
    block = randomise(GuidedAttentionBlock(C), seed=13)
    a = torch.randn(2, 2 * C, 8, 8, generator=gen(14), dtype=torch.float64)
    att, code, rec = block(a)
    assert att.shape == (2, C, 8, 8) and code.shape == (2, 8 * C * 2 * 2) and rec.shape == a.shape
    expected = block.fuse((block.position(a) + block.channel(a)) * block.guide(block.semantic(a)[1]))
    torch.testing.assert_close(att, expected, **TOL)

    sga = randomise(SelfGuidedAttention(C), seed=15)
    f_s, f_ms = torch.randn(2, 2, C, 8, 8, generator=gen(16), dtype=torch.float64)
    out, aux = sga(f_s, f_ms)
    att1, e1, r1 = sga.step1(torch.cat([f_s, f_ms], 1))
    a2 = torch.cat([f_s, att1 * f_ms], 1)
    att2, e2, r2 = sga.step2(a2)
    torch.testing.assert_close(out, att2, **TOL)
    guided, reconstruction = guided_losses(aux)
    torch.testing.assert_close(guided, ((e1 - e2) ** 2).mean(), **TOL)
    torch.testing.assert_close(reconstruction, ((r1 - torch.cat([f_s, f_ms], 1)) ** 2).mean() + ((r2 - a2) ** 2).mean(),
                               **TOL)  # fmt: skip
    # the losses train every part: gradients reach both steps' encoders
    sga.train()
    out, aux = sga(f_s, f_ms)
    sum(guided_losses(aux)).backward()
    assert sga.step1.semantic.encode[0].weight.grad.abs().sum() > 0
    assert sga.step2.semantic.encode[0].weight.grad.abs().sum() > 0


# --- class-semantics attention ----------------------------------------------------------------------------------


@torch.no_grad()
def conv1d_loop(r: torch.Tensor, conv: torch.nn.Conv1d) -> torch.Tensor:
    """Same-padded 1-D convolution of one sample r (C_r, T), written out."""
    C_out, C_in, K = conv.weight.shape
    T = r.shape[1]
    out = torch.empty(C_out, T, dtype=r.dtype)
    for o in range(C_out):
        for t in range(T):
            acc = conv.bias[o].clone()
            for c in range(C_in):
                for j in range(K):
                    s = t + j - K // 2
                    if 0 <= s < T:
                        acc = acc + conv.weight[o, c, j] * r[c, s]
            out[o, t] = acc
    return out


def test_class_semantics_attention_matches_loops():
    m = randomise(ClassSemanticsAttention(6, 4, hidden=5, kernel_size=3), seed=17)
    f = torch.randn(2, 6, 7, generator=gen(18), dtype=torch.float64)
    r = torch.randn(2, 4, 7, generator=gen(19), dtype=torch.float64)
    out = m(f, r)
    for b in range(2):
        pooled = conv1d_loop(r[b], m.embed).mean(1)  # (hidden,)
        l1, l2 = m.channel_mlp[0], m.channel_mlp[2]
        a_c = torch.sigmoid(l2.weight @ torch.relu(l1.weight @ pooled + l1.bias) + l2.bias)  # (C,)
        a_t = torch.sigmoid(conv1d_loop(r[b], m.temporal)[0])  # (T,)
        for c in range(6):
            for t in range(7):
                expected = a_c[c] * f[b, c, t] + a_t[t] * f[b, c, t]
                torch.testing.assert_close(out[b, c, t], expected, **TOL)
    # the weights depend on r only: changing f leaves them, and scales the output linearly
    torch.testing.assert_close(m(2 * f, r), 2 * out, **TOL)


# --- bad inputs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match, error",
    [
        (lambda: SqueezeExcitation(0), "channels must be positive", ValueError),
        (lambda: SqueezeExcitation(8, 2.5), "reduction must be an int", TypeError),
        (lambda: ULSAM(10, 4), "num_subspaces=4 must divide channels=10", ValueError),
        (lambda: ULSAM(8, True), "num_subspaces must be an int", TypeError),
        (lambda: PositionAttentionModule(-1), "channels must be positive", ValueError),
        (lambda: ClassSemanticsAttention(4, 3, kernel_size=2), "kernel_size must be odd", ValueError),
    ],
)
def test_bad_constructor_arguments(make, match, error):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "call, match, error",
    [
        (lambda: SqueezeExcitation(8)(torch.randn(2, 6, 3, 3)), r"x must be \(B, C=8, H, W\), got shape \(2, 6, 3, 3\)",
         ValueError),
        (lambda: SqueezeExcitation(8)(torch.randn(8, 3, 3)), r"got shape \(8, 3, 3\)", ValueError),
        (lambda: ULSAM(8, 2)(torch.ones(1, 8, 3, 3, dtype=torch.long)), "floating tensor", TypeError),
        (lambda: ULSAM(8, 2)([[1.0]]), "must be a torch.Tensor", TypeError),
        (lambda: PositionAttentionModule(8)(torch.randn(1, 4, 3, 3)), r"C=8", ValueError),
        (lambda: ChannelAttentionModule()(torch.randn(4, 3, 3)), r"\(B, C, H, W\)", ValueError),
        (lambda: channel_self_attention(torch.randn(2, 3)), r"\(B, C, T\)", ValueError),
        (lambda: SemanticModule(2)(torch.randn(1, 2, 6, 8)), "multiples of 4", ValueError),
        (lambda: GuidedAttentionBlock(2)(torch.randn(1, 2, 4, 4)), r"a must be \(B, C=4", ValueError),
        (lambda: SelfGuidedAttention(2)(torch.randn(1, 2, 4, 4), torch.randn(1, 2, 8, 8)), "must match", ValueError),
        (lambda: guided_losses({"codes": None}), "aux must be", ValueError),
        (lambda: ClassSemanticsAttention(4, 3)(torch.randn(2, 4, 5), torch.randn(2, 3, 6)),
         r"r must be \(B=2, C_r, T=5\)", ValueError),
        (lambda: ClassSemanticsAttention(4, 3)(torch.randn(2, 4, 5), torch.randn(2, 2, 5)), r"r must be \(B, C=3, T\)",
         ValueError),
    ],
)  # fmt: skip
def test_bad_inputs(call, match, error):
    with pytest.raises(error, match=match):
        call()


def test_modules_train_in_float32():
    """A step of gradient descent through every module runs and keeps the outputs finite."""
    x = torch.randn(4, 8, 8, 8, generator=gen(20))
    for m in (SqueezeExcitation(8, 4), ULSAM(8, 4), PositionAttentionModule(8), ChannelAttentionModule(8)):
        with torch.no_grad():
            if hasattr(m, "gamma"):
                m.gamma.fill_(0.5)
        loss = F.mse_loss(m(x), torch.zeros_like(x))
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in m.parameters())

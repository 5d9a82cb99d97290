"""Chapter 22: temporal self-attention over frame maps, control-aided attention and codebook attention against
brute-force loops, finite differences and exact limits; the video and scene generators."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention.positional import sinusoidal_encoding
from attnbook.attention.video import (
    ControlAidedAttentionPolicy,
    ConvTransformerPredictor,
    FrameStackPredictor,
    TaskCodebookBottleneck,
    TemporalSelfAttention,
    caa_loss,
    codebook_attention,
    control_gradcam,
    prediction_error,
    spatial_attention_pool,
    temporal_self_attention,
)
from attnbook.data.video import (
    ANOMALY_KINDS,
    clip_windows,
    moving_shapes_video,
    steering_scenes,
    two_task_scenes,
)

F64 = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---------------------------------------------------------------------------------------------------------------
# Temporal self-attention
# ---------------------------------------------------------------------------------------------------------------


def temporal_loop(q, k, maps):
    """Definition: O[b, h, t] = sum_s softmax_s(q_t . k_s / sqrt(d)) M_s, one pair of frames at a time."""
    b_, h_, t_, d = q.shape
    out = torch.zeros_like(maps)
    for b in range(b_):
        for h in range(h_):
            for t in range(t_):
                scores = [float(q[b, h, t] @ k[b, h, s]) / math.sqrt(d) for s in range(t_)]
                top = max(scores)
                total = sum(math.exp(x - top) for x in scores)
                for s in range(t_):
                    out[b, h, t] += math.exp(scores[s] - top) / total * maps[b, h, s]
    return out


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_temporal_self_attention_equals_loop(frames):
    q, k = randn(2, 3, frames, 4, seed=1), randn(2, 3, frames, 4, seed=2)
    maps = randn(2, 3, frames, 2, 5, 5, seed=3)
    out, weights = temporal_self_attention(q, k, maps, need_weights=True)
    torch.testing.assert_close(out, temporal_loop(q, k, maps), rtol=0, atol=1e-12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, frames, dtype=F64), rtol=0, atol=1e-12)


def test_temporal_self_attention_limits():
    q, k, maps = randn(2, 2, 1, 4, seed=1), randn(2, 2, 1, 4, seed=2), randn(2, 2, 1, 3, 4, 4, seed=3)
    torch.testing.assert_close(temporal_self_attention(q, k, maps), maps, rtol=0, atol=1e-12)  # one frame
    q, k = randn(2, 2, 6, 4, seed=4), randn(2, 2, 6, 4, seed=5)
    same = maps.expand(-1, -1, 6, -1, -1, -1)
    torch.testing.assert_close(temporal_self_attention(q, k, same), same, rtol=0, atol=1e-12)  # identical frames


def test_temporal_module_equals_its_definition():
    torch.manual_seed(0)
    module = TemporalSelfAttention(3, num_heads=2, head_channels=2, key_dim=4, pos_dim=4).double()
    feats = randn(2, 5, 3, 6, 6, seed=7)
    out, weights = module(feats, need_weights=True)
    assert out.shape == (2, 5, 4, 6, 6) and weights.shape == (2, 2, 5, 5)
    with torch.no_grad():
        maps = module.conv(feats.flatten(0, 1)).reshape(2, 5, 2, 2, 6, 6).transpose(1, 2)  # (B, H, T, C_h, S, S)
        pe = sinusoidal_encoding(torch.arange(5), 4, dtype=F64)
        for b in range(2):
            for h in range(2):
                u = [torch.cat([maps[b, h, t].mean((-2, -1)), pe[t]]) for t in range(5)]
                q = torch.stack([module.w_q[h] @ x for x in u])
                k = torch.stack([module.w_k[h] @ x for x in u])
                ref = temporal_loop(q[None, None], k[None, None], maps[b, h][None, None])[0, 0]
                torch.testing.assert_close(out[b, :, 2 * h : 2 * h + 2].detach(), ref, rtol=0, atol=1e-12)


def test_temporal_without_position_is_uniform_on_a_translating_square():
    torch.manual_seed(0)
    module = TemporalSelfAttention(1, num_heads=2, head_channels=3, pos_dim=0).double()
    clip = torch.zeros(1, 4, 1, 16, 16, dtype=F64)
    for t in range(4):
        clip[0, t, 0, 6:9, 4 + 2 * t : 7 + 2 * t] = 1.0
    _, weights = module(clip, need_weights=True)
    torch.testing.assert_close(weights, torch.full_like(weights, 0.25), rtol=0, atol=1e-12)


@pytest.mark.parametrize("temporal", ["attention", "mean"])
def test_predictors_shapes_and_finite_gradients(temporal):
    torch.manual_seed(0)
    model = ConvTransformerPredictor(width=4, head_channels=2, temporal=temporal)
    frames = torch.rand(3, 4, 1, 8, 8)
    logits, weights = model(frames, need_weights=True)
    assert logits.shape == (3, 1, 8, 8) and weights.shape == (3, 2, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2))
    loss = F.binary_cross_entropy_with_logits(logits, torch.rand(3, 1, 8, 8))
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    stack = FrameStackPredictor(4, width=5)
    assert stack(frames).shape == (3, 1, 8, 8)
    scores = prediction_error(logits.detach(), frames[:, -1])
    torch.testing.assert_close(scores, (torch.sigmoid(logits.detach()) - frames[:, -1]).square().mean((1, 2, 3)))


def test_mean_predictor_ignores_frame_order():
    torch.manual_seed(0)
    model = ConvTransformerPredictor(width=4, head_channels=2, temporal="mean")
    frames = torch.rand(2, 4, 1, 8, 8)
    swapped = frames[:, [1, 0, 2, 3]]  # the last frame stays last
    torch.testing.assert_close(model(frames), model(swapped))


# ---------------------------------------------------------------------------------------------------------------
# Control-aided attention
# ---------------------------------------------------------------------------------------------------------------


def gradcam_finite_differences(policy, feats, step=1e-6):
    grad = torch.zeros_like(feats)
    flat = grad.view(-1)
    for n in range(feats.numel()):
        plus, minus = feats.clone(), feats.clone()
        plus.view(-1)[n] += step
        minus.view(-1)[n] -= step
        flat[n] = (policy(plus).abs().sum() - policy(minus).abs().sum()) / (2 * step)
    cam = F.relu((grad.mean((-2, -1), keepdim=True) * feats).sum(1))
    return cam / cam.flatten(1).sum(1)[:, None, None]


def test_control_gradcam_equals_finite_differences():
    feats = randn(2, 3, 4, 4, seed=1)
    alpha = randn(2, 16, seed=2).softmax(-1)
    v1, v2 = randn(3, 5, seed=3), randn(5, 2, seed=4)

    def policy(f):
        return torch.tanh(torch.einsum("bn,bcn->bc", alpha, f.flatten(2)) @ v1) @ v2

    probe = feats.clone().requires_grad_(True)
    target = control_gradcam(policy(probe), probe)
    torch.testing.assert_close(target, gradcam_finite_differences(policy, feats), rtol=0, atol=1e-7)
    torch.testing.assert_close(target.flatten(1).sum(1), torch.ones(2, dtype=F64), rtol=0, atol=1e-12)


def test_control_gradcam_linear_policy_closed_form():
    feats, v = randn(3, 4, 5, 5, seed=5), randn(4, seed=6)
    alpha = randn(3, 25, seed=7).softmax(-1)
    probe = feats.clone().requires_grad_(True)
    u = torch.einsum("bn,bcn->bc", alpha, probe.flatten(2)) @ v[:, None]
    closed = F.relu(u.detach().sign()[:, :, None] * torch.einsum("c,bcij->bij", v, feats))
    closed = closed / closed.flatten(1).sum(1)[:, None, None]
    torch.testing.assert_close(control_gradcam(u, probe), closed, rtol=0, atol=1e-12)


def test_control_gradcam_all_zero_map_is_uniform():
    feats = torch.zeros(1, 2, 3, 3, dtype=F64, requires_grad=True)
    u = feats.sum((1, 2, 3))[:, None] + 1.0
    torch.testing.assert_close(control_gradcam(u, feats), torch.full((1, 3, 3), 1 / 9, dtype=F64))


def test_caa_loss_is_kl_and_zero_at_the_target():
    alpha = randn(2, 9, seed=1).softmax(-1).reshape(2, 3, 3)
    target = F.relu(randn(2, 9, seed=2)).reshape(2, 3, 3)
    target = target / target.flatten(1).sum(1)[:, None, None]
    g, a = target.flatten(1), alpha.flatten(1)
    ref = sum(float(g[b, n] * math.log(g[b, n] / a[b, n])) for b in range(2) for n in range(9) if g[b, n] > 0) / 2
    assert abs(caa_loss(alpha, target).item() - ref) < 1e-12
    assert abs(caa_loss(target.clamp_min(1e-300), target).item()) < 1e-12


def test_spatial_attention_pool_equals_loop():
    logits, feats = randn(2, 3, 4, seed=1), randn(2, 5, 3, 4, seed=2)
    z, alpha = spatial_attention_pool(logits, feats)
    weights = logits.flatten(1).softmax(-1)
    ref = torch.stack([sum(weights[b, n] * feats[b].flatten(1)[:, n] for n in range(12)) for b in range(2)])
    torch.testing.assert_close(z, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(alpha.flatten(1), weights, rtol=0, atol=0)


def test_caa_policy_routes_gradients():
    torch.manual_seed(0)
    policy = ControlAidedAttentionPolicy(scene_size=8, width=4, attention_grad="caa")
    scenes = steering_scenes(4, size=8, seed=0)
    u, alpha, feats = policy(scenes.scenes)
    attention = set(policy.attend.parameters())
    params = list(policy.parameters())
    imitation = torch.autograd.grad(F.mse_loss(u[:, 0], scenes.steering), params, allow_unused=True)
    caa = torch.autograd.grad(policy.caa_loss_from(alpha, feats), params, allow_unused=True)
    for p, gi, gc in zip(params, imitation, caa, strict=True):
        if p in attention:
            assert gi is None and gc is not None and torch.isfinite(gc).all()
        else:
            assert gc is None and gi is not None and torch.isfinite(gi).all()
    baseline = ControlAidedAttentionPolicy(scene_size=8, width=4, attention_grad="loss")
    u, _, _ = baseline(scenes.scenes)
    grads = torch.autograd.grad(u.sum(), list(baseline.attend.parameters()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    uniform = ControlAidedAttentionPolicy(scene_size=8, width=4, attention_grad="none")
    _, alpha_u, _ = uniform(scenes.scenes)
    torch.testing.assert_close(alpha_u, torch.full_like(alpha_u, 1 / 64))


# ---------------------------------------------------------------------------------------------------------------
# Codebook attention
# ---------------------------------------------------------------------------------------------------------------


def codebook_loop(e, w, b, codes):
    out = []
    for n in range(e.shape[0]):
        logits = [
            sum(max(float(e[n, d]), 0.0) * float(w[k, d]) for d in range(w.shape[1])) + float(b[k])
            for k in range(w.shape[0])
        ]
        top = max(logits)
        p = [math.exp(x - top) for x in logits]
        out.append(sum(p[k] / sum(p) * codes[k] for k in range(w.shape[0])))
    return torch.stack(out)


def test_codebook_attention_equals_loop_and_pytorch():
    e, w, b, codes = randn(5, 6, seed=1), randn(4, 6, seed=2), randn(4, seed=3), randn(4, 3, seed=4)
    out = codebook_attention(F.relu(e), w, codes, b)
    torch.testing.assert_close(out, codebook_loop(e, w, b, codes), rtol=0, atol=1e-12)
    ref = F.scaled_dot_product_attention(
        F.relu(e)[:, None], w.expand(5, 4, 6), codes.expand(5, 4, 3), attn_mask=b[None], scale=1.0
    )[:, 0]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_codebook_of_one_code_closes_the_bottleneck():
    torch.manual_seed(0)
    bottleneck = TaskCodebookBottleneck(6, codebook_size=1, code_dim=2).double()
    out, p = bottleneck(randn(7, 6, seed=1))
    torch.testing.assert_close(p, torch.ones(7, 1, dtype=F64))
    torch.testing.assert_close(out, out[:1].expand(7, -1), rtol=0, atol=1e-12)


def test_bottleneck_equals_codebook_attention_and_has_finite_gradients():
    torch.manual_seed(0)
    bottleneck = TaskCodebookBottleneck(6, codebook_size=5, code_dim=3, out_features=4).double().eval()
    e = randn(2, 3, 6, seed=2).requires_grad_(True)
    out, p = bottleneck(e)
    assert out.shape == (2, 3, 4) and p.shape == (2, 3, 5)
    ref = codebook_attention(F.relu(e), bottleneck.indexer.weight, bottleneck.codebook, bottleneck.indexer.bias)
    torch.testing.assert_close(out, bottleneck.upsample(ref), rtol=0, atol=1e-12)
    out.sum().backward()
    assert torch.isfinite(e.grad).all() and all(torch.isfinite(q.grad).all() for q in bottleneck.parameters())


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs name the argument
# ---------------------------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument():
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="maps"):
        temporal_self_attention(q, q, torch.randn(1, 2, 3, 5))
    with pytest.raises(ValueError, match="maps"):
        temporal_self_attention(q, q, torch.randn(1, 2, 4, 2, 3, 3))
    with pytest.raises(ValueError, match="q and k"):
        temporal_self_attention(q, torch.randn(1, 2, 3, 5), torch.randn(1, 2, 3, 2, 3, 3))
    with pytest.raises(ValueError, match="features"):
        TemporalSelfAttention(3)(torch.randn(1, 4, 2, 5, 5))
    with pytest.raises(ValueError, match="kernel_size"):
        TemporalSelfAttention(3, kernel_size=2)
    with pytest.raises(ValueError, match="pos_dim"):
        TemporalSelfAttention(3, pos_dim=3)
    with pytest.raises(ValueError, match="temporal"):
        ConvTransformerPredictor(temporal="max")
    with pytest.raises(ValueError, match="frames"):
        FrameStackPredictor(4)(torch.randn(1, 3, 1, 8, 8))
    with pytest.raises(ValueError, match="logits"):
        prediction_error(torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 5))
    with pytest.raises(ValueError, match="features must require grad"):
        control_gradcam(torch.randn(2, 1), torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="alpha"):
        caa_loss(torch.rand(2, 3, 3), torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="attention_grad"):
        ControlAidedAttentionPolicy(attention_grad="both")
    with pytest.raises(ValueError, match="scene"):
        ControlAidedAttentionPolicy(scene_size=12)(torch.randn(1, 1, 10, 10))
    with pytest.raises(ValueError, match="keys"):
        codebook_attention(torch.randn(3, 4), torch.randn(5, 6), torch.randn(5, 2))
    with pytest.raises(ValueError, match="codebook"):
        codebook_attention(torch.randn(3, 4), torch.randn(5, 4), torch.randn(6, 2))
    with pytest.raises(ValueError, match="bias"):
        codebook_attention(torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 2), torch.randn(4))
    with pytest.raises(ValueError, match="embedding"):
        TaskCodebookBottleneck(6)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="anomaly_fraction"):
        moving_shapes_video(4, anomaly_fraction=1.5)
    with pytest.raises(ValueError, match="num_frames"):
        moving_shapes_video(4, num_frames=5, first_event=5)
    with pytest.raises(ValueError, match="context"):
        clip_windows(torch.zeros(2, 6, 1, 8, 8), 6)
    with pytest.raises(ValueError, match="size"):
        steering_scenes(4, size=3)


# ---------------------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------------------


def test_generators_are_deterministic_by_seed():
    a, b = moving_shapes_video(8, anomaly_fraction=0.5, seed=3), moving_shapes_video(8, anomaly_fraction=0.5, seed=3)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.labels, b.labels) and a.kinds == b.kinds
    assert not torch.equal(a.frames, moving_shapes_video(8, anomaly_fraction=0.5, seed=4).frames)
    assert torch.equal(steering_scenes(5, seed=1).scenes, steering_scenes(5, seed=1).scenes)
    assert torch.equal(two_task_scenes(5, seed=1).scenes, two_task_scenes(5, seed=1).scenes)


def test_normal_videos_follow_constant_velocity_with_bounces():
    videos = moving_shapes_video(20, num_frames=12, size=12, num_shapes=2, seed=0)
    assert not videos.labels.any() and set(videos.kinds) == {"normal"}
    pos = videos.positions.float()  # (N, L, shapes, 2)
    step = pos[:, 1:] - pos[:, :-1]
    high = 12 - 3
    for n in range(20):
        for t in range(1, 11):
            for s in range(2):
                for axis in range(2):
                    same = step[n, t, s, axis] == step[n, t - 1, s, axis]
                    wall = pos[n, t, s, axis] <= 1 or pos[n, t, s, axis] >= high - 1
                    assert same or wall  # the velocity changes only at a wall
    assert (videos.frames.sum((2, 3, 4)) > 0).all()


def test_anomalies_are_where_the_labels_say():
    videos = moving_shapes_video(16, num_frames=14, size=16, num_shapes=1, anomaly_fraction=1.0, seed=5)
    assert set(videos.kinds) == set(ANOMALY_KINDS)
    assert (videos.labels.sum(1) == 1).all()
    for n, kind in enumerate(videos.kinds):
        a = int(videos.labels[n].nonzero()[0, 0])
        track = videos.positions[n, :, 0].float()
        if kind == "jump":
            assert (track[a] - track[a - 1]).abs().max() >= 16 // 3 - 2
        elif kind == "stop":
            assert torch.equal(track[a], track[a - 1]) and (track[a:] == track[a]).all()
        elif kind == "reverse":
            assert torch.equal(track[a], track[a - 2])
        else:  # appear: one more square's worth of pixels from the event frame on
            mass = videos.frames[n].sum((1, 2, 3))
            assert mass[a:].min() > mass[:a].max() - 1e-6 or mass[a] > mass[a - 1]


def test_clip_windows_index_targets():
    videos = moving_shapes_video(3, num_frames=9, anomaly_fraction=1.0, seed=2)
    past, target, index = clip_windows(videos.frames, 4)
    assert past.shape == (15, 4, 1, 16, 16) and target.shape == (15, 1, 16, 16)
    for row in range(15):
        n, t = index[row].tolist()
        assert torch.equal(target[row], videos.frames[n, t]) and torch.equal(past[row], videos.frames[n, t - 4 : t])


def test_scene_labels():
    scenes = steering_scenes(30, size=10, seed=1)
    assert scenes.steering.abs().max() <= 1 and (scenes.relevant.sum((1, 2)) == 4).all()
    assert torch.equal(scenes.scenes[:, 0][scenes.relevant], torch.ones(120))  # the target is drawn last
    tasks = two_task_scenes(30, seed=2)
    torch.testing.assert_close(tasks.answer, tasks.centres[torch.arange(30), tasks.task])
    assert tasks.answer.abs().max() <= 1

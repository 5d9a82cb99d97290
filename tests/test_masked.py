"""Masked image modelling (attnbook.models.masked): masking, MAE, MemMC-MAE, CAE, LUT, Mask & Match."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnbook.models.masked import (
    ContextAutoencoder,
    MaskedAutoencoder,
    MemoryCore,
    RegressorBlock,
    SpatialAttentionPool,
    UnmaskedTokenLearner,
    block_masking,
    disjoint_masking,
    gather_tokens,
    masked_patch_loss,
    progressive_mask_ratio,
    random_masking,
    unshuffle_tokens,
)
from attnbook.models.transformer import EncoderBlock


@pytest.mark.parametrize("N, ratio", [(16, 0.75), (16, 0.5), (10, 0.3), (7, 0.0), (5, 0.99)])
def test_random_masking_keeps_the_stated_number_and_unshuffle_inverts(N, ratio):
    g = torch.Generator().manual_seed(0)
    plan = random_masking(6, N, ratio, generator=g)
    n = max(1, int(N * (1 - ratio)))
    assert plan.keep.shape == (6, n) and plan.hidden.shape == (6, N - n)
    assert torch.equal(plan.masked.sum(1), torch.full((6,), N - n))
    for b in range(6):  # kept and hidden partition the patches; masked marks exactly the hidden ones
        assert sorted(plan.keep[b].tolist() + plan.hidden[b].tolist()) == list(range(N))
        assert not plan.masked[b, plan.keep[b]].any() and plan.masked[b, plan.hidden[b]].all()
    x = torch.randn(6, N, 3)
    shuffled = gather_tokens(x, plan.order)  # [kept; hidden]
    torch.testing.assert_close(unshuffle_tokens(shuffled, plan.restore), x, rtol=0, atol=0)
    torch.testing.assert_close(shuffled[:, :n], gather_tokens(x, plan.keep), rtol=0, atol=0)


def test_random_masking_is_per_sample_and_uniform():
    plan = random_masking(4000, 6, 0.5, generator=torch.Generator().manual_seed(1))
    freq = plan.masked.double().mean(0)  # every patch hidden about half the time
    assert (freq - 0.5).abs().max() < 0.04
    assert len({tuple(sorted(k.tolist())) for k in plan.keep[:50]}) > 5  # different subsets per sample


def test_random_masking_follows_noise_like_mae():
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3]])
    plan = random_masking(1, 4, 0.5, noise=noise)
    assert plan.keep.tolist() == [[1, 3]] and plan.masked.tolist() == [[True, False, True, False]]


def test_disjoint_masking_gives_disjoint_views():
    p1, p2 = disjoint_masking(5, 16, 0.75, generator=torch.Generator().manual_seed(0))
    for b in range(5):
        assert not set(p1.keep[b].tolist()) & set(p2.keep[b].tolist())
        assert len(p1.keep[b]) == len(p2.keep[b]) == 4
    with pytest.raises(ValueError, match="mask_ratio >= 0.5"):
        disjoint_masking(2, 16, 0.25)


def small_mae(**kw):
    torch.manual_seed(0)
    return (
        MaskedAutoencoder(8, 2, 1, dim=16, depth=2, num_heads=2, decoder_dim=8, decoder_depth=1, decoder_heads=2, **kw)
        .double()
        .eval()
    )


@pytest.mark.parametrize("num_memory", [0, 3])
def test_encoder_on_visible_tokens_equals_brute_force(num_memory):
    model = small_mae(num_memory=num_memory)
    images = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    plan = random_masking(3, 16, 0.75, generator=torch.Generator().manual_seed(2))
    latents = model.encode(images, plan.keep)
    tokens = model.tokens(images)
    for b in range(3):  # brute force: each image's kept tokens, in a Python list, through the encoder alone
        visible = torch.stack([tokens[b, j] for j in plan.keep[b].tolist()])[None]
        torch.testing.assert_close(latents[b], model.encoder(visible)[0], rtol=0, atol=1e-12)
    if num_memory == 0:  # = the full encoder with the hidden patches removed from every key set
        may_attend = ~plan.masked[:, None, None, :]  # (B, 1, 1, N)
        x = tokens
        for layer in model.encoder.layers:
            x = layer(x, attn_mask=may_attend.expand(-1, 2, 16, -1))
        full = model.encoder.norm(x)
        torch.testing.assert_close(latents, gather_tokens(full, plan.keep), rtol=0, atol=1e-12)


def test_mae_loss_is_the_mse_on_hidden_patches_only():
    model = small_mae()
    images = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    out = model(images, generator=torch.Generator().manual_seed(0))
    assert out.pred.shape == (2, 16, 4)
    target = model.patchify(images)
    errors = [
        ((out.pred[b, j] - target[b, j]) ** 2).mean() for b in range(2) for j in range(16) if out.plan.masked[b, j]
    ]
    torch.testing.assert_close(out.loss, torch.stack(errors).mean(), rtol=0, atol=1e-12)
    # the visible patches' predictions do not enter the loss
    pred2 = out.pred.clone()
    pred2[~out.plan.masked] += 5.0
    torch.testing.assert_close(masked_patch_loss(pred2, target, out.plan.masked), out.loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.unpatchify(target), images, rtol=0, atol=0)


def test_mae_decoder_places_mask_tokens_at_hidden_positions():
    model = small_mae()
    latents = torch.randn(2, 4, 16, dtype=torch.float64)
    plan = random_masking(2, 16, 0.75, generator=torch.Generator().manual_seed(3))
    captured = {}
    model.decoder.register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    model.decode(latents, plan)
    x = captured["x"] - model.decoder_pos_embed
    embedded = model.decoder_embed(latents)
    for b in range(2):
        for j in range(16):
            where = (plan.keep[b] == j).nonzero()
            expected = model.mask_token[0, 0] if plan.masked[b, j] else embedded[b, where[0, 0]]
            torch.testing.assert_close(x[b, j], expected, rtol=0, atol=1e-12)


def test_mae_learns_to_reconstruct():
    torch.manual_seed(0)
    model = MaskedAutoencoder(8, 2, 1, dim=16, depth=1, num_heads=2, decoder_dim=16, mask_ratio=0.5)
    images = torch.rand(32, 1, 8, 8).round()  # binary noise: nothing to learn but the mean, so use structure:
    images = images * torch.linspace(0, 1, 8)[None, None, None, :]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = model(images, generator=g).loss.item()
    for _ in range(150):
        loss = model(images, generator=g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first
    scores = model.reconstruction_error(images[:4], repeats=3, generator=g)
    assert scores.shape == (4,) and (scores >= 0).all()


def test_memory_core_equals_brute_force_concatenation():
    torch.manual_seed(0)
    H, d, N_m = 2, 4, 3
    block = EncoderBlock(8, H, 16, norm_first=True, core=lambda: MemoryCore(H, d, N_m)).double()
    attn = block.self_attn
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    out, weights = attn(x, need_weights=True, average_attn_weights=False)
    q = attn.q_proj(x).reshape(2, 5, H, d).transpose(1, 2)
    k = attn.k_proj(x).reshape(2, 5, H, d).transpose(1, 2)
    v = attn.v_proj(x).reshape(2, 5, H, d).transpose(1, 2)
    mk, mv = attn.core.memory_k, attn.core.memory_v
    heads = []
    for b in range(2):
        per_head = []
        for h in range(H):
            keys = torch.cat([k[b, h], mk[h]])  # (5 + N_m, d): [X W_K; M_K]
            values = torch.cat([v[b, h], mv[h]])
            a = torch.softmax(q[b, h] @ keys.T / math.sqrt(d), -1)
            per_head.append(a @ values)
            torch.testing.assert_close(weights[b, h], a, rtol=0, atol=1e-12)
        heads.append(torch.cat(per_head, -1))
    torch.testing.assert_close(out, attn.out_proj(torch.stack(heads)), rtol=0, atol=1e-12)
    # a boolean mask keeps the memory visible even to a query that sees no token
    mask = torch.zeros(5, 5, dtype=torch.bool)
    _, w = attn(x, attn_mask=mask, need_weights=True, average_attn_weights=False)
    assert torch.all(w[..., :5] == 0) and torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)))


def test_memory_core_with_zero_keys_and_values_is_a_sink():
    torch.manual_seed(0)
    core = MemoryCore(1, 4, 2).double()
    with torch.no_grad():
        core.memory_k.zero_()
        core.memory_v.zero_()
    q, k, v = (torch.randn(1, 1, 3, 4, dtype=torch.float64) for _ in range(3))
    out, _ = core(q, k, v)
    scores = q @ k.transpose(-2, -1) / 2  # memory scores are 0: exp(0) = 1 per slot joins the denominator
    expected = (scores.exp() @ v) / (scores.exp().sum(-1, keepdim=True) + 2)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="is_causal"):
        core(q, k, v, is_causal=True)


def test_memmc_multilevel_decoder_reads_the_concatenated_levels():
    model = small_mae(num_memory=2, decoder="multilevel", levels=(0, 1))
    images = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    plan = random_masking(2, 16, 0.75, generator=torch.Generator().manual_seed(0))
    latents, levels = model.encode(images, plan.keep, return_levels=True)
    assert len(levels) == 2 and all(level.shape == (2, 4, 16) for level in levels)
    torch.testing.assert_close(levels[-1], latents, rtol=0, atol=0)
    captured = {}
    layer = model.decoder.layers[0]
    layer.cross_attn.register_forward_hook(lambda m, args, out: captured.update(kv=args[1]))
    model.decode(latents, plan, levels)  # the keys/values: the concatenation of the projected levels
    torch.testing.assert_close(
        captured["kv"], torch.cat([model.decoder_embed(lv) for lv in levels], 1), rtol=0, atol=1e-12
    )
    out = model(images, plan=plan)
    assert out.pred.shape == (2, 16, 4) and torch.isfinite(out.loss)


def test_cae_regressor_block_matches_torch_cross_attention():
    torch.manual_seed(0)
    block = RegressorBlock(8, 2).double()
    ref = nn.MultiheadAttention(8, 2, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_bias.normal_()
        ref.out_proj.bias.normal_()
        for norm in (block.norm_q, block.norm_k, block.norm_v, block.norm_mlp):
            norm.weight.normal_()
            norm.bias.normal_()
    block.cross_attn.load_torch(ref)
    z_m, z_v = torch.randn(3, 5, 8, dtype=torch.float64), torch.randn(3, 2, 8, dtype=torch.float64)
    p_m, p_v = torch.randn(3, 5, 8, dtype=torch.float64), torch.randn(3, 2, 8, dtype=torch.float64)
    kv, pkv = torch.cat([z_v, z_m], 1), torch.cat([p_v, p_m], 1)
    h, _ = ref(block.norm_q(z_m + p_m), block.norm_k(kv + pkv), block.norm_v(kv))
    y = block.norm_mlp(z_m + h)
    torch.testing.assert_close(block(z_m, z_v, p_m, p_v), y + block.mlp(y), rtol=0, atol=1e-12)


def test_cae_alignment_target_is_the_encoder_on_hidden_patches_without_gradient():
    torch.manual_seed(0)
    model = ContextAutoencoder(8, 2, 1, dim=16, depth=1, num_heads=2, regressor_depth=1).double()
    images = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    out = model(images, generator=torch.Generator().manual_seed(0))
    n_hidden = out.plan.hidden.shape[1]
    assert out.pred.shape == (2, n_hidden, 4) and out.latent_pred.shape == (2, n_hidden, 16)
    torch.testing.assert_close(out.latent_target, model.encode(images, out.plan.hidden), rtol=0, atol=1e-12)
    assert not out.latent_target.requires_grad
    torch.testing.assert_close(out.alignment, F.mse_loss(out.latent_pred, out.latent_target), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.loss, out.reconstruction + out.alignment, rtol=0, atol=1e-12)
    out.loss.backward()
    assert model.regressor.blocks[0].cross_attn.q_proj.weight.grad.abs().sum() > 0


def test_cae_regressor_never_changes_with_hidden_pixels():
    """The regressor's queries carry positions only: its prediction depends on the visible patches alone."""
    torch.manual_seed(0)
    model = ContextAutoencoder(8, 2, 1, dim=16, depth=1, num_heads=2, regressor_depth=2).double()
    images = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    plan = random_masking(1, 16, 0.5, generator=torch.Generator().manual_seed(0))
    a = model(images, plan=plan).latent_pred
    patches = model.patchify(images)
    patches[0, plan.hidden[0]] = torch.rand(len(plan.hidden[0]), 4, dtype=torch.float64)
    b = model(model.unpatchify(patches), plan=plan).latent_pred
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_lut_loss_pieces_and_teacher_ema():
    student = small_mae(mask_ratio=0.75).float().train()
    lut = UnmaskedTokenLearner(student, proj_dim=8)
    v1, v2 = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    total, mae, bc = lut.loss(v1, v2, generator=torch.Generator().manual_seed(0))
    assert 0 <= bc.item() <= 4 and torch.isclose(total, mae + bc)
    total.backward()
    assert all(p.grad is None for p in lut.teacher.parameters())  # stop-gradient on the teacher
    assert lut.head[0].weight.grad is not None and lut.predictor[0].weight.grad is not None
    before = next(lut.teacher.parameters()).clone()
    with torch.no_grad():
        next(lut.student.parameters()).add_(1.0)
    lut.update_teacher(0.9)
    torch.testing.assert_close(next(lut.teacher.parameters()), before + 0.1, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="momentum"):
        lut.update_teacher(1.5)
    with pytest.raises(TypeError, match="MaskedAutoencoder"):
        UnmaskedTokenLearner(nn.Linear(2, 2))


def test_mask_and_match_pieces():
    assert progressive_mask_ratio(0, 11) == pytest.approx(0.1)
    assert progressive_mask_ratio(5, 11) == pytest.approx(0.35)
    assert progressive_mask_ratio(10, 11) == pytest.approx(0.6) == progressive_mask_ratio(50, 11)
    ratios = [progressive_mask_ratio(s, 20, 0.0, 0.8) for s in range(20)]
    assert all(a <= b for a, b in zip(ratios, ratios[1:], strict=False))
    masked = block_masking(5, 8, 8, 0.4, block=2, generator=torch.Generator().manual_seed(0))
    assert masked.shape == (5, 8, 8) and (masked.flatten(1).sum(1) >= round(0.4 * 64)).all()
    assert (masked.flatten(1).sum(1) <= round(0.4 * 64) + 3).all()
    pool = SpatialAttentionPool(3).double()
    feats = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    z, a = pool(feats, masked)
    assert torch.all(a[masked] == 0)  # hidden positions get zero weight
    torch.testing.assert_close(a.flatten(1).sum(1), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(z, (feats * a[:, None]).sum((2, 3)), rtol=0, atol=1e-12)
    logits = pool.score(feats).flatten(1)
    torch.testing.assert_close(pool(feats)[1].flatten(1), torch.softmax(logits, -1), rtol=0, atol=1e-12)


def test_bad_inputs_name_the_fault():
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\)"):
        random_masking(2, 16, 1.0)
    with pytest.raises(TypeError, match="mask_ratio must be a number"):
        random_masking(2, 16, "half")
    with pytest.raises(ValueError, match="num_patches must be positive"):
        random_masking(2, 0, 0.5)
    with pytest.raises(ValueError, match=r"noise must be a tensor of shape"):
        random_masking(2, 4, 0.5, noise=torch.rand(2, 5))
    with pytest.raises(ValueError, match=r"index must be \(B=2, K\)"):
        gather_tokens(torch.randn(2, 4, 3), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="masked_patch_loss"):
        masked_patch_loss(torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="decoder must be"):
        MaskedAutoencoder(8, 2, 1, decoder="conv")
    with pytest.raises(ValueError, match="levels must be encoder block indices"):
        MaskedAutoencoder(8, 2, 1, depth=2, decoder="multilevel", levels=(0, 5))
    with pytest.raises(ValueError, match="num_memory"):
        MaskedAutoencoder(8, 2, 1, num_memory=-1)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 8, 8\)"):
        small_mae()(torch.rand(2, 1, 6, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="patch_size 3 must divide"):
        ContextAutoencoder(8, 3, 1)
    with pytest.raises(ValueError, match="step must be a non-negative int"):
        progressive_mask_ratio(-1, 10)
    with pytest.raises(ValueError, match="block=9 must fit"):
        block_masking(1, 8, 8, 0.5, block=9)
    with pytest.raises(ValueError, match="nothing left to pool"):
        SpatialAttentionPool(2)(torch.randn(1, 2, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"features must be \(B, C=2, H, W\)"):
        SpatialAttentionPool(2)(torch.randn(1, 3, 2, 2))

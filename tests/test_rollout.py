"""Attention rollout and attention against distance (attnbook.attention.rollout); the ViT's attention maps against
transformers' ViTModel with copied weights (chapter 13)."""

from __future__ import annotations

import pytest
import torch

from attnbook.attention.rollout import attention_by_distance, attention_rollout, patch_distances
from attnbook.models.vit import ViT


def random_attention(layers: int, batch: int, heads: int, tokens: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, heads, tokens, tokens)
    return [torch.randn(shape, generator=g, dtype=torch.float64).softmax(-1) for _ in range(layers)]


def rollout_loop(weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """The definition, entry by entry: mean over heads, plus identity, rows renormalised, product over layers."""
    B, H, T, _ = weights[0].shape
    out = torch.zeros(B, T, T, dtype=torch.float64)
    for b in range(B):
        result = torch.eye(T, dtype=torch.float64)
        for w in weights:
            layer = torch.zeros(T, T, dtype=torch.float64)
            for i in range(T):
                for j in range(T):
                    layer[i, j] = alpha * sum(w[b, h, i, j] for h in range(H)) / H + (1 - alpha) * float(i == j)
                layer[i] = layer[i] / layer[i].sum()
            result = layer @ result
        out[b] = result
    return out


@pytest.mark.parametrize("alpha", [0.5, 0.9, 1.0])
def test_rollout_matches_the_loop_and_rows_stay_distributions(alpha):
    weights = random_attention(3, 2, 4, 6)
    rollout = attention_rollout(weights, alpha=alpha)
    assert rollout.shape == (2, 6, 6)
    torch.testing.assert_close(rollout, rollout_loop(weights, alpha), rtol=0, atol=1e-12)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 6, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (rollout >= 0).all()
    torch.testing.assert_close(attention_rollout(torch.stack(weights), alpha=alpha), rollout, rtol=0, atol=0)


def test_rollout_of_identity_attention_is_the_identity_and_one_layer_is_half_and_half():
    eye = torch.eye(5, dtype=torch.float64).expand(2, 3, 5, 5)
    torch.testing.assert_close(attention_rollout([eye] * 4), torch.eye(5, dtype=torch.float64).expand(2, 5, 5))
    w = random_attention(1, 1, 2, 5, seed=3)
    expected = 0.5 * w[0].mean(1) + 0.5 * torch.eye(5, dtype=torch.float64)  # rows already sum to 1
    torch.testing.assert_close(attention_rollout(w), expected, rtol=0, atol=1e-15)
    # alpha = 0 keeps only the residual: the identity, whatever the attention
    torch.testing.assert_close(attention_rollout(random_attention(3, 1, 2, 5), alpha=0.0)[0], torch.eye(5).double())


def test_rollout_of_uniform_attention_mixes_everything():
    uniform = torch.full((1, 2, 4, 4), 0.25, dtype=torch.float64)
    rollout = attention_rollout([uniform] * 30, alpha=1.0)
    torch.testing.assert_close(rollout, torch.full((1, 4, 4), 0.25, dtype=torch.float64))


def test_attention_by_distance_matches_a_loop():
    grid = (3, 4)
    weights = random_attention(1, 2, 3, 1 + 12, seed=5)[0]
    distances, mass = attention_by_distance(weights, grid)
    coords = [(r, c) for r in range(3) for c in range(4)]
    expected = torch.zeros(3, len(distances), dtype=torch.float64)
    for h in range(3):
        for k, d in enumerate(distances.tolist()):
            total = 0.0
            for b in range(2):
                for i, (ri, ci) in enumerate(coords):
                    for j, (rj, cj) in enumerate(coords):
                        if abs(((ri - rj) ** 2 + (ci - cj) ** 2) ** 0.5 - d) < 1e-9:
                            total += float(weights[b, h, 1 + i, 1 + j])
            expected[h, k] = total / (2 * 12)
    torch.testing.assert_close(mass, expected, rtol=0, atol=1e-12)
    assert distances[0] == 0 and torch.all(distances[1:] > distances[:-1])
    # the class token's column is left out: the masses sum to the weight on patches, not to 1
    torch.testing.assert_close(mass.sum(-1), weights[:, :, 1:, 1:].sum(-1).mean(dim=(0, 2)))
    torch.testing.assert_close(patch_distances((1, 3)), torch.tensor([[0.0, 1, 2], [1, 0, 1], [2, 1, 0]]).double())


def test_bad_inputs_name_the_fault():
    with pytest.raises(ValueError, match="alpha"):
        attention_rollout(random_attention(1, 1, 1, 3), alpha=1.5)
    with pytest.raises(ValueError, match="one shape"):
        attention_rollout(random_attention(1, 1, 1, 3) + random_attention(1, 1, 1, 4))
    with pytest.raises(ValueError, match=r"\(L, B, H, T, T\)"):
        attention_rollout(torch.rand(2, 3, 3))
    with pytest.raises(TypeError, match="non-empty list"):
        attention_rollout([])
    with pytest.raises(ValueError, match="T = 5 tokens, but grid"):
        attention_by_distance(torch.rand(1, 1, 5, 5), (3, 3))
    with pytest.raises(ValueError, match="grid"):
        patch_distances((3, 0))


def copy_from_transformers(model: ViT, ref) -> ViT:
    """transformers' ViTModel weights into ours (its module names as of transformers 5.24)."""
    with torch.no_grad():
        emb = ref.embeddings
        model.patch_embed.proj.load_state_dict(emb.patch_embeddings.projection.state_dict())
        model.cls_token.copy_(emb.cls_token)
        model.pos_embed.copy_(emb.position_embeddings)
        for ours, theirs in zip(model.encoder.layers, ref.layers, strict=True):
            ours.norm1.load_state_dict(theirs.layernorm_before.state_dict())
            ours.norm2.load_state_dict(theirs.layernorm_after.state_dict())
            attn = theirs.attention
            for mine, other in ((ours.self_attn.q_proj, attn.q_proj), (ours.self_attn.k_proj, attn.k_proj)):
                mine.load_state_dict(other.state_dict())
            ours.self_attn.v_proj.load_state_dict(attn.v_proj.state_dict())
            ours.self_attn.out_proj.load_state_dict(attn.o_proj.state_dict())
            ours.linear1.load_state_dict(theirs.mlp.fc1.state_dict())
            ours.linear2.load_state_dict(theirs.mlp.fc2.state_dict())
        model.encoder.norm.load_state_dict(ref.layernorm.state_dict())
    return model


def test_vit_attention_maps_match_transformers_vitmodel_with_copied_weights():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,  # mlp_ratio 4, as in ours
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    )
    ref = transformers.ViTModel(config, add_pooling_layer=False).double().eval()
    ref.set_attn_implementation("eager")  # output_attentions needs the eager path
    with torch.no_grad():  # HF starts the class token at zero-ish and biases at zero: make every weight count
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model = copy_from_transformers(ViT(8, 2, 1, 10, dim=32, depth=3, num_heads=4), ref).double().eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    theirs = ref(pixel_values=x, output_attentions=True)
    features, weights = model.features(x, need_weights=True)
    assert len(weights) == len(theirs.attentions) == 3
    for ours, other in zip(weights, theirs.attentions, strict=True):
        assert ours.shape == other.shape == (3, 4, 17, 17)
        torch.testing.assert_close(ours, other, rtol=0, atol=1e-6)  # HF's eager softmax runs in float32
    torch.testing.assert_close(features, theirs.last_hidden_state, rtol=0, atol=1e-5)
    # and so the rollout of the two models' maps agrees
    theirs_rollout = attention_rollout(list(theirs.attentions))
    torch.testing.assert_close(attention_rollout(weights), theirs_rollout, rtol=0, atol=1e-6)

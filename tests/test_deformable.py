"""Multi-scale deformable attention (chapter 16).

The package's core and module equal (i) a brute-force bilinear gather written with loops over queries, heads,
levels and points, and (ii) ``transformers``' pure-PyTorch path (``MultiScaleDeformableAttention`` and the full
``DeformableDetrMultiscaleDeformableAttention`` with copied weights), in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnbook.attention.deformable import (
    MultiScaleDeformableAttention,
    deformable_sampling_locations,
    multi_scale_deformable_attention,
    ring_offsets,
)

MSDA = MultiScaleDeformableAttention
msda = multi_scale_deformable_attention
TOL = {"rtol": 0, "atol": 1e-12}
SHAPES = [(5, 7), (3, 4), (1, 2)]


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def bilinear_read(grid: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """grid (H_l, W_l, d) read at normalised (x, y): pixel (i, j)'s centre is ((j + .5)/W, (i + .5)/H); zero outside."""
    h, w, d = grid.shape
    px, py = x * w - 0.5, y * h - 0.5
    j0, i0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=grid.dtype)
    for i, wy in ((i0, i0 + 1 - py), (i0 + 1, py - i0)):
        for j, wx in ((j0, j0 + 1 - px), (j0 + 1, px - j0)):
            if 0 <= i < h and 0 <= j < w:
                out += wy * wx * grid[i, j]
    return out


def brute_force(value, shapes, locations, weights):
    """The definition, one term at a time: sum over levels and points of a_hlk * bilinear(x_l^h, location)."""
    B, S, H, d = value.shape
    _, T_q, _, L, K, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(B, T_q, H * d, dtype=value.dtype)
    for b in range(B):
        for q in range(T_q):
            for hd in range(H):
                acc = torch.zeros(d, dtype=value.dtype)
                for lv, (h, w) in enumerate(shapes):
                    grid = value[b, starts[lv] : starts[lv + 1], hd].reshape(h, w, d)
                    for k in range(K):
                        x, y = locations[b, q, hd, lv, k].tolist()
                        acc += weights[b, q, hd, lv, k] * bilinear_read(grid, x, y)
                out[b, q, hd * d : (hd + 1) * d] = acc
    return out


def random_inputs(B=2, T_q=5, H=3, d=4, K=3, seed=0):
    S = sum(h * w for h, w in SHAPES)
    value = rand(B, S, H, d, seed=seed)
    # locations in [-0.2, 1.2]: some points fall off the map (zero padding), some near the borders
    locations = rand(B, T_q, H, len(SHAPES), K, 2, seed=seed + 1).sigmoid() * 1.4 - 0.2
    weights = rand(B, T_q, H, len(SHAPES) * K, seed=seed + 2).softmax(-1).reshape(B, T_q, H, len(SHAPES), K)
    return value, locations, weights


def test_core_equals_brute_force_bilinear_gather():
    value, locations, weights = random_inputs()
    out = multi_scale_deformable_attention(value, SHAPES, locations, weights)
    assert out.shape == (2, 5, 12)
    torch.testing.assert_close(out, brute_force(value, SHAPES, locations, weights), **TOL)


def test_integer_pixel_centres_read_the_pixel_exactly():
    """At a pixel centre the bilinear read is the pixel; one point with weight 1 copies it."""
    value = rand(1, 12, 1, 2)  # one 3 x 4 map
    i, j = 2, 1
    loc = torch.tensor([(j + 0.5) / 4, (i + 0.5) / 3], dtype=torch.float64).reshape(1, 1, 1, 1, 1, 2)
    out = multi_scale_deformable_attention(value, [(3, 4)], loc, torch.ones(1, 1, 1, 1, 1, dtype=torch.float64))
    torch.testing.assert_close(out[0, 0], value[0, i * 4 + j, 0], **TOL)


def test_core_equals_transformers_pytorch_path():
    from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention as Ref

    value, locations, weights = random_inputs(seed=3)
    shapes = torch.tensor(SHAPES)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    ref = Ref()(value, shapes, SHAPES, starts, locations, weights, 64)
    torch.testing.assert_close(multi_scale_deformable_attention(value, SHAPES, locations, weights), ref, **TOL)


def test_module_equals_transformers_module_with_copied_weights():
    from transformers import DeformableDetrConfig
    from transformers.models.deformable_detr.modeling_deformable_detr import (
        DeformableDetrMultiscaleDeformableAttention as RefModule,
    )

    E, H, K = 16, 2, 3
    config = DeformableDetrConfig(d_model=E, num_feature_levels=len(SHAPES), use_timm_backbone=False)
    ref = RefModule(config, num_heads=H, n_points=K).double().eval()
    torch.manual_seed(0)
    for p in ref.parameters():  # random weights everywhere (the reference's init zeroes some of them)
        torch.nn.init.normal_(p, std=0.3)
    ours = MultiScaleDeformableAttention(E, H, len(SHAPES), K).double()
    ours.load_state_dict(ref.state_dict())
    B, T_q, S = 2, 6, sum(h * w for h, w in SHAPES)
    query, memory, pos = rand(B, T_q, E, seed=1), rand(B, S, E, seed=2), rand(B, T_q, E, seed=3)
    refs = rand(B, T_q, len(SHAPES), 2, seed=4).sigmoid()
    mask = torch.rand(B, S, generator=torch.Generator().manual_seed(5)) > 0.2
    shapes = torch.tensor(SHAPES)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    expected, expected_w = ref(
        query,
        attention_mask=mask,
        encoder_hidden_states=memory,
        position_embeddings=pos,
        reference_points=refs,
        spatial_shapes=shapes,
        spatial_shapes_list=SHAPES,
        level_start_index=starts,
    )
    out, weights, locations = ours(query, memory, refs, SHAPES, query_pos=pos, value_mask=mask)
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(weights, expected_w, **TOL)
    assert locations.shape == (B, T_q, H, len(SHAPES), K, 2)


def test_module_with_rings_and_two_dim_reference_points():
    E, H = 8, 4
    attn = MultiScaleDeformableAttention(E, H, 1, 4, offsets="rings").double()
    query, memory = rand(1, 3, E), rand(1, 20, E, seed=1)
    refs = rand(1, 3, 2, seed=2).sigmoid()
    out, weights, locations = attn(query, memory, refs, [(4, 5)])
    assert out.shape == (1, 3, E)
    # the offsets are the rings, not learned: locations - reference = ring / (W, H)
    expected = refs[:, :, None, None, None, :] + ring_offsets(H, 1).double() / torch.tensor([5.0, 4.0]).double()
    torch.testing.assert_close(locations, expected, **TOL)
    torch.testing.assert_close(weights, torch.full_like(weights, 0.25), **TOL)  # zero logits at init: uniform


def test_ring_offsets_follow_specdetr():
    rings = ring_offsets(4)
    assert rings.shape == (4, 1, 4, 2)
    assert rings[0, 0].tolist() == [[1, 0], [0, 1], [-1, 0], [0, -1]]
    assert rings[1, 0].tolist() == [[1, 1], [-1, 1], [-1, -1], [1, -1]]
    torch.testing.assert_close(rings[2], 2 * rings[0])
    torch.testing.assert_close(rings[3], 2 * rings[1])


def test_initial_offsets_point_in_the_heads_directions():
    attn = MultiScaleDeformableAttention(8, 4, 2, 3)
    bias = attn.sampling_offsets.bias.reshape(4, 2, 3, 2)
    torch.testing.assert_close(bias[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]))  # head 0: +x
    torch.testing.assert_close(bias[1, 1], torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]), atol=1e-6, rtol=0)


def test_gradients_flow_to_offsets_and_values():
    attn = MultiScaleDeformableAttention(8, 2, 1, 2).double()
    query, memory = rand(1, 3, 8), rand(1, 12, 8, seed=1).requires_grad_()
    out, _, _ = attn(query, memory, rand(1, 3, 2, seed=2).sigmoid(), [(3, 4)])
    out.sum().backward()
    assert memory.grad.abs().sum() > 0 and attn.sampling_offsets.weight.grad.abs().sum() > 0


def test_sampling_locations_scale_offsets_by_each_level():
    refs = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    offsets = torch.ones(1, 1, 1, 2, 1, 2, dtype=torch.float64)
    loc = deformable_sampling_locations(refs, offsets, [(4, 8), (2, 2)])
    torch.testing.assert_close(loc[0, 0, 0, :, 0], torch.tensor([[0.5 + 1 / 8, 0.5 + 1 / 4], [1.0, 1.0]]).double())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: msda(rand(1, 10, 1, 2), [(3, 4)], *random_inputs()[1:]), "S=10"),
        (lambda: msda(rand(1, 12, 1, 2), [(3, -4)], *random_inputs()[1:]), "spatial_shapes"),
        (lambda: msda(rand(2, 12, 3, 4), [(3, 4)], *random_inputs()[1:]), "sampling_loc"),
        (lambda: MSDA(10, 3), "num_heads=3 must divide embed_dim=10"),
        (lambda: MSDA(8, 2, num_points=3, offsets="rings"), "4 points"),
        (lambda: MSDA(8, 2)(rand(1, 3, 8), rand(1, 11, 8), rand(1, 3, 2), [(3, 4)]), "value"),
        (lambda: MSDA(8, 2)(rand(1, 3, 8), rand(1, 12, 8), rand(1, 3, 3), [(3, 4)]), "reference"),
        (lambda: MSDA(8, 2)(rand(1, 3, 7), rand(1, 12, 8), rand(1, 3, 2), [(3, 4)]), "query"),
        (lambda: MSDA(8, 2, 2)(rand(1, 3, 8), rand(1, 12, 8), rand(1, 3, 2), [(3, 4)]), "levels"),
    ],
)
def test_bad_input_is_refused(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_mixed_dtypes_are_refused():
    value, locations, weights = random_inputs()
    with pytest.raises(TypeError, match="share a dtype"):
        multi_scale_deformable_attention(value, SHAPES, locations.float(), weights)

"""Local attention (chapter 08): every blocked form equals full attention with its explicit mask, the limits,
parity with timm (Swin, HaloNet), MONAI (Swin UNETR, 3-D) and transformers (Granite-speech), and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from attnbook.attention import scaled_dot_product_attention as sdpa
from attnbook.attention.local import (
    ConformerBlockAttention,
    WindowedEpipolarCrossAttention,
    block_mask,
    block_relative_attention,
    blocked_attention,
    conformer_block_distances,
    epipolar_attention,
    epipolar_mask,
    local_attention,
    sliding_window_attention,
    sliding_window_mask,
)
from attnbook.attention.windows import (
    HaloAttention,
    WindowAttention,
    halo_attention,
    halo_attention_mask,
    relative_position_index,
    shifted_window_mask,
    window_attention,
    window_attention_mask,
    window_ids,
)

F64 = torch.float64
TOL = 1e-12


def qkv(*shape: int, seed: int = 0, dv: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape, generator=g, dtype=F64)
    k = torch.randn(*shape, generator=g, dtype=F64)
    v = torch.randn(*shape[:-1], dv or shape[-1], generator=g, dtype=F64)
    return q, k, v


# ---------------------------------------------------------------------------------------------------------------
# 1-D: sliding windows and blocks
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 7, 37, 64])
@pytest.mark.parametrize(("window", "causal"), [(1, True), (1, False), (3, False), (9, False), (4, True), (16, True)])
def test_sliding_window_equals_masked_full_attention(T: int, window: int, causal: bool) -> None:
    q, k, v = qkv(2, 3, T, 8, dv=5)
    mask = sliding_window_mask(T, window_size=window, causal=causal)
    assert torch.allclose(sliding_window_attention(q, k, v, window, causal=causal), sdpa(q, k, v, mask), atol=TOL)


def test_sliding_window_mask_by_definition() -> None:
    m = sliding_window_mask(6, window_size=3, causal=True)
    for i in range(6):
        assert m[i].nonzero().flatten().tolist() == list(range(max(0, i - 2), i + 1))
    m = sliding_window_mask(6, window_size=5)
    assert m[0].sum() == 3 and m[3].sum() == 5 and m.T.equal(m)


@pytest.mark.parametrize(
    ("block", "back", "forward", "causal"), [(5, 0, 0, False), (6, 1, 0, True), (4, 1, 2, False), (64, 0, 0, True)]
)
def test_blocked_equals_masked_full_attention(block: int, back: int, forward: int, causal: bool) -> None:
    q, k, v = qkv(2, 2, 37, 8)
    mask = block_mask(37, block, look_backward=back, look_forward=forward, causal=causal)
    out = blocked_attention(q, k, v, block, look_backward=back, look_forward=forward, causal=causal)
    assert torch.allclose(out, sdpa(q, k, v, mask), atol=TOL)


def test_window_covering_the_sequence_is_full_attention() -> None:
    q, k, v = qkv(1, 2, 20, 8)
    full = sdpa(q, k, v)
    assert torch.allclose(sliding_window_attention(q, k, v, 39), full, atol=TOL)  # reach 19 covers every pair
    assert torch.allclose(blocked_attention(q, k, v, 20), full, atol=TOL)
    assert torch.allclose(blocked_attention(q, k, v, 32), full, atol=TOL)  # a block longer than T
    assert torch.allclose(sliding_window_attention(q, k, v, 20, causal=True), sdpa(q, k, v, is_causal=True), atol=TOL)
    assert torch.allclose(local_attention(q, k, v, window_size=20), sdpa(q, k, v, is_causal=True), atol=TOL)


def test_local_attention_matches_lucidrains() -> None:
    """lucidrains' local-attention: own block + one block back, causal == blocked_attention(look_backward=1)."""
    la = pytest.importorskip("local_attention")
    q, k, v = qkv(2, 40, 8)
    ref = la.LocalAttention(window_size=8, causal=True, look_backward=1, look_forward=0, use_rotary_pos_emb=False)
    ref = ref.eval()
    ours = blocked_attention(q, k, v, 8, look_backward=1, causal=True)
    assert torch.allclose(ref(q, k, v), ours, atol=TOL)


def test_blocked_cost_is_linear() -> None:
    """Peak memory of the blocked form doubles with T (it never builds a (T, T) tensor)."""
    from attnbook.profiling import peak_memory

    peaks = []
    for T in (512, 1024, 2048):
        q, k, v = qkv(1, 1, T, 16)
        peaks.append(peak_memory(lambda q=q, k=k, v=v: sliding_window_attention(q, k, v, 33)))
    assert 1.8 < peaks[1] / peaks[0] < 2.2 and 1.8 < peaks[2] / peaks[1] < 2.2


def test_gradients_flow_and_match() -> None:
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 19, 4))
    mask = sliding_window_mask(19, window_size=5)
    (sliding_window_attention(q, k, v, 5) ** 2).sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    (sdpa(q, k, v, mask) ** 2).sum().backward()
    assert all(torch.allclose(a, t.grad, atol=TOL) for a, t in zip(grads, (q, k, v), strict=True))


# ---------------------------------------------------------------------------------------------------------------
# Granite-speech: Conformer block attention with Shaw relative positions
# ---------------------------------------------------------------------------------------------------------------


def shaw_block_reference(q, k, v, block, table):
    """Full attention with the block-diagonal mask and the Shaw bias q_i . a[clamp(i - j) + P] spelled out."""
    T, P = q.shape[-2], (table.shape[0] - 1) // 2
    pos = torch.arange(T)
    a = table[(pos[:, None] - pos[None, :]).clamp(-block, block) + P]  # (T, T, d)
    bias = torch.einsum("bhid,ijd->bhij", q, a) / math.sqrt(q.shape[-1])
    mask = block_mask(T, block)
    return sdpa(q, k, v, bias.masked_fill(~mask, float("-inf")))


@pytest.mark.parametrize("T", [12, 14, 3])
def test_block_relative_attention_equals_masked_full(T: int) -> None:
    q, k, v = qkv(2, 3, T, 8)
    table = torch.randn(2 * 6 + 1, 8, dtype=F64)
    assert torch.allclose(
        block_relative_attention(q, k, v, 4, table), shaw_block_reference(q, k, v, 4, table), atol=TOL
    )


def test_conformer_block_attention_matches_granite_speech() -> None:
    pytest.importorskip("transformers")
    from transformers.models.granite_speech.configuration_granite_speech import GraniteSpeechEncoderConfig
    from transformers.models.granite_speech.modeling_granite_speech import GraniteSpeechConformerAttention

    config = GraniteSpeechEncoderConfig(hidden_dim=32, num_heads=4, dim_head=8, context_size=5, max_pos_emb=7)
    torch.manual_seed(0)
    ref = GraniteSpeechConformerAttention(config).double().eval()
    ours = ConformerBlockAttention(32, 4, 8, context_size=5, max_pos_emb=7).double().eval()
    ours.load_state_dict(ref.state_dict())  # the same parameter names, one to one
    dists = conformer_block_distances(5, 7)
    pos = torch.arange(5)
    assert dists.equal(torch.clamp(pos[:, None] - pos[None, :], -5, 5) + 7)
    for T in (15, 13):  # whole blocks, and a ragged last block
        x = torch.randn(2, T, 32, dtype=F64)
        assert torch.allclose(ours(x), ref(x, attention_dists=dists), atol=TOL)


# ---------------------------------------------------------------------------------------------------------------
# CCNeXt: windowed epipolar cross-attention
# ---------------------------------------------------------------------------------------------------------------


def ccnext_band(width: int, fraction: float) -> torch.Tensor:
    """CCNeXt's own construction of its (X, X) band, step by step (W_CA_Module.__init__)."""
    max_w = int(width * fraction)
    rows = []
    for i in range(width):
        row = torch.zeros(width)
        row[max(width - i - max_w, 0) : width - i] = 1
        rows.append(row)
    band = torch.flip(torch.stack(rows), dims=(0,))
    for i in range(width - 1, -1, -1):
        band[i, i : i + max_w] = 1
    return band.bool()


@pytest.mark.parametrize(("width", "fraction"), [(10, 0.26), (12, 0.5), (7, 0.3), (16, 1.0)])
def test_epipolar_band_is_ccnexts(width: int, fraction: float) -> None:
    module = WindowedEpipolarCrossAttention(4, fraction)
    assert epipolar_mask(1, width, module.max_offset(width)).equal(ccnext_band(width, fraction))


def test_epipolar_attention_equals_masked_full() -> None:
    q, k, v = qkv(2, 5, 11, 6)  # (B, Y, X, d)
    mask = epipolar_mask(5, 11, 3)
    ref = sdpa(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), mask, scale=1.0).unflatten(1, (5, 11))
    assert torch.allclose(epipolar_attention(q, k, v, 3), ref, atol=TOL)
    assert torch.allclose(epipolar_attention(q, k, v, 10), sdpa(q, k, v, scale=1.0), atol=TOL)  # whole row


def test_epipolar_module_by_definition() -> None:
    torch.manual_seed(0)
    module = WindowedEpipolarCrossAttention(4, 0.3).double().eval()
    x1, x2 = torch.randn(2, 2, 4, 3, 10, dtype=F64)
    z1, z2 = module(x1, x2)
    assert torch.equal(z1, x1) and torch.equal(z2, x2)  # the zero-initialised BatchNorm: identity at the start
    for norm in (module.value[1], module.out[1]):
        torch.nn.init.normal_(norm.weight)
    z1, z2 = module(x1, x2)
    conv = lambda layer, x: torch.einsum("oc,bcyx->byxo", layer.weight[:, :, 0, 0], x) + layer.bias  # noqa: E731
    r = int(10 * 0.3) - 1
    for x_q, x_kv, z in ((x1, x2, z1), (x2, x1, z2)):
        q, k = conv(module.query, x_q), conv(module.key, x_kv)
        v = module.value(x_kv).permute(0, 2, 3, 1)
        band = (torch.arange(10)[:, None] - torch.arange(10)[None, :]).abs() <= r
        y = torch.softmax((q @ k.transpose(-1, -2)).masked_fill(~band, float("-inf")), -1) @ v  # per row, unscaled
        assert torch.allclose(z, x_q + module.out(y.permute(0, 3, 1, 2)), atol=TOL)


# ---------------------------------------------------------------------------------------------------------------
# Windows and shifted windows (Swin, Swin UNETR)
# ---------------------------------------------------------------------------------------------------------------


def full_window_bias(spatial, window, bias):
    """Place the (H, N, N) window bias at every same-window pair of the whole grid, by each pair's offset."""
    coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in spatial), indexing="ij")).flatten(1)  # (k, T)
    offset = coords[:, :, None] - coords[:, None, :]
    table_index = torch.zeros(offset.shape[1:], dtype=torch.long)
    for axis, w in enumerate(window):
        table_index = table_index * (2 * w - 1) + (offset[axis] + w - 1).clamp(0, 2 * w - 2)
    # the bias of a window pair depends only on the offset: read it from any window pair with that offset
    index = relative_position_index(window)
    lookup = torch.zeros(bias.shape[0], math.prod(2 * w - 1 for w in window), dtype=bias.dtype)
    lookup[:, index.flatten()] = bias.flatten(1)
    return lookup[:, table_index]  # (H, T, T)


@pytest.mark.parametrize(
    ("spatial", "window", "shift"),
    [((12,), (4,), (0,)), ((12,), (4,), (2,)), ((4, 6), (2, 3), (1, 1)), ((4, 4, 6), (2, 2, 3), (1, 1, 1))],
)
def test_window_attention_equals_masked_full(spatial, window, shift) -> None:
    T = math.prod(spatial)
    q, k, v = qkv(2, 3, T, 8)
    N = math.prod(window)
    bias = torch.randn(3, N, N, dtype=F64)
    # a bias that depends only on the offset, as the relative table gives
    table = torch.randn(3, math.prod(2 * w - 1 for w in window), dtype=F64)
    bias = table[:, relative_position_index(window)]
    mask = window_attention_mask(spatial, window, shift)
    full = full_window_bias(spatial, window, bias).masked_fill(~mask, float("-inf"))
    assert torch.allclose(window_attention(q, k, v, spatial, window, shift, bias=bias), sdpa(q, k, v, full), atol=TOL)


def test_window_covering_the_grid_is_full_attention() -> None:
    q, k, v = qkv(1, 2, 24, 8)
    assert torch.allclose(window_attention(q, k, v, (4, 6), (4, 6)), sdpa(q, k, v), atol=TOL)


def test_shifted_window_ids_by_hand() -> None:
    # 1-D, 8 cells, window 4, shift 2: windows {0,1}, {2..5}, {6,7}
    assert window_ids((8,), (4,), (2,)).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    assert window_ids((8,), (4,), (0,)).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    m = shifted_window_mask((8,), (4,), (2,))  # rolled: [2..5] then [6, 7, 0, 1] with two regions
    assert m[0].all() and m[1][:2, :2].all() and not m[1][0, 2] and m[1][2:, 2:].all()


def load_swin(ours: WindowAttention, attn) -> None:
    ours.qkv.load_state_dict(attn.qkv.state_dict())
    ours.proj.load_state_dict(attn.proj.state_dict())
    with torch.no_grad():
        ours.relative_position_bias_table.copy_(attn.relative_position_bias_table)


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_matches_timm_swin(shift: int) -> None:
    pytest.importorskip("timm")
    from timm.models.swin_transformer import SwinTransformerBlock

    torch.manual_seed(0)
    block = SwinTransformerBlock(dim=16, input_resolution=(8, 12), num_heads=2, window_size=4, shift_size=shift)
    block = block.double().eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()  # make the bias matter
    ours = WindowAttention(16, 2, (4, 4), shift).double()
    load_swin(ours, block.attn)
    x = torch.randn(2, 8, 12, 16, dtype=F64)
    assert torch.allclose(ours(x), block._attn(x), atol=TOL)  # timm masks with -100, which fp64 cannot see


def test_window_attention_3d_matches_monai_swin_unetr() -> None:
    pytest.importorskip("monai")
    from monai.networks.nets.swin_unetr import SwinTransformerBlock, compute_mask

    torch.manual_seed(0)
    for shift in ((0, 0, 0), (1, 1, 1)):
        block = SwinTransformerBlock(dim=12, num_heads=3, window_size=(2, 2, 2), shift_size=shift).double().eval()
        with torch.no_grad():
            block.attn.relative_position_bias_table.normal_()
        ours = WindowAttention(12, 3, (2, 2, 2), shift).double()
        load_swin(ours, block.attn)
        x = torch.randn(1, 4, 4, 6, 12, dtype=F64)
        mask = compute_mask((4, 4, 6), (2, 2, 2), shift, "cpu").double()
        assert torch.allclose(ours(block.norm1(x)), block.forward_part1(x, mask), atol=TOL)


def test_relative_position_index_3d_formula() -> None:
    index = relative_position_index((2, 3, 4))
    coords = torch.stack(torch.meshgrid(torch.arange(2), torch.arange(3), torch.arange(4), indexing="ij")).flatten(1)
    i, j = 5, 17
    dz, dy, dx = (coords[:, i] - coords[:, j]).tolist()
    assert index[i, j] == (dz + 1) * 5 * 7 + (dy + 2) * 7 + (dx + 3)


# ---------------------------------------------------------------------------------------------------------------
# HaloNet
# ---------------------------------------------------------------------------------------------------------------


def test_halo_masked_equals_full_attention_with_halo_mask() -> None:
    q, k, v = qkv(2, 2, 8, 12, 6)  # (B, H, Y, X, d)
    out = halo_attention(q, k, v, 4, 1, padding="mask")
    mask = halo_attention_mask(8, 12, 4, 1)
    ref = sdpa(q.flatten(2, 3), k.flatten(2, 3), v.flatten(2, 3), mask).unflatten(2, (8, 12))
    assert torch.allclose(out, ref, atol=TOL)


def test_halo_covering_the_grid_is_full_attention() -> None:
    q, k, v = qkv(1, 2, 6, 6, 4)
    full = sdpa(q.flatten(2, 3), k.flatten(2, 3), v.flatten(2, 3)).unflatten(2, (6, 6))
    assert torch.allclose(halo_attention(q, k, v, 3, 3, padding="mask"), full, atol=TOL)
    assert torch.allclose(halo_attention(q, k, v, 6, 0), full, atol=TOL)


def test_halo_zero_padding_is_full_attention_on_the_zero_padded_grid() -> None:
    """padding='zeros': border queries also see the halo's zero keys (logit 0) with zero values."""
    q, k, v = qkv(1, 1, 4, 4, 3)
    out = halo_attention(q, k, v, 2, 1)
    pad = lambda t: torch.nn.functional.pad(t, (0, 0, 1, 1, 1, 1))  # noqa: E731
    qp, kp, vp = pad(q), pad(k), pad(v)  # (1, 1, 6, 6, 3)
    # on the padded grid, query block (by, bx) sees the 4x4 window at rows 2by..2by+3: a halo mask shifted by one
    y, x = torch.arange(36) // 6, torch.arange(36) % 6
    near = lambda c: (c[None, :] >= ((c - 1) // 2 * 2)[:, None]) & (c[None, :] < ((c - 1) // 2 * 2 + 4)[:, None])  # noqa: E731
    ref = sdpa(qp.flatten(2, 3), kp.flatten(2, 3), vp.flatten(2, 3), near(y) & near(x)).unflatten(2, (6, 6))
    assert torch.allclose(out, ref[:, :, 1:5, 1:5], atol=TOL)


def test_halo_relative_logits_by_definition() -> None:
    """Masked halo attention with relative tables == full attention with q . (r^Y + r^X) at each pair's offset."""
    b, h, Y, X, d = 2, 1, 4, 6, 5
    q, k, v = qkv(1, 1, Y, X, d)
    win = b + 2 * h
    rh, rw = torch.randn(2, 2 * win - 1, d, dtype=F64)
    out = halo_attention(q, k, v, b, h, rel_height=rh, rel_width=rw, padding="mask")
    py, px = torch.arange(Y * X) // X, torch.arange(Y * X) % X
    # window coordinate minus block coordinate = key - query + h
    iy = py[None, :] - py[:, None] + h + win - 1
    ix = px[None, :] - px[:, None] + h + win - 1
    mask = halo_attention_mask(Y, X, b, h)
    qf = q.flatten(2, 3)  # (1, 1, T, d)
    rel = torch.einsum("bhid,ijd->bhij", qf, rh[iy.clamp(0, 2 * win - 2)] + rw[ix.clamp(0, 2 * win - 2)])
    ref = sdpa(qf, k.flatten(2, 3), v.flatten(2, 3), rel.masked_fill(~mask, float("-inf")))
    assert torch.allclose(out, ref.unflatten(2, (Y, X)), atol=TOL)


def test_halo_attention_matches_timm() -> None:
    pytest.importorskip("timm")
    from timm.layers.halo_attn import HaloAttn

    torch.manual_seed(0)
    C, heads, dqk = 16, 2, 8
    ref = HaloAttn(C, num_heads=heads, dim_head=dqk, block_size=4, halo_size=1).double().eval()
    ours = HaloAttention(C, heads, 4, 1, head_dim=dqk).double()
    dv = C // heads
    kv = ref.kv.weight[:, :, 0, 0].reshape(heads, dqk + dv, C)  # per head [k | v]
    with torch.no_grad():
        ours.q.weight.copy_(ref.q.weight[:, :, 0, 0])
        ours.k.weight.copy_(kv[:, :dqk].reshape(-1, C))
        ours.v.weight.copy_(kv[:, dqk:].reshape(-1, C))
        ours.rel_height.copy_(ref.pos_embed.height_rel)
        ours.rel_width.copy_(ref.pos_embed.width_rel)
    x = torch.randn(2, C, 8, 12, dtype=F64)
    assert torch.allclose(ours(x.permute(0, 2, 3, 1)), ref(x).permute(0, 2, 3, 1), atol=TOL)


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors() -> None:
    q, k, v = qkv(1, 1, 10, 4)
    with pytest.raises(ValueError, match="window_size must be odd"):
        sliding_window_attention(q, k, v, 4)
    with pytest.raises(ValueError, match="window_size must be an int >= 1"):
        sliding_window_attention(q, k, v, 0, causal=True)
    with pytest.raises(ValueError, match="block_size must be an int >= 1"):
        blocked_attention(q, k, v, 0)
    with pytest.raises(ValueError, match="look_backward"):
        block_mask(10, 2, look_backward=-1)
    with pytest.raises(ValueError, match="T_q == T_k"):
        blocked_attention(q, k[..., :5, :], v[..., :5, :], 2)
    with pytest.raises(ValueError, match="rel_table"):
        block_relative_attention(q, k, v, 2, torch.randn(4, 4, dtype=F64))
    with pytest.raises(ValueError, match="max_distance"):
        ConformerBlockAttention(8, 2, 4, context_size=9, max_pos_emb=4)
    with pytest.raises(ValueError, match="not a multiple of window_size"):
        window_attention_mask((10,), 4)
    with pytest.raises(ValueError, match="shift_size 4 on axis 0 must be smaller"):
        window_attention_mask((8,), 4, 4)
    with pytest.raises(ValueError, match="window_size must be an int >= 1 or 2 of them"):
        window_attention_mask((8, 8), (4, 4, 4))
    with pytest.raises(ValueError, match="prod\\(spatial\\)"):
        window_attention(q, k, v, (3, 3), 3)
    with pytest.raises(ValueError, match="block_size must be a positive int dividing the grid"):
        halo_attention(*qkv(1, 1, 6, 6, 4), 4, 1)
    with pytest.raises(ValueError, match="padding"):
        halo_attention(*qkv(1, 1, 4, 4, 4), 2, 1, padding="reflect")
    with pytest.raises(ValueError, match="floor"):
        WindowedEpipolarCrossAttention(4, 0.1)(torch.randn(1, 4, 2, 5), torch.randn(1, 4, 2, 5))
    with pytest.raises(ValueError, match="x1 and x2"):
        WindowedEpipolarCrossAttention(4)(torch.randn(1, 4, 2, 8), torch.randn(1, 4, 2, 9))
    with pytest.raises(ValueError, match="one grid"):
        epipolar_attention(*qkv(1, 2, 6, 4)[:1], *qkv(1, 2, 5, 4)[1:], 2)
    with pytest.raises(ValueError, match="num_heads"):
        WindowAttention(10, 3, (2, 2))
    with pytest.raises(ValueError, match="WindowAttention: x must be"):
        WindowAttention(8, 2, (2, 2))(torch.randn(1, 4, 4, 4, 8))


# ---------------------------------------------------------------------------------------------------------------
# Properties and half precision
# ---------------------------------------------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(T=st.integers(1, 40), reach=st.integers(0, 12), causal=st.booleans(), seed=st.integers(0, 2**16))
def test_sliding_window_property(T: int, reach: int, causal: bool, seed: int) -> None:
    window = reach + 1 if causal else 2 * reach + 1
    q, k, v = qkv(1, 2, T, 4, seed=seed)
    mask = sliding_window_mask(T, window_size=window, causal=causal)
    assert torch.allclose(sliding_window_attention(q, k, v, window, causal=causal), sdpa(q, k, v, mask), atol=TOL)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(
    T=st.integers(1, 30),
    block=st.integers(1, 9),
    back=st.integers(0, 2),
    forward=st.integers(0, 2),
    causal=st.booleans(),
)
def test_blocked_property(T: int, block: int, back: int, forward: int, causal: bool) -> None:
    q, k, v = qkv(1, 1, T, 4, seed=T * 31 + block)
    mask = block_mask(T, block, look_backward=back, look_forward=forward, causal=causal)
    out = blocked_attention(q, k, v, block, look_backward=back, look_forward=forward, causal=causal)
    assert torch.allclose(out, sdpa(q, k, v, mask), atol=TOL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_does_not_overflow(dtype: torch.dtype) -> None:
    """Entries of size 60 over d = 64: float16 dot products pass 65504 and overflow; the logits are float32.

    The reference is float64 on the same (rounded) half-precision inputs, so only the computation's precision counts.
    """
    q, k, v = (t.to(dtype) for t in qkv(1, 2, 24, 64))
    q, k = q * 60, k * 60
    if dtype == torch.float16:
        assert torch.isinf(q[0, 0] @ k[0, 0].T).any()  # the naive half-precision logits overflow
    cases = [
        (lambda *t: sliding_window_attention(*t, 5), (q, k, v)),
        (lambda *t: window_attention(*t, (4, 6), (2, 3), (1, 1)), (q, k, v)),
        (lambda *t: halo_attention(*t, 2, 1), tuple(t.reshape(1, 2, 4, 6, 64) for t in (q, k, v))),
    ]
    for fn, args in cases:
        out = fn(*args)
        reference = fn(*(t.double() for t in args))
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert (out.double() - reference).abs().max() < 0.05

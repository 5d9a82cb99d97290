"""MultiHeadAttention and AttentionCore: parity with torch.nn.MultiheadAttention, pluggable parts, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from attnbook.attention.core import (
    AttentionCore,
    CausalPattern,
    DotProductScores,
    MultiHeadAttention,
    Normalizer,
    Pattern,
    PositionPart,
    Scores,
)
from attnbook.attention.functional import masked_softmax

TOL = 1e-12
E, H = 16, 4


def pair(kdim: int | None = None, vdim: int | None = None, batch_first: bool = True, bias: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(E, H, kdim=kdim, vdim=vdim, batch_first=batch_first, bias=bias).double().eval()
    if bias:  # torch initialises in_proj_bias to zero: make it random so the copy is really tested
        with torch.no_grad():
            ref.in_proj_bias.normal_()
            ref.out_proj.bias.normal_()
    ours = MultiHeadAttention(E, H, kdim=kdim, vdim=vdim, batch_first=batch_first, bias=bias).double().eval()
    return ref, ours.load_torch(ref)


def inputs(B: int, T_q: int, T_k: int, kdim: int, vdim: int, batch_first: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T_q, E, generator=g, dtype=torch.float64)
    k = torch.randn(B, T_k, kdim, generator=g, dtype=torch.float64)
    v = torch.randn(B, T_k, vdim, generator=g, dtype=torch.float64)
    if not batch_first:
        q, k, v = (t.transpose(0, 1).contiguous() for t in (q, k, v))
    return q, k, v


def max_diff(a: Tensor, b: Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("dims", [(None, None), (7, 5)], ids=["self", "kdim7-vdim5"])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "bool3d", "padding", "bool+padding"])
@pytest.mark.parametrize("average", [True, False])
def test_parity_with_torch(batch_first: bool, dims, mask_kind: str, average: bool):
    kdim, vdim = dims
    ref, ours = pair(kdim, vdim, batch_first)
    B, T_q, T_k = 3, 5, 6 if kdim else 5
    q, k, v = inputs(B, T_q, T_k, kdim or E, vdim or E, batch_first)
    g = torch.Generator().manual_seed(2)
    blocked = torch.rand(T_q, T_k, generator=g) > 0.6
    blocked[:, 0] = False  # every query sees key 0, so no row is fully masked (torch gives NaN there)
    pad = torch.zeros(B, T_k, dtype=torch.bool)
    pad[1, -2:] = True  # torch: True = padding
    t_kw: dict = {}
    o_kw: dict = {}
    if mask_kind in ("bool", "bool+padding"):
        t_kw["attn_mask"], o_kw["attn_mask"] = blocked, ~blocked
    if mask_kind == "float":
        fm = torch.randn(T_q, T_k, generator=g, dtype=torch.float64)
        t_kw["attn_mask"] = o_kw["attn_mask"] = fm
    if mask_kind == "bool3d":  # torch wants (B * H, T_q, T_k); ours takes (B, T_q, T_k)
        per_batch = torch.rand(B, T_q, T_k, generator=g) > 0.6
        per_batch[..., 0] = False
        t_kw["attn_mask"] = per_batch.repeat_interleave(H, dim=0)
        o_kw["attn_mask"] = ~per_batch
    if mask_kind in ("padding", "bool+padding"):
        t_kw["key_padding_mask"], o_kw["key_mask"] = pad, ~pad
    expect, expect_w = ref(q, k, v, need_weights=True, average_attn_weights=average, **t_kw)
    got, got_w = ours(q, k, v, need_weights=True, average_attn_weights=average, **o_kw)
    fused, none = ours(q, k, v, **o_kw)  # the fused path (no weights asked)
    assert none is None
    assert got.shape == expect.shape and got_w.shape == expect_w.shape
    assert max_diff(got, expect) < TOL
    assert max_diff(got_w, expect_w) < TOL
    assert max_diff(fused, expect) < TOL


def test_parity_causal_and_no_bias():
    ref, ours = pair(bias=False)
    q, _, _ = inputs(2, 7, 7, E, E, True)
    causal = torch.ones(7, 7, dtype=torch.bool).triu(1)  # torch: True = blocked
    expect, _ = ref(q, q, q, attn_mask=causal)
    for backend in ("manual", "fused"):
        ours.core.backend = backend
        got, _ = ours(q, is_causal=True)
        assert max_diff(got, expect) < TOL


def test_loop_over_heads_equals_vectorised():
    """The definition, one head at a time with W_h^Q = rows h*D..(h+1)*D of W^Q, equals the split/merge form."""
    _, mha = pair(7, 5)
    q, k, v = inputs(2, 4, 6, 7, 5, True)
    D = E // H
    heads = []
    for h in range(H):
        rows = slice(h * D, (h + 1) * D)
        qh = q @ mha.q_proj.weight[rows].T + mha.q_proj.bias[rows]  # (B, T_q, D)
        kh = k @ mha.k_proj.weight[rows].T + mha.k_proj.bias[rows]  # (B, T_k, D)
        vh = v @ mha.v_proj.weight[rows].T + mha.v_proj.bias[rows]  # (B, T_k, D)
        weights = torch.softmax(qh @ kh.transpose(1, 2) / D**0.5, dim=-1)
        heads.append(weights @ vh)
    expect = mha.out_proj(torch.cat(heads, dim=-1))
    got, _ = mha(q, k, v)
    assert max_diff(got, expect) < TOL


@settings(max_examples=15, deadline=None)
@given(
    B=st.integers(1, 3),
    T_q=st.integers(1, 6),
    T_k=st.integers(1, 6),
    heads=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 10_000),
)
def test_fused_and_manual_agree(B: int, T_q: int, T_k: int, heads: int, seed: int):
    torch.manual_seed(seed)
    mha = MultiHeadAttention(8, heads).double()
    x = torch.randn(B, T_q, 8, dtype=torch.float64)
    m = torch.randn(B, T_k, 8, dtype=torch.float64)
    key_mask = torch.rand(B, T_k) > 0.3  # may leave a row with no key: both paths must give zeros there
    attn_mask = torch.rand(T_q, T_k) > 0.3
    mha.core.backend = "fused"
    fused, _ = mha(x, m, key_mask=key_mask, attn_mask=attn_mask)
    mha.core.backend = "manual"
    manual, w = mha(x, m, key_mask=key_mask, attn_mask=attn_mask, need_weights=True, average_attn_weights=False)
    assert torch.isfinite(fused).all() and torch.isfinite(manual).all()
    assert max_diff(fused, manual) < TOL
    visible = attn_mask[None, None] & key_mask[:, None, None, :]  # (B, 1, T_q, T_k)
    assert (w[~visible.expand_as(w)] == 0).all()


def test_fully_masked_rows_are_zero_and_gradients_finite():
    core = AttentionCore()
    q = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    v = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False
    for backend in ("fused", "manual"):
        core.backend = backend
        out, _ = core(q, k, v, mask)
        assert (out[:, :, 1] == 0).all()
        out.sum().backward()
        assert torch.isfinite(q.grad).all()
        q.grad = None
    w = core(q, k, v, mask, need_weights=True)[1]
    assert (w[:, :, 1] == 0).all() and torch.allclose(w[:, :, [0, 2]].sum(-1), torch.ones(1, 2, 2, dtype=w.dtype))
    # through the module: the attention output is zero, so the result is out_proj's bias
    mha = MultiHeadAttention(8, 2)
    out, _ = mha(torch.randn(2, 3, 8), key_mask=torch.tensor([[True, True, True], [False, False, False]]))
    torch.testing.assert_close(out[1], mha.out_proj.bias.expand(3, 8))


class Sharpen(Normalizer):
    """A custom normaliser: softmax at temperature 1/2."""

    def forward(self, logits: Tensor, mask: Tensor | None) -> Tensor:
        return masked_softmax(2.0 * logits, mask)


class Window(Pattern):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        return (q_pos[:, None] - k_pos[None, :]).abs() <= self.width


class L2Scores(Scores):
    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        return -(torch.cdist(q, k) ** 2)


class Slopes(PositionPart):
    """ALiBi-like bias: -|i - j| per head."""

    def bias(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        return -(q_pos[:, None] - k_pos[None, :]).abs().to(q.dtype)  # (T_q, T_k)


def qkv(seed: int = 0, L: int = 6):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, L, 4, generator=g, dtype=torch.float64) for _ in range(3)]


def brute(q, k, v, logits_fn, mask=None, temperature=1.0):
    logits = logits_fn(q, k) * temperature
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, -1) @ v


def test_custom_parts_plug_in():
    q, k, v = qkv()
    dot = lambda a, b: a @ b.transpose(-2, -1) / 2.0  # noqa: E731 - D=4, scale 1/2
    out, _ = AttentionCore(normalizer=Sharpen())(q, k, v)
    assert max_diff(out, brute(q, k, v, dot, temperature=2.0)) < TOL
    window = (torch.arange(6)[:, None] - torch.arange(6)[None]).abs() <= 1
    rel = -(torch.arange(6)[:, None] - torch.arange(6)[None]).abs().double()
    for backend in ("fused", "manual"):
        out, _ = AttentionCore(pattern=Window(1), backend=backend)(q, k, v)
        assert max_diff(out, brute(q, k, v, dot, window)) < TOL
        out, _ = AttentionCore(positions=Slopes(), backend=backend)(q, k, v)
        assert max_diff(out, brute(q, k, v, lambda a, b: dot(a, b) + rel)) < TOL
        out, _ = AttentionCore(pattern=CausalPattern(), backend=backend)(q, k, v)
        assert max_diff(out, brute(q, k, v, dot, torch.ones(6, 6, dtype=torch.bool).tril())) < TOL
    out, _ = AttentionCore(scores=L2Scores())(q, k, v)
    assert max_diff(out, brute(q, k, v, lambda a, b: -(torch.cdist(a, b) ** 2))) < TOL
    assert not AttentionCore(scores=L2Scores()).can_fuse() and AttentionCore().can_fuse()
    out, _ = AttentionCore(scores=DotProductScores(scale=0.1))(q, k, v)
    assert max_diff(out, brute(q, k, v, lambda a, b: 0.1 * a @ b.transpose(-2, -1))) < TOL
    # and through MultiHeadAttention
    mha = MultiHeadAttention(8, 2, core=AttentionCore(normalizer=Sharpen())).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    ref = MultiHeadAttention(8, 2, core=AttentionCore(scores=DotProductScores(scale=2.0 / 2.0))).double()
    ref.load_state_dict(mha.state_dict())
    assert max_diff(mha(x)[0], ref(x)[0]) < TOL  # softmax(2 * qk/sqrt(4)) == softmax(1.0 * qk)


def test_cache_positions_for_causal_pattern():
    """Decoding the last query alone with q_pos = L-1 equals the last row of full causal attention."""
    q, k, v = qkv(L=5)
    core = AttentionCore(pattern=CausalPattern())
    full, _ = core(q, k, v)
    last, _ = core(q[..., -1:, :], k, v, q_pos=torch.tensor([4]))
    assert max_diff(last, full[..., -1:, :]) < TOL


def test_attn_mask_shapes_that_broadcast():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    real = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    expect, _ = mha(x, key_mask=real)
    for mask in (real[:, None, None, :], real[:, None, :].expand(2, 5, 5), real[:, None, None, :].expand(2, 2, 5, 5)):
        got, _ = mha(x, attn_mask=mask)
        assert max_diff(got, expect) < TOL
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    expect, _ = mha(x, is_causal=True)
    for mask in (causal, causal[None], causal[None, None]):
        assert max_diff(mha(x, attn_mask=mask)[0], expect) < TOL


def test_dropout_only_in_training():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dropout=0.5)
    x = torch.randn(2, 6, 8)
    mha.eval()
    a, _ = mha(x)
    b, _ = mha(x)
    assert torch.equal(a, b)
    mha.train()
    c, _ = mha(x)
    assert not torch.allclose(a, c)


def test_bad_inputs_name_the_argument():
    mha = MultiHeadAttention(8, 2, kdim=6, vdim=6)
    x, m = torch.randn(2, 3, 8), torch.randn(2, 4, 6)
    with pytest.raises(ValueError, match="num_heads=3 must divide embed_dim=8"):
        MultiHeadAttention(8, 3)
    with pytest.raises(ValueError, match="embed_dim must be positive, got 0"):
        MultiHeadAttention(0, 1)
    with pytest.raises(ValueError, match=r"query must be a 3-D tensor .*\(3, 8\)"):
        mha(torch.randn(3, 8), m)
    with pytest.raises(TypeError, match="key must be a torch.Tensor"):
        mha(x, [[1.0]])
    with pytest.raises(ValueError, match=r"key must have last dim 6, got shape \(2, 4, 8\)"):
        mha(x, torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match=r"query must have last dim 8"):
        mha(torch.randn(2, 3, 5), m)
    with pytest.raises(ValueError, match=r"batch sizes .* query\(2, 3, 8\), key\(1, 4, 6\)"):
        mha(x, torch.randn(1, 4, 6))
    with pytest.raises(ValueError, match=r"attn_mask must have shape \(T_q, T_k\)=\(3, 4\).*got \(3, 3\)"):
        mha(x, m, attn_mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask .* got \(5, 3, 4\)"):
        mha(x, m, attn_mask=torch.ones(5, 3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask must be bool .* got torch.float64"):
        mha(x, m, attn_mask=torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="attn_mask must be a torch.Tensor"):
        mha(x, m, attn_mask=[[True]])
    with pytest.raises(ValueError, match=r"key_mask must have shape \(B, T_k\)=\(2, 4\), got \(2, 3\)"):
        mha(x, m, key_mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_mask must be a bool tensor"):
        mha(x, m, key_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="q_pos/k_pos must have shapes"):
        mha(x, m, q_pos=torch.arange(4))
    with pytest.raises(TypeError, match="load_torch: ref must be"):
        mha.load_torch(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="load_torch: ref has"):
        mha.load_torch(nn.MultiheadAttention(8, 2))
    q, k, v = qkv()
    with pytest.raises(ValueError, match="backend must be"):
        AttentionCore(backend="flash")
    with pytest.raises(ValueError, match="dropout must be in"):
        AttentionCore(dropout=1.0)
    with pytest.raises(ValueError, match="backend='fused' needs"):
        AttentionCore(scores=L2Scores(), backend="fused")(q, k, v)
    with pytest.raises(ValueError, match=r"Swap2.bias returned shape \(7,\)"):

        class Swap2(PositionPart):
            def bias(self, q, k, q_pos, k_pos):
                return torch.zeros(7, dtype=q.dtype)

        AttentionCore(positions=Swap2())(q, k, v)
    with pytest.raises(ValueError, match=r"k and v must have the same length"):
        AttentionCore()(q, k, v[..., :4, :])


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((16, True), {}, TypeError, r"num_heads must be an int, got True \(bool\)"),
        ((16.0, 4), {}, TypeError, r"embed_dim must be an int, got 16.0 \(float\)"),
        ((16, 4.0), {}, TypeError, r"num_heads must be an int, got 4.0"),
        ((16, 4), {"kdim": 0}, ValueError, r"kdim must be positive, got 0"),
        ((16, 4), {"vdim": -3}, ValueError, r"vdim must be positive, got -3"),
        ((16, 4), {"kdim": 8.0}, TypeError, r"kdim must be an int, got 8.0"),
        ((16, 4), {"vdim": False}, TypeError, r"vdim must be an int, got False"),
        ((16, -4), {}, ValueError, r"num_heads must be positive, got -4"),
        ((16, 4), {"dropout": "0.1"}, TypeError, r"dropout must be a number in \[0, 1\), got str"),
    ],
)
def test_constructor_rejects_bad_sizes(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        MultiHeadAttention(*args, **kwargs)


@pytest.mark.parametrize(
    ("ref_kwargs", "own_kwargs", "match"),
    [
        ({"add_zero_attn": True}, {}, "add_zero_attn=True"),
        ({"add_bias_kv": True}, {}, "add_bias_kv=True"),
        ({"batch_first": False}, {}, "ref has batch_first=False, this module has batch_first=True"),
        ({"bias": False}, {}, "ref has bias=False, this module has bias=True"),
        ({"kdim": 5, "vdim": 6}, {"kdim": 5, "vdim": 7}, r"\(embed_dim, num_heads, kdim, vdim\)=\(8, 2, 5, 6\)"),
    ],
    ids=["add_zero_attn", "add_bias_kv", "batch_first", "bias", "vdim"],
)
def test_load_torch_refuses_options_that_change_the_output(ref_kwargs, own_kwargs, match):
    ref = nn.MultiheadAttention(8, 2, **{"batch_first": True, **ref_kwargs})
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(8, 2, **own_kwargs).load_torch(ref)


def test_constructor_accepts_numpy_integers():
    mha = MultiHeadAttention(np.int64(16), np.int32(4), kdim=np.int64(6))
    assert (mha.embed_dim, mha.num_heads, mha.head_dim, mha.kdim) == (16, 4, 4, 6)
    assert type(mha.embed_dim) is int and type(mha.kdim) is int


def test_load_torch_accepts_matching_options_and_then_agrees():
    """The options refused above do change the output: with them matched (and dropout live) the modules agree."""
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(8, 2, dropout=0.25, batch_first=False).double().eval()
    ours = MultiHeadAttention(8, 2, dropout=0.25, batch_first=False).double().eval().load_torch(ref)
    x = torch.randn(5, 3, 8, dtype=torch.float64)  # (L, B, E)
    torch.testing.assert_close(ours(x)[0], ref(x, x, x)[0])
    other_dropout = MultiHeadAttention(8, 2, batch_first=False).double().eval().load_torch(ref)
    torch.testing.assert_close(other_dropout(x)[0], ref(x, x, x)[0])  # dropout is a training setting: not compared
    zero_attn = nn.MultiheadAttention(8, 2, add_zero_attn=True, batch_first=False).double().eval()
    zero_attn.load_state_dict(ref.state_dict())
    assert not torch.allclose(zero_attn(x, x, x)[0], ref(x, x, x)[0])  # why add_zero_attn must be refused


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_manual_core_half_precision_does_not_overflow(dtype):
    """Logits of large half-precision inputs overflow float16 (max 65504) unless accumulated in float32."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 64).mul(250).to(dtype) for _ in range(3))  # q k^T / 8 reaches ~1e5
    core = AttentionCore(backend="manual")
    out, _ = core(q, k, v)
    ref, _ = core(q.double(), k.double(), v.double())
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, atol=0.5, rtol=2e-2)


@pytest.mark.parametrize("num_kv_heads", [1, 2, 4])
def test_grouped_query_attention_equals_repeated_key_value_heads(num_kv_heads):
    """num_kv_heads=G: G key-value projections, each serving H/G query heads, equals multi-head attention whose
    key and value weights repeat each group's weights (a brute-force reference built from the same numbers)."""
    torch.manual_seed(0)
    E, H = 16, 4
    gqa = MultiHeadAttention(E, H, num_kv_heads=num_kv_heads).double()
    assert gqa.k_proj.out_features == num_kv_heads * (E // H)
    full = MultiHeadAttention(E, H).double()
    d, group = E // H, H // num_kv_heads
    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(full, name).load_state_dict(getattr(gqa, name).state_dict())
        for name in ("k_proj", "v_proj"):
            src, dst = getattr(gqa, name), getattr(full, name)
            for h in range(H):
                g = h // group
                dst.weight[h * d : (h + 1) * d] = src.weight[g * d : (g + 1) * d]
                dst.bias[h * d : (h + 1) * d] = src.bias[g * d : (g + 1) * d]
    x = torch.randn(2, 5, E, dtype=torch.float64)
    got, _ = gqa(x, is_causal=True)
    want, _ = full(x, is_causal=True)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_grouped_query_attention_validation():
    with pytest.raises(ValueError, match="num_kv_heads=3 must divide num_heads=4"):
        MultiHeadAttention(16, 4, num_kv_heads=3)
    with pytest.raises(TypeError, match="num_kv_heads"):
        MultiHeadAttention(16, 4, num_kv_heads=True)
    with pytest.raises(ValueError, match="groups its key-value heads"):
        MultiHeadAttention(16, 4, num_kv_heads=2).load_torch(torch.nn.MultiheadAttention(16, 4, batch_first=True))

"""Position schemes (chapter 05): parity with transformers' references, properties, and bad inputs."""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention.core import AttentionCore, CausalPattern, DotProductScores, MultiHeadAttention
from attnbook.attention.positional import (
    ALiBi,
    ClassPriorBias,
    ClassPriorPositionalEncoding,
    LearnedPositionalEmbedding,
    ObjectPositionalEncoding,
    RotaryPositionEmbedding,
    SeqPE,
    ShawRelativePosition,
    SinusoidalPositionalEncoding,
    SinusoidalPositionalEncoding2D,
    TENERRelativePosition,
    alibi_slopes,
    class_prior,
    music_transformer_skew,
    position_digits,
    relative_logits_naive,
    relative_logits_skew,
    rope_cos_sin,
    sinusoidal_encoding,
    tener_sinusoid,
)
from attnbook.data.positions import most_recent_marker

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")  # imported once for the module
from transformers.models.bloom.modeling_bloom import _get_alibi_slopes, build_alibi_tensor  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaConfig, LlamaRotaryEmbedding, apply_rotary_pos_emb  # noqa: E402
from transformers.models.speecht5.modeling_speecht5 import SpeechT5ScaledPositionalEncoding  # noqa: E402
from transformers.models.wav2vec2_bert.modeling_wav2vec2_bert import (  # noqa: E402
    Wav2Vec2BertConfig,
    Wav2Vec2BertSelfAttention,
)

torch.set_default_dtype(torch.float32)


def _wav2vec2bert(embed_dim: int, num_heads: int, left: int, right: int) -> Wav2Vec2BertSelfAttention:
    config = Wav2Vec2BertConfig(
        hidden_size=embed_dim,
        num_attention_heads=num_heads,
        position_embeddings_type="relative_key",
        left_max_position_embeddings=left,
        right_max_position_embeddings=right,
        attention_dropout=0.0,
    )
    config._attn_implementation = "eager"
    return Wav2Vec2BertSelfAttention(config).double().eval()


@torch.no_grad()
def _copy_projections(ours: MultiHeadAttention, ref: Wav2Vec2BertSelfAttention) -> None:
    for mine, theirs in (
        ("q_proj", "linear_q"),
        ("k_proj", "linear_k"),
        ("v_proj", "linear_v"),
        ("out_proj", "linear_out"),
    ):
        getattr(ours, mine).weight.copy_(getattr(ref, theirs).weight)
        getattr(ours, mine).bias.copy_(getattr(ref, theirs).bias)


# ---------------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("method", ["skew", "naive"])
def test_shaw_matches_wav2vec2bert_relative_key(method):
    torch.manual_seed(0)
    E, H, K, L = 16, 2, 3, 9
    ref = _wav2vec2bert(E, H, K, K)
    part = ShawRelativePosition(E // H, K, method=method)
    ours = MultiHeadAttention(E, H, core=AttentionCore(positions=part)).double()
    _copy_projections(ours, ref)
    with torch.no_grad():
        part.table.copy_(ref.distance_embedding.weight)  # rows = distances -K..K in both
    x = torch.randn(2, L, E, dtype=torch.float64)
    expected, _ = ref(x)
    got, _ = ours(x)
    assert (got - expected).abs().max().item() < 1e-12


def test_music_transformer_causal_relative_matches_wav2vec2bert():
    """left = L - 1, right = 0: the Music Transformer's causal relative attention, through the skew."""
    torch.manual_seed(1)
    E, H, L = 16, 4, 7
    ref = _wav2vec2bert(E, H, L - 1, 0)
    part = ShawRelativePosition(E // H, L - 1)
    ours = MultiHeadAttention(E, H, core=AttentionCore(positions=part, pattern=CausalPattern())).double()
    _copy_projections(ours, ref)
    with torch.no_grad():
        part.table[:L].copy_(ref.distance_embedding.weight)  # distances -(L-1)..0; positive ones are masked
        part.table[L:].fill_(1e3)  # never seen by a causal query: any value gives the same output
    x = torch.randn(3, L, E, dtype=torch.float64)
    mask = torch.full((L, L), float("-inf"), dtype=torch.float64).triu(1)[None, None]  # (1, 1, L, L)
    expected, _ = ref(x, attention_mask=mask)
    got, _ = ours(x)
    assert (got - expected).abs().max().item() < 1e-12


def test_rope_matches_llama():
    torch.manual_seed(2)
    D, L = 16, 11
    config = LlamaConfig(hidden_size=4 * D, num_attention_heads=4, head_dim=D, max_position_embeddings=64)
    rotary = LlamaRotaryEmbedding(config)
    q = torch.randn(2, 4, L, D, dtype=torch.float64)
    k = torch.randn(2, 4, L, D, dtype=torch.float64)
    positions = torch.arange(5, 5 + L)
    cos, sin = rotary(q, positions[None])
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    q_ours, k_ours = RotaryPositionEmbedding(D, base=config.rope_parameters["rope_theta"]).rotate(
        q, k, positions, positions
    )
    assert (q_ours - q_ref).abs().max().item() < 1e-6  # Llama's cos/sin are computed in float32
    assert (k_ours - k_ref).abs().max().item() < 1e-6


def test_rope_layouts_differ_by_a_permutation():
    torch.manual_seed(3)
    D, L = 8, 6
    q, k = torch.randn(2, 1, 2, L, D, dtype=torch.float64).unbind(0)
    perm = torch.arange(D).view(2, D // 2).t().reshape(-1)  # interleaved index 2i, 2i+1 <- half index i, i + D/2
    pos = torch.arange(L)
    qh, kh = RotaryPositionEmbedding(D, layout="half").rotate(q, k, pos, pos)
    qi, ki = RotaryPositionEmbedding(D, layout="interleaved").rotate(q[..., perm], k[..., perm], pos, pos)
    assert torch.equal(qi, qh[..., perm]) and torch.equal(ki, kh[..., perm])


@pytest.mark.parametrize("num_heads", [8, 12, 6, 1])
def test_alibi_slopes_match_paper_and_bloom(num_heads):
    ours = alibi_slopes(num_heads)
    torch.testing.assert_close(ours.float(), _get_alibi_slopes(num_heads, torch.device("cpu")), rtol=1e-6, atol=0)
    if num_heads == 8:  # the paper: 1/2, 1/4, ..., 1/256
        assert torch.equal(ours, torch.tensor([2.0**-h for h in range(1, 9)], dtype=torch.float64))
    if num_heads == 12:  # the 8 of 8 heads, then the odd ones of 16 heads: 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5
        expected = [2.0**-h for h in range(1, 9)] + [2.0 ** -(h / 2) for h in (1, 3, 5, 7)]
        torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), rtol=1e-15, atol=0)


@pytest.mark.parametrize("num_heads", [8, 12])
def test_alibi_equals_bloom_after_causal_softmax(num_heads):
    torch.manual_seed(4)
    B, L = 2, 10
    logits = torch.randn(B, num_heads, L, L, dtype=torch.float64)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    q = torch.zeros(B, num_heads, L, 4, dtype=torch.float64)
    pos = torch.arange(L)
    ours = (logits + ALiBi(num_heads).bias(q, q, pos, pos)).masked_fill(~causal, float("-inf")).softmax(-1)
    bloom = build_alibi_tensor(torch.ones(B, L), num_heads, torch.float64).view(B, num_heads, 1, L)  # m_h * j
    theirs = (logits + bloom).masked_fill(~causal, float("-inf")).softmax(-1)
    assert (ours - theirs).abs().max().item() < 1e-6  # Bloom's slopes are float32


def test_sinusoidal_matches_speecht5():
    d, L = 32, 200
    ref = SpeechT5ScaledPositionalEncoding(0.0, d, max_len=L).pe[0]  # (L, d), float32
    ours = SinusoidalPositionalEncoding(d)(torch.arange(L))
    assert (ours - ref).abs().max().item() < 1e-5
    x = torch.randn(1, L, d)
    scaled = SinusoidalPositionalEncoding(d, learnable_scale=True)
    with torch.no_grad():
        scaled.alpha.fill_(0.3)
        module = SpeechT5ScaledPositionalEncoding(0.0, d, max_len=L)
        module.alpha.fill_(0.3)
    assert (x + scaled(torch.arange(L)) - module(x)).abs().max().item() < 1e-5


# ------------------------------------------------------------------------------------------------ properties


@settings(max_examples=25, deadline=None)
@given(
    T_q=st.integers(1, 9),
    T_k=st.integers(1, 9),
    q_start=st.integers(0, 20),
    k_start=st.integers(0, 20),
    max_distance=st.integers(1, 12),
    per_head=st.booleans(),
)
def test_skew_equals_naive_exactly(T_q, T_k, q_start, k_start, max_distance, per_head):
    """Integer-valued float64 inputs make every product and sum exact, so any difference is an indexing bug."""
    g = torch.Generator().manual_seed(T_q * 1000 + T_k * 100 + max_distance)
    q = torch.randint(-8, 9, (2, 3, T_q, 4), generator=g).double()
    k = torch.zeros(2, 3, T_k, 4, dtype=torch.float64)
    part = ShawRelativePosition(4, max_distance, num_heads=3 if per_head else None, scale=1.0).double()
    with torch.no_grad():
        part.table.copy_(torch.randint(-8, 9, part.table.shape, generator=g).double())
    q_pos, k_pos = torch.arange(q_start, q_start + T_q), torch.arange(k_start, k_start + T_k)
    skew = part.bias(q, k, q_pos, k_pos)
    naive = relative_logits_naive(q, part.table, q_pos, k_pos, max_distance)
    assert torch.equal(skew, naive)


def test_music_transformer_skew_equals_naive_below_diagonal():
    torch.manual_seed(5)
    L, D = 12, 8
    q = torch.randn(2, L, D, dtype=torch.float64)
    E_r = torch.randn(L, D, dtype=torch.float64)  # distances -(L-1) .. 0
    skew = music_transformer_skew(q @ E_r.T)
    naive = torch.zeros(2, L, L, dtype=torch.float64)
    for i in range(L):
        for j in range(i + 1):  # causal: only j <= i is defined
            naive[:, i, j] = q[:, i] @ E_r[j - i + L - 1]
    low = torch.ones(L, L, dtype=torch.bool).tril()
    assert (skew - naive)[:, low].abs().max().item() < 1e-13


@settings(max_examples=25, deadline=None)
@given(shift=st.integers(-50, 500), layout=st.sampled_from(["half", "interleaved"]))
def test_rope_scores_depend_only_on_offset(shift, layout):
    torch.manual_seed(6)
    D, L = 16, 7
    q = torch.randn(1, 2, L, D, dtype=torch.float64)
    k = torch.randn(1, 2, L, D, dtype=torch.float64)
    rope = RotaryPositionEmbedding(D, layout=layout)
    pos = torch.arange(60, 60 + L)
    q1, k1 = rope.rotate(q, k, pos, pos)
    q2, k2 = rope.rotate(q, k, pos + shift, pos + shift)
    assert (q1 @ k1.transpose(-2, -1) - q2 @ k2.transpose(-2, -1)).abs().max().item() < 1e-10


@pytest.mark.parametrize(
    "part",
    [
        lambda: ALiBi(4),
        lambda: RotaryPositionEmbedding(8),
        lambda: ShawRelativePosition(8, 5),
        lambda: TENERRelativePosition(4, 8),
    ],
    ids=["alibi", "rope", "shaw", "crener"],
)
def test_parts_fused_equals_manual_in_multihead_attention(part):
    torch.manual_seed(7)
    p = part()
    fused = MultiHeadAttention(32, 4, core=AttentionCore(positions=p, pattern=CausalPattern())).double()
    manual = MultiHeadAttention(32, 4, core=AttentionCore(positions=p, pattern=CausalPattern(), backend="manual"))
    manual.load_state_dict(fused.state_dict())
    if isinstance(p, TENERRelativePosition):
        with torch.no_grad():
            p.u.normal_()
            p.v.normal_()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    assert (fused(x)[0] - manual.double()(x)[0]).abs().max().item() < 1e-12


def _tener_R(t: int, D: int) -> torch.Tensor:
    """TENER's relative sinusoid written out entry by entry: sines then cosines, w_k = 10000^(-k / (D/2 - 1))."""
    h = D // 2
    w = [10000.0 ** (-k / (h - 1)) for k in range(h)]
    return torch.tensor([math.sin(t * wk) for wk in w] + [math.cos(t * wk) for wk in w], dtype=torch.float64)


def test_tener_sinusoid_entries_and_direction():
    t = torch.tensor([-3.0, 0.0, 5.0], dtype=torch.float64)
    R = tener_sinusoid(t, 8)
    assert R.shape == (3, 8)
    for row, offset in zip(R, (-3, 0, 5), strict=True):
        torch.testing.assert_close(row, _tener_R(offset, 8), rtol=0, atol=1e-12)
    # the sine half is odd, the cosine half even: R_-t tells left from right
    torch.testing.assert_close(tener_sinusoid(-t, 8)[:, :4], -R[:, :4], rtol=0, atol=0)
    torch.testing.assert_close(tener_sinusoid(-t, 8)[:, 4:], R[:, 4:], rtol=0, atol=0)


@pytest.mark.parametrize("key_term", [True, False])
@pytest.mark.parametrize(("q_start", "k_start", "T_q", "T_k"), [(0, 0, 6, 6), (5, 0, 3, 8), (0, 4, 7, 2)])
def test_tener_bias_equals_brute_force_unscaled(key_term, q_start, k_start, T_q, T_k):
    torch.manual_seed(8)
    H, D = 2, 8
    part = TENERRelativePosition(H, D, key_term=key_term).double()
    with torch.no_grad():
        part.u.normal_()
        part.v.normal_()
    q = torch.randn(1, H, T_q, D, dtype=torch.float64)
    k = torch.randn(1, H, T_k, D, dtype=torch.float64)
    q_pos, k_pos = torch.arange(q_start, q_start + T_q), torch.arange(k_start, k_start + T_k)
    bias = part.bias(q, k, q_pos, k_pos)
    brute = torch.empty(1, H, T_q, T_k, dtype=torch.float64)
    for h in range(H):
        for i in range(T_q):
            for j in range(T_k):
                pi, pj = int(q_pos[i]), int(k_pos[j])
                value = part.u[h] @ k[0, h, j] + (q[0, h, i] + part.v[h]) @ _tener_R(pj - pi, D)
                if key_term:
                    value = value + k[0, h, j] @ _tener_R(pi - pj, D)
                brute[0, h, i, j] = value
    assert (bias - brute).abs().max().item() < 1e-12
    core = AttentionCore(scores=DotProductScores(scale=1.0), positions=part)
    _, w = core(q, k, k, q_pos=q_pos, k_pos=k_pos, need_weights=True)
    expected = (q @ k.transpose(-2, -1) + brute).softmax(-1)  # no 1/sqrt(D)
    assert (w - expected).abs().max().item() < 1e-12
    if T_q == T_k and q_start == k_start:  # direction-aware: the same distance either way gives different logits
        assert not torch.allclose(bias[0, 0, 2, 0], bias[0, 0, 0, 2])


def test_seqpe_digits_and_shapes():
    assert position_digits(torch.tensor([0, 37, 905]), 4).tolist() == [[0, 0, 0, 0], [0, 0, 3, 7], [0, 9, 0, 5]]
    assert position_digits(torch.tensor([5]), 3, base=2).tolist() == [[1, 0, 1]]
    torch.manual_seed(9)
    pe = SeqPE(24, num_digits=3)
    pos = torch.tensor([[3, 7, 3], [7, 998, 3]])
    out = pe(pos)
    assert out.shape == (2, 3, 24)
    torch.testing.assert_close(out[0, 0], out[1, 2])  # the same position, the same code
    pe2 = SeqPE(16, num_digits=2, ndim=2)
    assert pe2(torch.tensor([[[1, 2], [2, 1]]])).shape == (1, 2, 16)


def _oat_loop(cell: list[float], dim: int, num_axes: int, freq) -> list[float]:
    """OAT's grid-cell code entry by entry: per axis (sin, cos) of each frequency, axes one after another."""
    axis_dim = 2 * math.ceil(dim / (2 * num_axes))
    out = []
    for coordinate in cell:
        for two_k in range(0, axis_dim, 2):
            out += [math.sin(coordinate * freq(two_k, axis_dim)), math.cos(coordinate * freq(two_k, axis_dim))]
    return out[:dim]


@pytest.mark.parametrize(
    ("frequencies", "alpha", "freq"),
    [
        ("original", 1.0, lambda two_k, n: 10000.0 ** (-two_k / n)),
        ("exp1", 0.8, lambda two_k, n: two_k**0.8 / n),
        ("exp2", 2.0, lambda two_k, n: (two_k / n) ** 2.0),
        ("linear", 0.5, lambda two_k, n: two_k * 0.5 / n),
    ],
)
def test_object_encoding_equals_loop(frequencies, alpha, freq):
    cells = torch.tensor([[0, 0, 0], [2, 7, 1], [1, 10, 0]], dtype=torch.float64)
    code = ObjectPositionalEncoding(128, frequencies=frequencies, alpha=alpha)(cells)
    assert code.shape == (3, 128)
    for row, cell in zip(code, cells.tolist(), strict=True):
        torch.testing.assert_close(row, torch.tensor(_oat_loop(cell, 128, 3, freq), dtype=torch.float64))
    odd = ObjectPositionalEncoding(20, num_axes=3)(cells)  # axis width 2 ceil(20 / 6) = 8, truncated to 20
    torch.testing.assert_close(
        odd,
        torch.tensor(
            [_oat_loop(c, 20, 3, lambda k, n: 10000.0 ** (-k / n)) for c in cells.tolist()], dtype=torch.float64
        ),
    )


def test_two_d_and_object_encodings():
    grid = SinusoidalPositionalEncoding2D(16).grid(3, 4)
    assert grid.shape == (12, 16)
    torch.testing.assert_close(grid[5, :8], sinusoidal_encoding(torch.tensor(1), 8))  # (x=1, y=1): first half = x
    cells = torch.tensor([[1, 4, 0], [1, 5, 0], [2, 10, 1]])
    code = ObjectPositionalEncoding(48)(cells)
    assert code.shape == (3, 48) and code.dtype == torch.float32
    assert code[0] @ code[1] > code[0] @ code[2]  # neighbouring cells have more similar codes


def test_class_prior_parts():
    series = torch.randn(10, 5, 2)
    labels = torch.tensor([0, 1] * 5)
    prior = class_prior(series, labels, 3)
    torch.testing.assert_close(prior[0], series[labels == 0].mean(0))
    assert torch.equal(prior[2], torch.zeros(5, 2))
    enc = ClassPriorPositionalEncoding(prior, 8)
    assert enc(torch.arange(5)).shape == (5, 8)
    part = ClassPriorBias(2, prior)
    q = torch.zeros(1, 2, 5, 4)
    assert part.bias(q, q, torch.arange(5), torch.arange(5)).shape == (2, 1, 5)


def test_most_recent_marker_targets():
    g = torch.Generator().manual_seed(0)
    tokens, targets = most_recent_marker(4, 20, num_fillers=5, num_markers=3, generator=g)
    for n in range(4):
        last = None
        for t in range(20):
            if tokens[n, t] >= 5:
                last = int(tokens[n, t]) - 5
            assert targets[n, t] == last


def test_rope_cos_sin_dtype():
    cos, sin = rope_cos_sin(torch.arange(4), 8, dtype=torch.float64)
    assert cos.dtype == torch.float64 and cos.shape == (4, 8)
    torch.testing.assert_close(cos**2 + sin**2, torch.ones(4, 8, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    q = torch.zeros(1, 3, 4, 8)
    pos = torch.arange(4)
    with pytest.raises(ValueError, match="num_heads"):
        alibi_slopes(0)
    with pytest.raises(ValueError, match="q must have shape"):
        ALiBi(4).bias(q, q, pos, pos)
    with pytest.raises(ValueError, match="head_dim"):
        RotaryPositionEmbedding(7)
    with pytest.raises(ValueError, match="layout"):
        RotaryPositionEmbedding(8, layout="diagonal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="head_dim"):
        RotaryPositionEmbedding(16).rotate(q, q, pos, pos)
    with pytest.raises(ValueError, match="method"):
        ShawRelativePosition(8, 4, method="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_distance"):
        ShawRelativePosition(8, 0)
    with pytest.raises(ValueError, match="q must be"):
        ShawRelativePosition(4, 2).bias(q, q, pos, pos)
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_encoding(pos, 7)
    with pytest.raises(TypeError, match="positions"):
        sinusoidal_encoding([0, 1], 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positions must lie"):
        LearnedPositionalEmbedding(4, 8)(torch.arange(5))
    with pytest.raises(TypeError, match="positions"):
        LearnedPositionalEmbedding(4, 8)(torch.zeros(3))
    with pytest.raises(ValueError, match="positions must lie"):
        position_digits(torch.tensor([1000]), 3)
    with pytest.raises(ValueError, match="positions must have shape"):
        SeqPE(8, ndim=2)(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="s_rel"):
        music_transformer_skew(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="rel"):
        relative_logits_skew(torch.zeros(5, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="cells must have shape"):
        ObjectPositionalEncoding(32)(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="frequencies"):
        ObjectPositionalEncoding(32, frequencies="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 4"):
        TENERRelativePosition(2, 2)
    with pytest.raises(ValueError, match="head_dim=8"):
        TENERRelativePosition(3, 8).bias(torch.zeros(1, 3, 4, 6), q, pos, pos)
    with pytest.raises(ValueError, match="coords"):
        SinusoidalPositionalEncoding2D(8)(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="labels"):
        class_prior(torch.zeros(4, 3, 2), torch.tensor([0, 1, 2, 5]), 3)
    with pytest.raises(ValueError, match="contiguous"):
        TENERRelativePosition(3, 8).bias(q, q, torch.tensor([0, 2, 3, 4]), pos)
    with pytest.raises(ValueError, match="marker_prob"):
        most_recent_marker(2, 5, marker_prob=0.0)
    with pytest.raises(ValueError, match="length"):
        most_recent_marker(2, 0)
    assert math.isfinite(float(alibi_slopes(3).sum()))


def test_class_prior_bias_rejects_negative_positions():
    prior = class_prior(torch.randn(6, 5, 2), torch.tensor([0, 1] * 3), 2)
    part = ClassPriorBias(2, prior)
    q = torch.zeros(1, 2, 3, 4)
    # a negative index would silently read the score of a time step from the end of the series
    with pytest.raises(ValueError, match=r"k_pos must lie in \[0, T=5\)"):
        part.bias(q, q, torch.arange(3), torch.tensor([-1, 0, 1]))
    with pytest.raises(ValueError, match=r"k_pos must lie in \[0, T=5\)"):
        part.bias(q, q, torch.arange(3), torch.tensor([3, 4, 5]))
    with pytest.raises(ValueError, match="positions must lie"):
        ClassPriorPositionalEncoding(prior, 8)(torch.tensor([-1, 0]))

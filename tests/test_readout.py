"""Tests of attnbook.attention.readout: the windowed Q-Former projector (parity with transformers' Granite-speech
projector, per-window brute force), CVLNM's module controller, ViTGaze's interaction features, OAT's object pointer,
and the attention-saliency agreement measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from attnbook.attention.readout import (
    ModuleController,
    WindowedQFormerProjector,
    interaction_features,
    object_pointer_logits,
    row_correlation,
    saliency_coverage,
    split_windows,
)

F64 = torch.float64


def granite_projector(frame_dim=12, hidden=16, heads=2, layers=2, out=24, window=15, rate=5, frequency=1):
    """transformers' GraniteSpeechEncoderProjector (BLIP-2 Q-Former inside), built from a config, float64, eager."""
    from transformers import GraniteSpeechConfig
    from transformers.models.granite_speech.modeling_granite_speech import GraniteSpeechEncoderProjector

    config = GraniteSpeechConfig(
        text_config={"model_type": "granite", "hidden_size": out, "num_attention_heads": 2, "num_hidden_layers": 1},
        projector_config={
            "model_type": "blip_2_qformer",
            "hidden_size": hidden,
            "num_attention_heads": heads,
            "num_hidden_layers": layers,
            "intermediate_size": 40,
            "encoder_hidden_size": frame_dim,
            "cross_attention_frequency": frequency,
        },
        window_size=window,
        downsample_rate=rate,
    )
    config.projector_config._attn_implementation = "eager"
    return GraniteSpeechEncoderProjector(config).double().eval()


@torch.no_grad()
def load_from_granite(own: WindowedQFormerProjector, ref) -> WindowedQFormerProjector:
    """Copy transformers' projector weights into ours (BERT names -> ours; one layer's blocks in order)."""

    def linear(dst, src):
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)

    def attention(dst_attn, dst_norm, src):
        for name, hf in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
            linear(getattr(dst_attn, name), getattr(src.attention, hf))
        linear(dst_attn.out_proj, src.output.dense)
        linear(dst_norm, src.output.LayerNorm)

    own.query.copy_(ref.query[0])
    linear(own.query_norm, ref.qformer.layernorm)
    for mine, theirs in zip(own.layers, ref.qformer.encoder.layer, strict=True):
        attention(mine.self_attn, mine.self_norm, theirs.attention)
        assert (mine.cross_attn is not None) == theirs.has_cross_attention
        if theirs.has_cross_attention:
            attention(mine.cross_attn, mine.cross_norm, theirs.crossattention)
        linear(mine.ffn_in, theirs.intermediate_query.dense)
        linear(mine.ffn_out, theirs.output_query.dense)
        linear(mine.ffn_norm, theirs.output_query.LayerNorm)
    linear(own.out, ref.linear)
    return own


@pytest.mark.parametrize(("T", "layers", "frequency"), [(30, 1, 1), (37, 2, 1), (44, 3, 2), (5, 2, 1)])
def test_projector_equals_transformers_granite_speech(T, layers, frequency):
    torch.manual_seed(T)
    ref = granite_projector(layers=layers, frequency=frequency)
    own = (
        WindowedQFormerProjector(
            12, 16, 24, num_layers=layers, num_heads=2, intermediate_size=40, cross_attention_frequency=frequency
        )
        .double()
        .eval()
    )
    load_from_granite(own, ref)
    frames = torch.randn(3, T, 12, dtype=F64)
    expected = ref(frames)
    got = own(frames)
    assert got.shape == (3, math.ceil(T / 15) * 3, 24)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_projector_other_window_and_rate_equals_transformers():
    torch.manual_seed(1)
    ref = granite_projector(window=8, rate=4, heads=4)
    own = (
        WindowedQFormerProjector(
            12, 16, 24, window_size=8, downsample_rate=4, num_layers=2, num_heads=4, intermediate_size=40
        )
        .double()
        .eval()
    )
    load_from_granite(own, ref)
    frames = torch.randn(2, 21, 12, dtype=F64)
    torch.testing.assert_close(own(frames), ref(frames), rtol=0, atol=1e-12)


def brute_force_projector(model: WindowedQFormerProjector, frames):
    """Window by window, query by query, head by head: the definition written with loops."""
    B, T, _ = frames.shape
    w, Q, H = model.window_size, model.num_queries, model.num_heads
    d = model.hidden_size // H

    def attend(layer, queries, keys_in, real):  # queries (Q, E), keys_in (k, D)
        q, k, v = layer.q_proj(queries), layer.k_proj(keys_in), layer.v_proj(keys_in)
        heads = []
        for h in range(H):
            part = slice(h * d, (h + 1) * d)
            rows = []
            for i in range(q.shape[0]):
                scores = torch.stack([q[i, part] @ k[j, part] / math.sqrt(d) for j in range(k.shape[0])])
                scores = torch.where(real, scores, -torch.inf)
                rows.append(torch.softmax(scores, 0) @ v[:, part])
            heads.append(torch.stack(rows))
        return layer.out_proj(torch.cat(heads, dim=-1))

    outputs = []
    for b in range(B):
        per_sequence = []
        for start in range(0, T, w):
            window = frames[b, start : start + w]
            real = torch.ones(w, dtype=torch.bool)
            if window.shape[0] < w:
                real[window.shape[0] :] = not model.mask_padding
                window = torch.cat([window, window.new_zeros(w - window.shape[0], window.shape[1])])
            q = model.query_norm(model.query)
            for layer in model.layers:
                q = layer.self_norm(q + attend(layer.self_attn, q, q, torch.ones(Q, dtype=torch.bool)))
                if layer.cross_attn is not None:
                    q = layer.cross_norm(q + attend(layer.cross_attn, q, window, real))
                q = layer.ffn_norm(q + layer.ffn_out(torch.nn.functional.gelu(layer.ffn_in(q))))
            per_sequence.append(model.out(q))
        outputs.append(torch.cat(per_sequence))
    return torch.stack(outputs)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_projector_equals_brute_force(mask_padding):
    torch.manual_seed(2)
    model = WindowedQFormerProjector(
        6, 8, 5, window_size=6, downsample_rate=3, num_layers=2, num_heads=2, mask_padding=mask_padding
    ).double()
    frames = torch.randn(2, 14, 6, dtype=F64)
    torch.testing.assert_close(model(frames), brute_force_projector(model, frames), rtol=0, atol=1e-12)


def test_projector_windows_are_independent_and_weights_sum_to_one():
    torch.manual_seed(3)
    model = WindowedQFormerProjector(6, 8, 5, window_size=6, downsample_rate=2, num_heads=2).double()
    frames = torch.randn(1, 18, 6, dtype=F64)
    out, weights = model(frames, need_weights=True)
    changed = frames.clone()
    changed[:, 6:12] += 1.0  # only the second window
    out2 = model(changed)
    torch.testing.assert_close(out[:, :3], out2[:, :3], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 6:], out2[:, 6:], rtol=0, atol=0)
    assert (out[:, 3:6] - out2[:, 3:6]).abs().max() > 1e-3
    assert weights[0].shape == (1, 3, 2, 3, 6)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(1, 3, 2, 3, dtype=F64))


def test_mask_padding_hides_the_padded_frames():
    torch.manual_seed(4)
    model = WindowedQFormerProjector(6, 8, 5, window_size=6, downsample_rate=3, mask_padding=True).double()
    frames = torch.randn(1, 8, 6, dtype=F64)
    _, weights = model(frames, need_weights=True)
    assert weights[0][0, 1, :, :, 2:].abs().max() == 0  # window 2 holds 2 real frames, 4 padding
    # masked padding == the projector run on the last window's real frames alone, with no padding at all
    alone = model.layers[0](model.query_norm(model.query)[None], frames[:, 6:8])[0]
    torch.testing.assert_close(model(frames)[:, 2:], model.out(alone), rtol=0, atol=1e-12)


def test_split_windows():
    frames = torch.arange(2 * 7 * 1, dtype=F64).reshape(2, 7, 1)
    windows, real = split_windows(frames, 3)
    assert windows.shape == (6, 3, 1) and real.shape == (6, 3)
    assert windows[2, :, 0].tolist() == [6.0, 0.0, 0.0] and real[2].tolist() == [True, False, False]
    assert windows[3, :, 0].tolist() == [7.0, 8.0, 9.0]


def test_projector_bad_inputs():
    with pytest.raises(ValueError, match="downsample_rate=4 must divide window_size=15"):
        WindowedQFormerProjector(4, 8, 4, downsample_rate=4)
    with pytest.raises(ValueError, match="num_heads=3 must divide hidden_size=8"):
        WindowedQFormerProjector(4, 8, 4, num_heads=3)
    with pytest.raises(TypeError, match="window_size must be an int"):
        WindowedQFormerProjector(4, 8, 4, window_size=15.0)
    with pytest.raises(ValueError, match="window_size must be >= 1"):
        WindowedQFormerProjector(4, 8, 4, window_size=0)
    model = WindowedQFormerProjector(4, 8, 4)
    with pytest.raises(ValueError, match=r"frames must be \(B, T, frame_dim=4\), got \(2, 10, 5\)"):
        model(torch.randn(2, 10, 5))
    with pytest.raises(ValueError, match="frames must have 3 dimensions"):
        model(torch.randn(10, 4))
    with pytest.raises(TypeError, match="frames are torch.float64"):
        model(torch.randn(1, 10, 4, dtype=F64))
    with pytest.raises(ValueError, match="has no frames"):
        model(torch.randn(1, 0, 4))
    with pytest.raises(TypeError, match="floating point"):
        model(torch.ones(1, 3, 4, dtype=torch.long))


def test_module_controller_attention_equals_torch_and_weights_mix():
    torch.manual_seed(5)
    ctrl = ModuleController(8, num_modules=4, num_heads=2).double()
    state, contexts = torch.randn(3, 8, dtype=F64), torch.randn(3, 4, 5, dtype=F64)
    past = torch.randn(3, 2, 8, dtype=F64)
    fused, weights, embedding, logits = ctrl(state, contexts, past)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, dtype=F64))
    torch.testing.assert_close(fused, (weights[:, :, None] * contexts).sum(1))
    torch.testing.assert_close(embedding, weights @ ctrl.module_embeddings)
    # the attention step against torch.nn.MultiheadAttention with the same weights
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ctrl.attn.q_proj.weight, ctrl.attn.k_proj.weight, ctrl.attn.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ctrl.attn.q_proj.bias, ctrl.attn.k_proj.bias, ctrl.attn.v_proj.bias]))
        ref.out_proj.weight.copy_(ctrl.attn.out_proj.weight)
        ref.out_proj.bias.copy_(ctrl.attn.out_proj.bias)
    memory = torch.cat([ctrl.start.expand(3, 1, 8), past], dim=1)
    attended = ref(state[:, None], memory, memory)[0][:, 0]
    torch.testing.assert_close(logits, ctrl.classifier(ctrl.ffn(attended)), rtol=0, atol=1e-12)
    assert ctrl.start.abs().max() == 0 and "start" not in dict(ctrl.named_parameters())  # m_0 = 0, not learned
    # first step: only the start embedding is in memory (past None == past of width 0)
    first = ctrl(state, contexts)
    torch.testing.assert_close(first[1], ctrl(state, contexts, past[:, :0])[1])


def test_module_controller_one_hot_limit_is_a_hard_choice():
    torch.manual_seed(6)
    ctrl = ModuleController(8, num_modules=4).double()
    with torch.no_grad():
        ctrl.classifier.weight.zero_()
        ctrl.classifier.bias.copy_(torch.tensor([0.0, 0.0, 80.0, 0.0]))
    contexts = torch.randn(2, 4, 5, dtype=F64)
    fused, weights, embedding, _ = ctrl(torch.randn(2, 8, dtype=F64), contexts)
    torch.testing.assert_close(fused, contexts[:, 2], rtol=0, atol=1e-12)
    torch.testing.assert_close(embedding, ctrl.module_embeddings[2].expand(2, 8), rtol=0, atol=1e-12)


def test_module_controller_bad_inputs():
    ctrl = ModuleController(8)
    with pytest.raises(ValueError, match=r"contexts must be \(B=2, K=4, D_c\)"):
        ctrl(torch.randn(2, 8), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"state must be \(B, 8\)"):
        ctrl(torch.randn(2, 7), torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="past must be"):
        ctrl(torch.randn(2, 8), torch.randn(2, 4, 5), torch.randn(2, 3, 6))


def test_interaction_features_brute_force():
    gen = torch.Generator().manual_seed(7)
    attention = torch.rand(2, 3, 5, 5, generator=gen, dtype=F64).softmax(-1)
    guidance = torch.rand(2, 5, generator=gen, dtype=F64).softmax(-1)
    expected = torch.zeros(2, 3, 5, dtype=F64)
    for b in range(2):
        for c in range(3):
            for i in range(5):
                expected[b, c] += guidance[b, i] * attention[b, c, i]
    got = interaction_features(attention, guidance)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 3, dtype=F64))  # a mixture of rows is a distribution
    one_hot = torch.zeros(2, 5, dtype=F64)
    one_hot[:, 3] = 1
    torch.testing.assert_close(interaction_features(attention, one_hot), attention[:, :, 3])
    with pytest.raises(ValueError, match=r"guidance must be \(B=2, N=5\)"):
        interaction_features(attention, guidance[:, :4])
    with pytest.raises(ValueError, match=r"attention must be \(B, C, N, N\)"):
        interaction_features(attention[..., :4], guidance)


def test_object_pointer_logits():
    gen = torch.Generator().manual_seed(8)
    q, k = torch.randn(2, 3, 4, generator=gen, dtype=F64), torch.randn(2, 6, 4, generator=gen, dtype=F64)
    logits = object_pointer_logits(q, k)
    assert logits.shape == (2, 3, 7)
    for b in range(2):
        for t in range(3):
            for i in range(6):
                assert abs(logits[b, t, i] - q[b, t] @ k[b, i] / 2.0) < 1e-14
    assert (logits[..., -1] == 0).all()
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    probs = object_pointer_logits(q, k, mask).softmax(-1)
    assert probs[1, :, 4:6].max() == 0
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"object_keys must be \(B=2, N, d=4\)"):
        object_pointer_logits(q, k[..., :3])
    with pytest.raises(ValueError, match="object_mask must be bool"):
        object_pointer_logits(q, k, mask.float())


def test_row_correlation_equals_scipy():
    gen = torch.Generator().manual_seed(9)
    a, b = torch.randn(4, 20, generator=gen, dtype=F64), torch.randn(4, 20, generator=gen, dtype=F64)
    b = b + a  # correlated
    pearson = row_correlation(a, b)
    spearman = row_correlation(a, b, "spearman")
    for i in range(4):
        assert abs(pearson[i].item() - stats.pearsonr(a[i].numpy(), b[i].numpy())[0]) < 1e-12
        assert abs(spearman[i].item() - stats.spearmanr(a[i].numpy(), b[i].numpy())[0]) < 1e-12
    with pytest.raises(ValueError, match="same shape"):
        row_correlation(a, b[:, :5])
    with pytest.raises(ValueError, match="method must be"):
        row_correlation(a, b, "kendall")


def test_saliency_coverage():
    attention = torch.tensor([[0.1, 0.5, 0.3, 0.1]], dtype=F64)
    saliency = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=F64)
    assert saliency_coverage(attention, saliency, 2).item() == pytest.approx(0.5)  # positions 1 and 2: 5 of 10
    uniform = saliency_coverage(attention, torch.ones(1, 4, dtype=F64), 1).item()
    assert uniform == pytest.approx(0.25)
    assert np.isclose(saliency_coverage(saliency, saliency, 4).item(), 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        saliency_coverage(attention, -saliency, 2)
    with pytest.raises(ValueError, match="k=5 exceeds"):
        saliency_coverage(attention, saliency, 5)

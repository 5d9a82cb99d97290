"""Transformer blocks (parity with torch.nn.TransformerEncoderLayer/DecoderLayer), the encoder-decoder with a
stop token, the pair scorers, and the chapter-04 data generators."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnbook.attention.core import AttentionCore
from attnbook.attention.positional import sinusoidal_encoding
from attnbook.data.seq2seq import SymbolFramesTask, make_pair_task
from attnbook.models.transformer import (
    BiEncoder,
    CrossEncoder,
    Decoder,
    DecoderBlock,
    Encoder,
    EncoderBlock,
    EncoderDecoder,
    ScaledPositionalEncoding,
    Transformer,
    load_torch_layer,
    shift_frames,
)

TOL = 1e-12
D, H, FF = 16, 4, 24


def randomise_norms(module: nn.Module) -> None:
    """LayerNorms start at weight 1, bias 0: make them random so the copy is really tested."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_()
                m.bias.normal_()
            if isinstance(m, nn.MultiheadAttention):
                m.in_proj_bias.normal_()


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("padding", [False, True])
def test_encoder_block_parity(norm_first: bool, activation: str, padding: bool):
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(
        D, H, FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).double()
    randomise_norms(ref)
    ref.eval()
    ours = load_torch_layer(EncoderBlock(D, H, FF, activation=activation, norm_first=norm_first).double(), ref)
    ours.eval()
    x = torch.randn(3, 6, D, dtype=torch.float64)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    if padding:
        pad[1, -2:] = True
    with torch.no_grad():  # no_grad + eval lets torch take its fused "fast path" when it can: still equal
        expect = ref(x, src_key_padding_mask=pad if padding else None)
        got = ours(x, key_mask=~pad if padding else None)
    real = ~pad
    assert (got - expect)[real].abs().max().item() < TOL
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    expect = ref(x, src_mask=causal)
    assert (ours(x, is_causal=True) - expect).abs().max().item() < TOL
    assert (ours(x, attn_mask=~causal) - expect).abs().max().item() < TOL


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_decoder_block_parity(norm_first: bool, activation: str):
    torch.manual_seed(1)
    ref = nn.TransformerDecoderLayer(
        D, H, FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).double()
    randomise_norms(ref)
    ref.eval()
    ours = load_torch_layer(DecoderBlock(D, H, FF, activation=activation, norm_first=norm_first).double(), ref).eval()
    x = torch.randn(2, 5, D, dtype=torch.float64)
    memory = torch.randn(2, 7, D, dtype=torch.float64)
    mem_pad = torch.zeros(2, 7, dtype=torch.bool)
    mem_pad[0, -3:] = True
    tgt_pad = torch.zeros(2, 5, dtype=torch.bool)
    tgt_pad[1, -1] = True
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    expect = ref(
        x, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=mem_pad, tgt_key_padding_mask=tgt_pad
    )
    got, weights = ours(x, memory, key_mask=~tgt_pad, memory_key_mask=~mem_pad, need_weights=True)
    assert (got - expect)[~tgt_pad].abs().max().item() < TOL
    assert weights.shape == (2, H, 5, 7)
    assert (weights[0, :, :, -3:] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, H, 5, dtype=torch.float64))


def test_stacks_and_memory_width():
    torch.manual_seed(0)
    enc = Encoder(2, D, H, FF, norm_first=True)
    dec = Decoder(2, 8, 2, 12, norm_first=False, memory_dim=D)
    x = torch.randn(2, 5, D)
    memory, enc_w = enc(x, need_weights=True)
    assert memory.shape == (2, 5, D) and len(enc_w) == 2 and enc_w[0].shape == (2, H, 5, 5)
    assert isinstance(enc.norm, nn.LayerNorm) and isinstance(dec.norm, nn.Identity)
    y, cross = dec(torch.randn(2, 3, 8), memory, need_weights=True)
    assert y.shape == (2, 3, 8) and cross[1].shape == (2, 2, 3, 5)
    # the decoder is causal: changing a later target position leaves earlier outputs unchanged
    t = torch.randn(2, 3, 8)
    t2 = t.clone()
    t2[:, 2] += 1.0
    torch.testing.assert_close(dec(t, memory)[:, :2], dec(t2, memory)[:, :2])


def test_custom_core_reaches_every_block():
    calls = []

    class Counting(AttentionCore):
        def forward(self, *args, **kwargs):
            calls.append(1)
            return super().forward(*args, **kwargs)

    dec = Decoder(3, D, H, FF, core=Counting)
    dec(torch.randn(1, 4, D), torch.randn(1, 6, D))
    assert len(calls) == 6  # self- and cross-attention in each of 3 layers


def test_scaled_positional_encoding():
    enc = ScaledPositionalEncoding(8, max_len=50)
    with torch.no_grad():
        enc.alpha.fill_(0.5)
    x = torch.randn(2, 10, 8)
    pe = sinusoidal_encoding(torch.arange(50), 8)
    torch.testing.assert_close(enc(x), x + 0.5 * pe[:10])
    torch.testing.assert_close(enc(x, offset=40), x + 0.5 * pe[40:])
    torch.testing.assert_close(pe[:, 0], torch.sin(torch.arange(50.0)))
    with pytest.raises(ValueError, match="exceed max_len=50"):
        enc(x, offset=41)


def test_symbol_frames_task():
    task = SymbolFramesTask(num_symbols=6, frame_dim=4, min_len=2, max_len=5, max_duration=3, seed=3)
    batch = task.sample(16, torch.Generator().manual_seed(0))
    S, T = batch["symbols"].shape[1], batch["frames"].shape[1]
    assert batch["frames"].shape == (16, T, 4) and batch["alignment"].shape == (16, T)
    assert torch.equal(batch["symbol_mask"], batch["symbols"] != 0)
    assert S <= 5 and T <= task.max_frames
    for i in range(16):
        sym = batch["symbols"][i][batch["symbol_mask"][i]]
        frames, align = task.render(sym)
        n = frames.shape[0]
        assert n == int(task.duration[sym].sum()) == int(batch["frame_mask"][i].sum())
        assert torch.equal(batch["frames"][i, :n], frames) and (batch["frames"][i, n:] == 0).all()
        assert (align.diff() >= 0).all() and (align.diff() <= 1).all()  # monotonic, no symbol skipped
    again = task.sample(16, torch.Generator().manual_seed(0))
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    with pytest.raises(ValueError, match="min_len"):
        SymbolFramesTask(min_len=5, max_len=2)
    with pytest.raises(ValueError, match="symbol ids must lie in 1..6"):
        task.render(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="batch_size must be positive"):
        task.sample(0)


def test_pair_task():
    a, b, y = make_pair_task(400, seq_len=5, vocab_size=12, seed=1)
    assert a.shape == b.shape == (400, 5) and y.shape == (400,)
    assert y.mean().item() == 0.5
    assert int(a.min()) >= 1 and int(b.max()) <= 11
    same = (a.sort(1).values == b.sort(1).values).all(1)
    assert torch.equal(same, y == 1)  # positives are reorderings; negatives are not
    for i in torch.nonzero(y == 0).flatten().tolist():
        assert len(set(b[i].tolist()) - set(a[i].tolist())) == 1  # exactly one new word
    with pytest.raises(ValueError, match="vocab_size >= seq_len \\+ 2"):
        make_pair_task(10, seq_len=8, vocab_size=9)


def test_encoder_decoder_interface_and_training_signal():
    torch.manual_seed(0)
    task = SymbolFramesTask(num_symbols=5, frame_dim=4, max_len=4, seed=0)
    model = EncoderDecoder(task.vocab_size, task.frame_dim, d_model=16, num_heads=2, dim_feedforward=32)
    batch = task.sample(8, torch.Generator().manual_seed(1))
    frames_pred, stop_logits, weights = model(
        batch["symbols"], shift_frames(batch["frames"]), symbol_mask=batch["symbol_mask"], need_weights=True
    )
    B, T = batch["frame_mask"].shape
    assert frames_pred.shape == (B, T, 4) and stop_logits.shape == (B, T)
    assert len(weights) == 2 and weights[0].shape == (B, 2, T, batch["symbols"].shape[1])
    loss = model.loss(**batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = loss.item()
    for _ in range(30):
        opt.zero_grad()
        loss = model.loss(**batch)
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
    frames, lengths, cross = model.generate(batch["symbols"], symbol_mask=batch["symbol_mask"], max_frames=6)
    assert frames.shape[0] == B and frames.shape[1] <= 6 and lengths.shape == (B,)
    assert ((lengths >= 1) & (lengths <= 6)).all()
    for i, n in enumerate(lengths.tolist()):
        assert (frames[i, n:] == 0).all()
    assert model.training  # generate restores the mode


def test_shift_frames():
    f = torch.arange(12.0).reshape(1, 3, 4)
    s = shift_frames(f)
    assert (s[0, 0] == 0).all() and torch.equal(s[0, 1:], f[0, :2])


def test_pair_scorers():
    torch.manual_seed(0)
    a, b, y = make_pair_task(6, seq_len=4, vocab_size=10)
    bi, cross = BiEncoder(10, d_model=16, num_heads=2), CrossEncoder(10, d_model=16, num_heads=2)
    assert bi(a, b).shape == (6,) and cross(a, b).shape == (6,)
    ea, eb = bi.embed(a), bi.embed(b)
    torch.testing.assert_close(ea.norm(dim=-1), torch.ones(6))
    torch.testing.assert_close(bi.score_matrix(ea, eb).diagonal(), bi(a, b))
    # padding is ignored by the bi-encoder's pooling
    a_pad = torch.cat([a, torch.zeros(6, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(bi.embed(a_pad), ea, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="a ids must lie in"):
        cross(a + 10, b)
    with pytest.raises(ValueError, match=r"x must be a \(B, L\) long tensor"):
        bi.embed(a.float())
    with pytest.raises(ValueError, match="differ in batch size"):
        cross(a, b[:3])


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_heads=3 must divide d_model=16"):
        EncoderBlock(16, 3)
    with pytest.raises(ValueError, match="activation must be one of"):
        DecoderBlock(16, 2, activation="tanh")
    with pytest.raises(ValueError, match="dropout must be in"):
        EncoderBlock(16, 2, dropout=1.5)
    with pytest.raises(ValueError, match="num_layers must be positive"):
        Encoder(0, 16, 2)
    with pytest.raises(ValueError, match=r"EncoderBlock: x must have shape \(B, L, d_model=16\), got \(2, 8\)"):
        EncoderBlock(16, 2)(torch.randn(2, 8))
    block = DecoderBlock(16, 2, memory_dim=6)
    with pytest.raises(ValueError, match=r"DecoderBlock: memory must have shape \(B, L, d_model=6\)"):
        block(torch.randn(1, 3, 16), torch.randn(1, 4, 16))
    with pytest.raises(ValueError, match="differ in batch size"):
        block(torch.randn(1, 3, 16), torch.randn(2, 4, 6))
    with pytest.raises(TypeError, match="cannot copy a TransformerDecoderLayer into a EncoderBlock"):
        load_torch_layer(EncoderBlock(16, 2), nn.TransformerDecoderLayer(16, 2))
    with pytest.raises(ValueError, match="norm_first"):
        load_torch_layer(
            EncoderBlock(16, 2, 64, norm_first=True), nn.TransformerEncoderLayer(16, 2, 64, batch_first=True)
        )
    model = EncoderDecoder(5, 3, d_model=8, num_heads=2, dim_feedforward=8)
    with pytest.raises(ValueError, match=r"symbols must be a \(B, S\) long tensor"):
        model(torch.zeros(2, 3), torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="symbols must lie in"):
        model(torch.full((2, 3), 5), torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match=r"frames_in must have shape \(B=2, T, frame_dim=3\)"):
        model(torch.ones(2, 3, dtype=torch.long), torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="symbol_mask must be bool"):
        model(torch.ones(2, 3, dtype=torch.long), torch.zeros(2, 4, 3), symbol_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="frame_mask must be bool"):
        model.loss(torch.ones(2, 3, dtype=torch.long), torch.zeros(2, 4, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="max_frames must be in"):
        model.generate(torch.ones(2, 3, dtype=torch.long), max_frames=0)
    with pytest.raises(ValueError, match="vocab_size must be >= 2"):
        EncoderDecoder(1, 3)


@pytest.mark.parametrize(
    ("setting", "ours", "theirs"),
    [
        ("activation", {}, {"activation": "gelu"}),
        ("activation", {"activation": "gelu"}, {"activation": torch.nn.functional.silu}),
        ("layer_norm_eps", {}, {"layer_norm_eps": 1e-6}),
        ("bias", {}, {"bias": False}),
        ("batch_first", {}, {"batch_first": False}),
        ("d_model", {"d_model": 8}, {}),
        ("nhead", {"num_heads": 2}, {}),
        ("dim_feedforward", {"dim_feedforward": 32}, {}),
        ("norm_first", {"norm_first": True}, {}),
    ],
)
@pytest.mark.parametrize("decoder", [False, True])
def test_load_torch_layer_refuses_a_different_layer(setting: str, ours: dict, theirs: dict, decoder: bool):
    """Before, only norm_first was compared: a GELU or another epsilon loaded silently into a different block."""
    ours = {"d_model": D, "num_heads": H, "dim_feedforward": FF, **ours}
    theirs = {"d_model": D, "nhead": H, "dim_feedforward": FF, "dropout": 0.0, "batch_first": True, **theirs}
    Block, Ref = (DecoderBlock, nn.TransformerDecoderLayer) if decoder else (EncoderBlock, nn.TransformerEncoderLayer)
    with pytest.raises(ValueError, match=f"has {setting}="):
        load_torch_layer(Block(**ours), Ref(**theirs))


def test_load_torch_layer_checks_memory_width_and_accepts_matching_settings():
    ref = nn.TransformerDecoderLayer(D, H, FF, batch_first=True, layer_norm_eps=1e-6, bias=False, activation="gelu")
    block = DecoderBlock(D, H, FF, layer_norm_eps=1e-6, bias=False, activation="gelu")
    assert load_torch_layer(block, ref) is block
    with pytest.raises(ValueError, match="memory width"):
        load_torch_layer(DecoderBlock(D, H, FF, memory_dim=8), nn.TransformerDecoderLayer(D, H, FF, batch_first=True))


def _sinusoid_reference(length: int, width: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(...), written out in float64."""
    pe = torch.zeros(length, width, dtype=torch.float64)
    for pos in range(length):
        for i in range(0, width, 2):
            pe[pos, i] = math.sin(pos / 10000 ** (i / width))
            pe[pos, i + 1] = math.cos(pos / 10000 ** (i / width))
    return pe


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_matches_torch_transformer(norm_first: bool):
    """Embeddings x sqrt(D) + sinusoids, nn.Transformer with copied weights, a linear head: one forward, float64."""
    torch.manual_seed(0)
    V, d_model = 11, 16
    ref = nn.Transformer(
        d_model, 4, 2, 3, 24, dropout=0.0, batch_first=True, norm_first=norm_first, layer_norm_eps=1e-6
    ).double()
    randomise_norms(ref)
    src_embed, tgt_embed, head = (
        nn.Embedding(V, d_model).double(),
        nn.Embedding(V, d_model).double(),
        nn.Linear(d_model, V).double(),
    )
    ours = Transformer(
        V,
        d_model=d_model,
        num_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=3,
        dim_feedforward=24,
        dropout=0.0,
        norm_first=norm_first,
        layer_norm_eps=1e-6,
        max_len=32,
    )
    ours = ours.double().load_torch(ref, src_embed, tgt_embed, head).eval()
    ref.eval()
    src = torch.randint(1, V, (3, 7))
    tgt = torch.randint(1, V, (3, 5))
    src[1, -2:] = 0  # padding in both sequences
    tgt[2, -3:] = 0
    pe = _sinusoid_reference(32, d_model)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)  # PyTorch: True = blocked
    hidden = ref(
        src_embed(src) * math.sqrt(d_model) + pe[:7],
        tgt_embed(tgt) * math.sqrt(d_model) + pe[:5],
        tgt_mask=causal,
        src_key_padding_mask=src == 0,
        tgt_key_padding_mask=tgt == 0,
        memory_key_padding_mask=src == 0,
    )
    expect = head(hidden)  # (B, T, V)
    got = ours(src, tgt)
    real = tgt != 0
    assert (got - expect)[real].abs().max().item() < TOL


def test_transformer_defaults_are_the_base_model():
    model = Transformer(37000, share_embeddings=True)
    assert model.d_model == 512 and len(model.encoder.layers) == 6 and len(model.decoder.layers) == 6
    layer = model.encoder.layers[0]
    assert layer.num_heads == 8 and layer.self_attn.head_dim == 64 and layer.dim_feedforward == 2048
    assert model.dropout.p == 0.1 and not layer.norm_first
    assert model.head.weight is model.src_embed.weight is model.tgt_embed.weight
    params = sum(p.numel() for p in model.parameters())
    assert 60e6 < params < 66e6  # the paper's Table 3 lists 65M for the base model
    weight = model.src_embed.weight
    assert (weight[0] == 0).all() and abs(weight[1:].std().item() - 512**-0.5) < 1e-3  # N(0, 1/D), padding zero


def test_transformer_masks_loss_and_greedy_decoding():
    torch.manual_seed(0)
    model = Transformer(
        9,
        d_model=16,
        num_heads=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dim_feedforward=32,
        dropout=0.0,
        max_len=16,
    ).eval()
    src = torch.randint(3, 9, (4, 6))
    src[0, 4:] = 0
    # padding is invisible: changing the tokens under padding changes nothing
    other = src.clone()
    other[0, 4:] = 0
    tgt = torch.randint(3, 9, (4, 5))
    tgt[:, 0] = 1
    before = model(src, tgt)
    torch.testing.assert_close(model(other, tgt), before)
    # causal: the logits at step t do not depend on target tokens after t
    changed = tgt.clone()
    changed[:, 3:] = 4
    torch.testing.assert_close(model(src, changed)[:, :3], before[:, :3])
    # label smoothing: the loss equals the mixture of NLL and the uniform cross-entropy
    logp = model(src, tgt[:, :-1]).log_softmax(-1)  # (B, T - 1, V)
    nll = -logp.gather(-1, tgt[:, 1:, None]).squeeze(-1)
    smooth = -logp.mean(-1)
    torch.testing.assert_close(model.loss(src, tgt, label_smoothing=0.1), (0.9 * nll + 0.1 * smooth).mean())
    # greedy decoding = argmax of the teacher-forced logits on its own output
    out, weights = model.generate_greedy(src, bos_id=1, eos_id=2, max_new_tokens=7, need_weights=True)
    assert out.shape[0] == 4 and out.shape[1] <= 7 and len(weights) == 1 and weights[0].shape[-1] == 6
    prefix = torch.cat([torch.ones(4, 1, dtype=torch.long), out[:, :-1]], dim=1)
    logits = model(src, prefix)
    ended = (out == 2).cumsum(1) - (out == 2).long() > 0  # positions after an EOS hold padding
    assert (logits.argmax(-1)[~ended] == out[~ended]).all() and (out[ended] == 0).all()
    with pytest.raises(ValueError, match="src ids must lie in"):
        model(torch.full((1, 3), 9), tgt[:1])
    with pytest.raises(ValueError, match="differ in batch size"):
        model(src, tgt[:2])
    with pytest.raises(ValueError, match="share_embeddings needs one vocabulary"):
        Transformer(9, 10, share_embeddings=True)
    with pytest.raises(ValueError, match="label_smoothing"):
        model.loss(src, tgt, label_smoothing=1.0)

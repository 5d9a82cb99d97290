"""attnbook.models.gpt: parity with transformers' GPT-2 (copied weights), KV-cache identity, bad inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.models.gpt import GPT, DecodeStats, GPTConfig, KVCache, load_gpt2_state_dict, sample_next_token

transformers = pytest.importorskip("transformers")

VOCAB, BLOCK, LAYERS, HEADS, EMBD = 37, 24, 2, 4, 32


@pytest.fixture(scope="module")
def hf_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=BLOCK,
        n_embd=EMBD,
        n_layer=LAYERS,
        n_head=HEADS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=None,
        pad_token_id=0,
    )
    config._attn_implementation = "eager"
    model = transformers.GPT2LMHeadModel(config).double().eval()
    # Random-init LayerNorms are (1, 0): perturb them so the copy of every tensor is exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def copied(hf_model, backend: str) -> GPT:
    cfg = GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=LAYERS, n_head=HEADS, n_embd=EMBD, attn_backend=backend)
    return load_gpt2_state_dict(GPT(cfg).double().eval(), hf_model.state_dict())


@pytest.mark.parametrize("backend", ["fused", "manual", "auto"])
def test_logits_match_transformers_gpt2(hf_gpt2, backend):
    assert hf_gpt2.config._attn_implementation == "eager"
    model = copied(hf_gpt2, backend)
    idx = torch.randint(VOCAB, (3, BLOCK), generator=torch.Generator().manual_seed(1))
    ref = hf_gpt2(idx).logits
    logits, loss = model(idx, idx)
    torch.testing.assert_close(logits, ref, rtol=0, atol=1e-10)
    # transformers shifts the labels internally (logits[t] vs labels[t + 1]) and computes the loss in float32.
    ref_loss = hf_gpt2(idx, labels=idx).loss
    _, shifted = model(idx[:, :-1], idx[:, 1:])
    torch.testing.assert_close(shifted.float(), ref_loss, rtol=1e-6, atol=1e-6)
    ref_full = torch.nn.functional.cross_entropy(ref.reshape(-1, VOCAB), idx.reshape(-1))
    torch.testing.assert_close(loss, ref_full, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", ["fused", "manual"])
def test_greedy_tokens_match_transformers_gpt2(hf_gpt2, backend):
    model = copied(hf_gpt2, backend)
    prompt = torch.randint(VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
    new = BLOCK - 5  # transformers cannot go past n_positions, so stay inside one window
    ref = hf_gpt2.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, do_sample=False)
    for use_cache in (True, False):
        ours = model.generate(prompt, new, top_k=1, use_cache=use_cache)
        assert torch.equal(ours, ref)


def test_fused_equals_manual_float32():
    torch.manual_seed(3)
    fused = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32, attn_backend="fused"))
    manual = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32, attn_backend="manual"))
    manual.load_state_dict(fused.state_dict())
    idx = torch.randint(50, (4, 32))
    torch.testing.assert_close(fused(idx)[0], manual(idx)[0], rtol=1e-5, atol=1e-5)


@settings(max_examples=12, deadline=None)
@given(
    prompt_len=st.integers(1, 12),
    new=st.integers(0, 40),
    block_size=st.integers(2, 12),
    backend=st.sampled_from(["fused", "manual"]),
)
def test_cached_and_uncached_greedy_identical(prompt_len, new, block_size, backend):
    """Across window restarts (new tokens beyond block_size) too."""
    torch.manual_seed(prompt_len * 100 + block_size)
    model = GPT(GPTConfig(vocab_size=13, block_size=block_size, n_layer=2, n_head=2, n_embd=16, attn_backend=backend))
    model = model.double()
    prompt = torch.randint(13, (2, prompt_len))
    a = model.generate(prompt, new, top_k=1, use_cache=True)
    b = model.generate(prompt, new, top_k=1, use_cache=False)
    assert a.shape == (2, prompt_len + new)
    assert torch.equal(a[:, :prompt_len], prompt)
    assert torch.equal(a, b)


def test_cached_logits_equal_full_forward():
    torch.manual_seed(4)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=4, n_embd=16)).double().eval()
    idx = torch.randint(20, (2, 16))
    full, _ = model(idx)
    cache = model.new_cache(2)
    pieces = [model(idx[:, :5], cache=cache)[0]] + [model(idx[:, t : t + 1], cache=cache)[0] for t in range(5, 16)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-12)
    assert cache.length == 16


def test_sampling_is_seeded_and_respects_top_k():
    torch.manual_seed(5)
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16))
    prompt = torch.zeros(3, 2, dtype=torch.long)
    a = model.generate(prompt, 20, temperature=1.3, top_k=5, generator=torch.Generator().manual_seed(0))
    b = model.generate(prompt, 20, temperature=1.3, top_k=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    logits = torch.randn(500, 30)
    picks = sample_next_token(logits, top_k=3, generator=torch.Generator().manual_seed(1))  # (500, 1)
    top3 = logits.topk(3, dim=-1).indices
    assert (picks == top3).any(dim=-1).all()
    assert torch.equal(sample_next_token(logits, top_k=1), logits.argmax(-1, keepdim=True))
    cold = sample_next_token(logits, temperature=1e-4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(cold, logits.argmax(-1, keepdim=True))


def test_kv_stats_count_the_context():
    model = GPT(GPTConfig(vocab_size=10, block_size=64, n_layer=3, n_head=2, n_embd=8))
    stats = DecodeStats()
    model.generate(torch.zeros(1, 4, dtype=torch.long), 10, top_k=1, stats=stats)
    # prefill reads 4 rows per layer; step t (t = 1..9) reads 4 + t rows per layer.
    assert stats.rows_per_step == [3 * (4 + t) for t in range(10)]
    assert stats.tokens_generated == 10
    assert stats.kv_bytes_read == sum(stats.rows_per_step) * 2 * 8 * 4
    assert model.kv_cache_bytes_per_token() == 2 * 3 * 8 * 4
    assert model.new_cache(1).bytes_per_token == model.kv_cache_bytes_per_token()


def test_parameter_count_and_flops():
    cfg = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(cfg)
    E, V, L, T = 128, 65, 4, 64
    per_layer = 12 * E * E + 13 * E  # qkv + out + mlp weights and biases, two LayerNorms
    assert model.num_parameters() == V * E + T * E + L * per_layer + 2 * E
    assert model.num_parameters(non_embedding=True) == model.num_parameters() - T * E
    assert model.flops_per_token() == 3 * (2 * (L * 12 * E * E + E * V) + 4 * L * T * E)
    assert model.flops_per_token(training=False) * 3 == model.flops_per_token()


def test_kv_cache_overflow_raises():
    cache = KVCache(1, 1, 1, 2, max_len=3)
    cache.update(0, torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2))
    cache.advance(3)
    with pytest.raises(ValueError, match="max_len"):
        cache.update(0, torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))


def test_bad_inputs_name_the_argument():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    ok = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="idx.*block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(TypeError, match="idx.*torch.long"):
        model(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"idx.*\(B, T\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="idx.*outside"):
        model(torch.full((1, 3), 10, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        model(ok, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="top_k"):
        model.generate(ok, 3, top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(ok, 3, top_k=-2)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(ok, 3, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(ok, 3, temperature=-1.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(ok, -1)
    with pytest.raises(TypeError, match="idx"):
        model.generate(ok.float(), 3)
    with pytest.raises(TypeError, match="config"):
        GPT({"vocab_size": 10})  # type: ignore[arg-type]
    for bad in (dict(n_head=3), dict(vocab_size=0), dict(dropout=1.0), dict(attn_backend="flash")):
        field = next(iter(bad))
        with pytest.raises(ValueError, match=field):
            GPTConfig(**{"vocab_size": 10, "n_embd": 8, **bad})

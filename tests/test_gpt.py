"""attnbook.models.gpt: parity with transformers' GPT-2 (copied weights), KV-cache identity, bad inputs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.models.gpt import (
    GPT,
    DecodeStats,
    GPTConfig,
    KVCache,
    beam_search,
    filter_logits,
    load_gpt2_state_dict,
    sample_next_token,
)

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


def test_kv_cache_rejects_bad_sizes():
    for position, name in enumerate(("n_layer", "batch_size", "n_head", "head_dim", "max_len")):
        args = [1, 1, 1, 2, 3]
        for bad in (-1, 0, 2.0, True):
            args[position] = bad
            with pytest.raises(ValueError, match=name):
                KVCache(*args)


def test_kv_cache_used_with_another_batch_size_names_the_shapes():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=2, n_head=2, n_embd=8))
    cache = model.new_cache(2)
    model(torch.zeros(2, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match=r"cache.*batch_size=2.*\(3, 1\)"):
        model(torch.zeros(3, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match=r"k_new.*\(3, 2, 1, 4\).*\(2, 2, T, 4\)"):
        cache.update(0, torch.zeros(3, 2, 1, 4), torch.zeros(3, 2, 1, 4))
    with pytest.raises(ValueError, match="layer"):
        cache.update(2, torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4))


# --- nucleus (top-p) sampling -------------------------------------------------------------------------------


def smallest_sets_with_mass(probs: torch.Tensor, p: float) -> tuple[int, list[frozenset[int]]]:
    """Brute force: the size of the smallest subsets whose mass is >= p, and all subsets of that size that reach it."""
    V = len(probs)
    for size in range(1, V + 1):
        hits = [frozenset(c) for c in itertools.combinations(range(V), size) if probs[list(c)].sum() >= p]
        if hits:
            return size, hits
    raise AssertionError("the whole vocabulary has mass 1")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.floats(0.01, 0.99), temperature=st.sampled_from([0.5, 1.0, 2.0]))
def test_top_p_keeps_the_smallest_set_with_enough_mass(seed, p, temperature):
    V = 8
    logits = 2 * torch.randn(3, V, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    kept = filter_logits(logits, temperature, top_p=p).isfinite()  # (3, V)
    probs = torch.softmax(logits / temperature, dim=-1)
    for row in range(3):
        size, hits = smallest_sets_with_mass(probs[row], p)
        kept_set = frozenset(kept[row].nonzero().flatten().tolist())
        assert kept_set in hits and len(kept_set) == size
        # the kept set is also the most probable set of that size (the nucleus is the head of the distribution)
        assert math.isclose(
            probs[row, list(kept_set)].sum().item(), max(probs[row, list(h)].sum().item() for h in hits)
        )


def test_top_p_sampling_draws_only_from_the_nucleus():
    logits = torch.randn(400, 12, generator=torch.Generator().manual_seed(0))
    picks = sample_next_token(logits, top_p=0.5, generator=torch.Generator().manual_seed(1))  # (400, 1)
    allowed = filter_logits(logits, top_p=0.5).isfinite()
    assert allowed.gather(1, picks).all()
    assert (allowed.sum(-1) < 12).all() and (allowed.sum(-1) >= 1).all()
    assert filter_logits(logits, top_p=1.0).isfinite().all()
    tiny_p = sample_next_token(logits, top_p=1e-9, generator=torch.Generator().manual_seed(2))
    assert torch.equal(tiny_p, logits.argmax(-1, keepdim=True))  # a tiny nucleus is the top token alone
    # top-k first, then the nucleus of what is left
    both = filter_logits(logits, top_k=3, top_p=0.9).isfinite()
    assert (both <= filter_logits(logits, top_k=3).isfinite()).all()
    model = GPT(GPTConfig(vocab_size=12, block_size=8, n_layer=1, n_head=2, n_embd=8))
    prompt = torch.zeros(2, 2, dtype=torch.long)
    a = model.generate(prompt, 6, top_p=0.8, generator=torch.Generator().manual_seed(3))
    b = model.generate(prompt, 6, top_p=0.8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, True, "0.9", float("nan")])
def test_bad_top_p_is_named(bad):
    with pytest.raises(ValueError, match="top_p"):
        sample_next_token(torch.randn(2, 5), top_p=bad)
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(ValueError, match="top_p"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 2, top_p=bad)


# --- beam search --------------------------------------------------------------------------------------------


def tiny_model(vocab: int = 5, seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab, block_size=12, n_layer=2, n_head=2, n_embd=16)
    model = GPT(GPTConfig(**{**cfg, **kw})).double().eval()
    with torch.no_grad():  # sharper distributions than the 0.02-std init, so beams disagree with greedy
        model.token_embedding.weight.mul_(5)
    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_width_one_is_greedy(seed):
    model = tiny_model(seed=seed)
    prompt = torch.randint(5, (3, 3), generator=torch.Generator().manual_seed(seed))
    sequences, scores = beam_search(model, prompt, beam_width=1, max_new_tokens=6)
    assert sequences.shape == (3, 1, 9) and scores.shape == (3, 1)
    assert torch.equal(sequences[:, 0], model.generate(prompt, 6, top_k=1))


def total_log_prob(model: GPT, prompt: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """Brute force: sum of log p(new token | everything before), by full forward passes without a cache."""
    full = torch.cat([prompt, continuation], dim=1)  # (B, T + n)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(full[:, :-1])[0], dim=-1)  # (B, T + n - 1, V)
    T = prompt.shape[1]
    picked = log_probs[:, T - 1 :].gather(-1, continuation[..., None])[..., 0]  # (B, n)
    return picked.sum(-1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_exhaustive_beam_finds_the_best_sequence_by_enumeration(seed):
    V, n = 4, 3
    model = tiny_model(vocab=V, seed=seed)
    prompt = torch.randint(V, (2, 2), generator=torch.Generator().manual_seed(seed))
    every = torch.tensor(list(itertools.product(range(V), repeat=n)))  # (V^n, n)
    for b in range(2):
        scores = total_log_prob(model, prompt[b : b + 1].expand(len(every), -1), every)  # (V^n,)
        order = scores.argsort(descending=True)
        sequences, beam_scores = beam_search(model, prompt[b : b + 1], beam_width=V ** (n - 1), max_new_tokens=n)
        assert torch.equal(sequences[0, 0, 2:], every[order[0]])
        torch.testing.assert_close(beam_scores[0, 0], scores[order[0]], rtol=0, atol=1e-10)
        # every beam's score is its sequence's true log-probability, and the beams are the top V^(n-1), sorted
        torch.testing.assert_close(beam_scores[0], total_log_prob(model, sequences[0, :, :2], sequences[0, :, 2:]))
        torch.testing.assert_close(beam_scores[0], scores[order[: V ** (n - 1)]], rtol=0, atol=1e-10)


def test_beam_search_beats_greedy_somewhere_and_checks_its_arguments():
    model = tiny_model(seed=0)
    prompts = torch.randint(5, (16, 2), generator=torch.Generator().manual_seed(0))
    greedy = model.generate(prompts, 5, top_k=1)
    greedy_scores = total_log_prob(model, prompts, greedy[:, 2:])
    beams, scores = beam_search(model, prompts, beam_width=4, max_new_tokens=5)
    assert (scores[:, 0] > greedy_scores + 1e-9).any()  # a wider beam finds a more probable continuation
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(model, prompts, 0, 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        beam_search(model, prompts, 2, -1)
    with pytest.raises(ValueError, match="block_size"):
        beam_search(model, prompts, 2, 12)
    with pytest.raises(TypeError, match="prompt"):
        beam_search(model, prompts.float(), 2, 3)
    with pytest.raises(TypeError, match="model"):
        beam_search(torch.nn.Linear(2, 2), prompts, 2, 3)  # type: ignore[arg-type]


def test_kv_cache_select_reorders_and_repeats_sequences():
    cache = KVCache(2, 3, 1, 2, max_len=4)
    keys = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    cache.update(0, keys, keys)
    cache.select(torch.tensor([2, 2, 0, 1]))
    assert cache.batch_size == 4
    assert cache.k[0, :, 0, 0, 0].tolist() == [2.0, 2.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="batch_indices"):
        cache.select(torch.tensor([4]))
    with pytest.raises(TypeError, match="batch_indices"):
        cache.select([0, 1])  # type: ignore[arg-type]


# --- multi-query and grouped-query attention ----------------------------------------------------------------


def gqa_reference_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Brute force: every query head h attends, by explicit loops, with key-value head h // (H / G)."""
    c = model.config
    B, T = idx.shape
    H, G, d = c.n_head, c.n_kv_head, c.n_embd // c.n_head
    dec = model.decoder
    h = model.token_embedding.weight[idx] + dec.position_embedding.weight[:T]  # (B, T, D)
    for block in dec.blocks:
        mha = block.attn.mha
        a = F.layer_norm(h, (c.n_embd,), block.ln_1.weight, block.ln_1.bias)
        q = F.linear(a, mha.q_proj.weight, mha.q_proj.bias).view(B, T, H, d)
        k = F.linear(a, mha.k_proj.weight, mha.k_proj.bias).view(B, T, G, d)
        v = F.linear(a, mha.v_proj.weight, mha.v_proj.bias).view(B, T, G, d)
        out = torch.zeros(B, T, H, d, dtype=h.dtype)
        for b, head, i in itertools.product(range(B), range(H), range(T)):
            g = head // (H // G)
            scores = torch.stack([q[b, i, head] @ k[b, j, g] / math.sqrt(d) for j in range(i + 1)])
            out[b, i, head] = torch.softmax(scores, 0) @ v[b, : i + 1, g]
        h = h + F.linear(out.reshape(B, T, H * d), mha.out_proj.weight, mha.out_proj.bias)
        h = h + block.mlp(block.ln_2(h))
    return model.lm_head(dec.ln_f(h))


def test_gqa_with_g_equal_h_is_the_multi_head_model():
    torch.manual_seed(7)
    mha = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=4, n_embd=16))
    torch.manual_seed(7)
    same = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=4, n_embd=16, n_kv_head=4))
    assert mha.config.n_kv_head == 4
    assert {k: v.shape for k, v in mha.state_dict().items()} == {k: v.shape for k, v in same.state_dict().items()}
    for a, b in zip(mha.state_dict().values(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    idx = torch.randint(20, (2, 16))
    assert torch.equal(mha(idx)[0], same(idx)[0])


@pytest.mark.parametrize("backend", ["fused", "manual"])
@pytest.mark.parametrize("G", [1, 2])
def test_gqa_matches_a_reference_that_repeats_kv_heads(backend, G):
    torch.manual_seed(G)
    cfg = GPTConfig(vocab_size=20, block_size=10, n_layer=2, n_head=4, n_kv_head=G, n_embd=16, attn_backend=backend)
    model = GPT(cfg).double().eval()
    assert model.decoder.blocks[0].attn.mha.k_proj.weight.shape == (G * 4, 16)
    idx = torch.randint(20, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], gqa_reference_logits(model, idx), rtol=0, atol=1e-10)
        cache = model.new_cache(2)
        stepwise = [model(idx[:, :3], cache=cache)[0]] + [
            model(idx[:, t : t + 1], cache=cache)[0] for t in range(3, 10)
        ]
    torch.testing.assert_close(torch.cat(stepwise, 1), model(idx)[0], rtol=0, atol=1e-12)
    assert cache.k.shape == (2, 2, G, 10, 4)  # (L, B, G, max_len, d)
    assert torch.equal(
        model.generate(idx[:, :2], 20, top_k=1), model.generate(idx[:, :2], 20, top_k=1, use_cache=False)
    )


@pytest.mark.parametrize("G", [1, 2, 4, 8])
def test_gqa_cache_is_h_over_g_times_smaller(G):
    H = 8
    models = {
        g: GPT(GPTConfig(vocab_size=10, block_size=32, n_layer=3, n_head=H, n_kv_head=g, n_embd=32)) for g in (H, G)
    }
    per_token = {g: m.kv_cache_bytes_per_token() for g, m in models.items()}
    assert per_token[G] == 2 * 3 * G * 4 * 4  # 2 L G d bytes(float32)
    assert per_token[H] == per_token[G] * H // G
    assert models[G].new_cache(2).bytes_per_token == 2 * per_token[G]
    read = {}
    for g, m in models.items():
        stats = DecodeStats()
        m.generate(torch.zeros(1, 3, dtype=torch.long), 10, top_k=1, stats=stats)
        read[g] = stats.kv_bytes_read
    assert read[H] == read[G] * H // G
    E, V, L = 32, 10, 3
    assert models[G].flops_per_token(training=False) == 2 * (L * (10 * E * E + 2 * E * G * 4) + E * V) + 4 * L * 32 * E


def test_bad_n_kv_head_is_named():
    for bad in (3, 0, -2, 2.0):
        with pytest.raises(ValueError, match="n_kv_head"):
            GPTConfig(vocab_size=10, n_head=4, n_embd=16, n_kv_head=bad)
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=4, n_kv_head=2, n_embd=16))
    with pytest.raises(ValueError, match="n_kv_head"):
        load_gpt2_state_dict(model, {})


def test_gqa_block_attention_module_is_usable_on_its_own():
    """With G < H the GPT block's inner MultiHeadAttention is itself grouped, so its forward equals the block's."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=4, n_kv_head=2, n_embd=16)).double().eval()
    attn = model.decoder.blocks[0].attn
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    via_module, _ = attn.mha(x, is_causal=True)
    torch.testing.assert_close(attn(x), via_module, rtol=0, atol=1e-12)

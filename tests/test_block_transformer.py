"""attnbook.models.block_transformer: per-block loop == batched, block causality, cache identity, KV reads."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.models.block_transformer import BlockTransformer, BlockTransformerConfig
from attnbook.models.gpt import GPT, DecodeStats, GPTConfig


def small(backend: str = "auto", **kw) -> BlockTransformer:
    cfg = dict(vocab_size=11, block_len=4, max_blocks=6, block_n_layer=2, token_n_layer=2, n_head=2, n_embd=16)
    cfg.update(kw)
    torch.manual_seed(0)
    return BlockTransformer(BlockTransformerConfig(**cfg, attn_backend=backend)).double().eval()


@pytest.mark.parametrize("backend", ["fused", "manual"])
@pytest.mark.parametrize("n_prefix", [1, 3])
def test_per_block_loop_equals_batched(backend, n_prefix):
    model = small(backend, n_prefix=n_prefix)
    idx = torch.randint(11, (3, 24))
    torch.testing.assert_close(model(idx), model(idx, per_block_loop=True), rtol=0, atol=1e-12)


def test_fused_equals_manual():
    idx = torch.randint(11, (2, 16))
    torch.testing.assert_close(small("fused")(idx), small("manual")(idx), rtol=0, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(t=st.integers(0, 23), seed=st.integers(0, 1000))
def test_logits_at_t_see_only_tokens_before_t(t, seed):
    """Block causality: changing tokens t.. leaves the predictions of tokens 0..t unchanged."""
    model = small()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(11, (2, 24), generator=g)
    other = idx.clone()
    other[:, t:] = torch.randint(11, (2, 24 - t), generator=g)
    torch.testing.assert_close(model(other)[:, : t + 1], model(idx)[:, : t + 1], rtol=0, atol=1e-12)


def test_block_summary_reaches_later_blocks():
    """The other half of the property: a token does influence the blocks after its own."""
    model = small()
    idx = torch.randint(11, (1, 24))
    other = idx.clone()
    other[:, 1] = (other[:, 1] + 1) % 11
    diff = (model(other) - model(idx)).abs().amax(dim=-1)[0]  # (T,)
    assert diff[:2].max() == 0 and diff[2:4].min() > 0  # same block, after the change
    assert diff[4:].min() > 0  # later blocks, through the block decoder


@settings(max_examples=10, deadline=None)
@given(prompt_len=st.integers(1, 10), new=st.integers(0, 40), n_prefix=st.integers(1, 2))
def test_cached_and_uncached_greedy_identical(prompt_len, new, n_prefix):
    model = small(n_prefix=n_prefix, max_blocks=4)
    prompt = torch.randint(11, (2, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    a = model.generate(prompt, new, top_k=1, use_cache=True)
    b = model.generate(prompt, new, top_k=1, use_cache=False)
    assert a.shape == (2, prompt_len + new)
    assert torch.equal(a, b)


def test_cached_next_token_logits_equal_forward():
    """The cached decoding path computes the same distributions as the training forward."""
    model = small()
    idx = torch.randint(11, (2, 24))
    full = model(idx)  # (B, T, V)
    for t in (1, 3, 4, 9, 23):
        stats = DecodeStats()
        block_cache, token_cache, logits = model._cached_step(idx[:, :t], None, None, stats)
        torch.testing.assert_close(logits, full[:, t], rtol=0, atol=1e-12)
        torch.testing.assert_close(model._next_logits_uncached(idx[:, :t]), full[:, t], rtol=0, atol=1e-12)


def test_kv_reads_counted_and_lower_than_vanilla():
    block_len, n_prefix, blocks = 4, 1, 16
    bt = BlockTransformer(
        BlockTransformerConfig(
            vocab_size=11,
            block_len=block_len,
            max_blocks=blocks,
            n_prefix=n_prefix,
            n_embd=16,
            n_head=2,
            block_n_layer=2,
            token_n_layer=2,
        )
    )
    gpt = GPT(GPTConfig(vocab_size=11, block_size=block_len * blocks, n_layer=4, n_head=2, n_embd=16))
    prompt = torch.zeros(1, 4, dtype=torch.long)
    new = block_len * blocks - 4 - 1  # stay inside one window for both
    s_bt, s_gpt = DecodeStats(), DecodeStats()
    bt.generate(prompt, new, top_k=1, stats=s_bt)
    gpt.generate(prompt, new, top_k=1, stats=s_gpt)
    assert s_bt.tokens_generated == s_gpt.tokens_generated == new
    # Vanilla: step s (after the 4-token prefill) reads 4 + s rows in each of 4 layers.
    assert s_gpt.kv_rows_read == sum(4 * (4 + s) for s in range(new))
    # Block Transformer, counted by hand: the prefill reads 2 block rows ([start, e_0]) per block layer and
    # P + 0 token rows per token layer; then each step inside a block reads P + r rows per token layer; at a
    # block boundary, the block decoder reads (blocks so far + 1) rows per layer and the token decoder P.
    expected = 2 * 2 + 2 * n_prefix
    length = 4
    for _ in range(new - 1):
        length += 1
        n_full, r = divmod(length, block_len)
        if r == 0:
            expected += 2 * (n_full + 1) + 2 * n_prefix
        else:
            expected += 2 * (n_prefix + r)
    assert s_bt.kv_rows_read == expected
    assert s_bt.rows_per_token() < s_gpt.rows_per_token() / 3
    assert sum(s_bt.rows_per_step) == s_bt.kv_rows_read


def test_bad_inputs_name_the_argument():
    model = small()
    with pytest.raises(ValueError, match="multiple of block_len"):
        model(torch.zeros(1, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="idx.*max_blocks"):
        model(torch.zeros(1, 28, dtype=torch.long))
    with pytest.raises(TypeError, match="idx"):
        model(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="top_k"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 2, top_k=0)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 2, temperature=0)
    with pytest.raises(ValueError, match="block_len"):
        BlockTransformerConfig(vocab_size=5, block_len=0)
    with pytest.raises(ValueError, match="n_head"):
        BlockTransformerConfig(vocab_size=5, n_head=3)
    with pytest.raises(TypeError, match="config"):
        BlockTransformer(GPTConfig(vocab_size=5))  # type: ignore[arg-type]


def test_decoder_cache_of_another_batch_is_named():
    model = small()
    cache = model.token_decoder.new_cache(2, dtype=torch.float64, device=torch.device("cpu"))
    x = torch.zeros(3, 1, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"cache holds batch_size=2.*\(3, 1, 16\)"):
        model.token_decoder(x, cache)

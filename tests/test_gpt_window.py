"""Sliding-window attention in the GPT (GPTConfig.attn_window) and as a core pattern (SlidingWindowPattern)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention import AttentionCore
from attnbook.attention.local import SlidingWindowPattern, sliding_window_mask
from attnbook.models.gpt import GPT, GPTConfig


@pytest.mark.parametrize("causal, window", [(True, 4), (True, 1), (False, 5)])
def test_pattern_core_equals_sdpa_with_the_window_mask(causal, window):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 11, 8, dtype=torch.float64) for _ in range(3))
    core = AttentionCore(pattern=SlidingWindowPattern(window, causal=causal))
    mask = sliding_window_mask(11, window_size=window, causal=causal)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(core(q, k, v)[0], expected)
    torch.testing.assert_close(AttentionCore(pattern=core.pattern, backend="manual")(q, k, v)[0], expected)
    # queries 7..10 against keys 0..10, as when decoding with a cache: the rows of the full result
    pos = torch.arange(11)
    torch.testing.assert_close(core(q[..., 7:, :], k, v, q_pos=pos[7:], k_pos=pos)[0], expected[..., 7:, :])


def _pair(window: int | None, block: int = 24) -> GPT:
    torch.manual_seed(1)
    return GPT(GPTConfig(vocab_size=13, block_size=block, n_layer=2, n_head=2, n_embd=16, attn_window=window)).double()


def test_a_window_covering_the_context_is_the_plain_gpt():
    plain, wide = _pair(None), _pair(24)
    wide.load_state_dict(plain.state_dict())
    x = torch.randint(0, 13, (3, 24))
    torch.testing.assert_close(wide(x)[0], plain(x)[0])


def test_the_window_bounds_how_far_back_a_position_reads():
    window, layers = 4, 2
    reach = layers * (window - 1)  # positions t - reach .. t can influence position t
    plain, local = _pair(None), _pair(window)
    local.load_state_dict(plain.state_dict())
    x = torch.randint(0, 13, (1, 24))
    y = x.clone()
    y[0, 0] = (x[0, 0] + 1) % 13  # change the first token only
    for model, unaffected_from in ((local, reach + 1), (plain, None)):
        delta = (model(x)[0] - model(y)[0]).abs().amax(-1)[0]  # (T,)
        assert delta[reach] > 1e-6  # the farthest position that still sees it
        if unaffected_from is None:
            assert delta[reach + 1 :].min() > 1e-6
        else:
            assert delta[unaffected_from:].max() == 0.0


def test_decoding_with_the_cache_equals_the_full_forward():
    model = _pair(5).eval()
    x = torch.randint(0, 13, (2, 20))
    full = model(x)[0]
    cache = model.decoder.new_cache(2, dtype=torch.float64, device=torch.device("cpu"))
    steps = [model(x[:, :8], cache=cache)[0]]
    steps += [model(x[:, t : t + 1], cache=cache)[0] for t in range(8, 20)]
    torch.testing.assert_close(torch.cat(steps, 1), full)


def test_bad_window_is_named():
    with pytest.raises(ValueError, match="attn_window must be a positive int or None, got 0"):
        GPTConfig(vocab_size=5, attn_window=0)
    with pytest.raises(ValueError, match="window_size"):
        SlidingWindowPattern(4, causal=False)

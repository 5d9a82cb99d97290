"""Chapter 21: MQSA's window mean, L-query self-attention and multi-query recommender, TED, and the CRENER-style
direction-aware tagger, against brute-force loops and exact limits; the session and sentence generators."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention.positional import TENERRelativePosition, tener_sinusoid
from attnbook.attention.recommendation import (
    CharacterRelationTagger,
    DirectionBlindRelativePosition,
    LQuerySelfAttention,
    MultiQueryRecommender,
    RelationRepresentation,
    RelativeEncoderLayer,
    decode_relation_grid,
    entity_f1,
    hit_rate_at_k,
    relative_encoder_attention,
    transition_counts,
    transition_distillation_loss,
    window_mean,
)
from attnbook.data.sessions import (
    RELATION_TAGS,
    entity_sentences,
    next_item_pairs,
    relation_grid,
    synthetic_sessions,
)

F64 = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def padded_mask(B, T, pads):
    return torch.arange(T)[None, :] >= torch.tensor(pads)[:, None]  # (B, T): left padding


# ---------------------------------------------------------------------------------------------------------------
# The window mean and L-query self-attention
# ---------------------------------------------------------------------------------------------------------------


def window_mean_loop(x, w, real):
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            members = [j for j in range(max(0, t - w + 1), t + 1) if real[b, j]]
            if members:
                out[b, t] = sum(x[b, j] for j in members) / len(members)
    return out


@pytest.mark.parametrize("window", [1, 2, 3, 7, 20])
def test_window_mean_equals_its_loop(window):
    x, real = randn(3, 7, 5), padded_mask(3, 7, [0, 2, 7])
    torch.testing.assert_close(window_mean(x, window, real), window_mean_loop(x, window, real), rtol=0, atol=1e-12)


def test_window_mean_limits():
    x = randn(2, 6, 4)
    torch.testing.assert_close(window_mean(x, 1), x, rtol=0, atol=0)  # one item: the item itself
    prefix = x.cumsum(1) / torch.arange(1, 7, dtype=F64)[:, None]
    torch.testing.assert_close(window_mean(x, 6), prefix, rtol=0, atol=1e-12)  # the whole prefix
    torch.testing.assert_close(window_mean(x, 100), prefix, rtol=0, atol=1e-12)
    empty = window_mean(x, 3, torch.zeros(2, 6, dtype=torch.bool))
    assert torch.equal(empty, torch.zeros_like(x))  # no real item: zeros, no NaN


def lquery_block_loop(block, x, real):
    """The block of the code, step by step with a single head: q = LN(window mean), causal attention over real
    keys, out_proj, + q, LN, + FFN, times the mask."""
    attn = block.attn
    q_in = block.query_norm(torch.as_tensor(window_mean_loop(x, block.window, real)))
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            keys = [j for j in range(t + 1) if real[b, j]]
            o = torch.zeros(x.shape[-1], dtype=x.dtype)
            if keys:
                q = attn.q_proj(q_in[b, t])
                scores = torch.stack([q @ attn.k_proj(x[b, j]) for j in keys]) / math.sqrt(x.shape[-1])
                o = sum(a * attn.v_proj(x[b, j]) for a, j in zip(scores.softmax(0), keys, strict=True))
            y = block.norm(attn.out_proj(o) + q_in[b, t])
            out[b, t] = (y + block.ffn(y)) * real[b, t]
    return out


@pytest.mark.parametrize("window", [1, 3])
def test_lquery_block_equals_its_loop(window):
    torch.manual_seed(0)
    block = LQuerySelfAttention(6, num_heads=1, window=window).double().eval()
    x, real = randn(3, 5, 6, seed=1), padded_mask(3, 5, [0, 2, 4])
    torch.testing.assert_close(block(x, real), lquery_block_loop(block, x, real), rtol=0, atol=1e-12)


def test_window_one_is_sasrec_causal_self_attention():
    torch.manual_seed(0)
    block = LQuerySelfAttention(8, num_heads=2, window=1).double()
    x = randn(2, 6, 8)
    q = block.query_norm(x)
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True).double()
    block.attn.load_torch(ref)  # the same projections in both
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)  # PyTorch: True = hidden
    a, _ = ref(q, x, x, attn_mask=causal)
    y = block.norm(a + q)
    torch.testing.assert_close(block(x), y + block.ffn(y), rtol=0, atol=1e-12)


def test_padding_changes_nothing_and_no_future_leaks():
    torch.manual_seed(0)
    block = LQuerySelfAttention(6, num_heads=2, window=3).double()
    x = randn(1, 5, 6)
    padded = torch.cat([torch.zeros(1, 3, 6, dtype=F64), x], 1)
    real = padded_mask(1, 8, [3])
    torch.testing.assert_close(block(padded, real)[:, 3:], block(x), rtol=0, atol=1e-12)
    assert torch.equal(block(padded, real)[:, :3], torch.zeros(1, 3, 6, dtype=F64))
    changed = x.clone()
    changed[:, 3:] += 5.0
    torch.testing.assert_close(block(changed)[:, :3], block(x)[:, :3], rtol=0, atol=1e-12)


def test_recommender_alpha_limits_and_gradients():
    torch.manual_seed(0)
    items = synthetic_sessions(4, num_items=12, num_topics=3, length=8, min_length=4, seed=1).items
    sasrec = MultiQueryRecommender(12, 8, embed_dim=8, num_heads=2, alpha=1.0).double()
    assert sasrec.long is None
    h_short, h_long = sasrec.branch_states(items)
    assert h_long is None
    torch.testing.assert_close(sasrec(items), h_short @ sasrec.item_embedding.weight[:12].T, rtol=0, atol=0)
    mqsa = MultiQueryRecommender(12, 8, embed_dim=8, num_heads=2, long_window=3, alpha=0.3).double()
    h_short, h_long = mqsa.branch_states(items)
    table = mqsa.item_embedding.weight[:12]
    torch.testing.assert_close(mqsa(items), 0.3 * h_short @ table.T + 0.7 * h_long @ table.T, rtol=0, atol=1e-12)
    # window 1 in the long branch with the short branch's weights: both branches agree
    twin = MultiQueryRecommender(12, 8, embed_dim=8, num_heads=2, long_window=1, alpha=0.5).double()
    twin.long.load_state_dict(twin.short.state_dict())
    twin.long_norm.load_state_dict(twin.short_norm.state_dict())
    h_short, h_long = twin.branch_states(items)
    torch.testing.assert_close(h_short, h_long, rtol=0, atol=0)
    inputs, targets = next_item_pairs(items, 12)
    loss = F.cross_entropy(mqsa(inputs).flatten(0, 1), targets.flatten(), ignore_index=12)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in mqsa.parameters() if p.grad is not None)


def test_recommender_bad_inputs_name_the_argument():
    model = MultiQueryRecommender(10, 6, embed_dim=8)
    with pytest.raises(ValueError, match="items"):
        model(torch.zeros(2, 6))  # float, not ids
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="item ids"):
        model(torch.full((2, 6), 11))
    with pytest.raises(ValueError, match="alpha"):
        MultiQueryRecommender(10, 6, alpha=1.5)
    with pytest.raises(ValueError, match="long_window"):
        MultiQueryRecommender(10, 6, long_window=0)
    with pytest.raises(ValueError, match="window"):
        window_mean(torch.zeros(1, 3, 2), 0)
    with pytest.raises(ValueError, match="x must be"):
        window_mean(torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match="key_mask"):
        window_mean(torch.zeros(1, 3, 2), 2, torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_mask"):
        LQuerySelfAttention(4)(torch.zeros(1, 3, 4), torch.ones(1, 3))
    with pytest.raises(ValueError, match="k="):
        hit_rate_at_k(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long), 6)


def test_hit_rate_and_transition_counts_against_loops():
    logits = randn(20, 9)
    targets = torch.randint(9, (20,), generator=torch.Generator().manual_seed(0))
    for k in (1, 3, 9):
        expected = sum(int(targets[m] in logits[m].topk(k).indices) for m in range(20)) / 20
        assert hit_rate_at_k(logits, targets, k).item() == pytest.approx(expected)
    sessions = synthetic_sessions(30, num_items=8, num_topics=2, length=6, min_length=3, seed=2)
    counts = transition_counts(sessions.items, 8, span=2)
    ref = torch.zeros(8, 8)
    for row in sessions.items.tolist():
        for n in range(len(row)):
            for s in (1, 2):
                if n + s < len(row) and row[n] != 8 and row[n + s] != 8:
                    ref[row[n], row[n + s]] += 1
    assert torch.equal(counts, ref)


def test_transition_distillation_loss_is_the_cross_entropy():
    table, counts = randn(6, 4), torch.rand(6, 6, generator=torch.Generator().manual_seed(1), dtype=F64) * 5
    heads = torch.tensor([0, 3, 3, 5])
    loss = transition_distillation_loss(table, heads, counts, tau=0.5)
    ref = 0.0
    for i in heads.tolist():
        teacher = torch.softmax(counts[i] / counts[i].max() / 0.5, 0)
        student = torch.log_softmax(table[i] @ table.T * 2.0 / 0.5, 0)
        ref = ref - (teacher * student).sum() / len(heads)
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="tau"):
        transition_distillation_loss(table, heads, counts, tau=0.0)
    with pytest.raises(ValueError, match="counts"):
        transition_distillation_loss(table, heads, counts[:5])


# ---------------------------------------------------------------------------------------------------------------
# CRENER: direction-aware attention, the grid and the tagger
# ---------------------------------------------------------------------------------------------------------------


def relative_scores_loop(q, k, u, v, aware):
    T, d = q.shape
    rho = lambda t: tener_sinusoid(torch.tensor(t if aware else abs(t)), d, dtype=F64)  # noqa: E731
    return torch.stack(
        [
            torch.stack([(q[i] + u) @ k[j] + (q[i] + v) @ rho(j - i) + k[j] @ rho(i - j) for j in range(T)])
            for i in range(T)
        ]
    )


@pytest.mark.parametrize("part_cls,aware", [(TENERRelativePosition, True), (DirectionBlindRelativePosition, False)])
def test_relative_parts_equal_the_loop(part_cls, aware):
    q, k = randn(2, 2, 6, 4, seed=1), randn(2, 2, 6, 4, seed=2)  # (B, H, T, d)
    part = part_cls(2, 4).double()
    with torch.no_grad():
        part.u.copy_(randn(2, 4, seed=3))
        part.v.copy_(randn(2, 4, seed=4))
    pos = torch.arange(6)
    got = q @ k.transpose(-1, -2) + part.bias(q, k, pos, pos)
    for b in range(2):
        for h in range(2):
            ref = relative_scores_loop(q[b, h], k[b, h], part.u[h], part.v[h], aware)
            torch.testing.assert_close(got[b, h], ref, rtol=0, atol=1e-12)


def test_encoder_attention_is_unscaled_and_the_blind_encoder_is_reflection_equivariant():
    attn = relative_encoder_attention(8, 2)
    assert attn.core.scores.scale == 1.0
    blind = relative_encoder_attention(8, 2, direction_aware=False)
    assert isinstance(blind.core.positions, DirectionBlindRelativePosition)
    torch.manual_seed(0)
    x = randn(2, 9, 8)
    for aware in (False, True):
        layer = RelativeEncoderLayer(8, 2, direction_aware=aware).double()
        with torch.no_grad():
            for p in layer.attn.core.positions.parameters():
                p.normal_()
            gap = (layer(x.flip(1)) - layer(x).flip(1)).abs().max()
        assert (gap < 1e-12) if not aware else (gap > 1e-3)


def test_tagger_shapes_reflection_and_gradients():
    data = entity_sentences(4, length=12, seed=3)
    torch.manual_seed(0)
    blind = CharacterRelationTagger(data.vocab_size, embed_dim=8, num_heads=2, direction_aware=False).double()
    z = blind(data.chars)
    assert z.shape == (4, 12, 12, len(RELATION_TAGS))
    torch.testing.assert_close(blind(data.chars.flip(1)), z.flip(1).flip(2), rtol=0, atol=1e-12)
    aware = CharacterRelationTagger(data.vocab_size, embed_dim=8, num_heads=2).double()
    loss = F.cross_entropy(aware(data.chars).reshape(-1, 4), data.grid.flatten())
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in aware.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="chars"):
        aware(data.chars.float())
    with pytest.raises(ValueError, match="pairs"):
        RelationRepresentation(8)(torch.zeros(1, 3, 3, 7))
    with pytest.raises(ValueError, match="num_heads"):
        relative_encoder_attention(8, 3)


def test_relation_module_equals_its_definition():
    torch.manual_seed(0)
    module = RelationRepresentation(6, num_tags=4, num_heads=1).double()
    pairs = randn(2, 3, 3, 6)
    g = module.tags
    tags = module.tag_norm(g + module.tag_attn(g[None])[0][0])
    torch.testing.assert_close(module.tag_states(), tags, rtol=0, atol=1e-12)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                p = pairs[b, i, j][None, None]  # one pair as a one-query sequence
                attended = module.pair_norm(p + module.pair_attn(p, tags[None], tags[None])[0])[0, 0]
                ref = attended @ tags.T / math.sqrt(6)
                torch.testing.assert_close(module(pairs)[b, i, j], ref, rtol=0, atol=1e-12)


def test_grid_round_trip_and_f1():
    entities = [[(1, 2, 0), (5, 7, 1)], [], [(0, 0, 1)]]
    grid = relation_grid(entities, 9)
    assert grid[0, 1, 2] == 1 and grid[0, 2, 1] == 2 and grid[0, 7, 5] == 3 and grid[0, 5, 6] == 1 == grid[0, 6, 7]
    assert int((grid > 0).sum()) == 1 + 1 + 2 + 1 + 1
    assert decode_relation_grid(grid) == entities
    broken = grid.clone()
    broken[0, 6, 7] = 0  # a NEXT chain with a gap decodes no entity
    assert decode_relation_grid(broken)[0] == [(1, 2, 0)]
    assert entity_f1(entities, entities) == 1.0
    assert entity_f1([[(1, 2, 0)], [], []], entities) == pytest.approx(2 * 1 / (1 + 3))
    with pytest.raises(ValueError, match="entity"):
        relation_grid([[(3, 2, 0)]], 5)
    with pytest.raises(ValueError, match="predicted"):
        entity_f1([[]], entities)


# ---------------------------------------------------------------------------------------------------------------
# The generators
# ---------------------------------------------------------------------------------------------------------------


def test_sessions_are_seeded_padded_and_follow_their_world():
    a = synthetic_sessions(200, num_items=30, num_topics=5, length=12, min_length=5, seed=4, world_seed=1)
    b = synthetic_sessions(200, num_items=30, num_topics=5, length=12, min_length=5, seed=4, world_seed=1)
    c = synthetic_sessions(200, num_items=30, num_topics=5, length=12, min_length=5, seed=5, world_seed=1)
    assert torch.equal(a.items, b.items) and not torch.equal(a.items, c.items)
    assert torch.equal(a.successor, c.successor)  # one world, two samples
    assert sorted(a.successor.tolist()) == list(range(30))  # a permutation
    pad = a.items == 30
    assert torch.equal(pad.sum(1), 12 - a.lengths) and (a.lengths >= 5).all()
    assert torch.equal(pad, torch.arange(12)[None] < (12 - a.lengths)[:, None])  # padding on the left only
    real_prev, real_next = a.items[:, :-1], a.items[:, 1:]
    both = (real_prev != 30) & (real_next != 30)
    follows = (a.successor[real_prev.clamp(max=29)] == real_next)[both].float().mean()
    assert 0.25 < follows < 0.45  # transition 0.3, plus chance hits
    on_topic = (a.item_topic[a.items.clamp(max=29)] == a.topics)[~pad].float().mean()
    assert on_topic > 0.45
    inputs, targets = next_item_pairs(a.items, 30)
    assert torch.equal(targets == 30, inputs == 30)
    with pytest.raises(ValueError, match="transition"):
        synthetic_sessions(3, transition=0.8, noise=0.3)
    with pytest.raises(ValueError, match="min_length"):
        synthetic_sessions(3, length=5, min_length=6)


def test_entity_sentences_are_seeded_and_marked_on_the_left():
    a, b = entity_sentences(50, seed=7), entity_sentences(50, seed=7)
    assert torch.equal(a.chars, b.chars) and a.entities == b.entities
    assert not torch.equal(a.chars, entity_sentences(50, seed=8).chars)
    for chars, spans in zip(a.chars.tolist(), a.entities, strict=True):
        markers = [i for i, c in enumerate(chars) if c < a.num_markers]
        assert len(markers) == len(spans)
        for head, tail, kind in spans:
            m = chars[head - 1]
            assert m < a.num_markers and kind == m % 2 and tail - head + 1 == 2 + m // 2
            assert all(c >= a.num_markers for c in chars[head : tail + 1])
    assert torch.equal(a.grid, relation_grid(a.entities, 16))
    with pytest.raises(ValueError, match="vocab_size"):
        entity_sentences(3, vocab_size=4)

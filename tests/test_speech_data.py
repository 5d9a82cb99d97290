"""Tests of attnbook.data.speech: the spoken-symbols and search-scene generators (ch. 19)."""

from __future__ import annotations

import pytest
import torch

from attnbook.data.speech import search_scenes, spoken_symbols


def test_spoken_symbols_shapes_determinism_and_targets():
    a = spoken_symbols(20, num_windows=3, window_size=12, symbols_per_window=3, num_symbols=6, frame_dim=5, seed=4)
    b = spoken_symbols(20, num_windows=3, window_size=12, symbols_per_window=3, num_symbols=6, frame_dim=5, seed=4)
    assert a.frames.shape == (20, 36, 5) and a.targets.shape == (20, 3, 6) and a.symbols.shape == (20, 3, 3)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a.frames, spoken_symbols(20, 3, 12, 3, 6, 5, seed=5).frames)
    assert (a.targets.sum(-1) == 3).all()  # distinct symbols per window
    assert torch.equal(a.targets.gather(-1, a.symbols), torch.ones_like(a.symbols, dtype=torch.float))
    torch.testing.assert_close(a.prototypes.norm(dim=-1), torch.ones(6))


def test_spoken_symbols_bursts_sit_where_the_onsets_say():
    data = spoken_symbols(50, num_windows=2, window_size=15, max_burst=2, noise=0.0, seed=1)
    frames = data.frames.reshape(50, 2, 15, -1)
    assert (data.onsets[..., 1:] - data.onsets[..., :-1] >= 2).all()  # bursts never overlap
    assert (data.onsets >= 0).all() and (data.onsets <= 13).all()
    loud = frames.norm(dim=-1) > 0.5  # (S, n, w): noise-free, so loud = inside a burst
    for s in range(5):
        for w in range(2):
            for j in range(3):
                onset, symbol = data.onsets[s, w, j].item(), data.symbols[s, w, j].item()
                assert loud[s, w, onset]
                torch.testing.assert_close(frames[s, w, onset], data.prototypes[symbol])
    assert loud.sum(-1).min() >= 3 and loud.sum(-1).max() <= 6  # 3 bursts of 1 or 2 frames


def test_spoken_symbols_bad_inputs():
    with pytest.raises(ValueError, match="symbols_per_window=9 exceeds num_symbols=8"):
        spoken_symbols(4, symbols_per_window=9)
    with pytest.raises(ValueError, match="do not fit in window_size=5"):
        spoken_symbols(4, window_size=5, symbols_per_window=3, max_burst=2)
    with pytest.raises(ValueError, match="num_samples must be an int >= 1"):
        spoken_symbols(0)


def test_search_scenes_scanpaths_follow_similarity_and_stop_at_the_target():
    scenes = search_scenes(200, num_objects=7, feature_dim=6, cue_noise=2.0, seed=2)
    assert scenes.objects.shape == (200, 7, 6) and scenes.scanpath.shape == (200, 8)
    similarity = torch.nn.functional.cosine_similarity(scenes.objects, scenes.cue[:, None], dim=-1)
    for s in range(200):
        n = scenes.length[s].item()
        path = scenes.scanpath[s, :n].tolist()
        assert path[-1] == scenes.target_index[s].item() and len(set(path)) == n  # ends at the target, no repeats
        assert (scenes.scanpath[s, n:] == 7).all()  # then "end"
        assert similarity[s, path].diff().le(0).all()  # in decreasing similarity (jitter 0)
        others = [i for i in range(7) if i not in path]
        assert not others or similarity[s, others].max() <= similarity[s, path[-1]]
    assert scenes.length.float().mean() > 1.2  # the noisy cue makes real searches
    with pytest.raises(ValueError, match="num_objects must be an int >= 1"):
        search_scenes(3, num_objects=0)

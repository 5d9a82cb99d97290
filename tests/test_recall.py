"""The associative-recall generator (chapter 10): layout, answers by brute force, determinism, bad input."""

from __future__ import annotations

import pytest
import torch

from attnbook.data.recall import associative_recall


def test_layout_and_answers_by_brute_force():
    task = associative_recall(20, num_pairs=6, num_queries=3, num_values=5, seed=1)
    assert task.tokens.shape == (20, 15) and task.targets.shape == (20, 3)
    for row, targets in zip(task.tokens.tolist(), task.targets.tolist(), strict=True):
        pairs, questions = row[:12], row[12:]
        stored = dict(zip(pairs[0::2], pairs[1::2], strict=True))
        assert len(stored) == 6  # keys are distinct within a sequence
        assert all(key < 12 for key in stored) and all(12 <= value < 17 for value in stored.values())
        assert [stored[q] for q in questions] == targets


def test_seeded_and_questions_cover_the_sequence():
    a, b = associative_recall(50, 8, 4, seed=3), associative_recall(50, 8, 4, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.tokens, associative_recall(50, 8, 4, seed=4).tokens)
    assert set(a.pair_index.flatten().tolist()) == set(range(8))  # answers come from every position


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"num_pairs": 0}, "num_pairs"), ({"num_keys": 3}, "num_keys"), ({"num_queries": 0}, "num_queries")],
)
def test_bad_input_raises(kwargs, name):
    with pytest.raises(ValueError, match=name):
        associative_recall(4, **{"num_pairs": 5, **kwargs})

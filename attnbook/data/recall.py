"""Associative recall: find the value stored with a key seen anywhere earlier in the sequence (ch. 10).

A sequence stores ``num_pairs`` key-value pairs, ``k_1 v_1 k_2 v_2 ... k_n v_n``, then asks ``num_queries``
questions, each a key of the sequence; the answer to a question is the value that followed that key. Keys are
drawn without replacement from ``range(num_keys)``, values with replacement from ``range(num_values)``; the token
ids put values after keys (value ``j`` is token ``num_keys + j``), so one vocabulary of ``num_keys + num_values``
covers both. Which pair a question asks about is uniform, so the answer sits anywhere in the sequence: solving
the task needs *content* matching over the whole length, not a local window.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["RecallTask", "associative_recall"]


class RecallTask(NamedTuple):
    """``tokens (N, 2 n + m)``: the pairs then the questions; ``targets (N, m)``: the value token of each answer;
    ``pair_index (N, m)``: which pair each question asks about; ``keys``, ``values (N, n)``: the stored pairs
    (token ids)."""

    tokens: Tensor
    targets: Tensor
    pair_index: Tensor
    keys: Tensor
    values: Tensor


def associative_recall(
    num_samples: int,
    num_pairs: int,
    num_queries: int = 1,
    num_keys: int | None = None,
    num_values: int = 16,
    seed: int = 0,
) -> RecallTask:
    """Generate ``num_samples`` associative-recall sequences (seeded, deterministic; see the module docstring).

    ``num_keys`` defaults to ``2 * num_pairs`` (keys within a sequence are distinct, so it must be at least
    ``num_pairs``).
    """
    num_keys = 2 * num_pairs if num_keys is None else num_keys
    for name, value, low in (
        ("num_samples", num_samples, 1),
        ("num_pairs", num_pairs, 1),
        ("num_queries", num_queries, 1),
        ("num_values", num_values, 1),
        ("num_keys", num_keys, num_pairs),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"associative_recall: {name} must be an int >= {low}, got {value!r}")
    gen = torch.Generator().manual_seed(seed)
    keys = torch.rand(num_samples, num_keys, generator=gen).argsort(dim=-1)[:, :num_pairs]  # distinct per row
    values = num_keys + torch.randint(0, num_values, (num_samples, num_pairs), generator=gen)
    pair_index = torch.randint(0, num_pairs, (num_samples, num_queries), generator=gen)
    pairs = torch.stack([keys, values], dim=-1).reshape(num_samples, 2 * num_pairs)  # k1 v1 k2 v2 ...
    questions = keys.gather(1, pair_index)
    tokens = torch.cat([pairs, questions], dim=1)
    return RecallTask(tokens, values.gather(1, pair_index), pair_index, keys, values)

"""Synthetic next-token data of *Scan and Snap* (Tian et al., 2023, ``tian2023scan``) for chapter 23.

The paper's setting: a sequence is drawn for one *fact* (a query token ``m`` and its next token ``n``). Its context
tokens ``x_1 .. x_{T-1}`` are drawn independently from a conditional distribution ``P(l | m, n)`` over the
vocabulary, the last token ``x_T`` is the query ``m``, and the target ``x_{T+1}`` is ``n``. Two kinds of context
token make the task interesting:

* **common** tokens appear in the context of every fact with the same probability: they say nothing about ``n``;
* **distinct** tokens belong to one fact only, with probabilities spread linearly between ``distinct_min`` and
  ``distinct_max`` (before normalisation): each one identifies ``n``, some appear more often than others.

:func:`scan_snap_facts` builds the table of facts (the conditional distributions), and
:func:`scan_snap_sequences` samples token sequences from it. The layout of the vocabulary follows the paper's
generator (``Dataset2`` in ``facebookresearch/luckmatters``, ``ssl/real-dataset/decoder_only.py``): common tokens
first, then each fact's distinct tokens, then the query tokens, then the next tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["NextTokenFacts", "scan_snap_facts", "NextTokenSequences", "scan_snap_sequences"]


def _positive_int(name: str, value: object, where: str, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: {name} must be an int >= {low}, got {value!r}")


class NextTokenFacts(NamedTuple):
    """The facts of the synthetic task. ``probs (F, M)``: row ``i`` is ``P(l | m_i, n_i)`` over the vocabulary of
    ``M`` tokens; ``query (F,)`` and ``next (F,)`` the query and next token of each fact; ``common (C,)`` the common
    tokens; ``distinct (F, K)`` each fact's distinct tokens, in order of increasing probability;
    ``vocab_size`` is ``M``."""

    probs: Tensor
    query: Tensor
    next: Tensor
    common: Tensor
    distinct: Tensor
    vocab_size: int


def scan_snap_facts(
    num_queries: int = 2,
    nexts_per_query: int = 2,
    num_common: int = 10,
    num_distinct: int = 10,
    distinct_min: float = 0.1,
    distinct_max: float = 1.0,
    common_weight: float = 1.0,
) -> NextTokenFacts:
    """The table of facts: ``num_queries * nexts_per_query`` facts over a vocabulary of ``num_common +
    F * num_distinct + num_queries + F`` tokens (``F`` facts). Each fact's context distribution gives weight
    ``common_weight`` to every common token and ``linspace(distinct_min, distinct_max, num_distinct)`` to its own
    distinct tokens, normalised to sum to one. Deterministic (no randomness)."""
    where = "scan_snap_facts"
    _positive_int("num_queries", num_queries, where)
    _positive_int("nexts_per_query", nexts_per_query, where)
    _positive_int("num_common", num_common, where, low=0)
    _positive_int("num_distinct", num_distinct, where)
    if not 0 < distinct_min <= distinct_max:
        raise ValueError(f"{where}: need 0 < distinct_min <= distinct_max, got {distinct_min}, {distinct_max}")
    if common_weight < 0:
        raise ValueError(f"{where}: common_weight must be >= 0, got {common_weight}")
    num_facts = num_queries * nexts_per_query
    distinct_offset = num_common
    query_offset = distinct_offset + num_facts * num_distinct
    next_offset = query_offset + num_queries
    vocab_size = next_offset + num_facts
    probs = torch.zeros(num_facts, vocab_size, dtype=torch.float64)
    probs[:, :num_common] = common_weight
    distinct = torch.arange(num_facts * num_distinct).reshape(num_facts, num_distinct) + distinct_offset  # (F, K)
    weights = torch.linspace(distinct_min, distinct_max, num_distinct, dtype=torch.float64)
    probs.scatter_(1, distinct, weights.expand(num_facts, num_distinct).clone())
    probs = probs / probs.sum(1, keepdim=True)
    query = query_offset + torch.arange(num_facts) // nexts_per_query  # facts i*J .. i*J+J-1 share query i
    return NextTokenFacts(
        probs=probs,
        query=query,
        next=next_offset + torch.arange(num_facts),
        common=torch.arange(num_common),
        distinct=distinct,
        vocab_size=vocab_size,
    )


class NextTokenSequences(NamedTuple):
    """Sampled sequences: ``context (N, T-1)`` int64 tokens, ``query (N,)`` the last token ``x_T``,
    ``target (N,)`` the next token ``x_{T+1}``, ``fact (N,)`` which fact each sequence was drawn from."""

    context: Tensor
    query: Tensor
    target: Tensor
    fact: Tensor


def scan_snap_sequences(
    facts: NextTokenFacts, num_sequences: int, context_length: int, seed: int = 0
) -> NextTokenSequences:
    """Draw ``num_sequences`` sequences: a fact uniformly at random, then ``context_length`` context tokens
    independently from its distribution ``P(l | m, n)``; the query is the fact's query token and the target its next
    token. Deterministic given ``seed``."""
    where = "scan_snap_sequences"
    if not isinstance(facts, NextTokenFacts):
        raise TypeError(f"{where}: facts must be a NextTokenFacts (from scan_snap_facts), got {type(facts).__name__}")
    _positive_int("num_sequences", num_sequences, where)
    _positive_int("context_length", context_length, where)
    gen = torch.Generator().manual_seed(seed)
    fact = torch.randint(len(facts.probs), (num_sequences,), generator=gen)  # (N,)
    context = torch.multinomial(facts.probs[fact], context_length, replacement=True, generator=gen)  # (N, T-1)
    return NextTokenSequences(context=context, query=facts.query[fact], target=facts.next[fact], fact=fact)

"""Generated data for chapter 21: sessions for next-item prediction, and characters with entity relations.

:func:`synthetic_sessions` draws sessions of item ids with two signals a recommender can exploit. A *collaborative*
signal: every item belongs to one of ``num_topics`` topics, and a session follows a topic (its current interest)
that changes now and then, so the items of the last few steps say which items come next. A *transitional* signal:
every item has one fixed successor (a random permutation over all items, so mostly of another topic), and with
probability ``transition`` the next item is the successor of the current one. Every other step draws an item of the
current topic, or, with probability ``noise``, any item. Sessions are left-padded with the id ``num_items`` (as
MQSA-TED's code does).

:func:`entity_sentences` draws "sentences" of characters without separators, as in Chinese text. Entities are
marked only by *what stands on their left*: a marker character ``m`` is followed by an entity of type ``m mod 2``
and length ``2 + m // 2``, made of ordinary characters drawn like everything else. The character just right of a
marker starts an entity; the one just left of it does not. A tagger that sees distances but not directions cannot
tell the two apart. :func:`relation_grid` turns the entities into the character-pair relation tags of a
W2NER-style grid (chapter 21): ``NONE``, ``NEXT`` (``(i, i + 1)``, both in one entity) and ``HEAD_TAIL`` of each
type (``(tail, head)``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "Sessions",
    "synthetic_sessions",
    "next_item_pairs",
    "RELATION_TAGS",
    "EntitySentences",
    "entity_sentences",
    "relation_grid",
]

RELATION_TAGS = ("NONE", "NEXT", "HEAD_TAIL_A", "HEAD_TAIL_B")


def _positive_int(name: str, value: object, where: str, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: {name} must be an int >= {low}, got {value!r}")


def _probability(name: str, value: object, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: {name} must be a number in [0, 1], got {value!r}")


class Sessions(NamedTuple):
    """``items (S, T)`` long, left-padded with ``num_items``; ``topics (S, T)`` the session's current topic at each
    step (``-1`` on padding); ``lengths (S,)``; ``item_topic (num_items,)`` each item's topic; ``successor
    (num_items,)`` each item's fixed successor; ``num_items``."""

    items: Tensor
    topics: Tensor
    lengths: Tensor
    item_topic: Tensor
    successor: Tensor
    num_items: int


def synthetic_sessions(
    num_sessions: int,
    num_items: int = 60,
    num_topics: int = 6,
    length: int = 20,
    min_length: int | None = None,
    transition: float = 0.3,
    noise: float = 0.3,
    drift: float = 0.1,
    seed: int = 0,
    world_seed: int = 0,
) -> Sessions:
    """Seeded sessions with a collaborative and a transitional signal (module docstring).

    Item ``i`` belongs to topic ``i mod num_topics``; the successor map is a random permutation drawn from
    ``world_seed`` (so train and test sessions drawn with different ``seed`` share one world). A session starts in a
    uniform topic with a uniform item of it; at each later step the topic changes to a uniform other one with
    probability ``drift``; the item is the successor of the previous item with probability ``transition``, else any
    item with probability ``noise``, else a uniform item of the current topic. Lengths are uniform in
    ``[min_length, length]`` (``min_length = length`` by default: no padding).

    Returns:
        :class:`Sessions` with ``items (num_sessions, length)``.
    """
    where = "synthetic_sessions"
    _positive_int("num_sessions", num_sessions, where)
    _positive_int("num_topics", num_topics, where)
    _positive_int("num_items", num_items, where, low=num_topics)
    _positive_int("length", length, where, low=2)
    min_length = length if min_length is None else min_length
    _positive_int("min_length", min_length, where, low=2)
    if min_length > length:
        raise ValueError(f"{where}: min_length must be <= length={length}, got {min_length}")
    for name, value in (("transition", transition), ("noise", noise), ("drift", drift)):
        _probability(name, value, where)
    if transition + noise > 1.0:
        raise ValueError(f"{where}: transition + noise must be <= 1, got {transition} + {noise}")
    world = torch.Generator().manual_seed(world_seed)
    successor = torch.randperm(num_items, generator=world)
    item_topic = torch.arange(num_items) % num_topics
    per_topic = num_items // num_topics  # topics 0 .. (num_items mod num_topics) - 1 have one item more
    gen = torch.Generator().manual_seed(seed)

    def topic_item(topic: Tensor) -> Tensor:  # a uniform item of each topic, (S,)
        size = per_topic + (topic < num_items % num_topics).long()
        return topic + num_topics * (torch.rand(topic.shape, generator=gen) * size).long().clamp(max=size - 1)

    items = torch.empty(num_sessions, length, dtype=torch.long)
    topics = torch.empty(num_sessions, length, dtype=torch.long)
    topic = torch.randint(num_topics, (num_sessions,), generator=gen)
    items[:, 0], topics[:, 0] = topic_item(topic), topic
    for t in range(1, length):
        change = torch.rand(num_sessions, generator=gen) < drift
        shift = torch.randint(1, max(num_topics, 2), (num_sessions,), generator=gen)
        topic = torch.where(change, (topic + shift) % num_topics, topic)
        u = torch.rand(num_sessions, generator=gen)
        anything = torch.randint(num_items, (num_sessions,), generator=gen)
        step = torch.where(u < transition, successor[items[:, t - 1]], topic_item(topic))
        items[:, t] = torch.where((u >= transition) & (u < transition + noise), anything, step)
        topics[:, t] = topic
    lengths = torch.randint(min_length, length + 1, (num_sessions,), generator=gen)
    pad = torch.arange(length)[None, :] < (length - lengths)[:, None]  # (S, T): left padding
    # keep each session's first `lengths` steps, shifted to the right end
    order = (torch.arange(length)[None, :] - (length - lengths)[:, None]) % length  # (S, T)
    items, topics = items.gather(1, order).masked_fill(pad, num_items), topics.gather(1, order).masked_fill(pad, -1)
    return Sessions(items, topics, lengths, item_topic, successor, num_items)


def next_item_pairs(items: Tensor, num_items: int) -> tuple[Tensor, Tensor]:
    """Inputs ``items[:, :-1]`` and targets ``items[:, 1:]`` ``(S, T - 1)`` each; a target is ``num_items``
    (padding, to be ignored) where the input or the target is padding."""
    if not isinstance(items, Tensor) or items.ndim != 2 or items.shape[1] < 2:
        raise ValueError(f"next_item_pairs: items must be (S, T) with T >= 2, got {getattr(items, 'shape', items)!r}")
    inputs, targets = items[:, :-1], items[:, 1:]
    return inputs, targets.masked_fill(inputs == num_items, num_items)


class EntitySentences(NamedTuple):
    """``chars (S, L)`` long; ``entities`` one list per sentence of ``(head, tail, type)`` (inclusive indices);
    ``grid (S, L, L)`` long relation tags (:data:`RELATION_TAGS`); ``vocab_size``; ``num_markers``. Characters
    ``0 .. num_markers - 1`` are the markers."""

    chars: Tensor
    entities: list[list[tuple[int, int, int]]]
    grid: Tensor
    vocab_size: int
    num_markers: int


def relation_grid(entities: list[list[tuple[int, int, int]]], length: int) -> Tensor:
    """The W2NER-style grid of :data:`RELATION_TAGS` for entities ``(head, tail, type)``: ``(S, L, L)`` long.

    ``grid[s, i, i + 1] = NEXT`` for consecutive characters of one entity (upper triangle) and ``grid[s, tail, head]
    = HEAD_TAIL_A`` or ``HEAD_TAIL_B`` by type (lower triangle or diagonal); ``NONE`` elsewhere.
    """
    _positive_int("length", length, "relation_grid")
    grid = torch.zeros(len(entities), length, length, dtype=torch.long)
    for s, spans in enumerate(entities):
        for head, tail, kind in spans:
            if not 0 <= head <= tail < length or kind not in (0, 1):
                raise ValueError(f"relation_grid: bad entity (head, tail, type)={(head, tail, kind)}, length {length}")
            for i in range(head, tail):
                grid[s, i, i + 1] = 1
            grid[s, tail, head] = 2 + kind
    return grid


def entity_sentences(
    num_sentences: int,
    length: int = 16,
    vocab_size: int = 12,
    num_entities: int = 2,
    seed: int = 0,
) -> EntitySentences:
    """Seeded sentences whose entities are known only by the marker on their left (module docstring).

    Characters ``0..3`` are markers (type ``m mod 2``, entity length ``2 + m // 2``); the rest are ordinary and
    uniform. Each sentence holds up to ``num_entities`` marker-plus-entity blocks at random, non-touching places
    (one ordinary character at least between blocks); the markers appear nowhere else.

    Returns:
        :class:`EntitySentences` with ``chars (num_sentences, length)`` and its grid.
    """
    where = "entity_sentences"
    num_markers = 4
    _positive_int("num_sentences", num_sentences, where)
    _positive_int("vocab_size", vocab_size, where, low=num_markers + 2)
    _positive_int("num_entities", num_entities, where)
    _positive_int("length", length, where, low=5 * num_entities)
    gen = torch.Generator().manual_seed(seed)
    chars = torch.randint(num_markers, vocab_size, (num_sentences, length), generator=gen)
    entities: list[list[tuple[int, int, int]]] = []
    for s in range(num_sentences):
        spans: list[tuple[int, int, int]] = []
        free = torch.ones(length, dtype=torch.bool)
        for _ in range(num_entities):
            marker = int(torch.randint(num_markers, (1,), generator=gen))
            size = 1 + 2 + marker // 2  # the marker and its entity
            starts = [p for p in range(length - size + 1) if free[max(p - 1, 0) : p + size + 1].all()]
            if not starts:
                break
            p = starts[int(torch.randint(len(starts), (1,), generator=gen))]
            chars[s, p] = marker
            free[p : p + size] = False
            spans.append((p + 1, p + size - 1, marker % 2))
        entities.append(sorted(spans))
    return EntitySentences(chars, entities, relation_grid(entities, length), vocab_size, num_markers)

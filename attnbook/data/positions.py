"""A seeded task whose answer depends on *relative* position: "which marker came last?" (chapter 05).

:func:`most_recent_marker` draws sequences of filler tokens with occasional marker tokens; the target at
every position is the identity of the most recent marker at or before it. Position 0 always holds a marker,
so every target is defined. Solving it needs recency -- how far back each marker is -- and nothing about
absolute positions, so a model trained on length ``L`` can in principle answer at any length. It is the
book's length-extrapolation probe for position schemes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["MarkerBatch", "most_recent_marker"]


class MarkerBatch(NamedTuple):
    """``tokens (N, L)`` in ``[0, num_fillers + num_markers)``; ``targets (N, L)``: marker ids ``< num_markers``."""

    tokens: Tensor
    targets: Tensor


def most_recent_marker(
    num: int,
    length: int,
    *,
    num_fillers: int = 16,
    num_markers: int = 8,
    marker_prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> MarkerBatch:
    """``num`` sequences of ``length`` tokens and, per position, the most recent marker seen so far.

    Tokens ``0 .. num_fillers - 1`` are fillers and ``num_fillers + m`` is marker ``m``; each position is a
    marker with probability ``marker_prob`` (position 0 always is), drawn uniformly. ``targets[n, t] = m``
    for the marker ``m`` at the largest position ``s <= t`` holding one.
    """
    for name, value in (("num", num), ("length", length), ("num_fillers", num_fillers), ("num_markers", num_markers)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not 0.0 < marker_prob <= 1.0:
        raise ValueError(f"marker_prob must be in (0, 1], got {marker_prob!r}")
    is_marker = torch.rand(num, length, generator=generator) < marker_prob  # (N, L)
    is_marker[:, 0] = True
    markers = torch.randint(num_markers, (num, length), generator=generator)  # (N, L)
    fillers = torch.randint(num_fillers, (num, length), generator=generator)  # (N, L)
    tokens = torch.where(is_marker, num_fillers + markers, fillers)  # (N, L)
    # index of the last marker at or before t: a running maximum of the marker positions
    where = torch.where(is_marker, torch.arange(length).expand(num, -1), torch.zeros_like(tokens))  # (N, L)
    last = torch.cummax(where, dim=1).values  # (N, L)
    targets = markers.gather(1, last)  # (N, L)
    return MarkerBatch(tokens, targets)

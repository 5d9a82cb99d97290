"""Generated "speech" and scenes for chapter 19: short sounds in silence, and objects to search among.

* :func:`spoken_symbols` -- an utterance of ``T = n w`` frames cut into ``n`` windows of ``w`` frames. Each window
  holds ``k`` distinct symbols of a vocabulary of ``V``; a symbol is "spoken" as a short burst of 1 to
  ``max_burst`` frames, ``amplitude * p_v + noise``, at a random place in its window; every other frame is
  silence, noise only. ``p_v`` is a fixed random unit vector per symbol (the same for every sample of a seed's
  vocabulary: ``vocabulary_seed``). The target of a window is the *set* of its symbols (multi-hot). The
  information is short and sits anywhere in the window: a reader that averages fixed stretches of frames dilutes
  it with silence, a reader that attends can pick the bursts out.
* :func:`search_scenes` -- scenes of ``N`` objects, each a feature vector, and a search cue: a noisy copy of one
  object's features, the target. The scanpath fixates objects in decreasing order of their similarity to the cue
  (plus optional noise) and stops at the target: objects that look like the cue are looked at first, no object
  twice, so the next fixation depends on the cue and on what has been fixated already.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["SpokenSymbols", "spoken_symbols", "SearchScenes", "search_scenes"]


class SpokenSymbols(NamedTuple):
    """``frames (S, n w, D)``; ``targets (S, n, V)`` multi-hot (float); ``symbols (S, n, k)`` the symbols of each
    window in time order; ``onsets (S, n, k)`` each burst's first frame inside its window; ``prototypes (V, D)``."""

    frames: Tensor
    targets: Tensor
    symbols: Tensor
    onsets: Tensor
    prototypes: Tensor


def _check(where: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {name} must be an int >= 1, got {value!r}")


def spoken_symbols(
    num_samples: int,
    num_windows: int = 4,
    window_size: int = 15,
    symbols_per_window: int = 3,
    num_symbols: int = 8,
    frame_dim: int = 16,
    max_burst: int = 2,
    amplitude: float = 1.0,
    noise: float = 0.5,
    seed: int = 0,
    vocabulary_seed: int = 1234,
) -> SpokenSymbols:
    """Generate ``num_samples`` utterances (seeded, deterministic; see the module docstring)."""
    _check(
        "spoken_symbols",
        num_samples=num_samples,
        num_windows=num_windows,
        window_size=window_size,
        symbols_per_window=symbols_per_window,
        num_symbols=num_symbols,
        frame_dim=frame_dim,
        max_burst=max_burst,
    )
    if symbols_per_window > num_symbols:
        raise ValueError(
            f"spoken_symbols: symbols_per_window={symbols_per_window} exceeds num_symbols={num_symbols} "
            "(the symbols of a window are distinct)"
        )
    if symbols_per_window * max_burst > window_size:
        raise ValueError(
            f"spoken_symbols: {symbols_per_window} bursts of up to {max_burst} frames do not fit in "
            f"window_size={window_size}"
        )
    vocab_gen = torch.Generator().manual_seed(vocabulary_seed)
    prototypes = torch.randn(num_symbols, frame_dim, generator=vocab_gen)
    prototypes = prototypes / prototypes.norm(dim=-1, keepdim=True)  # (V, D): unit vectors
    gen = torch.Generator().manual_seed(seed)
    S, n, w, k = num_samples, num_windows, window_size, symbols_per_window
    frames = noise * torch.randn(S, n, w, frame_dim, generator=gen)  # (S, n, w, D): silence everywhere
    symbols = torch.rand(S, n, num_symbols, generator=gen).argsort(dim=-1)[..., :k]  # (S, n, k): distinct
    lengths = torch.randint(1, max_burst + 1, (S, n, k), generator=gen)  # (S, n, k)
    # bursts do not overlap: place k slots of max_burst frames among w frames by drawing the gaps
    free = w - k * max_burst
    cuts = torch.rand(S, n, free + k, generator=gen).argsort(dim=-1)[..., :k].sort(dim=-1).values  # (S, n, k)
    onsets = cuts - torch.arange(k) + torch.arange(k) * max_burst  # (S, n, k): ascending, slots never overlap
    position = torch.arange(w)  # (w,)
    for j in range(k):
        inside = (position >= onsets[..., j, None]) & (position < (onsets + lengths)[..., j, None])  # (S, n, w)
        frames = frames + amplitude * inside[..., None] * prototypes[symbols[..., j]][:, :, None, :]
    targets = torch.zeros(S, n, num_symbols).scatter_(-1, symbols, 1.0)  # (S, n, V)
    return SpokenSymbols(frames.reshape(S, n * w, frame_dim), targets, symbols, onsets, prototypes)


class SearchScenes(NamedTuple):
    """``objects (S, N, F)``; ``cue (S, F)`` the target's features plus noise; ``target_index (S,)``;
    ``scanpath (S, N + 1)`` fixated object indices in order, then ``N`` ("end") repeated; ``length (S,)`` the
    number of fixations (the last one is the target)."""

    objects: Tensor
    cue: Tensor
    target_index: Tensor
    scanpath: Tensor
    length: Tensor


def search_scenes(
    num_samples: int,
    num_objects: int = 8,
    feature_dim: int = 8,
    cue_noise: float = 1.0,
    jitter: float = 0.0,
    seed: int = 0,
) -> SearchScenes:
    """Generate ``num_samples`` search scenes with their scanpaths (seeded; see the module docstring).

    The cue is ``o_target + cue_noise * noise``; the viewer's priority for object ``i`` is
    ``cos(o_i, cue) + jitter * noise_i``; objects are fixated in decreasing priority until the target is reached.
    """
    _check("search_scenes", num_samples=num_samples, num_objects=num_objects, feature_dim=feature_dim)
    gen = torch.Generator().manual_seed(seed)
    S, N = num_samples, num_objects
    objects = torch.randn(S, N, feature_dim, generator=gen)  # (S, N, F)
    target_index = torch.randint(0, N, (S,), generator=gen)  # (S,)
    cue = objects[torch.arange(S), target_index] + cue_noise * torch.randn(S, feature_dim, generator=gen)  # (S, F)
    similarity = torch.nn.functional.cosine_similarity(objects, cue[:, None], dim=-1)  # (S, N)
    priority = similarity + jitter * torch.randn(S, N, generator=gen)
    order = priority.argsort(dim=-1, descending=True)  # (S, N)
    length = (order == target_index[:, None]).float().argmax(dim=-1) + 1  # (S,): fixations up to the target
    step = torch.arange(N + 1)
    padded = torch.cat([order, torch.full((S, 1), N)], dim=1)  # (S, N + 1)
    scanpath = torch.where(step < length[:, None], padded, N)  # (S, N + 1): then "end"
    return SearchScenes(objects, cue, target_index, scanpath, length)

"""Seeded sequence-to-sequence and sentence-pair tasks for chapter 04 (the Transformer).

* :class:`SymbolFramesTask` -- text-to-speech in miniature :cite:`li2018neural`: a sequence of symbols
  ("phonemes") becomes a sequence of frames of a synthetic "spectrogram". Symbol ``s`` lasts a fixed number
  of frames ``duration[s]`` and its ``k``-th frame is ``spectrum[s] + ramp[k]``, so the target is a
  deterministic function of the input, the output is longer than the input by a symbol-dependent amount,
  and the true monotonic alignment (which symbol each frame comes from) is known exactly. A model must
  also say when to stop: that is the stop flag on the last frame.
* :func:`make_pair_task` -- pairs of token sequences for bi- vs cross-encoder scoring :cite:`liu2021transencoder`:
  a pair is positive when ``b`` is a reordering of ``a`` and negative when one token of that reordering was
  replaced, so the label hinges on a token-by-token comparison of the two sides.

Both are pure functions of their seed; nothing is read from disk.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SymbolFramesTask", "make_pair_task"]


class SymbolFramesTask:
    """The symbols -> frames task. Symbol ids are ``1..num_symbols`` (``0`` is padding).

    Args:
        num_symbols: size of the symbol alphabet.
        frame_dim: features per frame ("mel bins").
        min_len, max_len: range of input lengths (symbols per sequence).
        max_duration: each symbol lasts between 1 and ``max_duration`` frames (fixed per symbol).
        seed: fixes the spectra, ramps and durations (the "voice"); batches take their own generator.
    """

    def __init__(
        self,
        num_symbols: int = 10,
        frame_dim: int = 8,
        min_len: int = 3,
        max_len: int = 8,
        max_duration: int = 3,
        seed: int = 0,
    ) -> None:
        if num_symbols < 2 or frame_dim <= 0 or max_duration <= 0:
            raise ValueError(
                f"need num_symbols >= 2, frame_dim > 0, max_duration > 0, got {num_symbols}, {frame_dim}, "
                f"{max_duration}"
            )
        if not 1 <= min_len <= max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
        self.num_symbols, self.frame_dim = num_symbols, frame_dim
        self.min_len, self.max_len, self.max_duration = min_len, max_len, max_duration
        g = torch.Generator().manual_seed(seed)
        spectrum = torch.randn(num_symbols + 1, frame_dim, generator=g)  # (V + 1, F); row 0 unused
        self.spectrum = spectrum.clone()
        self.spectrum[0] = 0.0
        self.ramp = 0.5 * torch.randn(max_duration, frame_dim, generator=g)  # (max_duration, F)
        self.duration = torch.randint(1, max_duration + 1, (num_symbols + 1,), generator=g)  # (V + 1,)
        self.duration[0] = 0

    @property
    def vocab_size(self) -> int:
        """Embedding rows a model needs: the symbols plus padding."""
        return self.num_symbols + 1

    @property
    def max_frames(self) -> int:
        return self.max_len * self.max_duration

    def render(self, symbols: Tensor) -> tuple[Tensor, Tensor]:
        """Frames ``(T, F)`` and alignment ``(T,)`` (index of the source symbol) of one unpadded ``(S,)`` sequence."""
        if symbols.ndim != 1 or symbols.numel() == 0:
            raise ValueError(f"render: symbols must be a non-empty 1-D tensor, got {tuple(symbols.shape)}")
        if int(symbols.min()) < 1 or int(symbols.max()) > self.num_symbols:
            raise ValueError(f"render: symbol ids must lie in 1..{self.num_symbols}")
        durations = self.duration[symbols]  # (S,)
        alignment = torch.repeat_interleave(torch.arange(symbols.numel()), durations)  # (T,)
        starts = torch.cumsum(durations, 0) - durations  # (S,)
        within = torch.arange(alignment.numel()) - starts[alignment]  # (T,) frame index inside its symbol
        frames = self.spectrum[symbols[alignment]] + self.ramp[within]  # (T, F)
        return frames, alignment

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A padded batch: ``symbols (B, S)`` long, ``symbol_mask (B, S)``, ``frames (B, T, F)``,
        ``frame_mask (B, T)`` and ``alignment (B, T)`` (source index per frame, ``-1`` on padding)."""
        if batch_size <= 0:
            raise ValueError(f"sample: batch_size must be positive, got {batch_size}")
        lengths = torch.randint(self.min_len, self.max_len + 1, (batch_size,), generator=generator)
        seqs = [torch.randint(1, self.num_symbols + 1, (int(n),), generator=generator) for n in lengths]
        rendered = [self.render(s) for s in seqs]
        S = int(lengths.max())
        T = max(f.shape[0] for f, _ in rendered)
        symbols = torch.zeros(batch_size, S, dtype=torch.long)
        frames = torch.zeros(batch_size, T, self.frame_dim)
        alignment = torch.full((batch_size, T), -1, dtype=torch.long)
        for i, (s, (f, a)) in enumerate(zip(seqs, rendered, strict=True)):
            symbols[i, : s.numel()] = s
            frames[i, : f.shape[0]] = f
            alignment[i, : a.numel()] = a
        return {
            "symbols": symbols,
            "symbol_mask": symbols != 0,
            "frames": frames,
            "frame_mask": alignment >= 0,
            "alignment": alignment,
        }


def make_pair_task(
    num_pairs: int, seq_len: int = 8, vocab_size: int = 32, *, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Sentence pairs ``a, b (N, seq_len)`` (ids ``1..vocab_size - 1``) and labels ``(N,)`` in {0., 1.}.

    Positive pairs: ``b`` is a random reordering of ``a`` (a "paraphrase": same words, other order).
    Negative pairs: the same, with one position replaced by a word that does not occur in ``a``. Balanced
    and shuffled. Deciding the label means checking every word of ``b`` against the words of ``a``.
    """
    if num_pairs <= 0 or seq_len <= 0 or vocab_size < seq_len + 2:
        raise ValueError(
            f"need num_pairs > 0, seq_len > 0 and vocab_size >= seq_len + 2, got {num_pairs}, {seq_len}, {vocab_size}"
        )
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(1, vocab_size, (num_pairs, seq_len), generator=g)  # (N, L)
    order = torch.argsort(torch.rand(num_pairs, seq_len, generator=g), dim=1)  # (N, L): a random permutation
    b = torch.gather(a, 1, order)  # (N, L)
    label = (torch.arange(num_pairs) % 2 == 0).float()[torch.randperm(num_pairs, generator=g)]  # (N,)
    where = torch.randint(0, seq_len, (num_pairs,), generator=g)  # (N,)
    present = torch.zeros(num_pairs, vocab_size, dtype=torch.bool)
    present.scatter_(1, a, True)
    present[:, 0] = True  # never the padding id
    # a uniformly random absent word per row: random scores, present words pushed below every absent one
    scores = torch.rand(num_pairs, vocab_size, generator=g).masked_fill(present, -1.0)
    new = scores.argmax(dim=1)  # (N,)
    neg = label == 0
    b[neg, where[neg]] = new[neg]
    return a, b, label

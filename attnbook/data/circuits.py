"""Generated prompts for chapter 26: induction, comparison and memorised facts in one small vocabulary.

Every prompt has the same length ``T = seq_len`` and is answered at its **last position**, so one small causal
model can be trained on a mixture of the three tasks and every circuit is read at the same place:

* **induction** (:func:`induction_prompts`): ``[IND] r .. r a_1 .. a_c r .. r a_1 .. a_{c-1}``, answer ``a_c``: a
  segment of ``c = copy_len`` symbols appears at a random place among distinct random symbols, and the prompt ends
  with its first ``c - 1`` symbols again. The gap between the copies varies, so no fixed offset finds the answer: the
  model must *find the earlier copy of the current token and read the token after it* (``... A B ... A -> B``).
  Every position of the second copy has such an answer, and training uses them all. The **corrupted** prompt
  redraws everything before the second copy from the other symbols: nothing earlier predicts the answer.
* **comparison** (:func:`comparison_prompts`): ``[PAD] ... [CMP] x y``, answer ``YES`` if ``x > y`` else ``NO``
  (``x != y``, symbols read as the numbers ``0 .. S-1``). The corrupted prompt repeats ``x`` (``[CMP] x x``), a
  question with no comparison in it.
* **facts** (:func:`fact_prompts`): ``[PAD] ... s [ASK]``, answer ``facts[s]``, a symbol the model must memorise for
  each of a few subject tokens ``s`` (:func:`make_facts`). The corrupted prompt replaces ``s`` by ``[PAD]``.

:class:`CircuitVocab` lays the token ids out; :func:`task_mixture` draws a shuffled training batch of all three.
Targets are ``-100`` (PyTorch's ignore index) wherever a position has no answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from attnbook.models.pointer import IGNORE_INDEX

__all__ = [
    "CircuitVocab",
    "CircuitPrompts",
    "make_facts",
    "induction_prompts",
    "comparison_prompts",
    "fact_prompts",
    "task_mixture",
]


def _check_int(where: str, name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: {name} must be an int >= {low}, got {value!r}")
    return value


@dataclass(frozen=True)
class CircuitVocab:
    """Token ids: ``num_symbols`` symbols ``0 .. S-1`` (the induction tokens, the numbers compared, the facts'
    answers), then ``num_subjects`` subject tokens, then ``YES, NO, PAD, IND, CMP, ASK``. Prompts have ``seq_len``
    tokens; an induction segment has ``copy_len`` symbols."""

    num_symbols: int = 16
    num_subjects: int = 8
    seq_len: int = 12
    copy_len: int = 4

    def __post_init__(self) -> None:
        where = "CircuitVocab"
        _check_int(where, "num_symbols", self.num_symbols, 2)
        _check_int(where, "num_subjects", self.num_subjects, 1)
        _check_int(where, "copy_len", self.copy_len, 2)
        _check_int(where, "seq_len", self.seq_len, 3)
        first = self.seq_len - self.copy_len  # [IND] and the symbols before the second copy
        if first < self.copy_len + 1 or first + self.copy_len > self.num_symbols:
            raise ValueError(
                f"{where}: need copy_len + 1 <= seq_len - copy_len <= num_symbols - copy_len (distinct symbols before "
                f"the second copy, and as many others for its corruption), got seq_len={self.seq_len}, "
                f"copy_len={self.copy_len}, num_symbols={self.num_symbols}"
            )

    @property
    def first_subject(self) -> int:
        return self.num_symbols

    @property
    def yes(self) -> int:
        return self.num_symbols + self.num_subjects

    @property
    def no(self) -> int:
        return self.yes + 1

    @property
    def pad(self) -> int:
        return self.yes + 2

    @property
    def ind(self) -> int:
        return self.yes + 3

    @property
    def cmp(self) -> int:
        return self.yes + 4

    @property
    def ask(self) -> int:
        return self.yes + 5

    @property
    def size(self) -> int:
        """Number of token ids ``V``."""
        return self.yes + 6


class CircuitPrompts(NamedTuple):
    """``tokens (N, T)`` long; ``targets (N, T)`` long, ``-100`` where a position has no answer; ``answer (N,)`` the
    target of the last position."""

    tokens: Tensor
    targets: Tensor
    answer: Tensor


def _generator(seed: int | torch.Generator, where: str) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    _check_int(where, "seed", seed, 0)
    return torch.Generator().manual_seed(seed)


def make_facts(vocab: CircuitVocab, seed: int = 0) -> Tensor:
    """A random fact table ``(num_subjects,)``: subject ``i`` (token ``vocab.first_subject + i``) answers symbol
    ``facts[i]``; distinct answers where there are enough symbols."""
    g = _generator(seed, "make_facts")
    order = torch.randperm(vocab.num_symbols, generator=g)
    return order[torch.arange(vocab.num_subjects) % vocab.num_symbols]


def induction_prompts(
    num: int, vocab: CircuitVocab, *, corrupt: bool = False, seed: int | torch.Generator = 0
) -> CircuitPrompts:
    """Induction prompts (see the module): targets ``a_{j+1}`` on the second copy, ``-100`` elsewhere.
    ``corrupt=True`` draws everything before the second copy from the symbols outside the segment."""
    where = "induction_prompts"
    _check_int(where, "num", num)
    g = _generator(seed, where)
    c, T = vocab.copy_len, vocab.seq_len
    n_first = T - c  # symbols between [IND] and the second copy
    order = torch.rand(num, vocab.num_symbols, generator=g).argsort(-1)  # (N, S): a random order of the symbols
    first = order[:, :n_first]  # (N, T - c) distinct symbols
    start = torch.randint(n_first - c + 1, (num, 1), generator=g)  # where the segment sits among them
    segment = first.gather(1, start + torch.arange(c))  # (N, c): a_1 .. a_c
    if corrupt:
        outside = torch.rand(num, vocab.num_symbols, generator=g)
        outside.scatter_(1, segment, 2.0)  # the segment's symbols sort last, out of the first T - c
        first = outside.argsort(-1)[:, :n_first]
    tokens = torch.cat([torch.full((num, 1), vocab.ind), first, segment[:, : c - 1]], dim=1)  # (N, T)
    targets = torch.full((num, T), IGNORE_INDEX)
    targets[:, T - c + 1 :] = segment[:, 1:]  # the position of a_j in the second copy answers a_{j+1}
    return CircuitPrompts(tokens, targets, targets[:, -1].clone())


def comparison_prompts(
    num: int, vocab: CircuitVocab, *, corrupt: bool = False, seed: int | torch.Generator = 0
) -> CircuitPrompts:
    """``[PAD] .. [CMP] x y`` with ``x != y``; answer ``YES`` when ``x > y``, else ``NO``. ``corrupt=True`` writes
    ``[CMP] x x`` (the answer stays the clean prompt's)."""
    where = "comparison_prompts"
    _check_int(where, "num", num)
    g = _generator(seed, where)
    x = torch.randint(vocab.num_symbols, (num,), generator=g)
    y = (x + torch.randint(1, vocab.num_symbols, (num,), generator=g)) % vocab.num_symbols  # y != x
    answer = torch.where(x > y, vocab.yes, vocab.no)
    tokens = torch.full((num, vocab.seq_len), vocab.pad)
    tokens[:, -3] = vocab.cmp
    tokens[:, -2] = x
    tokens[:, -1] = x if corrupt else y
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[:, -1] = answer
    return CircuitPrompts(tokens, targets, answer)


def fact_prompts(subjects: Tensor, vocab: CircuitVocab, facts: Tensor, *, corrupt: bool = False) -> CircuitPrompts:
    """``[PAD] .. s [ASK]`` for subject indices ``subjects (N,)`` (``0 .. num_subjects-1``); answer ``facts[s]``.
    ``corrupt=True`` puts ``[PAD]`` where the subject was."""
    where = "fact_prompts"
    if not isinstance(subjects, Tensor) or subjects.ndim != 1 or subjects.dtype != torch.long:
        raise ValueError(f"{where}: subjects must be a 1-D long tensor, got {getattr(subjects, 'shape', subjects)!r}")
    if not isinstance(facts, Tensor) or facts.shape != (vocab.num_subjects,):
        raise ValueError(
            f"{where}: facts must have shape ({vocab.num_subjects},), got {tuple(getattr(facts, 'shape', ()))}"
        )
    if subjects.numel() and (subjects.min() < 0 or subjects.max() >= vocab.num_subjects):
        raise ValueError(f"{where}: subjects must lie in [0, {vocab.num_subjects}), got {subjects.tolist()}")
    tokens = torch.full((subjects.numel(), vocab.seq_len), vocab.pad)
    tokens[:, -2] = vocab.pad if corrupt else vocab.first_subject + subjects
    tokens[:, -1] = vocab.ask
    answer = facts[subjects]
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[:, -1] = answer
    return CircuitPrompts(tokens, targets, answer)


def task_mixture(num: int, vocab: CircuitVocab, facts: Tensor, *, seed: int | torch.Generator = 0) -> CircuitPrompts:
    """A shuffled batch of ``num`` prompts, a third of each task (the remainder goes to induction)."""
    where = "task_mixture"
    _check_int(where, "num", num, 3)
    g = _generator(seed, where)
    third = num // 3
    parts = [
        induction_prompts(num - 2 * third, vocab, seed=g),
        comparison_prompts(third, vocab, seed=g),
        fact_prompts(torch.randint(vocab.num_subjects, (third,), generator=g), vocab, facts),
    ]
    order = torch.randperm(num, generator=g)
    tokens, targets, answer = (torch.cat([getattr(p, f) for p in parts])[order] for f in CircuitPrompts._fields)
    return CircuitPrompts(tokens, targets, answer)

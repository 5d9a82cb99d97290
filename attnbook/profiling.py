"""Measuring what the book claims: peak tensor memory and median time of one call.

The book never states a cost it did not measure. Two small tools do the measuring:

- :class:`PeakMemory`, a :class:`~torch.utils._python_dispatch.TorchDispatchMode` that sees every tensor each
  operator creates and frees inside a ``with`` block and records the peak of the bytes alive. It counts
  storages, not tensors (a view costs nothing), and ignores the inputs' storages. It is deterministic on any
  device, so a chapter can ``assert`` on it; it does not see memory a fused kernel allocates internally
  (workspace), which is why chapters that compare against a fused kernel say so.
- :func:`time_call`, the median wall time of a call over repeats, with its spread (min, max), after warm-up;
  :func:`time_calls` times several calls in interleaved rounds, so that a shared machine's changing load
  hits all of them alike when they are compared.

Chapters 03, 05 and 07 derive their cost plots with these.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["PeakMemory", "Timing", "peak_memory", "time_call", "time_calls"]


class PeakMemory(TorchDispatchMode):
    """Peak bytes of the tensors created (and not yet freed) inside the ``with`` block.

    Example::

        with PeakMemory() as mem:
            scaled_dot_product_attention(q, k, v, backend="manual")
        mem.peak  # bytes
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage address -> [bytes, number of live tensors using it]
        self.current = 0
        self.peak = 0

    def _release(self, address: int) -> None:
        entry = self.live.get(address)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[address]

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            address = t.untyped_storage().data_ptr()
            if address in self.live:  # a view of something created in the block
                self.live[address][1] += 1
            elif address in inputs:  # a view of (or in-place op on) an input: no new memory
                continue
            else:
                self.live[address] = [t.untyped_storage().nbytes(), 1]
                self.current += self.live[address][0]
                self.peak = max(self.peak, self.current)
            weakref.finalize(t, self._release, address)
        return out


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes of the tensors ``fn()`` creates while it runs (see :class:`PeakMemory`)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    with PeakMemory() as mem:
        fn()
    return mem.peak


@dataclass(frozen=True)
class Timing:
    """Wall times of repeated calls, in seconds: the median and the spread."""

    median: float
    low: float
    high: float
    repeats: int

    def __str__(self) -> str:
        return f"{self.median * 1e3:.3g} ms (range {self.low * 1e3:.3g}-{self.high * 1e3:.3g}, n={self.repeats})"


def time_call(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> Timing:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones.

    On a GPU the device is synchronised around each call so that the time covers the work, not the launch.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), min(times), max(times), repeats)


def time_calls(calls: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1) -> dict[str, Timing]:
    """Median wall time of each of several calls, timed in interleaved rounds (chapter 07).

    Each call is warmed up ``warmup`` times; then each of ``repeats`` rounds times every call once (with
    :func:`time_call`), so that a load that comes and goes on a shared machine slows all of them alike and
    their ratio stays fair. Returns ``{name: Timing}`` in the order of ``calls``.
    """
    if not isinstance(calls, dict) or not calls:
        raise TypeError(f"calls must be a non-empty dict of name -> callable, got {type(calls).__name__}")
    for name, fn in calls.items():
        if not callable(fn):
            raise TypeError(f"calls[{name!r}] must be callable, got {type(fn).__name__}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            times[name].append(time_call(fn, repeats=1, warmup=0).median)
    return {name: Timing(statistics.median(t), min(t), max(t), repeats) for name, t in times.items()}

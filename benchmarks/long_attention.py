"""Benchmark: time and peak memory of attention mechanisms for long inputs, against the sequence length n.

For every mechanism of the registry ``MECHANISMS`` (a name -> ``fn(q, k, v) -> output`` on tensors of shape
``(B, H, n, d)``) and every length n, it measures

- the wall time of one call: median over ``--repeats`` calls after a warm-up, with the fastest and slowest,
  the mechanisms timed in interleaved rounds so that a shared machine's changing load hits all alike
  (:func:`attnbook.profiling.time_calls`);
- the peak memory of the tensors the call creates (:func:`attnbook.profiling.peak_memory`, a dispatcher-level
  count, deterministic on any device; it does not see a fused kernel's internal workspace);

then fits the log-log exponents ``time ~ n^a`` and ``memory ~ n^b`` over the lengths from ``--fit-from`` on,
and extrapolates from the fit the longest n whose peak memory stays within ``--memory-budget-gib``. It prints
a table and, with ``--markdown PATH``, writes it as Markdown for the book.

Chapter 07 wrote the first three mechanisms (naive, tiled, SDPA), chapter 08 the local window, chapter 09
axial attention and Combiner, chapter 10 routing; a chapter adds its mechanism with a function in
``MECHANISMS`` and its theoretical exponents in ``THEORY``.

Run from the repository root::

    python benchmarks/long_attention.py                                   # n = 256 ... 4096, all mechanisms
    python benchmarks/long_attention.py --lengths 512 1024 2048 --mechanisms tiled sdpa --markdown out.md
    python benchmarks/long_attention.py --backward                        # forward + backward

A (mechanism, n) whose memory, extrapolated from the lengths measured so far, would exceed
``--memory-budget-gib`` is skipped (shown as "-"). This is a script, not a test: timings on a shared machine are
noisy, so read them; the book's chapters assert what they claim on their own, smaller measurements.
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attnbook.attention.axial import axial_attention_2d
from attnbook.attention.factorised import combiner_attention
from attnbook.attention.functional import scaled_dot_product_attention
from attnbook.attention.local import local_attention
from attnbook.attention.routing import sqrt_routing_attention
from attnbook.attention.tiled import tiled_attention
from attnbook.profiling import Timing, peak_memory, time_calls

Mechanism = Callable[[Tensor, Tensor, Tensor], Tensor]


def naive(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The definition with the ``(B, H, n, n)`` scores and weights materialised (attnbook's manual path)."""
    return scaled_dot_product_attention(q, k, v, backend="manual")


def tiled(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Chapter 07's tiled attention in PyTorch operations, blocks of 128 queries x 128 keys."""
    return tiled_attention(q, k, v, block_q=128, block_k=128)


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """PyTorch's fused kernel (flash / memory-efficient on GPU, a tiled C++ kernel on CPU)."""
    return F.scaled_dot_product_attention(q, k, v)


def local(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Chapter 08's causal sliding window of 128 keys, computed in blocks (``O(n w)``)."""
    return local_attention(q, k, v, window_size=128)


def axial(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Chapter 09's axial attention: the mean of row and column attention on the most nearly square grid."""
    return axial_attention_2d(q, k, v)


def combiner(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Chapter 09's Combiner (fixed segments of about ``sqrt(n)``: own segment in full, summaries of the rest)."""
    return combiner_attention(q, k, v)


def routing(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Chapter 10's routing attention with ``sqrt(n)`` k-means clusters shared by queries and keys."""
    return sqrt_routing_attention(q, k, v)


#: name -> fn(q, k, v) on (B, H, n, d) tensors. Add a mechanism here to put it in the table.
MECHANISMS: dict[str, Mechanism] = {
    "naive": naive,
    "tiled": tiled,
    "sdpa": sdpa,
    "local": local,
    "axial": axial,
    "combiner": combiner,
    "routing": routing,
}

#: name -> theoretical (memory exponent, time exponent) in n at fixed d, printed beside the fitted ones.
THEORY: dict[str, tuple[float, float]] = {
    "naive": (2.0, 2.0),
    "tiled": (1.0, 2.0),
    "sdpa": (1.0, 2.0),
    "local": (1.0, 1.0),
    "axial": (1.0, 1.5),  # each axis runs through the fused kernel, whose scores the memory count does not see
    "combiner": (1.5, 1.5),
    "routing": (1.5, 1.5),
}


@dataclass
class Measurement:
    timing: Timing
    peak_bytes: int


@dataclass
class Fit:
    memory_exponent: float
    time_exponent: float
    longest_n_in_budget: int | None  # extrapolated from the memory fit; None without a fit


def fit_exponent(lengths: list[int], values: list[float]) -> float:
    """Slope of ``log(value)`` against ``log(n)``: the exponent ``a`` of ``value ~ n^a``."""
    if len(lengths) < 2:
        return math.nan
    return float(np.polyfit(np.log(lengths), np.log(values), 1)[0])


def extrapolate_memory(lengths: list[int], peaks: list[int], n: int) -> float:
    """Peak bytes at ``n`` predicted from the power law through the last two measured points."""
    if not peaks:
        return 0.0
    if len(peaks) == 1:
        return peaks[0] * (n / lengths[0]) ** 2  # no slope yet: assume the worst, quadratic
    slope = math.log(peaks[-1] / peaks[-2]) / math.log(lengths[-1] / lengths[-2])
    return peaks[-1] * (n / lengths[-1]) ** max(slope, 0.0)


def make_call(fn: Mechanism, q: Tensor, k: Tensor, v: Tensor, backward: bool) -> Callable[[], None]:
    """One call of the mechanism: the forward pass (no autograd graph), or forward + backward."""
    if backward:
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))

        def call() -> None:
            torch.autograd.grad(fn(q, k, v).sum(), (q, k, v))

    else:

        def call() -> None:
            with torch.no_grad():
                fn(q, k, v)

    return call


def run(
    mechanisms: dict[str, Mechanism],
    lengths: list[int],
    *,
    batch: int = 1,
    heads: int = 8,
    head_dim: int = 64,
    backward: bool = False,
    repeats: int = 5,
    warmup: int = 1,
    memory_budget_gib: float = 8.0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, dict[int, Measurement]]:
    """Measure every mechanism at every length; a length whose extrapolated memory is over budget is skipped.

    Peak memory is measured once per (mechanism, n); the times of the mechanisms at one n are taken in
    interleaved rounds (:func:`attnbook.profiling.time_calls`).
    """
    results: dict[str, dict[int, Measurement]] = {name: {} for name in mechanisms}
    gen = torch.Generator(device=device).manual_seed(0)
    budget = memory_budget_gib * 2**30
    for n in lengths:
        shape = (batch, heads, n, head_dim)
        q, k, v = (torch.randn(shape, generator=gen, device=device) for _ in range(3))  # (B, H, n, d)
        calls, peaks = {}, {}
        for name, fn in mechanisms.items():
            done = results[name]
            if extrapolate_memory(list(done), [m.peak_bytes for m in done.values()], n) > budget:
                continue
            calls[name] = make_call(fn, q, k, v, backward)
            peaks[name] = peak_memory(calls[name])
        for name, timing in time_calls(calls, repeats=repeats, warmup=warmup).items():
            results[name][n] = Measurement(timing, peaks[name])
            if progress:
                print(f"# n={n:>6} {name:>8}: {timing}, {peaks[name] / 2**20:.1f} MiB", flush=True)
    return results


def fit(results: dict[str, dict[int, Measurement]], fit_from: int, memory_budget_gib: float) -> dict[str, Fit]:
    """Fitted exponents over the lengths >= ``fit_from`` and the longest n within the memory budget."""
    fits = {}
    for name, by_n in results.items():
        ns = [n for n in by_n if n >= fit_from]
        mem_exp = fit_exponent(ns, [by_n[n].peak_bytes for n in ns])
        time_exp = fit_exponent(ns, [by_n[n].timing.median for n in ns])
        longest = None
        if ns and math.isfinite(mem_exp) and mem_exp > 0:
            last = ns[-1]
            longest = int(last * (memory_budget_gib * 2**30 / by_n[last].peak_bytes) ** (1 / mem_exp))
        fits[name] = Fit(mem_exp, time_exp, longest)
    return fits


def table_rows(results: dict[str, dict[int, Measurement]], lengths: list[int]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per n, time (median [min-max] ms) and peak MiB of every mechanism."""
    header = ["n"]
    for name in results:
        header += [f"{name} ms (median [min-max])", f"{name} MiB"]
    rows = []
    for n in lengths:
        row = [str(n)]
        for by_n in results.values():
            if n in by_n:
                t = by_n[n].timing
                spread = f"{t.median * 1e3:.3g} [{t.low * 1e3:.3g}-{t.high * 1e3:.3g}]"
                row += [spread, f"{by_n[n].peak_bytes / 2**20:.1f}"]
            else:
                row += ["-", "-"]
        rows.append(row)
    return header, rows


def fit_rows(
    fits: dict[str, Fit], results: dict[str, dict[int, Measurement]], reference: str | None
) -> tuple[list[str], list[list[str]]]:
    header = ["mechanism", "memory exponent (theory)", "time exponent (theory)", "longest n in budget (extrapolated)"]
    if reference:
        header.append(f"time / {reference} at the largest common n")
    rows = []
    for name, f in fits.items():
        theory = THEORY.get(name)
        mem_theory = f" ({theory[0]:g})" if theory else ""
        time_theory = f" ({theory[1]:g})" if theory else ""
        row = [name, f"{f.memory_exponent:.2f}{mem_theory}", f"{f.time_exponent:.2f}{time_theory}"]
        row.append(f"{f.longest_n_in_budget:,}" if f.longest_n_in_budget else "-")
        if reference:
            common = sorted(set(results[name]) & set(results[reference]))
            if common:
                n = common[-1]
                ratio = results[name][n].timing.median / results[reference][n].timing.median
                row.append(f"{ratio:.2f} (n={n})")
            else:
                row.append("-")
        rows.append(row)
    return header, rows


def format_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def format_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--mechanisms", nargs="+", default=list(MECHANISMS), choices=list(MECHANISMS))
    parser.add_argument("--batch", type=int, default=1, help="batch size B (default 1)")
    parser.add_argument("--heads", type=int, default=8, help="number of heads H (default 8)")
    parser.add_argument("--head-dim", type=int, default=64, help="head dimension d (default 64)")
    parser.add_argument("--backward", action="store_true", help="time forward + backward instead of forward")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per cell (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--fit-from", type=int, default=None, help="fit over n >= this (default: the 2nd length)")
    parser.add_argument("--memory-budget-gib", type=float, default=8.0, help="skip cells predicted above (8)")
    parser.add_argument("--reference", default="sdpa", help="mechanism the times are compared with (sdpa)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown here")
    args = parser.parse_args(argv)
    if sorted(args.lengths) != args.lengths or len(set(args.lengths)) != len(args.lengths) or args.lengths[0] < 1:
        parser.error(f"--lengths must be increasing positive ints, got {args.lengths}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    lengths = args.lengths
    fit_from = args.fit_from if args.fit_from is not None else lengths[min(1, len(lengths) - 1)]
    mechanisms = {name: MECHANISMS[name] for name in args.mechanisms}
    reference = args.reference if args.reference in mechanisms else None
    setup = (
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {args.device}, "
        f"threads {torch.get_num_threads()}, float32, B={args.batch}, H={args.heads}, d={args.head_dim}, "
        f"{'forward + backward' if args.backward else 'forward'}; time: median [min-max] of {args.repeats} "
        f"interleaved calls after {args.warmup} warm-up; "
        "memory: peak of the tensors created (attnbook.profiling.peak_memory); "
        f"exponents fitted over n >= {fit_from}; memory budget {args.memory_budget_gib:g} GiB"
    )
    print("# " + shlex.join([sys.executable, *sys.argv]))
    print("# " + setup)
    results = run(
        mechanisms,
        lengths,
        batch=args.batch,
        heads=args.heads,
        head_dim=args.head_dim,
        backward=args.backward,
        repeats=args.repeats,
        warmup=args.warmup,
        memory_budget_gib=args.memory_budget_gib,
        device=args.device,
    )
    fits = fit(results, fit_from, args.memory_budget_gib)
    tables = [table_rows(results, lengths), fit_rows(fits, results, reference)]
    for header, rows in tables:
        print()
        print(format_text(header, rows))
    if args.markdown is not None:
        text = [f"<!-- generated by: {shlex.join(['python', 'benchmarks/long_attention.py', *sys.argv[1:]])} -->"]
        text.append(f"Setup: {setup}.")
        text += [format_markdown(header, rows) for header, rows in tables]
        args.markdown.write_text("\n\n".join(text) + "\n", encoding="utf-8")
        print(f"\n# wrote {args.markdown}")


if __name__ == "__main__":
    main()

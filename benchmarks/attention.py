"""Benchmark: attnbook's scaled dot-product attention against PyTorch's own kernel.

Prints a table of the median time of ``torch.nn.functional.scaled_dot_product_attention`` (SDPA) and of
attnbook's fused and manual paths, with their ratios to SDPA, float32, causal and not, for sequence
lengths ``n = 128, 256, ..., 4096``. The fused path only validates its inputs before calling SDPA, so its
ratio should stay at or below 1.05; the manual path materialises the ``(B, H, n, n)`` logits and weights.

Run from the repository root::

    python benchmarks/attention.py                      # n = 128 ... 4096
    python benchmarks/attention.py --max-n 512 --threads 2

This is a script, not a test: timings on a shared machine are noisy, so read them, don't assert them.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from attnbook.attention.functional import scaled_dot_product_attention


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-n", type=int, default=128, help="shortest sequence length (default 128)")
    parser.add_argument("--max-n", type=int, default=4096, help="longest sequence length, doubling (default 4096)")
    parser.add_argument("--batch", type=int, default=1, help="batch size B (default 1)")
    parser.add_argument("--heads", type=int, default=8, help="number of heads H (default 8)")
    parser.add_argument("--head-dim", type=int, default=64, help="head dimension d (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds of timing per cell (default 0.5)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per cell (default 5)")
    parser.add_argument("--no-manual", action="store_true", help="skip the manual path (it is slow at large n)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def median_seconds(stmts: dict[str, Callable[[], object]], threads: int, min_run_time: float, rounds: int):
    """Median time of each statement, measured in interleaved rounds so that load changes hit all alike.

    Each statement is called once to warm up (kernel selection, allocator, lazy probes); then each round
    times every statement with :class:`torch.utils.benchmark.Timer`; the result is the median over rounds
    of each round's median.
    """
    for stmt in stmts.values():
        stmt()
    per_round: dict[str, list[float]] = {name: [] for name in stmts}
    for _ in range(rounds):
        for name, stmt in stmts.items():
            timer = benchmark.Timer(stmt="stmt()", globals={"stmt": stmt}, num_threads=threads)
            per_round[name].append(timer.blocked_autorange(min_run_time=min_run_time).median)
    return {name: statistics.median(times) for name, times in per_round.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threads = args.threads if args.threads is not None else torch.get_num_threads()
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    print("# " + shlex.join([sys.executable, *sys.argv]))
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, device {device}, "
        f"threads {threads}, float32, B={args.batch}, H={args.heads}, d={args.head_dim}; median over "
        f"{args.rounds} interleaved rounds of torch.utils.benchmark blocked_autorange({args.min_run_time} s) "
        "medians, after one warm-up call"
    )
    header = f"{'n':>6} {'causal':>6} {'SDPA ms':>9} {'fused ms':>9} {'fused/SDPA':>10}"
    if not args.no_manual:
        header += f" {'manual ms':>10} {'manual/SDPA':>11}"
    print(header)
    print("-" * len(header))
    n = args.min_n
    gen = torch.Generator(device=device).manual_seed(0)
    while n <= args.max_n:
        shape = (args.batch, args.heads, n, args.head_dim)
        q, k, v = (torch.randn(shape, generator=gen, device=device) for _ in range(3))  # (B, H, n, d)
        for causal in (False, True):
            stmts = {
                "sdpa": partial(F.scaled_dot_product_attention, q, k, v, is_causal=causal),
                "fused": partial(scaled_dot_product_attention, q, k, v, is_causal=causal, backend="fused"),
            }
            if not args.no_manual:
                stmts["manual"] = partial(scaled_dot_product_attention, q, k, v, is_causal=causal, backend="manual")
            t = median_seconds(stmts, threads, args.min_run_time, args.rounds)
            row = f"{n:>6} {str(causal):>6} {1e3 * t['sdpa']:>9.3f} {1e3 * t['fused']:>9.3f}"
            row += f" {t['fused'] / t['sdpa']:>10.3f}"
            if not args.no_manual:
                row += f" {1e3 * t['manual']:>10.3f} {t['manual'] / t['sdpa']:>11.2f}"
            print(row, flush=True)
        n *= 2


if __name__ == "__main__":
    main()

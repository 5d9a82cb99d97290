"""The long-attention zoo: every attention mechanism of Part II, side by side, at an equal budget.

Each mechanism of :data:`ZOO` (``fn(q, k, v) -> output`` on ``(B, H, T, d)`` tensors, the functions that
``benchmarks/long_attention.py`` times, with their sizes set for these short sequences) is dropped into the
same small Transformer encoder -- the same embeddings, projections, MLPs and therefore the same parameters; the
mechanisms themselves have none -- and trained with the same optimiser, steps and batches on two generated tasks,
each at two lengths:

- **recall** (associative recall, :func:`attnbook.data.recall.associative_recall`): ``T - 1`` key-value pairs,
  each pair at one position (the sum of its key's and its value's embeddings), then a question: a key, with a
  "?" in place of its value. Answer the value stored with that key: it needs *content* matching anywhere in
  the sequence, and one attention layer can do it.
- **first** (a long-range copy): ``T`` random tokens; answer the *first* one. It needs one position that lies
  ``T - 1`` steps away from where the answer is read.

The answer is read from the last position. For every (mechanism, task, length) the table reports the held-out
accuracy (mean and range over ``--seeds`` training seeds), the median wall time of one training step
(forward, backward and optimiser), and the peak memory of the tensors one step creates
(:class:`attnbook.profiling.PeakMemory`). ``--out`` writes it as the appendix page of the book, with the
command, the machine and the versions that produced it::

    python benchmarks/long_attention_zoo.py --out appendix/long-attention-zoo.md    # the book's page
    python benchmarks/long_attention_zoo.py --steps 20 --seeds 1 --mechanisms sdpa  # a quick look

Chance is ``1 / 16`` on both tasks (16 possible answers). Everything runs on the CPU, one thread.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.axial import axial_attention_2d
from attnbook.attention.core import FunctionCore
from attnbook.attention.factorised import combiner_attention
from attnbook.attention.local import blocked_attention, sliding_window_attention
from attnbook.attention.routing import sqrt_routing_attention
from attnbook.attention.tiled import tiled_attention
from attnbook.data.recall import associative_recall
from attnbook.models.transformer import EncoderBlock
from attnbook.profiling import PeakMemory

Mechanism = Callable[[Tensor, Tensor, Tensor], Tensor]

NUM_ANSWERS = 16  # values of the recall task, and the alphabet of the copy task
WINDOW = 15  # the local mechanisms' window: 7 positions to each side, or blocks of 15 (+- one block)

#: name -> (fn(q, k, v) on (B, H, T, d), what it is). Chapters add theirs here; the page lists every entry.
ZOO: dict[str, tuple[Mechanism, str]] = {
    "full": (F.scaled_dot_product_attention, "full softmax attention (PyTorch's SDPA), ch. 03"),
    "tiled": (
        lambda q, k, v: tiled_attention(q, k, v, block_q=16, block_k=16),
        "tiled (flash) attention, blocks of 16 x 16, exact, ch. 07",
    ),
    "sliding": (
        lambda q, k, v: sliding_window_attention(q, k, v, WINDOW),
        f"centred sliding window of {WINDOW} positions, ch. 08",
    ),
    "blocked": (
        lambda q, k, v: blocked_attention(q, k, v, WINDOW, look_backward=1, look_forward=1),
        f"blocks of {WINDOW} that also see the neighbouring block on each side, ch. 08",
    ),
    "axial": (axial_attention_2d, "axial: the mean of row and column attention on a sqrt(T) x sqrt(T) grid, ch. 09"),
    "combiner": (
        combiner_attention,
        "Combiner: own segment of about sqrt(T) in full, max-pooled summaries of the rest, ch. 09",
    ),
    "routing": (sqrt_routing_attention, "routing attention, sqrt(T) k-means clusters of queries and keys, ch. 10"),
}
MECHANISMS: dict[str, Mechanism] = {name: fn for name, (fn, _) in ZOO.items()}


@dataclass(frozen=True)
class Task:
    """A generated task at one length: ``tokens (N, T)`` and ``answers (N,)`` in ``[0, vocab)``."""

    name: str
    length: int
    vocab: int
    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]


def recall_task(length: int, num_train: int, num_test: int) -> Task:
    """Associative recall with each stored pair at one position: ``tokens (N, T, 2)`` = (key, value) pairs."""
    num_pairs = length - 1
    num_keys = 2 * num_pairs
    ask = num_keys + NUM_ANSWERS  # the "value" token of the question position

    def make(n: int, seed: int) -> tuple[Tensor, Tensor]:
        data = associative_recall(n, num_pairs, num_queries=1, num_values=NUM_ANSWERS, seed=seed)
        pairs = data.tokens[:, : 2 * num_pairs].reshape(n, num_pairs, 2)  # (N, n, 2): key, value token
        question = torch.stack((data.tokens[:, -1], torch.full((n,), ask)), -1)[:, None]  # (N, 1, 2)
        return torch.cat((pairs, question), 1), data.targets[:, 0] - num_keys  # value index in [0, 16)

    return Task("recall", length, ask + 1, make(num_train, 1), make(num_test, 2))


def first_token_task(length: int, num_train: int, num_test: int) -> Task:
    def make(n: int, seed: int) -> tuple[Tensor, Tensor]:
        tokens = torch.randint(0, NUM_ANSWERS, (n, length), generator=torch.Generator().manual_seed(seed))
        return tokens, tokens[:, 0].clone()

    return Task("first", length, NUM_ANSWERS, make(num_train, 1), make(num_test, 2))


class ZooModel(nn.Module):
    """Token and learned position embeddings, ``layers`` pre-norm encoder blocks of the book
    (:class:`attnbook.models.transformer.EncoderBlock`) whose attention core is the mechanism
    (:class:`attnbook.attention.core.FunctionCore`), and a read-out of the last position."""

    def __init__(self, vocab: int, length: int, attend: Mechanism, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, width), nn.Parameter(torch.randn(length, width) * 0.02)
        self.blocks = nn.ModuleList(
            EncoderBlock(width, heads, activation="gelu", norm_first=True, core=lambda: FunctionCore(attend))
            for _ in range(layers)
        )
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, NUM_ANSWERS)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)  # (B, T, D), or (B, T, 2, D) for (key, value) positions
        x = (x.sum(-2) if tokens.ndim == 3 else x) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, -1]))  # (B, NUM_ANSWERS)


@dataclass(frozen=True)
class Result:
    mechanism: str
    task: str
    length: int
    accuracies: tuple[float, ...]
    step_seconds: float
    peak_bytes: int
    parameters: int


def train_one(
    name: str, attend: Mechanism, task: Task, seed: int, args: argparse.Namespace
) -> tuple[float, float, int, int]:
    """Train one model; return (test accuracy, median step seconds, peak bytes of one step, parameters)."""
    torch.manual_seed(seed)
    model = ZooModel(task.vocab, task.length, attend, args.width, args.heads, args.layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * s / args.steps))
    )
    tokens, answers = task.train
    order = torch.Generator().manual_seed(seed)
    times, peak = [], 0
    for step in range(args.steps):
        rows = torch.randint(0, len(tokens), (args.batch,), generator=order)
        start = time.perf_counter()
        if step == 1:  # the second step: the optimiser's state exists, as in every later step
            with PeakMemory() as mem:
                loss = F.cross_entropy(model(tokens[rows]), answers[rows])
                loss.backward()
            peak = mem.peak
        else:
            loss = F.cross_entropy(model(tokens[rows]), answers[rows])
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        times.append(time.perf_counter() - start)
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"{name} on {task.name} (T={task.length}, seed {seed}): the loss is {loss.item()}")
    model.eval()
    with torch.no_grad():
        test_tokens, test_answers = task.test
        correct = sum(
            (model(test_tokens[i : i + 500]).argmax(-1) == test_answers[i : i + 500]).sum().item()
            for i in range(0, len(test_tokens), 500)
        )
    parameters = sum(p.numel() for p in model.parameters())
    return correct / len(test_tokens), statistics.median(times[2:] or times), peak, parameters


def make_tasks(args: argparse.Namespace) -> list[Task]:
    tasks = []
    for length in args.lengths:
        if "recall" in args.tasks:
            tasks.append(recall_task(length, args.train_size, args.test_size))
        if "first" in args.tasks:
            tasks.append(first_token_task(length, args.train_size, args.test_size))
    return tasks


def run(args: argparse.Namespace) -> list[Result]:
    unknown = [m for m in args.mechanisms if m not in MECHANISMS]
    if unknown:
        raise SystemExit(f"unknown mechanism(s) {unknown}; the registry has {sorted(MECHANISMS)}")
    tasks = make_tasks(args)
    jobs = [(t, name, seed) for t in range(len(tasks)) for name in args.mechanisms for seed in range(args.seeds)]
    if args.jobs > 1:  # one training per process, one thread each; forked, so the tasks are shared, not pickled
        context = multiprocessing.get_context("fork")
        with context.Pool(args.jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            outcomes = pool.starmap(_train_job, [(tasks, t, name, seed, args) for t, name, seed in jobs])
    else:
        outcomes = [_train_job(tasks, t, name, seed, args) for t, name, seed in jobs]
    by_job = dict(zip(jobs, outcomes, strict=True))
    results = []
    for t, task in enumerate(tasks):
        for name in args.mechanisms:
            runs = [by_job[(t, name, seed)] for seed in range(args.seeds)]
            result = Result(
                name,
                task.name,
                task.length,
                tuple(r[0] for r in runs),
                statistics.median(r[1] for r in runs),
                max(r[2] for r in runs),
                runs[0][3],
            )
            results.append(result)
            print(format_row(result), flush=True)
    return results


def _train_job(
    tasks: list[Task], t: int, name: str, seed: int, args: argparse.Namespace
) -> tuple[float, float, int, int]:
    return train_one(name, MECHANISMS[name], tasks[t], seed, args)


def format_row(r: Result) -> str:
    acc = statistics.mean(r.accuracies)
    spread = f" ({min(r.accuracies):.2f}-{max(r.accuracies):.2f})" if len(r.accuracies) > 1 else ""
    return (
        f"| {r.mechanism} | {r.task} | {r.length} | {acc:.2f}{spread} | {r.step_seconds * 1e3:.1f} | "
        f"{r.peak_bytes / 2**20:.1f} | {r.parameters:,} |"
    )


HEADER = (
    "| mechanism | task | T | accuracy (range over seeds) | ms / training step | peak MiB / step | parameters |\n"
    "|---|---|---:|---:|---:|---:|---:|"
)


def page(results: list[Result], args: argparse.Namespace, command: str, seconds: float) -> str:
    rows = "\n".join(format_row(r) for r in results)
    return f"""(appendix-long-attention-zoo)=
# The long-attention zoo

Every attention mechanism of Part II in one model, trained on the same generated long-range tasks at an equal
parameter and step budget: one table to choose a mechanism from. The mechanisms have no parameters of their own,
so each model has exactly the same weights to learn; only the attention between its projections differs.

- **recall**: associative recall: T - 1 key-value pairs, each at one position, then a question (a key); answer
  the value stored with it. It needs content matching anywhere in the sequence.
- **first**: a long-range copy: answer the first of T random tokens, which lies T - 1 positions away from the
  read-out.

Chance is 1/16 on both. Model: {args.layers} pre-norm encoder blocks, width {args.width}, {args.heads} heads,
learned positions, read-out at the last position. Training: AdamW (learning rate {args.lr}, warm-up
{args.warmup} steps, cosine decay), {args.steps} steps of batch {args.batch} drawn from {args.train_size:,}
generated examples; accuracy on {args.test_size:,} held-out examples, mean (range) over {args.seeds} seeds.
Time is the median wall time of one training step (forward, backward, optimiser) on one CPU thread
({args.jobs} trainings ran at once, each in its own process); memory
is the peak of the tensors one training step creates (counted at PyTorch's dispatcher, so a fused kernel's
internal workspace is not seen). Each mechanism's definition, its cost and its parameters (window, blocks,
clusters) are in its chapter; `benchmarks/long_attention.py` measures their cost on long inputs.

{HEADER}
{rows}

The mechanisms:

{chr(10).join(f"- **{name}**: {what}" for name, (_, what) in ZOO.items() if name in args.mechanisms)}

Measured with

```bash
{command}
```

on {platform.machine()} ({platform.processor() or "CPU"}), Python {platform.python_version()}, PyTorch
{torch.__version__}, in {seconds / 60:.1f} minutes. Timings on a shared machine vary by tens of percent; rerun
the command to measure yours.
"""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--mechanisms", nargs="+", default=list(MECHANISMS), help="names in the registry")
    p.add_argument("--tasks", nargs="+", default=["recall", "first"], choices=["recall", "first"])
    p.add_argument("--lengths", nargs="+", type=int, default=[36, 144], help="sequence lengths T")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--jobs", type=int, default=1, help="trainings run at once, one process and one thread each")
    p.add_argument("--out", type=Path, help="write the appendix page here (Markdown)")
    args = p.parse_args(argv)
    for name in ("steps", "batch", "warmup", "width", "heads", "layers", "seeds", "train_size", "test_size", "jobs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.width % args.heads:
        p.error(f"--width {args.width} must be divisible by --heads {args.heads}")
    if any(t < 2 for t in args.lengths):
        p.error(f"--lengths must be >= 2, got {args.lengths}")
    return args


def main(argv: list[str] | None = None) -> list[Result]:
    args = parse(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    print(HEADER)
    results = run(args)
    if args.out is not None:
        command = "python benchmarks/long_attention_zoo.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        text = page(results, args, command.strip(), time.perf_counter() - start)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)  # never a half-written page
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()

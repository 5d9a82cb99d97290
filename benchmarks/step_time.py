"""Training-step time of the book's character GPT against a minimal hand-written GPT of the same shape.

Both models are the README benchmark configuration: 4 layers, 4 heads, width 128, context 64, batch 12, the
stdlib corpus's 95-ish character vocabulary, tied embeddings, AdamW (weight decay on matrices only), float32,
one thread. The minimal GPT (:class:`MinimalGPT` below) is what a lean public implementation writes: one fused
``q, k, v`` projection, PyTorch's SDPA with ``is_causal=True``, exact GELU, no input checks. Both have the
same parameter count (asserted). Each training step is split into forward (with the loss), backward and the
optimizer (``zero_grad`` + ``step``), each timed by the thread's CPU time (``--clock cpu``, the default: it is
not inflated when other processes share the cores) or the wall clock; the models take turns step by step on
identical precomputed random-offset batches (who goes first rotates), and the table gives the median ms of
each phase and of the whole step over ``--steps`` steps, the quartiles of the step, and the ratio to the
minimal GPT's median step.

``--fused`` gives every model PyTorch's fused AdamW kernel (as the engine trains on a CPU with torch >= 2.4)
instead of the for-loop AdamW a lean public GPT gets on a CPU.

``--variants`` picks which versions of the book's model run: ``book`` (the GPT's defaults: GPT-2's
tanh-approximate GELU) and ``book-gelu`` (``activation="gelu"``, exact GELU, as the ``gpt-quick`` preset
trains it). The engine's own overhead over a hand-written loop is ``benchmarks/train_overhead.py``'s.

    PYTHONPATH=. python benchmarks/step_time.py              # the README table
    PYTHONPATH=. python benchmarks/step_time.py --steps 50   # a quick look

Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.data.text import CharTokenizer, load_stdlib_corpus
from attnbook.models.gpt import GPT, GPTConfig

LAYERS, HEADS, WIDTH, CONTEXT, BATCH = 4, 4, 128, 64, 12


class MinimalBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.fc_out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        B, T, E = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(E, dim=2)
        q, k, v = (t.view(B, T, self.heads, E // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, E)
        x = x + self.proj(y)
        return x + self.fc_out(F.gelu(self.fc(self.ln_2(x))))


class MinimalGPT(nn.Module):
    """The leanest GPT of this shape: fused qkv, SDPA, exact GELU, tied head, no checks."""

    def __init__(self, vocab: int, context: int, layers: int, heads: int, width: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(MinimalBlock(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "fc_out.weight")) else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith("bias") and "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, idx: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def adamw(model: nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), fused=fused or None)


def batches(count: int, seed: int) -> tuple[int, list[tuple[Tensor, Tensor]]]:
    text = load_stdlib_corpus(1_000_000)
    tokenizer = CharTokenizer.from_text(text)
    data = tokenizer.encode(text)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        starts = torch.randint(len(data) - CONTEXT - 1, (BATCH,), generator=generator)
        window = torch.stack([data[s : s + CONTEXT + 1] for s in starts.tolist()])
        out.append((window[:, :-1].contiguous(), window[:, 1:].contiguous()))
    return tokenizer.vocab_size, out


class Stepper:
    """One model and its optimizer; ``step(x, y)`` trains one step and returns the seconds of its phases."""

    def __init__(self, model: nn.Module, clock, fused: bool = False) -> None:
        self.model, self.optimizer, self.clock = model.train(), adamw(model, fused), clock

    def step(self, x: Tensor, y: Tensor) -> tuple[float, float, float]:
        clock = self.clock
        t0 = clock()
        _, loss = self.model(x, y)
        t1 = clock()
        loss.backward()
        t2 = clock()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t3 = clock()
        return t1 - t0, t2 - t1, t3 - t2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per model first")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="thread CPU time or wall clock")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--fused", action="store_true", help="every model with PyTorch's fused AdamW kernel (as the engine trains)"
    )
    parser.add_argument("--variants", nargs="+", default=["book", "book-gelu"], choices=["book", "book-gelu"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vocab, data = batches(args.warmup + args.steps, seed=0)
    models: dict[str, nn.Module] = {}
    torch.manual_seed(0)
    models["minimal"] = MinimalGPT(vocab, CONTEXT, LAYERS, HEADS, WIDTH)
    for name in args.variants:
        extra = {"activation": "gelu"} if name == "book-gelu" else {}  # "book": the defaults (of any version)
        torch.manual_seed(0)
        config = GPTConfig(vocab, CONTEXT, LAYERS, HEADS, WIDTH, **extra)
        models[name] = GPT(config)
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    assert len(set(counts.values())) == 1, f"parameter counts differ: {counts}"
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    steppers = {name: Stepper(model, clock, args.fused) for name, model in models.items()}
    for x, y in data[: args.warmup]:
        for stepper in steppers.values():
            stepper.step(x, y)
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in steppers}
    for i, (x, y) in enumerate(data[args.warmup :]):
        names = list(steppers)
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate who goes first
            times[name].append(steppers[name].step(x, y))
    print(
        f"char GPT {LAYERS}x{WIDTH}, {HEADS} heads, context {CONTEXT}, batch {BATCH}, "
        f"AdamW ({'fused' if args.fused else 'for-loop'}), "
        f"{counts['minimal']} parameters, {args.threads} thread(s); {args.steps} steps per model, interleaved; "
        f"median ms per step ({'thread CPU time' if args.clock == 'cpu' else 'wall clock'}), "
        f"quartiles of the whole step"
    )
    header = f"{'model':<10} {'forward':>8} {'backward':>8} {'optim':>8} {'step':>8} {'quartiles':>13} {'/minimal':>8}"
    print(header)
    print("-" * len(header))
    base = statistics.median(sum(t) for t in times["minimal"]) * 1000
    for name, rows in times.items():
        steps = [sum(t) * 1000 for t in rows]
        med = [statistics.median(t[i] for t in rows) * 1000 for i in range(3)]
        step = statistics.median(steps)
        q1, _, q3 = statistics.quantiles(steps, n=4)
        phases = " ".join(f"{m:8.2f}" for m in med)
        print(f"{name:<10} {phases} {step:8.2f} {q1:6.2f}-{q3:6.2f} {step / base:8.3f}")


if __name__ == "__main__":
    main()

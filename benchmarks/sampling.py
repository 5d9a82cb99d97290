"""Does the data module's batch sampling cost validation loss? CharDataModule's batches vs random-offset batches.

The same character GPT (the ``gpt-quick`` model: 4 layers, 4 heads, 128 wide, context 64, exact GELU), the same
initial weights for a given seed, AdamW with the preset's learning rate, warm-up and cosine schedule, gradient
clipping at 1, the same number of steps; only where the training batches come from differs:

* ``datamodule`` -- :class:`attnbook.train.CharDataModule`'s training loader (its :class:`EpochSeededSampler`
  draws window starts from a generator seeded by ``(seed, epoch)``), as the engine trains;
* ``random`` -- a minimal loop's batches: ``torch.randint(len(train) - T, (B,))`` window starts from a generator
  seeded by ``1000 + seed`` (an independent stream), over the same training split.

Seeded alike, the two give the very same batches (the script first checks that the data module's first
batches equal ``torch.randint`` windows from a generator seeded by ``seed``): the sampling *is* random-offset
sampling. So the comparison uses independent streams, and the question becomes whether the difference between
the paths exceeds the spread between seeds of one path.

Both are trained in the same hand-written loop (the engine's own loop gives the same weights as this loop on
the same batches: ``benchmarks/train_overhead.py`` prints ``max |dw| = 0``). Each run is evaluated on the
*full* validation split (every non-overlapping window), for ``--seeds`` seeds per path; the script prints each
run, the mean and range per path, and the difference of the means with its spread.

    PYTHONPATH=. python benchmarks/sampling.py --steps 400 --seeds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attnbook.train import CharDataModule, GPTModule
from attnbook.train.schedule import warmup_cosine_scheduler

BLOCK, BATCH = 64, 12


def make(seed: int, steps: int) -> tuple[GPTModule, CharDataModule]:
    data = CharDataModule(
        corpus="stdlib", max_chars=300_000, block_size=BLOCK, batch_size=BATCH, batches_per_epoch=steps, seed=seed
    )
    data.setup("fit")
    torch.manual_seed(seed)
    module = GPTModule(vocab_size=data.vocab_size, activation="gelu", lr=2e-3, warmup_steps=50, min_lr_ratio=0.1)
    return module, data


def random_offset_batches(train: torch.Tensor, steps: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(len(train) - BLOCK, (BATCH,), generator=generator)
        windows = torch.stack([train[s : s + BLOCK + 1] for s in starts.tolist()])  # (B, T + 1)
        yield windows[:, :-1], windows[:, 1:]


def train(module: GPTModule, batches, steps: int) -> None:
    net = module.net.train()
    decay = [p for p in net.parameters() if p.ndim >= 2]
    no_decay = [p for p in net.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=2e-3, betas=(0.9, 0.95))
    scheduler = warmup_cosine_scheduler(optimizer, 50, steps, 0.1)
    for x, y in batches:
        _, loss = net(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        scheduler.step()


@torch.no_grad()
def full_val_loss(module: GPTModule, val: torch.Tensor) -> float:
    """Mean loss over every non-overlapping window of the validation split."""
    net = module.net.eval()
    count = (len(val) - 1) // BLOCK
    x = val[: count * BLOCK].view(count, BLOCK)
    y = val[1 : count * BLOCK + 1].view(count, BLOCK)
    total = 0.0
    for i in range(0, count, 64):
        total += float(net(x[i : i + 64], y[i : i + 64])[1]) * len(x[i : i + 64])
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, data = make(0, 3)
    loader = data.train_dataloader()
    loader.sampler.set_epoch(0)
    same = all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(loader, random_offset_batches(data.train_data.data, 3, 0), strict=True)
    )
    print(f"seeded alike, the data module's batches equal torch.randint random-offset batches: {same}")
    results: dict[str, list[float]] = {"datamodule": [], "random": []}
    for seed in range(args.seeds):
        for path in results:
            start = time.perf_counter()
            module, data = make(seed, args.steps)
            if path == "datamodule":
                loader = data.train_dataloader()
                loader.sampler.set_epoch(0)
                batches = iter(loader)
            else:
                batches = random_offset_batches(data.train_data.data, args.steps, 1000 + seed)
            train(module, batches, args.steps)
            loss = full_val_loss(module, data.val_data.data)
            results[path].append(loss)
            seconds = time.perf_counter() - start
            print(f"seed={seed} path={path:10s} full val loss={loss:.4f} ({seconds:.0f} s)", flush=True)
    print(f"\n{args.steps} steps, batch {BATCH}, context {BLOCK}; full validation split; {args.seeds} seeds per path")
    for path, losses in results.items():
        print(f"{path:10s} mean {statistics.fmean(losses):.4f}  range {min(losses):.4f}-{max(losses):.4f}")
    diffs = [a - b for a, b in zip(results["datamodule"], results["random"], strict=True)]
    print(
        f"datamodule - random: mean {statistics.fmean(diffs):+.4f}, per seed {min(diffs):+.4f} to {max(diffs):+.4f}, "
        f"sd of the per-path losses {statistics.stdev(results['random'] + results['datamodule']):.4f}"
    )


if __name__ == "__main__":
    main()

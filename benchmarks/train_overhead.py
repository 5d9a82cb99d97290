"""Engine overhead: tokens/s of the character GPT through attnbook's Lightning engine vs a hand-written loop.

The model (4 layers, 4 heads, 128 dims, context 64), the data (the stdlib corpus, batches of 12 windows in
the same seeded order), the initial weights, AdamW with the same parameter groups and the same warm-up +
cosine schedule are identical in both; the only difference is the training loop. The engine runs as the
CLI builds it (``trainer_kwargs``: CSV logger, throughput monitor, learning-rate monitor, finite-loss guard,
atomic checkpoint writer) with what costs time per step switched off or thinned: no progress bar, a log row
every 50 steps, no sanity validation, no validation and no checkpoint inside the timed window.
Throughput is measured after ``--warmup`` steps. Both loops compute the same arithmetic, so their final
weights and losses should agree; the script prints the largest weight difference as a check.

    PYTHONPATH=. .venv/bin/python benchmarks/train_overhead.py --steps 150 --repeats 1  # a quick look
    PYTHONPATH=. .venv/bin/python benchmarks/train_overhead.py --steps 2000             # the README numbers

Prints one line per (threads, loop, repeat) and a summary table. Not a test: it only prints numbers.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import lightning.pytorch as pl
import torch

from attnbook.train import CharDataModule, EngineOptions, GPTModule, trainer_kwargs
from attnbook.train.schedule import warmup_cosine_scheduler


def make_parts(steps: int, seed: int) -> tuple[GPTModule, CharDataModule]:
    data = CharDataModule(corpus="stdlib", max_chars=1_000_000, block_size=64, batch_size=12, batches_per_epoch=steps)
    data.setup("fit")
    torch.manual_seed(seed)
    module = GPTModule(
        vocab_size=data.vocab_size,
        block_size=64,
        n_layer=4,
        n_head=4,
        n_embd=128,
        lr=1e-3,
        warmup_steps=100,
        min_lr_ratio=0.1,
    )
    module.tokenizer = data.tokenizer
    return module, data


class _Clock(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.losses = warmup, 0.0, 0.0, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        if batch_idx + 1 == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def run_engine(
    module: GPTModule, data: CharDataModule, steps: int, warmup: int
) -> tuple[float, list[float], GPTModule]:
    clock = _Clock(warmup)
    with tempfile.TemporaryDirectory() as run_dir:
        engine = EngineOptions(run_dir=run_dir, loggers=["csv"], progress_bar=False)
        trainer = pl.Trainer(
            **trainer_kwargs(
                engine,
                accelerator="cpu",
                devices=1,
                max_steps=steps,
                max_epochs=1,
                log_every_n_steps=50,
                num_sanity_val_steps=0,
                limit_val_batches=0,
                enable_model_summary=False,
                enable_checkpointing=False,
                callbacks=[clock],
            )
        )
        trainer.fit(module, datamodule=data)
    tokens = (steps - warmup) * 12 * 64
    return tokens / (clock.end - clock.start), clock.losses, module


def run_hand(module: GPTModule, data: CharDataModule, steps: int, warmup: int) -> tuple[float, list[float], GPTModule]:
    torch.manual_seed(0)  # what the engine's per-epoch reseeding does at epoch 0 (no dropout here anyway)
    net = module.net
    net.train()
    decay = [p for p in module.parameters() if p.ndim >= 2]
    no_decay = [p for p in module.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.95)
    )
    scheduler = warmup_cosine_scheduler(optimizer, 100, steps, 0.1)
    loader = data.train_dataloader()
    loader.sampler.set_epoch(0)
    losses, start = [], 0.0
    for step, (x, y) in enumerate(loader):
        _, loss = net(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss))
        if step + 1 == warmup:
            start = time.perf_counter()
    end = time.perf_counter()
    return (steps - warmup) * 12 * 64 / (end - start), losses, module


@torch.no_grad()
def val_loss(module: GPTModule, data: CharDataModule) -> float:
    module.net.eval()
    losses = [float(module.net(x, y)[1]) for x, y in data.val_dataloader()]
    return sum(losses) / len(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=20, help="steps excluded from the timing")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per loop; medians are reported")
    args = parser.parse_args()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        results: dict[str, list[float]] = {"hand": [], "engine": []}
        finals = {}
        for repeat in range(args.repeats):
            for name, runner in (("hand", run_hand), ("engine", run_engine)):
                module, data = make_parts(args.steps, seed=0)
                tps, losses, trained = runner(module, data, args.steps, args.warmup)
                results[name].append(tps)
                finals[name] = (statistics.fmean(losses[-50:]), val_loss(trained, data), copy.deepcopy(trained.net))
                print(
                    f"threads={threads} loop={name:6s} repeat={repeat} tokens/s={tps:8.0f} "
                    f"train loss (mean of last 50 steps)={finals[name][0]:.4f} val loss={finals[name][1]:.4f}",
                    flush=True,
                )
        hand, engine = statistics.median(results["hand"]), statistics.median(results["engine"])
        diff = max(
            (a - b).abs().max().item()
            for a, b in zip(finals["hand"][2].parameters(), finals["engine"][2].parameters(), strict=True)
        )
        rows.append(
            (threads, hand, engine, 100.0 * (hand - engine) / hand, finals["engine"][0], finals["engine"][1], diff)
        )
    print(f"\nchar GPT 4x128, context 64, batch 12, AdamW, {args.steps} steps (timing after {args.warmup}), CPU")
    print(
        f"{'threads':>7} {'hand tok/s':>11} {'engine tok/s':>13} {'overhead %':>10} {'train loss':>10} "
        f"{'val loss':>8} {'max |dw|':>9}"
    )
    for threads, hand, engine, overhead, train, val, diff in rows:
        print(f"{threads:>7} {hand:>11.0f} {engine:>13.0f} {overhead:>10.1f} {train:>10.4f} {val:>8.4f} {diff:>9.2e}")


if __name__ == "__main__":
    main()

"""Engine overhead: tokens/s of the character GPT through attnbook's Lightning engine vs a hand-written loop.

The model (4 layers, 4 heads, 128 dims, context 64, exact GELU as in ``gpt-quick``), the data (the stdlib
corpus, batches of 12 windows in the same seeded order), the initial weights, AdamW with the same parameter
groups and the same warm-up + cosine schedule are identical in both; the only difference is the training loop.
The engine runs as the CLI builds it (``trainer_kwargs``: CSV logger, throughput monitor, learning-rate monitor,
finite-loss guard, atomic checkpoint writer) with what costs time per step switched off or thinned: no progress
bar, a log row every 50 steps, no sanity validation, no validation and no checkpoint inside the timed window.
Two more loops train the minimal GPT of ``benchmarks/step_time.py`` (fused q/k/v, SDPA, exact GELU, no checks;
same parameter count) by hand on the same batches: ``minimal`` with AdamW as the leanest public GPT configures it
(nanoGPT: the fused kernel on CUDA only, so PyTorch's for-loop AdamW on a CPU), and ``min-fused`` with the same
fused AdamW the engine uses (:func:`attnbook.train.modules.fused_adamw_available`): the engine's step against the
leanest peer as it ships, and against the leanest model with the same optimizer. Throughput is measured after
``--warmup`` steps, both per wall-clock second and per CPU second of the process (the second is steadier when
other jobs share the machine; with two threads it also counts time the threads spend waiting for each other).
The engine and the ``hand`` loop compute the same arithmetic, so their final weights and losses should agree;
the script prints the largest weight difference as a check.

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
from attnbook.train.modules import fused_adamw_available
from attnbook.train.schedule import warmup_cosine_scheduler


def make_parts(steps: int, seed: int) -> tuple[GPTModule, CharDataModule]:
    data = CharDataModule(corpus="stdlib", max_chars=1_000_000, block_size=64, batch_size=12, batches_per_epoch=steps)
    data.setup("fit")
    torch.manual_seed(seed)
    module = GPTModule(
        vocab_size=data.vocab_size,
        activation="gelu",  # as the gpt-quick preset trains it
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


def _now() -> tuple[float, float]:
    """Wall-clock and process CPU seconds."""
    return time.perf_counter(), time.process_time()


class _Clock(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.losses = warmup, (0.0, 0.0), (0.0, 0.0), []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())
        if batch_idx + 1 == self.warmup:
            self.start = _now()
        self.end = _now()


def _rates(tokens: int, start: tuple[float, float], end: tuple[float, float]) -> tuple[float, float]:
    """Tokens per wall-clock second and per CPU second of this process."""
    return tokens / (end[0] - start[0]), tokens / (end[1] - start[1])


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
    return _rates((steps - warmup) * 12 * 64, clock.start, clock.end), clock.losses, module


def run_minimal(module: GPTModule, data: CharDataModule, steps: int, warmup: int, fused: bool = False):
    """The hand loop with the minimal GPT of ``benchmarks/step_time.py`` (same shape and parameter count)."""
    from step_time import MinimalGPT  # benchmarks/ is the script's folder, first on sys.path

    torch.manual_seed(0)
    c = module.gpt.config
    minimal = MinimalGPT(c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd)
    assert sum(p.numel() for p in minimal.parameters()) == module.gpt.num_parameters()
    module.net = minimal  # run_hand trains module.net
    return run_hand(module, data, steps, warmup, fused=fused)


def run_minimal_fused(module: GPTModule, data: CharDataModule, steps: int, warmup: int):
    return run_minimal(module, data, steps, warmup, fused=fused_adamw_available("cpu"))


def run_hand(module: GPTModule, data: CharDataModule, steps: int, warmup: int, fused: bool | None = None):
    """The engine's recipe by hand; ``fused=None``: the engine's AdamW kernel (fused where available)."""
    torch.manual_seed(0)  # what the engine's per-epoch reseeding does at epoch 0 (no dropout here anyway)
    net = module.net
    net.train()
    decay = [p for p in module.parameters() if p.ndim >= 2]
    no_decay = [p for p in module.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3,
        betas=(0.9, 0.95),
        fused=fused_adamw_available("cpu") if fused is None else fused,
    )
    scheduler = warmup_cosine_scheduler(optimizer, 100, steps, 0.1)
    loader = data.train_dataloader()
    loader.sampler.set_epoch(0)
    losses, start = [], (0.0, 0.0)
    for step, (x, y) in enumerate(loader):
        _, loss = net(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step + 1 == warmup:
            start = _now()
    return _rates((steps - warmup) * 12 * 64, start, _now()), losses, module


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
        loops = (("hand", run_hand), ("engine", run_engine), ("minimal", run_minimal), ("min-fused", run_minimal_fused))
        results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in loops}
        finals = {}
        for repeat in range(args.repeats):
            for name, runner in loops:
                module, data = make_parts(args.steps, seed=0)
                (tps, tpcpu), losses, trained = runner(module, data, args.steps, args.warmup)
                results[name].append((tps, tpcpu))
                finals[name] = (statistics.fmean(losses[-50:]), val_loss(trained, data), copy.deepcopy(trained.net))
                print(
                    f"threads={threads} loop={name:9s} repeat={repeat} tokens/s={tps:8.0f} "
                    f"tokens/CPU-s={tpcpu:8.0f} "
                    f"train loss (mean of last 50 steps)={finals[name][0]:.4f} val loss={finals[name][1]:.4f}",
                    flush=True,
                )
        hand = statistics.median(r[0] for r in results["hand"])
        engine = statistics.median(r[0] for r in results["engine"])
        hand_cpu = statistics.median(r[1] for r in results["hand"])
        engine_cpu = statistics.median(r[1] for r in results["engine"])
        diff = max(
            (a - b).abs().max().item()
            for a, b in zip(finals["hand"][2].parameters(), finals["engine"][2].parameters(), strict=True)
        )
        for peer in ("minimal", "min-fused"):
            minimal = statistics.median(r[0] for r in results[peer])
            minimal_cpu = statistics.median(r[1] for r in results[peer])
            print(
                f"threads={threads}: engine step / {peer} GPT's hand-loop step = {minimal / engine:.3f} (wall), "
                f"{minimal_cpu / engine_cpu:.3f} (CPU); book GPT's hand-loop step / {peer}'s = "
                f"{minimal / hand:.3f} (wall), {minimal_cpu / hand_cpu:.3f} (CPU)"
            )
        overhead = 100.0 * (hand - engine) / hand
        overhead_cpu = 100.0 * (hand_cpu - engine_cpu) / hand_cpu
        rows.append((threads, hand, engine, overhead, hand_cpu, engine_cpu, overhead_cpu, *finals["engine"][:2], diff))
    print(f"\nchar GPT 4x128, context 64, batch 12, AdamW, {args.steps} steps (timing after {args.warmup}), CPU")
    print("tok/s: tokens per wall-clock second; tok/CPU-s: per CPU second of this process (steadier when shared)")
    header = ("threads", "hand tok/s", "engine tok/s", "overhead %", "hand tok/CPU-s", "engine tok/CPU-s",
              "overhead %", "train loss", "val loss", "max |dw|")  # fmt: skip
    print(" ".join(f"{h:>{max(len(h), 8)}}" for h in header))
    for row in rows:
        cells = [f"{row[0]}", *(f"{v:.0f}" for v in row[1:3]), f"{row[3]:.1f}", *(f"{v:.0f}" for v in row[4:6])]
        cells += [f"{row[6]:.1f}", f"{row[7]:.4f}", f"{row[8]:.4f}", f"{row[9]:.2e}"]
        print(" ".join(f"{c:>{max(len(h), 8)}}" for c, h in zip(cells, header, strict=True)))


if __name__ == "__main__":
    main()

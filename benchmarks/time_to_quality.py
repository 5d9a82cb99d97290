"""Time to quality: wall-clock seconds for the ``gpt-quick`` recipe to reach a fixed validation loss.

The preset is trained exactly as ``attnbook fit --config gpt-quick`` trains it (same parser, same Trainer, same
schedule), on the corpus given, with a validation pass at the end of every epoch (``batches_per_epoch`` steps)
on a fixed validation set of ``--val-batches`` batches. The run stops at the first validation whose loss is at
or below ``--target``; the script reports the training wall time up to that point (validation and checkpoint
writing excluded) and the same in CPU seconds of the training thread (steadier on a shared machine: with one
PyTorch thread, the training step's work is all on that thread), the total wall time since the fit started,
the steps taken, and the loss. ``--seeds``
repeats it with other seeds (model initialisation and data order); the summary gives the median and range.

**The corpus.** Tiny Shakespeare cannot be downloaded on an offline machine: place Karpathy's ``input.txt``
by hand and pass its path with ``--corpus``. The script checks the file's SHA-256 against the one attnbook's
dataset registry pins for it (``attnbook/data/registry.yaml``, the checksum TensorFlow Datasets records for
the same URL) and refuses a file that differs. ``--corpus stdlib`` trains on the book's offline corpus, the
Python standard library's source, instead; every line of output then says so, and its numbers are not Tiny
Shakespeare numbers.

    PYTHONPATH=. python benchmarks/time_to_quality.py --corpus /path/to/input.txt            # Tiny Shakespeare
    PYTHONPATH=. python benchmarks/time_to_quality.py --corpus stdlib --seeds 3  # offline stand-in, to 1.40

Not a test: it prints numbers. One thread by default (``--threads``), like the README's other benchmarks.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from attnbook.data.text import TINY_SHAKESPEARE_SHA256

#: Default targets (nats per character on the validation split). The stdlib one is the loss the preset was tuned to
#: reach (``benchmarks/tune_quick.py``); Tiny Shakespeare's is not calibrated (the file cannot be downloaded on the
#: machine that measured the book's numbers): a run that does not reach it says so, and ``--target`` changes it.
DEFAULT_TARGET = {"tiny_shakespeare": 1.8, "stdlib": 1.4}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_corpus(corpus: str) -> tuple[str, str]:
    """``(corpus argument for CharDataModule, label)``; a Tiny Shakespeare file must match the pinned SHA-256."""
    if corpus == "stdlib":
        return "stdlib", "stdlib (OFFLINE STAND-IN: the Python standard library's source, not Tiny Shakespeare)"
    path = Path(corpus).expanduser()
    if not path.is_file():
        raise SystemExit(f"--corpus: no file at {corpus!r} (place Tiny Shakespeare's input.txt there, or use stdlib)")
    digest = sha256(path)
    if digest != TINY_SHAKESPEARE_SHA256:
        raise SystemExit(
            f"--corpus: {path} has SHA-256 {digest}, not Tiny Shakespeare's {TINY_SHAKESPEARE_SHA256}: "
            "refusing to report its numbers as Tiny Shakespeare's"
        )
    return str(path), f"tiny_shakespeare ({path}, SHA-256 verified)"


def run(corpus: str, target: float, seed: int, val_batches: int, extra: list[str]) -> dict[str, float]:
    import lightning.pytorch as pl

    from attnbook.train.engine import AttnbookCLI
    from attnbook.train.presets import resolve_config

    class Stopwatch(pl.Callback):
        def __init__(self) -> None:
            self.start = self.train_seconds = self.train_cpu = 0.0
            self.batch_start = self.batch_cpu = 0.0
            self.reached: dict[str, float] | None = None
            self.last_loss = float("nan")

        def on_train_start(self, trainer, pl_module) -> None:
            self.start = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.batch_start, self.batch_cpu = time.perf_counter(), time.thread_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.train_seconds += time.perf_counter() - self.batch_start
            self.train_cpu += time.thread_time() - self.batch_cpu

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
                return
            self.last_loss = float(trainer.callback_metrics["val/loss"])
            if self.reached is None and self.last_loss <= target:
                self.reached = {
                    "train_s": self.train_seconds,
                    "train_cpu_s": self.train_cpu,
                    "wall_s": time.perf_counter() - self.start,
                    "steps": trainer.global_step,
                    "loss": self.last_loss,
                }
                trainer.should_stop = True

    with tempfile.TemporaryDirectory() as run_dir:
        args = [
            "--config", str(resolve_config("gpt-quick")), "--seed_everything", str(seed),
            "--data.init_args.seed", str(seed), "--data.init_args.corpus", corpus,
            "--data.init_args.val_batches", str(val_batches), "--engine.run_dir", run_dir,
            "--engine.progress_bar", "false", "--engine.loggers", "[csv]", "--trainer.enable_model_summary", "false",
            *([] if corpus == "stdlib" else ["--data.init_args.max_chars", "null"]),  # stdlib: the preset's 300k
            *extra,
        ]  # fmt: skip
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(args parameter is intended|LeafSpec|many workers).*")
            cli = AttnbookCLI(args=args, run=False)
            watch = Stopwatch()
            cli.trainer.callbacks.append(watch)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if watch.reached is None:
        return {"train_s": float("nan"), "train_cpu_s": float("nan"), "wall_s": float("nan"),
                "steps": cli.trainer.global_step, "loss": watch.last_loss}  # fmt: skip
    return watch.reached


def corpus_and_target(parser: argparse.ArgumentParser, seeds: int) -> argparse.Namespace:
    """Add ``--corpus``, ``--target`` and ``--seeds`` to ``parser``, parse, and resolve the corpus and its target.

    Returns the parsed arguments with ``corpus`` (CharDataModule's argument), ``label`` and ``target`` set; one
    thread for PyTorch unless ``--threads`` says otherwise, and Lightning's info lines silenced.
    """
    parser.add_argument("--corpus", required=True, help="path to Tiny Shakespeare's input.txt, or 'stdlib'")
    parser.add_argument("--target", type=float, default=None, help="validation loss to reach (nats per character)")
    parser.add_argument("--seeds", type=int, default=seeds)
    args = parser.parse_args()
    torch.set_num_threads(getattr(args, "threads", 1))
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    args.corpus, args.label = check_corpus(args.corpus)
    if args.target is None:
        args.target = DEFAULT_TARGET["stdlib" if args.corpus == "stdlib" else "tiny_shakespeare"]
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--val-batches", type=int, default=60,
        help="validation batches of the recipe's batch size (gpt-quick: 60 x 8 = 480 windows, as tune_quick.py)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "overrides", nargs="*", help="more `attnbook fit` overrides, after --, e.g. -- --trainer.max_epochs 10"
    )
    args = corpus_and_target(parser, seeds=1)
    corpus, label, target = args.corpus, args.label, args.target
    print(f"corpus: {label}; target validation loss {target}; gpt-quick recipe, {args.threads} thread(s)")
    rows = []
    for seed in range(args.seeds):
        row = run(corpus, target, seed, args.val_batches, args.overrides)
        rows.append(row)
        reached = "reached" if row["train_s"] == row["train_s"] else "NOT reached"
        print(
            f"seed={seed} {reached}: train {row['train_s']:.1f} s ({row['train_cpu_s']:.1f} CPU s), "
            f"wall {row['wall_s']:.1f} s, "
            f"{int(row['steps'])} steps, val loss {row['loss']:.4f}",
            flush=True,
        )
    done = [r for r in rows if r["train_s"] == r["train_s"]]
    if done:
        train = [r["train_s"] for r in done]
        cpu = [r["train_cpu_s"] for r in done]
        wall = [r["wall_s"] for r in done]
        print(
            f"time to val loss {target} on {label.split(' ')[0]}: median train {statistics.median(train):.1f} s "
            f"(range {min(train):.1f}-{max(train):.1f}; {statistics.median(cpu):.1f} CPU s), "
            f"median wall {statistics.median(wall):.1f} s; "
            f"{len(done)}/{len(rows)} seeds reached it"
        )
    else:
        print(f"no seed reached val loss {target} within the recipe ({label.split(' ')[0]})")


if __name__ == "__main__":
    main()

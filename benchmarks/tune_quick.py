"""Choose the ``gpt-quick`` preset's defaults by measurement: the recipe that reaches a fixed validation loss soonest.

A coordinate search from the preset's current values: for each knob in turn (peak learning rate, warm-up steps,
schedule length in epochs, batch size, then depth × width), every value is trained with the other knobs at their
best so far, and the value with the least median time to ``--target`` over ``--seeds`` seeds is kept. Each run
is :func:`time_to_quality.run`: the preset trained exactly as ``attnbook fit --config gpt-quick`` trains it, with
a validation pass every ``--val-every`` steps, stopped at the first validation at or below the target. Time is the
training thread's CPU seconds (one PyTorch thread: the step's work is all on that thread), so other jobs on the
machine do not inflate it; a recipe that never reaches the target within its own schedule counts as infinite.

    PYTHONPATH=. python benchmarks/tune_quick.py --corpus stdlib --target 1.40 --seeds 2
    PYTHONPATH=. python benchmarks/tune_quick.py --corpus stdlib --target 1.40 --seeds 2 --start first

Prints one line per run and, at the end, the table of every recipe tried and the chosen one. It changes no file:
the preset is edited by hand from its output (the README's benchmarks section records the run).
"""

from __future__ import annotations

import argparse
import math
import statistics

from time_to_quality import corpus_and_target, run  # benchmarks/ is the script's folder

#: The knobs, in the order the search visits them, and the values it tries. ``shape`` is (layers, width, heads).
GRID: dict[str, list] = {
    "lr": [1e-3, 2e-3, 3e-3, 5e-3, 7e-3],
    "warmup_steps": [0, 20, 50, 100],
    "max_epochs": [4, 6, 8, 10],
    "batch_size": [6, 8, 12, 16, 24],
    "shape": [(4, 128, 4), (3, 128, 4), (2, 128, 4), (4, 96, 4), (6, 96, 4), (2, 192, 4), (2, 96, 4), (1, 128, 4)],
}
#: The preset's values when this search was written (attnbook/presets/gpt-quick.yaml before it was tuned).
START = {"lr": 2e-3, "warmup_steps": 50, "max_epochs": 6, "batch_size": 12, "shape": (4, 128, 4)}
#: What the first search (``--start preset``, the README's first table) chose: ``--start first`` sweeps again from it.
FIRST = {"lr": 3e-3, "warmup_steps": 20, "max_epochs": 6, "batch_size": 8, "shape": (2, 128, 4)}
#: What the second search (``--start first --target 1.30``, the README's second table) chose: the preset ships it
#: (tests/test_engine_speed.py checks that the two agree).
CHOSEN = {"lr": 3e-3, "warmup_steps": 20, "max_epochs": 8, "batch_size": 8, "shape": (2, 96, 4)}


def overrides(recipe: dict) -> list[str]:
    layers, width, heads = recipe["shape"]
    return [
        "--model.init_args.lr", str(recipe["lr"]),
        "--model.init_args.warmup_steps", str(recipe["warmup_steps"]),
        "--trainer.max_epochs", str(recipe["max_epochs"]),
        "--data.init_args.batch_size", str(recipe["batch_size"]),
        "--model.init_args.n_layer", str(layers),
        "--model.init_args.n_embd", str(width),
        "--model.init_args.n_head", str(heads),
    ]  # fmt: skip


def describe(recipe: dict) -> str:
    layers, width, heads = recipe["shape"]
    return (
        f"lr={recipe['lr']:g} warmup={recipe['warmup_steps']} epochs={recipe['max_epochs']} "
        f"batch={recipe['batch_size']} {layers}x{width}/{heads}h"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val-every", type=int, default=50, help="steps between validation passes")
    parser.add_argument(
        "--val-windows", type=int, default=480, help="validation windows (the same set for every batch size)"
    )
    parser.add_argument(
        "--start", choices=["preset", "first"], default="preset",
        help="sweep from the untuned preset's values, or from what the first search chose",
    )  # fmt: skip
    parser.add_argument("--passes", type=int, default=1, help="sweeps over the knobs (stops early when none moves)")
    args = corpus_and_target(parser, seeds=2)
    corpus, label, target = args.corpus, args.label, args.target
    print(f"corpus: {label}; target validation loss {target}; {args.seeds} seeds; one thread", flush=True)

    results: dict[str, tuple[float, list[dict]]] = {}

    def score(recipe: dict) -> float:
        key = describe(recipe)
        if key not in results:
            rows = []
            for seed in range(args.seeds):
                extra = [*overrides(recipe), "--trainer.val_check_interval", str(args.val_every)]
                if args.val_windows % recipe["batch_size"]:
                    raise SystemExit(
                        f"--val-windows {args.val_windows} is not a multiple of batch {recipe['batch_size']}"
                    )
                row = run(corpus, target, seed, args.val_windows // recipe["batch_size"], extra)
                rows.append(row)
                print(
                    f"{key:<52} seed={seed} steps={int(row['steps']):4d} val={row['loss']:.4f} "
                    f"cpu={row['train_cpu_s']:.1f}s wall={row['train_s']:.1f}s",
                    flush=True,
                )
            times = [r["train_cpu_s"] if not math.isnan(r["train_cpu_s"]) else math.inf for r in rows]
            results[key] = (statistics.median(times), rows)
        return results[key][0]

    start = dict(START if args.start == "preset" else FIRST)
    best = dict(start)
    for sweep in range(args.passes):
        before = dict(best)
        for knob, values in GRID.items():
            # ties (e.g. no value reaches the target) keep the current value: it sorts first
            scored = [(score({**best, knob: v}), v != best[knob], i, v) for i, v in enumerate(values)]
            best[knob] = min(scored)[3]
            print(f"-> pass {sweep + 1}: {knob} = {best[knob]} ({describe(best)}: {score(best):.1f} CPU s)", flush=True)
        if best == before:
            break

    print(
        f"\ntime to validation loss {target} ({label.split(' ')[0]}), "
        f"median CPU seconds of training over {args.seeds} seeds"
    )
    print(f"{'recipe':<52} {'CPU s':>7} {'steps':>11}")
    for key, (median, rows) in sorted(results.items(), key=lambda item: item[1][0]):
        steps = "/".join(str(int(r["steps"])) if not math.isnan(r["train_s"]) else "-" for r in rows)
        print(f"{key:<52} {median:>7.1f} {steps:>11}")
    print(f"\nstart:  {describe(start)}: {score(start):.1f} CPU s")
    print(f"chosen: {describe(best)}: {score(best):.1f} CPU s")


if __name__ == "__main__":
    main()

"""Learning curves from a run folder's ``metrics.csv`` (the CSV logger of :mod:`attnbook.train.engine`)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["read_metrics", "plot_learning_curves"]


def read_metrics(run_dir: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` from ``run_dir/metrics.csv``, sorted by step.

    A resumed run appends to the file and may log a step twice (the epoch it redid); the later row wins.
    """
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"run_dir: no metrics.csv in {str(run_dir)!r} (was the run logged with the CSV logger?)"
        )
    series: dict[str, dict[int, float]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                step = int(float(row.get("step") or 0))
            except ValueError:
                continue
            for key, text in row.items():
                if key in ("step", "epoch") or not isinstance(text, str) or not text:
                    continue
                try:
                    series.setdefault(key, {})[step] = float(text)
                except ValueError:
                    continue
    return {key: sorted(values.items()) for key, values in series.items()}


def plot_learning_curves(
    run_dir: str | os.PathLike[str], metrics: tuple[str, ...] | None = None, ax: Any = None, title: str | None = None
) -> Any:
    """Plot the loss curves of a run (training loss per step, validation loss per epoch) and return the figure.

    Args:
        run_dir: the run folder.
        metrics: which series to draw (default: every ``*loss*`` series except per-epoch training aggregates).
        ax: a matplotlib Axes to draw on (default: a new figure).
        title: the figure title (default: the final validation loss).
    """
    import matplotlib.pyplot as plt

    data = read_metrics(run_dir)
    if metrics is None:
        metrics = tuple(k for k in data if "loss" in k and not k.endswith("_epoch"))
    missing = [m for m in metrics if m not in data]
    if missing:
        raise ValueError(f"metrics {missing} are not in {Path(run_dir) / 'metrics.csv'}; it has {sorted(data)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for name in metrics:
        steps, values = zip(*data[name], strict=True)
        style = "o-" if len(steps) < 30 else "-"
        ax.plot(steps, values, style, label=name, markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if title is None:
        val = data.get("val/loss")
        title = f"final validation loss {val[-1][1]:.3f}" if val and math.isfinite(val[-1][1]) else str(run_dir)
    ax.set_title(title)
    return ax.figure

"""Training callbacks: throughput and model-FLOPs utilisation (MFU), and the finite-loss guard's error.

**MFU** (PaLM 2022, ``chowdhery2022palm``, appendix B) is the fraction of the accelerator's peak arithmetic
a run actually spends on the model:

.. math::

    \\mathrm{MFU} = \\frac{F_{\\text{token}} \\cdot \\text{tokens/s}}{F_{\\text{peak}}}

where :math:`F_{\\text{token}}` is the FLOPs one training token costs (forward *and* backward, about
:math:`6N` plus the attention term for a decoder with :math:`N` parameters; the LightningModule reports it
through ``train_flops_per_token()``), tokens/s is measured over the epoch's training batches (validation and
checkpointing excluded), and :math:`F_{\\text{peak}}` is the ``peak_flops`` setting: the dense peak of one
device in the run's compute dtype (an H100 SXM does about ``989e12`` bf16 FLOP/s). Left at ``None`` on a GPU it
is looked up from Lightning's table of known devices for the trainer's precision; on a CPU there is no table,
so MFU is logged only when ``peak_flops`` is given. Under data parallelism every device measures its own
tokens against its own peak, which is the same ratio as the whole job's.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ProgressBar, TQDMProgressBar

__all__ = ["EpochProgressLines", "NonFiniteLossError", "ThroughputMonitor", "ThroughputProgressBar", "precision_dtype"]


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or infinite; the message names the step."""


def precision_dtype(precision: str | int | None) -> torch.dtype:
    """The compute dtype of a Lightning precision setting: ``"bf16-mixed"`` -> ``torch.bfloat16``, ..."""
    text = str(precision)
    if text.startswith("bf16"):
        return torch.bfloat16
    if text.startswith("16"):
        return torch.float16
    if text.startswith("64"):
        return torch.float64
    return torch.float32


class ThroughputMonitor(Callback):
    """Logs ``perf/tokens_per_sec`` each training epoch and ``perf/mfu`` when the peak FLOP/s are known.

    The module must define ``tokens_in_batch(batch) -> int``; ``train_flops_per_token() -> float`` is optional
    (no MFU without it). See the module docstring for the definition of MFU and of ``peak_flops``.
    """

    def __init__(self, peak_flops: float | None = None) -> None:
        super().__init__()
        if peak_flops is not None and peak_flops <= 0:
            raise ValueError(f"peak_flops must be positive or None, got {peak_flops}")
        self.peak_flops = peak_flops
        self._start = 0.0
        self._last = 0.0
        self._tokens = 0
        self._steps = 0

    def _peak(self, trainer: pl.Trainer) -> float | None:
        if self.peak_flops is not None:
            return self.peak_flops
        device = trainer.strategy.root_device
        if device.type != "cuda":
            return None
        from lightning.fabric.utilities.throughput import get_available_flops

        flops = get_available_flops(device, precision_dtype(trainer.precision))
        return float(flops) if flops else None

    def _now(self, trainer: pl.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":  # time finished work, not queued kernels
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last = self._now(trainer)
        self._tokens = self._steps = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._tokens += int(pl_module.tokens_in_batch(batch))
        self._steps += 1
        self._last = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Logged with the validation metrics, which reach the loggers before the end-of-epoch checkpoint.
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._log(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(pl_module)  # runs without validation

    def _log(self, pl_module: pl.LightningModule) -> None:
        trainer = pl_module.trainer
        elapsed = self._last - self._start
        if self._tokens == 0 or elapsed <= 0:
            return
        tokens_per_sec = self._tokens / elapsed
        ms_per_step = 1000.0 * elapsed / max(self._steps, 1)
        self._tokens = self._steps = 0  # logged once per epoch
        pl_module.log("perf/tokens_per_sec", tokens_per_sec, on_epoch=True, on_step=False)
        pl_module.log("perf/ms_per_step", ms_per_step, on_epoch=True, on_step=False)
        flops_per_token = getattr(pl_module, "train_flops_per_token", None)
        peak = self._peak(trainer)
        if callable(flops_per_token) and peak:
            pl_module.log("perf/mfu", float(flops_per_token()) * tokens_per_sec / peak, on_epoch=True, on_step=False)


class EpochProgressLines(ProgressBar):
    """The progress display for output that is not a terminal (CI logs, ``nohup``): one plain line per epoch.

    A terminal progress bar redraws itself with carriage returns, which a log file keeps as one line per
    redraw; this writes ``epoch 3/6  step 300  train/loss 1.52  val/loss 1.61  (12.4 s)`` once per training epoch
    (after its validation), to ``stream`` (default: standard error, where a progress bar goes).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._enabled = True
        self._start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("file", self._stream or sys.stderr)
        print(*args, flush=True, **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking:
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(metrics.items()))
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self.print(
            f"epoch {trainer.current_epoch + 1}{total}  step {trainer.global_step}  {shown}  "
            f"({time.perf_counter() - self._start:.1f} s)"
        )


class ThroughputProgressBar(TQDMProgressBar):
    """Lightning's progress bar with the training throughput beside the loss: ``tok/s`` (tokens per second)
    and ``ms/step`` (wall-clock milliseconds per training batch), both over the epoch so far.

    Timed from the end of the epoch's first batch, so data-loader start-up is not counted; the module's
    ``tokens_in_batch(batch)`` counts the tokens (no ``tok/s`` without it).
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self._t0 = 0.0
        self._t_last = 0.0
        self._timed_steps = 0
        self._timed_tokens = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._t0 = 0.0
        self._timed_steps = self._timed_tokens = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._t0 == 0.0:
            self._t0 = now  # the first batch of the epoch starts the clock
        else:
            self._timed_steps += 1
            counter = getattr(pl_module, "tokens_in_batch", None)
            self._timed_tokens += int(counter(batch)) if callable(counter) else 0
        self._t_last = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def throughput(self) -> dict[str, str]:
        """``{"tok/s": ..., "ms/step": ...}`` over the epoch so far (empty before the second batch)."""
        elapsed = self._t_last - self._t0
        if self._timed_steps == 0 or elapsed <= 0:
            return {}
        out = {"ms/step": f"{1000.0 * elapsed / self._timed_steps:.1f}"}
        if self._timed_tokens:
            out = {"tok/s": f"{self._timed_tokens / elapsed:.0f}", **out}
        return out

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int | str | float]:
        metrics = super().get_metrics(trainer, pl_module)
        if trainer.training:
            metrics.update(self.throughput())
        return metrics

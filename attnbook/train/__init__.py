"""Training at any scale: attnbook's Lightning engine (the ``attnbook`` command and the chapters share it).

* :mod:`~attnbook.train.modules` -- LightningModules: :class:`GPTModule`, :class:`PointerModule`,
  :class:`Seq2SeqModule`, :class:`ViTModule` on a shared recipe (AdamW, warm-up + cosine, finite-loss guard,
  optional compile).
* :mod:`~attnbook.train.data` -- LightningDataModules with a resumable, seeded data order:
  :class:`CharDataModule`, :class:`PointerDataModule`, :class:`SymbolFramesDataModule`,
  :class:`ImageDataModule`.
* :mod:`~attnbook.train.engine` -- the Trainer, the ``LightningCLI``, :func:`fit_or_load`, :func:`load_module`.
* :mod:`~attnbook.train.presets` -- the shipped YAML presets.
* :mod:`~attnbook.train.checkpoint` -- atomic checkpoint writes; :mod:`~attnbook.train.callbacks` -- MFU.
* :mod:`~attnbook.train.lock` -- the run folder's lock: one writer at a time.
* :mod:`~attnbook.train.curves` -- :func:`plot_learning_curves` from a run folder.
* :mod:`~attnbook.train.schedule` -- the warm-up + cosine learning-rate schedule.

Names are imported lazily, so ``import attnbook.train`` (and ``attnbook presets``) does not pay for importing
Lightning until an engine name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "NonFiniteLossError": "callbacks",
    "ThroughputMonitor": "callbacks",
    "ThroughputProgressBar": "callbacks",
    "AtomicCheckpointIO": "checkpoint",
    "CorruptCheckpointError": "checkpoint",
    "atomic_torch_save": "checkpoint",
    "plot_learning_curves": "curves",
    "read_metrics": "curves",
    "CharDataModule": "data",
    "EpochSeededSampler": "data",
    "PointerDataModule": "data",
    "SymbolFramesDataModule": "data",
    "ImageDataModule": "data",
    "AttnbookCLI": "engine",
    "EngineOptions": "engine",
    "FitResult": "engine",
    "RunInterrupted": "engine",
    "fit_or_load": "engine",
    "load_module": "engine",
    "trainer_kwargs": "engine",
    "BookModule": "modules",
    "GPTModule": "modules",
    "RunFolderLockedError": "lock",
    "RunLock": "lock",
    "PointerModule": "modules",
    "Seq2SeqModule": "modules",
    "ViTModule": "modules",
    "preset_description": "presets",
    "preset_names": "presets",
    "preset_path": "presets",
    "resolve_config": "presets",
    "warmup_cosine_factor": "schedule",
    "warmup_cosine_scheduler": "schedule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'attnbook.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"attnbook.train.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

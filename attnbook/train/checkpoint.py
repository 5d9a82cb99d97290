"""Atomic checkpoint writes: a crash mid-save never leaves a corrupt ``last.ckpt``.

:class:`AtomicCheckpointIO` serialises the checkpoint into a temporary file in the target's own folder,
flushes and ``fsync``\\ s it, and only then renames it over the target with :func:`os.replace`, which POSIX
and Windows both perform atomically within one file system. A process killed at any instant therefore
leaves either the complete old file or the complete new one under the checkpoint's name; at worst a hidden
``.<name>.<pid>.tmp`` file is left beside it, which the next save of the same name removes.
Remote paths (``s3://...``) fall back to Lightning's own writer.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "atomic_torch_save"]


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` through a temporary file and :func:`os.replace` (see the module docstring)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by an earlier process killed mid-write
        with contextlib.suppress(OSError):
            stale.unlink()
    temporary = _temporary_name(target)
    try:
        with open(temporary, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` plugin whose saves are atomic: ``Trainer(plugins=[AtomicCheckpointIO()])``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"storage_options is not supported by {type(self).__name__}, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)

"""Atomic checkpoint writes and readable checkpoint errors.

:class:`AtomicCheckpointIO` serialises the checkpoint into a temporary file in the target's own folder,
flushes and ``fsync``\\ s it, and only then renames it over the target with :func:`os.replace`, which POSIX
and Windows both perform atomically within one file system. A process killed at any instant therefore
leaves either the complete old file or the complete new one under the checkpoint's name; at worst a hidden
``.<name>.<pid>-<random>.tmp`` file is left beside it. A temporary file belongs to its writer alone: no save
deletes another's (two processes saving the same name each rename their own complete file), so a leftover of a
killed process stays until it is deleted by hand. A write that fails (a full disk) leaves the previous
checkpoint in place, and the error names the file and says so.

A checkpoint that cannot be read (truncated, overwritten, not a checkpoint) raises
:class:`CorruptCheckpointError`, naming the file and how to train it again, instead of an unpickling error.
Remote paths (``s3://...``) fall back to Lightning's own writer and reader.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import secrets
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "CorruptCheckpointError", "atomic_torch_save", "read_checkpoint"]


def retrain_hint(checkpoint: str | os.PathLike[str]) -> str:
    """How to train the run of ``checkpoint`` again, for messages about a checkpoint that cannot be used."""
    path = Path(checkpoint)
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return (
        "train it again with fit_or_load(..., retrain=True) or `attnbook fit ... --engine.overwrite true`, "
        f"or delete the run folder {str(folder)!r}"
    )


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names the file and how to train it again."""


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` through a temporary file and :func:`os.replace` (see the module docstring).

    An ``OSError`` while writing (``ENOSPC``: no space left) is raised again with the same ``errno`` and a
    message naming ``path`` and saying that its previous content, if any, is intact.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_name(target)
    try:
        with open(temporary, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
            previous = (
                f"the previous checkpoint at {str(target)!r} is intact"
                if target.is_file()
                else "no earlier checkpoint was there"
            )
            raise OSError(err.errno, f"could not write the checkpoint {str(target)!r} ({err}); {previous}") from err
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


#: What torch.load raises for a file that is not a whole checkpoint (truncated zip, garbage, empty file).
_UNREADABLE = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, UnicodeDecodeError)


@contextlib.contextmanager
def _naming_unreadable(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn torch.load's errors about a file that is not a whole checkpoint into CorruptCheckpointError."""
    try:
        yield
    except (*_UNREADABLE, RuntimeError, OSError) as err:
        if isinstance(err, RuntimeError) and "PytorchStreamReader" not in str(err):
            raise  # e.g. a CUDA checkpoint on a machine without a GPU: not a corrupt file
        if isinstance(err, OSError) and err.errno != errno.EINVAL:
            raise  # a missing or unreadable file, not a corrupt one (a zip cut short gives EINVAL)
        reason = " ".join(str(err).split()).split(". ")[0]
        raise CorruptCheckpointError(
            f"the checkpoint {str(path)!r} is corrupt or incomplete and cannot be loaded "
            f"({type(err).__name__}: {reason}); {retrain_hint(path)}"
        ) from err


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load`` of a checkpoint file; :class:`CorruptCheckpointError` naming it when it cannot be read."""
    with _naming_unreadable(path):
        return torch.load(path, map_location=map_location, weights_only=False)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` plugin whose saves are atomic: ``Trainer(plugins=[AtomicCheckpointIO()])``.

    Loading reports an unreadable file as :class:`CorruptCheckpointError`.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"storage_options is not supported by {type(self).__name__}, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        with _naming_unreadable(path):
            return super().load_checkpoint(path, *args, **kwargs)

"""One writer per run folder: :class:`RunLock`, a lock file that names its holder.

A run that writes a folder (``attnbook fit``, :func:`~attnbook.train.engine.fit_or_load` when it trains) holds
``run_dir/run.lock`` for as long as it writes. The file records the holder -- process id, host, start time and
command -- and is locked with the operating system's advisory file lock (``flock`` on POSIX, ``msvcrt.locking``
on Windows), which the system releases when the process dies however it dies. So a second writer is refused
with an error naming the folder and the holder (or waits for it, ``wait=True``), while a lock file left by a
killed process is recognised as stale -- its file lock is gone -- reported, and taken over. Taking over is
safe against a race of two newcomers: only one can hold the file lock, and each checks after locking that the
file it locked is still the one at the path (a releasing holder deletes it).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

__all__ = ["LOCK_FILE", "RunFolderLockedError", "RunLock"]

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
_WINDOWS_LOCK_OFFSET = 1 << 30  # msvcrt locks a byte range; lock one far past the holder's text, which stays readable


class RunFolderLockedError(RuntimeError):
    """Another process writes to this run folder; the message names the folder and the holder."""


def _try_lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown process (its lock file is empty)"
    return (
        f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')} "
        f"({holder.get('command', '?')})"
    )


def _parse(text: str) -> dict[str, Any] | None:
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


class RunLock:
    """The lock of one run folder: ``with RunLock(run_dir): ...`` (or :meth:`acquire` / :meth:`release`).

    Args:
        folder: the run folder (created if missing).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict[str, Any] | None:
        """What the lock file says about its holder (``None``: no lock file, or an unreadable one)."""
        try:
            return _parse(self.path.read_text(encoding="utf-8"))
        except OSError:
            return None

    def acquire(self, wait: bool = False, poll_seconds: float = 0.5) -> RunLock:
        """Take the lock; if another live process holds it, raise :class:`RunFolderLockedError` or, with ``wait``,
        wait until it is released. A lock left by a process that died is taken over (with a warning)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(
                err.errno, f"cannot create the run folder {str(self.folder)!r} to write a run: {err}"
            ) from err
        waited = False
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise OSError(err.errno, f"cannot write to the run folder {str(self.folder)!r}: {err}") from err
            if not _try_lock(fd):
                os.close(fd)
                holder = self.holder()
                message = f"the run folder {str(self.folder)!r} is in use by another run: {_describe(holder)}"
                if not wait:
                    raise RunFolderLockedError(f"{message}; wait for it to finish, or pick another --engine.run_dir")
                if not waited:
                    log.warning("%s; waiting for it to finish", message)
                    waited = True
                time.sleep(poll_seconds)
                continue
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if not same_file:  # its holder deleted it as we locked it: lock the new file
                _unlock(fd)
                os.close(fd)
                continue
            break
        with os.fdopen(os.dup(fd), "r+", encoding="utf-8") as handle:
            previous = handle.read()
            if previous.strip():  # nobody held the lock, yet the file names a holder: it died without releasing
                log.warning(
                    "%s: taking over a stale lock of %s, which is no longer running",
                    self.folder,
                    _describe(_parse(previous)),
                )
            me = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
            }
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(me))
            handle.flush()
            os.fsync(handle.fileno())
        self._fd = fd
        return self

    def release(self) -> None:
        """Delete the lock file and release the lock (nothing if not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink()
        except OSError:  # Windows cannot delete an open file: empty it, so the next holder sees no stale holder
            os.ftruncate(fd, 0)
        try:
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

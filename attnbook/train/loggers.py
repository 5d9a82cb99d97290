"""A CSV logger that appends when a run is resumed.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` whenever it opens a non-empty folder, so resuming a run
into its own folder would erase the history of the epochs before the interruption. :class:`ResumableCSVLogger`
keeps the file and appends to it (learning the existing columns from its header, and dropping a half-written
last row left by a killed process). When new columns appear the file is rewritten atomically (Lightning
rewrites it in place, so a kill at that moment would lose the whole history). The engine clears the
folder's logs itself for a fresh run (``fit`` without ``--ckpt_path``; :func:`attnbook.train.engine.clear_run_logs`).
:class:`MetricsLogCursor` drops, on resuming, the rows logged after the checkpoint resumed from.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

__all__ = ["MetricsLogCursor", "ResumableCSVLogger"]


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # the parent deletes metrics.csv here; keep it
        path = self.metrics_file_path
        if not os.path.isfile(path):
            return
        with open(path, "rb") as handle:
            content = handle.read()
        if content and not content.endswith(b"\n"):  # a process killed mid-append left half a row: drop it
            with open(path, "r+b") as handle:
                handle.truncate(content.rfind(b"\n") + 1)
        with open(path, newline="") as handle:
            header = next(csv.reader(handle), [])
        self.metrics_keys = sorted(key for key in header if key)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """Rewrite the file with more columns through a temporary file and ``os.replace`` (atomic)."""
        with open(self.metrics_file_path, newline="") as file:
            rows = list(csv.DictReader(file))
        temporary = f"{self.metrics_file_path}.{os.getpid()}.tmp"
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.metrics_file_path)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``save_dir/name/version/metrics.csv``, appending to an existing file.

    Arguments as ``CSVLogger``'s.
    """

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def _data_rows(path: str) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


class MetricsLogCursor(Callback):
    """Keeps ``metrics.csv`` in step with the checkpoints: a resumed run logs each step once.

    Every checkpoint records how many rows the log had when it was written (the log is flushed first); resuming
    from it drops the rows logged after it -- by a run interrupted (Ctrl-C flushes the log) or killed later --
    which the resumed run logs again.
    """

    def __init__(self, logger: ResumableCSVLogger) -> None:
        self.logger = logger

    def state_dict(self) -> dict[str, Any]:
        self.logger.save()
        path = self.logger.experiment.metrics_file_path
        return {"metrics_rows": max(len(_data_rows(path)) - 1, 0) if os.path.isfile(path) else 0}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        path = self.logger.experiment.metrics_file_path
        keep = state_dict.get("metrics_rows")
        if keep is None or not os.path.isfile(path):
            return
        rows = _data_rows(path)
        if len(rows) <= keep + 1:
            return
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w", newline="") as handle:
            csv.writer(handle).writerows(rows[: keep + 1])
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

"""A CSV logger that appends when a run is resumed.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` whenever it opens a non-empty folder, so resuming a run
into its own folder would erase the history of the epochs before the interruption. :class:`ResumableCSVLogger`
keeps the file and appends to it (learning the existing columns from its header, and dropping a half-written
last row left by a killed process). When new columns appear the file is rewritten atomically (Lightning
rewrites it in place, so a kill at that moment would lose the whole history). The engine clears the
folder's logs itself for a fresh run (``fit`` without ``--ckpt_path``; :func:`attnbook.train.engine.clear_run_logs`).
"""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

__all__ = ["ResumableCSVLogger"]


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

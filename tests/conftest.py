"""Shared test setup: offline references, the torchvision op shim, and the per-chapter time limit."""

from __future__ import annotations

import os
import time

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Two pytest workers share two cores; the tests' tensors are small, so one thread each is fastest.
torch.set_num_threads(1)

# PyPI's torchvision wheels are CUDA builds; beside the CPU torch wheel their meta registrations fail with
# "operator torchvision::nms does not exist", which breaks importing timm and transformers. Defining the two
# op schemas first lets the pure-Python parts import (no compiled torchvision op is used by the tests).
try:
    _TV_LIB = torch.library.Library("torchvision", "DEF")
    _TV_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TV_LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
except RuntimeError:  # already defined (a real torchvision build, or a second import)
    pass

#: Seconds one chapter may take to execute at the quick size (CPU, 2 cores); ~1 minute is the target.
CHAPTER_TIME_LIMIT = float(os.environ.get("ATTNBOOK_CHAPTER_TIME_LIMIT", "240"))
_chapter_started: dict[str, float] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Fail a chapter's cell once the chapter as a whole has run longer than CHAPTER_TIME_LIMIT."""
    path = str(item.path)
    if not path.endswith(".ipynb"):
        return (yield)
    start = _chapter_started.setdefault(path, time.perf_counter())
    result = yield
    elapsed = time.perf_counter() - start
    if elapsed > CHAPTER_TIME_LIMIT:
        pytest.fail(f"{item.path.name} has run {elapsed:.0f} s, over its {CHAPTER_TIME_LIMIT:.0f} s limit")
    return result


#: The torchvision op shim above, as code for a fresh interpreter (a subprocess that imports Lightning needs it).
SUBPROCESS_SHIM = """
import torch
try:
    _lib = torch.library.Library("torchvision", "DEF")
    _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
except RuntimeError:
    pass
"""


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """The environment of a real subprocess running this checkout's attnbook on one thread."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # same arithmetic in every run, no oversubscription
    env["PYTHONPATH"] = os.pathsep.join([str(repo), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.fixture
def attnbook_command() -> list[str]:
    """The ``attnbook`` command as a real process (with the shim): ``[*attnbook_command, "fit", ...]``."""
    import sys

    return [sys.executable, "-c", SUBPROCESS_SHIM + "import sys\nfrom attnbook.cli import main\nsys.exit(main())\n"]


@pytest.fixture
def subprocess_shim() -> str:
    """:data:`SUBPROCESS_SHIM`: the first lines of a script a subprocess runs if it imports Lightning."""
    return SUBPROCESS_SHIM


@pytest.fixture
def make_read_only(tmp_path_factory: pytest.TempPathFactory):
    """``make_read_only(folder)`` makes a folder tree read-only until the test ends, like a read-only share.

    Skips the test where permissions do not apply: root ignores them (run the test as a user, or as root without
    the capability: ``setpriv --bounding-set -dac_override,-dac_read_search pytest ...``).
    """
    changed: list[tuple[object, int]] = []

    def apply(folder: os.PathLike[str]) -> None:
        from pathlib import Path

        probe = tmp_path_factory.mktemp("probe")
        probe.chmod(0o555)
        try:
            (probe / "written").touch()
            pytest.skip("this user ignores file permissions (root): a read-only test could not fail")
        except PermissionError:
            pass
        finally:
            probe.chmod(0o755)
        for path in [Path(folder), *Path(folder).rglob("*")]:
            changed.append((path, path.stat().st_mode))
            path.chmod(0o555 if path.is_dir() else 0o444)

    yield apply
    for path, mode in reversed(changed):
        os.chmod(path, mode)


@pytest.fixture
def logged_steps():
    """``logged_steps(run_dir, metric)``: the step of every row of ``metrics.csv`` that holds ``metric``, in file
    order (unlike ``read_metrics``, which keeps one value per step, this shows a step logged twice)."""
    import csv
    from pathlib import Path

    def steps(run_dir: os.PathLike[str], metric: str = "train/loss") -> list[int]:
        with (Path(run_dir) / "metrics.csv").open(newline="") as handle:
            return [int(row["step"]) for row in csv.DictReader(handle) if row.get(metric)]

    return steps

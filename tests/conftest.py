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

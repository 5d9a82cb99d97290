"""The development venv (scripts/setup.sh) runs the book's commands although timm pulled PyPI's torchvision."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="no torchvision in this environment")
def test_lightning_and_timm_import_outside_pytest():
    """A kernel or an `attnbook fit` in the dev venv has no conftest shim: the venv's own hook must do it."""
    code = "import lightning.pytorch, timm, torchvision; print('imported')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-2000:]

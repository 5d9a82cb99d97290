"""The package, tests, benchmarks and scripts are ruff-clean and ruff-formatted (config in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["attnbook", "tests", "benchmarks", "scripts"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (it is in the dev extras)")
    return subprocess.run([ruff, *args, *FOLDERS], cwd=ROOT, capture_output=True, text=True)


def test_ruff_clean():
    result = _ruff("check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_formatted():
    result = _ruff("format", "--check")
    assert result.returncode == 0, f"run: ruff format {' '.join(FOLDERS)}\n{result.stdout}{result.stderr}"

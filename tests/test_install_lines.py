"""Each chapter's first cell installs every package the chapter imports (read statically: ast over its code cells,
import names mapped to the distributions that provide them), and the extras it names exist in pyproject.toml.

Independent of scripts/install_cells.py, which writes those cells: this test parses what the cell says."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import install_cells  # noqa: E402
from sync_notebooks import notebook_from_markdown  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: What every Jupyter kernel has (Colab included).
KERNEL = {"ipython", "ipykernel"}


def _dist(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)).lower()


def _install_line(first_cell: str) -> tuple[list[str], str]:
    """The `needs, extras = [...], "..."` assignment of an install cell, evaluated as literals."""
    for node in ast.walk(ast.parse(first_cell)):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple):
            names = [t.id for t in node.targets[0].elts]
            if names == ["needs", "extras"]:
                needs, extras = ast.literal_eval(node.value)
                return needs, extras
    raise AssertionError(f"no `needs, extras = ...` line in the first cell:\n{first_cell}")


def _imports(sources: list[str]) -> set[str]:
    found = set()
    for source in sources:
        tree = ast.parse("\n".join("" if re.match(r"\s*[%!]", line) else line for line in source.splitlines()))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                found.add(node.module.partition(".")[0])
    return found - set(sys.stdlib_module_names) - {"attnbook"}


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_first_cell_installs_every_import(md: Path):
    code = [c.source for c in notebook_from_markdown(md).cells if c.cell_type == "code"]
    needs, extras = _install_line(code[0])
    assert needs[0] == "attnbook" and "pip" in code[0] and "ATTNBOOK_SOURCE" in code[0]
    named = re.fullmatch(r"(?:\[([\w,-]+)\])?", extras)
    assert named, f"extras must look like [book] or be empty, got {extras!r}"
    chosen = named.group(1).split(",") if named.group(1) else []
    optional = PROJECT["optional-dependencies"]
    assert all(extra in optional and extra != "dev" for extra in chosen), f"unknown extra in {extras}"
    installed = {_dist(r) for r in PROJECT["dependencies"]} | {_dist(r) for e in chosen for r in optional[e]}
    core = {_dist(r) for r in PROJECT["dependencies"]} | KERNEL
    provided = packages_distributions()
    for module in sorted(_imports(code)):
        dists = {_dist(d) for d in provided.get(module, [])}
        assert dists, f"{md.name} imports {module!r}, which no installed distribution provides"
        assert dists & (installed | KERNEL), (
            f"{md.name} imports {module!r} ({sorted(dists)}) but its first cell installs only attnbook{extras}: "
            "run scripts/install_cells.py (after adding the package to the `book` extra)"
        )
        if not dists & core:
            assert module in needs, f"{md.name}: the first cell must check for {module!r} before skipping the install"


def test_install_cells_are_current():
    assert install_cells.stale() == [], "run: python scripts/install_cells.py"


def test_book_extra_is_part_of_dev():
    optional = PROJECT["optional-dependencies"]
    assert set(optional["book"]) <= set(optional["dev"]), "dev installs what the chapters import, at the same pins"


@pytest.mark.parametrize(
    ("source", "extras", "requirement"),
    [
        ("git+https://github.com/o/r", "[book]", "attnbook[book] @ git+https://github.com/o/r"),
        ("/tmp/attnbook-0.1.0-py3-none-any.whl", "[book]", "/tmp/attnbook-0.1.0-py3-none-any.whl[book]"),
        ("/src/attention-derived", "", "/src/attention-derived"),
    ],
)
def test_install_cell_runs_pip_with_the_right_requirement(monkeypatch, source: str, extras: str, requirement: str):
    cell = install_cells.install_cell(["attnbook", "a_module_that_is_missing"], extras)
    monkeypatch.setenv("ATTNBOOK_SOURCE", source)
    with mock.patch("subprocess.run") as run:
        exec(compile(cell, "install-cell", "exec"), {})
    assert run.call_args.args[0][-1] == requirement
    assert run.call_args.args[0][1:4] == ["-m", "pip", "install"]


def test_install_cell_installs_nothing_when_everything_is_there():
    with mock.patch("subprocess.run") as run:
        exec(compile(install_cells.install_cell(["attnbook", "json"], "[book]"), "install-cell", "exec"), {})
    assert not run.called

"""Consistency gates: notebook pairs in sync, the chapter contract, and environment.yml vs pyproject.toml."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from sync_notebooks import stale_pairs  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))

#: The contract's sections, in order (CONVENTIONS.md section 1); a heading may continue after them ("Experiment: ...").
REQUIRED = [
    "What you will learn",
    "The idea",
    "Derivation",
    "Implementation",
    "Check",
    "Experiment",
    "Promote",
    "Exercises",
    "Summary and references",
]
OPTIONAL = ["Cost"]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 3


def test_notebook_pairs_in_sync():
    assert stale_pairs() == [], "run: python scripts/sync_notebooks.py"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_chapter_contract(md: Path):
    text = md.read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    found = [name for h in headings for name in REQUIRED + OPTIONAL if h.startswith(name)]
    assert [n for n in found if n in REQUIRED] == REQUIRED, f"{md.name}: sections {headings}"
    if "Cost" in found:
        assert found.index("Cost") == found.index("Experiment") + 1, "Cost comes right after Experiment"
    assert re.search(r"^# ", text, flags=re.M), "a chapter has a title"
    objectives = text.split("## What you will learn", 1)[1].split("\n## ", 1)[0]
    assert 3 <= len(re.findall(r"^[-*] |^\d+\. ", objectives, flags=re.M)) <= 6, "3 to 5 objectives"
    exercises = text.split("## Exercises", 1)[1].split("\n## ", 1)[0]
    assert 3 <= exercises.count(":::{dropdown}") + exercises.count("```{dropdown}") <= 6, "3-6 solved exercises"
    assert "assert " in text, "the experiment asserts its outcome"
    assert "ATTNBOOK_SOURCE" in text, "the first code cell installs attnbook when it is missing"


def _names(requirements: list[str]) -> dict[str, str]:
    out = {}
    for req in requirements:
        m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", req.strip())
        assert m, req
        out[m.group(1).lower().replace("_", "-")] = m.group(3).replace(" ", "")
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_names = {"pytorch": "torch"}
    have: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            have.update(_names([d for d in dep["pip"] if not d.startswith("-e")]))
        else:
            name, spec = re.match(r"^([A-Za-z0-9_.-]+)(.*)$", dep).groups()
            have[conda_names.get(name, name)] = spec
    missing = {n: s for n, s in wanted.items() if n not in have}
    assert not missing, f"environment.yml lacks {missing}"
    differ = {n: (s, have[n]) for n, s in wanted.items() if have[n] != s}
    assert not differ, f"versions differ (pyproject, environment.yml): {differ}"

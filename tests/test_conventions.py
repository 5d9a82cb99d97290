"""The second-edition conventions every chapter follows (CONTRIBUTING.md): labels and linked cross-references,
a mechanism diagram drawn by a script, and exercises whose solutions the test suite executes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))


def _markdown(text: str) -> str:
    """The chapter's prose: everything outside code cells and fenced code blocks."""
    return re.sub(r"^(```+).*?^\1\s*$", "", text, flags=re.M | re.S)


def _code_cells(text: str) -> list[tuple[list[str], str]]:
    """(tags, source) of every code cell."""
    cells = []
    for body in re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", text, flags=re.M | re.S):
        tags = re.search(r"^:tags:\s*\[([^\]]*)\]", body, flags=re.M)
        cells.append(([t.strip() for t in tags.group(1).split(",")] if tags else [], body))
    return cells


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_chapter_label_above_title(md: Path):
    number = md.name[:2]
    assert re.search(rf"^\(ch{number}\)=\n# {number}\. ", md.read_text(), flags=re.M), (
        f"{md.name}: put `(ch{number})=` on the line above the `# {number}. ...` title"
    )


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_chapter_mentions_are_links(md: Path):
    """'chapter 05' in prose is a link to the chapter's label, not plain text."""
    prose = _markdown(md.read_text())
    written = {p.name[:2] for p in CHAPTERS}
    plain = [m.group(0) for m in re.finditer(r"(?<!\[)\b[Cc]hapter (\d\d)\b", prose) if m.group(1) in written]
    assert not plain, f"{md.name}: link these as [chapter NN](#chNN): {plain}"
    for target in re.findall(r"\]\(#(ch\d\d)\)", prose):
        assert target[2:] in written, f"{md.name}: link to #{target}, which is not a written chapter"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_a_mechanism_diagram(md: Path):
    number = md.name[:2]
    figures = re.findall(r"^:::\{figure\} (images/[^\s]+\.svg)", md.read_text(), flags=re.M)
    ours = [f for f in figures if Path(f).name.startswith(f"{number}-")]
    assert ours, f"{md.name}: no diagram (:::{{figure}} images/{number}-<name>.svg)"
    for f in ours:
        assert (ROOT / "chapters" / f).is_file(), f"{md.name}: {f} does not exist"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_every_exercise_has_a_solution_that_runs(md: Path):
    text = md.read_text()
    exercises = text.split("## Exercises", 1)[1].split("\n## ", 1)[0]
    dropdowns = exercises.count(":::{dropdown}")
    cells = _code_cells(exercises)
    solutions = [src for tags, src in cells if "solution" in tags]
    checks = [src for tags, src in cells if "exercise-check" in tags]
    assert 3 <= dropdowns <= 6, f"{md.name}: {dropdowns} exercises"
    assert len(solutions) == dropdowns, f"{md.name}: {dropdowns} exercises but {len(solutions)} solution cells"
    assert len(checks) == dropdowns, f"{md.name}: {dropdowns} exercises but {len(checks)} exercise-check cells"
    for src in solutions:
        assert "### BEGIN SOLUTION" in src and "### END SOLUTION" in src, f"{md.name}: solution without markers"
    for src in checks:
        assert "assert" in src, f"{md.name}: an exercise-check cell asserts nothing"


def test_diagrams_match_their_scripts():
    scripts = sorted((ROOT / "scripts" / "diagrams").glob("ch[0-9][0-9]_*.py"))
    assert scripts, "no diagram scripts"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "diagrams" / "build.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cell_ids_are_unique_across_the_book():
    """The site builds every chapter into one project, in which a cell id may appear only once."""
    seen: dict[str, str] = {}
    for nb in sorted((ROOT / "chapters").glob("[0-9][0-9]-*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            assert cell["id"] not in seen, f"cell id {cell['id']} is in {seen.get(cell['id'])} and {nb.name}"
            seen[cell["id"]] = nb.name
    assert seen

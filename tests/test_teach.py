"""The teaching editions (scripts/teach.py): for every chapter, an instructor edition in nbgrader's source format and
a student edition with the exercises blanked.

What is proven where:
- here, for every chapter, without executing it: the instructor edition's code cells are the chapter's reader
  notebook's, in order (so the chapter's one execution in CI, scripts/execute_chapters.py, runs the instructor
  edition and every test cell in it passes); the student edition's code cells before its first blank are the
  chapter's too, and from there on differ only by the blanks; metadata and markdown are as nbgrader wants them;
- in scripts/execute_chapters.py, in each chapter's kernel after its execution: each test cell fails with its own
  solution undone, and the student edition from its first blank on runs as a student meets it (blanks raise
  NotImplementedError, tests fail, other cells run). The harness is tested below on a small notebook with a test
  that cannot fail;
- with ATTNBOOK_NBGRADER=<bin folder of a venv with nbgrader> (CI: scripts/test.sh): a real nbgrader course on
  chapter 03: generate_assignment gives our student edition, and autograde gives the instructor edition full marks
  and the blank student edition none.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from reader_notebooks import all_targets, parse_bibtex, reader_notebook  # noqa: E402
from teach import (  # noqa: E402
    CODE_STUB,
    MD_BEGIN,
    MD_END,
    NBGRADER_MARKERS,
    TEST_POINTS,
    TEXT_STUB,
    StudentRun,
    bound_names,
    clear_solution,
    instructor_edition,
    student_edition,
    student_run,
)

CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))
TARGETS = all_targets()
REFERENCES = parse_bibtex((ROOT / "references.bib").read_text())


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(scope="module", params=CHAPTERS, ids=lambda p: p.name)
def editions(request):
    md = request.param
    reader = reader_notebook(md, TARGETS, REFERENCES)
    instructor = instructor_edition(md, TARGETS, REFERENCES)
    return md, reader, instructor, student_edition(instructor)


def test_instructor_edition_is_the_reader_notebook_with_nbgrader_metadata(editions):
    md, reader, instructor, _ = editions
    assert [c.source for c in _code(instructor)] == [c.source for c in _code(reader)], (
        f"{md.name}: the instructor edition's code cells are not the chapter's (so its execution does not prove them)"
    )
    assert len(instructor.cells) == len(reader.cells)
    ids = [c.metadata["nbgrader"]["grade_id"] for c in instructor.cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids)), f"{md.name}: duplicate grade_ids {ids}"
    n = len(ids) // 3
    assert n >= 3 and ids == [f"ex{k}-{part}" for k in range(1, n + 1) for part in ("answer", "code", "tests")], ids
    for ours, theirs in zip(instructor.cells[1:], reader.cells[1:], strict=True):
        meta = ours.metadata.get("nbgrader")
        if meta is None:
            assert ours.source == theirs.source, f"{md.name}: a cell without nbgrader metadata changed"
            assert not any(m in ours.source for m in NBGRADER_MARKERS), f"{md.name}: a marker outside an exercise"
        elif meta["grade_id"].endswith("-answer"):
            assert ours.cell_type == "markdown" and meta["solution"] and meta["grade"] and meta["points"] > 0
            unmarked = re.sub(rf"^[ \t]*{MD_BEGIN}\n|\n[ \t]*{MD_END}$", "", ours.source, flags=re.M)
            assert unmarked == theirs.source
            assert "<summary>Solution</summary>" in ours.source.split(MD_BEGIN)[1].split(MD_END)[0]
        elif meta["grade_id"].endswith("-code"):
            assert "solution" in ours.metadata["tags"] and meta["solution"] and not meta["grade"]
        else:
            assert "exercise-check" in ours.metadata["tags"] and meta["grade"] and meta["locked"]
            assert meta["points"] == TEST_POINTS and not meta["solution"]


def test_student_edition_is_the_chapter_with_blanks(editions):
    md, reader, instructor, student = editions
    run = student_run(reader, md, TARGETS, REFERENCES)  # raises if the cells before the first blank differ
    code = _code(student)
    assert [c.source for c in code[: run.first]] == [c.source for c in _code(reader)[: run.first]]
    assert "solution" in code[run.first].metadata["tags"], "the first blank is the first solution cell"
    for solution, test in run.pairs:
        assert code[solution].source.endswith(CODE_STUB) and "BEGIN SOLUTION" not in code[solution].source
        assert code[test].source == _code(reader)[test].source, "a test cell changed"
    text = nbformat.writes(student)
    for forbidden in ("BEGIN SOLUTION", "END SOLUTION", "<summary>Solution</summary>", "{cite", ":::{", "{eq}"):
        assert forbidden not in text, f"{md.name}: the student edition contains {forbidden!r}"
    answers = [c for c in student.cells if c.metadata.get("nbgrader", {}).get("grade_id", "").endswith("-answer")]
    assert len(answers) == len(run.pairs) and all(c.source.endswith(TEXT_STUB) for c in answers)
    assert all(c.get("outputs", []) == [] for c in code)


def test_editions_are_deterministic():
    md = CHAPTERS[0]
    first = nbformat.writes(student_edition(instructor_edition(md, TARGETS, REFERENCES)))
    assert first == nbformat.writes(student_edition(instructor_edition(md)))


def test_clear_solution_follows_nbgrader():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\n\ny = f(1)"
    assert clear_solution(source, CODE_STUB) == (
        "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\n\ny = f(1)"
    )
    with pytest.raises(ValueError, match="without END"):
        clear_solution("### BEGIN SOLUTION\nx = 1", CODE_STUB)


def test_bound_names_over_approximate_what_a_cell_binds():
    source = "import numpy as np\nfrom math import exp\nfor i, (a, b) in enumerate([]):\n    pass\n"
    source += "def f():\n    local = 1\nclass C: ...\nwith open('x') as fh: ...\n%time z = 1\n"
    assert bound_names(source) >= {"np", "exp", "i", "a", "b", "f", "local", "C", "fh", "z"}
    assert bound_names("%%timeit\nt = 2\n") >= {"t"}


def _kernel_available() -> bool:
    from jupyter_client.kernelspec import KernelSpecManager

    return "python3" in KernelSpecManager().find_kernel_specs()


@pytest.mark.skipif(not _kernel_available(), reason="no python3 Jupyter kernel in this environment")
def test_the_student_edition_proof_catches_tests_that_cannot_fail(tmp_path: Path):
    """execute_chapters' proof on a small notebook: exercise 1's test is sound; exercise 2's asserts on a name
    the chapter made (it cannot fail); exercise 3's asserts only on exercise 1's result (it passes with its own
    solution undone)."""
    from execute_chapters import run_notebook

    def cell(source: str, *tags: str):
        return nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)})

    solution = "### BEGIN SOLUTION\n{}\n### END SOLUTION"
    cells = [
        cell("x = 1"),
        cell(solution.format("y = x + 1"), "solution"),
        cell("assert y == 2", "exercise-check"),
        cell(solution.format("z = 3"), "solution"),
        cell("assert x == 1", "exercise-check"),
        cell(solution.format("w = y * 2"), "solution"),
        cell("assert y == 2", "exercise-check"),
        cell("print(x)"),
    ]

    def prove(cells) -> tuple[str | None, str]:
        nb = nbformat.v4.new_notebook(cells=cells)
        code = [c.source for c in cells]
        student = [clear_solution(s, CODE_STUB) for s in code]
        pairs = [(i, i + 1) for i, c in enumerate(cells) if "solution" in c.metadata["tags"]]
        names = {i: sorted(bound_names(code[i])) for i in range(pairs[0][0], len(code))}
        _, error, note = run_notebook(nb, "python3", tmp_path, 120, StudentRun(pairs[0][0], student, pairs, names))
        assert [c.execution_count for c in nb.cells] == list(range(1, len(cells) + 1)), "the notebook's own run"
        assert nb.cells[-1].outputs[0]["text"] == "1\n"
        return error, note

    error, _ = prove(cells)
    assert error is not None
    assert "exercise 1" not in error, error
    assert "exercise 2's test passes with its solution undone" in error, error
    assert "exercise 2's test passes in the student edition" in error, error
    assert "exercise 3's test passes with its solution undone" in error, error
    assert "exercise 3's test passes in the student edition" not in error, error  # y is blank there too
    error, note = prove([*cells[:3], cells[-1]])
    assert error is None and "1 blanks fail their tests" in note, (error, note)


# ----------------------------------------------------------------------------------------------------------------
# A real nbgrader course on chapter 03 (CI: scripts/test.sh makes a venv with the `teach` extra)

NBGRADER = os.environ.get("ATTNBOOK_NBGRADER")

GRADES = """
import json, sys
from nbgrader.api import Gradebook
with Gradebook("sqlite:///gradebook.db", "attnbook") as gb:
    print(json.dumps({s: {g.name: g.to_dict() for g in gb.find_submission_notebook(sys.argv[1], "ch03", s).grades}
                      for s in ("instructor", "blank")}))
"""


@pytest.mark.skipif(not NBGRADER, reason="set ATTNBOOK_NBGRADER to the bin folder of a venv with nbgrader")
def test_nbgrader_generates_and_autogrades_chapter_03(tmp_path: Path):
    md = next(md for md in CHAPTERS if md.name.startswith("03-"))
    name = md.with_suffix(".ipynb").name
    course = tmp_path / "course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text('c = get_config()\nc.CourseDirectory.course_id = "attnbook"\n')
    bin_dir = Path(NBGRADER)
    # nbgrader runs from its own venv; the kernel that grades is this environment's (attnbook installed).
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter"),
    }
    seconds = {}

    def step(label: str, *command: str) -> str:
        start = time.monotonic()
        done = subprocess.run(command, cwd=course, env=env, capture_output=True, text=True)
        seconds[label] = time.monotonic() - start
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    teach = [sys.executable, str(ROOT / "scripts" / "teach.py"), "release", "--chapters", "03"]
    step("release", *teach, "--course", str(course), "--out", str(tmp_path / "editions"))
    step("generate_assignment", str(bin_dir / "nbgrader"), "generate_assignment", "ch03")
    released = nbformat.read(course / "release" / "ch03" / name, as_version=4)
    ours = nbformat.read(tmp_path / "editions" / "student" / name, as_version=4)
    assert [(c.cell_type, c.source) for c in released.cells] == [(c.cell_type, c.source) for c in ours.cells]
    roles = ("grade", "grade_id", "solution", "locked", "points")
    for theirs, mine in zip(released.cells, ours.cells, strict=True):
        meta_theirs, meta_mine = theirs.metadata.get("nbgrader", {}), mine.metadata.get("nbgrader", {})
        assert {k: meta_theirs.get(k) for k in roles} == {k: meta_mine.get(k) for k in roles}
    for student, edition in (("instructor", "instructor"), ("blank", "student")):
        target = course / "submitted" / student / "ch03"
        target.mkdir(parents=True)
        (target / name).write_text((tmp_path / "editions" / edition / name).read_text())
    step("autograde", str(bin_dir / "nbgrader"), "autograde", "ch03", "--create", "--Execute.timeout=600")
    grades = json.loads(step("grades", str(bin_dir / "python"), "-c", GRADES, md.stem))
    print(", ".join(f"{label} {s:.1f} s" for label, s in seconds.items()))
    tests = [g for g in grades["instructor"] if g.endswith("-tests")]
    assert len(tests) >= 3
    for g in tests:
        assert grades["instructor"][g]["auto_score"] == grades["instructor"][g]["max_score"] == TEST_POINTS, g
        assert grades["blank"][g]["auto_score"] == 0, g
    for g in (g for g in grades["instructor"] if g.endswith("-answer")):
        assert grades["instructor"][g]["needs_manual_grade"], g  # a written answer: the teacher grades it
        assert grades["blank"][g]["auto_score"] == 0 and not grades["blank"][g]["needs_manual_grade"], g

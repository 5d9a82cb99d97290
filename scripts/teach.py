"""Teaching editions of the chapters, in nbgrader's format: an instructor edition and a student edition.

    python scripts/teach.py release --out DIR                  # every chapter: DIR/instructor/, DIR/student/
    python scripts/teach.py release --chapters 03 --out DIR    # some chapters
    python scripts/teach.py release --chapters 03 --course C   # also C/source/ch03/NN-slug.ipynb for nbgrader
    python scripts/teach.py venv DIR                           # a venv with nbgrader (the `teach` extra) only

The **instructor edition** is the chapter's reader notebook (scripts/reader_notebooks.py: the MyST syntax turned
into plain Jupyter markdown, the same code cells in the same order) with nbgrader's cell metadata on each exercise:

- the markdown cell that states exercise k holds its prose solution (the folded "Solution") between
  `<!-- BEGIN SOLUTION -->` and `<!-- END SOLUTION -->`: a manually graded answer (`grade_id` `exk-answer`);
- the solution code cell (`### BEGIN SOLUTION` ... `### END SOLUTION`, as in the chapter) is a solution cell
  (`exk-code`);
- the exercise-check cell after it is an autograded test cell (`exk-tests`, TEST_POINTS points).

It is nbgrader's *source* version: put it in a course's `source/<assignment>/` folder and
`nbgrader generate_assignment <assignment>` makes the student version. The **student edition** is that version,
made here without nbgrader: each solution region becomes nbgrader's stub (`# YOUR CODE HERE` +
`raise NotImplementedError()` in code, `YOUR ANSWER HERE` in markdown: the prose solutions are gone), the tests
stay, and the cells are locked as nbgrader locks them. tests/test_teach.py checks both editions; CI runs
nbgrader itself on chapter 03 and compares.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reader_notebooks import SITE_URL, all_targets, chapters, page_url, parse_bibtex, reader_notebook  # noqa: E402
from sync_notebooks import ROOT  # noqa: E402

#: nbgrader's defaults (ClearSolutions.code_stub["python"], .text_stub, .begin/end_solution_delimeter).
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"
BEGIN, END = "BEGIN SOLUTION", "END SOLUTION"
#: The markers of a prose solution: HTML comments, invisible where the instructor edition's markdown is rendered.
MD_BEGIN, MD_END = f"<!-- {BEGIN} -->", f"<!-- {END} -->"
#: Text nbgrader treats as a marker in any cell (solution, hidden-test and mark-scheme regions).
NBGRADER_MARKERS = (BEGIN, END, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "BEGIN MARK SCHEME", "END MARK SCHEME")
TEST_POINTS = 1
ANSWER_POINTS = 1
SOLUTION_DETAILS = re.compile(r"^([ \t]*)<details>\n[ \t]*<summary>Solution</summary>\n.*?^\1</details>$", re.M | re.S)


def _nbgrader(grade_id: str, *, solution: bool, grade: bool, points: int | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3, "solution": solution}
    meta["task"] = False
    if points is not None:
        meta["points"] = points
    return meta


def _header(md: Path) -> nbformat.NotebookNode:
    """The first cell of both editions (nbgrader copies it unchanged into the student version)."""
    return nbformat.v4.new_markdown_cell(
        f"*[Attention, Derived]({SITE_URL}): chapter {md.name[:2]} for teaching, in nbgrader's format. "
        f"[Read it on the website]({page_url(md)}). In the student edition each exercise has a cell that says "
        "`YOUR ANSWER HERE` (write your answer there) and a code cell that says `# YOUR CODE HERE`: replace "
        "`raise NotImplementedError()` by your code, then run the cell after it, which tests what your code "
        "computed. The instructor edition holds the solutions; `nbgrader generate_assignment` makes the student "
        f"edition from it. Generated from `chapters/{md.name}` by `scripts/teach.py`.*"
    )


def instructor_edition(md: Path, targets=None, references=None) -> nbformat.NotebookNode:
    """The chapter's reader notebook with nbgrader metadata on every exercise's answer, solution and test cells."""
    nb = reader_notebook(md, targets, references)
    nb.cells[0] = _header(md)
    nb.cells[0].id = "cell-000"
    tags = [c.metadata.get("tags", []) if c.cell_type == "code" else [] for c in nb.cells]
    solutions = [i for i, t in enumerate(tags) if "solution" in t]
    checks = [i for i, t in enumerate(tags) if "exercise-check" in t]
    answers = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and SOLUTION_DETAILS.search(c.source)]
    if not solutions or not (len(solutions) == len(checks) == len(answers)):
        raise ValueError(
            f"{md.name}: {len(answers)} prose solutions, {len(solutions)} solution cells, {len(checks)} "
            "exercise-check cells: every exercise needs one of each (CONTRIBUTING.md)"
        )
    bounds = [*solutions[1:], len(nb.cells)]
    for k, (answer, solution, check) in enumerate(zip(answers, solutions, checks, strict=True), start=1):
        previous = checks[k - 2] if k > 1 else -1
        if not previous < answer < solution < check < bounds[k - 1]:
            raise ValueError(f"{md.name}: exercise {k}'s solution, code and check cells are not in that order")
        for index in (answer, solution, check):
            if index != solution and any(m in nb.cells[index].source for m in NBGRADER_MARKERS):
                raise ValueError(f"{md.name}: exercise {k} has nbgrader markers outside its solution cell")
        source = nb.cells[solution].source
        if source.count(f"### {BEGIN}") != 1 or source.count(f"### {END}") != 1:
            raise ValueError(f"{md.name}: exercise {k}'s solution cell needs one ### {BEGIN} ... ### {END}")
        cell = nb.cells[answer]
        if len(SOLUTION_DETAILS.findall(cell.source)) != 1:
            raise ValueError(f"{md.name}: exercise {k}'s statement has more than one Solution dropdown")
        cell.source = SOLUTION_DETAILS.sub(
            lambda m: f"{m.group(1)}{MD_BEGIN}\n{m.group(0)}\n{m.group(1)}{MD_END}", cell.source
        )
        cell.metadata["nbgrader"] = _nbgrader(f"ex{k}-answer", solution=True, grade=True, points=ANSWER_POINTS)
        nb.cells[solution].metadata["nbgrader"] = _nbgrader(f"ex{k}-code", solution=True, grade=False)
        nb.cells[check].metadata["nbgrader"] = _nbgrader(f"ex{k}-tests", solution=False, grade=True, points=TEST_POINTS)
    others = [
        i
        for i, c in enumerate(nb.cells)
        if i not in {*answers, *solutions} and any(m in c.source for m in NBGRADER_MARKERS)
    ]
    if others:
        raise ValueError(f"{md.name}: cell {others[0]} has an nbgrader marker (BEGIN/END ...) outside an exercise")
    nbformat.validate(nb)
    return nb


def clear_solution(source: str, stub: str) -> str:
    """nbgrader's ClearSolutions on one cell's source: every line from one containing BEGIN SOLUTION to one
    containing END SOLUTION becomes the stub, indented like the BEGIN line."""
    out, inside = [], False
    for line in source.split("\n"):
        if BEGIN in line:
            if inside:
                raise ValueError("nested BEGIN SOLUTION")
            inside = True
            indent = re.match(r"\s*", line).group(0)
            out += [indent + s for s in stub.split("\n")]
        elif END in line:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("BEGIN SOLUTION without END SOLUTION")
    return "\n".join(out)


def student_edition(instructor: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """What `nbgrader generate_assignment` makes of the instructor edition: solution regions replaced by the stubs,
    outputs cleared, solution cells undeletable and test cells locked (nbgrader's LockCells)."""
    nb = copy.deepcopy(instructor)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            cell.source = clear_solution(cell.source, CODE_STUB if cell.cell_type == "code" else TEXT_STUB)
            cell.metadata["deletable"] = False
        elif meta.get("grade") or meta.get("locked"):
            cell.metadata["deletable"] = False
            cell.metadata["editable"] = False
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def exercises(nb: nbformat.NotebookNode) -> list[tuple[int, int]]:
    """(solution, check) positions among the notebook's code cells, exercise by exercise (by their tags)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    tags = [c.metadata.get("tags", []) for c in code]
    solutions = [i for i, t in enumerate(tags) if "solution" in t]
    checks = [i for i, t in enumerate(tags) if "exercise-check" in t]
    if len(solutions) != len(checks) or any(not s < c for s, c in zip(solutions, checks, strict=False)):
        raise ValueError("every solution cell needs an exercise-check cell after it")
    return list(zip(solutions, checks, strict=True))


def bound_names(source: str) -> set[str]:
    """Every name a cell may bind or delete, at any depth (a superset of what it binds in the notebook's namespace:
    restoring an extra name to its earlier value changes nothing). IPython syntax (magics) is translated first."""
    from IPython.core.inputtransformer2 import TransformerManager

    names: set[str] = set()
    for node in ast.walk(ast.parse(TransformerManager().transform_cell(source))):
        magic = isinstance(node, ast.Call) and getattr(node.func, "attr", "") in {"run_line_magic", "run_cell_magic"}
        if magic and node.args and isinstance(node.args[-1], ast.Constant) and isinstance(node.args[-1].value, str):
            try:  # the code a magic runs (%time x = f(), %%timeit ...) binds names too
                names |= bound_names(node.args[-1].value)
            except SyntaxError:
                pass
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names |= set(node.names)
    return names


@dataclass
class StudentRun:
    """How the chapter's one execution proves its student edition (scripts/execute_chapters.py runs it).

    The student edition's code cells before its first blank are the chapter's own (checked here), so the chapter's
    execution runs them. In the same kernel, each name a cell from the first blank on may bind is saved before
    the first blank and before each solution; after the chapter's last cell,

    1. each exercise alone: the names its solution binds go back to their values before the solution ran (or
       away), and its test cell runs: it must fail;
    2. the student edition: every such name goes back to its value before the first blank, and the student
       edition's cells from the first blank on run in order: each blank raises NotImplementedError, each test cell
       fails, and any other cell runs.

    What a solution changes in place (an object it mutates rather than rebinds) is not undone."""

    first: int  # position of the first blank among the code cells
    student: list[str]  # the student edition's code cells
    pairs: list[tuple[int, int]]  # (solution, test) positions among the code cells
    names: dict[int, list[str]]  # code position >= first -> the names the chapter's cell there may bind

    @property
    def every_name(self) -> list[str]:
        return sorted(set().union(*self.names.values()))


def student_run(nb: nbformat.NotebookNode, md: Path, targets=None, references=None) -> StudentRun:
    """The StudentRun of a chapter about to be executed (nb: its notebook, or its reader notebook); ValueError if
    the student edition is not the chapter with blanks."""
    chapter = [c.source for c in nb.cells if c.cell_type == "code"]
    student = [
        c.source for c in student_edition(instructor_edition(md, targets, references)).cells if c.cell_type == "code"
    ]
    pairs = exercises(nb)
    first = pairs[0][0]
    solutions = {s for s, _ in pairs}
    if len(student) != len(chapter):
        raise ValueError(f"{md.name}: the student edition has {len(student)} code cells, the chapter {len(chapter)}")
    for i, (ours, theirs) in enumerate(zip(chapter, student, strict=True)):
        if i not in solutions and ours != theirs:
            where = "before its first blank" if i < first else "after its first blank"
            raise ValueError(f"{md.name}: code cell {i + 1} of the student edition ({where}) is not the chapter's")
        if i in solutions and (ours == theirs or CODE_STUB not in theirs):
            raise ValueError(f"{md.name}: code cell {i + 1} of the student edition is not blanked")
    names = {i: sorted(bound_names(chapter[i])) for i in range(first, len(chapter))}
    return StudentRun(first, student, pairs, names)


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def _selected(numbers: list[str] | None) -> list[Path]:
    written = chapters()
    if not numbers:
        return written
    picked = [md for md in written if md.name[:2] in {n.zfill(2) for n in numbers}]
    missing = sorted({n.zfill(2) for n in numbers} - {md.name[:2] for md in picked})
    if missing:
        raise SystemExit(f"teach.py: no written chapter numbered {', '.join(missing)}")
    return picked


def release(chapter_files: list[Path], out: Path | None, course: Path | None, student_only: bool = False) -> None:
    targets, references = all_targets(), parse_bibtex((ROOT / "references.bib").read_text())
    for md in chapter_files:
        name = md.with_suffix(".ipynb").name
        instructor = instructor_edition(md, targets, references)
        editions = {"student": student_edition(instructor)}
        if not student_only:
            editions["instructor"] = instructor
        for kind, nb in editions.items() if out else []:
            path = out / kind / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(nb))
            print(f"wrote {path}")
        if course:
            path = course / "source" / f"ch{md.name[:2]}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(instructor))
            print(f"wrote {path}")


def teach_requirements() -> list[str]:
    """The `teach` extra of pyproject.toml (read without tomllib, which Python 3.10 lacks)."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^teach = \[\n(.*?)^\]", text, flags=re.M | re.S)
    if not block:
        raise SystemExit("teach.py: pyproject.toml has no `teach` extra")
    return re.findall(r'^\s*"([^"]+)",', block.group(1), flags=re.M)


def make_venv(path: Path) -> float:
    """A fresh venv at path with the `teach` extra (nbgrader) and nothing of the book: nbgrader runs from it, and
    grades with whatever Jupyter kernel the notebooks name (put the book's environment first on JUPYTER_PATH)."""
    start = time.monotonic()
    venv.create(path, with_pip=True, clear=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *teach_requirements()], check=True)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    rel = commands.add_parser("release", help="write the instructor and student editions")
    rel.add_argument("--chapters", nargs="*", help="chapter numbers (default: every written chapter)")
    rel.add_argument("--out", type=Path, help="write OUT/instructor/NN-slug.ipynb and OUT/student/NN-slug.ipynb")
    rel.add_argument("--student-only", action="store_true", help="with --out: only the student editions")
    rel.add_argument(
        "--course", type=Path, help="an nbgrader course folder: write the instructor edition to source/chNN/"
    )
    env = commands.add_parser("venv", help="make a venv with nbgrader (the `teach` extra) only")
    env.add_argument("path", type=Path)
    args = parser.parse_args()
    if args.command == "venv":
        seconds = make_venv(args.path)
        print(f"{args.path}: {', '.join(teach_requirements())} installed in {seconds:.0f} s")
        return 0
    if not args.out and not args.course:
        parser.error("release needs --out or --course")
    release(_selected(args.chapters), args.out, args.course, args.student_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())

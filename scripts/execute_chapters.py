"""Execute the chapters once, in parallel, each under a time limit; keep their outputs for reading and for the site.

    python scripts/execute_chapters.py                          # every chapter, in this environment's kernel
    python scripts/execute_chapters.py chapters/03-*.md         # some
    python scripts/execute_chapters.py --reader-venv /tmp/rv    # as a reader meets them (what CI runs)

Default: each chapter's notebook (from its markdown) runs in this environment's `python3` kernel, with the chapters/
folder as working directory.

--reader-venv DIR: the reader notebooks (notebooks/NN-slug.ipynb, what Colab opens) run as a reader meets them,
outside the repository, in a fresh virtual environment DIR that holds only what Jupyter itself brings (ipykernel)
and PyTorch: torch==$ATTNBOOK_TORCH (default 2.13.0) is installed first, and a pip constraint file keeps every
later install at that version, so no install ever pulls another (CUDA) build of torch. Everything else comes from
the notebooks' first cells, which install `attnbook` (with the extras their chapter imports) from
$ATTNBOOK_SOURCE, here a wheel built from this repository. The venv is shared by the chapters (one install,
not one per chapter): first every chapter's first cell runs on its own, one chapter after the other in chapter
order, so that two installs never write into the venv at once and each cell's install is timed; then the whole
notebooks run, `--jobs` at a time, each in a fresh kernel whose working directory is an empty temporary folder.
Their outputs are carried, cell by cell (the reader notebook has the chapter's code cells in the same order), into
the chapter notebooks, so the website is built from this single execution.

The same execution proves the chapter's student edition (scripts/teach.py): its cells before the first blank are
the chapter's (checked before running), and after the chapter's last cell, in its kernel, each exercise's test
runs again with the names its solution binds put back as they were before it, then the student edition's cells
from the first blank on run in the state from before the first blank (teach.StudentRun): a test that passes
there, or a blank that does not raise NotImplementedError, fails the chapter. It costs about a second a chapter.

Writes _build/executed/NN-slug.ipynb (the chapter with outputs: the site's pages) and, with --reader-venv,
_build/reader/NN-slug.ipynb (the executed reader notebook). Each chapter's wall time goes into
_build/executed/timings.json (merged: a chapter not run keeps its entry), which scripts/make_teaching.py turns into
the teacher's pages' running times. A chapter that runs past --time-limit seconds in all, or
whose cell raises, is reported with the cell, its first line and the error; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_notebooks import CHAPTERS, ROOT, notebook_from_markdown  # noqa: E402
from teach import StudentRun, student_run  # noqa: E402

OUT = ROOT / "_build" / "executed"
TIMINGS = OUT / "timings.json"
READER_OUT = ROOT / "_build" / "reader"
NOTEBOOKS = ROOT / "notebooks"
READER_KERNEL = "attnbook-reader"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Outcome:
    name: str
    seconds: float
    error: str | None  # None when every cell ran
    note: str = ""  # how the student edition was proven


def _describe_failure(nb: nbformat.NotebookNode, index: int, exc: Exception, time_limit: float) -> str:
    """Which cell failed and how: its number among the code cells, its first line, the error and traceback tail."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    cell = nb.cells[index]
    number = next(n for n, c in enumerate(code, start=1) if c is cell)
    first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
    where = f"code cell {number} of {len(code)} ({first_line.strip()[:80]!r})"
    if isinstance(exc, CellTimeoutError):
        return f"{where}: the chapter ran past its {time_limit:.0f} s time limit"
    if isinstance(exc, DeadKernelError):
        return f"{where}: the kernel died ({exc})"
    error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
    if error is None:
        return f"{where}: {type(exc).__name__}: {exc}"
    trace = ANSI.sub("", "\n".join(error.get("traceback", [])))
    tail = "\n".join("    " + line for line in trace.strip().splitlines()[-12:])
    return f"{where}: {error['ename']}: {error['evalue']}\n{tail}"


SNAPSHOT = """def __attnbook_save__(key, names):
    globals().setdefault("__attnbook_saved__", {})[key] = {n: globals()[n] for n in names if n in globals()}


def __attnbook_restore__(key, names):
    saved = globals()["__attnbook_saved__"][key]
    for n in names:
        if n in saved:
            globals()[n] = saved[n]
        else:
            globals().pop(n, None)"""


def run_notebook(
    nb: nbformat.NotebookNode, kernel_name: str, cwd: Path, time_limit: float, student: StudentRun | None = None
) -> tuple[float, str | None, str]:
    """Execute nb in place (outputs kept), all its cells within time_limit seconds (counted from the first cell,
    not the kernel's start); with `student`, then prove the student edition in the same kernel (teach.StudentRun).
    (seconds, a description of the failure or None, a note on the student edition)."""
    clock: dict[str, float] = {}
    current = {"index": 0}

    def remaining(cell) -> int:
        clock.setdefault("start", time.monotonic())
        return max(1, int(clock["start"] + time_limit - time.monotonic()))

    def on_cell_start(cell, cell_index) -> None:
        current["index"] = cell_index

    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(cwd)}},
        timeout_func=remaining,
        startup_timeout=120,
        on_cell_start=on_cell_start,
    )

    def scratch(source: str) -> str | None:
        """Run source in the kernel, outside the notebook; the name of the exception it raised, or None."""
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["raises-exception"]})
        nb.cells.append(cell)  # nbclient writes the cell it ran at its index: a scratch one, removed below
        try:
            client.execute_cell(cell, len(nb.cells) - 1, store_history=False)
        finally:
            nb.cells.pop()
        error = next((o for o in cell.outputs if o.get("output_type") == "error"), None)
        return error["ename"] if error else None

    error, note = None, ""
    try:
        with client.setup_kernel():
            info = client.wait_for_reply(client.kc.kernel_info())
            nb.metadata["language_info"] = info["content"]["language_info"]
            position = -1
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    position += 1
                    saves = []
                    if student and position == student.first:
                        saves.append(f"{SNAPSHOT}\n\n\n__attnbook_save__('first', {student.every_name!r})")
                    if student and position in {s for s, _ in student.pairs}:
                        saves.append(f"__attnbook_save__({position}, {student.names[position]!r})")
                    for save in saves:
                        if scratch(save) is not None:
                            raise RuntimeError(f"saving the names of the exercises failed: {save[-80:]}")
                client.execute_cell(cell, index, execution_count=position + 1)
            client.set_widgets_metadata()
            if student:
                start = time.monotonic()
                problems = prove_student_edition(student, scratch)
                if problems:
                    error = "the student edition: " + "; ".join(problems)
                else:
                    note = (
                        f"student edition: {len(student.pairs)} blanks fail their tests alone and together "
                        f"({time.monotonic() - start:.1f} s)"
                    )
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        error = _describe_failure(nb, current["index"], exc, time_limit)
    except RuntimeError as exc:  # the proof of the student edition could not run
        error = str(exc)
    seconds = time.monotonic() - clock.get("start", time.monotonic())
    if error is None and seconds > time_limit:
        error = f"the chapter ran {seconds:.0f} s, past its {time_limit:.0f} s time limit"
    return seconds, error, note


def prove_student_edition(student: StudentRun, run) -> list[str]:
    """After the chapter ran (the instructor edition: every test passed), in its kernel: each test with its own
    solution undone, then the student edition from its first blank (teach.StudentRun); run(source) executes a
    cell and returns the name of the exception it raised or None. The problems found, or []."""
    problems: list[str] = []
    every = student.every_name

    def plumbing(source: str) -> None:  # saving and restoring names must itself never fail
        raised = run(source)
        if raised is not None:
            raise RuntimeError(f"restoring the names of the exercises raised {raised}: {source[:80]}")

    plumbing(f"__attnbook_save__('end', {every!r})")
    for k, (solution, test) in enumerate(student.pairs, start=1):
        plumbing(f"__attnbook_restore__({solution}, {student.names[solution]!r})")
        if run(student.student[test]) is None:
            problems.append(f"exercise {k}'s test passes with its solution undone: it cannot fail")
        plumbing(f"__attnbook_restore__('end', {every!r})")
    plumbing(f"__attnbook_restore__('first', {every!r})")
    solutions, tests = {s for s, _ in student.pairs}, {t for _, t in student.pairs}
    for i in range(student.first, len(student.student)):
        raised = run(student.student[i])
        k = next((k for k, pair in enumerate(student.pairs, start=1) if i in pair), None)
        if i in solutions and raised != "NotImplementedError":
            problems.append(f"exercise {k}'s blank raised {raised} instead of NotImplementedError")
        elif i in tests and raised is None:
            problems.append(f"exercise {k}'s test passes in the student edition (every solution blank)")
        elif i not in solutions | tests and raised is not None:
            problems.append(f"code cell {i + 1}, after the first blank, raises {raised} in the student edition")
    return problems


def _write(nb: nbformat.NotebookNode, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(target)  # atomic: a reader never sees a half-written notebook


def carry_outputs(executed: nbformat.NotebookNode, chapter: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Copy outputs, execution counts and timestamps from an executed notebook into the chapter notebook, code cell
    by code cell; their code cells must be the same, in the same order."""
    ran = [c for c in executed.cells if c.cell_type == "code"]
    cells = [c for c in chapter.cells if c.cell_type == "code"]
    if [c.source.strip() for c in ran] != [c.source.strip() for c in cells]:
        raise ValueError("the reader notebook's code cells differ from the chapter's: run scripts/reader_notebooks.py")
    for source, target in zip(ran, cells, strict=True):
        target.outputs = source.get("outputs", [])
        target.execution_count = source.get("execution_count")
        if "execution" in source.get("metadata", {}):  # nbclient's timestamps: the teacher's pages time sections
            target.metadata["execution"] = source.metadata["execution"]
    return chapter


def execute_chapter(md: Path, time_limit: float) -> Outcome:
    nb = notebook_from_markdown(md)
    try:
        student = student_run(nb, md)
    except ValueError as exc:
        return Outcome(md.name, 0.0, str(exc))
    seconds, error, note = run_notebook(nb, "python3", CHAPTERS, time_limit, student)
    _write(nb, OUT / md.with_suffix(".ipynb").name)
    return Outcome(md.name, seconds, error, note)


def execute_reader(md: Path, time_limit: float) -> Outcome:
    path = NOTEBOOKS / md.with_suffix(".ipynb").name
    if not path.exists():
        return Outcome(md.name, 0.0, f"notebooks/{path.name} is missing: run scripts/reader_notebooks.py")
    nb = nbformat.read(path, as_version=4)
    try:
        student = student_run(nb, md)
    except ValueError as exc:
        return Outcome(md.name, 0.0, str(exc))
    with tempfile.TemporaryDirectory(prefix="attnbook-reader-") as cwd:
        seconds, error, note = run_notebook(nb, READER_KERNEL, Path(cwd), time_limit, student)
    _write(nb, READER_OUT / path.name)
    try:
        _write(carry_outputs(nb, notebook_from_markdown(md)), OUT / path.name)
    except ValueError as exc:
        error = f"{error}; {exc}" if error else str(exc)
    return Outcome(md.name, seconds, error, note)


def record_timings(outcomes: list[Outcome], jobs: int, reader: bool, path: Path = TIMINGS) -> None:
    """Merge the chapters' wall times into ``path`` (``{"NN-slug": {...}}``), keeping the entries of chapters not run.

    Each entry: ``seconds`` (first cell to last, as :func:`run_notebook` measures), ``ok`` (every cell ran), ``size``
    (``quick`` or ``full``), ``jobs`` (chapters run at once), ``reader_venv`` (run as a reader meets it), ``recorded``
    (UTC, to the second, when the runs ended) and ``sha256``, the hash of the executed notebook (in ``path``'s
    folder), so that a reader of the timings can tell that they belong to the notebook there now."""
    timings = json.loads(path.read_text()) if path.is_file() else {}
    recorded = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    size = "full" if os.environ.get("ATTNBOOK_FULL") == "1" else "quick"
    for outcome in outcomes:
        notebook = path.parent / f"{Path(outcome.name).stem}.ipynb"
        timings[Path(outcome.name).stem] = {
            "seconds": round(outcome.seconds, 1),
            "ok": outcome.error is None,
            "size": size,
            "jobs": jobs,
            "reader_venv": reader,
            "recorded": recorded,
            "sha256": hashlib.sha256(notebook.read_bytes()).hexdigest() if notebook.is_file() else None,
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(timings.items())), indent=1) + "\n")


def _timed(command: list[str], **kwargs) -> float:
    start = time.monotonic()
    subprocess.run(command, check=True, **kwargs)
    return time.monotonic() - start


def prepare_reader_venv(venv: Path, source: Path | None) -> None:
    """A fresh venv with torch (pinned, and held there by a constraint file) and ipykernel only, registered as the
    kernel READER_KERNEL; the environment variables the notebooks' first cells read."""
    torch = f"torch=={os.environ.get('ATTNBOOK_TORCH', '2.13.0')}"
    shutil.rmtree(venv, ignore_errors=True)
    if venv.exists():  # a venv made over leftovers would not be fresh, and the install timings would lie
        raise SystemExit(f"execute_chapters.py: could not remove the old reader venv {venv}; remove it or pick another")
    python = venv / "bin" / "python"
    seconds = _timed([sys.executable, "-m", "venv", str(venv)])
    constraints = venv / "constraints.txt"
    constraints.write_text(f"{torch}\n")
    seconds += _timed([str(python), "-m", "pip", "install", "--quiet", "-c", str(constraints), torch, "ipykernel"])
    subprocess.run(
        [str(python), "-m", "ipykernel", "install", "--prefix", str(venv), "--name", READER_KERNEL],
        check=True,
        capture_output=True,
    )
    print(f"fresh venv {venv}: torch and ipykernel installed in {seconds:.0f} s")
    if source is None:
        wheels = ROOT / "_build" / "wheel"
        shutil.rmtree(wheels, ignore_errors=True)
        # This environment's setuptools builds the wheel, where it has one: no isolated build environment to set up.
        isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
        build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation, "-w", str(wheels), str(ROOT)]
        seconds = _timed(build, stdout=subprocess.DEVNULL)
        source = next(wheels.glob("attnbook-*.whl"))
        print(f"built {source.relative_to(ROOT)} in {seconds:.0f} s")
    # The kernels inherit this environment: the venv's kernel spec, the source, the torch pin; nothing of the
    # repository (no PYTHONPATH, no active venv).
    os.environ["JUPYTER_PATH"] = str(venv / "share" / "jupyter")
    os.environ["ATTNBOOK_SOURCE"] = str(Path(source).resolve())
    os.environ["PIP_CONSTRAINT"] = str(constraints)
    os.environ["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    for name in ["PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"]:
        os.environ.pop(name, None)


def run_install_cells(chapters: list[Path]) -> str | None:
    """Each chapter's first cell alone, in chapter order, in a fresh kernel of the reader venv; prints its time."""
    for md in chapters:
        reader = nbformat.read(NOTEBOOKS / md.with_suffix(".ipynb").name, as_version=4)
        first = next(c for c in reader.cells if c.cell_type == "code")
        nb = nbformat.v4.new_notebook(cells=[first], metadata=reader.metadata)
        with tempfile.TemporaryDirectory(prefix="attnbook-reader-") as cwd:
            seconds, error, _ = run_notebook(nb, READER_KERNEL, Path(cwd), 900)
        print(f"{md.name:50s} first cell {seconds:6.1f} s  {'ok' if error is None else 'FAILED'}", flush=True)
        if error:
            return f"{md.name}: its first cell failed in the fresh venv: {error}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    full = os.environ.get("ATTNBOOK_FULL") == "1"
    parser.add_argument("chapters", nargs="*", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--time-limit",
        type=float,
        default=float(os.environ.get("ATTNBOOK_CHAPTER_TIME_LIMIT", 6 * 3600 if full else 240)),
        help="seconds one chapter may run in all: $ATTNBOOK_CHAPTER_TIME_LIMIT, else 240 at the quick size "
        "(about a minute per chapter is the target) and 6 hours with ATTNBOOK_FULL=1",
    )
    parser.add_argument("--reader-venv", type=Path, help="execute the reader notebooks in a fresh venv created here")
    parser.add_argument(
        "--source",
        type=Path,
        help="with --reader-venv: ATTNBOOK_SOURCE (default: a wheel of this repository)",
    )
    args = parser.parse_args()
    # With MPLBACKEND=Agg inherited, the kernel would keep Agg and the notebooks would lose their figures.
    os.environ.pop("MPLBACKEND", None)
    chapters = [p.resolve() for p in args.chapters] or sorted(CHAPTERS.glob("[0-9][0-9]-*.md"))
    start = time.monotonic()
    execute = execute_chapter
    if args.reader_venv:
        prepare_reader_venv(args.reader_venv.resolve(), args.source)
        problem = run_install_cells(chapters)
        if problem:
            print(problem)
            return 1
        execute = execute_reader
    failed = []
    outcomes = []
    # Fresh worker processes (spawn), not forks of this one, which may already hold a kernel's ZeroMQ sockets.
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for outcome in pool.map(execute, chapters, [args.time_limit] * len(chapters)):
            print(
                f"{outcome.name:50s} {outcome.seconds:7.1f} s  {'ok' if outcome.error is None else 'FAILED'}"
                + (f"  ({outcome.note})" if outcome.note else ""),
                flush=True,
            )
            outcomes.append(outcome)
            if outcome.error:
                failed.append(f"{outcome.name}: {outcome.error}")
    record_timings(outcomes, min(args.jobs, len(chapters)), bool(args.reader_venv))
    for failure in failed:
        print(f"\nFAILED {failure}")
    print(
        f"\n{len(chapters) - len(failed)} of {len(chapters)} chapters ran in {time.monotonic() - start:.0f} s; "
        f"executed notebooks are in {OUT.relative_to(ROOT)}/"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the teacher's pages and the course outline (``_build/teaching/*.md``) from ``teaching/*.yaml``.

    python scripts/make_teaching.py              # -> _build/teaching/NN-slug-teaching.md, _build/teaching/course.md
    python scripts/make_teaching.py --out DIR    # elsewhere

Hand-written content lives in one data file per written chapter, ``teaching/NN-slug.yaml`` (its format:
``teaching/README.md``), and the course plans in ``teaching/course.yaml``. Everything the book measures comes from
the same build, never from the data files:

* the running time of each chapter: its wall time at execution, ``_build/executed/timings.json`` (written by
  ``scripts/execute_chapters.py``), used only when the hash recorded with it is that of the executed notebook;
* the running time of the sections a lesson runs live: the timestamps nbclient leaves on each code cell of the
  executed notebook ``_build/executed/NN-slug.ipynb``;
* the reading time: an *estimate*, the chapter's words of prose at :data:`READING_RATE` words a minute (labelled so);
* the slide-ready files: ``_build/slides/NN-slug/manifest.json`` (written by ``scripts/slides.py``).

A missing measurement is said to be missing, never filled in. scripts/build_site.sh runs this after executing the
chapters and building the slides; myst.yml lists the pages under "For teachers". The output depends only on its
inputs (no clock, no randomness): tests/test_teaching.py checks that, and the data files' contents.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_syllabus import Chapter, Syllabus, load_syllabus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
TEACHING = ROOT / "teaching"
COURSE = TEACHING / "course.yaml"
EXECUTED = ROOT / "_build" / "executed"
SLIDES = ROOT / "_build" / "slides"
OUT = ROOT / "_build" / "teaching"
#: Words a minute for the reading-time estimate: a slow, careful pace for technical prose with equations.
READING_RATE = 120
LESSON_MINUTES = 90
FIELDS = {"chapter", "prerequisites", "objectives", "core", "optional", "questions", "lesson_plan", "assignment"}
STEP_FIELDS = {"minutes", "activity", "run", "exercise"}


# --- reading the chapter -------------------------------------------------------------------------------------------


def _outside_code(text: str) -> list[str]:
    """The lines of a MyST chapter that are not inside a fenced block (code cells, directives written with backticks)
    or its front matter."""
    lines, fence = [], None
    body = text.split("\n---\n", 1)[1] if text.startswith("---\n") else text
    for line in body.splitlines():
        stripped = line.strip()
        if fence is None:
            match = re.match(r"(`{3,}|~{3,})", stripped)
            if match:
                fence = match.group(1)
                continue
        else:
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                fence = None
            continue
        lines.append(line)
    return lines


def headings(text: str) -> list[tuple[int, str]]:
    """``(depth, title)`` of the chapter's ``##``-and-deeper headings, in order (code cells' comments excluded)."""
    found = []
    for line in _outside_code(text):
        match = re.match(r"(#{2,6}) +(.+?)\s*$", line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def slug(title: str) -> str:
    """The anchor mystmd gives a heading (its ``normalizeLabel`` then ``createHtmlId``, applied to the heading's text).

    Quotes and apostrophes are dropped, every other character outside ``a-z0-9-`` becomes a dash (so "HyperZ·Z·W"
    is ``hyperz-z-w``), runs of dashes collapse, an id that starts with a digit gets ``id-`` in front. The heading's
    text is what the reader sees: Markdown's backticks and emphasis stars are not part of it.
    """
    text = re.sub(r"[`*]", "", title)
    text = re.sub(r"[\t\n\r ]+", " ", text)
    text = re.sub(r"['\u2018\u2019\"\u201c\u201d]+", "", text).strip().lower()
    text = re.sub(r"[^a-z0-9-]", "-", text)
    text = re.sub(r"^([0-9-])", r"id-\1", text)
    return re.sub(r"-{2,}", "-", text).strip("-")


def prose_words(text: str) -> int:
    """Words of the chapter outside its code: what a student reads."""
    return sum(len(line.split()) for line in _outside_code(text))


def exercise_numbers(text: str) -> list[int]:
    """The numbers of the chapter's runnable exercises (their ``# Exercise N: solution`` cells)."""
    return sorted({int(n) for n in re.findall(r"^# Exercise (\d+): solution", text, re.M)})


def _seconds(cell: dict) -> float | None:
    stamps = cell.get("metadata", {}).get("execution", {})
    start, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def section_seconds(nb: dict) -> dict[str, float | None]:
    """Seconds the code cells of each section (a heading and its subsections) took in the executed notebook, for
    the sections that have code; ``None`` for a section some of whose cells carry no timestamps (e.g. the notebook
    predates them)."""
    open_sections: list[tuple[int, str]] = []
    totals: dict[str, float | None] = {}
    for cell in nb.get("cells", []):
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "markdown":
            for depth, title in headings(source):
                open_sections = [(d, t) for d, t in open_sections if d < depth] + [(depth, title)]
        elif cell.get("cell_type") == "code":
            seconds = _seconds(cell)
            for _, title in open_sections:
                before = totals.get(title, 0.0)
                totals[title] = None if seconds is None or before is None else before + seconds
    return totals


# --- the data files ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    minutes: int
    activity: str
    run: tuple[str, ...]
    exercise: int | None


@dataclass(frozen=True)
class Teaching:
    chapter: Chapter
    prerequisite_chapters: tuple[int, ...]
    maths: tuple[str, ...]
    objectives: tuple[str, ...]
    core: tuple[str, ...]
    optional: tuple[str, ...]
    questions: tuple[tuple[str, str], ...]
    plan: tuple[Step, ...]
    assignment: tuple[int, ...]


def _strings(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{where} must be a non-empty list of strings, got {value!r}")
    return tuple(v.strip() for v in value)


def load_teaching(path: Path, syllabus: Syllabus, chapters: Path = CHAPTERS) -> Teaching:
    """Read and check ``teaching/NN-slug.yaml`` against the syllabus and the chapter it is for.

    Raises ``ValueError`` naming the file and the field at fault."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    name = path.name
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a mapping of {sorted(FIELDS)}")
    unknown, missing = set(data) - FIELDS, FIELDS - set(data)
    if unknown or missing:
        raise ValueError(f"{name}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}")
    number = data["chapter"]
    chapter = next((c for c in syllabus.chapters if c.number == number), None)
    if chapter is None or f"{chapter.stem}.yaml" != name:
        expected = f"{chapter.stem}.yaml" if chapter else "a chapter number of data/syllabus.yaml"
        raise ValueError(f"{name}: chapter {number!r} does not match the file name (expected {expected})")
    md = chapters / f"{chapter.stem}.md"
    if not md.is_file():
        raise ValueError(f"{name}: chapter {chapter.stem}.md is not written yet; add its teaching page when it is")
    text = md.read_text(encoding="utf-8")
    titles = [t for _, t in headings(text)]
    exercises = exercise_numbers(text)

    prerequisites = data["prerequisites"]
    if not isinstance(prerequisites, dict) or set(prerequisites) != {"chapters", "maths"}:
        raise ValueError(f"{name}: prerequisites must have exactly the keys 'chapters' and 'maths'")
    before = tuple(prerequisites["chapters"] or ())
    for n in before:
        earlier = next((c for c in syllabus.chapters if c.number == n), None)
        if not isinstance(n, int) or earlier is None or n >= number or not (chapters / f"{earlier.stem}.md").is_file():
            raise ValueError(f"{name}: prerequisites.chapters: {n!r} is not a written chapter before {number}")
    maths = _strings(prerequisites["maths"], f"{name}: prerequisites.maths")

    core, optional = _strings(data["core"], f"{name}: core"), tuple(data["optional"] or ())
    for title in (*core, *optional):
        if title not in titles:
            raise ValueError(f"{name}: section {title!r} is not a heading of {md.name} (headings: {titles})")
    if set(core) & set(optional):
        raise ValueError(f"{name}: sections both core and optional: {sorted(set(core) & set(optional))}")

    questions = data["questions"]
    if not isinstance(questions, list) or not 3 <= len(questions) <= 5:
        raise ValueError(f"{name}: questions must be 3 to 5 concept checks, got {len(questions or [])}")
    pairs = []
    for i, q in enumerate(questions, start=1):
        texts = [q.get(k) for k in ("q", "a")] if isinstance(q, dict) else []
        if set(q or {}) != {"q", "a"} or not all(isinstance(v, str) and v.strip() for v in texts):
            raise ValueError(f"{name}: question {i} must be {{q: question, a: answer}}, both non-empty text")
        pairs.append((q["q"].strip(), q["a"].strip()))

    plan = []
    for i, raw in enumerate(data["lesson_plan"] or [], start=1):
        if not isinstance(raw, dict) or not set(raw) <= STEP_FIELDS or not {"minutes", "activity"} <= set(raw):
            raise ValueError(f"{name}: lesson_plan step {i} needs minutes and activity (and may have run, exercise)")
        if not isinstance(raw["minutes"], int) or raw["minutes"] <= 0:
            raise ValueError(f"{name}: lesson_plan step {i}: minutes must be a positive integer: {raw['minutes']!r}")
        run = tuple(raw.get("run") or ())
        for title in run:
            if title not in titles:
                raise ValueError(f"{name}: lesson_plan step {i} runs {title!r}, which is not a heading of {md.name}")
        exercise = raw.get("exercise")
        if exercise is not None and exercise not in exercises:
            raise ValueError(f"{name}: lesson_plan step {i} sets exercise {exercise!r}; the chapter has {exercises}")
        plan.append(Step(raw["minutes"], str(raw["activity"]).strip(), run, exercise))
    total = sum(s.minutes for s in plan)
    if total != LESSON_MINUTES:
        raise ValueError(f"{name}: the lesson plan's minutes sum to {total}, not {LESSON_MINUTES}")
    if not any(s.run for s in plan) or not any(s.exercise for s in plan):
        raise ValueError(f"{name}: the lesson plan must run some sections live (run) and set an exercise (exercise)")

    assignment = tuple(data["assignment"] or ())
    if not assignment or any(n not in exercises for n in assignment):
        raise ValueError(f"{name}: assignment {list(assignment)} must be exercise numbers of the chapter {exercises}")
    return Teaching(
        chapter=chapter,
        prerequisite_chapters=before,
        maths=maths,
        objectives=_strings(data["objectives"], f"{name}: objectives"),
        core=core,
        optional=optional,
        questions=tuple(pairs),
        plan=tuple(plan),
        assignment=assignment,
    )


def load_all(syllabus: Syllabus, teaching: Path = TEACHING, chapters: Path = CHAPTERS) -> dict[int, Teaching]:
    """Every ``teaching/NN-slug.yaml``, by chapter number."""
    found = [load_teaching(p, syllabus, chapters) for p in sorted(teaching.glob("[0-9][0-9]-*.yaml"))]
    return {t.chapter.number: t for t in found}


@dataclass(frozen=True)
class Course:
    key: str
    title: str
    intro: str
    parts: tuple[str, ...]  # the parts it covers
    weeks: tuple[tuple[int, ...], ...]


def load_courses(syllabus: Syllabus, path: Path = COURSE) -> list[Course]:
    """``teaching/course.yaml``: each course's weeks must cover the chapters of its parts, each exactly once."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    courses = []
    for key, raw in data["courses"].items():
        weeks = tuple(tuple(w) for w in raw["weeks"])
        parts = tuple(str(p) for p in raw["parts"])
        listed = [n for w in weeks for n in w]
        expected = [c.number for c in syllabus.chapters if c.part in parts]
        if sorted(listed) != expected:
            raise ValueError(
                f"{path.name}: course {key!r} must cover chapters {expected} (parts {list(parts)}) each exactly "
                f"once, got {listed}"
            )
        if any(not w for w in weeks):
            raise ValueError(f"{path.name}: course {key!r} has a week with no chapter")
        courses.append(Course(key, str(raw["title"]), str(raw["intro"]).strip(), parts, weeks))
    return courses


# --- measurements --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    words: int
    exercises: int
    run: dict | None  # the chapter's entry of timings.json, when it ran without error
    sections: dict[str, float | None]  # from the executed notebook's cell timestamps
    slides: dict | None  # the slides manifest

    @property
    def reading_minutes(self) -> int:
        return max(1, round(self.words / READING_RATE))


def measure(chapter: Chapter, chapters: Path, executed: Path, slides: Path) -> Measured:
    text = (chapters / f"{chapter.stem}.md").read_text(encoding="utf-8")
    timings_path = executed / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    run = timings.get(chapter.stem)
    nb_path = executed / f"{chapter.stem}.ipynb"
    if run and (not nb_path.is_file() or run.get("sha256") != hashlib.sha256(nb_path.read_bytes()).hexdigest()):
        run = None  # timed, but the executed notebook there now is another one: not this build's measurement
    sections = section_seconds(json.loads(nb_path.read_text(encoding="utf-8"))) if nb_path.is_file() else {}
    manifest = slides / chapter.stem / "manifest.json"
    return Measured(
        words=prose_words(text),
        exercises=len(exercise_numbers(text)),
        run=run if run and run.get("ok") else None,
        sections=sections,
        slides=json.loads(manifest.read_text()) if manifest.is_file() else None,
    )


def _duration(seconds: float) -> str:
    if seconds < 0.05:
        return "under 0.1 s"
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# --- rendering -----------------------------------------------------------------------------------------------------


def _page_name(chapter: Chapter) -> str:
    return f"{chapter.stem}-teaching.md"


def _section_link(chapter: Chapter, title: str) -> str:
    return f"[{title}](../executed/{chapter.stem}.ipynb#{slug(title)})"


def _chapter_link(chapter: Chapter) -> str:
    return f"[chapter {chapter.number:02d}](#{chapter.label})"


def _section_time(title: str, measured: Measured) -> str:
    if title not in measured.sections:
        return "no code" if measured.sections else "not executed in this build"
    seconds = measured.sections[title]
    return "not timed in this build" if seconds is None else f"ran in {_duration(seconds)}"


def _run_note(chapter: Chapter, run: tuple[str, ...], measured: Measured) -> str:
    parts = []
    for title in run:
        parts.append(f"{_section_link(chapter, title)} ({_section_time(title, measured)})")
    return "; ".join(parts)


def render_page(teaching: Teaching, syllabus: Syllabus, measured: Measured) -> str:
    """The Markdown of one teacher's page."""
    chapter = teaching.chapter
    by_number = {c.number: c for c in syllabus.chapters}
    if measured.run:
        run = measured.run
        context = f"{run['jobs']} chapter{'s' if run['jobs'] > 1 else ''} running at once"
        if run.get("reader_venv"):
            context += ", as a reader meets it (fresh environment)"
        running = (
            f"{_duration(run['seconds'])} at the {run['size']} size, measured when this build executed the chapter "
            f"({context}, recorded {run['recorded']})"
        )
    else:
        running = (
            "not measured in this build (the executed notebook predates the timings; "
            "`bash scripts/build_site.sh --force` measures it)"
        )
    lines = [
        f"(teach-{chapter.label})=",
        f"# Teaching chapter {chapter.number:02d}: {chapter.title}",
        "",
        f"<!-- Generated by scripts/make_teaching.py from teaching/{chapter.stem}.yaml: do not edit. -->",
        "",
        f"For teachers of {_chapter_link(chapter)}; the [course outline](#teaching-course) places it in a "
        "12-week and a 6-week course.",
        "",
        "| At a glance | |",
        "|---|---|",
        f"| Reading time | about {measured.reading_minutes} min (an estimate: {measured.words} words of prose at "
        f"{READING_RATE} words a minute) |",
        f"| Running time | {running} |",
        f"| Exercises | {measured.exercises}, each with a solution and a check cell |",
        "",
        "## Prerequisites",
        "",
    ]
    if teaching.prerequisite_chapters:
        links = ", ".join(
            f"{_chapter_link(by_number[n])} ({by_number[n].title})" for n in teaching.prerequisite_chapters
        )
        lines.append(f"- Chapters: {links}.")
    else:
        lines.append("- Chapters: none; this chapter starts the book.")
    lines.append("- Maths:")
    lines += [f"  - {m}" for m in teaching.maths]
    lines += ["", "## Learning objectives", "", "After the lesson, a student can:", ""]
    lines += [f"- {o}" for o in teaching.objectives]
    lines += [
        "",
        "## Core and optional sections",
        "",
        "| Section | | Its code, in this build |",
        "|---|---|---|",
    ]
    for kind, titles in (("core", teaching.core), ("optional", teaching.optional)):
        for title in titles:
            lines.append(f"| {_section_link(chapter, title)} | {kind} | {_section_time(title, measured)} |")
    lines += ["", "## Concept checks", ""]
    for i, (question, answer) in enumerate(teaching.questions, start=1):
        lines += [f"**Question {i}.** {question}", "", ":::{dropdown} Answer", answer, ":::", ""]
    lines += [
        f"## A {LESSON_MINUTES}-minute lesson plan",
        "",
        "| Time | Minutes | What to do | Run live / set |",
        "|---|---|---|---|",
    ]
    start = 0
    for step in teaching.plan:
        cells = []
        if step.run:
            cells.append("run " + _run_note(chapter, step.run, measured))
        if step.exercise:
            cells.append(f"set exercise {step.exercise} ({_section_link(chapter, 'Exercises')})")
        stamp = f"{start // 60}:{start % 60:02d}–{(start + step.minutes) // 60}:{(start + step.minutes) % 60:02d}"
        lines.append(f"| {stamp} | {step.minutes} | {step.activity} | {'; '.join(cells) or '—'} |")
        start += step.minutes
    lines += [
        "",
        f"Homework: exercise{'s' if len(teaching.assignment) > 1 else ''} "
        f"{', '.join(str(n) for n in teaching.assignment)} of {_section_link(chapter, 'Exercises')}.",
        "",
        "## Slide-ready material",
        "",
    ]
    if measured.slides:
        items = measured.slides["items"]
        diagrams = sum(i["kind"] == "diagram" and i["format"] == "svg" for i in items)
        figures = sum(i["kind"] == "figure" and i["format"] == "png" for i in items)
        lines += [
            f"[Download the folder]({'../slides/' + measured.slides['zip']}) (a zip): {diagrams} diagram"
            f"{'s' if diagrams != 1 else ''} as SVG and PNG, {figures} figure{'s' if figures != 1 else ''} of the "
            "executed chapter as PNG, and a README with each caption. One by one:",
            "",
        ]
        for item in items:
            lines.append(f"- [{item['file']}](../slides/{chapter.stem}/{item['file']}) ({item['kind']})")
    else:
        lines.append("Not built in this build: run `python scripts/slides.py` (scripts/build_site.sh does).")
    lines.append("")
    return "\n".join(lines)


def render_course(
    courses: list[Course],
    syllabus: Syllabus,
    teaching: dict[int, Teaching],
    measured: dict[int, Measured],
    written: set[int],
) -> str:
    """The Markdown of the course outline. A written chapter without its teaching data (tests/test_teaching.py
    fails then) is linked, with no plan."""
    by_number = {c.number: c for c in syllabus.chapters}
    lines = [
        "(teaching-course)=",
        "# Course outline",
        "",
        "<!-- Generated by scripts/make_teaching.py from teaching/*.yaml: do not edit. -->",
        "",
        "Two courses built from the book. A written chapter links to its page and its teacher's page, with its core "
        "sections and the exercises to set; a planned chapter is listed by its title until it is written. Reading "
        f"times are estimates ({READING_RATE} words a minute); lessons are 90 minutes (see each teacher's page).",
        "",
    ]
    for course in courses:
        lines += [f"## {course.title}", "", course.intro, ""]
        for week, numbers in enumerate(course.weeks, start=1):
            lines += [f"### Week {week}", ""]
            for n in numbers:
                chapter = by_number[n]
                t = teaching.get(n)
                if t is None and n in written:
                    lines.append(f"- [{chapter.number:02d}. {chapter.title}](#{chapter.label}) (no teacher's page yet)")
                    continue
                if t is None:
                    lines.append(f"- {chapter.number:02d}. {chapter.title} (planned)")
                    continue
                core = ", ".join(_section_link(chapter, s) for s in t.core)
                optional = ", ".join(_section_link(chapter, s) for s in t.optional) or "none"
                exercises = ", ".join(str(e) for e in t.assignment)
                lines += [
                    f"- [{chapter.number:02d}. {chapter.title}](#{chapter.label}) "
                    f"([teacher's page](#teach-{chapter.label}); reading about {measured[n].reading_minutes} min)",
                    f"  - core: {core}",
                    f"  - optional: {optional}",
                    f"  - assignment: exercise{'s' if len(t.assignment) > 1 else ''} {exercises}",
                ]
            lines.append("")
    return "\n".join(lines)


def expected_files(
    out: Path = OUT,
    teaching_dir: Path = TEACHING,
    chapters: Path = CHAPTERS,
    executed: Path = EXECUTED,
    slides: Path = SLIDES,
) -> dict[Path, str]:
    """What this script writes: ``{path: text}``."""
    syllabus = load_syllabus()
    teaching = load_all(syllabus, teaching_dir, chapters)
    written = {c.number for c in syllabus.chapters if (chapters / f"{c.stem}.md").is_file()}
    missing = sorted(written - set(teaching))
    if missing:  # the site still builds; tests/test_teaching.py fails until the data files exist
        sys.stderr.write(f"make_teaching.py: written chapters without teaching/NN-slug.yaml: {missing}\n")
    measured = {n: measure(t.chapter, chapters, executed, slides) for n, t in teaching.items()}
    files = {out / _page_name(t.chapter): render_page(t, syllabus, measured[n]) for n, t in teaching.items()}
    courses = load_courses(syllabus, teaching_dir / "course.yaml")
    files[out / "course.md"] = render_course(courses, syllabus, teaching, measured, written)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the pages (default: _build/teaching)")
    args = parser.parse_args(argv)
    files = expected_files(out=args.out)
    if args.out.is_dir():
        for old in args.out.glob("*.md"):
            if old not in files:
                old.unlink()
    args.out.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} page(s) into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Teaching material: the teacher's pages' data (teaching/NN-slug.yaml), the course outline (teaching/course.yaml),
the page generator (scripts/make_teaching.py), the slide folders (scripts/slides.py) and the chapters' timings
(scripts/execute_chapters.py). Fast: nothing here executes a chapter."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_teaching  # noqa: E402
import slides  # noqa: E402
from make_syllabus import load_syllabus  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))
SYLLABUS = load_syllabus()
# A 1x1 PNG, and a tiny SVG, as a notebook's figure outputs.
PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")).decode()
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>'


def _data(stem: str) -> dict:
    return yaml.safe_load((ROOT / "teaching" / f"{stem}.yaml").read_text())


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_every_written_chapter_has_a_complete_teacher_page(md: Path):
    path = ROOT / "teaching" / f"{md.stem}.yaml"
    assert path.is_file(), f"{md.name} has no teacher page data: add teaching/{md.stem}.yaml (see teaching/README.md)"
    teaching = make_teaching.load_teaching(path, SYLLABUS)  # raises on any fault; the asserts say what is required
    text = md.read_text()
    titles = [t for _, t in make_teaching.headings(text)]
    assert teaching.objectives and 3 <= len(teaching.questions) <= 5
    assert all(q and a for q, a in teaching.questions)
    assert sum(step.minutes for step in teaching.plan) == 90
    assert any(step.run for step in teaching.plan) and any(step.exercise for step in teaching.plan)
    assert set(teaching.core) | set(teaching.optional) <= set(titles)
    assert set(teaching.assignment) <= set(make_teaching.exercise_numbers(text))
    for n in teaching.prerequisite_chapters:
        assert n < teaching.chapter.number and any(p.name.startswith(f"{n:02d}-") for p in CHAPTERS)


def test_teaching_files_are_for_written_chapters_only():
    written = {md.stem for md in CHAPTERS}
    data = {p.stem for p in (ROOT / "teaching").glob("[0-9][0-9]-*.yaml")}
    assert data <= written, f"teaching data for chapters not written: {sorted(data - written)}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["lesson_plan"][0].update(minutes=d["lesson_plan"][0]["minutes"] + 5), "sum to 95"),
        (lambda d: d.update(questions=d["questions"][:2]), "3 to 5"),
        (lambda d: d["questions"][0].update(a=""), "question 1"),
        (lambda d: d.update(core=[*d["core"], "A section that does not exist"]), "not a heading"),
        (lambda d: d["prerequisites"].update(chapters=[3]), "not a written chapter before 3"),
        (lambda d: d.update(assignment=[99]), "assignment"),
        (lambda d: d["lesson_plan"][1].update(run=["Nowhere"]), "runs 'Nowhere'"),
        (lambda d: d.pop("objectives"), "missing fields ['objectives']"),
    ],
)
def test_a_faulty_teacher_page_is_refused(tmp_path: Path, change, message):
    data = _data("03-scaled-dot-product-attention")
    change(data)
    path = tmp_path / "03-scaled-dot-product-attention.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ValueError, match=re.escape(message)):
        make_teaching.load_teaching(path, SYLLABUS)


def test_the_12_week_course_covers_each_chapter_exactly_once_and_the_6_week_parts_i_ii(tmp_path: Path):
    courses = {c.key: c for c in make_teaching.load_courses(SYLLABUS)}
    long, short = courses["long"], courses["short"]
    assert len(long.weeks) == 12 and len(short.weeks) == 6
    listed = [n for week in long.weeks for n in week]
    assert sorted(listed) == [c.number for c in SYLLABUS.chapters]
    for md in CHAPTERS:
        assert listed.count(int(md.name[:2])) == 1, md.name
    assert sorted(n for week in short.weeks for n in week) == [
        c.number for c in SYLLABUS.chapters if c.part in ("I", "II")
    ]
    # load_courses refuses a course that lists a chapter twice
    data = yaml.safe_load((ROOT / "teaching" / "course.yaml").read_text())
    data["courses"]["short"]["weeks"][0] = [1, 1]
    path = tmp_path / "course.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="exactly once"):
        make_teaching.load_courses(SYLLABUS, path)


def test_course_outline_links_written_chapters_and_lists_planned_ones():
    files = make_teaching.expected_files(executed=ROOT / "no-such-folder", slides=ROOT / "no-such-folder")
    course = files[make_teaching.OUT / "course.md"]
    long = course.split("## A 12-week course")[1].split("\n## ")[0]
    for chapter in SYLLABUS.chapters:
        if any(p.stem == chapter.stem for p in CHAPTERS):
            assert long.count(f"](#{chapter.label})") == 1, chapter.stem
            assert f"(#teach-{chapter.label})" in long
        else:
            assert f"- {chapter.number:02d}. {chapter.title} (planned)" in long
            assert f"#{chapter.label})" not in long


def _fake_build(tmp_path: Path, seconds: float | None) -> Path:
    """An executed folder holding a timings.json for chapter 03 (when seconds is given) and a notebook for it with
    timestamps on its cells."""
    executed = tmp_path / "executed"
    executed.mkdir()
    stamp = {"iopub.execute_input": "2026-01-02T03:00:00.000000Z", "shell.execute_reply": "2026-01-02T03:00:07.250Z"}
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": "## Experiment: what the scale is for\n", "metadata": {}},
            {"cell_type": "code", "source": "x = 1", "metadata": {"execution": stamp}, "outputs": []},
            {"cell_type": "markdown", "source": "## Cost\n", "metadata": {}},
            {"cell_type": "code", "source": "y = 2", "metadata": {}, "outputs": []},
        ]
    }
    notebook = executed / "03-scaled-dot-product-attention.ipynb"
    notebook.write_text(json.dumps(nb))
    if seconds is not None:
        entry = {"seconds": seconds, "ok": True, "size": "quick", "jobs": 2, "reader_venv": True}
        entry.update(recorded="2026-01-02T03:04:05Z", sha256=hashlib.sha256(notebook.read_bytes()).hexdigest())
        (executed / "timings.json").write_text(json.dumps({"03-scaled-dot-product-attention": entry}))
    return executed


def test_pages_take_running_times_from_the_build_and_say_when_there_are_none(tmp_path: Path):
    slides_dir = tmp_path / "slides"
    page = make_teaching.OUT / "03-scaled-dot-product-attention-teaching.md"
    measured = make_teaching.expected_files(executed=_fake_build(tmp_path, 41.3), slides=slides_dir)[page]
    assert "| Running time | 41.3 s at the quick size, measured when this build executed the chapter" in measured
    assert "2 chapters running at once, as a reader meets it" in measured
    # the section's time is the cell's timestamps (7.25 s); a section whose cell has none is "not timed"
    assert "what-the-scale-is-for) | core | ran in 7.2 s |" in measured
    assert "#cost) | optional | not timed in this build |" in measured
    shutil.rmtree(tmp_path / "executed")
    unmeasured = make_teaching.expected_files(executed=_fake_build(tmp_path, None), slides=slides_dir)[page]
    assert "| Running time | not measured in this build" in unmeasured
    assert "Not built in this build: run `python scripts/slides.py`" in unmeasured
    # timings of another execution than the notebook there now are not this build's
    (tmp_path / "again").mkdir()
    executed = _fake_build(tmp_path / "again", 41.3)
    (executed / "03-scaled-dot-product-attention.ipynb").write_text(json.dumps({"cells": []}))
    stale = make_teaching.expected_files(executed=executed, slides=slides_dir)[page]
    assert "| Running time | not measured in this build" in stale


def test_generator_is_deterministic(tmp_path: Path):
    executed = _fake_build(tmp_path, 12.0)
    first = make_teaching.expected_files(executed=executed, slides=tmp_path)
    second = make_teaching.expected_files(executed=executed, slides=tmp_path)
    assert first == second
    assert {p.name for p in first} == {"course.md"} | {f"{md.stem}-teaching.md" for md in CHAPTERS}
    out = tmp_path / "out"
    assert make_teaching.main(["--out", str(out)]) == 0
    assert make_teaching.main(["--out", str(out)]) == 0  # twice: same files, nothing left over
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in first)


def test_reading_text_skips_code_and_headings_skip_code_comments():
    text = "---\ntitle: x\n---\n## One\nfour words of prose\n```{code-cell} ipython3\n### BEGIN SOLUTION\nx = 1\n```\n"
    text += "### Two: sub, part\n````\n## not a heading\n````\n"
    assert make_teaching.headings(text) == [(2, "One"), (3, "Two: sub, part")]
    assert make_teaching.prose_words(text) == 2 + 4 + 4
    assert make_teaching.slug("Shaw's relative keys, naive and skewed") == "shaws-relative-keys-naive-and-skewed"
    assert make_teaching.slug("Post-norm vs pre-norm: why the order matters") == (
        "post-norm-vs-pre-norm-why-the-order-matters"
    )
    # mystmd turns every other character into a dash (the site's browser test caught "HyperZ·Z·W" dropped instead)
    assert make_teaching.slug("HyperZ·Z·W: a kernel written by a network") == "hyperz-z-w-a-kernel-written-by-a-network"
    assert make_teaching.slug("`attention_rollout` and the “class” token") == "attention-rollout-and-the-class-token"
    assert make_teaching.slug("3 ways") == "id-3-ways"


def _fake_notebook() -> dict:
    return {
        "cells": [
            {"cell_type": "markdown", "source": "# 01. x", "metadata": {}},
            {
                "cell_type": "code",
                "source": "plot()",
                "metadata": {"label": "fig-ch01-demo", "caption": "A demo figure."},
                "outputs": [{"output_type": "display_data", "data": {"image/png": PNG, "text/plain": "<Figure>"}}],
            },
            {"cell_type": "code", "source": "print(1)", "metadata": {}, "outputs": [{"output_type": "stream"}]},
            {
                "cell_type": "code",
                "source": "plot2()",
                "metadata": {},
                "outputs": [{"output_type": "display_data", "data": {"image/png": PNG, "image/svg+xml": [SVG]}}],
            },
        ]
    }


def test_slides_collect_every_diagram_and_figure_of_a_chapter(tmp_path: Path):
    stem = "01-attention-as-soft-lookup"
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / f"{stem}.ipynb").write_text(json.dumps(_fake_notebook()))
    out = tmp_path / "slides"
    items = slides.build_chapter(stem, executed=executed, out=out)
    diagrams = sorted(p.stem for p in (ROOT / "chapters" / "images").glob("01-*.svg"))
    assert diagrams, "chapter 01 has a diagram"
    folder = out / stem
    for name in diagrams:
        assert (folder / f"{name}.svg").read_bytes() == (ROOT / "chapters" / "images" / f"{name}.svg").read_bytes()
        assert (folder / f"{name}.png").read_bytes()[:8] == bytes.fromhex("89504e470d0a1a0a")
    assert (folder / "fig-ch01-demo.png").read_bytes() == base64.b64decode(PNG)
    assert (folder / "01-figure-2.png").is_file() and (folder / "01-figure-2.svg").read_text() == SVG
    files = {i.file for i in items}
    assert files == {f"{n}.{ext}" for n in diagrams for ext in ("svg", "png")} | {
        "fig-ch01-demo.png",
        "01-figure-2.png",
        "01-figure-2.svg",
    }
    assert "A demo figure." in (folder / "README.md").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {i["file"] for i in manifest["items"]} == files
    archive = (out / f"{stem}.zip").read_bytes()
    names = set(zipfile.ZipFile(io.BytesIO(archive)).namelist())
    assert names == {f"{stem}/{f}" for f in files | {"README.md", "manifest.json"}}
    slides.build_chapter(stem, executed=executed, out=out)
    assert (out / f"{stem}.zip").read_bytes() == archive, "the zip must be the same on every build"


def test_slides_refuse_a_diagram_no_script_draws(tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(ROOT / "chapters" / "images" / "03-sdpa.svg", images)
    (images / "03-hand-drawn.svg").write_text(SVG)
    with pytest.raises(ValueError, match=r"\['03-hand-drawn'\].*drawn by no script"):
        slides.build_chapter("03-scaled-dot-product-attention", executed=tmp_path, images=images, out=tmp_path / "o")


def test_execute_chapters_merges_timings(tmp_path: Path):
    pytest.importorskip("nbclient")
    import execute_chapters

    path = tmp_path / "timings.json"
    path.write_text(json.dumps({"01-a": {"seconds": 5.0, "ok": True}}))
    outcomes = [execute_chapters.Outcome("02-b.md", 12.345, None), execute_chapters.Outcome("03-c.md", 3.0, "boom")]
    (tmp_path / "02-b.ipynb").write_text("{}")
    execute_chapters.record_timings(outcomes, jobs=2, reader=False, path=path)
    timings = json.loads(path.read_text())
    assert timings["02-b"]["sha256"] == hashlib.sha256(b"{}").hexdigest() and timings["03-c"]["sha256"] is None
    assert list(timings) == ["01-a", "02-b", "03-c"] and timings["01-a"] == {"seconds": 5.0, "ok": True}
    assert timings["02-b"]["seconds"] == 12.3 and timings["02-b"]["ok"] and timings["02-b"]["jobs"] == 2
    assert timings["03-c"]["ok"] is False


def test_a_new_chapter_needs_only_its_data_file(tmp_path: Path):
    """Writing chapter 07 and its teaching/07-....yaml is enough: its page is generated and the outline links it."""
    chapters, teaching = tmp_path / "chapters", tmp_path / "teaching"
    shutil.copytree(ROOT / "chapters", chapters, ignore=shutil.ignore_patterns("*.ipynb", "images"))
    shutil.copytree(ROOT / "teaching", teaching)
    stem = "07-exact-attention-in-linear-memory"
    exercise = "```{code-cell} ipython3\n# Exercise 1: solution\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n```\n"
    (chapters / f"{stem}.md").write_text(f"(ch07)=\n# 07. Exact\n\n## The idea\n\ntext\n\n## Exercises\n\n{exercise}")
    data = _data("01-attention-as-soft-lookup")
    data.update(chapter=7, core=["The idea"], optional=[], assignment=[1])
    data["prerequisites"]["chapters"] = [3]
    for step in data["lesson_plan"]:
        step.pop("run", None)
        if "exercise" in step:
            step["exercise"] = 1
    data["lesson_plan"][0]["run"] = ["The idea"]
    (teaching / f"{stem}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    files = make_teaching.expected_files(teaching_dir=teaching, chapters=chapters, executed=tmp_path, slides=tmp_path)
    page = files[make_teaching.OUT / f"{stem}-teaching.md"]
    assert page.startswith("(teach-ch07)=\n# Teaching chapter 07: Exact attention in linear memory")
    assert f"[The idea](../executed/{stem}.ipynb#the-idea) | core |" in page
    long = files[make_teaching.OUT / "course.md"].split("## A 12-week course")[1].split("\n## ")[0]
    assert (
        long.count("](#ch07)") == 1
        and "(#teach-ch07)" in long
        and "07. Exact attention in linear memory (planned)" not in long
    )
    # without its data file the chapter is linked but has no plan (and test_every_written_chapter_... fails)
    (teaching / f"{stem}.yaml").unlink()
    files = make_teaching.expected_files(teaching_dir=teaching, chapters=chapters, executed=tmp_path, slides=tmp_path)
    assert (
        "- [07. Exact attention in linear memory](#ch07) (no teacher's page yet)"
        in files[make_teaching.OUT / "course.md"]
    )

"""The bibliography gate: references.bib is well formed, holds the 57 seed papers of data/seeds.csv, every citation
resolves, and the syllabus (data/syllabus.yaml -> appendix/syllabus.md and README's Contents) agrees with them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_syllabus  # noqa: E402
from uncited_papers import (  # noqa: E402
    CITE_ROLE,
    SEEDS,
    cited_keys,
    is_seed,
    load_seed_table,
    normalise_title,
    parse_bibtex,
)

NUM_SEEDS = 57


@pytest.fixture(scope="module")
def entries() -> dict[str, dict[str, str]]:
    return parse_bibtex((ROOT / "references.bib").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def seed_papers():
    return load_seed_table(SEEDS)


def test_parser_on_a_small_example():
    text = """
    @comment{ignored {nested} }
    @Article{smith2020x,
      Title = {A {Nested} Title with $\\cdot$},
      year = 2020,
      journal = "J. of Things",
    }
    @misc{other2021y, title={Two}, year={2021}}
    """
    parsed = parse_bibtex(text)
    assert list(parsed) == ["smith2020x", "other2021y"]
    assert parsed["smith2020x"] == {
        "ENTRYTYPE": "article",
        "title": "A {Nested} Title with $\\cdot$",
        "year": "2020",
        "journal": "J. of Things",
    }
    with pytest.raises(ValueError, match="duplicate key 'other2021y'"):
        parse_bibtex(text + "@misc{other2021y, title={Again}, year={2021}}")
    with pytest.raises(ValueError, match="unterminated"):
        parse_bibtex("@misc{broken, title={x}")


def test_citation_roles_are_recognised():
    text = "See {cite}`a2020x, b2021y` and {cite:p}`c2022z`, {cite:t}`d2023w`; not `{cite}` alone."
    keys = [k.strip() for group in CITE_ROLE.findall(text) for k in group.split(",")]
    assert keys == ["a2020x", "b2021y", "c2022z", "d2023w"]


def test_every_entry_has_key_title_year(entries):
    assert entries, "references.bib has no entries"
    for key, entry in entries.items():
        assert re.fullmatch(r"[a-z0-9]+", key), f"key {key!r} is not lowercase ASCII letters and digits"
        assert entry.get("title", "").strip(), f"{key}: no title"
        assert re.fullmatch(r"\d{4}", entry.get("year", "")), f"{key}: year {entry.get('year')!r} is not a year"
        assert key.find(entry["year"]) > 0, f"{key}: the key does not contain the entry's year {entry['year']}"


def test_seed_table_reader(tmp_path):
    table = tmp_path / "seeds.csv"
    table.write_text('key,listed_date,title\na2021x,2021-10-12,"One, Two"\nb2025y,--08-08,Three\n', encoding="utf-8")
    papers = load_seed_table(table)
    assert [(p.key, p.year, p.month, p.day, p.title) for p in papers] == [
        ("a2021x", 2021, 10, 12, "One, Two"),
        ("b2025y", None, 8, 8, "Three"),
    ]
    table.write_text("key,listed_date,title\na2021x,12 Oct 2021,One\n", encoding="utf-8")
    with pytest.raises(ValueError, match="listed_date"):
        load_seed_table(table)
    table.write_text("key,title\na2021x,One\n", encoding="utf-8")
    with pytest.raises(ValueError, match="columns"):
        load_seed_table(table)


def test_seed_entries_are_the_seed_list(entries, seed_papers):
    assert len(seed_papers) == NUM_SEEDS, f"{SEEDS} lists {len(seed_papers)} papers, expected {NUM_SEEDS}"
    listed = {p.key: p for p in seed_papers}
    assert len(listed) == NUM_SEEDS, "data/seeds.csv repeats a key"
    assert len({normalise_title(p.title) for p in seed_papers}) == NUM_SEEDS, "data/seeds.csv repeats a title"
    seeds = {key: e for key, e in entries.items() if is_seed(e)}
    assert len(seeds) == NUM_SEEDS, f"{len(seeds)} entries have keywords = {{seed}}, expected {NUM_SEEDS}"
    assert sorted(seeds) == sorted(listed), {
        "in references.bib only": sorted(set(seeds) - set(listed)),
        "in data/seeds.csv only": sorted(set(listed) - set(seeds)),
    }
    wrong = {
        key: (seeds[key]["title"], paper.title)
        for key, paper in listed.items()
        if normalise_title(seeds[key]["title"]) != normalise_title(paper.title)
    }
    assert not wrong, f"titles differ (references.bib, data/seeds.csv): {wrong}"


def test_seed_years_follow_the_listed_dates(entries, seed_papers):
    latest_explicit = max(p.year for p in seed_papers if p.year is not None)
    for paper in seed_papers:
        year = int(entries[paper.key]["year"])
        if paper.year is not None:
            assert year == paper.year, f"{paper.key}: year {year}, the list says {paper.year}"
        else:  # the listing omits the year of its own (most recent) year
            assert year >= latest_explicit, f"{paper.key}: year {year} is older than the list's dated papers"


def test_every_citation_resolves(entries):
    cited = cited_keys(ROOT / "chapters")
    missing = {key: sorted(chapters) for key, chapters in cited.items() if key not in entries}
    assert not missing, f"cited but not in references.bib: {missing}"


def test_uncited_script_runs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "uncited_papers.py")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\d+ of \d+ seed papers are not cited", result.stdout, flags=re.M), result.stdout


# --- The syllabus: data/syllabus.yaml, appendix/syllabus.md and README's Contents ---------------------------------

NUM_CHAPTERS = 26


@pytest.fixture(scope="module")
def syllabus():
    return make_syllabus.load_syllabus()


def test_syllabus_assigns_every_seed_to_exactly_one_chapter(syllabus, entries):
    assert len(syllabus.chapters) == NUM_CHAPTERS
    assigned = [key for chapter in syllabus.chapters for key in chapter.papers]
    seeds = sorted(key for key, entry in entries.items() if is_seed(entry))
    assert sorted(assigned) == seeds, {
        "not in the syllabus": sorted(set(seeds) - set(assigned)),
        "in the syllabus, not a seed entry": sorted(set(assigned) - set(seeds)),
        "listed twice": sorted({k for k in assigned if assigned.count(k) > 1}),
    }
    for chapter in syllabus.chapters:
        for key in chapter.also:
            assert key in assigned and key not in chapter.papers, f"chapter {chapter.number}: 'also' key {key!r}"
    assert len({c.slug for c in syllabus.chapters}) == NUM_CHAPTERS, "two chapters share a slug"


def test_syllabus_matches_the_chapter_files(syllabus):
    by_number = {c.number: c for c in syllabus.chapters}
    for md in sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md")):
        chapter = by_number.get(int(md.name[:2]))
        assert chapter is not None and md.stem == chapter.stem, (
            f"{md.name} is not in data/syllabus.yaml (chapter {md.name[:2]} is "
            f"{chapter.stem if chapter else 'missing'}): give the file that name or change the syllabus"
        )
        heading = re.search(r"^# (\d\d)\. (.+)$", md.read_text(encoding="utf-8"), flags=re.M)
        assert heading is not None, f"{md.name}: no '# NN. Title' heading"
        assert heading.group(2).strip() == chapter.title, (
            f"{md.name}: title {heading.group(2)!r}, data/syllabus.yaml says {chapter.title!r}"
        )


def test_syllabus_page_shows_each_paper_with_its_chapter_and_status(syllabus, entries):
    """Read the committed page back: one row per seed key, under its chapter, with the status the chapters give."""
    page = (ROOT / "appendix" / "syllabus.md").read_text(encoding="utf-8")
    assert "title: Syllabus" in page.split("---")[1], "front matter title"
    assert re.search(r"^\(appendix-syllabus\)=\n# Syllabus$", page, flags=re.M), "label right above the title"
    cited = cited_keys(ROOT / "chapters")
    current = None
    rows: dict[str, tuple[int, str]] = {}
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) != 3 or cells[0] == "Chapter":
            continue
        if cells[0]:
            current = int(re.search(r"(\d\d)\. ", cells[0]).group(1))
        for key in re.findall(r"\{cite:p\}`([^`]+)`", cells[1]):
            assert key not in rows, f"{key} appears twice on the page"
            rows[key] = (current, cells[2])
    assert sorted(rows) == sorted(k for k, e in entries.items() if is_seed(e))
    for chapter in syllabus.chapters:
        md = ROOT / "chapters" / f"{chapter.stem}.md"
        for key in chapter.papers:
            taught = md.is_file() and md.name in cited.get(key, set())
            assert rows[key] == (chapter.number, "taught" if taught else "planned"), (key, rows[key])


def test_the_book_is_complete(syllabus, entries):
    """All 26 chapters are written, and every seed paper is cited by the chapter that builds its mechanism (the one
    the syllabus assigns it to) and by every chapter that comes back to it; the syllabus page has no planned row."""
    cited = cited_keys(ROOT / "chapters")
    missing = [c.stem for c in syllabus.chapters if not (ROOT / "chapters" / f"{c.stem}.md").is_file()]
    assert not missing, f"chapters not written: {missing}"
    uncited = {
        key: chapter.stem
        for chapter in syllabus.chapters
        for key in (*chapter.papers, *chapter.also)
        if f"{chapter.stem}.md" not in cited.get(key, set())
    }
    assert not uncited, f"seed papers not cited by the chapter that teaches or revisits them: {uncited}"
    seeds = {key for key, entry in entries.items() if is_seed(entry)}
    assert {key for c in syllabus.chapters for key in c.papers} == seeds
    page = (ROOT / "appendix" / "syllabus.md").read_text(encoding="utf-8")
    assert not re.search(r"\|\s*planned\s*\|", page), "the syllabus page still has a planned row"
    assert "planned" not in make_syllabus.render_contents(syllabus), "README's Contents still lists a planned chapter"


def test_syllabus_page_and_readme_are_up_to_date():
    for path, text in make_syllabus.expected_files().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is stale: run python scripts/make_syllabus.py"


def test_syllabus_rejects_bad_data(tmp_path):
    bad = tmp_path / "syllabus.yaml"
    bad.write_text(
        "parts: [{number: I, title: A}]\nchapters:\n"
        "  - {number: 1, slug: a, title: A, part: I, papers: [x2020y]}\n"
        "  - {number: 2, slug: b, title: B, part: I, papers: [x2020y]}\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="more than one chapter.*x2020y"):
        make_syllabus.load_syllabus(bad)
    bad.write_text(
        "parts: [{number: I, title: A}]\nchapters:\n  - {number: 2, slug: a, title: A, part: I}\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match="numbers"):
        make_syllabus.load_syllabus(bad)
    bad.write_text(
        "parts: [{number: I, title: A}]\nchapters:\n  - {number: 1, slug: a, title: A, part: IX}\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match="part"):
        make_syllabus.load_syllabus(bad)

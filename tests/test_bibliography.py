"""The bibliography gate: references.bib is well formed, holds the 57 seed papers, and every citation resolves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
sys.path.insert(0, str(ROOT / "scripts"))
from uncited_papers import (  # noqa: E402
    CITE_ROLE,
    cited_keys,
    is_seed,
    normalise_title,
    parse_bibtex,
    parse_seed_list,
)

NUM_SEEDS = 57


@pytest.fixture(scope="module")
def entries() -> dict[str, dict[str, str]]:
    return parse_bibtex((ROOT / "references.bib").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def seed_papers():
    files = sorted(SEEDS.glob("*.txt")) if SEEDS.is_dir() else []
    if not files:
        pytest.skip(f"the seed list folder {SEEDS} is absent (it lives beside the repository, not in it)")
    return [paper for f in files for paper in parse_seed_list(f.read_text(encoding="utf-8"))]


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
    assert parsed["smith2020x"] == {"ENTRYTYPE": "article", "title": "A {Nested} Title with $\\cdot$",
                                    "year": "2020", "journal": "J. of Things"}
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


def test_seed_entries_are_the_seed_list(entries, seed_papers):
    assert len(seed_papers) == NUM_SEEDS, f"parsed {len(seed_papers)} papers from {SEEDS}, expected {NUM_SEEDS}"
    listed = {normalise_title(p.title): p for p in seed_papers}
    assert len(listed) == NUM_SEEDS, "the seed list has repeated titles"
    seeds = {key: e for key, e in entries.items() if is_seed(e)}
    assert len(seeds) == NUM_SEEDS, f"{len(seeds)} entries have keywords = {{seed}}, expected {NUM_SEEDS}"
    titles = {normalise_title(e["title"]): key for key, e in seeds.items()}
    assert len(titles) == NUM_SEEDS, "two seed entries share a title"
    assert sorted(titles) == sorted(listed), {
        "in references.bib only": sorted(set(titles) - set(listed)),
        "in the seed list only": sorted(set(listed) - set(titles)),
    }


def test_seed_years_follow_the_listed_dates(entries, seed_papers):
    listed = {normalise_title(p.title): p for p in seed_papers}
    latest_explicit = max(p.year for p in seed_papers if p.year is not None)
    for key, entry in entries.items():
        if not is_seed(entry):
            continue
        paper = listed[normalise_title(entry["title"])]
        year = int(entry["year"])
        if paper.year is not None:
            assert year == paper.year, f"{key}: year {year}, the list says {paper.year}"
        else:  # the listing omits the year of its own (most recent) year
            assert year >= latest_explicit, f"{key}: year {year} is older than the list's dated papers"


def test_every_citation_resolves(entries):
    cited = cited_keys(ROOT / "chapters")
    missing = {key: sorted(chapters) for key, chapters in cited.items() if key not in entries}
    assert not missing, f"cited but not in references.bib: {missing}"


def test_uncited_script_runs():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "uncited_papers.py")],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\d+ of \d+ seed papers are not cited", result.stdout, flags=re.M), result.stdout

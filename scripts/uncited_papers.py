"""Print the seed papers of ``references.bib`` that no chapter cites yet.

Usage::

    python scripts/uncited_papers.py

A seed paper is a BibTeX entry whose ``keywords`` field contains ``seed``. A paper counts as cited when
its key appears in a MyST citation role (``{cite}`a,b` ``, ``{cite:p}`...` ``, ``{cite:t}`...` ``, ...)
in any ``chapters/*.md``. The script always exits 0; it is a to-do list, not a gate.

The small parsers here (BibTeX, citation roles, the source list in ``data/seeds.csv``) are also used by
``tests/test_bibliography.py`` and ``scripts/make_syllabus.py``, so the scripts and the tests can never
disagree about what a key or a citation is.
"""

from __future__ import annotations

import csv
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIB = ROOT / "references.bib"
CHAPTERS = ROOT / "chapters"
SEEDS = ROOT / "data" / "seeds.csv"

#: A MyST citation role: {cite}`k1,k2`, {cite:p}`k`, {cite:t}`k`, {cite:ps}`k`, ...
CITE_ROLE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]*)`")

#: A listed date: ``2021-10-12``, or ``--08-08`` where the listing gave no year.
LISTED_DATE = re.compile(r"^(?:(?P<year>\d{4})|-)-(?P<month>\d{2})-(?P<day>\d{2})$")


def parse_bibtex(text: str) -> dict[str, dict[str, str]]:
    """Parse BibTeX ``text`` into ``{key: {"ENTRYTYPE": type, field: value, ...}}``.

    Handles brace-delimited values with nesting, quoted values and bare numbers; field names are lowercased,
    values keep their inner braces and LaTeX. ``@comment``, ``@preamble`` and ``@string`` blocks are skipped.
    Raises ``ValueError`` on a duplicate key or an unterminated entry.
    """
    entries: dict[str, dict[str, str]] = {}
    pos = 0
    while True:
        at = text.find("@", pos)
        if at < 0:
            return entries
        head = re.match(r"@\s*([A-Za-z]+)\s*\{", text[at:])
        if head is None:
            pos = at + 1
            continue
        entry_type = head.group(1).lower()
        start = at + head.end()
        end = _matching_brace(text, start - 1)
        pos = end + 1
        if entry_type in {"comment", "preamble", "string"}:
            continue
        body = text[start:end]
        key, _, rest = body.partition(",")
        key = key.strip()
        if not key:
            raise ValueError(f"entry at offset {at} has no key")
        if key in entries:
            raise ValueError(f"duplicate key {key!r}")
        entries[key] = {"ENTRYTYPE": entry_type, **_parse_fields(rest, key)}


def _matching_brace(text: str, open_index: int) -> int:
    depth = 0
    for i in range(open_index, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unterminated entry starting at offset {open_index}")


def _parse_fields(body: str, key: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    i = 0
    while True:
        m = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*").match(body, i)
        if m is None:
            if body[i:].strip(" \t\r\n,"):
                raise ValueError(f"entry {key!r}: cannot parse fields near {body[i : i + 40]!r}")
            return fields
        name = m.group(1).lower()
        i = m.end()
        if i < len(body) and body[i] == "{":
            close = _matching_brace(body, i)
            value, i = body[i + 1 : close], close + 1
        elif i < len(body) and body[i] == '"':
            close = body.index('"', i + 1)
            value, i = body[i + 1 : close], close + 1
        else:
            bare = re.compile(r"[^,\s]+").match(body, i)
            if bare is None:
                raise ValueError(f"entry {key!r}: field {name!r} has no value")
            value, i = bare.group(0), bare.end()
        if name in fields:
            raise ValueError(f"entry {key!r}: duplicate field {name!r}")
        fields[name] = " ".join(value.split())


def normalise_title(title: str) -> str:
    """Lowercase ASCII letters and digits only: ``{HyperZ$\\cdot$Z$\\cdot$W}`` → ``hyperzcdotzcdotw``."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", ascii_title.lower())


def is_seed(entry: dict[str, str]) -> bool:
    return "seed" in [k.strip().lower() for k in entry.get("keywords", "").split(",")]


def cited_keys(chapters: Path = CHAPTERS) -> dict[str, set[str]]:
    """Map every key cited in ``chapters/*.md`` to the chapter files that cite it."""
    cited: dict[str, set[str]] = {}
    for md in sorted(chapters.glob("*.md")):
        for group in CITE_ROLE.findall(md.read_text(encoding="utf-8")):
            for key in group.split(","):
                if key.strip():
                    cited.setdefault(key.strip(), set()).add(md.name)
    return cited


@dataclass(frozen=True)
class SeedPaper:
    """One paper of the book's source list (``data/seeds.csv``): its BibTeX key, title and listed date.

    ``year`` is ``None`` where the listing gave only month and day (it omits the year of its own, most recent,
    year); ``listed_date`` is then written ``--MM-DD``.
    """

    key: str
    title: str
    month: int
    day: int
    year: int | None


def load_seed_table(path: Path = SEEDS) -> list[SeedPaper]:
    """Read the source list, ``data/seeds.csv`` (columns ``key``, ``listed_date``, ``title``), in its order."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != ["key", "listed_date", "title"]:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected ['key', 'listed_date', 'title']")
        papers = []
        for line, row in enumerate(reader, start=2):
            date = LISTED_DATE.match(row["listed_date"])
            if date is None:
                raise ValueError(f"{path}:{line}: listed_date {row['listed_date']!r} is not YYYY-MM-DD or --MM-DD")
            year = date.group("year")
            papers.append(
                SeedPaper(
                    key=row["key"],
                    title=row["title"],
                    month=int(date.group("month")),
                    day=int(date.group("day")),
                    year=int(year) if year else None,
                )
            )
    return papers


def uncited_seeds(bib_text: str, cited: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(key, title)`` of every seed entry whose key is not in ``cited``, in file order."""
    return [
        (key, entry.get("title", ""))
        for key, entry in parse_bibtex(bib_text).items()
        if is_seed(entry) and key not in cited
    ]


def main() -> int:
    entries = parse_bibtex(BIB.read_text(encoding="utf-8"))
    seeds = [key for key, entry in entries.items() if is_seed(entry)]
    missing = uncited_seeds(BIB.read_text(encoding="utf-8"), cited_keys())
    for key, title in missing:
        sys.stdout.write(f"{key:24s} {title}\n")
    sys.stdout.write(f"\n{len(missing)} of {len(seeds)} seed papers are not cited by any chapter yet.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Print the seed papers of ``references.bib`` that no chapter cites yet.

Usage::

    python scripts/uncited_papers.py

A seed paper is a BibTeX entry whose ``keywords`` field contains ``seed``. A paper counts as cited when
its key appears in a MyST citation role (``{cite}`a,b` ``, ``{cite:p}`...` ``, ``{cite:t}`...` ``, ...)
in any ``chapters/*.md``. The script always exits 0; it is a to-do list, not a gate.

The small parsers here (BibTeX, citation roles, the scraped seed list) are also used by
``tests/test_bibliography.py``, so the script and the test can never disagree about what a key or a
citation is.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIB = ROOT / "references.bib"
CHAPTERS = ROOT / "chapters"

#: A MyST citation role: {cite}`k1,k2`, {cite:p}`k`, {cite:t}`k`, {cite:ps}`k`, ...
CITE_ROLE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]*)`")

MONTHS = {m: i for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                      "Dec"], start=1)}
#: "Oct 12, 2021", "Oct 20, 2023 2", "Aug 8", "Sep 26 1": the trailing number is the listing's up-vote count.
DATE_LINE = re.compile(r"^(?P<month>[A-Z][a-z]{2}) (?P<day>\d{1,2})(?:, (?P<year>\d{4}))?(?: \d+)?$")
AUTHORS_LINE = re.compile(r"^\s*•\s*(?P<n>\d+) authors?\s*$")
#: Abstract paragraphs are long; titles and the listing's chrome are short.
LONG_LINE = 300


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
                raise ValueError(f"entry {key!r}: cannot parse fields near {body[i:i + 40]!r}")
            return fields
        name = m.group(1).lower()
        i = m.end()
        if i < len(body) and body[i] == "{":
            close = _matching_brace(body, i)
            value, i = body[i + 1:close], close + 1
        elif i < len(body) and body[i] == '"':
            close = body.index('"', i + 1)
            value, i = body[i + 1:close], close + 1
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
    """One paper of the scraped seed list: title, listed date (year is None when the listing omits it)."""

    title: str
    month: int
    day: int
    year: int | None
    num_authors: int | None


def parse_seed_list(text: str) -> list[SeedPaper]:
    """Parse the scraped paper listing (``shared/seeds/*.txt``).

    Each record is: a title line, one or more (long) abstract paragraphs, an author line ("• 7 authors" or
    an organisation's name), a line holding only "·", and a date line. A record is anchored on its "·"
    line; its title is the last short line before the first long line after the previous record's date.
    """
    lines = [line.rstrip("\n") for line in text.splitlines()]
    papers: list[SeedPaper] = []
    segment_start = 0
    for i, line in enumerate(lines):
        if line.strip() != "·":
            continue
        date_index = next((j for j in range(i + 1, len(lines)) if lines[j].strip()), None)
        date = DATE_LINE.match(lines[date_index].strip()) if date_index is not None else None
        if date is None:
            raise ValueError(f"line {i + 1}: '·' is not followed by a date line")
        segment = [s.strip() for s in lines[segment_start:i] if s.strip()]
        first_long = next((k for k, s in enumerate(segment) if len(s) >= LONG_LINE), None)
        if first_long is None or first_long == 0:
            raise ValueError(f"line {i + 1}: record has no title line before its abstract")
        author_line = segment[-1]
        authors = AUTHORS_LINE.match(author_line)
        papers.append(SeedPaper(
            title=segment[first_long - 1],
            month=MONTHS[date.group("month")],
            day=int(date.group("day")),
            year=int(date.group("year")) if date.group("year") else None,
            num_authors=int(authors.group("n")) if authors else None,
        ))
        segment_start = date_index + 1
    return papers


def uncited_seeds(bib_text: str, cited: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(key, title)`` of every seed entry whose key is not in ``cited``, in file order."""
    return [(key, entry.get("title", "")) for key, entry in parse_bibtex(bib_text).items()
            if is_seed(entry) and key not in cited]


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

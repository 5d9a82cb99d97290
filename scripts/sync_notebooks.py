"""Regenerate every chapter's .ipynb from its MyST markdown source (the source of truth), without outputs.

python scripts/sync_notebooks.py            # write chapters/*.ipynb
python scripts/sync_notebooks.py --check    # exit 1 and list the pairs whose cells differ
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"


def notebook_from_markdown(md: Path) -> nbformat.NotebookNode:
    """The notebook a chapter's markdown defines: same cells, no outputs, no execution counts."""
    nb = jupytext.read(md)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    seen: dict[str, int] = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        # Deterministic cell ids (a hash of the chapter and the cell, numbered when two cells are equal), so that
        # regenerating a pair rewrites only the cells that changed instead of every id. The chapter is part of the
        # hash because the site puts every chapter in one project, where an id may appear once.
        digest = hashlib.sha1(f"{md.stem}\n{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:12]
        seen[digest] = seen.get(digest, 0) + 1
        cell.id = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"
    return nb


def cell_sources(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def stale_pairs() -> list[str]:
    bad = []
    for md in sorted(CHAPTERS.glob("[0-9][0-9]-*.md")):
        nb_path = md.with_suffix(".ipynb")
        if not nb_path.exists():
            bad.append(f"{nb_path.name} is missing")
            continue
        if cell_sources(notebook_from_markdown(md)) != cell_sources(nbformat.read(nb_path, as_version=4)):
            bad.append(f"{nb_path.name} differs from {md.name}")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report stale pairs")
    parser.add_argument("chapters", nargs="*", type=Path, help="markdown chapters (default: all)")
    args = parser.parse_args()
    if args.check:
        bad = stale_pairs()
        print("\n".join(bad) if bad else "all chapter pairs are in sync")
        return 1 if bad else 0
    for md in [p.resolve() for p in args.chapters] or sorted(CHAPTERS.glob("[0-9][0-9]-*.md")):
        target = md.with_suffix(".ipynb")
        text = nbformat.writes(notebook_from_markdown(md)) + "\n"
        if target.exists() and target.read_text() == text:
            continue
        target.write_text(text)
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

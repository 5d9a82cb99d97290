"""The first code cell of every chapter: it installs what the chapter imports when the notebook runs alone.

    python scripts/install_cells.py            # rewrite the first code cell of every chapter and of the template
    python scripts/install_cells.py --check    # exit 1 and list the chapters whose first cell is not what they need

A chapter opened alone (Colab, a fresh kernel) has only what its first cell installs. That cell installs `attnbook`
and, when the chapter imports something beyond the package's core dependencies, the optional extra that provides
it (pyproject.toml's `book` extra, e.g. `transformers`): `pip install "attnbook[book] @ <source>"`, from
`$ATTNBOOK_SOURCE` (a path, a wheel or a URL) when set, else from the book's public repository. It checks the
modules first, so that it installs nothing where they are already importable. Chapters that need no extra install
only the core, which keeps the install as light as the chapter allows.

The modules a chapter imports are read with `ast` from its code cells and mapped to the distributions that
provide them (importlib.metadata); tests/test_install_lines.py checks the cells independently.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_notebooks import CHAPTERS, ROOT, notebook_from_markdown  # noqa: E402

REPOSITORY_URL = "git+https://github.com/attention-derived/attention-derived"
TEMPLATE = ROOT / "scripts" / "chapter_template.md"
#: Provided by every Jupyter kernel (Colab included): a chapter may import them without installing anything.
KERNEL = {"ipython", "ipykernel"}

CELL = """\
# Make this notebook work on its own (Colab, a fresh kernel): when a module it imports is missing, install
# attnbook{extras} from $ATTNBOOK_SOURCE (a path, wheel or URL) if set, else from the book's public repository.
import importlib.util, os, subprocess, sys
needs, extras = {needs}, "{extras}"
if any(importlib.util.find_spec(module) is None for module in needs):
    source = os.environ.get("ATTNBOOK_SOURCE", "{url}")
    requirement = f"attnbook{{extras}} @ {{source}}" if "://" in source else source + extras
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", requirement], check=True)"""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalise(re.match(r"^\s*([A-Za-z0-9_.-]+)", requirement).group(1))


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def core_distributions() -> set[str]:
    return {requirement_name(r) for r in project()["dependencies"]}


def extra_distributions(extra: str) -> set[str]:
    return {requirement_name(r) for r in project()["optional-dependencies"][extra]}


def code_cells(md: Path) -> list[str]:
    return [cell.source for cell in notebook_from_markdown(md).cells if cell.cell_type == "code"]


def imported_modules(sources: list[str]) -> set[str]:
    """Top-level names of the absolute imports in these code cells (IPython magics and shell lines skipped)."""
    modules = set()
    for source in sources:
        lines = ["" if re.match(r"^\s*[%!]", line) else line for line in source.splitlines()]
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def third_party(modules: set[str]) -> dict[str, set[str]]:
    """Module -> the distributions that provide it, for the modules that are not the standard library or attnbook.
    A module no installed distribution provides raises: the chapter would fail in this environment too."""
    provided = packages_distributions()
    out = {}
    for module in sorted(modules - set(sys.stdlib_module_names) - {"attnbook"}):
        if module not in provided:
            raise ValueError(f"no installed distribution provides the module {module!r}")
        out[module] = {normalise(d) for d in provided[module]}
    return out


def needs_of(md: Path) -> tuple[list[str], str]:
    """(modules to check, extras to install) for a chapter."""
    core = core_distributions() | KERNEL
    extras = project()["optional-dependencies"]
    needs, chosen = ["attnbook"], []
    for module, dists in third_party(imported_modules(code_cells(md))).items():
        if dists & core:
            continue
        providing = [extra for extra in extras if extra != "dev" and dists & extra_distributions(extra)]
        if not providing:
            raise ValueError(
                f"{md.name} imports {module!r} ({', '.join(sorted(dists))}), which neither attnbook's dependencies "
                "nor an extra of pyproject.toml provide: add it to the `book` extra (and to dev, environment.yml)"
            )
        needs.append(module)
        chosen += [providing[0]] if providing[0] not in chosen else []
    return needs, f"[{','.join(sorted(chosen))}]" if chosen else ""


def install_cell(needs: list[str], extras: str) -> str:
    return CELL.format(needs=json.dumps(needs), extras=extras, url=REPOSITORY_URL)


def first_code_cell_span(text: str) -> tuple[int, int]:
    """Character span of the source of the first ```{code-cell}``` (after its option lines) in a chapter."""
    start = re.search(r"^```\{code-cell\}[^\n]*\n((?::[\w-]+:[^\n]*\n)*)", text, flags=re.M)
    if not start:
        raise ValueError("no code cell")
    end = text.index("\n```", start.end())
    return start.end(), end


def with_install_cell(text: str, cell: str) -> str:
    start, end = first_code_cell_span(text)
    return text[:start] + cell + text[end:]


def stale() -> list[str]:
    bad = []
    for md in sorted(CHAPTERS.glob("[0-9][0-9]-*.md")):
        text = md.read_text()
        if with_install_cell(text, install_cell(*needs_of(md))) != text:
            bad.append(f"{md.name}: its first code cell is not the install cell its imports need")
    text = TEMPLATE.read_text()
    if with_install_cell(text, install_cell(["attnbook"], "")) != text:
        bad.append(f"{TEMPLATE.name}: its first code cell is not the install cell")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report chapters whose install cell is stale")
    args = parser.parse_args()
    if args.check:
        bad = stale()
        print("\n".join(bad) if bad else "every chapter's first cell installs what it imports")
        return 1 if bad else 0
    for md in sorted(CHAPTERS.glob("[0-9][0-9]-*.md")):
        needs, extras = needs_of(md)
        md.write_text(with_install_cell(md.read_text(), install_cell(needs, extras)))
        print(f"{md.name}: installs attnbook{extras}, checks {needs}")
    TEMPLATE.write_text(with_install_cell(TEMPLATE.read_text(), install_cell(["attnbook"], "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The website: myst.yml lists the book as planned, and (opt-in) the built site passes the browser test.

The consistency checks are instant and always run. The build + browser test executes every chapter and starts
Chromium, so it runs only when ATTNBOOK_SITE_TEST=1 (CI sets it, after the unit tests, on its own):

    ATTNBOOK_SITE_TEST=1 .venv/bin/python -m pytest tests/test_site.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _toc() -> list[dict]:
    return yaml.safe_load((ROOT / "myst.yml").read_text())["project"]["toc"]


def _parts() -> list[dict]:
    """The toc's "Part ..." entries (the appendices and the API reference follow them)."""
    return [entry for entry in _toc() if "children" in entry and entry["title"].startswith("Part ")]


def _chapter_entries() -> list[dict]:
    """Every chapter entry of the toc, written (file) or planned (title only), in order."""
    return [child for part in _parts() for child in part["children"]]


def _section(title: str) -> list[str]:
    """The files listed under a top-level toc entry ("Appendices", "API reference")."""
    found = [entry for entry in _toc() if entry.get("title") == title]
    assert len(found) == 1, f"myst.yml needs one top-level toc entry titled {title!r}"
    return [child["file"] for child in found[0]["children"]]


def test_toc_has_six_parts_and_26_chapters():
    parts = [entry["title"] for entry in _parts()]
    numerals = ["I", "II", "III", "IV", "V", "VI"]
    assert [title.split(" ")[:2] for title in parts] == [["Part", n] for n in numerals], parts
    numbers = []
    for entry in _chapter_entries():
        name = Path(entry["file"]).name if "file" in entry else entry["title"]
        numbers.append(int(re.match(r"\d+", name).group()))
    assert numbers == list(range(1, 27)), f"chapter numbers in myst.yml: {numbers}"


def test_every_written_chapter_is_in_the_toc_and_only_those():
    listed = [Path(entry["file"]).stem for entry in _chapter_entries() if "file" in entry]
    written = [md.stem for md in CHAPTERS]
    assert sorted(listed) == written, (
        "myst.yml must list each chapters/NN-slug.md as `- file: _build/executed/NN-slug.ipynb` "
        f"(replacing its planned entry): listed {listed}, written {written}"
    )
    for entry in _chapter_entries():
        if "file" in entry:
            assert entry["file"].startswith("_build/executed/") and entry["file"].endswith(".ipynb"), entry
        else:
            assert set(entry) == {"title", "children"} and entry["children"] == [], (
                f'a planned chapter is `{{title: "NN. Title", children: []}}` (quote the title): {entry}'
            )


def test_toc_ends_with_the_appendices_and_the_api_reference():
    top = [entry.get("title", entry.get("file")) for entry in _toc()]
    assert top[0] == "index.md" and top[-2:] == ["Appendices", "API reference"], top
    appendices = _section("Appendices")
    names = ("notation", "glossary", "training", "syllabus", "long-attention-zoo")
    assert appendices == [f"appendix/{name}.md" for name in names], appendices
    for name in appendices:
        text = (ROOT / name).read_text()
        label = f"(appendix-{Path(name).stem})="
        assert re.search(rf"^{re.escape(label)}$", text, re.M), f"{name} must have the label {label} (above its title)"
    # The API pages are generated into _build/api/ by scripts/api_reference.py, one per entry of its PAGES.
    import importlib.util

    spec = importlib.util.spec_from_file_location("api_reference", ROOT / "scripts" / "api_reference.py")
    if importlib.util.find_spec("griffe") is None:
        pytest.skip("griffe (dev extra) is not installed")
    api_reference = importlib.util.module_from_spec(spec)
    sys.modules["api_reference"] = api_reference  # its dataclasses look their module up there
    spec.loader.exec_module(api_reference)
    expected = ["_build/api/api.md"] + [f"_build/api/api-{stem}.md" for stem, _title, _modules in api_reference.PAGES]
    assert _section("API reference") == expected


def test_every_chapter_has_its_label_above_its_title():
    for md in CHAPTERS:
        number = md.name[:2]
        assert re.search(rf"^\(ch{number}\)=\n# {number}\. ", md.read_text(), re.M), (
            f"{md.name}: put `(ch{number})=` on its own line right above its `# {number}. Title` heading"
        )


def test_api_reference_is_generated_with_chapters_and_labels(tmp_path):
    pytest.importorskip("griffe")
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "api_reference.py"), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    attention = (tmp_path / "api-attention.md").read_text()
    # The canonical and the public path both label MultiHeadAttention's entry, which links to chapter 04.
    entry = attention.split("(api-attnbook-attention-core-MultiHeadAttention)=\n### `MultiHeadAttention`")[1]
    entry = entry.split("\n### ")[0]
    assert "(api-attnbook-attention-MultiHeadAttention)=" in entry
    assert "class MultiHeadAttention(" in entry and "embed_dim: int" in entry
    assert "derived in [chapter 04](#ch04)" in entry
    # Labels are case-insensitive in MyST: no two entries may share one.
    labels = [m.lower() for p in tmp_path.glob("*.md") for m in re.findall(r"^\((api-[^)]+)\)=$", p.read_text(), re.M)]
    assert len(labels) == len(set(labels)), sorted({label for label in labels if labels.count(label) > 1})
    # Every module of the package is documented on some page, and every entry of chapters 01-06's modules has
    # its chapter (the Promote sections and docstrings name them).
    pages = "".join(p.read_text() for p in tmp_path.glob("api-*.md"))
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "attnbook").rglob("*.py")
        if not p.name.startswith("_")
    }
    missing = sorted(m for m in modules if f"(api-{m.replace('.', '-')})=" not in pages)
    assert not missing, f"modules without a section in the API reference (add them to PAGES): {missing}"
    for module in ("kernel", "additive", "functional", "masks", "core", "positional"):
        section = attention.split(f"(api-attnbook-attention-{module})=\n## ")[1].split("\n## ")[0]
        assert "derived in [chapter" in section, module


def test_site_template_is_complete():
    template = ROOT / "site" / "template"
    config = yaml.safe_load((ROOT / "myst.yml").read_text())
    assert config["site"]["template"] == "site/template"
    assert (template / "template.yml").is_file() and (template / "package-lock.json").is_file()
    assert (template / "public").is_dir(), "mystmd copies the template's public/ folder and fails without it"
    assert yaml.safe_load((template / "template.yml").read_text())["myst"] == "v1"
    for key in ["bibliography", "github", "numbering"]:
        assert key in config["project"], key


@pytest.mark.slow
def test_site_builds_and_renders_in_a_browser():
    if os.environ.get("ATTNBOOK_SITE_TEST") != "1":
        pytest.skip("the site build + browser test runs only with ATTNBOOK_SITE_TEST=1 (it executes every chapter)")
    missing = [
        name
        for name, ok in [
            ("node", shutil.which("node")),
            ("npm", shutil.which("npm")),
            (CHROMIUM, Path(CHROMIUM).exists()),
        ]
        if not ok
    ]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install -y chromium nodejs npm)")
    build = subprocess.run(["bash", "scripts/build_site.sh"], cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, f"scripts/build_site.sh failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    browser = subprocess.run(
        ["node", "site/tests/browser.mjs", "_build/html", "--chromium", CHROMIUM],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(build.stdout[-2000:], browser.stdout, sep="\n")
    assert browser.returncode == 0, f"browser test failed:\n{browser.stdout[-6000:]}\n{browser.stderr[-6000:]}"

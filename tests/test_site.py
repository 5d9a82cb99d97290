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
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _toc() -> list[dict]:
    return yaml.safe_load((ROOT / "myst.yml").read_text())["project"]["toc"]


def _chapter_entries() -> list[dict]:
    """Every chapter entry of the toc, written (file) or planned (title only), in order."""
    return [child for part in _toc() if "children" in part for child in part["children"]]


def test_toc_has_six_parts_and_26_chapters():
    parts = [entry["title"] for entry in _toc() if "children" in entry]
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

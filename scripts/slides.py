"""Slide-ready material: one folder (and a .zip of it) per written chapter with its diagrams and headline figures.

    python scripts/slides.py                  # every chapter with an executed notebook -> _build/slides/
    python scripts/slides.py chapters/03-*.md # some

For chapter ``NN-slug`` it writes ``_build/slides/NN-slug/`` and ``_build/slides/NN-slug.zip`` holding

* every diagram of the chapter, ``chapters/images/NN-*.svg``, as the committed SVG and as a PNG drawn by the same
  diagram script (``scripts/diagrams/chNN_*.py``, re-run here with :func:`style.save` writing a PNG as well; the
  committed SVGs equal their scripts' output, which ``scripts/diagrams/build.py --check`` enforces);
* every figure the chapter's executed notebook (``_build/executed/NN-slug.ipynb``) shows, as PNG, and as SVG when
  the output has one, named after the figure's label (``fig-ch03-variance.png``) or, unlabelled, by its position
  (``03-figure-4.png``);
* ``README.md``: what each file is (the caption), where it comes from, and the licence;
* ``manifest.json``: the same as data, read by ``scripts/make_teaching.py`` to list the files on the teacher's page.

The zip is deterministic (sorted entries, fixed timestamps). scripts/build_site.sh runs this after executing the
chapters; a chapter without an executed notebook gets its diagrams only.
"""

from __future__ import annotations

import argparse
import base64
import json
import runpy
import shutil
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
IMAGES = CHAPTERS / "images"
DIAGRAMS = ROOT / "scripts" / "diagrams"
EXECUTED = ROOT / "_build" / "executed"
OUT = ROOT / "_build" / "slides"
PNG_DPI = 200
ZIP_TIME = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Item:
    file: str  # name inside the chapter's folder
    kind: str  # "diagram" or "figure"
    format: str  # "svg" or "png"
    caption: str
    source: str  # where it comes from, relative to the repository


def _diagram_scripts(number: str, diagrams: Path) -> list[Path]:
    return sorted(diagrams.glob(f"ch{number}_*.py"))


def render_diagram_pngs(number: str, names: list[str], into: Path, diagrams: Path = DIAGRAMS) -> dict[str, Path]:
    """Re-run chapter ``number``'s diagram scripts with ``style.save`` writing PNGs into ``into``; ``{name: png}``.

    Raises ``ValueError`` when a diagram in ``names`` is drawn by no script (every diagram must have one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sys.path.insert(0, str(diagrams))
    try:
        import style

        drawn: dict[str, Path] = {}
        original = style.save

        def save_png(fig, name: str) -> Path:
            path = into / f"{name}.png"
            fig.savefig(path, format="png", dpi=PNG_DPI, metadata={"Software": None})
            plt.close(fig)
            drawn[name] = path
            return path

        style.save = save_png
        try:
            for script in _diagram_scripts(number, diagrams):
                runpy.run_path(str(script), run_name="__main__")
        finally:
            style.save = original
    finally:
        sys.path.remove(str(diagrams))
    missing = sorted(set(names) - set(drawn))
    if missing:
        raise ValueError(
            f"diagrams {missing} of chapter {number} are drawn by no script scripts/diagrams/ch{number}_*.py "
            "(every diagram is drawn by one; see scripts/diagrams/style.py)"
        )
    return {name: drawn[name] for name in names}


def _diagram_caption(stem: str, name: str, chapters: Path) -> str:
    """The caption of the chapter's figure directive that shows ``images/<name>.svg`` (empty when none does)."""
    md = chapters / f"{stem}.md"
    if not md.is_file():
        return ""
    lines = md.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f":::{{figure}} images/{name}.svg":
            body = []
            for rest in lines[i + 1 :]:
                if rest.strip().startswith(":::"):
                    break
                if not rest.startswith(":"):
                    body.append(rest.strip())
            return " ".join(b for b in body if b)
    return ""


def notebook_figures(nb: dict, number: str) -> list[tuple[str, str, bytes | str, str]]:
    """``(name, format, data, caption)`` for every image output of the executed notebook's code cells, in order.

    PNG data is decoded to bytes; SVG data is text. A cell's ``label`` metadata (``fig-ch03-variance``) names its
    figure; an unlabelled one is ``NN-figure-K`` (K counts the chapter's figures from 1)."""
    found = []
    count = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        for k, output in enumerate(images):
            count += 1
            label = cell.get("metadata", {}).get("label")
            name = label if label else f"{number}-figure-{count}"
            if label and len(images) > 1:
                name = f"{label}-{k + 1}"
            caption = str(cell.get("metadata", {}).get("caption", ""))
            png = output["data"]["image/png"]
            found.append((name, "png", base64.b64decode("".join(png) if isinstance(png, list) else png), caption))
            svg = output["data"].get("image/svg+xml")
            if svg:
                found.append((name, "svg", "".join(svg) if isinstance(svg, list) else svg, caption))
    return found


def _readme(stem: str, items: list[Item]) -> str:
    lines = [
        f"# Slide-ready material for chapter {stem}",
        "",
        "From *Attention, Derived*, an open executable textbook on attention mechanisms. Diagrams are drawn by",
        "scripts in scripts/diagrams/; figures are outputs of the chapter's execution at the quick size.",
        "Reuse them under the book's licence (LICENSE-text for text and figures); please credit the book.",
        "",
    ]
    for item in items:
        lines.append(f"- `{item.file}` ({item.kind}, from {item.source}){': ' + item.caption if item.caption else ''}")
    return "\n".join(lines) + "\n"


def _zip(folder: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            info = zipfile.ZipInfo(f"{folder.name}/{path.name}", date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())


def build_chapter(
    stem: str,
    executed: Path = EXECUTED,
    images: Path = IMAGES,
    out: Path = OUT,
    diagrams: Path = DIAGRAMS,
    chapters: Path = CHAPTERS,
) -> list[Item]:
    """Write ``out/<stem>/`` and ``out/<stem>.zip`` for chapter ``stem`` (``NN-slug``); return what it holds."""
    number = stem[:2]
    folder = out / stem
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    items: list[Item] = []
    names = [p.stem for p in sorted(images.glob(f"{number}-*.svg"))]
    pngs = render_diagram_pngs(number, names, folder, diagrams) if names else {}
    for name in names:
        shutil.copyfile(images / f"{name}.svg", folder / f"{name}.svg")
        caption = _diagram_caption(stem, name, chapters)
        source = f"chapters/images/{name}.svg"
        items.append(Item(f"{name}.svg", "diagram", "svg", caption, source))
        items.append(Item(pngs[name].name, "diagram", "png", caption, source))
    notebook = executed / f"{stem}.ipynb"
    if notebook.is_file():
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        for name, fmt, data, caption in notebook_figures(nb, number):
            path = folder / f"{name}.{fmt}"
            if isinstance(data, bytes):
                path.write_bytes(data)
            else:
                path.write_text(data, encoding="utf-8")
            items.append(Item(path.name, "figure", fmt, caption, f"_build/executed/{stem}.ipynb"))
    (folder / "README.md").write_text(_readme(stem, items), encoding="utf-8")
    manifest = {"chapter": stem, "zip": f"{stem}.zip", "items": [asdict(i) for i in items]}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    _zip(folder, out / f"{stem}.zip")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", type=Path, help="chapters/NN-slug.md (default: every chapter)")
    args = parser.parse_args(argv)
    chapters = args.chapters or sorted(CHAPTERS.glob("[0-9][0-9]-*.md"))
    for md in chapters:
        items = build_chapter(md.stem)
        diagrams = sum(i.kind == "diagram" and i.format == "svg" for i in items)
        figures = sum(i.kind == "figure" and i.format == "png" for i in items)
        print(f"{md.stem:50s} {diagrams} diagram(s), {figures} figure(s) -> _build/slides/{md.stem}.zip")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

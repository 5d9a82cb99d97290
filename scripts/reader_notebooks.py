"""Reader notebooks: each chapter as a notebook that reads well in plain Jupyter and in Colab.

    python scripts/reader_notebooks.py            # write notebooks/NN-slug.ipynb for every chapter
    python scripts/reader_notebooks.py --check    # exit 1 and list the notebooks that differ from their chapter

The chapters are MyST markdown (chapters/NN-slug.md, paired with chapters/NN-slug.ipynb by Jupytext). The website
renders their MyST syntax; plain Jupyter and Colab would show it as literal text. A reader notebook has the same
code cells, in the same order, and markdown in which

- citations ({cite:p}, {cite:t}) are author-year text linked to the chapter's bibliography on the website, and a
  last cell lists the works cited in full (parsed from references.bib);
- cross-references ({eq}, {numref}, {ref}, [text](#label)) are "(2)", "Figure 1", ... linked to the website's
  anchor; labels of other chapters and of the appendix link to their pages;
- labelled equations `$$ ... $$ (label)` carry their number as `\\tag{n}`, numbered like the website (every display
  equation of a page, in order); `(label)=` target lines are removed;
- dropdowns are `<details><summary>`, admonitions are block quotes with a bold title, figures are the SVG embedded
  as a cell attachment with a numbered caption; a code cell with a caption is followed by its numbered caption.

Code cells are copied with their metadata (tags, label, caption): the first cell, which installs attnbook when the
notebook runs alone, stays. Syntax this script does not know raises a ValueError naming the chapter, so a new
directive gets a reader form here before it reaches a reader.
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_notebooks import CHAPTERS, ROOT, notebook_from_markdown  # noqa: E402

#: The book's website (GitHub Pages of the repository named in myst.yml's project.github). The only place this
#: URL is written: reader notebooks link citations and cross-references to it.
SITE_URL = "https://attention-derived.github.io/attention-derived/"
NOTEBOOKS = ROOT / "notebooks"
#: Pages whose labels a chapter may link to: the chapters, the appendix and the front page.
PAGE_GLOBS = ["chapters/[0-9][0-9]-*.md", "appendix/*.md", "index.md"]

ADMONITIONS = {"note", "warning", "tip", "important", "hint", "caution", "attention", "danger", "error", "seealso"}
ROLE = re.compile(r"\{([a-z][a-z:-]*)\}`([^`]*)`")
LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(#([A-Za-z0-9_:.-]+)\)")
FILE_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)#:\s]+\.(?:md|ipynb))(#[A-Za-z0-9_:.-]+)?\)")
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s:]+\.(?:svg|png|jpe?g|gif))\)")
TARGET = re.compile(r"^\(([A-Za-z0-9_:.-]+)\)=\s*$")
DIRECTIVE = re.compile(r"^(:{3,}|`{3,})\{([a-zA-Z][\w-]*)\}\s*(.*?)\s*$")
FENCE = re.compile(r"^(`{3,}|~{3,})")
MATH_CLOSE = re.compile(r"\$\$\s*(?:\(([A-Za-z0-9_:.-]+)\))?\s*$")


def repository() -> str:
    """owner/name of the book's repository, from myst.yml's project.github."""
    github = yaml.safe_load((ROOT / "myst.yml").read_text())["project"]["github"]
    return github.rstrip("/").split("github.com/", 1)[1]


def page_slug(path: Path) -> str:
    """The URL slug mystmd gives a page: the file name without its leading enumeration, lower-case, at most 50
    characters (mystmd's createSlug: `03-scaled-dot-product-attention` -> `scaled-dot-product-attention`)."""
    name = path.stem
    if not re.match(r"^[12][0-9]{3}|^[0-9]{5}", name):
        name = re.sub(r"^[0-9_.-]+", "", name) or name
    name = re.sub(r"[^a-z0-9-]+", "-", name.lower().replace("&", "-and-")).strip("-")
    return name[:50]


def page_url(path: Path) -> str:
    return SITE_URL if path.name == "index.md" else f"{SITE_URL}{page_slug(path)}/"


# ----------------------------------------------------------------------------------------------------------------
# Bibliography


@dataclass
class Reference:
    key: str
    fields: dict[str, str]

    def _authors(self) -> list[str]:
        authors = self.fields.get("author", "")
        return [a.strip() for a in re.split(r"\s+and\s+", authors) if a.strip()] if authors else []

    @staticmethod
    def _last(author: str) -> str:
        return author.split(",", 1)[0].strip() if "," in author else author.split()[-1]

    @staticmethod
    def _first_last(author: str) -> str:
        if "," not in author:
            return author
        last, first = (part.strip() for part in author.split(",", 1))
        return f"{first} {last}"

    def short(self, textual: bool = False) -> str:
        """Author-year text as the website writes it: "Vaswani et al., 2017" (or "Vaswani et al. (2017)")."""
        authors = [self._last(a) for a in self._authors()]
        if not authors or authors == ["others"]:
            names = self.fields.get("title", self.key).split(":", 1)[0]
        elif len(authors) == 1:
            names = authors[0]
        elif len(authors) == 2 and authors[1] != "others":
            names = f"{authors[0]} & {authors[1]}"
        else:
            names = f"{authors[0]} et al."
        year = self.fields.get("year", "n.d.")
        return f"{names} ({year})" if textual else f"{names}, {year}"

    def full(self) -> str:
        """One bibliography line: authors (year). Title. Venue. Link."""
        authors = [self._first_last(a) for a in self._authors() if a != "others"]
        names = ", ".join(authors) + (" et al." if "others" in self._authors() else "") if authors else ""
        venue = self.fields.get("journal") or self.fields.get("booktitle") or self.fields.get("publisher", "")
        eprint = self.fields.get("eprint")
        if not venue and eprint:
            venue = f"arXiv:{eprint}"
        link = self.fields.get("url") or (f"https://doi.org/{self.fields['doi']}" if "doi" in self.fields else "")
        if not link and eprint:
            link = f"https://arxiv.org/abs/{eprint}"
        parts = [f"{names} ({self.fields.get('year', 'n.d.')})." if names else f"({self.fields.get('year', 'n.d.')})."]
        parts.append(f"*{self.fields.get('title', self.key)}*.")
        if venue:
            parts.append(f"{venue}.")
        if link:
            parts.append(f"<{link}>")
        return " ".join(parts)


#: LaTeX accent commands and the Unicode combining marks they stand for; letters written as commands.
ACCENTS = {
    '"': "\u0308",
    "'": "\u0301",
    "`": "\u0300",
    "^": "\u0302",
    "~": "\u0303",
    "=": "\u0304",
    ".": "\u0307",
    "c": "\u0327",
    "v": "\u030c",
    "u": "\u0306",
    "H": "\u030b",
    "k": "\u0328",
    "r": "\u030a",
}
LETTERS = {"L": "Ł", "l": "ł", "o": "ø", "O": "Ø", "ss": "ß", "aa": "å", "AA": "Å", "ae": "æ", "AE": "Æ", "i": "ı"}


def _latex_to_text(value: str) -> str:
    """BibTeX field text as plain Unicode: accents composed, letter macros replaced, braces dropped."""
    value = re.sub(
        r"\\([\"'`^~=.]|[cvuHkr](?=[{\s]))\s*\{?\\?([A-Za-z])\}?", lambda m: m.group(2) + ACCENTS[m.group(1)], value
    )
    value = re.sub(r"\\(ss|aa|AA|ae|AE|[LlOoi])(?![A-Za-z])\s*", lambda m: LETTERS[m.group(1)], value)
    value = value.replace("\\&", "&").replace("--", "–").replace("~", " ")
    value = re.sub(r"\\[a-zA-Z]+\s*", "", value)
    value = re.sub(r"\s+", " ", value.replace("{", "").replace("}", "")).strip()
    return unicodedata.normalize("NFC", value)


def parse_bibtex(text: str) -> dict[str, Reference]:
    """The entries of a BibTeX file: key -> Reference with its fields as plain text (braces and accents removed)."""
    entries: dict[str, Reference] = {}
    for match in re.finditer(r"^@(\w+)\s*\{\s*([^,\s]+)\s*,", text, flags=re.M):
        kind, key = match.group(1).lower(), match.group(2)
        if kind in {"comment", "string", "preamble"}:
            continue
        i, fields = match.end(), {}
        while True:
            m = re.compile(r"\s*(\w+)\s*=\s*").match(text, i)
            if not m:
                break
            name, i = m.group(1).lower(), m.end()
            if text[i] == "{":
                depth, j = 0, i
                while True:
                    depth += {"{": 1, "}": -1}.get(text[j], 0)
                    if depth == 0:
                        break
                    j += 1
                value, i = text[i + 1 : j], j + 1
            elif text[i] == '"':
                j = text.index('"', i + 1)
                value, i = text[i + 1 : j], j + 1
            else:
                m2 = re.compile(r"[^,}\s]+").match(text, i)
                value, i = m2.group(0), m2.end()
            fields[name] = _latex_to_text(value)
            m3 = re.compile(r"\s*,?").match(text, i)
            i = m3.end()
        entries[key] = Reference(key, fields)
    return entries


# ----------------------------------------------------------------------------------------------------------------
# Targets: every label of every page, with its kind and number


@dataclass
class Target:
    label: str
    page: Path
    kind: str  # "equation", "figure", "table", "section", "page"
    number: int | None = None
    title: str = ""

    @property
    def url(self) -> str:
        return page_url(self.page) if self.kind == "page" else f"{page_url(self.page)}#{self.label}"

    def text(self) -> str:
        if self.kind == "equation":
            return f"({self.number})"
        if self.kind in {"figure", "table"}:
            return f"{self.kind.capitalize()} {self.number}"
        return self.title or self.label


def _math_end(lines: list[str], start: int) -> int:
    """Index of the line that closes the display equation opened at lines[start] (itself for `$$ x $$`)."""
    if re.match(r"^\$\$.+\$\$", lines[start].lstrip()):
        return start
    end = start + 1
    while end < len(lines) and not re.search(r"\$\$\s*(\([A-Za-z0-9_:.-]+\))?\s*$", lines[end]):
        end += 1
    if end == len(lines):
        raise ValueError(f"display math opened at line {start + 1} is never closed")
    return end


def _fence_end(lines: list[str], start: int, fence: str) -> int:
    """Index of the line that closes the directive opened with `fence` at lines[start] (nested ones skipped)."""
    opener = re.compile(rf"^{re.escape(fence)}\{{")
    depth = 0
    for j in range(start + 1, len(lines)):
        if opener.match(lines[j].lstrip()):
            depth += 1
        elif lines[j].strip() == fence:
            if depth == 0:
                return j
            depth -= 1
    return len(lines)


def _dedent(lines: list[str], indent: str) -> list[str]:
    return [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines]


def _indent(lines: list[str], indent: str) -> list[str]:
    return [indent + line if line else line for line in lines]


def _targets_of_page(path: Path) -> list[Target]:
    """Scan a MyST page in reading order: display equations, figures (directives and captioned code cells),
    tables, and `(label)=` targets (a target right above the page's first heading labels the page itself)."""
    lines = path.read_text().splitlines()
    targets: list[Target] = []
    counters = {"equation": 0, "figure": 0, "table": 0}
    pending: str | None = None
    seen_heading = False
    i = 0
    while i < len(lines):
        line = lines[i].lstrip()
        directive = DIRECTIVE.match(line)
        if directive and directive.group(2) in {"code-cell", "figure", "table", "math"}:
            fence, name = directive.group(1), directive.group(2)
            options = {}
            j = i + 1
            while j < len(lines) and (m := re.match(r"^:([\w-]+):\s*(.*)$", lines[j].lstrip())):
                options[m.group(1)] = m.group(2)
                j += 1
            kind = {"figure": "figure", "table": "table", "math": "equation"}.get(name)
            if name == "code-cell" and ("caption" in options or options.get("label", "").startswith("fig")):
                kind = "figure"
            if kind:
                counters[kind] += 1
                if "label" in options:
                    targets.append(Target(options["label"], path, kind, counters[kind]))
            while j < len(lines) and lines[j].strip() != fence:
                j += 1
            i = j + 1
            continue
        if FENCE.match(line):
            fence = FENCE.match(line).group(1)
            i += 1
            while i < len(lines) and not lines[i].lstrip().startswith(fence):
                i += 1
            i += 1
            continue
        if line.startswith("$$"):
            counters["equation"] += 1
            end = _math_end(lines, i)
            label = MATH_CLOSE.search(lines[end]).group(1)
            if label:
                targets.append(Target(label, path, "equation", counters["equation"]))
            i = end + 1
            continue
        if m := TARGET.match(line):
            pending = m.group(1)
        elif pending and line.strip():
            heading = re.match(r"^(#+)\s+(.*)$", line)
            if heading and len(heading.group(1)) == 1 and not seen_heading:
                targets.append(Target(pending, path, "page", title=heading.group(2).strip()))
            else:
                targets.append(Target(pending, path, "section", title=heading.group(2).strip() if heading else ""))
            pending = None
        if line.startswith("# "):
            seen_heading = True
        i += 1
    return targets


def all_targets() -> dict[str, Target]:
    targets: dict[str, Target] = {}
    for pattern in PAGE_GLOBS:
        for path in sorted(ROOT.glob(pattern)):
            for target in _targets_of_page(path):
                targets.setdefault(target.label, target)
    return targets


def api_target(label: str) -> Target:
    """An entry of the API reference, which scripts/api_reference.py generates at build time (it is not in the
    repository): ``api-attnbook-<subpackage>-...`` lives on the page ``api-<subpackage>``, the top-level modules
    (config, profiling, viz, cli) on ``api-utilities``, and ``api-attnbook`` itself is the reference's index."""
    parts = label.split("-")
    if label == "api-attnbook":
        return Target(label, Path("api.md"), "page", title="API reference")
    stem = f"api-{parts[2]}" if parts[2] in {"attention", "models", "data", "train"} else "api-utilities"
    return Target(label, Path(f"{stem}.md"), "section", title=f"API reference: {parts[-1]}")


# ----------------------------------------------------------------------------------------------------------------
# Markdown conversion


@dataclass
class Converter:
    chapter: Path
    targets: dict[str, Target]
    references: dict[str, Reference]
    equations: int = 0
    figures: int = 0
    tables: int = 0
    cited: list[str] = field(default_factory=list)
    attachments: dict[str, dict[str, str]] = field(default_factory=dict)

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.chapter.name}: {message} (scripts/reader_notebooks.py has no reader form for it)")

    # -- inline ----------------------------------------------------------------------------------------------

    def _target(self, label: str) -> Target:
        if label not in self.targets and label.startswith("api-attnbook"):
            return api_target(label)
        if label not in self.targets:
            raise ValueError(f"{self.chapter.name}: reference to unknown label {label!r}")
        return self.targets[label]

    def _cite(self, keys: str, textual: bool) -> str:
        parts = []
        for key in (k.strip() for k in keys.split(",")):
            if key not in self.references:
                raise ValueError(f"{self.chapter.name}: citation key {key!r} is not in references.bib")
            if key not in self.cited:
                self.cited.append(key)
            parts.append(f"[{self.references[key].short(textual)}]({page_url(self.chapter)}#ref-{key})")
        return "; ".join(parts) if textual else f"({'; '.join(parts)})"

    def _role(self, match: re.Match) -> str:
        role, content = match.group(1), match.group(2)
        explicit = re.match(r"^(.*?)\s*<([^>]+)>$", content, flags=re.S)
        if role in {"cite", "cite:p", "cite:ps", "cite:alp"}:
            return self._cite(content, textual=False)
        if role in {"cite:t", "cite:ts", "cite:author", "cite:year"}:
            return self._cite(content, textual=True)
        if role in {"eq", "numref", "ref", "doc"}:
            label = explicit.group(2) if explicit else content
            target = self._target(label.removeprefix("#"))
            text = f"Equation {target.number}" if role == "numref" and target.kind == "equation" else target.text()
            if explicit:
                text = explicit.group(1).replace("%s", str(target.number)).replace("{number}", str(target.number))
            return f"[{text}]({target.url})"
        if role == "math":
            return f"${content}$"
        if role in {"sub", "sup", "kbd"}:
            return f"<{role}>{content}</{role}>"
        if role in {"abbr", "term", "index"}:
            return re.sub(r"\s*\(.*\)$", "", explicit.group(1) if explicit else content)
        raise self.error(f"role {{{role}}}")

    def _link(self, match: re.Match) -> str:
        text, target = match.group(1), self._target(match.group(2))
        return f"[{text or target.text()}]({target.url})"

    def _file_link(self, match: re.Match) -> str:
        """A link to another page of the book (`[notation](../appendix/notation.md)`) goes to its website page."""
        page = (self.chapter.parent / match.group(2)).resolve()
        if not page.with_suffix(".md").is_file():
            raise ValueError(f"{self.chapter.name}: link to {match.group(2)}, which does not exist")
        return f"[{match.group(1)}]({page_url(page.with_suffix('.md'))}{match.group(3) or ''})"

    def _image(self, match: re.Match) -> str:
        return f"![{match.group(1)}](attachment:{self._attach(match.group(2))})"

    def inline(self, line: str) -> str:
        line = IMAGE.sub(self._image, FILE_LINK.sub(self._file_link, line))
        return LINK.sub(self._link, ROLE.sub(self._role, line))

    # -- blocks ----------------------------------------------------------------------------------------------

    def _options(self, body: list[str]) -> tuple[dict[str, str], list[str]]:
        options, i = {}, 0
        while i < len(body) and (m := re.match(r"^:([\w-]+):\s*(.*)$", body[i])):
            options[m.group(1)] = m.group(2)
            i += 1
        while i < len(body) and not body[i].strip():
            i += 1
        return options, body[i:]

    def _figure(self, argument: str, options: dict[str, str], caption: list[str]) -> list[str]:
        self.figures += 1
        self._check_number(options.get("label"), "figure", self.figures)
        name = self._attach(argument)
        alt = options.get("alt", "").replace("]", ")").replace("[", "(")
        text = " ".join(self.inline(c) for c in caption if c.strip())
        return [f"![{alt}](attachment:{name})", "", f"**Figure {self.figures}.** {text}".rstrip()]

    def _attach(self, relative: str) -> str:
        """Embed an image file of the chapter as a cell attachment; its name in `attachment:NAME`."""
        image = (self.chapter.parent / relative).resolve()
        if not image.is_file():
            raise ValueError(f"{self.chapter.name}: image {relative} does not exist")
        if image.suffix == ".svg":
            self.attachments[image.name] = {"image/svg+xml": image.read_text()}
        else:
            mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}[image.suffix]
            self.attachments[image.name] = {mime: base64.b64encode(image.read_bytes()).decode()}
        return image.name

    def _check_number(self, label: str | None, kind: str, number: int) -> None:
        if label and (self.targets.get(label) is None or self.targets[label].number != number):
            raise ValueError(f"{self.chapter.name}: {kind} {label} is number {number} here but not in the index")

    def _directive(self, name: str, argument: str, body: list[str]) -> list[str]:
        options, content = self._options(body)
        if name == "dropdown":
            title = self.inline(argument) or "Details"
            return ["<details>", f"<summary>{title}</summary>", "", *self.block(content), "", "</details>"]
        if name == "admonition" or name in ADMONITIONS:
            title = self.inline(argument) if argument else name.capitalize().replace("Seealso", "See also")
            quoted = [f"> {line}" if line.strip() else ">" for line in self.block(content)]
            return [f"> **{title}**", ">", *quoted]
        if name == "figure":
            return self._figure(argument, options, content)
        if name == "table":
            self.tables += 1
            self._check_number(options.get("label"), "table", self.tables)
            return [f"**Table {self.tables}.** {self.inline(argument)}".rstrip(), "", *self.block(content)]
        if name in {"code-block", "code", "sourcecode"}:
            return [f"```{argument}", *content, "```"]
        if name == "math":
            self.equations += 1
            self._check_number(options.get("label"), "equation", self.equations)
            return ["$$", *content, f"\\tag{{{self.equations}}}", "$$"]
        raise self.error(f"directive {{{name}}}")

    def block(self, lines: list[str]) -> list[str]:
        """Convert a list of MyST lines to plain Jupyter markdown. A directive or an equation indented inside a
        list item keeps its indentation."""
        out: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            stripped = line.lstrip()
            indent = line[: len(line) - len(stripped)]
            if directive := DIRECTIVE.match(stripped):
                fence, name, argument = directive.groups()
                j = _fence_end(lines, i, fence)
                if j == len(lines):
                    raise ValueError(f"{self.chapter.name}: directive {{{name}}} is never closed")
                out += _indent(self._directive(name, argument, _dedent(lines[i + 1 : j], indent)), indent)
                i = j + 1
                continue
            if fence := FENCE.match(stripped):
                j = i + 1
                while j < len(lines) and not lines[j].lstrip().startswith(fence.group(1)):
                    j += 1
                out += lines[i : j + 1]
                i = j + 1
                continue
            if stripped.startswith("$$"):
                self.equations += 1
                j = _math_end(lines, i)
                if j == i:
                    one_line = re.match(r"^\$\$(.+?)\$\$\s*(?:\(([A-Za-z0-9_:.-]+)\))?\s*$", stripped)
                    body, label = [one_line.group(1).strip()], one_line.group(2)
                else:
                    closing = MATH_CLOSE.search(lines[j])
                    label = closing.group(1)
                    before = lines[j][: closing.start()].strip()
                    body = [stripped[2:].strip()] if stripped[2:].strip() else []
                    body += _dedent(lines[i + 1 : j], indent) + ([before] if before else [])
                self._check_number(label, "equation", self.equations)
                out += _indent(["$$", *body, f"\\tag{{{self.equations}}}", "$$"], indent)
                i = j + 1
                continue
            if TARGET.match(stripped) or re.match(r"^%( |$)", stripped):
                i += 1
                continue
            out.append(self.inline(line))
            i += 1
        return out

    def markdown(self, source: str) -> str:
        return "\n".join(self.block(source.splitlines())).strip("\n")


# ----------------------------------------------------------------------------------------------------------------
# Notebooks


def reader_notebook(
    md: Path, targets: dict[str, Target] | None = None, references: dict[str, Reference] | None = None
) -> nbformat.NotebookNode:
    """The reader notebook of one chapter (deterministic: cell ids are numbered)."""
    targets = all_targets() if targets is None else targets
    references = parse_bibtex((ROOT / "references.bib").read_text()) if references is None else references
    chapter = notebook_from_markdown(md)
    convert = Converter(md, targets, references)
    url = page_url(md)
    cells = [
        nbformat.v4.new_markdown_cell(
            f"*[Attention, Derived]({SITE_URL}): this chapter as a notebook for Jupyter and Colab. "
            f"[Read it on the website]({url}); the first code cell installs `attnbook` when it is missing. "
            f"Generated from `chapters/{md.name}` by `scripts/reader_notebooks.py`: edit the chapter, not this file.*"
        )
    ]
    for cell in chapter.cells:
        if cell.cell_type == "markdown":
            convert.attachments = {}
            text = convert.markdown(cell.source)
            if not text.strip():
                continue
            new = nbformat.v4.new_markdown_cell(text)
            if convert.attachments:
                new.attachments = convert.attachments
            cells.append(new)
        elif cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(cell.source, metadata=dict(cell.metadata))
            cells.append(new)
            if "caption" in cell.metadata or str(cell.metadata.get("label", "")).startswith("fig"):
                convert.figures += 1
                convert._check_number(cell.metadata.get("label"), "figure", convert.figures)
                caption = convert.inline(str(cell.metadata.get("caption", "")))
                cells.append(nbformat.v4.new_markdown_cell(f"**Figure {convert.figures}.** {caption}".rstrip()))
        else:
            cells.append(nbformat.v4.new_raw_cell(cell.source))
    if convert.cited:
        keys = sorted(convert.cited, key=lambda key: (references[key].short().lower(), key))
        listing = "\n".join(f"- {references[key].full()} [↗]({url}#ref-{key})" for key in keys)
        cells.append(nbformat.v4.new_markdown_cell(f"### Works cited in this chapter\n\n{listing}"))
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i:03d}"
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"name": md.with_suffix(".ipynb").name, "provenance": []},
    }
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def chapters() -> list[Path]:
    return sorted(CHAPTERS.glob("[0-9][0-9]-*.md"))


def stale_notebooks() -> list[str]:
    targets, references = all_targets(), parse_bibtex((ROOT / "references.bib").read_text())
    bad = []
    for md in chapters():
        path = NOTEBOOKS / md.with_suffix(".ipynb").name
        if not path.exists():
            bad.append(f"notebooks/{path.name} is missing")
        elif path.read_text() != render(reader_notebook(md, targets, references)):
            bad.append(f"notebooks/{path.name} differs from chapters/{md.name}")
    extra = {p.name for p in NOTEBOOKS.glob("*.ipynb")} - {md.with_suffix(".ipynb").name for md in chapters()}
    bad += [f"notebooks/{name} has no chapter" for name in sorted(extra)]
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report stale reader notebooks")
    args = parser.parse_args()
    if args.check:
        bad = stale_notebooks()
        print("\n".join(bad) if bad else "all reader notebooks are in sync")
        return 1 if bad else 0
    NOTEBOOKS.mkdir(exist_ok=True)
    targets, references = all_targets(), parse_bibtex((ROOT / "references.bib").read_text())
    for md in chapters():
        path = NOTEBOOKS / md.with_suffix(".ipynb").name
        path.write_text(render(reader_notebook(md, targets, references)))
        print(f"wrote {path.relative_to(ROOT)}")
    for path in NOTEBOOKS.glob("*.ipynb"):
        if not (CHAPTERS / path.with_suffix(".md").name).exists():
            path.unlink()
            print(f"removed {path.relative_to(ROOT)} (no chapter)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

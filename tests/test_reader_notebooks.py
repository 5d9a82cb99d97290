"""Reader notebooks (notebooks/NN-slug.ipynb): in sync with the chapters, free of MyST syntax, same code cells;
the converter's rules on a small chapter; the executor's time limit and failure report.

Their execution as a reader meets them (a fresh venv set up by their first cells) is step 2 of scripts/test.sh:
`python scripts/execute_chapters.py --reader-venv DIR`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import execute_chapters  # noqa: E402
import reader_notebooks as rn  # noqa: E402
from sync_notebooks import notebook_from_markdown  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))
#: What plain Jupyter would show as literal text.
MYST = [
    r"\{cite",
    r"\{eq\}",
    r"\{numref\}",
    r"\{ref\}",
    r"\{doc\}",
    r"^\s*:::",
    r"```\{",
    r"^\s*\([\w:.-]+\)=\s*$",
    r"^[ \t]*\$\$[ \t]*\(",  # a labelled display equation: $$ (label) on one line
    r"^:(label|class|alt|caption|tags):",
]


def _reader(md: Path) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "notebooks" / md.with_suffix(".ipynb").name, as_version=4)


def test_reader_notebooks_in_sync():
    assert rn.stale_notebooks() == [], "run: python scripts/reader_notebooks.py"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_no_myst_syntax_left(md: Path):
    for number, cell in enumerate(_reader(md).cells):
        if cell.cell_type != "markdown":
            continue
        for pattern in MYST:
            found = re.search(pattern, cell.source, flags=re.M)
            assert not found, f"{md.name}, cell {number}: {found.group(0)!r} left in\n{cell.source[:400]}"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_same_code_cells_with_their_metadata(md: Path):
    chapter = [c for c in notebook_from_markdown(md).cells if c.cell_type == "code"]
    reader = [c for c in _reader(md).cells if c.cell_type == "code"]
    assert [(c.source, c.metadata) for c in reader] == [(c.source, c.metadata) for c in chapter]
    assert "ATTNBOOK_SOURCE" in reader[0].source, "the install cell stays first: it is what sets up Colab"
    captions = [c.metadata["caption"] for c in chapter if "caption" in c.metadata]
    text = "\n".join(c.source for c in _reader(md).cells if c.cell_type == "markdown")
    assert len(re.findall(r"^\*\*Figure \d+\.\*\*", text, flags=re.M)) >= len(captions), "each caption is shown"


def test_site_url_is_the_repositorys_github_pages():
    github = yaml.safe_load((ROOT / "myst.yml").read_text())["project"]["github"]
    owner, name = github.rstrip("/").split("/")[-2:]
    assert rn.SITE_URL == f"https://{owner}.github.io/{name}/"


def test_page_slug_follows_mystmd():
    assert rn.page_slug(Path("03-scaled-dot-product-attention.md")) == "scaled-dot-product-attention"
    assert rn.page_slug(Path("appendix/notation.md")) == "notation"
    assert rn.page_slug(Path("2017-paper.md")) == "2017-paper"  # a year is not an enumeration
    assert len(rn.page_slug(Path("01-" + "a" * 80 + ".md"))) == 50


BIB = r"""
@inproceedings{vaswani2017attention,
  title  = {Attention Is All You Need},
  author = {Vaswani, Ashish and Shazeer, Noam and Kaiser, {\L}ukasz},
  booktitle = {NeurIPS},
  year   = {2017},
  eprint = {1706.03762},
}
@article{bahdanau2015neural,
  title = "Neural Machine Translation",
  author = {Bahdanau, Dzmitry and Cho, Kyunghyun},
  year = 2015,
  doi = {10.1/x}
}
@misc{ccnext2025,
  title = {{CCNeXt}: An Effective Approach},
  year = {2025},
  note = {authors not recorded}
}
"""


def test_bibtex_author_year():
    refs = rn.parse_bibtex(BIB)
    assert refs["vaswani2017attention"].short() == "Vaswani et al., 2017"
    assert refs["vaswani2017attention"].short(textual=True) == "Vaswani et al. (2017)"
    assert refs["bahdanau2015neural"].short() == "Bahdanau & Cho, 2015"
    assert refs["ccnext2025"].short() == "CCNeXt, 2025"
    full = refs["vaswani2017attention"].full()
    assert "Łukasz Kaiser" in full and "*Attention Is All You Need*" in full and "arxiv.org/abs/1706.03762" in full
    assert "https://doi.org/10.1/x" in refs["bahdanau2015neural"].full()


CHAPTER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

(ch09)=
# 09. A test chapter

```{code-cell} ipython3
:tags: [remove-cell]
import os  # ATTNBOOK_SOURCE
```

As {cite:t}`vaswani2017attention` show, and others {cite:p}`vaswani2017attention,bahdanau2015neural`, the
scores {eq}`eq-score` feed the weights; see {numref}`fig-ch09-flow`, [chapter 03](#ch03) and
[Eq. (1) of chapter 03](#eq-other). {numref}`eq-score` and
{numref}`Diagram %s <fig-ch09-flow>`. The [other page](03-other.md#eq-other) and an image: ![flow](images/09-flow.svg).

$$
s = q^\\top k
$$ (eq-score)

$$
a = \\operatorname{softmax}(s)
$$

:::{figure} images/09-flow.svg
:label: fig-ch09-flow
:alt: the data flow
Queries meet keys ({eq}`eq-score`).
:::

:::{admonition} Reconstruction: the scale
:class: warning
The paper does not say; we guess.
:::

:::{note}
A note.
:::

```{code-cell} ipython3
:label: fig-ch09-plot
:caption: A plot of {cite:p}`bahdanau2015neural`.
print(1)
```

1. **Exercise.** Predict.

   :::{dropdown} Solution
   It is $1$, by {eq}`eq-score`.
   :::
"""

OTHER = """\
(ch03)=
# 03. Another chapter

$$ x = 1 $$ (eq-other)
"""


@pytest.fixture
def book(tmp_path: Path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "09-flow.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    md = tmp_path / "09-test.md"
    md.write_text(CHAPTER)
    other = tmp_path / "03-other.md"
    other.write_text(OTHER)
    targets = {t.label: t for path in (md, other) for t in rn._targets_of_page(path)}
    return md, targets, rn.parse_bibtex(BIB)


def test_converter_rules(book):
    md, targets, refs = book
    nb = rn.reader_notebook(md, targets, refs)
    text = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    page = f"{rn.SITE_URL}test/"
    assert "(ch09)=" not in text and "# 09. A test chapter" in text
    assert f"[Vaswani et al. (2017)]({page}#ref-vaswani2017attention) show" in text
    assert f"([Vaswani et al., 2017]({page}#ref-vaswani2017attention); [Bahdanau & Cho, 2015]" in text
    assert f"scores [(1)]({page}#eq-score) feed" in text
    assert f"[Figure 1]({page}#fig-ch09-flow)" in text
    assert f"[chapter 03]({rn.SITE_URL}other/)" in text
    assert f"[Eq. (1) of chapter 03]({rn.SITE_URL}other/#eq-other)" in text
    assert f"[Equation 1]({page}#eq-score) and\n[Diagram 1]({page}#fig-ch09-flow)." in text
    assert f"[other page]({rn.SITE_URL}other/#eq-other) and an image: ![flow](attachment:09-flow.svg)." in text
    assert "$$\ns = q^\\top k\n\\tag{1}\n$$" in text
    assert "$$\na = \\operatorname{softmax}(s)\n\\tag{2}\n$$" in text, "unlabelled display math is numbered too"
    assert "![the data flow](attachment:09-flow.svg)" in text
    assert f"**Figure 1.** Queries meet keys ([(1)]({page}#eq-score))." in text
    assert "> **Reconstruction: the scale**\n>\n> The paper does not say; we guess." in text
    assert "> **Note**\n>\n> A note." in text
    assert f"**Figure 2.** A plot of ([Bahdanau & Cho, 2015]({page}#ref-bahdanau2015neural))." in text
    assert "   <details>\n   <summary>Solution</summary>\n\n   It is $1$, by [(1)]" in text, "indented in its list item"
    assert "### Works cited in this chapter" in text and "Dzmitry Bahdanau, Kyunghyun Cho (2015)" in text
    figure = next(c for c in nb.cells if "attachment:09-flow.svg" in c.source)
    assert figure.attachments["09-flow.svg"]["image/svg+xml"].startswith("<svg")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata["tags"] == ["remove-cell"] and code[1].metadata["label"] == "fig-ch09-plot"
    assert rn.render(nb) == rn.render(rn.reader_notebook(md, targets, refs)), "deterministic"


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        (":::{unknowndirective}\nx\n:::", "directive {unknowndirective}"),
        ("See {foo}`bar`.", "role {foo}"),
        ("See [this](#no-such-label).", "unknown label 'no-such-label'"),
        ("As {cite:p}`nobody2020`.", "'nobody2020' is not in references.bib"),
        (":::{note}\nnever closed", "never closed"),
        ("See [a page](99-missing.md).", "99-missing.md, which does not exist"),
        ("![a picture](images/missing.png)", "image images/missing.png does not exist"),
    ],
)
def test_converter_rejects_what_it_cannot_render(book, snippet: str, message: str):
    md, targets, refs = book
    md.write_text(CHAPTER + "\n" + snippet + "\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        rn.reader_notebook(md, targets, refs)


def _notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_executor_reports_the_failing_cell(tmp_path: Path):
    nb = _notebook("x = 1", "y = x / 0  # divide")
    seconds, error, _ = execute_chapters.run_notebook(nb, "python3", tmp_path, time_limit=120)
    assert error and error.startswith("code cell 2 of 2 ('y = x / 0  # divide')")
    assert "ZeroDivisionError" in error
    assert nb.cells[0].execution_count == 1, "the outputs are kept"


def test_executor_enforces_the_chapter_time_limit(tmp_path: Path):
    nb = _notebook("import time", "time.sleep(2)", "time.sleep(30)")
    seconds, error, _ = execute_chapters.run_notebook(nb, "python3", tmp_path, time_limit=6)
    assert error and "time limit" in error and "code cell 3 of 3" in error, error
    assert seconds < 25


def test_outputs_are_carried_into_the_chapter_by_cell_order():
    md = CHAPTERS[0]
    reader = _reader(md)
    for number, cell in enumerate(c for c in reader.cells if c.cell_type == "code"):
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"cell {number}\n")]
        cell.execution_count = number + 1
    chapter = execute_chapters.carry_outputs(reader, notebook_from_markdown(md))
    code = [c for c in chapter.cells if c.cell_type == "code"]
    assert [c.outputs[0]["text"] for c in code] == [f"cell {n}\n" for n in range(len(code))]
    reader.cells.append(nbformat.v4.new_code_cell("extra"))
    with pytest.raises(ValueError, match="differ"):
        execute_chapters.carry_outputs(reader, notebook_from_markdown(md))

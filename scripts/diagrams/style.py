"""The book's one visual vocabulary for mechanism diagrams (SVG, drawn with matplotlib).

Every diagram script in this folder (``chNN_*.py``) imports these helpers, so that a query is the same
blue, a projection the same box and a weight matrix the same purple grid in every chapter. Run a script
to (re)write its SVGs into ``chapters/images/``; ``python scripts/diagrams/build.py`` runs them all and
``--check`` fails when a committed SVG differs from what its script draws (tests/test_diagrams.py).

Vocabulary
- colours: queries ``Q`` blue, keys ``K`` orange, values ``V`` green, scores/weights purple, masks grey,
  positions teal, outputs dark grey, caches / memory gold.
- a *projection* (a learned matrix) is a rounded white box with a coloured border: :func:`proj`;
- an *operation without parameters* (softmax, matmul, add) is a circle or a plain grey box: :func:`op`;
- a *tensor* is a small grid of cells labelled with its shape: :func:`tensor`;
- data flows left to right or top to bottom along :func:`arrow`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

IMAGES = Path(os.environ.get("ATTNBOOK_DIAGRAMS_OUT", Path(__file__).resolve().parents[2] / "chapters" / "images"))

COLORS = {
    "query": "#2f6db5",
    "key": "#e07b1a",
    "value": "#2e9e5b",
    "weight": "#7b4fb3",
    "mask": "#9a9a9a",
    "position": "#1a9a9a",
    "output": "#444444",
    "cache": "#c9a227",
    "text": "#222222",
    "light": "#f4f4f4",
}
FONT = {"family": "DejaVu Sans", "size": 11}

matplotlib.rcParams.update(
    {
        "svg.hashsalt": "attention-derived",  # deterministic ids: the committed SVG equals a fresh drawing
        "svg.fonttype": "none",  # text stays text (searchable, crisp, small files)
        "font.family": FONT["family"],
        "font.size": FONT["size"],
    }
)


def canvas(width: float, height: float) -> tuple[plt.Figure, plt.Axes]:
    """A figure whose data coordinates are inches: (0, 0) bottom left, (width, height) top right."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def proj(ax: plt.Axes, x: float, y: float, label: str, color: str = "output", w: float = 0.9, h: float = 0.45):
    """A learned projection (a matrix with parameters), centred at (x, y)."""
    edge = COLORS.get(color, color)
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor="white",
            edgecolor=edge,
            linewidth=1.8,
        )
    )
    ax.text(x, y, label, ha="center", va="center", color=COLORS["text"])


def op(ax: plt.Axes, x: float, y: float, label: str, w: float | None = None, h: float = 0.42, r: float = 0.22):
    """An operation without parameters: a circle for a symbol (``×``, ``+``), a grey box for a word."""
    if w is None and len(label) <= 2:
        ax.add_patch(Circle((x, y), r, facecolor=COLORS["light"], edgecolor=COLORS["output"], linewidth=1.2))
    else:
        w = w or 0.16 * len(label) + 0.3
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2),
                w,
                h,
                boxstyle="round,pad=0.02,rounding_size=0.04",
                facecolor=COLORS["light"],
                edgecolor=COLORS["output"],
                linewidth=1.2,
            )
        )
    ax.text(x, y, label, ha="center", va="center", color=COLORS["text"])


def tensor(
    ax: plt.Axes,
    x: float,
    y: float,
    rows: int,
    cols: int,
    color: str,
    label: str = "",
    cell: float = 0.16,
    values=None,
    shape: str = "",
):
    """A tensor as a grid of cells centred at (x, y); ``values`` in [0, 1] shade the cells (weights)."""
    face = COLORS.get(color, color)
    x0, y0 = x - cols * cell / 2, y - rows * cell / 2
    for i in range(rows):
        for j in range(cols):
            alpha = 0.85 if values is None else 0.1 + 0.9 * float(values[i][j])
            ax.add_patch(
                Rectangle(
                    (x0 + j * cell, y0 + (rows - 1 - i) * cell),
                    cell,
                    cell,
                    facecolor=face,
                    alpha=alpha,
                    edgecolor="white",
                    linewidth=0.8,
                )
            )
    if label:
        ax.text(x, y0 + rows * cell + 0.12, label, ha="center", va="bottom", color=COLORS["text"])
    if shape:
        ax.text(x, y0 - 0.1, shape, ha="center", va="top", color=COLORS["output"], fontsize=9)


def arrow(
    ax: plt.Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    color: str = "output",
    style: str = "-|>",
    dashed: bool = False,
    rad: float = 0.0,
):
    """Data flowing from ``start`` to ``end`` (``rad`` bends it)."""
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=12,
            color=COLORS.get(color, color),
            linewidth=1.4,
            linestyle="--" if dashed else "-",
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=2,
            shrinkB=2,
        )
    )


def text(ax: plt.Axes, x: float, y: float, s: str, color: str = "text", size: float | None = None, **kw):
    """A label in the diagram's font (mathtext such as ``$W_Q$`` works)."""
    ax.text(x, y, s, color=COLORS.get(color, color), fontsize=size or FONT["size"], **kw)


def save(fig: plt.Figure, name: str) -> Path:
    """Write ``chapters/images/<name>.svg`` deterministically (no date, fixed ids) and close the figure."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / f"{name}.svg"
    fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit("import this module from a diagram script; see the docstring")

"""Chapter 09: axial attention, a row step then a column step, and the reach of the two together.

Three panels on a 4 x 5 pixel grid with one query pixel (blue). Row step: the query attends to the keys of its row
(orange). Column step: to the keys of its column. After both: every pixel has a path to the query (purple, shaded by
the step that brought it), through the pixel where its row crosses the query's column.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matplotlib.patches import Rectangle  # noqa: E402
from style import COLORS, arrow, canvas, save, text  # noqa: E402

ROWS, COLS, CELL = 4, 5, 0.42
QUERY = (1, 3)  # (row, column) of the query pixel


def grid(ax, x0: float, y0: float, color_of) -> None:
    """Draw the grid with its top-left corner at (x0, y0); ``color_of(r, c)`` gives (colour, alpha)."""
    for r in range(ROWS):
        for c in range(COLS):
            color, alpha = color_of(r, c)
            ax.add_patch(
                Rectangle(
                    (x0 + c * CELL, y0 - (r + 1) * CELL),
                    CELL,
                    CELL,
                    facecolor=COLORS.get(color, color),
                    alpha=alpha,
                    edgecolor="white",
                    linewidth=1.5,
                )
            )


def panel_title(ax, x0: float, title: str, sub: str) -> None:
    middle = x0 + COLS * CELL / 2
    text(ax, middle, 3.35, title, ha="center", va="bottom", size=12)
    text(ax, middle, 3.05, sub, ha="center", va="bottom", size=9, color="output")


def main() -> None:
    fig, ax = canvas(9.6, 3.8)
    qr, qc = QUERY
    top = 2.75
    xs = [0.5, 3.6, 6.7]

    def row_step(r, c):
        if (r, c) == QUERY:
            return "query", 0.95
        return ("key", 0.8) if r == qr else ("light", 1.0)

    def col_step(r, c):
        if (r, c) == QUERY:
            return "query", 0.95
        return ("key", 0.8) if c == qc else ("light", 1.0)

    def reach(r, c):
        if (r, c) == QUERY:
            return "query", 0.95
        if r == qr or c == qc:  # one step suffices
            return "weight", 0.85
        return "weight", 0.4  # two steps, through (r, qc)

    grid(ax, xs[0], top, row_step)
    panel_title(ax, xs[0], "row step", "$R$ attentions over $C$ keys: $RC^2$ scores")
    grid(ax, xs[1], top, col_step)
    panel_title(ax, xs[1], "column step", "$C$ attentions over $R$ keys: $CR^2$ scores")
    grid(ax, xs[2], top, reach)
    panel_title(ax, xs[2], "reach of the two steps", "every pixel, $T = RC$")
    for x0 in xs[:2]:
        arrow(ax, (x0 + COLS * CELL + 0.15, top - ROWS * CELL / 2), (x0 + COLS * CELL + 0.75, top - ROWS * CELL / 2))
    for x0, word in zip(xs[:2], ("then", "together"), strict=True):
        text(ax, x0 + COLS * CELL + 0.45, top - ROWS * CELL / 2 + 0.12, word, ha="center", va="bottom", size=9)
    # a two-step path on the reach panel: pixel (3, 0) -> (3, qc) in the row step -> query in the column step
    cx = lambda c: xs[2] + (c + 0.5) * CELL
    cy = lambda r: top - (r + 0.5) * CELL
    arrow(ax, (cx(0), cy(3)), (cx(qc), cy(3)), color="output")
    arrow(ax, (cx(qc), cy(3)), (cx(qc), cy(qr)), color="output")
    y_note = top - ROWS * CELL - 0.3
    text(ax, xs[0], y_note, "blue: query pixel   orange: keys it sees in one step", va="top", size=9.5)
    text(
        ax,
        xs[2] - 0.2,
        y_note,
        "dark: one step; light: two steps, through\nthe pixel where the key's row meets the\nquery's column (arrows)",
        va="top",
        size=9.5,
        color="weight",
    )
    save(fig, "09-axial")


if __name__ == "__main__":
    main()

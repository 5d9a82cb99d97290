"""Draw every mechanism diagram: run each ``scripts/diagrams/chNN_*.py`` (they write ``chapters/images/``).

``--check`` draws into a temporary folder and fails when a committed SVG differs, or when a script's SVG is
missing, so that the pictures can never drift from their scripts.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parents[1] / "chapters" / "images"


def scripts() -> list[Path]:
    return sorted(HERE.glob("ch[0-9][0-9]_*.py"))


def draw(into: Path) -> list[Path]:
    """Run every script with its output redirected to ``into``; return the SVGs written."""
    env = dict(os.environ, ATTNBOOK_DIAGRAMS_OUT=str(into), MPLBACKEND="Agg")
    for script in scripts():
        subprocess.run([sys.executable, str(script)], check=True, env=env, cwd=HERE)
    return sorted(into.glob("*.svg"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a committed SVG differs from its script")
    args = parser.parse_args()
    if not args.check:
        draw(IMAGES)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        drawn = draw(Path(tmp))
        stale = [p.name for p in drawn if not (IMAGES / p.name).exists() or not filecmp.cmp(p, IMAGES / p.name, False)]
    if stale:
        print("diagrams differ from their scripts (run python scripts/diagrams/build.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

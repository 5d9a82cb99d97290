"""Execute chapters top to bottom and keep their outputs in _build/executed/ (for reading and for the site).

    python scripts/execute_chapters.py                       # every written chapter, two at a time
    python scripts/execute_chapters.py chapters/03-*.md      # some
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_notebooks import CHAPTERS, ROOT, notebook_from_markdown  # noqa: E402

OUT = ROOT / "_build" / "executed"


def execute(md: Path, timeout: int) -> tuple[str, float, str]:
    nb = notebook_from_markdown(md)
    start = time.perf_counter()
    try:
        resources = {"metadata": {"path": str(CHAPTERS)}}
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources=resources).execute()
        status = "ok"
    except Exception as exc:  # noqa: BLE001 - reported per chapter, the others still run
        status = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[-1] if str(exc) else ''}"
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / md.with_suffix(".ipynb").name
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(target)  # atomic: a reader never sees a half-written notebook
    return md.name, time.perf_counter() - start, status


def main() -> int:
    # With MPLBACKEND=Agg inherited, the kernel would keep Agg and the notebooks would lose their figures.
    os.environ.pop("MPLBACKEND", None)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapters", nargs="*", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args()
    chapters = [p.resolve() for p in args.chapters] or sorted(CHAPTERS.glob("[0-9][0-9]-*.md"))
    failed = 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for name, seconds, status in pool.map(execute, chapters, [args.timeout] * len(chapters)):
            print(f"{name:40s} {seconds:7.1f} s  {status}")
            failed += status != "ok"
    print(f"executed notebooks are in {OUT.relative_to(ROOT)}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

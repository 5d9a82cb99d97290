#!/usr/bin/env bash
# Build the book's website, offline, into _build/html/ (serve it with any static server, e.g.
# `python -m http.server -d _build/html`). Needs Python >= 3.10, Node >= 20 and npm; the only network it may
# use is the package registries, on the first run (pip for .venv, npm for the site template's libraries).
#
#   bash scripts/build_site.sh              # execute missing/stale chapters, then build the site
#   bash scripts/build_site.sh --force      # re-execute every chapter first
#   bash scripts/build_site.sh --no-execute # use the executed notebooks as they are
#
# Steps: (1) .venv via scripts/setup.sh; (2) the site template's npm libraries (`npm ci`, from the committed
# site/template/package-lock.json) when node_modules is missing or the lockfile changed; (3) chapters whose
# executed notebook _build/executed/NN-slug.ipynb is missing or stale (older than its chapter or than the
# attnbook package, different cells, an error output or a cell not run) are executed by scripts/execute_chapters.py;
# (4) the API reference, _build/api/*.md, from attnbook's docstrings (scripts/api_reference.py), the teachers'
# slide folders and pages (scripts/slides.py, scripts/make_teaching.py: _build/slides/, _build/teaching/), and the
# chapters' diagrams, chapters/images/, copied next to the executed notebooks (_build/executed/images/) so
# that their figures resolve; (5) `myst build --html` with the template in site/template, and beside the pages the
# reader notebooks and each chapter's student edition (notebooks/student/, scripts/teach.py); (6) the search index,
# _build/html/pagefind/, by Pagefind. Exits non-zero if a chapter failed to execute (the site is still built,
# showing the error) or if the site build failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=stale
for arg in "$@"; do
  case "$arg" in
    --force) mode=all ;;
    --no-execute) mode=none ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "build_site.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
start=$(date +%s)
command -v node >/dev/null || { echo "build_site.sh: node (>= 20) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "build_site.sh: npm is required" >&2; exit 1; }

bash scripts/setup.sh
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0 ATTNBOOK_FULL=${ATTNBOOK_FULL:-0}
# No MPLBACKEND: with MPLBACKEND=Agg in its environment the Jupyter kernel keeps Agg instead of the inline
# backend, plt.show() then emits nothing, and the pages would have no figures.
unset MPLBACKEND
export PATH="$root/.venv/bin:$PATH"

# (2) The template's JavaScript libraries, exactly as locked.
template=site/template
want=$(sha256sum "$template/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$template/node_modules/.attnbook-lock" ] || [ "$(cat "$template/node_modules/.attnbook-lock")" != "$want" ]; then
  echo "== installing the site template's npm libraries (npm ci)"
  (cd "$template" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$want" > "$template/node_modules/.attnbook-lock"
fi

# (3) Execute the chapters whose executed notebooks are missing or stale.
execute_failed=0
if [ "$mode" != none ]; then
  mapfile -t stale < <(MODE=$mode .venv/bin/python - <<'PY'
import os
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, "scripts")
from sync_notebooks import CHAPTERS, ROOT, cell_sources, notebook_from_markdown  # noqa: E402

package_mtime = max(p.stat().st_mtime for p in (ROOT / "attnbook").rglob("*.py"))
for md in sorted(CHAPTERS.glob("[0-9][0-9]-*.md")):
    done = ROOT / "_build" / "executed" / md.with_suffix(".ipynb").name
    if os.environ["MODE"] == "all" or not done.exists():
        print(md)
        continue
    executed = nbformat.read(done, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" and "raises-exception" not in c.metadata.get("tags", [])
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    unexecuted = [c for c in executed.cells if c.cell_type == "code" and c.get("execution_count") is None]  # stopped early
    older = done.stat().st_mtime < max(md.stat().st_mtime, package_mtime)
    if older or errors or unexecuted or cell_sources(executed) != cell_sources(notebook_from_markdown(md)):
        print(md)
PY
  )
  if [ "${#stale[@]}" -gt 0 ]; then
    echo "== executing ${#stale[@]} chapter(s): ${stale[*]##*/}"
    .venv/bin/python scripts/execute_chapters.py "${stale[@]}" || execute_failed=1
  else
    echo "== every executed notebook is up to date"
  fi
fi

# (4) The API reference and the diagrams (the pages are built from _build/executed/, so the chapters' relative
# image paths, images/NN-name.svg, must resolve there).
.venv/bin/python scripts/api_reference.py
# The teachers' material: slide-ready folders (_build/slides/), then the teacher's pages and the course outline
# (_build/teaching/), which take their running times from this build's execution (_build/executed/timings.json).
.venv/bin/python scripts/slides.py
.venv/bin/python scripts/make_teaching.py
rm -rf _build/executed/images
mkdir -p _build/executed
if [ -d chapters/images ]; then cp -r chapters/images _build/executed/images; fi

# (5) The site. mystmd starts the template's server and crawls it; run it in its own process group so that
# nothing it started outlives it, and with a time limit (a template server that never starts would hang it).
echo "== myst build --html"
rm -rf _build/html
log=_build/site-build.log
mkdir -p _build
set +e
env -u PORT -u HOST setsid timeout 900 myst build --html --ci >"$log" 2>&1 &
pid=$!
wait "$pid"
build_rc=$?
set -e
kill -- "-$pid" 2>/dev/null || true
grep -E "⚠️|⛔️|rror" "$log" | grep -v "favicon" || true
if [ "$build_rc" -ne 0 ] || [ ! -f _build/html/index.html ]; then
  tail -n 40 "$log"
  echo "build_site.sh: myst build --html failed (exit $build_rc); full log in $log" >&2
  exit 1
fi
if grep -q "Table of contents entry does not exist" "$log"; then
  echo "build_site.sh: a chapter listed in myst.yml has no executed notebook (see above); its page is missing" >&2
  exit 1
fi
# The reader notebooks (plain Jupyter, what "Download notebook" gives) are served by the site itself.
mkdir -p _build/html/notebooks
cp notebooks/*.ipynb _build/html/notebooks/
# Beside them, each chapter's student edition (exercises blanked, tests kept: scripts/teach.py).
.venv/bin/python scripts/teach.py release --student-only --out _build/html/notebooks >/dev/null
# (6) Full-text search: Pagefind indexes each page's <article data-pagefind-body> (math and cell outputs left out).
pagefind_start=$(date +%s)
"$template/node_modules/.bin/pagefind" --site _build/html --exclude-selectors ".katex, .outputs, .anchor" \
  >_build/pagefind.log 2>&1 || { cat _build/pagefind.log; echo "build_site.sh: pagefind failed" >&2; exit 1; }
echo "== search index: $(grep -Eo 'Indexed [0-9]+ pages?' _build/pagefind.log | head -n1) in $(( $(date +%s) - pagefind_start )) s"
pages=$(find _build/html -name index.html | wc -l)
echo "== site built in $(( $(date +%s) - start )) s: $pages pages, $(du -sh _build/html | cut -f1) in _build/html/ (log: $log)"
if [ "$execute_failed" -ne 0 ]; then
  echo "build_site.sh: some chapters failed to execute (see above); their pages show the error" >&2
  exit 1
fi

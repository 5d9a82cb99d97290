#!/usr/bin/env bash
# Set up the environment and run the whole test suite, in three steps:
#  1. unit, parity, property and consistency tests (pytest, two workers; extra arguments go to this run);
#  2. every chapter executed once, as a reader meets it: the reader notebooks (notebooks/NN-slug.ipynb, what Colab
#     opens) run outside the repository in a fresh virtual environment that holds only torch (pinned) and ipykernel
#     before their first cells install attnbook and what each chapter imports; two chapters at a time, each under a
#     240 s limit (scripts/execute_chapters.py --reader-venv); the outputs land in _build/executed/;
#  3. the website, built from those executed notebooks (nothing is executed again) and checked in headless Chromium
#     (skipped, with the reason printed, where node/npm/chromium are missing);
#  4. the teaching tools: a real nbgrader course on chapter 03 (tests/test_teach.py), with nbgrader installed from
#     PyPI (the `teach` extra) in a venv of its own, made in the background while steps 1-3 run.
# ATTNBOOK_READER_VENV (default: a folder made for this run) is where step 2 creates its venv, afresh each run.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 PYTHONHASHSEED=0 ATTNBOOK_FULL=${ATTNBOOK_FULL:-0}
# The chapters train their models afresh in every run: no checkpoint an earlier run (or earlier code) left in the
# user's cache can make a test pass. ATTNBOOK_TEST_CACHE names a cache to reuse instead (local iterations only).
# The reader venv of step 2 is made in the same per-run folder, so two runs never share one.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export ATTNBOOK_CACHE=${ATTNBOOK_TEST_CACHE:-$scratch/cache}
.venv/bin/python scripts/teach.py venv "$scratch/teach-venv" >"$scratch/teach-venv.log" 2>&1 &
teach_venv=$!
# Root ignores file permissions (CAP_DAC_OVERRIDE), so the tests of read-only run folders would skip; run the
# tests without those two capabilities where setpriv can drop them (files this user owns stay writable).
runner=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  runner=(setpriv --bounding-set -dac_override,-dac_read_search)
fi
step=$(date +%s)
"${runner[@]}" .venv/bin/python -m pytest -n 2 --dist loadfile tests "$@"
tests_s=$(( $(date +%s) - step ))
step=$(date +%s)
.venv/bin/python scripts/execute_chapters.py --reader-venv "${ATTNBOOK_READER_VENV:-$scratch/reader-venv}"
chapters_s=$(( $(date +%s) - step ))
step=$(date +%s)
ATTNBOOK_SITE_TEST=1 .venv/bin/python -m pytest -q -rs tests/test_site.py -k browser
site_s=$(( $(date +%s) - step ))
step=$(date +%s)
wait "$teach_venv" || { cat "$scratch/teach-venv.log"; echo "test.sh: could not install the teach extra" >&2; exit 1; }
cat "$scratch/teach-venv.log"
ATTNBOOK_NBGRADER="$scratch/teach-venv/bin" .venv/bin/python -m pytest -q -rs -s tests/test_teach.py -k nbgrader_generates
teach_s=$(( $(date +%s) - step ))
echo "test.sh: tests ${tests_s} s, chapters ${chapters_s} s, site ${site_s} s, nbgrader ${teach_s} s," \
  "total $(( $(date +%s) - start )) s"

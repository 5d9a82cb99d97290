#!/usr/bin/env bash
# Set up the environment and run the whole test suite: unit, parity, property and consistency tests, every
# chapter under nbval (two workers, one chapter per worker at a time, each chapter under a time limit), and
# then the website: build it and check every page in headless Chromium (skipped, with the reason printed,
# where node/npm/chromium are missing). Extra arguments go to the first pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 PYTHONHASHSEED=0 ATTNBOOK_FULL=${ATTNBOOK_FULL:-0}
.venv/bin/python -m pytest -n 2 --dist loadfile --nbval-lax --nbval-cell-timeout=600 \
  tests chapters/*.ipynb "$@"
ATTNBOOK_SITE_TEST=1 .venv/bin/python -m pytest -q -rs tests/test_site.py -k browser

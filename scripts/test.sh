#!/usr/bin/env bash
# Set up the environment and run the whole test suite: unit, parity, property, consistency and every chapter
# (nbval, two workers, one chapter per worker at a time). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 PYTHONHASHSEED=0 ATTNBOOK_FULL=${ATTNBOOK_FULL:-0}
.venv/bin/python -m pytest -n 2 --dist loadfile --nbval-lax --nbval-cell-timeout=600 \
  tests chapters/*.ipynb "$@"

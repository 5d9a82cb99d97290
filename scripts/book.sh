#!/usr/bin/env bash
# Set up the environment and execute every written chapter top to bottom, keeping the outputs in
# _build/executed/ (the sources in chapters/ stay output-free). Extra arguments: chapter files to run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 ATTNBOOK_FULL=${ATTNBOOK_FULL:-0}
.venv/bin/python scripts/execute_chapters.py "$@"

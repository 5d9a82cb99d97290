#!/usr/bin/env bash
# Set up the environment, execute every written chapter top to bottom (outputs kept in _build/executed/;
# the sources in chapters/ stay output-free), then build the offline website from them into _build/html/.
# Extra arguments: chapter files to execute (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# No MPLBACKEND here: with Agg in its environment the kernel would drop the inline figures from the outputs.
unset MPLBACKEND
export HF_HUB_OFFLINE=1 ATTNBOOK_FULL=${ATTNBOOK_FULL:-0}
.venv/bin/python scripts/execute_chapters.py "$@"
if command -v node >/dev/null && command -v npm >/dev/null; then
  bash scripts/build_site.sh --no-execute
else
  echo "book.sh: node and npm are needed for the website; the executed notebooks are in _build/executed/"
fi

#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv: CPU PyTorch, attnbook and its dev tools.
# Idempotent: it reinstalls only when pyproject.toml changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.attnbook-installed
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install --quiet --upgrade pip
  # Pin the CPU build of torch here (a plain "torch" would pull a multi-GB CUDA build); the package itself
  # only asks for torch>=2.3, which this satisfies.
  .venv/bin/pip install --quiet "torch==${ATTNBOOK_TORCH:-2.13.0}"
  .venv/bin/pip install --quiet "torch==${ATTNBOOK_TORCH:-2.13.0}" -e ".[dev]"
  echo "$want" > "$stamp"
fi
# PyPI's torchvision (pulled by timm, a test-only reference) is a CUDA build that cannot load beside the CPU torch
# wheel; in this venv only, a .pth hook defines its two missing op schemas at its first import (scripts/dev/).
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp scripts/dev/torchvision_shim.py "$site/_attnbook_torchvision_shim.py"
echo "import _attnbook_torchvision_shim" > "$site/_attnbook_torchvision_shim.pth"
# A kernel that runs the chapters with this environment.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (attnbook)" >/dev/null

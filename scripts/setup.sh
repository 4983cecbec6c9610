#!/usr/bin/env bash
# Create .venv and install aptfleet with every extra (`all`) and its dev tools (`dev`). torch
# is installed first and pinned to the local CPU build: any other torch spec would make pip
# fetch several GB of CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[all,dev]"

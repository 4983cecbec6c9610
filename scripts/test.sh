#!/usr/bin/env bash
# Set up (venv + install) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
. scripts/env.sh
ruff check apt_core client server tests scripts
ruff format --check apt_core client server tests scripts
mypy
pytest -q "$@"

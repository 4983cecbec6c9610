#!/usr/bin/env bash
# Set up (venv + install) and run the main job: `aptfleet demo` (coordinator + simulated
# fleet + a mid-run policy change, all on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
. scripts/env.sh
aptfleet demo "$@"

#!/usr/bin/env bash
# Set up (venv + install) and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
. scripts/env.sh
aptfleet bench --task digits --methods fp32,fixed8,apt --seeds 1 --epochs 10 --out .aptfleet/demo-bench

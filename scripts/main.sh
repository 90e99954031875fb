#!/usr/bin/env bash
# The main job on the built-in default: 30 noisy oracle demonstrations of
# cube-single task 1 (generated, validated, cached) and their summary.
# Extra arguments go to `expoft data demos` (e.g. --env cube-double --task 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/expoft data demos --env cube-single --task 1 --episodes 30 --seed 0 --show-info "$@"

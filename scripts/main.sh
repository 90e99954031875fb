#!/usr/bin/env bash
# The main job on the built-in default (`expoft demo`): generate (or reuse) noisy oracle demos
# of cube-single task 1 (in each, the cube is knocked away once and the oracle recovers it),
# pretrain the flow base by imitation, fine-tune it online with EXPO (EXPO-FT's chunks; a
# simulated person takes over when the policy is stuck), evaluate, and write
# runs/demo/seed0/{summary.json,learning_curve.png,metrics.jsonl}.
# About 14-16 minutes on a 2-core CPU (seeds 0-2 measured alone, 2026-12-06). Extra arguments go to
# `expoft demo` (e.g. --seed 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/expoft demo "$@"

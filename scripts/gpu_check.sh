#!/usr/bin/env bash
# Check expoft on a GPU: which device JAX sees, the update's speed there, and a short P1 run.
#   pip install -e ".[cuda]"      # once: JAX's CUDA 12 build (".[cuda13]" for CUDA 13)
#   bash scripts/gpu_check.sh     # about 10-20 minutes on one GPU
# Without a GPU it says so and exits 0 (nothing to check).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
platform=$("$PY" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo "none")
echo "JAX backend: $platform"
if [ "$platform" != "gpu" ]; then
    echo "no GPU: JAX sees none (backend '$platform'). Install JAX's CUDA build with" \
        "pip install -e \".[cuda]\" on a machine with an NVIDIA GPU and driver, then rerun."
    exit 0
fi
"$PY" -c 'import jax; print("devices:", jax.devices())'
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
# the exact update and the target-candidate cache, one JSON line per figure
"$PY" benchmarks/throughput.py --variant fast cached --loop-steps 200 --eval-episodes 2 | tee "$OUT/throughput.jsonl"
"$PY" -m expoft.cli finetune --preset p1 --env-steps 1000 --eval-every 1000 --eval-episodes 20 \
    --out "$OUT/p1-1k" --overwrite --no-progress

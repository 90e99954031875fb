#!/usr/bin/env bash
# Behaviour unchanged? Tiny runs (seed 0) of every method at commit BASE and at the working tree,
# compared row by row (wall-clock columns left out). CPU runs are deterministic: any differing
# row is a change of behaviour. About 10 minutes on 2 cores.
#   bash benchmarks/identical_metrics.sh BASE_REV [METHOD ...]   # default methods below
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 BASE_REV [METHOD ...]" >&2; exit 2; }
base_rev=$1
shift
methods=("$@")
[ ${#methods[@]} -gt 0 ] || methods=(expo expo-ft rlpd qc-fql dsrl residual bc)
work=$(mktemp -d)
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/base" "$base_rev" >/dev/null
export EXPOFT_DATA_DIR="$work/data"
status=0
for method in "${methods[@]}"; do
  for side in base now; do
    src=$PWD/src
    [ "$side" = base ] && src=$work/base/src
    PYTHONPATH=$src .venv/bin/python -m expoft.cli finetune --preset tiny --method "$method" --seed 0 \
      --out "$work/$side-$method" --no-progress > "$work/$side-$method.log" 2>&1
  done
  .venv/bin/python benchmarks/compare_metrics.py "$work/base-$method" "$work/now-$method" || status=1
done
exit $status

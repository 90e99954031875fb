#!/usr/bin/env bash
# The comparison grids of issue 5, one after another, each resumable: rerun this script and it
# goes on where it stopped (finished runs are skipped, killed ones resume from their checkpoints).
#
#   bash benchmarks/issue5_grids.sh            # all grids, in order (~20 wall hours on 2 cores)
#   bash benchmarks/issue5_grids.sh p2-scene   # one grid
#   bash benchmarks/issue5_grids.sh x-cube-single-qc-vs-expo   # the extra, labelled ablations
#   bash benchmarks/issue5_grids.sh x-scene-offline-phase
#   bash benchmarks/issue5_grids.sh x-scene-expo-chunked
#
# Runs live in runs/<grid>/ (git-ignored, checkpoints included). Whenever a grid's bench returns,
# its finished runs are exported, without checkpoints, to benchmarks/results/<grid>/, which is
# what gets committed. A session that stops mid-grid exports by hand first:
#   .venv/bin/expoft bench export runs/<grid> benchmarks/results/<grid>
# Every method gets the same tuning budget: none (ALGORITHMS.md defaults under the protocol's
# schedule). The one method flag, EXPO-FT's decoupled schedule, is part of its definition: the
# `expo-ft` method now sets it itself, and the P1 grids still pass it so that their recorded
# bench arguments (and so their resumption) stay those of the committed results.
#
# OLD DEFAULTS. These grids are the record of the defaults before 2026-12-05 (issue "EXPO that
# learns"): OLD_DEFAULTS below passes them explicitly, so the script still runs the configurations
# it ran then (same distributions, not the same random streams). The committed benches' recorded
# arguments lack those flags, so a copy of them in runs/ is not continued: start a new --out. The
# grids of the current defaults are benchmarks/learn_grids.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/expoft ] || bash scripts/setup.sh
expoft=${EXPOFT:-.venv/bin/expoft}  # EXPOFT=echo: print the commands only

OLD_DEFAULTS="--update-every 5 --target-flow-steps 1 --target-pool-size 1024 --targets-per-call"
OLD_DEFAULTS+=" --no-critic-zero-init --no-independent-backup-subsets"
P1_METHODS=expo,expo-ft,rlpd,qc,qc-fql,dsrl,residual,bc
P2_METHODS=expo,qc,qc-fql,rlpd
# Outside the equal-budget grids: why QC beat EXPO on P1 cube-single. Together with that grid's
# expo (8 base samples + 8 edited, chunk 1) and qc (32 base samples, no edits, chunks of 5):
# expo-no-edit (8 base samples, no edits) and best-of-n (32, no edits, chunk 1).
X_METHODS=expo-no-edit,best-of-n
# Outside the equal-budget grids: is the offline RL phase what separates QC from EXPO on P2 scene?
# EXPO per its definition has none (the base alone is pretrained) and QC has 500 update calls;
# here each gets the other's: expo with 500 offline update calls, qc with none.
X_OFFLINE_METHODS=expo,qc
X_OFFLINE_ARGS="expo=--offline-updates 500;qc=--offline-updates 0"
# Outside the equal-budget grids: after x-scene-offline-phase, is it QC's chunked backups or its
# 32 unedited samples that EXPO lacks on P2 scene? Here EXPO (8 base + 8 edited candidates) gets
# QC's chunks of 5 (executed whole, 5-step backups) and nothing else.
X_CHUNK_METHODS=expo
X_CHUNK_ARGS="expo=--chunk-len 5 --exec-len 5"

grid_args() {
  case "$1" in
    p1-cube-single | p1-cube-double)
      echo "--methods $P1_METHODS --protocol p1 --env ${1#p1-} --seeds 3" ;;
    p2-cube-double | p2-scene | p2-puzzle-3x3)
      echo "--methods $P2_METHODS --protocol p2 --env ${1#p2-} --task 1 --seeds 3" ;;
    x-cube-single-qc-vs-expo)
      echo "--methods $X_METHODS --protocol p1 --env cube-single --seeds 3" ;;
    x-scene-offline-phase)
      echo "--methods $X_OFFLINE_METHODS --protocol p2 --env scene --task 1 --seeds 3" ;;
    x-scene-expo-chunked)
      echo "--methods $X_CHUNK_METHODS --protocol p2 --env scene --task 1 --seeds 3" ;;
    *)
      echo "unknown grid '$1'; one of: p1-cube-single p1-cube-double p2-cube-double p2-scene p2-puzzle-3x3" \
        "x-cube-single-qc-vs-expo x-scene-offline-phase x-scene-expo-chunked" >&2
      return 2 ;;
  esac
}

run_grid() {
  local name=$1 args status=0
  local tuning=()
  args=$(grid_args "$name")
  [[ $name != p1-* ]] || tuning=(--method-args "expo-ft=--update-every 20 --actor-steps 20")
  [[ $name != x-scene-offline-phase ]] || tuning=(--method-args "$X_OFFLINE_ARGS")
  [[ $name != x-scene-expo-chunked ]] || tuning=(--method-args "$X_CHUNK_ARGS")
  # word splitting of $args is wanted: it holds plain flags without spaces
  # shellcheck disable=SC2086
  $expoft bench $args "${tuning[@]}" --finetune-args="--checkpoint-every 1000 $OLD_DEFAULTS" --no-eval-base \
    --out "runs/$name" --jobs 2 --single-thread || status=$?
  $expoft bench export "runs/$name" "benchmarks/results/$name"
  return "$status"
}

grids=("$@")
[ ${#grids[@]} -gt 0 ] || grids=(p1-cube-single p1-cube-double p2-cube-double p2-scene p2-puzzle-3x3 x-cube-single-qc-vs-expo x-scene-offline-phase x-scene-expo-chunked)
for name in "${grids[@]}"; do
  grid_args "$name" > /dev/null
done
failed=()
for name in "${grids[@]}"; do
  # a failed run is reported by its bench; the next grids still run
  run_grid "$name" || failed+=("$name")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "grids with failed runs (see their logs, then rerun this script): ${failed[*]}" >&2
  exit 1
fi

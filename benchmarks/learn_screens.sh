#!/usr/bin/env bash
# Screens of the fixes of issue "EXPO that learns", each fix alone on one seed (seed 0), before
# the full learn-* grids. The agent is EXPO with chunks of 5 executed whole (what EXPO-FT and QC
# share; with one update call per chunk the old schedule and the published ratio per decision
# coincide, so the ratio fix is not screened here). "old" is the configuration of the grids run
# before 2026-12-05; each other screen changes one thing of it:
#   zero-init  critics start at Q = 0                    (fix 2)
#   indep      independent subsets choose / value        (fix 4)
#   targets    10-step target candidates, not 1          (fix 1)
#   all-fast   all fixes, with the pool/per-call options (fixes 1, 2, 4)
#
#   bash benchmarks/learn_screens.sh p1   # P1 cube-single: old zero-init indep targets all-fast
#   bash benchmarks/learn_screens.sh p2   # P2 scene task 1: zero-init indep targets (old: the
#                                         # committed x-scene-expo-chunked seed 0)
# The two queues are meant to run at once, each on a core of its own:
#   taskset -c 0 bash benchmarks/learn_screens.sh p2 & taskset -c 1 bash benchmarks/learn_screens.sh p1 &
# SEEDS=3 screens seeds 0-2 into runs/screen-<protocol>-<name>-3seeds (seed 0 copied from the one-seed
# screen when it has finished there).
# Resumable like any bench: rerun and finished screens are skipped. Export a finished one with
#   .venv/bin/expoft bench export runs/screen-<protocol>-<name> benchmarks/results/screen-<protocol>-<name>
set -euo pipefail
# One function, parsed before it starts: an edit of this file during a long run cannot break it.
main() {
  cd "$(dirname "$0")/.."
  [ -x .venv/bin/expoft ] || bash scripts/setup.sh
  expoft=${EXPOFT:-.venv/bin/expoft}

  CHUNKS="--chunk-len 5 --exec-len 5"
  OLD_TARGETS="--target-flow-steps 1"
  OLD_SPEED="--target-pool-size 1024 --targets-per-call"
  OLD_INIT="--no-critic-zero-init"
  OLD_SUBSETS="--no-independent-backup-subsets"

  screen_args() {
    case "$1" in
      old) echo "$CHUNKS $OLD_TARGETS $OLD_SPEED $OLD_INIT $OLD_SUBSETS" ;;
      zero-init) echo "$CHUNKS $OLD_TARGETS $OLD_SPEED $OLD_SUBSETS" ;;
      indep) echo "$CHUNKS $OLD_TARGETS $OLD_SPEED $OLD_INIT" ;;
      targets) echo "$CHUNKS $OLD_SPEED $OLD_INIT $OLD_SUBSETS" ;;
      all-fast) echo "$CHUNKS $OLD_SPEED" ;;
      *) echo "unknown screen '$1'" >&2; return 2 ;;
    esac
  }

  case "${1:-}" in
    p1) proto=(--protocol p1 --env cube-single); screens=(old zero-init indep targets all-fast) ;;
    p2) proto=(--protocol p2 --env scene --task 1); screens=(zero-init indep targets) ;;
    *) echo "usage: $0 p1|p2 [screen ...]" >&2; exit 2 ;;
  esac
  name=$1
  shift
  [ $# -gt 0 ] && screens=("$@")
  SEEDS=${SEEDS:-1}
  for screen in "${screens[@]}"; do
    one=runs/screen-$name-$screen
    out=$one
    if [ "$SEEDS" != 1 ]; then
      out=$one-${SEEDS}seeds
      if [ -f "$one/runs/expo/seed0/summary.json" ] && [ ! -e "$out" ]; then
        # the one-seed bench, as if it had been started with $SEEDS seeds: the bench continues it
        mkdir -p "$out/runs/expo"
        cp -r "$one/runs/expo/seed0" "$one/runs/expo/seed0.log" "$out/runs/expo/"
        "${expoft%/expoft}/python" -c 'import json, sys
bench = json.load(open(sys.argv[1])); bench["arguments"]["seeds"] = int(sys.argv[3])
json.dump(bench, open(sys.argv[2], "w"), indent=2)' "$one/bench.json" "$out/bench.json" "$SEEDS"
      fi
    fi
    args=$(screen_args "$screen")
    echo "== $screen: $args" >&2
    "$expoft" bench --methods expo "${proto[@]}" --seeds "$SEEDS" --jobs 1 --no-pin "--finetune-args=$args" --out "$out"
    "$expoft" bench export "$out" "benchmarks/results/$(basename "$out")"
  done
}
# one line: bash has read all of it before main runs, so an edit of this file while it runs
# (a git pull during a run of hours) cannot change what it does after main returns
main "$@"; exit

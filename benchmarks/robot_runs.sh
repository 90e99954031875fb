#!/usr/bin/env bash
# The acceptance runs of issue "EXPO-FT on a robot" (cube-single task 1, state observations, the
# `demo` preset: 9k env steps, evaluations every 3k, 50 episodes), each resumable:
#
#   bash benchmarks/robot_runs.sh async SEED    # `expoft learner --mode async` + `expoft actor`
#   HZ=1000 bash benchmarks/robot_runs.sh sync SEED  # `expoft learner --mode sync` + `expoft actor` (a sync
#                                               # actor waits for the updates: no need to pace it)
#   bash benchmarks/robot_runs.sh single SEED   # `expoft demo --intervene none`: the same run in one process
#   bash benchmarks/robot_runs.sh keys SEED     # single process, --intervene keys (typed person)
#   bash benchmarks/robot_runs.sh scripted SEED # single process, --intervene scripted
#
# Runs go to $RUNS_DIR/robot-<preset>/<arm>/seed<SEED> (default runs/). The learner is pinned to core 1 and
# the actor to core 0 (LEARNER_CPU / ACTOR_CPU), so the actor's act latency and its longest stall
# (actor.json) are measured beside a learner that updates on a core of its own. A run folder with
# summary.json is skipped; a killed learner run resumes from its checkpoint (the actor resends
# what the learner no longer holds).
set -euo pipefail
# One function, parsed before it starts: an edit of this file during a long run cannot break it.
main() {
  cd "$(dirname "$0")/.."
  [ -x .venv/bin/expoft ] || bash scripts/setup.sh
  arm=${1:?arm: async, sync, single, keys or scripted}
  seed=${2:?seed}
  RUNS_DIR=${RUNS_DIR:-runs}
  PRESET=${PRESET:-demo}  # PRESET=tiny: a smoke test of this script (seconds)
  # The simulated arm is held to a robot's pace (env steps per second; `expoft actor --hz`): an
  # unpaced simulator outruns an async learner on this CPU, which a real arm never does.
  HZ=${HZ:-10}
  LEARNER_CPU=${LEARNER_CPU:-1}
  ACTOR_CPU=${ACTOR_CPU:-0}
  out=$RUNS_DIR/robot-$PRESET/$arm/seed$seed
  if [ -f "$out/summary.json" ]; then
    echo "$out: done"
    exit 0
  fi
  mkdir -p "$(dirname "$out")"
  case "$arm" in
    single | keys | scripted)
      # the demo preset has a simulated person since 2026-12-06: the single arm is the run without
      extra=(--intervene none)
      [ "$arm" != single ] && extra=(--intervene "$arm")
      resume=()
      [ -f "$out/config.json" ] && resume=(--resume)
      # expoft demo writes into --out/seed<seed>
      taskset -c "$LEARNER_CPU" .venv/bin/expoft demo --preset "$PRESET" --seed "$seed" --out "$(dirname "$out")" \
        --no-progress "${extra[@]}" "${resume[@]}" > "$out.log" 2>&1
      ;;
    async | sync)
      port=$((8800 + seed + (${#arm} == 5 ? 10 : 0)))
      resume=()
      [ -f "$out/config.json" ] && resume=(--resume)
      taskset -c "$LEARNER_CPU" .venv/bin/expoft learner --preset "$PRESET" --seed "$seed" --out "$out" \
        --listen "127.0.0.1:$port" --mode "$arm" --intervene none --no-progress "${resume[@]}" > "$out.learner.log" 2>&1 &
      learner=$!
      # The learner pretrains (or restores) first and listens only then.
      until grep -q "listening on" "$out.learner.log"; do
        kill -0 "$learner" 2> /dev/null || { echo "the learner died: $out.learner.log" >&2; exit 1; }
        sleep 5
      done
      taskset -c "$ACTOR_CPU" .venv/bin/expoft actor --learner "ws://127.0.0.1:$port" --retries 60 --hz "$HZ" \
        > "$out.actor.log" 2>&1 || true
      wait "$learner"
      tail -n 1 "$out.actor.log" > "$out/actor.json"
      ;;
    *)
      echo "unknown arm '$arm'" >&2
      exit 2
      ;;
  esac
  echo "$out: $(python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print('final', s['final_success'], 'base', s.get('final_base_success'))" "$out/summary.json")"
}
# one line: bash has read all of it before main runs, so an edit of this file while it runs
# (a git pull during a run of hours) cannot change what it does after main returns
main "$@"; exit

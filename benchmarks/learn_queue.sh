#!/usr/bin/env bash
# Issue "EXPO that learns": its whole compute plan as a list of items run one run at a time on
# both cores (WIDE), then items run two runs at a time, one per core (BOTH), then two lanes, one
# per core, each a list of the grids of benchmarks/learn_grids.sh run in order. A plan of days on a 2-core CPU, so it is made to be stopped and started again:
#
#   RUNS_DIR=$HOME/expoft-runs bash benchmarks/learn_queue.sh start    # WIDE, BOTH, then the lanes, in the background
#   RUNS_DIR=$HOME/expoft-runs bash benchmarks/learn_queue.sh status   # where every run stands
#   RUNS_DIR=$HOME/expoft-runs bash benchmarks/learn_queue.sh stop     # before the machine goes away; writes
#                                                                      # the status to benchmarks/results/queue-status.txt
#   RUNS_DIR=$HOME/expoft-runs bash benchmarks/learn_queue.sh pause    # SIGSTOP the runs: measure on idle cores,
#   RUNS_DIR=$HOME/expoft-runs bash benchmarks/learn_queue.sh cont     # then SIGCONT (nothing restarts)
#
# `start` again continues: every grid skips its finished runs and resumes killed ones. `stop`
# loses no work: each run gets SIGTERM and goes on to its next episode end, checkpoints there and
# exits (a run still pretraining is stopped at once and resumes from its pretraining checkpoint).
# An episode may last long: a failing 750-step scene episode of exact EXPO-FT takes ~15 minutes;
# after STOP_WAIT seconds (default 600) the runs still in one are stopped at once (back to their
# newest checkpoint on resume). WIDE and BOTH log to $RUNS_DIR/queue-both.log, the lanes to
# $RUNS_DIR/queue-lane<K>.log.
#
# Before a learn-* grid, the finished expo-ft runs it shares with an earlier grid (the same
# command on the defaults: cache-p1-<env>-cached, expo-ft-p2-scene) are copied into it, so none is run twice; the
# bench warns if a copied run's config is not the one it plans.
set -euo pipefail

# A lane item is GRID or GRID@RUNS (RUNS: `expoft bench --only`, e.g. learn-p1-cube-single@bc):
# only those runs of the grid now, the rest by a later item. A grid belongs to one lane (two
# benches cannot share a folder). A session is ~3 hours and its machine may not keep RUNS_DIR:
# runs checkpoint every 1000 env steps and resume from there; an item already finished costs
# nothing (its runs are skipped), so done items stay listed and a fresh machine redoes none.
# Costs on one core: a P1 EXPO-FT, QC or chunked-EXPO run ~1 hour, a scene run ~2, BC 6-12
# minutes on P1 and ~1/2 hour on scene (pretraining, evaluations). Why each grid exists, and
# what the finished ones showed: docs/results/learn.md ("Where it stands" lists what is still
# to run, in this order).
#
# WIDE: before everything else, one run at a time, unpinned: XLA's thread pool (a thread per core,
# even under --single-thread) computes it on both cores, 1.83x faster than pinned to one on QC's
# scene update (benchmarks/throughput.py --variant qc-exact). For runs longer than a session on
# one core that the acceptance waits on: scene's QC (the vs-QC verdict on scene), ~3 wall hours a
# run even so (offline phase ~75 min, online ~80-100), resumed across sessions.
WIDE=(learn-p2-scene@qc)
# BOTH: next, both cores, the bench running two runs at a time, each pinned to a core of its own:
# two runs of one grid that must both finish within a session.
BOTH=()
# Then two lanes, one per core, balanced (~7 CPU hours each in the sixteenth session): first what
# the issue's item 7 still needs (scene's BC, plain EXPO on the three learn grids), then the
# screens that ask "what would" (qcchoice's seed 0 from env step 3,250: EXPO-FT choosing among
# QC's 32 base samples; the self-imitation control selfimit-p1-cube-double; the online-base
# screen's seeds 1-2).
LANE0=(expo-ft-p2-scene learn-p2-scene@bc learn-p2-scene qcchoice-p2-scene@expo-ft:0
  online-base-p1-cube-single)
LANE1=(offline-p2-scene@expo-ft:0 offline-p2-scene recover-p1-cube-double learn-p1-cube-single@qc
  learn-p1-cube-single learn-p1-cube-double selfimit-p1-cube-double)

# The expo-ft runs of a learn-* grid that an earlier grid made.
shared_source() {
  case "$1" in
    learn-p1-cube-single) echo cache-p1-cube-single-cached ;;
    learn-p1-cube-double) echo cache-p1-cube-double-cached ;;
    learn-p2-scene) echo expo-ft-p2-scene ;;
  esac
}

seed_from_export() {  # $1: a grid; a fresh machine starts from the grid's export, if it has one
  # The export (benchmarks/results/<grid>, in git) holds every finished run without checkpoints:
  # with it, a grid whose RUNS_DIR was lost reruns only its unfinished runs, from their start.
  local export=${RESULTS_DIR:-benchmarks/results}/$1
  [ ! -e "$RUNS_DIR/$1" ] && [ -f "$export/bench.json" ] || return 0
  cp -a "$export" "$RUNS_DIR/$1.partial" && mv "$RUNS_DIR/$1.partial" "$RUNS_DIR/$1"
  echo "$(date -u +%FT%TZ) $1: not in $RUNS_DIR; started from its export $export" \
    "($(find "$RUNS_DIR/$1/runs" -name summary.json 2> /dev/null | wc -l) finished runs)"
}

copy_shared() {  # $1: a grid; copies the finished expo-ft runs of its source grid that it lacks
  local source seed_dir seed dest
  source=$(shared_source "$1")
  [ -n "$source" ] || return 0
  seed_from_export "$source"
  for seed_dir in "$RUNS_DIR/$source/runs/expo-ft"/seed*/; do
    [ -f "$seed_dir/summary.json" ] || continue
    seed=$(basename "$seed_dir")
    dest=$RUNS_DIR/$1/runs/expo-ft/$seed
    [ -e "$dest" ] && continue
    mkdir -p "$(dirname "$dest")"
    cp -a "$seed_dir" "$dest.partial" && mv "$dest.partial" "$dest"
    [ -f "$RUNS_DIR/$source/runs/expo-ft/$seed.log" ] && cp -a "$RUNS_DIR/$source/runs/expo-ft/$seed.log" "$dest.log"
    echo "$(date -u +%FT%TZ) copied $source/runs/expo-ft/$seed into $1"
  done
}

lane() {  # $1: a core (0 or 1), "both" (JOBS=2: the bench pins each run to a core of its own) or
  # "wide" (one run at a time, unpinned: on every core); the rest: lane items
  local core=$1 item grid only jobs=1 pin
  shift
  pin=(taskset -c "$core")
  if [ "$core" = both ]; then jobs=2 pin=(); fi
  if [ "$core" = wide ]; then pin=(); fi
  for item in "$@"; do
    if [ -e "$RUNS_DIR/queue.stop" ]; then
      echo "$(date -u +%FT%TZ) lane of core $core: stopped before $item"
      return 0
    fi
    grid=${item%%@*}
    only=${item#"$grid"}
    only=${only#@}
    seed_from_export "$grid"
    copy_shared "$grid"
    echo "$(date -u +%FT%TZ) lane of core $core: $item"
    ONLY=$only JOBS=$jobs nice -n 5 "${pin[@]}" bash benchmarks/learn_grids.sh "$grid" ||
      echo "$(date -u +%FT%TZ) lane of core $core: $item stopped or has failed runs (see its logs)"
  done
  echo "$(date -u +%FT%TZ) lane of core $core: done"
}

print_status() {  # every run of the lanes' grids in RUNS_DIR: finished, or where it stands, with its evaluations
  .venv/bin/python - "$RUNS_DIR" "${WIDE[@]}" "${BOTH[@]}" "${LANE0[@]}" "${LANE1[@]}" << 'EOF'
import json
import sys
from pathlib import Path

runs_dir = Path(sys.argv[1])
for grid in dict.fromkeys(item.split("@")[0] for item in sys.argv[2:]):  # lane items -> grids, once each
    runs = sorted((runs_dir / grid / "runs").glob("*/seed*/config.json"))
    print(f"{grid}: {'not started' if not runs else ''}")
    for config in runs:
        run = config.parent
        done = (run / "summary.json").exists()
        step, evals, offline_calls = 0, [], None
        if (run / "metrics.jsonl").exists():
            for line in (run / "metrics.jsonl").read_text().splitlines():
                try:
                    row = json.loads(line)
                    step = max(step, int(row.get("env_step", 0)))
                    if row.get("phase") == "offline":  # P2's offline RL phase: hours before env step 1
                        offline_calls = int(row["offline/update_calls"])
                except (ValueError, TypeError, AttributeError, KeyError):
                    continue
                if "eval/success" in row:  # the policy, and its base alone on the same reset seeds
                    base = row.get("eval_base/success")
                    evals.append(f"{row['eval/success']:.2f}" + ("" if base is None else f" (base {base:.2f})"))
        state = "finished" if done else f"at env step {step}"
        if not done and step == 0 and offline_calls is not None:
            try:
                planned = json.loads(config.read_text()).get("offline_updates", "?")
            except ValueError:
                planned = "?"
            state = f"offline phase, {offline_calls} of {planned} update calls"
        print(f"  {run.parent.name} {run.name}: {state}" + (f"; evaluations {' / '.join(evals)}" if evals else ""))
EOF
}

save_status() {  # the standing of every run, in git's results: the evaluations of runs in flight
  # are otherwise only in RUNS_DIR, which the next session's machine may not have
  local out=${RESULTS_DIR:-benchmarks/results}/queue-status.txt
  # a fresh machine's RUNS_DIR holds no run: the last session's record stays as it is
  if ! compgen -G "$RUNS_DIR/*/runs/*/seed*/config.json" > /dev/null; then
    echo "no run in $RUNS_DIR: $out left as it is"
    return 0
  fi
  { echo "# learn_queue.sh status at stop, $(date -u +%FT%TZ) (RUNS_DIR $RUNS_DIR)"; print_status; } > "$out.partial"
  mv "$out.partial" "$out"
  echo "wrote $out"
}

benches() {  # pids of the benches of this RUNS_DIR, and of its extensions (`expoft extend`: no bench)
  pgrep -f "expoft (bench|extend) .*--out $RUNS_DIR/" || true
}

queue_alive() {  # whether the queue started for this RUNS_DIR (its lanes are its children) still runs
  [ -f "$RUNS_DIR/queue.pid" ] && kill -0 "$(cat "$RUNS_DIR/queue.pid")" 2> /dev/null
}

check_items() {  # $@: lane items (default: every item of the plan); exits 2 naming a bad one
  local item grids=()
  [ $# -gt 0 ] || set -- "${WIDE[@]}" "${BOTH[@]}" "${LANE0[@]}" "${LANE1[@]}"
  for item in "$@"; do grids+=("${item%%@*}"); done
  bash benchmarks/learn_grids.sh --check "${grids[@]}" ||
    { echo "a lane item of $0 names no grid of benchmarks/learn_grids.sh (above): fix it first" >&2; exit 2; }
}

main() {
  cd "$(dirname "$0")/.."
  RUNS_DIR=$(realpath -m "${RUNS_DIR:-runs}")
  STOP_WAIT=${STOP_WAIT:-600}
  # the runs of this RUNS_DIR: the bench starts them as `python -m expoft.cli finetune --out RUN`
  # and resumes them as `... finetune --resume RUN`; an extension is `expoft extend ... --out RUN`
  RUNS_PATTERN="expoft([.]cli finetune|[.]cli extend| extend) .*(--out|--resume) $RUNS_DIR/"
  export RUNS_DIR
  case "${1:-}" in
    check)  # every item (those named, or all of WIDE, BOTH and the lanes) names a grid
      check_items "${@:2}"
      ;;
    start)
      [ -z "$(benches)" ] || { echo "benches of $RUNS_DIR are running already: $(benches | xargs)" >&2; exit 1; }
      # a queue told to stop goes on exporting for a moment after its benches end: a start then
      # would let its lanes see no stop file and carry on beside the new ones
      ! queue_alive || { echo "the queue of $RUNS_DIR (pid $(cat "$RUNS_DIR/queue.pid")) still runs: stop it first" >&2; exit 1; }
      [ -x .venv/bin/expoft ] || bash scripts/setup.sh
      check_items  # after the setup (a grid may ask the package): a misspelt item would end its lane hours later
      mkdir -p "$RUNS_DIR"
      rm -f "$RUNS_DIR/queue.stop"
      nohup bash "$0" queue >> "$RUNS_DIR/queue-both.log" 2>&1 &
      echo $! > "$RUNS_DIR/queue.pid"
      echo "started; logs: $RUNS_DIR/queue-both.log (WIDE, BOTH), then $RUNS_DIR/queue-lane0.log, $RUNS_DIR/queue-lane1.log"
      ;;
    queue)  # WIDE, then BOTH on both cores, then the two lanes side by side
      lane wide "${WIDE[@]}"
      [ -e "$RUNS_DIR/queue.stop" ] && exit 0
      lane both "${BOTH[@]}"
      [ -e "$RUNS_DIR/queue.stop" ] && exit 0
      bash "$0" lane 0 "${LANE0[@]}" >> "$RUNS_DIR/queue-lane0.log" 2>&1 &
      bash "$0" lane 1 "${LANE1[@]}" >> "$RUNS_DIR/queue-lane1.log" 2>&1 &
      wait
      ;;
    lane)
      shift
      lane "$@"
      ;;
    stop)
      [ -d "$RUNS_DIR" ] && touch "$RUNS_DIR/queue.stop"  # lanes start no further grid
      local pids
      pids=$(benches)
      if [ -z "$pids" ]; then
        echo "no bench of $RUNS_DIR is running"
        while queue_alive; do sleep 1; done  # a lane between two grids: it stops before the next
        save_status
        exit 0
      fi
      kill -TERM $pids
      echo "asked $(echo $pids | wc -w) benches to stop at their runs' next episode ends; waiting (at most ${STOP_WAIT}s)"
      local waited=0
      while [ -n "$(benches)" ] && [ "$waited" -lt "$STOP_WAIT" ]; do sleep 5; waited=$((waited + 5)); done
      if [ -n "$(benches)" ]; then  # an episode still running: a second SIGTERM stops a run at once
        echo "runs still in an episode after ${STOP_WAIT}s: stopping them now (they resume from their newest checkpoint)"
        pkill -TERM -f "$RUNS_PATTERN" || true
        while [ -n "$(benches)" ]; do sleep 5; done
      fi
      while queue_alive; do sleep 1; done  # the lanes export what finished, then see the stop file
      save_status
      echo "stopped"
      ;;
    pause | cont)  # freeze the runs (SIGSTOP) to measure on idle cores, then let them go on (SIGCONT)
      local signal=STOP
      [ "$1" = cont ] && signal=CONT
      if pkill "-$signal" -f "$RUNS_PATTERN"; then echo "sent SIG$signal to the runs of $RUNS_DIR"; else echo "no run of $RUNS_DIR"; fi
      ;;
    status)
      print_status
      ;;
    *)
      echo "usage: RUNS_DIR=DIR bash benchmarks/learn_queue.sh start|status|stop|pause|cont|check [ITEM...]" >&2
      exit 2
      ;;
  esac
}
# one line: bash has read all of it before main runs, so an edit of this file while it runs
# (a git pull during a run of hours) cannot change what it does after main returns
main "$@"; exit

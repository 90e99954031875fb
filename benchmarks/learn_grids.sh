#!/usr/bin/env bash
# The grids of issue "EXPO that learns", on the current (faithful) defaults, each resumable:
# rerun and finished runs are skipped, killed ones resume from their checkpoints.
#
#   bash benchmarks/learn_grids.sh cache-p1-cube-single-cached   # EXPO-FT on the cache, 3 seeds
#   bash benchmarks/learn_grids.sh learn-p1-cube-single   # expo, expo-ft, qc, bc; 3 seeds
#   LEARN_ARGS="--jobs 2" bash benchmarks/learn_grids.sh learn-p2-scene   # extra bench flags
#   bash benchmarks/learn_grids.sh --check GRID...             # only whether each names a grid here
#
# Grids (runs in $RUNS_DIR/<grid>/, default runs/; exported without checkpoints to
# benchmarks/results/<grid>/). A grid outlasts a session: keep RUNS_DIR outside the work tree
# (e.g. RUNS_DIR=$HOME/expoft-runs) when the next session gets a fresh checkout.
#   cache-<p1-cube-single|p1-cube-double>-<exact|cached>
#       EXPO-FT (chunks of 8, 4 executed: one update call per 4 env steps) with exact target
#       candidates (--target-cache-refresh=None), and with the target-candidate cache
#       (--target-cache-refresh $CACHE_REFRESH). The cache could become the default only if the
#       cached arm learned as the exact one does on both tasks (3 seeds each, paired by seed: same
#       data, same pretrained base); it did, and is the default since 2026-12-06 (seventh session).
#   online-base-p1-cube-single
#       EXPO-FT as in cache-p1-cube-single-exact, but its TD-target candidates drawn by the online
#       base (--target-base online, the published code's rule) instead of the EMA copy it acts
#       with; paired by seed with cache-p1-cube-single-exact (same data, same pretrained base).
#   cands16-p1-cube-single
#       EXPO-FT as in cache-p1-cube-single-cached, but with 16 base samples and 16 edits per
#       decision (published: 8 + 8), the `demo` preset's choice; paired by seed with
#       cache-p1-cube-single-cached (same data, same pretrained base, same cache): does a wider
#       choice let the critic pick better actions than the base's own?
#   actmean-p1-cube-single
#       EXPO-FT as in cache-p1-cube-single-cached, but acting (and evaluating) with the argmax of
#       the whole target ensemble's mean Q (--act-score mean) instead of a random pair's min:
#       a deviation screened because the critic's spread over the candidates is about its members'
#       disagreement there; paired by seed with cache-p1-cube-single-cached.
#   actor4-p1-cube-single
#       EXPO-FT as in cache-p1-cube-single-cached, but 4 actor steps (base, edit, temperature) per
#       update call: one per env step under P1's 4 executed actions (published: one per decision,
#       0.25 per env step), the demo agent's ratio; at 0.25 the edit policy's temperature has
#       hardly moved after 5k env steps (docs/results/learn.md). Paired with the cached arm.
#   demoagent-p1-cube-single, recover-p1-cube-single
#       The demo agent gains over its base on cube-single (+0.09 to +0.10 over 3 seeds, with and
#       without the person) where P1's EXPO-FT does not (+0.02 exact, +0.06 cached); the two
#       differ in agent (chunks of 5 executed whole, 16 + 16 candidates, one update call of UTD 20
#       and 20 actor steps every 20 env steps, beta 0.05: DEMO_AGENT / DEMO_EXPO) and in data (demos
#       with a recovery). One factor each, both cached and paired by seed with
#       cache-p1-cube-single-cached (P1 agent, P1 data): demoagent- is the demo's agent on P1's
#       data, recover- P1's agent on demos with a recovery (--demo-disturb=1.0).
#   recover-p1-cube-double
#       EXPO-FT as in cache-p1-cube-double-cached, but from demos in which the cube is knocked
#       away once and recovered (--demo-disturb=1.0, the demo's data): the demo agent's choice
#       gains over its base (+0.09) where P1's does not (+0.02 to +0.07), and its critic's spread
#       over the candidates is 2-2.5x its members' disagreement, about 1x on P1. Does data that
#       shows recoveries make the candidates' values differ, and the choice gain? Same seeds, other
#       data: compare policy - base and Q spread / member std, not success.
#   selfimit-p1-cube-double
#       The self-imitation control of cache-p1-cube-double-cached (paired by seed: same data, same
#       pretrained base): EXPO-FT acting with one base sample and no edit (--num-base-samples=1
#       --num-edit-samples=0), so no choice at all; its base still imitates the run's successful
#       episodes and its critic still learns (unused). "policy - base" measures the choice at
#       one moment, but the choice also feeds the base the successes it imitates: in
#       longer-p1-cube-double seed 1 the base alone caught up with the policy. Against this control,
#       EXPO-FT's base alone minus the control's base is the part of the choice's gain the base
#       took over, and EXPO-FT's policy minus the control is the choice's whole gain.
#   learn-p1-cube-single, learn-p1-cube-double, learn-p2-scene
#       expo (chunks of 5, see EXPO_CHUNKS), expo-ft, qc, bc under the protocol's budget, on
#       the defaults (the target-candidate cache since 2026-12-06, seventh session: EXPO-FT ~1 CPU
#       hour per 5k env steps on P1, 2 on the exact update). LEARN_ARGS adds flags to every run, and the
#       bench records them. The expo-ft runs of cache-p1-<env>-cached are the same command as
#       learn-p1-<env>'s: learn_queue.sh copies their run folders
#       (runs/cache-p1-<env>-cached/runs/expo-ft/seedS) into runs/learn-p1-<env>/runs/expo-ft/
#       instead of running them twice (the bench skips a run folder that has summary.json).
#   longer-p1-cube-double
#       Not a bench: the finished expo-ft runs of cache-p1-cube-double-cached (= learn-p1-cube-double's)
#       continued from 5k to 10k env steps (`expoft extend`, from the checkpoint of their end; the
#       source runs are not touched). P1's EXPO-FT ends +0.06 to +0.07 above its base alone at 5k
#       on both cubes, short of the +0.10 the issue asks: does the critic's gain grow with more
#       interaction? Needs the source runs' checkpoints (in RUNS_DIR, not in the exports).
#   qcchoice-p2-scene
#       EXPO-FT on P2 scene as in expo-ft-p2-scene, but choosing among QC's candidates: 32 base
#       samples and no edit (--num-base-samples=32 --num-edit-samples=0; published EXPO-FT: 8 + 8);
#       paired by seed with expo-ft-p2-scene (same data, same pretrained base). On the old grid QC
#       reached 0.92-0.94 at 5k on scene even without its offline phase, where EXPO-FT ends at
#       0.65: is it the choice (more base samples, no edit noise), or the rest (QC's 5 of 5
#       executed actions against 4 of 8, its base imitating all data)?
#   offline-p2-scene
#       EXPO-FT on P2 scene as in expo-ft-p2-scene, but with the offline RL phase P2 gives QC
#       (--offline-updates=P2_OFFLINE_UPDATES: critic, edit policy and base updated on the play
#       data alone before the online phase); paired by seed with expo-ft-p2-scene (same data,
#       same pretrained base). A deviation from published EXPO-FT, whose offline-to-online setting
#       pretrains only the base (ALGORITHMS.md): screened because QC's scene seed 0 begins its
#       online phase at 0.68-0.72 (its base alone 0.04-0.08) where EXPO-FT's policy begins at
#       0.02-0.18. Is the offline critic what QC's lead on scene is made of? (On the old defaults'
#       grid QC reached 0.92-0.94 at 5k without its offline phase too: x-scene-offline-phase.)
#   expo-ft-p2-scene
#       learn-p2-scene's expo-ft runs alone (the same command), first: where the base alone is weak
#       (0.0-0.2) the critic-guided choice has the most room; copy its run folders into
#       runs/learn-p2-scene/runs/expo-ft/ as above.
# Every run evaluates its base alone at every evaluation too (expoft bench's default), so the
# report shows policy - base, paired by reset seed, and the critic's calibration.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/expoft ] || bash scripts/setup.sh
expoft=${EXPOFT:-.venv/bin/expoft}  # EXPOFT=echo: print the commands only
CACHE_REFRESH=20
RUNS_DIR=${RUNS_DIR:-runs}
RESULTS_DIR=${RESULTS_DIR:-benchmarks/results}  # where finished runs are exported (in git)
# ONLY=bc,expo:0: only these runs of the grid this time (expoft bench --only), e.g. to fit a session
# JOBS=1: one run at a time, not pinned by the bench (pin it yourself: two grids side by side,
#   JOBS=1 taskset -c 0 bash benchmarks/learn_grids.sh A & JOBS=1 taskset -c 1 bash benchmarks/learn_grids.sh B;
#   or unpinned, one run on every core: XLA's thread pool has a thread per core even with
#   --single-thread, learn_queue.sh WIDE)
JOBS=${JOBS:-2}
PIN=()
[ "$JOBS" = 1 ] && PIN=(--no-pin)
LEARN_METHODS=expo,expo-ft,qc,bc
# Plain EXPO at one decision per env step costs ~0.45 s x 20 critic steps per env step on the
# exact update: ~12.6 CPU hours per 5k-env-step run, out of reach for 9 runs on this machine.
# The grids run it with chunks of 5 executed whole (one decision per 5 env steps, the published
# ratio per decision), as the screens did: chunking is the honest lever, not skipped updates.
EXPO_CHUNKS="--chunk-len=5 --exec-len=5"
# The demo preset's agent (train/config.py DEMO_AGENT, DEMO_EXPO) as flags on P1's expo-ft.
DEMO_AGENT_FLAGS="--chunk-len=5 --exec-len=5 --num-base-samples=16 --num-edit-samples=16 --actor-steps=20 --update-every=20 --edit-scale=0.05"
# The lever each screen grid adds to cache-p1-cube-single-cached (see the grids above).
declare -A LEVERS=(
  [cands16-p1-cube-single]="--num-base-samples=16 --num-edit-samples=16"
  [actmean-p1-cube-single]="--act-score=mean"
  [actor4-p1-cube-single]="--actor-steps=4"
)

# Extensions (not benches): NAME -> "SOURCE_GRID ENV_STEPS", every finished run of the source
# continued to ENV_STEPS in $RUNS_DIR/NAME/runs/METHOD/seedS (expoft extend; the same command
# continues a killed one), exported without checkpoints to benchmarks/results/NAME.
declare -A EXTENDS=(
  [longer-p1-cube-double]="cache-p1-cube-double-cached 10000"
)

extend_grid() {  # $1: an extension; returns non-zero if a run failed or was stopped
  local source steps run rel dest export status=0 single_thread_env
  read -r source steps <<< "${EXTENDS[$1]}"
  # what the bench sets in its runs' environment, for the same cost per run
  mapfile -t single_thread_env < <(.venv/bin/python -c 'from expoft.bench.scheduler import child_env
for name, value in child_env(single_thread=True)[1].items(): print(f"{name}={value}")')
  for run in "$RUNS_DIR/$source"/runs/*/seed*/; do
    [ -f "$run/summary.json" ] || continue
    rel=${run#"$RUNS_DIR/$source/"}
    rel=${rel%/}
    dest=$RUNS_DIR/$1/$rel
    if [ -f "$dest/summary.json" ]; then
      echo "skip $rel: finished ($dest)"
      continue
    fi
    mkdir -p "$(dirname "$dest")"
    echo "$(date -u +%FT%TZ) extend $RUNS_DIR/$source/$rel to $steps env steps (log $dest.log)"
    env "${single_thread_env[@]}" $expoft extend "$RUNS_DIR/$source/$rel" --env-steps "$steps" \
      --out "$dest" --no-progress >> "$dest.log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
      echo "$(date -u +%FT%TZ) $rel: exit $status (143: stopped at a checkpoint; the same command continues it)"
      break
    fi
  done
  for dest in "$RUNS_DIR/$1"/runs/*/seed*/; do  # the finished ones, without checkpoints
    [ -f "$dest/summary.json" ] || continue
    rel=${dest#"$RUNS_DIR/$1/"}
    rel=${rel%/}
    export=$RESULTS_DIR/$1/$rel
    [ -e "$export" ] && continue
    mkdir -p "$(dirname "$export")"
    cp -a "$dest" "$export.partial" && rm -rf "$export.partial/checkpoints" && mv "$export.partial" "$export"
    cp -a "$RUNS_DIR/$1/$rel.log" "$export.log"
    echo "exported $dest -> $export"
  done
  return "$status"
}

# grid_args NAME: the bench arguments of a grid, into the array GRID
grid_args() {
  local env
  case "$1" in
    cache-p1-cube-single-exact | cache-p1-cube-double-exact)
      env=${1#cache-p1-}
      GRID=(--methods expo-ft --protocol p1 --env "${env%-exact}" --seeds 3 --method-args "expo-ft=--target-cache-refresh=None") ;;
    cache-p1-cube-single-cached | cache-p1-cube-double-cached)
      env=${1#cache-p1-}
      GRID=(--methods expo-ft --protocol p1 --env "${env%-cached}" --seeds 3
        --method-args "expo-ft=--target-cache-refresh=$CACHE_REFRESH") ;;
    cands16-p1-cube-single | actmean-p1-cube-single | actor4-p1-cube-single)  # the cached arm plus one lever
      GRID=(--methods expo-ft --protocol p1 --env cube-single --seeds 3
        --method-args "expo-ft=--target-cache-refresh=$CACHE_REFRESH ${LEVERS[$1]}") ;;
    recover-p1-cube-single | recover-p1-cube-double)
      GRID=(--methods expo-ft --protocol p1 --env "${1#recover-p1-}" --seeds 3
        --method-args "expo-ft=--target-cache-refresh=$CACHE_REFRESH --demo-disturb=1.0") ;;
    demoagent-p1-cube-single)
      GRID=(--methods expo-ft --protocol p1 --env cube-single --seeds 3
        --method-args "expo-ft=--target-cache-refresh=$CACHE_REFRESH $DEMO_AGENT_FLAGS") ;;
    selfimit-p1-cube-double)
      GRID=(--methods expo-ft --protocol p1 --env cube-double --seeds 3
        --method-args "expo-ft=--target-cache-refresh=$CACHE_REFRESH --num-base-samples=1 --num-edit-samples=0") ;;
    online-base-p1-cube-single)
      GRID=(--methods expo-ft --protocol p1 --env cube-single --seeds 3
        --method-args "expo-ft=--target-cache-refresh=None --target-base=online") ;;
    learn-p1-cube-single | learn-p1-cube-double)
      GRID=(--methods "$LEARN_METHODS" --protocol p1 --env "${1#learn-p1-}" --seeds 3 --method-args "expo=$EXPO_CHUNKS") ;;
    learn-p2-scene)
      GRID=(--methods "$LEARN_METHODS" --protocol p2 --env scene --task 1 --seeds 3 --method-args "expo=$EXPO_CHUNKS") ;;
    expo-ft-p2-scene)
      GRID=(--methods expo-ft --protocol p2 --env scene --task 1 --seeds 3) ;;
    qcchoice-p2-scene)
      GRID=(--methods expo-ft --protocol p2 --env scene --task 1 --seeds 3
        --method-args "expo-ft=--num-base-samples=32 --num-edit-samples=0") ;;
    offline-p2-scene)
      GRID=(--methods expo-ft --protocol p2 --env scene --task 1 --seeds 3
        --method-args "expo-ft=--offline-updates=$(.venv/bin/python -c 'from expoft.bench.protocols import P2_OFFLINE_UPDATES as n; print(n)')") ;;
    longer-p1-cube-double)
      GRID=() ;;  # an extension (EXTENDS)
    *)
      echo "unknown grid '$1'; one of: cache-p1-cube-single-exact cache-p1-cube-single-cached" \
        "cache-p1-cube-double-exact cache-p1-cube-double-cached cands16-p1-cube-single actmean-p1-cube-single actor4-p1-cube-single online-base-p1-cube-single demoagent-p1-cube-single recover-p1-cube-single recover-p1-cube-double selfimit-p1-cube-double learn-p1-cube-single learn-p1-cube-double" \
        "learn-p2-scene expo-ft-p2-scene qcchoice-p2-scene offline-p2-scene longer-p1-cube-double" >&2
      return 2 ;;
  esac
}

# The whole run is one function, parsed before it starts: bash reads a script as it goes, so an
# edit of this file (a git pull) during a grid of hours would otherwise break the running one.
main() {
  [ $# -gt 0 ] || { grid_args help; exit 2; }
  local name status failed=() check=
  [ "$1" = --check ] && { check=1; shift; }  # only whether every name is a grid of this script
  for name in "$@"; do grid_args "$name"; done
  [ -z "$check" ] || exit 0
  for name in "$@"; do
    grid_args "$name"
    status=0
    if [ -n "${EXTENDS[$name]:-}" ]; then
      extend_grid "$name" || failed+=("$name")
      continue
    fi
    $expoft bench "${GRID[@]}" --finetune-args="--checkpoint-every 1000 ${LEARN_ARGS:-}" --out "$RUNS_DIR/$name" \
      --jobs "$JOBS" "${PIN[@]}" --single-thread ${ONLY:+--only "$ONLY"} || status=$?
    $expoft bench export "$RUNS_DIR/$name" "$RESULTS_DIR/$name"
    [ "$status" -eq 0 ] || failed+=("$name")
  done
  if [ ${#failed[@]} -gt 0 ]; then
    echo "grids with failed runs (see their logs, then rerun this script): ${failed[*]}" >&2
    exit 1
  fi
}
# one line: bash has read all of it before main runs, so an edit of this file while it runs
# (a git pull during a run of hours) cannot change what it does after main returns
main "$@"; exit

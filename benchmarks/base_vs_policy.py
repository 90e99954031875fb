"""Where a fine-tuning gain comes from: the base alone against the acting policy. Run by hand.

    python benchmarks/base_vs_policy.py runs/p1-cube-double runs/x-cube-single-qc-vs-expo
    python benchmarks/base_vs_policy.py runs/p1-cube-single --methods expo expo-ft qc --episodes 50

For every finished run of the given `expoft bench` folders that has a base and still has its
checkpoints (`runs/<grid>/`, not the exported `benchmarks/results/<grid>/`), evaluates the base
policy alone on the final checkpoint (`expoft eval RUN --policy base`: the run's own evaluation
seeds, so the figures pair with the run's logged ones) and prints one JSON line per run:
{"benchmark": "base-vs-policy", "bench", "method", "seed", "env_step", "episodes",
"base_before", "policy_before", "base_final", "policy_final"}
(before: before RL, from summary.json; final: at the final checkpoint). base_final minus
base_before is what the base gained during RL; policy_final minus base_final is what the acting
rule (OTF, best-of-N, a learned actor) adds over the base at the end. A table follows on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from expoft.bench.stats import load_bench_or_exit
from expoft.envs.run_env import make_run_env
from expoft.train.build import load_run_agent
from expoft.train.evaluate import evaluate, evaluation_seed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benches", nargs="+", type=Path, help="`expoft bench` folders (with the runs' checkpoints)")
    p.add_argument("--methods", nargs="*", default=None, help="only these methods (default: all with a base)")
    p.add_argument("--episodes", type=int, default=None, help="default: each run's own eval_episodes")
    args = p.parse_args()
    if args.episodes is not None and args.episodes < 1:
        p.error("--episodes must be >= 1")

    lines = []
    for bench_dir in args.benches:
        _, runs = load_bench_or_exit(bench_dir)
        for run in runs:
            if not run.finished or (args.methods is not None and run.method not in args.methods):
                continue
            if not list((run.run_dir / "checkpoints").glob("agent_*.npz")):
                print(f"skip {run.run_dir}: no checkpoints (an exported copy?)", file=sys.stderr)
                continue
            cfg, agent, env_step = load_run_agent(run.run_dir)  # loaded once: evaluate_run would load it again
            if not agent.has_base:
                continue
            episodes = args.episodes or cfg.eval_episodes
            result = evaluate(agent, make_run_env(cfg), episodes, evaluation_seed(cfg), policy="base")
            line = {
                "benchmark": "base-vs-policy",
                "bench": str(bench_dir),
                "method": run.method,
                "seed": run.seed,
                "env_step": env_step,
                "episodes": episodes,
                "base_before": run.finished_summary.get("bc_success"),
                "policy_before": run.finished_summary.get("success_before_rl"),
                "base_final": result["eval_base/success"],
                # the logged final evaluation is of this checkpoint only with the run's episode count
                "policy_final": run.finished_summary.get("final_success") if episodes == cfg.eval_episodes else None,
            }
            print(json.dumps(line), flush=True)
            lines.append(line)

    def fmt(x):
        return "–" if x is None else f"{x:.2f}"

    print("| bench | method | seed | base before | policy before | base final | policy final |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for r in lines:
        cells = [Path(r["bench"]).name, r["method"], str(r["seed"])]
        cells += [fmt(r[k]) for k in ("base_before", "policy_before", "base_final", "policy_final")]
        print("| " + " | ".join(cells) + " |", file=sys.stderr)


if __name__ == "__main__":
    main()

"""What the evaluations cost a run, and how much of that is the simulator: the measure behind
issue 35's first speed direction (evaluation episodes stepped in parallel, their actions chosen
in one jitted call per step), which can save at most the deciding part of the evaluations' share.
Run by hand, not CI.

    python benchmarks/eval_cost.py benchmarks/results/learn-p1-cube-single benchmarks/results/learn-p2-scene
    python benchmarks/eval_cost.py --profile RUN_DIR --episodes 10     # needs the run's checkpoint

Share (one JSON line per bench and method): from each run's metrics.jsonl, an evaluation's cost
is the wall time of the logging interval that holds it, less that interval's update and act time
(``time/update_s``, ``time/act_s``) and less the same remainder of the run's intervals without an
evaluation (env stepping and bookkeeping of training). Its median over the run's evaluations,
times their number, against the run's elapsed time; medians over seeds. Intervals that hold a
resume are left out. The evaluation before any online step (and the pretraining) is outside the
logged intervals: the share is that of the online phase.

Profile (one JSON line per policy): the run's checkpoint evaluated as in training (the agent's
own evaluation policy, then the base alone), the time inside the environment's ``step`` against
the whole; what is not the simulator is deciding (one jitted call per decision) and the wrappers.
Machine: whatever runs it; say whether other jobs shared the core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from expoft.bench.stats import load_bench_or_exit
from expoft.fileio import read_metrics


def _intervals(lines: list[dict]) -> tuple[list[float], list[float], float | None]:
    """Per logging interval, wall time not spent in updates or acting: ``(with an evaluation,
    without one, elapsed at the last log)``."""
    with_eval: list[float] = []
    without: list[float] = []
    last: float | None = None
    previous, saw_eval = None, False
    for line in lines:
        if "phase" in line:  # a resume or the offline phase: no interval spans it
            previous, saw_eval = None, False
            continue
        if "eval/success" in line:
            saw_eval = True
            continue
        if "time/elapsed_s" not in line:
            continue
        if previous is not None:
            rest = (line["time/elapsed_s"] - previous["time/elapsed_s"]) - (
                (line["time/update_s"] - previous["time/update_s"]) + (line["time/act_s"] - previous["time/act_s"])
            )
            (with_eval if saw_eval else without).append(rest)
        previous, saw_eval, last = line, False, line["time/elapsed_s"]
    return with_eval, without, last


def run_share(run_dir: Path) -> dict | None:
    """One run's evaluation cost: ``{"eval_s", "evals", "elapsed_s"}``, or None without the
    intervals to tell (no evaluation inside the online phase, or no plain interval)."""
    try:
        lines = read_metrics(run_dir)
    except ValueError as e:  # a damaged metrics.jsonl: its message says where
        raise SystemExit(str(e)) from None
    with_eval, without, last = _intervals(lines)
    if not with_eval or not without or last is None:
        return None
    cost = statistics.median(with_eval) - statistics.median(without)
    evals = sum(1 for line in lines if "eval/success" in line and line.get("env_step", 0) > 0)
    # the last evaluation follows the last log line: its time is not in time/elapsed_s yet
    return {"eval_s": cost, "evals": evals, "elapsed_s": last + cost}


def shares(bench_dir: Path) -> list[dict]:
    _, runs = load_bench_or_exit(bench_dir)
    by_method: dict[str, list[dict]] = {}
    for run in runs:
        has_metrics = (run.run_dir / "metrics.jsonl").exists()
        if run.finished and has_metrics and (share := run_share(run.run_dir)) is not None:
            by_method.setdefault(run.method, []).append(share)
    out = []
    for method, values in sorted(by_method.items()):
        eval_s = statistics.median(v["eval_s"] for v in values)
        evals = statistics.median(v["evals"] for v in values)
        elapsed = statistics.median(v["elapsed_s"] for v in values)
        out.append({"metric": "evaluation_share", "bench": bench_dir.name, "method": method, "runs": len(values),
                    "seconds_per_evaluation": round(eval_s, 1), "evaluations": evals,
                    "elapsed_min": round(elapsed / 60, 1), "share": round(eval_s * evals / elapsed, 3),
                    "what": "policy and base alone, 50 episodes each; medians over seeds"})  # fmt: skip
    return out


def profile(run_dir: Path, episodes: int, seed: int) -> list[dict]:
    from expoft.envs.run_env import make_run_env
    from expoft.train.build import load_run_agent
    from expoft.train.evaluate import evaluate

    cfg, agent, step = load_run_agent(run_dir, None)
    env = make_run_env(cfg)
    clock = {"s": 0.0, "steps": 0}
    step_env = env.step

    def timed_step(action):
        start = time.perf_counter()
        try:
            return step_env(action)
        finally:
            clock["s"] += time.perf_counter() - start
            clock["steps"] += 1

    env.step = timed_step
    evaluate(agent, env, 1, seed + 10_000)  # compile outside the timing
    out = []
    for policy in ("otf", "base"):
        clock.update(s=0.0, steps=0)
        start = time.perf_counter()
        evaluate(agent, env, episodes, seed, policy=policy)
        total = time.perf_counter() - start
        out.append({"metric": "evaluation_profile", "run": str(run_dir), "env_step": step, "policy": policy,
                    "episodes": episodes, "seconds": round(total, 2), "simulator_s": round(clock["s"], 2),
                    "simulator_share": round(clock["s"] / total, 3), "env_steps": clock["steps"],
                    "ms_per_env_step": round(1e3 * total / max(1, clock["steps"]), 3)})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benches", nargs="*", type=Path, help="bench folders or their exports")
    parser.add_argument("--profile", type=Path, help="a run folder with a checkpoint: time its evaluation")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per policy for --profile")
    parser.add_argument("--seed", type=int, default=10_000, help="first reset seed for --profile")
    args = parser.parse_args()
    if not args.benches and args.profile is None:
        parser.error("name bench folders, --profile RUN_DIR, or both")
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    lines = [line for bench in args.benches for line in shares(bench)]
    if args.benches and not lines:
        raise SystemExit("no finished run with evaluations inside its logged online phase in the benches named")
    if args.profile is not None:
        lines += profile(args.profile, args.episodes, args.seed)
    for line in lines:
        print(json.dumps(line))


if __name__ == "__main__":
    main()

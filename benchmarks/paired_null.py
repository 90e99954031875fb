"""How large is "policy - base alone" by chance? The null spread of the paired difference, read
from evaluations where the policy cannot know more than its base: the first evaluation (env step
0, before any online update) of critic-guided runs whose critic has not been trained, where the
argmax over candidates follows no learned preference. Policy and base alone are evaluated on the
same reset seeds with their own action noise, as at every later evaluation. Run by hand, not CI.

    python benchmarks/paired_null.py benchmarks/results/cache-p1-cube-single-exact \\
        benchmarks/results/p1-cube-single benchmarks/results/p1-cube-double --methods expo,expo-ft

One JSON line: the number of runs, the mean and standard deviation of their step-0 differences,
the standard deviation a mean over 3 seeds would have (sd / sqrt(3)) and each run's value.
Only runs without an offline phase qualify (protocol p1: the critic is untrained at step 0);
runs of a P2 bench are refused. Machine: whatever made the runs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from expoft.bench.stats import load_bench_or_exit
from expoft.report.compare import paired_curve


def step0_differences(bench_dir: Path, methods: set[str]) -> list[dict]:
    bench, runs = load_bench_or_exit(bench_dir)
    protocol = (bench.get("arguments") or {}).get("protocol")
    if protocol not in (None, "p1"):
        raise SystemExit(f"{bench_dir}: protocol {protocol}; only p1 runs have an untrained critic at step 0")
    out = []
    for run in runs:
        if run.method not in methods or not (run.run_dir / "metrics.jsonl").exists():
            continue
        first = next(iter(paired_curve(run.run_dir)), None)
        if first is None or first[0] != 0 or first[2] is None:
            continue
        out.append({"run": f"{bench_dir.name}/{run.method}/seed{run.seed}", "diff": round(first[1] - first[2], 4)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benches", nargs="+", type=Path, help="bench folders or their exports")
    parser.add_argument("--methods", default="expo,expo-ft", help="critic-guided methods (comma-separated)")
    args = parser.parse_args()
    methods = {m.strip() for m in args.methods.split(",") if m.strip()}
    values = [v for bench in args.benches for v in step0_differences(bench, methods)]
    if len(values) < 2:
        raise SystemExit(f"{len(values)} qualifying runs (step-0 evaluation of the policy and its base alone); need 2+")
    diffs = [v["diff"] for v in values]
    sd = statistics.stdev(diffs)
    print(json.dumps({"metric": "step0_policy_minus_base", "n": len(diffs), "mean": round(statistics.mean(diffs), 4),
                      "sd": round(sd, 4), "sd_of_3_seed_mean": round(sd / math.sqrt(3), 4),
                      "unit": "success", "what": "first evaluation, 50 episodes each, same reset seeds",
                      "runs": values}))  # fmt: skip


if __name__ == "__main__":
    main()

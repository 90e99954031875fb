"""One table of the fix screens (benchmarks/learn_screens.sh). Run by hand, not by CI.

    python benchmarks/screens.py benchmarks/results/screen-p1-*  benchmarks/results/x-scene-expo-chunked

Each argument is a bench folder (runs/<name> or its export); every finished run in it gives one
JSON line per evaluation on stdout (``screen``, ``method``, ``seed``, ``env_step`` (nominal: its
place on the evaluation grid), ``success``, ``base_success``, ``policy_minus_base`` (paired on the
same reset seeds), ``first_q``, ``first_return``, ``q_return_corr``, ``not_first_frac``,
``q_spread``, ``q_member_std``, ``cpu_minutes``), then a markdown table on stderr: success at every
evaluation, the base alone at the last one, policy - base there and its mean over the evaluations
after RL started (each paired on the same reset seeds; one seed's figure with about 1/sqrt(5) of
one evaluation's noise where the evaluations' errors are independent, roughly so here), the
critic's calibration (Q of the evaluation episodes' first decisions vs their discounted return) and
whether it tells the candidates apart (the spread of the ensemble's mean Q over the candidates
against its members' disagreement; null for runs made before 2026-12-06) at the last evaluation.
Seeds and budget are those of the benches (see their bench.json); the machine is the one they ran
on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from expoft.bench.stats import load_bench_or_exit

FIELDS = (
    "success", "base_success", "policy_minus_base", "first_q", "first_return", "q_return_corr", "not_first_frac",
    "q_spread", "q_member_std",
)  # fmt: skip


def _fmt(x, spec: str = ".2f") -> str:
    # rounded first, and + 0.0 turns -0.0 into 0.0: a mean of +-0.02s is not shown as "-0.000"
    return "–" if x is None else format(round(x, 6) + 0.0, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    lines = [
        "| screen | method | seed | success before RL -> each evaluation | base alone (last) | policy − base (last) "
        "| policy − base (mean after RL) | Q / return (r) (last) | Q spread / member std (last) | not-first (last) "
        "| CPU min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for folder in args.folders:
        if not (folder / "runs").is_dir():
            sys.exit(f"{folder} is not a bench folder (no runs/ in it)")
        runs = load_bench_or_exit(folder)[1]
        for run in runs:
            if not run.finished:
                continue
            if not run.evaluations:
                print(f"skip {run.run_dir}: its summary.json holds no evaluation", file=sys.stderr)
                continue
            method, seed, evals = run.method, run.seed, run.evaluations
            cpu = run.finished_summary.get("cpu_seconds")
            for e in evals:
                row = {"screen": folder.name, "method": method, "seed": seed, "env_step": e["env_step"]}
                row.update({k: e.get(k) for k in FIELDS})
                row["cpu_minutes"] = None if e.get("cpu_seconds") is None else round(e["cpu_seconds"] / 60, 1)
                print(json.dumps(row))
            last = evals[-1]
            curve = " / ".join(_fmt(e["success"]) for e in evals)
            calib = "–"
            if last.get("first_q") is not None:
                calib = f"{last['first_q']:.2f} / {last['first_return']:.2f} ({_fmt(last.get('q_return_corr'))})"
            spread = "–"
            if last.get("q_spread") is not None:
                spread = f"{last['q_spread']:.3f} / {last['q_member_std']:.3f}"
            lines.append(
                f"| {folder.name} | {method} | {seed} | {curve} | {_fmt(last.get('base_success'))} | "
                f"{_fmt(last.get('policy_minus_base'), '+.2f')} | {_fmt(run.gain_after_rl, '+.3f')} | {calib} | "
                f"{spread} | {_fmt(last.get('not_first_frac'))} | {_fmt(None if cpu is None else cpu / 60, '.1f')} |"
            )
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()

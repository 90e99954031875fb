"""Where the gain comes from: each run's policy against its own base alone, evaluated on the same
reset seeds at every evaluation (issue "EXPO that learns"). Run by hand, not by CI.

    python benchmarks/policy_vs_base.py \\
        "P2 scene, chunked EXPO=benchmarks/results/screen-p2-targets-3seeds:expo" \\
        "P1 cube-single, EXPO-FT=benchmarks/results/cache-p1-cube-single-exact:expo-ft" \\
        --plot docs/results/policy-vs-base.png

Each argument is ``LABEL=BENCH_DIR:METHOD`` (a bench folder, or its export; finished runs only).
One JSON line per label and figure: the last evaluation's ``policy``, ``base_alone`` and
``policy_minus_base`` as the bench table has them (``expoft.bench.stats.method_stats``: mean over
seeds, 95% Student-t interval over seeds), with the seeds and their env steps. With ``--plot``,
one panel per label: the policy (solid) and its base alone (dashed), the mean over seeds thick and
each seed thin, evaluations put on their nominal grid (chunked runs evaluate a few steps late);
`expoft bench` draws the same for each method of a bench (report/policy_vs_base.png).
Machine: whatever made the runs (their own folders say).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from expoft.bench.stats import RunRecord, load_bench, method_stats
from expoft.report.compare import plot_policy_vs_base


def parse_group(text: str) -> tuple[str, list[RunRecord]]:
    """``LABEL=BENCH_DIR:METHOD`` -> (label, the method's finished runs)."""
    label, sep, where = text.rpartition("=")
    folder, colon, method = where.rpartition(":")
    if not sep or not colon or not label or not method:
        raise SystemExit(f"expected LABEL=BENCH_DIR:METHOD, got {text!r}")
    try:
        _, runs = load_bench(folder)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"{text!r}: {e}") from None
    done = [r for r in runs if r.method == method and r.finished]
    if not done:
        raise SystemExit(f"{text!r}: no finished runs (summary.json) of {method!r} in {folder}")
    return label, done


def last_figures(label: str, runs: list[RunRecord]) -> list[dict]:
    """The bench table's own figures (``method_stats``) of the last evaluation."""
    stats = method_stats(runs)
    out = []
    for metric, key in (("policy", "final_success"), ("base_alone", "final_base_success"),
                        ("policy_minus_base", "policy_minus_base")):  # fmt: skip
        figure = stats.get(key)
        if figure is None:  # runs from before the base alone was evaluated
            continue
        ci = None if figure["low"] is None else [round(figure["low"], 4), round(figure["high"], 4)]
        out.append({"metric": metric, "value": round(figure["mean"], 4), "unit": "success", "group": label,
                    "ci95_over_seeds": ci, "n": figure["n"], "seeds": stats["seeds"],
                    "env_steps": [r.finished_summary.get("env_steps") for r in runs],
                    "what": "last evaluation, 50 episodes each, the base alone on the same reset seeds"})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="+", help="LABEL=BENCH_DIR:METHOD")
    parser.add_argument("--plot", type=Path, help="PNG with one panel per group")
    args = parser.parse_args()
    groups = [parse_group(g) for g in args.groups]
    for label, runs in groups:
        for figure in last_figures(label, runs):
            print(json.dumps(figure))
    if args.plot is not None:
        plot_policy_vs_base({label: [r.run_dir for r in runs] for label, runs in groups}, args.plot)


if __name__ == "__main__":
    main()

"""Where the gain comes from: each run's policy against its own base alone, evaluated on the same
reset seeds at every evaluation (issue "EXPO that learns"). Run by hand, not by CI.

    python benchmarks/policy_vs_base.py \\
        "P2 scene, chunked EXPO=benchmarks/results/screen-p2-targets-3seeds:expo" \\
        "P1 cube-single, EXPO-FT=benchmarks/results/cache-p1-cube-single-exact:expo-ft" \\
        --plot docs/results/policy-vs-base.png

Each argument is ``LABEL=BENCH_DIR:METHOD`` (a bench folder, or its export: the runs under
``BENCH_DIR/runs/METHOD/seed*/``; finished runs only). One JSON line per label and figure: the last evaluation's
``policy``, ``base_alone`` and ``policy_minus_base`` (mean over the seeds that evaluated their base
alone there, with the 95% Student-t interval over seeds, clipped), with the seeds and their env steps. With
``--plot``, one panel per label: the policy (solid) and its base alone (dashed), the mean over
seeds thick and each seed thin, evaluations put on their nominal grid (chunked runs evaluate a few
steps late); `expoft bench` draws the same for each method of a bench (report/policy_vs_base.png).
Machine: whatever made the runs (their own folders say).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from expoft.bench.stats import t_interval
from expoft.report.compare import paired_curve, plot_policy_vs_base


def parse_group(text: str) -> tuple[str, list[Path]]:
    label, sep, where = text.rpartition("=")
    folder, colon, method = where.rpartition(":")
    if not sep or not colon or not label or not method:
        raise SystemExit(f"expected LABEL=BENCH_DIR:METHOD, got {text!r}")
    runs = sorted(p for p in (Path(folder) / "runs" / method).glob("seed*") if (p / "summary.json").exists())
    if not runs:
        raise SystemExit(f"{text!r}: no finished runs (summary.json) under {Path(folder) / 'runs' / method}")
    return label, runs


def last_figures(label: str, runs: list[Path]) -> list[dict]:
    lasts = [curve[-1] for curve in map(paired_curve, runs) if curve]
    paired = [(p, b) for _, p, b in lasts if b is not None]
    out = []
    for metric, values, bounds in (
        ("policy", [p for p, _ in paired], (0.0, 1.0)),
        ("base_alone", [b for _, b in paired], (0.0, 1.0)),
        ("policy_minus_base", [p - b for p, b in paired], (-1.0, 1.0)),
    ):
        mean, low, high = t_interval(values) if values else (math.nan, None, None)
        ci = None if low is None or high is None else [round(float(np.clip(x, *bounds)), 4) for x in (low, high)]
        out.append({"metric": metric, "value": round(mean, 4), "unit": "success", "group": label,
                    "ci95_over_seeds": ci,
                    "seeds": [r.name for r in runs], "env_steps": [s for s, _, _ in lasts],
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
        plot_policy_vs_base(dict(groups), args.plot)


if __name__ == "__main__":
    main()

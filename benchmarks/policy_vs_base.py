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
steps late). Machine: whatever made the runs (their own folders say).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from expoft.bench.stats import t_interval
from expoft.fileio import read_metrics
from expoft.report.steps import nominal_step, run_grid


def paired_curves(run_dir: Path) -> list[tuple[int, float, float | None]]:
    """(nominal env step, policy success, base-alone success or None) of every evaluation."""
    every, total, chunk = run_grid(run_dir)
    return [
        (nominal_step(int(r["env_step"]), every, total, chunk), r["eval/success"], r.get("eval_base/success"))
        for r in read_metrics(run_dir)
        if "eval/success" in r
    ]


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
    lasts = [curve[-1] for curve in map(paired_curves, runs) if curve]
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


def plot(groups: list[tuple[str, list[Path]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, (label, runs) in zip(axes[0], groups, strict=True):
        curves = [paired_curves(r) for r in runs]
        for color, index, name in (("C0", 1, "policy"), ("C1", 2, "base alone")):
            style = "-" if index == 1 else "--"
            for curve in curves:
                pts = [(c[0], c[index]) for c in curve if c[index] is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, color=color, alpha=0.3, linewidth=0.8)
            steps = sorted({c[0] for curve in curves for c in curve if c[index] is not None})
            means = [np.mean([c[index] for curve in curves for c in curve if c[0] == s and c[index] is not None])
                     for s in steps]  # fmt: skip
            ax.plot(steps, means, style, color=color, linewidth=2.2, marker="o", markersize=3,
                    label=f"{name} (mean of {len(runs)})")  # fmt: skip
        ax.set_title(label, fontsize="medium")
        ax.set_xlabel("environment steps")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    axes[0][0].set_ylabel("success rate (50 episodes)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


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
        plot(groups, args.plot)


if __name__ == "__main__":
    main()

"""How much room the base leaves, and how much of it the critic-guided choice takes: every run that
evaluated its base alone, as policy - base against base alone. Run by hand, not by CI.

    python benchmarks/room.py --plot docs/results/room.png                 # every export in benchmarks/results
    python benchmarks/room.py benchmarks/results/learn-p1-* --plot /tmp/room.png

The policy cannot gain more over its base than the base leaves: policy - base <= 1 - base (the
dashed line of the plot). A base that succeeds in 0.8 of the episodes leaves 0.2, and the issue's
+0.10 asks the choice to fix half of its failures; a base at 0.05 (P2 scene) leaves 0.95. One JSON
line per run (``grid``, ``method``, ``seed``, the last evaluation's ``base`` and ``gain`` =
policy - base, their means over the evaluations after env step 0, ``base_after_rl`` and
``gain_after_rl``, and ``fixed_after_rl`` = gain / (1 - base), the share of the base's failures
the choice turned into successes), then one with the correlation of gain and base over the runs.
Runs of the bc method (the base is the policy) are left out, and a run copied into another grid
(the learn grids' expo-ft runs are the cache grids') is counted once, and a run continued by
`expoft extend` not at all (its source is). Seeds, budgets and machine: the
benches' own (their bench.json and runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from expoft.bench.stats import load_bench_or_exit


def paired_runs(folder: Path) -> list[dict]:
    """The finished runs of a bench folder whose evaluations include the base alone after RL."""
    rows = []
    bench, runs = load_bench_or_exit(folder)
    arguments = bench.get("arguments", {})
    for run in runs:
        if not run.finished or run.method == "bc" or run.extension is not None:
            continue  # an extension (expoft extend) continues a run counted in its own grid
        after, gain = run.paired_after_rl, run.gain_after_rl
        if gain is None:
            continue
        base = float(np.mean([e["base_success"] for e in after]))
        config = run.run_dir / "config.json"
        env = arguments.get("env") or (json.loads(config.read_text()).get("env") if config.exists() else "?")
        rows.append({
            "grid": folder.name, "task": f"{arguments.get('protocol', '?').upper()} {env}", "method": run.method,
            "seed": run.seed,
            "base": after[-1]["base_success"], "gain": round(after[-1]["success"] - after[-1]["base_success"], 4),
            "base_after_rl": round(base, 4), "gain_after_rl": round(gain, 4),
            "fixed_after_rl": round(gain / (1.0 - base), 4) if base < 1.0 else None,
            "evaluations": run.evaluations,
        })  # fmt: skip
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:  # one colour per task, one marker per method
        groups.setdefault((row["task"], row["method"]), []).append(row)
    colours = {task: f"C{i}" for i, task in enumerate(sorted({r["task"] for r in rows}))}
    markers = dict(zip(sorted({r["method"] for r in rows}), "o^sDvP*X", strict=False))
    for (task, method), members in sorted(groups.items()):
        x, y = [r["base_after_rl"] for r in members], [r["gain_after_rl"] for r in members]
        label = f"{task}, {method} ({len(members)})"
        ax.scatter(x, y, s=24, c=colours[task], marker=markers.get(method, "o"), label=label)
    line = np.linspace(0, 1, 11)
    ax.plot(line, 1 - line, "k--", lw=1, label="ceiling: 1 - base")
    ax.axhline(0.10, color="grey", lw=0.8, ls=":", label="+0.10 (issue 35)")
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set(xlabel="base alone (mean over evaluations after RL)", ylabel="policy - base (same reset seeds)",
           xlim=(-0.02, 1.02), ylim=(-0.25, 1.02), title="The room the base leaves, and the choice's gain")  # fmt: skip
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benches", nargs="*", type=Path, help="bench folders (default: benchmarks/results/*)")
    parser.add_argument("--plot", type=Path, default=None, help="scatter of gain against base alone (PNG)")
    args = parser.parse_args()
    folders = args.benches or sorted(p.parent for p in Path("benchmarks/results").glob("*/runs"))
    rows, seen = [], set()
    for folder in folders:
        try:
            folder_rows = paired_runs(folder)
        except ValueError as e:  # a damaged run file: its path and what to do
            raise SystemExit(str(e)) from None
        for row in folder_rows:
            key = json.dumps(row["evaluations"])  # a run copied into another grid (learn-* from cache-*) once
            if key not in seen:
                seen.add(key)
                rows.append({k: v for k, v in row.items() if k != "evaluations"})
    if not rows:
        raise SystemExit("no finished run with its base alone evaluated after RL in the folders given")
    for row in rows:
        print(json.dumps(row))
    base = np.array([r["base_after_rl"] for r in rows])
    gain = np.array([r["gain_after_rl"] for r in rows])
    corr = float(np.corrcoef(base, gain)[0, 1]) if len(rows) > 2 else None
    print(json.dumps({"runs": len(rows), "corr_gain_base_after_rl": None if corr is None else round(corr, 3)}))
    if args.plot is not None:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()

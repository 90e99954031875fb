"""Learning benchmark (protocol P1): success against environment steps, variants x seeds.

    python benchmarks/learning.py --out runs/bench-p1 --seeds 0 1 2
    python benchmarks/learning.py --variants fast published --env-steps 2000 --seeds 0
    python benchmarks/learning.py --variants expo expo-ft expo-ft-intervene --env cube-double

Each (variant, seed) is one `expoft finetune` process writing its run folder under
``OUT/VARIANT/seedS``; finished runs (with ``summary.json``) are skipped, so an interrupted
benchmark resumes. Afterwards every evaluation prints one JSON line
``{"benchmark": "p1", "variant", "seed", "env_step", "success", "ci_low", "ci_high"}`` and every
run one summary line (``bc_success``, ``final_success``, ``env_steps_to_95``, ``wall_seconds``,
``critic_steps_per_s``); ``OUT/learning_curves.png`` shows the mean over seeds per variant.
Run by hand, not by CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

# A variant = a preset plus flags; all share the run's data, budget and evaluation settings.
VARIANTS: dict[str, list[str]] = {
    "fast": ["--preset", "demo"],
    "published": ["--preset", "demo", "--target-flow-steps", "10", "--target-pool-size", "None",
                  "--no-targets-per-call"],
    "expo": ["--preset", "p1"],
    "expo-ft": ["--preset", "p1", "--chunk-len", "5", "--exec-len", "5", "--base-training", "successes"],
    "expo-ft-intervene": ["--preset", "p1", "--chunk-len", "5", "--exec-len", "5",
                          "--base-training", "successes", "--intervene", "scripted"],
}  # fmt: skip


def run_one(variant: str, seed: int, out: Path, extra: list[str]) -> Path:
    run_dir = out / variant / f"seed{seed}"
    if (run_dir / "summary.json").exists():
        return run_dir
    cmd = [sys.executable, "-m", "expoft.cli", "finetune", *VARIANTS[variant], "--seed", str(seed)]
    cmd += ["--out", str(run_dir), "--no-progress", "--overwrite", *extra]
    print(" ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=sys.stderr)  # stdout carries only this benchmark's JSON lines
    return run_dir


def report(out: Path, runs: dict[tuple[str, int], Path]) -> None:
    from expoft.report.plots import eval_curve, plot_mean_curves

    for (variant, seed), run_dir in runs.items():
        curve = eval_curve(run_dir)
        for i, step in enumerate(curve["env_step"]):
            row = {"benchmark": "p1", "variant": variant, "seed": seed, "env_step": step}
            row.update({"success": curve["success"][i], "ci_low": curve["low"][i], "ci_high": curve["high"][i]})
            print(json.dumps(row))
        summary = json.loads((run_dir / "summary.json").read_text())
        keys = ("bc_success", "final_success", "env_steps", "env_steps_to_95", "wall_seconds", "critic_steps_per_s")
        print(json.dumps({"benchmark": "p1-run", "variant": variant, "seed": seed, **{k: summary[k] for k in keys}}))
    by_variant: dict[str, list[Path]] = {}
    for (variant, _), run_dir in runs.items():
        by_variant.setdefault(variant, []).append(run_dir)
    plot_mean_curves(by_variant, out / "learning_curves.png", title="success vs environment steps (mean, min-max)")
    finals = {v: float(np.mean([json.loads((d / "summary.json").read_text())["final_success"] for d in ds]))
              for v, ds in by_variant.items()}  # fmt: skip
    print(json.dumps({"benchmark": "p1-mean-final", **finals}), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["fast"], choices=sorted(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-p1"))
    parser.add_argument("--env", default="cube-single")
    parser.add_argument("--task", type=int, default=1)
    parser.add_argument("--env-steps", type=int, default=None, help="override the preset's budget")
    parser.add_argument("--report-only", action="store_true", help="re-render from finished runs")
    args, extra = parser.parse_known_args()
    extra += ["--env", args.env, "--task", str(args.task)]
    if args.env_steps is not None:
        extra += ["--env-steps", str(args.env_steps)]
    runs = {}
    for variant in args.variants:
        for seed in args.seeds:
            if args.report_only:
                runs[(variant, seed)] = args.out / variant / f"seed{seed}"
            else:
                runs[(variant, seed)] = run_one(variant, seed, args.out, extra)
    report(args.out, runs)


if __name__ == "__main__":
    main()

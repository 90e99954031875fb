"""Figures of the robot-runtime acceptance runs (benchmarks/robot_runs.sh): one JSON line per run,
then one per arm (mean over its seeds), and plots.

    python benchmarks/robot_report.py RUNS/robot-demo --plot docs/results/robot-arms.png

A run line: the success at every evaluation (OTF, and the base alone where evaluated), the final
success and its base alone, the share of training steps a person (real or simulated) drove, the
learned detector's disagreements with the simulator where a detector decided success, and the
actor's act latency p50/p99 and longest stall (actor.json, learner-actor arms). Machine and
seeds are the runs' own (config.json); this script only reads.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from expoft.fileio import read_metrics
from expoft.report.plots import plot_learning_curves, plot_mean_curves


def run_line(arm: str, run: Path) -> dict:
    rows = read_metrics(run)
    evals = [r for r in rows if "eval/success" in r]
    train = [r for r in rows if "train/episodes" in r]
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    config = json.loads((run / "config.json").read_text())
    line = {
        "arm": arm, "run": str(run), "seed": config["seed"],
        "finished": bool(summary), "env_step": evals[-1]["env_step"] if evals else 0,
        "success": {r["env_step"]: r["eval/success"] for r in evals},
        "base_success": {r["env_step"]: r["eval_base/success"] for r in evals if "eval_base/success" in r},
        "final_success": summary.get("final_success"), "final_base_success": summary.get("final_base_success"),
    }  # fmt: skip
    if train:
        last = train[-1]
        steps = max(1, last["env_step"])
        line["intervened_step_share"] = round(last.get("train/intervened_steps", 0) / steps, 4)
        line["episodes_with_intervention"] = last.get("train/episodes_with_intervention")
        line["train_episodes"] = last["train/episodes"]
        line["train_success_rate"] = round(last["train/success_rate"], 4)
        # the share of each 1k env steps' episodes a person took over, for the curve
        line["intervention_rate"] = {r["env_step"]: r.get("train/intervention_rate") for r in train}
        if config.get("success_detector") is not None:
            line["detector_false_success"] = last["train/detector_false_success"]
            line["detector_missed"] = last["train/detector_missed"]
    if (run / "actor.json").exists():
        line["actor"] = json.loads((run / "actor.json").read_text())
    return line


def arm_line(arm: str, lines: list[dict]) -> dict:
    done = [x for x in lines if x["finished"]]
    out: dict[str, Any] = {
        "arm": arm,
        "seeds": [x["seed"] for x in done],
        "unfinished": [x["seed"] for x in lines if not x["finished"]],
    }
    if done:
        finals = np.array([x["final_success"] for x in done], float)
        out["final_success_mean"] = round(float(finals.mean()), 3)
        out["final_success"] = finals.tolist()
        bases = [x["final_base_success"] for x in done if x["final_base_success"] is not None]
        if len(bases) == len(done):
            out["policy_minus_base_mean"] = round(float(np.mean(finals - np.array(bases))), 3)
        actors = [x["actor"] for x in done if "actor" in x]
        if actors:
            out["act_latency_p50_ms"] = [a["act_latency_p50_ms"] for a in actors]
            out["act_latency_p99_ms"] = [a["act_latency_p99_ms"] for a in actors]
            out["longest_stall_ms"] = [a["longest_stall_ms"] for a in actors]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="RUNS/robot-<preset>: one folder per arm, seed<S> in each")
    parser.add_argument("--plot", type=Path, help="success against env steps per arm (mean over seeds)")
    parser.add_argument("--plot-runs", type=Path, help="one curve per run (e.g. the keys and scripted arms)")
    parser.add_argument("--plot-interventions", type=Path, help="share of recent episodes' steps a person drove")
    parser.add_argument("--arms", nargs="*", help="only these arms")
    args = parser.parse_args()
    groups: dict[str, list[Path]] = {}
    for arm_dir in sorted(p for p in args.root.iterdir() if p.is_dir()):
        if args.arms and arm_dir.name not in args.arms:
            continue
        runs = sorted(p for p in arm_dir.glob("seed*") if p.is_dir() and (p / "config.json").exists())
        lines = [run_line(arm_dir.name, run) for run in runs]
        for line in lines:
            print(json.dumps(line))
        print(json.dumps({**arm_line(arm_dir.name, lines), "machine": f"{platform.machine()} {platform.node()}"}))
        groups[arm_dir.name] = [run for run, x in zip(runs, lines, strict=True) if x["finished"]]
    if args.plot:
        plot_mean_curves({arm: runs for arm, runs in groups.items() if runs}, args.plot,
                         title=f"{args.root.name}: success (mean over seeds)")  # fmt: skip
    if args.plot_runs:
        labelled: dict[str, str | Path] = {
            f"{arm} seed{json.loads((r / 'config.json').read_text())['seed']}": r
            for arm, rs in groups.items()
            for r in rs
        }
        plot_learning_curves(labelled, args.plot_runs, title=f"{args.root.name}: success per run")
    if args.plot_interventions:
        plot_interventions(groups, args.plot_interventions)


def plot_interventions(groups: dict[str, list[Path]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for arm, runs in groups.items():
        for run in runs:
            rows = [r for r in read_metrics(run) if "train/intervention_rate" in r]
            seed = json.loads((run / "config.json").read_text())["seed"]
            ax.plot(
                [r["env_step"] for r in rows], [r["train/intervention_rate"] for r in rows], label=f"{arm} seed{seed}"
            )
    ax.set_xlabel("environment steps")
    ax.set_ylabel("steps driven by the person\n(mean over the last 20 episodes)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

"""How long P2's offline phase should be: success against offline RL update calls.

    python benchmarks/offline_phase.py --method qc --env cube-double --calls 0 250 500 1000

Builds the agent of one P2 run (the `p1` preset changed by the method; the play data of
`expoft bench --protocol p2`, labelled for the task, generated if missing), pretrains its base
as the run would, then takes the offline phase in parts, evaluating after each. The parts are
one phase (one sampling RNG, calls numbered on), so the figure at N calls is what a run with
`--offline-updates N` starts its online phase from. One JSON line per evaluation:
{"benchmark": "offline-phase", "method", "env", "task", "seed", "offline_calls", "success",
"return", "base_success", "base_return", "critic_loss", "q_mean", "cpu_s"} (returns: mean
undiscounted, under the run's reward). Run by hand, not by CI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import time
from pathlib import Path

from expoft.bench.plan import play_steps
from expoft.bench.protocols import PROTOCOLS, with_domain_reward
from expoft.envs.ogbench_domains import get_domain
from expoft.envs.run_env import make_run_env
from expoft.fileio import read_metrics
from expoft.train.build import make_agent, offline_data
from expoft.train.config import preset
from expoft.train.evaluate import evaluate, evaluation_seed
from expoft.train.finetune import run_buffer
from expoft.train.imitation import pretrain_base
from expoft.train.methods import apply_method
from expoft.train.offline_rl import OfflinePoint, offline_phase
from expoft.train.rundir import RunDir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="qc")
    p.add_argument("--env", default="cube-double")
    p.add_argument("--task", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calls", type=int, nargs="+", default=[0, 250, 500, 1000], help="evaluate after these")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--play-transitions", type=int, default=None, help="default: reduced P2's")
    p.add_argument("--pretrain-steps", type=int, default=None, help="default: reduced P2's")
    p.add_argument("--out", type=Path, default=Path("runs/offline-phase"))
    args = p.parse_args()
    if sorted(set(args.calls)) != args.calls or args.calls[0] < 0:
        p.error("--calls must be increasing and >= 0")

    proto = with_domain_reward(PROTOCOLS["p2"], get_domain(args.env))  # the reward P2's runs get
    if args.play_transitions is not None:
        proto = dataclasses.replace(proto, play_transitions=args.play_transitions)
    steps, dataset = play_steps(proto, args.env, args.task, jobs=1)
    for step in steps:
        if not step.path.exists():
            subprocess.run(step.argv, check=True)
    cfg = apply_method(args.method, preset(proto.preset))
    cfg = dataclasses.replace(cfg, env=args.env, task=args.task, seed=args.seed, dataset=dataset)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in proto.overrides.items() if hasattr(cfg, k)})
    cfg = dataclasses.replace(cfg, eval_episodes=args.eval_episodes)
    if args.pretrain_steps is not None:
        cfg = dataclasses.replace(cfg, pretrain_steps=args.pretrain_steps)
    cfg = dataclasses.replace(cfg, offline_updates=max(args.calls[-1], 1))  # the whole phase, taken in parts

    out = args.out / f"{args.method}-{args.env}-task{args.task}-seed{args.seed}"
    run = RunDir(out, cfg, overwrite=True)
    ds = offline_data(cfg, progress=False)
    agent = make_agent(cfg)
    t0 = time.process_time()
    agent, _ = pretrain_base(agent, ds, cfg.pretrain_steps, cfg.seed, progress=False)
    buffer = run_buffer(cfg, ds, None)
    env = make_run_env(cfg)
    point = OfflinePoint.start(cfg)

    def reached(_agent, at: OfflinePoint) -> None:
        nonlocal point
        point = at

    base = evaluate(agent, env, cfg.eval_episodes, evaluation_seed(cfg), policy="base")
    for target in args.calls:
        if target > point.done:
            agent = offline_phase(cfg, run, agent, buffer, progress=False, start=point, stop=target, on_row=reached)
        result = evaluate(agent, env, cfg.eval_episodes, evaluation_seed(cfg))
        rows = read_metrics(out)
        last = ([r for r in rows if r.get("phase") == "offline"] or [{}])[-1]
        row = {"benchmark": "offline-phase", "method": args.method, "env": args.env, "task": args.task,
               "seed": args.seed, "offline_calls": point.done, "success": result["eval/success"],
               "return": result["eval/return"], "base_success": base["eval_base/success"],
               "base_return": base["eval_base/return"],
               "critic_loss": last.get("offline/critic/loss"), "q_mean": last.get("offline/critic/q_mean"),
               "cpu_s": round(time.process_time() - t0, 1)}  # fmt: skip
        print(json.dumps(row), flush=True)
    run.close()


if __name__ == "__main__":
    main()

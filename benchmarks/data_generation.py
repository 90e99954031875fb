"""Data generation: wall time and oracle success rates. Run by hand, not by CI.

    python benchmarks/data_generation.py                      # everything below, defaults
    python benchmarks/data_generation.py --episodes-per-task 10 --play-transitions 0

Prints one JSON line per figure, then a table:
- wall time for 30 cube-single task-1 demonstrations (1 worker and 2 workers);
- wall time for ``--play-transitions`` cube-double play transitions (2 workers);
- the directed oracle's success rate on every task of every domain
  (``--episodes-per-task`` episodes each, default noise).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from expoft.data.generate import DemosConfig, PlayConfig, generate
from expoft.envs.ogbench_domains import DOMAINS


def emit(rows: list[dict], **row) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def timed(cfg, workers: int):
    start = time.perf_counter()
    ds = generate(cfg, workers=workers, progress=False)
    return ds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes-per-task", type=int, default=20)
    parser.add_argument("--play-transitions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows: list[dict] = []

    for workers in (1, 2):
        ds, secs = timed(DemosConfig(env="cube-single", task=1, episodes=30, seed=args.seed), workers)
        emit(
            rows,
            figure="demos_wall_s",
            env="cube-single",
            task=1,
            episodes=30,
            workers=workers,
            seconds=round(secs, 2),
            transitions=ds.num_transitions,
            success=float(ds.episode_success.mean()),
        )

    if args.play_transitions:
        play = PlayConfig(env="cube-double", transitions=args.play_transitions, seed=args.seed)
        ds, secs = timed(play, workers=2)
        emit(
            rows,
            figure="play_wall_s",
            env="cube-double",
            transitions=ds.num_transitions,
            workers=2,
            seconds=round(secs, 2),
            transitions_per_s=round(ds.num_transitions / secs),
        )

    for name in DOMAINS:
        rates = []
        for task in range(1, 6):
            cfg = DemosConfig(env=name, task=task, episodes=args.episodes_per_task, seed=args.seed)
            ds, secs = timed(cfg, workers=2)
            rate = float(ds.episode_success.mean())
            rates.append(rate)
            emit(
                rows,
                figure="oracle_success",
                env=name,
                task=task,
                episodes=args.episodes_per_task,
                success=rate,
                mean_episode_steps=round(ds.num_transitions / ds.num_episodes, 1),
                seconds=round(secs, 2),
            )
        emit(rows, figure="oracle_success_mean", env=name, success=round(sum(rates) / len(rates), 3))

    print("\nfigure               env           task  value")
    for r in rows:
        value = r.get("seconds") if r["figure"].endswith("_s") else r.get("success")
        print(f"{r['figure']:<20} {r.get('env', ''):<13} {r.get('task', ''):<5} {value}")


if __name__ == "__main__":
    main()

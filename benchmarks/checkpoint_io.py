"""Checkpoint size and save time for online replay buffers of 100k and 1M transitions.

A checkpoint writes the agent (default EXPO config: parameters, optimiser states) and the replay
transitions added since the previous checkpoint. Measured per buffer size N:

- ``first_save_s`` / ``first_save_mb``: a checkpoint when all N transitions are new (the worst
  case: checkpoint_every >= N);
- ``next_save_s`` / ``next_save_mb``: the following checkpoint after 1,000 more env steps (the
  usual case: saving costs what was added, not what is held);
- ``restore_s``: finding the newest valid checkpoint (sha256 of every part) and rebuilding the
  agent and the buffer from it.

One JSON line per figure: ``{"metric", "value", "unit", "transitions", "obs_dim"}``; the
median of ``--repeats`` runs. Run by hand: ``python benchmarks/checkpoint_io.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from expoft.agents.expo import EXPOAgent, EXPOConfig
from expoft.data.replay import ReplayBuffer
from expoft.train.checkpoint import CheckpointStore
from expoft.train.config import RunConfig


def synthetic_segment(start: int, n: int, obs_dim: int, action_dim: int, rng) -> dict[str, np.ndarray]:
    ends = np.zeros(n, bool)
    ends[99::100] = True  # 100-step episodes
    return {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "next_observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, action_dim)).astype(np.float32),
        "rewards": np.zeros(n, np.float32),
        "terminals": np.zeros(n, bool),
        "episode_ends": ends,
        "successful": np.zeros(n, bool),
        "intervened": np.zeros(n, bool),
        "start": np.int64(start),
        "end": np.int64(start + n),
    }


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def measure(n: int, obs_dim: int, action_dim: int, repeats: int, root: Path) -> dict[str, float]:
    rng = np.random.default_rng(0)
    agent = EXPOAgent.create(RunConfig().agent, EXPOConfig(), obs_dim, action_dim, seed=0)
    figures: dict[str, list[float]] = {}
    for r in range(repeats):
        directory = root / f"run{r}"
        buffer = ReplayBuffer(obs_dim, action_dim, capacity=max(n, 1_000_000))
        buffer.restore_segment(synthetic_segment(0, n, obs_dim, action_dim, rng))
        store = CheckpointStore(directory, keep=3)
        t0 = time.perf_counter()
        store.save(n, agent, buffer, {})
        figures.setdefault("first_save_s", []).append(time.perf_counter() - t0)
        figures.setdefault("first_save_mb", []).append(folder_mb(directory))
        buffer.restore_segment(synthetic_segment(n, 1_000, obs_dim, action_dim, rng))
        before = folder_mb(directory)
        t0 = time.perf_counter()
        store.save(n + 1_000, agent, buffer, {})
        figures.setdefault("next_save_s", []).append(time.perf_counter() - t0)
        figures.setdefault("next_save_mb", []).append(folder_mb(directory) - before)
        t0 = time.perf_counter()
        record = store.latest_valid()
        assert record is not None, "the checkpoint just saved is valid"
        store.restore(record, agent, ReplayBuffer(obs_dim, action_dim, capacity=max(n, 1_000_000)))
        figures.setdefault("restore_s", []).append(time.perf_counter() - t0)
        shutil.rmtree(directory)
    return {k: float(np.median(v)) for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--obs-dim", type=int, default=37, help="37: cube-double")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(dir=args.dir, prefix="expoft-ckpt-"))
    try:
        for n in args.sizes:
            for metric, value in measure(n, args.obs_dim, 5, args.repeats, root).items():
                unit = "s" if metric.endswith("_s") else "MiB"
                line = {"metric": metric, "value": round(value, 3), "unit": unit, "transitions": n}
                print(json.dumps({**line, "obs_dim": args.obs_dim}), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

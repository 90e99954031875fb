"""Generate datasets with the scripted oracles inside the ogbench wheel (no downloads).

Two kinds:

* ``demos``: noisy closed-loop oracle episodes in the real singletask env,
  ending at success or at the env's time limit; failures are kept and flagged.
* ``play``: task-agnostic, fixed-length episodes of random subtasks in OGBench's
  data-collection mode (open-loop plan oracles with smoothed noise whose level
  is drawn per episode), labelled for a task only when loaded.

Every episode draws its randomness from ``SeedSequence(seed, spawn_key=(episode,
attempt))``, so the arrays depend on the arguments and the seed only, never on
how many worker processes made them.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import time
from pathlib import Path
from typing import Literal

import numpy as np

from expoft.data.dataset import dataset_paths, load_dataset, save_dataset
from expoft.data.episodes import demo_episode, play_episode
from expoft.data.labels import label_for_task
from expoft.data.transitions import Dataset, DatasetError, make_dataset
from expoft.envs.ogbench_domains import check_task, get_domain, make_play_env, make_singletask_env
from expoft.fileio import keep_as_backup
from expoft.progress import Progress

log = logging.getLogger(__name__)

# Bump when the generated arrays for the same arguments would change.


GENERATOR_VERSION = 1
# OGBench's per-dimension scale of Markov-oracle action noise (x, y, z, yaw); the gripper's is
# DemosConfig.gripper_noise (OGBench: 10).


OGBENCH_GRIPPER_NOISE = 10.0


def default_data_dir() -> Path:
    """``$EXPOFT_DATA_DIR``, else ``$XDG_CACHE_HOME/expoft/datasets``, else ``~/.cache/expoft/datasets``."""
    if os.environ.get("EXPOFT_DATA_DIR"):
        return Path(os.environ["EXPOFT_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "expoft" / "datasets"


@dataclasses.dataclass(frozen=True)
class DemosConfig:
    """Noisy oracle demonstrations of one singletask."""

    env: str = "cube-single"
    """Domain: cube-single, cube-double, scene or puzzle-3x3."""
    task: int = 1
    """Singletask goal, 1..5."""
    episodes: int = 30
    """Number of episodes (successful and failed ones are both kept)."""
    seed: int = 0
    """Generation seed; same arguments and seed give identical arrays."""
    noise: float = 0.1
    """Gaussian action noise: each episode draws xi ~ U(0, noise) and adds N(0, xi * [1,1,1,3,g])
    to (x, y, z, yaw, gripper), g = ``gripper_noise``."""
    gripper_noise: float = OGBENCH_GRIPPER_NOISE
    """Scale g of the gripper's noise relative to the arm's (OGBench's datasets: 10). The gripper
    command is a position target, so a noisy one loosens the grasp; smaller values give demos
    that hold the cube firmly and err in the arm's motion instead."""
    p_random_action: float = 0.0
    """Probability of replacing the oracle's action by a uniform random one at each step."""
    max_episode_steps: int | None = None
    """Time limit; default: the singletask env's own (200 cube-single, 500 cube-double, 750 scene, 500 puzzle)."""
    disturb: float = 0.0
    """Probability that an episode is disturbed once (cube domains): a random 0-20 steps after the
    gripper first reaches a cube, that cube is moved 4-12 cm across the table (out of the gripper
    if held), as if knocked or dropped, and the closed-loop oracle goes back for it. Recorded as
    part of that step's transition (an external push). Gives imitation examples of recovering a
    displaced cube, which noisy demos alone rarely contain."""

    def __post_init__(self):
        domain = get_domain(self.env)
        check_task(domain, self.task)
        _check_positive("episodes", self.episodes)
        check_disturb("disturb", self.disturb, self.env)
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if self.gripper_noise < 0:
            raise ValueError(f"gripper_noise must be >= 0, got {self.gripper_noise}")
        if not 0.0 <= self.p_random_action <= 1.0:
            raise ValueError(f"p_random_action must lie in [0, 1], got {self.p_random_action}")
        if self.max_episode_steps is not None:
            _check_positive("max_episode_steps", self.max_episode_steps)

    @property
    def kind(self) -> Literal["demos"]:
        return "demos"

    @property
    def num_episodes(self) -> int:
        return self.episodes

    def cache_name(self) -> str:
        return f"{get_domain(self.env).name}-task{self.task}-demos-{self.episodes}ep-seed{self.seed}-{_digest(self)}"


@dataclasses.dataclass(frozen=True)
class PlayConfig:
    """Task-agnostic play data: random subtasks, fixed-length episodes."""

    env: str = "cube-double"
    """Domain: cube-single, cube-double, scene or puzzle-3x3."""
    transitions: int = 100_000
    """Total transitions; rounded up to whole episodes."""
    seed: int = 0
    """Generation seed; same arguments and seed give identical arrays."""
    episode_steps: int = 1000
    """Length of every episode."""
    noise: float = 0.1
    """Maximum plan noise; each episode draws its level uniformly from [noise/4, noise]."""

    def __post_init__(self):
        get_domain(self.env)
        _check_positive("transitions", self.transitions)
        _check_positive("episode_steps", self.episode_steps)
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    @property
    def kind(self) -> Literal["play"]:
        return "play"

    @property
    def num_episodes(self) -> int:
        return math.ceil(self.transitions / self.episode_steps)

    def cache_name(self) -> str:
        return f"{get_domain(self.env).name}-play-{self.transitions}-seed{self.seed}-{_digest(self)}"


GenConfig = DemosConfig | PlayConfig


def _check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def check_disturb(name: str, value: float, env: str) -> None:
    """The checks of ``DemosConfig.disturb``, shared with the runs' ``demo_disturb`` (so that a bad
    value fails before a run starts)."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value} (a fraction of episodes)")
    if value > 0 and get_domain(env).family != "cube":
        raise ValueError(f"{name} moves cubes: it works for cube-single and cube-double, not {env}")


def _digest(cfg: GenConfig) -> str:
    fields = dataclasses.asdict(cfg)
    # Left out at their defaults so that datasets cached before the fields existed keep their names.
    if fields.get("gripper_noise") == OGBENCH_GRIPPER_NOISE:
        del fields["gripper_noise"]
    if fields.get("disturb") == 0.0:
        del fields["disturb"]
    blob = json.dumps({"config": fields, "version": GENERATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------
# one episode of each kind


# ---------------------------------------------------------------------------
# jobs and workers

_WORKER_ENV: dict = {}


_IN_PROCESS_STEPS = 20_000


def _env_for(cfg: GenConfig):
    """One env per (process, config): building an OGBench env takes ~0.3 s."""
    key = (cfg.kind, cfg.env, getattr(cfg, "task", None), getattr(cfg, "episode_steps", None))
    if key not in _WORKER_ENV:
        _WORKER_ENV.clear()
        domain = get_domain(cfg.env)
        if cfg.kind == "demos":
            _WORKER_ENV[key] = make_singletask_env(
                domain, cfg.task, max_episode_steps=cfg.max_episode_steps or domain.episode_steps
            )
        else:
            _WORKER_ENV[key] = make_play_env(domain, cfg.episode_steps + 1)
    return _WORKER_ENV[key]


def run_episodes(cfg: GenConfig, episodes: range) -> list[dict[str, np.ndarray]]:
    """Generate the given episode indices (a job; runs in a worker process)."""
    domain = get_domain(cfg.env)
    env = _env_for(cfg)
    if cfg.kind == "demos":
        return [demo_episode(env, domain, cfg, e) for e in episodes]
    return [play_episode(env, domain, cfg, e) for e in episodes]


def _concat(episodes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([ep[k] for ep in episodes]) for k in episodes[0]}


def generate(cfg: GenConfig, workers: int | None = None, progress: bool = True) -> Dataset:
    """Generate a dataset in memory (no caching; see :func:`get_or_generate`)."""
    workers = workers or min(2, os.cpu_count() or 1)
    n = cfg.num_episodes
    steps_hint = cfg.episode_steps if cfg.kind == "play" else get_domain(cfg.env).episode_steps
    if n * steps_hint <= _IN_PROCESS_STEPS:
        # A worker process pays ~2 s to import MuJoCo and ogbench: not worth it here.
        per_job = n
    else:
        # Several jobs per worker for balance and smooth progress, each at most ~20k steps.
        per_job = max(1, min(_IN_PROCESS_STEPS // steps_hint, math.ceil(n / (4 * workers))))
    jobs = [range(i, min(i + per_job, n)) for i in range(0, n, per_job)]
    bar = Progress(total=n, desc=f"{cfg.kind} {cfg.env}", unit="ep", enabled=progress)
    start = time.perf_counter()
    results: dict[int, list] = {}
    if workers == 1 or len(jobs) == 1:
        for i, job in enumerate(jobs):
            results[i] = run_episodes(cfg, job)
            bar.update(len(job))
    else:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(run_episodes, cfg, job): i for i, job in enumerate(jobs)}
            for fut in cf.as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(len(jobs[futures[fut]]))
    bar.close()
    episodes = [ep for i in range(len(jobs)) for ep in results[i]]
    arrays = _concat(episodes)
    meta = {
        "env": get_domain(cfg.env).name,
        "kind": cfg.kind,
        "task": getattr(cfg, "task", None),
        "seed": cfg.seed,
        "generator": {
            "name": "expoft.data.generate",
            "version": GENERATOR_VERSION,
            "oracle": "ogbench markov (closed loop)" if cfg.kind == "demos" else "ogbench plan (open loop)",
            "config": dataclasses.asdict(cfg),
        },
        "generation_seconds": round(time.perf_counter() - start, 2),
    }
    if cfg.kind == "play":
        del arrays["episode_success"]  # success depends on the task the data is later labelled for
    env_success = arrays.pop("episode_success", None)
    ds = make_dataset(arrays, meta, source=f"generated {cfg.kind}")
    if cfg.kind == "demos":
        ds = label_for_task(ds, ds.meta["env"], cfg.task, "sparse")
        assert ds.episode_success is not None and env_success is not None, "demo episodes record their success"
        if not np.array_equal(ds.episode_success, env_success):
            raise RuntimeError("success recomputed from next_qpos disagrees with the environment's success flag")
    return ds


def get_or_generate(
    cfg: GenConfig,
    *,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    force: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[Path, Dataset, bool]:
    """Return ``(path, dataset, reused)``, generating and saving only when needed.

    With ``out`` the files go to ``out/NAME.{npz,json}``; otherwise to the cache
    (``data_dir`` or :func:`default_data_dir`). An existing valid copy is reused.
    An existing copy that fails validation is an error, never silently
    regenerated; ``force=True`` regenerates it and keeps the old files as
    ``*.bak``.
    """
    folder = Path(out) if out is not None else Path(data_dir) if data_dir is not None else default_data_dir()
    npz, meta_path = dataset_paths(folder / cfg.cache_name())
    if npz.exists() or meta_path.exists():
        if not force:
            try:
                ds = load_dataset(npz)
            except (DatasetError, FileNotFoundError) as e:
                raise DatasetError(
                    f"a cached dataset exists at {npz} but is not usable: {e}\n"
                    "Nothing was changed. Pass --force to regenerate it (the old files are kept as *.bak)."
                ) from e
            log.info("reusing %s", npz)
            return npz, ds, True
        keep_as_backup(npz, meta_path)
    ds = generate(cfg, workers=workers, progress=progress)
    try:
        save_dataset(ds, npz)
    except FileExistsError:
        # Another process (a parallel run of `expoft bench`) saved the same data meanwhile:
        # generation is deterministic, so its copy is ours; use it if it is valid.
        if force:
            raise
        log.info("%s appeared while generating; reusing it", npz)
        return npz, load_dataset(npz), True
    return npz, ds, False

"""What a run is made of, built from its config: the offline data (generated demos or a file,
labelled for the task), the agent, the environment, the pixel frames; one update call on the
replay buffer; a trained run's agent loaded back, or its base moved into another agent."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from expoft.agents.common import update
from expoft.agents.registry import agent_spec, create_agent
from expoft.data.dataset import load_dataset
from expoft.data.generate import DemosConfig, get_or_generate
from expoft.data.labels import label_for_task
from expoft.data.replay import ReplayBuffer
from expoft.data.transitions import Dataset, DatasetError
from expoft.envs.ogbench_domains import get_domain
from expoft.obs import PIXELS, PROPRIO, PixelSpec
from expoft.pytree_io import load_pytree
from expoft.train.config import RunConfig
from expoft.train.rundir import config_from_json, latest_checkpoint

log = logging.getLogger(__name__)


def offline_data(cfg: RunConfig, progress: bool) -> Dataset:
    """The run's offline data (``cfg.dataset``, or generated demos) with rewards, terminals and
    episode success for the run's task and reward (:func:`task_labels`)."""
    if cfg.dataset is not None:
        ds = load_dataset(cfg.dataset, env=cfg.env, task=None)
        return task_labels(ds, cfg, str(cfg.dataset))
    _, ds, _ = get_or_generate(demos_config(cfg), progress=progress)
    return task_labels(ds, cfg, "the generated demos")


def task_labels(ds: Dataset, cfg: RunConfig, source: str) -> Dataset:
    """``ds`` labelled for ``cfg.task`` with ``cfg.reward``. Task-agnostic (play) data is labelled
    here; data expoft labelled with the other reward is relabelled (the labels follow from its
    recorded states; the file is not touched); data labelled for another task is refused. Rewards
    that did not come from expoft (no ``task``/``reward`` in its meta) are used as they are."""
    if not ds.has_task:
        return label_for_task(ds, cfg.env, cfg.task, cfg.reward)
    task, reward = ds.meta.get("task"), ds.meta.get("reward")
    if task is not None and task != cfg.task:
        raise DatasetError(
            f"{source} is labelled for task {task}, but the run is for task {cfg.task}: pass --task {task}, "
            f"or data labelled for task {cfg.task} (task-agnostic play data is labelled for the run's task)"
        )
    if reward is not None and reward != cfg.reward:
        return label_for_task(ds, cfg.env, cfg.task, cfg.reward)
    return ds


def demos_config(cfg: RunConfig) -> DemosConfig:
    """The demonstrations a run without ``dataset`` generates (or reuses from the cache)."""
    seed = cfg.seed if cfg.demo_seed is None else cfg.demo_seed
    return DemosConfig(
        env=cfg.env, task=cfg.task, episodes=cfg.demo_episodes, seed=seed, noise=cfg.demo_noise,
        gripper_noise=cfg.demo_gripper_noise, disturb=cfg.demo_disturb,
    )  # fmt: skip


def make_agent(cfg: RunConfig):
    """A fresh agent of ``cfg.algorithm`` for ``cfg.env`` (on pixels with ``cfg.pixels``)."""
    domain = get_domain(cfg.env)
    return create_agent(cfg.algorithm, cfg.agent, cfg.obs_spec, domain.action_dim, cfg.seed, cfg.options)


def offline_frames(cfg: RunConfig, ds: Dataset, progress: bool = True) -> np.ndarray | None:
    """The offline data's frames for a pixel run (rendered once, then cached); None for states.
    A ``cfg.dataset`` file keeps its frames beside it (`expoft data render`, or decoded from a
    LeRobot dataset's videos by `expoft data import lerobot`); generated demos in the data cache."""
    if cfg.pixels is None:
        return None
    from expoft.data.frames import frames_for

    return frames_for(cfg.dataset if cfg.dataset is not None else ds, cfg.pixels, progress=progress)


def dataset_observations(ds: Dataset, frames: np.ndarray | None, spec: PixelSpec | None):
    """Every transition's observation: ``[N, D]`` states, or pixel observations from ``frames``."""
    if spec is None:
        return ds.observations
    assert frames is not None, "pixel observations are made from the dataset's frames"
    return {PIXELS: frames[ds.frame_rows()], PROPRIO: ds.observations[:, : spec.proprio_dim]}


def load_run_agent(run_dir: str | Path, checkpoint: str | Path | None = None) -> tuple[RunConfig, Any, int]:
    """The config and agent of a run folder (latest checkpoint unless one is named)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} does not exist; is {run_dir} an expoft run folder?")
    cfg = config_from_json(json.loads(config_path.read_text()))
    template = make_agent(cfg)
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    agent, extra = load_pytree(template, path)
    return cfg, agent, int(extra.get("env_step", 0))


BASE_FIELDS = ("base", "chunk_len", "flow_steps", "base_width", "base_blocks")


def with_base_from(agent, source_path: str | Path):
    """``agent`` with the base policy (and its EMA copy) of another run: ``source_path`` is a run
    folder (its newest checkpoint) or one checkpoint file of it, ``RUN/checkpoints/agent_<step>.npz``
    (``agent_0.npz`` of a fine-tuning run is its base as pretrained, before RL trained it further).
    The base optimiser starts afresh; critic, edit policy and temperature stay as they are."""
    source_path = Path(source_path)
    run_dir, checkpoint = source_path, None
    if source_path.suffix == ".npz":
        if not source_path.is_file():
            raise FileNotFoundError(f"--base-from {source_path} does not exist; name a run folder or one of its "
                                    "checkpoints/agent_<step>.npz files")  # fmt: skip
        run_dir, checkpoint = source_path.parent.parent, source_path
    source_cfg, source, _ = load_run_agent(run_dir, checkpoint)
    if not (agent.has_base and source.has_base):
        raise ValueError(f"--base-from needs a base policy on both sides; {run_dir} or this run's algorithm has none")
    mismatched = [
        f"{name}: {getattr(source_cfg.agent, name)!r} there, {getattr(agent.config, name)!r} here"
        for name in BASE_FIELDS + (("encoder",) if isinstance(agent.obs_dim, PixelSpec) else ())
        if getattr(source_cfg.agent, name) != getattr(agent.config, name)
    ]
    if source.obs_dim != agent.obs_dim or source.action_dim != agent.action_dim:
        mismatched.append(
            f"dims ({source.obs_dim}, {source.action_dim}) there, ({agent.obs_dim}, {agent.action_dim}) here"
        )
    if mismatched:
        raise ValueError(f"the base in {run_dir} does not fit this run's agent: " + "; ".join(mismatched))
    base = agent.base.replace(params=source.base.params, opt_state=agent.base.tx.init(source.base.params))
    return agent.replace(base=base, base_ema=source.base_ema)


def draw_batches(cfg: RunConfig, buffer: ReplayBuffer, rng: np.random.Generator, offline_only: bool = False):
    """``(pool, base_batch or None)``: what one update call of ``cfg``'s agent draws from ``buffer``."""
    recipe = agent_spec(cfg.algorithm).batches(cfg.agent, offline_only)
    pool = buffer.sample(rng, recipe.pool_size, discount=recipe.discount, chunk_len=recipe.chunk_len,
                         num_offline=recipe.num_offline)  # fmt: skip
    base_batch = None
    if recipe.base_size:
        base_batch = buffer.sample(
            rng, recipe.base_size, discount=recipe.discount, chunk_len=recipe.base_chunk_len,
            offline_fraction=recipe.base_offline_fraction, successful_only=recipe.base_successful_only,
        )  # fmt: skip
    return pool, base_batch


def update_call(
    cfg: RunConfig,
    agent,
    buffer: ReplayBuffer,
    rng: np.random.Generator,
    *,
    offline_only: bool = False,
    external=None,
    external_seed: int | None = None,
    cache=None,
    call: int = 0,
):
    """One update call of the agent on batches drawn from ``buffer``: the pool of executed
    chunks (offline and online rows as the agent's config mixes them) and, when the base learns
    from its own data, the base's batch. ``offline_only``: every row from the offline data (the
    offline phase). ``external``, ``external_seed``, ``cache``, ``call``: see
    :func:`next_base_samples`. Returns ``(agent, metrics as floats)``."""
    pool, base_batch = draw_batches(cfg, buffer, rng, offline_only)
    next_base = next_base_samples(agent, pool, external=external, external_seed=external_seed, cache=cache, call=call)
    return update_on(agent, pool, base_batch, next_base)


def next_base_samples(agent, pool, *, external=None, external_seed: int | None = None, cache=None, call: int = 0,
                      total_added: int | None = None):  # fmt: skip
    """The base samples at ``pool``'s next observations that an update call takes from outside
    its compiled function, or None (it draws them itself): the external base's (``external``,
    asked with ``external_seed``), or those of a ``TargetCandidateCache`` (``cache``; ``call``:
    the update call's number, for the entries' staleness; ``total_added``: the buffer's count
    when ``pool`` was drawn, for a learner that adds transitions meanwhile)."""
    if external is not None:
        return external(pool.next_observations, external_seed, "update")
    if cache is not None:
        return cache.lookup(agent, pool, call, total_added)
    return None


def update_on(agent, pool, base_batch, next_base):
    """``(agent, metrics as floats)`` of one update call on drawn batches."""
    new_agent, metrics = update(agent, pool._replace(last=None), base_batch, next_base)
    return new_agent, {k: float(v) for k, v in metrics.items()}  # float() waits for the work: honest timing


def run_base(run_dir: str | Path):
    """The (EMA) base of a run folder's latest checkpoint as an external base (``RunBase``), to
    serve it (`expoft serve`)."""
    from expoft.bases.run_base import RunBase

    cfg, agent, _ = load_run_agent(run_dir)
    if not getattr(agent, "has_base", False):
        raise ValueError(f"the run in {run_dir} ({cfg.algorithm}) has no base policy to serve")
    return RunBase(agent.base_policy, agent.base_ema, agent.obs_dim, agent.action_dim, cfg.agent.chunk_len)

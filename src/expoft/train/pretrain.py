"""Imitation pretraining of the base, checkpointed so that a killed pretraining continues.

Used inside every fine-tuning run (``finetune``) and on its own (``expoft pretrain``). Either
way a pretraining checkpoint is written every ``STAGE_SAVE_SECONDS`` of wall time, and a
continued pretraining ends exactly where the uninterrupted one would have (same agent, same
per-step losses). A pretraining of its own is marked as such in its checkpoint, so that
``expoft finetune --resume`` does not carry it on into RL and ``expoft pretrain --resume`` does
not stop a fine-tuning run after its pretraining.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from expoft.data.dataset import array_sha256
from expoft.data.transitions import Dataset
from expoft.envs.ogbench_domains import get_domain
from expoft.envs.run_env import make_run_env
from expoft.pytree_io import save_pytree
from expoft.train.build import make_agent, offline_data, offline_frames
from expoft.train.checkpoint import CheckpointStore, SaveTimer
from expoft.train.config import RunConfig
from expoft.train.evaluate import evaluate, evaluation_seed
from expoft.train.imitation import PretrainPoint, pretrain_base
from expoft.train.rundir import RunDir, config_from_json, same_config, to_jsonable

log = logging.getLogger(__name__)

STAGE_SAVE_SECONDS = 300.0
"""The stages before RL (pretraining, the offline phase) write a checkpoint this often (wall
time): a kill loses at most this much of them (P2 at full size takes hours in each)."""


@dataclasses.dataclass(frozen=True)
class Clock:
    """Wall and CPU seconds of a run since it started, across sessions: a resumed session starts
    from what its checkpoint recorded. CPU is this process's user + system time (all threads;
    the environments and the data generation run in-process), what P1 reports until 95%."""

    wall0: float
    cpu0: float

    @classmethod
    def start(cls, wall_before: float = 0.0, cpu_before: float = 0.0) -> Clock:
        return cls(time.perf_counter() - wall_before, time.process_time() - cpu_before)

    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu(self) -> float:
        return time.process_time() - self.cpu0


def dataset_sha256(ds: Dataset) -> str:
    """One digest of the arrays a run learns from."""
    h = hashlib.sha256()
    for name in ("observations", "next_observations", "actions", "rewards", "terminals", "episode_ends"):
        h.update(array_sha256(getattr(ds, name)).encode())
    return h.hexdigest()


def check_dataset(cfg: RunConfig, ds: Dataset) -> None:
    domain = get_domain(cfg.env)
    if ds.obs_dim != domain.obs_dim or ds.action_dim != domain.action_dim:
        raise ValueError(
            f"dataset dims (observation {ds.obs_dim}, action {ds.action_dim}) do not fit {domain.name} "
            f"(observation {domain.obs_dim}, action {domain.action_dim}); pass data recorded in {domain.name}"
        )
    if not ds.has_task:
        raise ValueError("the offline data has no rewards; pass a dataset labelled for the task")
    if cfg.agent.base_training == "successes" and not np.any(ds.episode_success):
        raise ValueError(
            "base_training='successes' imitates successful episodes, and the offline data has none; "
            "use demonstrations that reach the goal, or --base-training all|frozen"
        )


def check_resumable(record: dict, cfg: RunConfig, config_path: Path, where: str) -> None:
    if not same_config(record.get("config"), to_jsonable(cfg)):
        raise ValueError(
            f"{config_path} differs from the config the checkpoint of {where} was written with; a run "
            "continues with the settings it started with (restore config.json, or start a new run with --base-from)"
        )


def check_same_data(ds: Dataset, sha: str, out: Path) -> None:
    if dataset_sha256(ds) != sha:
        raise ValueError(
            f"the offline data differs from the data the run in {out} started with (sha256 "
            f"{sha[:12]}..., now {dataset_sha256(ds)[:12]}...); resume with the same dataset"
        )


def checkpointed_pretraining(
    cfg, run, store, agent, ds, sha, frames, progress, save_seconds, clock: Clock, start=None, only: bool = False
):
    """The run's pretraining (``sha``: its dataset's digest), checkpointed every ``save_seconds``;
    ``start``: where the pretraining checkpoint it continues from stopped (``agent`` is then that
    checkpoint's agent); ``only``: a pretraining of its own (``expoft pretrain``)."""
    timer = SaveTimer(save_seconds)

    def save(agent, point: PretrainPoint) -> None:
        if point.done < cfg.pretrain_steps and timer.due():
            record = {"rng": point.rng, **stage_record(cfg, run, sha, clock), "pretrain_only": only}
            store.save_stage("pretrain", agent, point.done, record, point.losses)
            run.checkpoint_written()
            timer.saved()

    agent, losses = pretrain_base(
        agent, ds, cfg.pretrain_steps, cfg.seed, progress, frames, start=start, on_chunk=save
    )  # fmt: skip
    run.log({"phase": "pretrain", "pretrain/steps": cfg.pretrain_steps,
             "pretrain/final_loss": float(losses[-100:].mean())})  # fmt: skip
    return agent, losses


@dataclasses.dataclass
class Continued:
    """A run reopened from a checkpoint before RL (its pretraining continued to the end, or its
    offline phase to be continued)."""

    run: RunDir
    agent: Any
    losses: np.ndarray
    ds: Dataset
    sha: str
    frames: np.ndarray | None
    clock: Clock


def stage_record(cfg: RunConfig, run: RunDir, sha: str, clock: Clock) -> dict:
    """What every checkpoint before RL records besides its stage's own progress."""
    return {
        "metrics_bytes": run.metrics_bytes(),
        "dataset_sha256": sha,
        "elapsed_seconds": clock.wall(),
        "cpu_seconds": clock.cpu(),
        "config": to_jsonable(cfg),
    }


def reopen_stage(
    cfg: RunConfig, out: Path, store: CheckpointStore, record: dict, config_path: Path, where: str, progress: bool
) -> Continued:
    """The run of a checkpoint before RL (``record``, of ``where``), checked against its config
    and data and reopened at the checkpoint's metrics; ``agent`` and ``losses`` are the checkpoint's."""
    check_resumable(record, cfg, config_path, where)
    ds = offline_data(cfg, progress)
    check_dataset(cfg, ds)
    check_same_data(ds, record["dataset_sha256"], out)
    frames = offline_frames(cfg, ds, progress)
    agent, losses = store.restore_stage(record, make_agent(cfg))
    run = RunDir.reopen(out, record["metrics_bytes"], cfg)
    # cpu_seconds is absent from checkpoints written before CPU time was counted
    clock = Clock.start(record["elapsed_seconds"], record.get("cpu_seconds", 0.0))
    return Continued(run, agent, losses, ds, record["dataset_sha256"], frames, clock)


def never_checkpointed(store: CheckpointStore) -> bool:
    """The run wrote no checkpoint file of any kind (not even one found unusable since): it was
    killed before its first one, and starting it again loses nothing."""
    return not store.dir.exists() or not any(store.dir.iterdir())


def continue_pretraining(cfg, out, store, config_path, progress, save_seconds, only: bool) -> Continued:
    """Load the pretraining checkpoint in ``store`` (a run of its own when ``only``), check that
    it belongs to this config and data, and pretrain to the end from there."""
    record = store.stage_record("pretrain")
    if record is None:
        command = "pretrain" if only else "finetune"
        raise FileNotFoundError(
            f"no usable checkpoint in {store.dir} (the run stopped before its first one: within the first "
            f"{save_seconds:.0f} s of pretraining{'' if only else ', or before RL began'}); start it again with "
            f"`expoft {command} ... --out {out} --overwrite`"
        )
    if bool(record.get("pretrain_only", False)) != only:
        raise ValueError(
            f"{out} is {'a fine-tuning run' if only else 'a pretraining of its own (expoft pretrain)'}; "
            f"continue it with `expoft {'finetune' if only else 'pretrain'} --resume {out}`"
        )
    done = reopen_stage(cfg, out, store, record, config_path, f"pretraining step {record['done']}", progress)
    done.run.log({"phase": "resume", "pretrain_step": record["done"]})
    log.info("resuming %s at pretraining step %d of %d", out, record["done"], cfg.pretrain_steps)
    start = PretrainPoint(record["done"], record["rng"], (done.losses,))
    agent, losses = checkpointed_pretraining(
        cfg, done.run, store, done.agent, done.ds, done.sha, done.frames, progress, save_seconds, done.clock, start,
        only=only,
    )  # fmt: skip
    return dataclasses.replace(done, agent=agent, losses=losses)


def pretrain_only(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    save_seconds: float = STAGE_SAVE_SECONDS,
) -> dict:
    """Imitation pretraining of the base (``expoft pretrain``); saves ``checkpoints/agent_0.npz``,
    evaluates the base and writes a summary. ``resume_pretrain_only`` continues it if killed."""
    clock = Clock.start()
    agent = make_agent(cfg)
    if not agent.has_base:
        raise ValueError(f"algorithm {cfg.algorithm!r} has no base policy to pretrain")
    ds = offline_data(cfg, progress)
    check_dataset(cfg, ds)  # before the run folder exists: bad data leaves nothing to clean up
    frames = offline_frames(cfg, ds, progress)
    run = RunDir(out, cfg, overwrite)
    store = CheckpointStore(run.path / "checkpoints", keep=cfg.keep_checkpoints)
    agent, losses = checkpointed_pretraining(
        cfg, run, store, agent, ds, dataset_sha256(ds), frames, progress, save_seconds, clock, only=True
    )  # fmt: skip
    return _finish_pretrain_only(cfg, run, store, agent, losses, clock)


def resume_pretrain_only(out: str | Path, *, progress: bool = True, save_seconds: float = STAGE_SAVE_SECONDS) -> dict:
    """Continue a killed ``expoft pretrain`` in ``out`` from its pretraining checkpoint."""
    out = Path(out)
    config_path = out / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} does not exist: {out} is not an expoft run folder")
    if (out / "summary.json").exists():
        raise ValueError(f"the pretraining in {out} has finished (summary.json exists); nothing to resume")
    cfg = config_from_json(json.loads(config_path.read_text()))
    store = CheckpointStore(out / "checkpoints", keep=cfg.keep_checkpoints)
    # listed, not validated: only which kind of run this is matters here
    if store.steps() or (store.dir / "offline_state.json").exists():
        raise ValueError(f"{out} is a fine-tuning run (it has checkpoints of RL); continue it with "
                         f"`expoft finetune --resume {out}`")  # fmt: skip
    if never_checkpointed(store):  # killed before its first checkpoint: start it again (see finetune.resume)
        log.warning("%s has no checkpoint yet: starting the pretraining again from its config.json", out)
        return pretrain_only(cfg, out, overwrite=True, progress=progress, save_seconds=save_seconds)
    done = continue_pretraining(cfg, out, store, config_path, progress, save_seconds, only=True)
    return _finish_pretrain_only(cfg, done.run, store, done.agent, done.losses, done.clock)


def _finish_pretrain_only(cfg: RunConfig, run: RunDir, store: CheckpointStore, agent, losses, clock: Clock) -> dict:
    save_pytree(agent, run.path / "checkpoints" / "agent_0.npz", env_step=np.int64(0))
    run.checkpoint_written()
    store.drop_stage("pretrain")  # agent_0.npz supersedes it
    result = evaluate(agent, make_run_env(cfg), cfg.eval_episodes, evaluation_seed(cfg), policy="base")
    summary = {
        "pretrain_steps": cfg.pretrain_steps,
        "final_loss": float(losses[-100:].mean()) if len(losses) else None,
        **result,
        "wall_seconds": clock.wall(),
        "cpu_seconds": clock.cpu(),
    }
    run.log({"phase": "pretrain", **summary})
    run.write_json("summary.json", summary)
    run.close()
    return summary

"""Online fine-tuning: the EXPO loop over an environment, with checkpoints it can resume from.

``finetune`` pretrains the base (or takes it from another run), evaluates it, then interacts:
act with the OTF rule, store the executed steps, run update calls on the configured schedule,
log, evaluate and checkpoint. ``resume`` continues a killed run from its newest usable
checkpoint and reproduces, on CPU bit for bit, what the uninterrupted run would have logged.

Why checkpoints wait for an episode end: the simulator's state mid-episode is not saved, but
every episode starts from a reset seeded by the number of episodes so far. A checkpoint due at
step N is therefore written when the episode running at N ends (at most one episode later).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from expoft.data.replay import ReplayBuffer
from expoft.data.transitions import Dataset
from expoft.envs.ogbench_domains import get_domain
from expoft.envs.run_env import make_run_env
from expoft.train.build import make_agent, offline_data, offline_frames, with_base_from
from expoft.train.checkpoint import CheckpointStore
from expoft.train.config import RunConfig
from expoft.train.evaluate import evaluate, evaluation_seed
from expoft.train.extend import checkpoint_config, close_cut_episode
from expoft.train.external import external_candidates
from expoft.train.offline_rl import OfflinePoint, checkpointed_offline_phase, reopen_offline_phase
from expoft.train.online_loop import OnlineLearner, run_local
from expoft.train.online_state import LoopState
from expoft.train.pretrain import (
    STAGE_SAVE_SECONDS,
    Clock,
    check_dataset,
    check_resumable,
    check_same_data,
    checkpointed_pretraining,
    continue_pretraining,
    dataset_sha256,
    never_checkpointed,
)
from expoft.train.rundir import RunDir, config_from_json

log = logging.getLogger(__name__)

Online = Callable[[OnlineLearner], dict]
"""What runs the online phase, given its learner; returns the summary."""


def run_buffer(cfg: RunConfig, ds: Dataset, frames: np.ndarray | None) -> ReplayBuffer:
    """The run's replay buffer, the offline data (and its frames, for pixels) mixed in."""
    domain = get_domain(cfg.env)
    return ReplayBuffer(cfg.obs_spec, domain.action_dim, cfg.buffer_capacity, offline=ds, offline_frames=frames)


def finetune(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    base=None,
    stage_save_seconds: float = STAGE_SAVE_SECONDS,
    online: Online = run_local,
) -> dict:
    """Pretrain the base on the offline data, take the offline phase (if any), then run online;
    returns the summary. ``online`` drives the online phase's learner (``run_local``: this process
    acts and runs the environment; ``expoft.actorlearner``: actors elsewhere do).

    ``base``: an external base policy (``expoft.bases.ExternalBase``, e.g. a ``CallableBase``) to
    use instead of the agent's own; ``cfg.external_base`` names a server instead."""
    clock = Clock.start()
    ds = offline_data(cfg, progress)
    check_dataset(cfg, ds)  # before the run folder exists: bad data leaves nothing to clean up
    frames = offline_frames(cfg, ds, progress)
    external = external_candidates(cfg, base)
    sha = dataset_sha256(ds)
    agent = make_agent(cfg)
    if agent.has_base and external is None and cfg.base_from is not None:
        agent = with_base_from(agent, cfg.base_from)  # checked before the run folder is touched
    run = RunDir(out, cfg, overwrite)
    store = CheckpointStore(run.path / "checkpoints", keep=cfg.keep_checkpoints)
    losses = np.zeros(0)
    if not agent.has_base:
        pass  # e.g. RLPD: no base to start from or pretrain
    elif external is not None:
        run.log({"phase": "pretrain", "pretrain/external_base": cfg.external_base or type(base).__name__})
    elif cfg.base_from is not None:
        run.log({"phase": "pretrain", "pretrain/base_from": str(cfg.base_from)})
    elif cfg.pretrain_steps:
        agent, losses = checkpointed_pretraining(
            cfg, run, store, agent, ds, sha, frames, progress, stage_save_seconds, clock
        )
    return _start_online(cfg, run, store, agent, losses, ds, sha, frames, progress, clock, external, stage_save_seconds,
                         online=online)  # fmt: skip


def _start_online(
    cfg, run, store, agent, losses, ds, sha, frames, progress, clock: Clock, external, save_seconds: float,
    offline_start: OfflinePoint | None = None, online: Online = run_local,
) -> dict:  # fmt: skip
    """Take the offline phase (if any; continued from ``offline_start``), evaluate the agent
    before RL, write the first checkpoint, then run online."""
    buffer = run_buffer(cfg, ds, frames)
    agent = checkpointed_offline_phase(
        cfg, run, store, agent, buffer, losses, sha, clock, progress, save_seconds, external, offline_start
    )  # fmt: skip
    eval_env = make_run_env(cfg)
    before = evaluate(agent, eval_env, cfg.eval_episodes, evaluation_seed(cfg), external=external)
    before_base = {}
    if agent.has_base:
        before_base = evaluate(
            agent, eval_env, cfg.eval_episodes, evaluation_seed(cfg), policy="base", external=external
        )
    run.log({"env_step": 0, **before, **before_base})
    log.info("before RL: success %.2f, base alone %s", before["eval/success"], before_base.get("eval_base/success"))
    state = LoopState(
        evals=[{**before, **(before_base if cfg.eval_base else {}), "time/cpu_s": clock.cpu()}],
        sampling_rng=np.random.default_rng(cfg.seed).bit_generator.state,
        before={**before, **before_base, "pretrain_final_loss": float(losses[-100:].mean()) if len(losses) else None},
        dataset_sha256=sha,
        checkpoint_due=True,  # a first checkpoint before RL: a resume never repeats pretraining
    )
    return online(OnlineLearner(cfg, run, agent, buffer, store, state, eval_env, progress, clock, external))


def resume(
    out: str | Path, *, progress: bool = True, base=None, stage_save_seconds: float = STAGE_SAVE_SECONDS,
    online: Online = run_local,
) -> dict:  # fmt: skip
    """Continue the run in ``out`` from its newest usable checkpoint (its own config.json), or,
    killed before RL, from the checkpoint of its offline phase or of its pretraining; ``base``:
    the external base object the run started with, if it was given from Python."""
    clock = Clock.start()
    out = Path(out)
    config_path = out / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} does not exist: {out} is not an expoft run folder")
    if (out / "summary.json").exists():
        raise ValueError(f"the run in {out} has finished (summary.json exists); nothing to resume")
    cfg = config_from_json(json.loads(config_path.read_text()))
    store = CheckpointStore(out / "checkpoints", keep=cfg.keep_checkpoints)
    if never_checkpointed(store):
        # killed before its first checkpoint (in its first seconds, or early in pretraining): there is
        # nothing to lose, and the user asked to go on, so the run starts again from its own config
        log.warning("%s has no checkpoint yet: starting the run again from its config.json", out)
        return finetune(cfg, out, overwrite=True, progress=progress, base=base, stage_save_seconds=stage_save_seconds,
                        online=online)  # fmt: skip
    record = store.latest_valid()
    if record is None:
        offline_start = None
        reopened = reopen_offline_phase(cfg, out, store, config_path, progress)
        if reopened is not None:
            done, offline_start = reopened
        else:
            done = continue_pretraining(cfg, out, store, config_path, progress, stage_save_seconds, only=False)
        return _start_online(cfg, done.run, store, done.agent, done.losses, done.ds, done.sha, done.frames, progress,
                             done.clock, external_candidates(cfg, base), stage_save_seconds, offline_start,
                             online)  # fmt: skip
    step = int(record["env_step"])
    check_resumable(record, checkpoint_config(cfg, out, step), config_path, f"env step {step}")
    ds = offline_data(cfg, progress)
    check_dataset(cfg, ds)
    state = LoopState(**record["state"])
    check_same_data(ds, state.dataset_sha256, out)
    template = make_agent(cfg)
    buffer = run_buffer(cfg, ds, offline_frames(cfg, ds, progress))
    agent = store.restore(record, template, buffer)
    close_cut_episode(out, buffer)  # an extended run's (expoft.train.extend)
    run = RunDir.reopen(out, state.metrics_bytes, cfg, state.step)
    run.log({"phase": "resume", "env_step": state.step})
    log.info("resuming %s at env step %d", out, state.step)
    external = external_candidates(cfg, base)
    return online(OnlineLearner(cfg, run, agent, buffer, store, state, make_run_env(cfg), progress, clock, external))

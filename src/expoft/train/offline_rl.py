"""The offline phase of offline-to-online fine-tuning (protocol P2, ``RunConfig.offline_updates``).

After the base's imitation pretraining and before the first environment step, the agent takes
``offline_updates`` of its usual update calls on batches drawn from the offline data alone: the
critic learns the labelled rewards of the offline data, and whatever learns from the critic
(EXPO's edit policy, FQL's one-step policy, DSRL's noise policy, the residual) learns from it,
so that the online phase starts from offline RL rather than from imitation alone, as in the
published offline-to-online protocols.

The phase draws from an RNG of its own (a function of the seed), so the online phase samples
what it would without it. It is checkpointed (the ``offline`` stage of the run's checkpoints):
at its start, then at a metrics row once ``save_seconds`` have passed since the last save. A
run killed in it continues from its last checkpoint and reaches the agent and metrics of the
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from expoft.data.replay import ReplayBuffer
from expoft.progress import Progress
from expoft.train.build import update_call
from expoft.train.checkpoint import CheckpointStore, SaveTimer
from expoft.train.config import RunConfig
from expoft.train.external import step_seed
from expoft.train.pretrain import Clock, Continued, reopen_stage, stage_record
from expoft.train.rundir import RunDir, stop_if_diverged
from expoft.train.target_cache import run_cache

log = logging.getLogger(__name__)

OFFLINE_RNG_SALT = 0x0FF11E
"""Mixed into the seed of the offline phase's sampling RNG (apart from the online phase's)."""
LOG_ROWS = 20
"""Metrics rows written over the phase (each the mean of the calls since the last)."""


@dataclasses.dataclass(frozen=True)
class OfflinePoint:
    """Where the offline phase stands: update calls taken and its sampling RNG's state after them."""

    done: int
    rng: Mapping[str, Any]

    @classmethod
    def start(cls, cfg: RunConfig) -> OfflinePoint:
        return cls(0, np.random.default_rng([cfg.seed, OFFLINE_RNG_SALT]).bit_generator.state)


def _check_phase(cfg: RunConfig, agent, buffer: ReplayBuffer) -> None:
    if not agent.learns_online:
        raise ValueError(f"offline_updates={cfg.offline_updates}, but algorithm {cfg.algorithm!r} does not learn")
    if buffer.offline_size == 0:
        raise ValueError("offline_updates needs offline data: the run's dataset is empty")


def offline_phase(
    cfg: RunConfig,
    run: RunDir,
    agent,
    buffer: ReplayBuffer,
    progress: bool,
    external=None,
    *,
    start: OfflinePoint | None = None,
    stop: int | None = None,
    on_row: Callable[[object, OfflinePoint], None] | None = None,
):
    """Take the update calls of the offline phase on offline batches, from ``start`` (default:
    its beginning) to call ``stop`` (default: ``cfg.offline_updates``); returns the agent.
    ``on_row(agent, point)`` is called after every metrics row, e.g. to write a checkpoint."""
    if not cfg.offline_updates:
        return agent
    _check_phase(cfg, agent, buffer)
    start = OfflinePoint.start(cfg) if start is None else start
    stop = cfg.offline_updates if stop is None else stop
    if not 0 <= start.done <= stop <= cfg.offline_updates:
        raise ValueError(f"offline calls {start.done}..{stop} lie outside the phase's 0..{cfg.offline_updates}")
    rng = np.random.default_rng()
    rng.bit_generator.state = start.rng
    # rows at fixed call numbers, so that a phase continued from a checkpoint logs what the whole one does
    log_every = max(1, cfg.offline_updates // LOG_ROWS)
    pending: list[dict[str, float]] = []
    bar = Progress(stop, "offline RL", unit="call", enabled=progress, initial=start.done)
    cache = run_cache(cfg, buffer)
    for call in range(start.done + 1, stop + 1):
        # negative steps for the external base: never a step of the online phase, whose draws stay its own
        seed = step_seed(cfg, -call) if external is not None else None
        new_agent, metrics = update_call(
            cfg, agent, buffer, rng, offline_only=True, external=external, external_seed=seed, cache=cache, call=call
        )
        stop_if_diverged(
            metrics, agent, run, f"offline update call {call}", f"last_finite_offline_{call}",
            {"env_step": 0, "offline/update_calls": call},
        )  # fmt: skip
        agent = new_agent
        pending.append(metrics)
        bar.update()
        if call % log_every == 0 or call == stop:
            means = {f"offline/{k}": float(np.mean([m[k] for m in pending])) for k in pending[0]}
            run.log({"phase": "offline", "env_step": 0, "offline/update_calls": call, **means})
            pending = []
            if on_row is not None:
                on_row(agent, OfflinePoint(call, rng.bit_generator.state))
            if cache is not None:  # a phase continued from this row starts with an empty cache
                cache.flush()
    bar.close()
    return agent


def checkpointed_offline_phase(
    cfg: RunConfig,
    run: RunDir,
    store: CheckpointStore,
    agent,
    buffer: ReplayBuffer,
    losses: np.ndarray,
    sha: str,
    clock: Clock,
    progress: bool,
    save_seconds: float,
    external=None,
    start: OfflinePoint | None = None,
):
    """The run's offline phase, checkpointed at its start (unless continued from ``start``) and
    then at a metrics row every ``save_seconds``; ``losses``: the pretraining's, kept with the
    checkpoints for the run's summary."""
    if not cfg.offline_updates:
        return agent
    _check_phase(cfg, agent, buffer)  # before a checkpoint is written
    timer = SaveTimer(save_seconds)

    def save(agent, point: OfflinePoint) -> None:
        record = {"rng": point.rng, **stage_record(cfg, run, sha, clock)}
        store.save_stage("offline", agent, point.done, record, losses)
        run.checkpoint_written()
        timer.saved()

    def on_row(agent, point: OfflinePoint) -> None:
        if point.done < cfg.offline_updates and timer.due():
            save(agent, point)

    if start is None:
        start = OfflinePoint.start(cfg)
        save(agent, start)  # a run killed in the phase never repeats what came before it
    return offline_phase(cfg, run, agent, buffer, progress, external, start=start, on_row=on_row)


def reopen_offline_phase(
    cfg: RunConfig, out: Path, store: CheckpointStore, config_path: Path, progress: bool
) -> tuple[Continued, OfflinePoint] | None:
    """The run in ``out`` reopened at its offline phase's checkpoint, and where the phase stood;
    None when the run has no usable one."""
    record = store.stage_record("offline")
    if record is None:
        return None
    where = f"offline update call {record['done']}"
    done = reopen_stage(cfg, out, store, record, config_path, where, progress)
    done.run.log({"phase": "resume", "offline/update_calls": record["done"]})
    log.info("resuming %s at offline update call %d of %d", out, record["done"], cfg.offline_updates)
    return done, OfflinePoint(record["done"], record["rng"])

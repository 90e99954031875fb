"""The offline phase of offline-to-online fine-tuning (protocol P2, ``RunConfig.offline_updates``).

After the base's imitation pretraining and before the first environment step, the agent takes
``offline_updates`` of its usual update calls on batches drawn from the offline data alone: the
critic learns the labelled rewards of the offline data, and whatever learns from the critic
(EXPO's edit policy, FQL's one-step policy, DSRL's noise policy, the residual) learns from it,
so that the online phase starts from offline RL rather than from imitation alone, as in the
published offline-to-online protocols.

The phase draws from an RNG of its own (a function of the seed), so the online phase samples
what it would without it. It has no checkpoints of its own: a run killed during it restarts it
from the end of pretraining, and, being deterministic, reaches the same agent.
"""

from __future__ import annotations

import numpy as np

from expoft.data.replay import ReplayBuffer
from expoft.progress import Progress
from expoft.train.config import RunConfig
from expoft.train.external import step_seed
from expoft.train.loop import RunDir, stop_if_diverged, update_call

OFFLINE_RNG_SALT = 0x0FF11E
"""Mixed into the seed of the offline phase's sampling RNG (apart from the online phase's)."""
LOG_ROWS = 20
"""Metrics rows written over the phase (each the mean of the calls since the last)."""


def offline_rng(cfg: RunConfig) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, OFFLINE_RNG_SALT])


def offline_phase(
    cfg: RunConfig, run: RunDir, agent, buffer: ReplayBuffer, progress: bool, external=None, rng=None, first: int = 1
):
    """Take ``cfg.offline_updates`` update calls on offline batches; returns the agent. ``rng``
    and ``first`` continue a phase taken in parts (calls numbered from ``first``; by default
    the whole phase from its own RNG)."""
    if not cfg.offline_updates:
        return agent
    if not agent.learns_online:
        raise ValueError(f"offline_updates={cfg.offline_updates}, but algorithm {cfg.algorithm!r} does not learn")
    if buffer.offline_size == 0:
        raise ValueError("offline_updates needs offline data: the run's dataset is empty")
    rng = offline_rng(cfg) if rng is None else rng
    calls = cfg.offline_updates
    log_every = max(1, calls // LOG_ROWS)
    pending: list[dict[str, float]] = []
    bar = Progress(calls, "offline RL", unit="call", enabled=progress)
    for call in range(first, first + calls):
        # negative steps for the external base: never a step of the online phase, whose draws stay its own
        seed = step_seed(cfg, -call) if external is not None else None
        new_agent, metrics = update_call(
            cfg, agent, buffer, rng, offline_only=True, external=external, external_seed=seed
        )
        stop_if_diverged(
            metrics, agent, run, f"offline update call {call}", f"last_finite_offline_{call}",
            {"env_step": 0, "offline/update_calls": call},
        )  # fmt: skip
        agent = new_agent
        pending.append(metrics)
        if call % log_every == 0 or call == first + calls - 1:
            means = {f"offline/{k}": float(np.mean([m[k] for m in pending])) for k in pending[0]}
            run.log({"phase": "offline", "env_step": 0, "offline/update_calls": call, **means})
            pending = []
        bar.update()
    bar.close()
    return agent

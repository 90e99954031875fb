"""EXPO with an external base policy (``expoft.bases``): candidates drawn outside jit.

An external base (a model behind a websocket server, any Python callable) cannot run inside
the agent's compiled functions, so the loop draws its samples on the host and hands them in:
``act(agent, obs, key, base=candidates)`` for acting and evaluation, and
``update(agent, pool, base_batch, next_base=candidates)`` for the TD targets of an update call.
The external base is frozen (its owner holds the weights); the agent learns the critic and
the edit policy around it.
"""

from __future__ import annotations

import time

import numpy as np

from expoft.agents.registry import AGENTS, agent_spec
from expoft.bases.interface import check_chunks, check_obs
from expoft.bases.remote import RemoteBase
from expoft.envs.ogbench_domains import get_domain
from expoft.obs import ObsSpec, batch_size


class ExternalCandidates:
    """Draws base candidates ``[B, N, exec_len * A]`` from an external base and times every call."""

    def __init__(self, base, obs_dim: ObsSpec, action_dim: int, chunk_len: int, exec_len: int, num_samples: int):
        mismatched = [
            f"{name} {getattr(base, name)} (expected {want})"
            for name, want in (("obs_dim", obs_dim), ("action_dim", action_dim), ("chunk_len", chunk_len))
            if getattr(base, name) != want
        ]
        if mismatched:
            raise ValueError(f"the external base does not fit this run: {', '.join(mismatched)}")
        self.base, self.exec_len, self.num_samples = base, exec_len, num_samples
        self.seconds: dict[str, list[float]] = {"act": [], "update": []}

    def __call__(self, obs: np.ndarray, seed: int, kind: str = "act", num_samples: int | None = None) -> np.ndarray:
        n = num_samples or self.num_samples
        obs = check_obs(obs, self.base.obs_dim)
        batch = batch_size(obs)
        t0 = time.perf_counter()
        chunks = self.base.sample(obs, n, int(seed) % 2**31)
        self.seconds[kind].append(time.perf_counter() - t0)
        chunks = check_chunks(chunks, batch, n, self.base.chunk_len, self.base.action_dim, source="external base")
        return np.ascontiguousarray(chunks[:, :, : self.exec_len].reshape(batch, n, -1))

    def latency_ms(self) -> dict:
        """p50/p99 milliseconds of the base calls for acting (one observation) and for update calls."""
        out = {}
        for kind, values in self.seconds.items():
            if values:
                ms = 1000.0 * np.asarray(values)
                p50, p99 = (round(float(np.percentile(ms, q)), 3) for q in (50, 99))
                out[kind] = {"p50": p50, "p99": p99, "calls": len(values)}
        if hasattr(self.base, "latency"):  # a RemoteBase: its connection counters
            stats = self.base.latency()
            out["connection"] = {
                k: stats[k] for k in ("connects", "reconnects", "retries", "failed_calls") if k in stats
            }
        return out


def external_candidates(cfg, base=None) -> ExternalCandidates | None:
    """The run's external base: ``base`` (any ``ExternalBase`` object, from Python), else a
    ``RemoteBase`` for ``cfg.external_base`` (a server URL), else None."""
    if base is None and cfg.external_base is None:
        return None
    domain = get_domain(cfg.env)
    if base is None:
        base = RemoteBase(
            cfg.external_base, cfg.obs_spec, domain.action_dim, cfg.agent.chunk_len,
            timeout_s=cfg.external_timeout_s, retries=cfg.external_retries,
        )  # fmt: skip
    if not agent_spec(cfg.algorithm).external_base or cfg.agent.base_training != "frozen":
        able = sorted(n for n, a in AGENTS.items() if a.external_base)
        raise ValueError(
            f"an external base works with an agent that acts around one ({able}) and base_training 'frozen' "
            f"(the base's owner holds its weights); got algorithm {cfg.algorithm!r}, "
            f"base_training {cfg.agent.base_training!r}"
        )
    return ExternalCandidates(
        base, cfg.obs_spec, domain.action_dim, cfg.agent.chunk_len, cfg.agent.exec_len, cfg.options.num_base_samples
    )


def step_seed(cfg, step: int, salt: int = 0) -> int:
    """The external base's seed for a draw at ``step``: a function of the run's seed and the step,
    so a resumed run draws what an uninterrupted one would."""
    return (cfg.seed * 1_000_003 + step * 7 + salt) % 2**31

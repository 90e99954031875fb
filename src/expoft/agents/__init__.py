"""Agents: EXPO and the baselines, one file each, all with one interface.

Every agent is an immutable pytree (``flax.struct.dataclass``) with
- ``config``: the shared ``EXPOConfig`` (chunks, batch, UTD, critic and base settings),
- ``has_base`` / ``learns_online``: class flags the training loop reads,
- ``act(obs, rng) -> (actions [B, exec_len * A], info)``: the exploration policy,
- ``act_eval(obs, rng)``: the evaluation policy,
- ``update(pool, base_batch) -> (agent, metrics)``: one update call (``utd`` critic steps...),
- with a base: ``act_base``, ``pretrain`` (``expoft.agents.common.WithBase``).
The jitted entry points are in ``expoft.agents.common`` (``act``, ``update``...).
"""

from __future__ import annotations

from expoft.agents.baselines_config import BaselineConfig
from expoft.agents.bc import BCAgent
from expoft.agents.dsrl import DSRLAgent
from expoft.agents.expo import EXPOAgent, EXPOConfig
from expoft.agents.fql import FQLAgent
from expoft.agents.residual import ResidualAgent
from expoft.agents.rlpd import RLPDAgent
from expoft.obs import ObsSpec, PixelSpec

BASELINES: dict[str, type[BCAgent | RLPDAgent | FQLAgent | DSRLAgent | ResidualAgent]] = {
    "bc": BCAgent,
    "rlpd": RLPDAgent,
    "fql": FQLAgent,
    "dsrl": DSRLAgent,
    "residual": ResidualAgent,
}


def create_agent(
    algorithm: str,
    config: EXPOConfig,
    obs_dim: ObsSpec,
    action_dim: int,
    seed: int = 0,
    baseline: BaselineConfig | None = None,
):
    """A fresh agent; ``action_dim`` is the size of one action (the environment's)."""
    if algorithm == "expo":
        return EXPOAgent.create(config, obs_dim, action_dim, seed=seed)
    if algorithm not in BASELINES:
        raise ValueError(f"algorithm must be 'expo' or one of {sorted(BASELINES)}, got {algorithm!r}")
    if isinstance(obs_dim, PixelSpec):
        raise ValueError(
            f"algorithm {algorithm!r} takes state observations only (an int obs_dim, got {obs_dim!r}); "
            "pixel observations work with 'expo' alone"
        )
    return BASELINES[algorithm].create(config, baseline or BaselineConfig(), obs_dim, action_dim, seed=seed)


__all__ = ["BASELINES", "BaselineConfig", "EXPOAgent", "EXPOConfig", "create_agent"]

"""BC: the pretrained base policy alone (ALGORITHMS.md, "baselines").

It acts with one sample of its (EMA) base and learns nothing online: the imitation level that
every RL method starts from, run through the same harness and evaluation.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax

from expoft.agents.common import WithBase, new_base
from expoft.agents.config import AgentConfig


@flax.struct.dataclass
class BCAgent(WithBase):
    base: Any
    base_ema: Any
    rng: jax.Array
    config: AgentConfig = flax.struct.field(pytree_node=False)
    obs_dim: int = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)

    learns_online = False

    @classmethod
    def create(cls, config: AgentConfig, options: None, obs_dim: int, action_dim: int, seed: int = 0):
        rng, k_base = jax.random.split(jax.random.PRNGKey(seed))
        base, base_ema = new_base(config, k_base, obs_dim, action_dim)
        return cls(base=base, base_ema=base_ema, rng=rng, config=config, obs_dim=obs_dim, action_dim=action_dim)

    def act(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        return self.act_base(obs, rng), {}

    def act_eval(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        return self.act_base(obs, rng), {}

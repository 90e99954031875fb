"""An agent added from outside the package, the way a user adds a baseline: this file, plus the
one registry line at its foot. `EXPOFT_AGENTS=tests.plugins.random_candidate` makes every expoft
process (the bench's runs too) import it.

Random candidate: acts with one of N samples of its base, drawn uniformly (no critic): the
imitation level with N times the sampling cost, a sanity baseline for best-of-N."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from expoft.agents.common import WithBase, new_base
from expoft.agents.config import EXPOConfig
from expoft.agents.registry import AgentSpec, register


@flax.struct.dataclass
class RandomCandidateAgent(WithBase):
    base: Any
    base_ema: Any
    rng: jax.Array
    config: EXPOConfig = flax.struct.field(pytree_node=False)
    obs_dim: int = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)

    learns_online = False

    @classmethod
    def create(cls, config, baseline, obs_dim, action_dim, seed=0):
        rng, k_base = jax.random.split(jax.random.PRNGKey(seed))
        base, base_ema = new_base(config, k_base, obs_dim, action_dim)
        return cls(base=base, base_ema=base_ema, rng=rng, config=config, obs_dim=obs_dim, action_dim=action_dim)

    def act(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        k_sample, k_pick = jax.random.split(rng)
        n = self.config.num_base_samples
        samples = self.base_policy.sample(self.base_ema, k_sample, obs, n)[..., : self.exec_dim]  # [B, N, d]
        pick = jax.random.randint(k_pick, (samples.shape[0],), 0, n)
        return jnp.take_along_axis(samples, pick[:, None, None], axis=1)[:, 0], {"not_first": pick != 0}

    def act_eval(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        return self.act(obs, rng)


register(AgentSpec("random-candidate", RandomCandidateAgent.create, learns=False))

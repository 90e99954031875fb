"""An agent added from outside the package, the way a user adds a baseline: this file (the agent
and its own config), plus the one registry line at its foot.
`EXPOFT_AGENTS=tests.plugins.random_candidate` makes every expoft process (the bench's runs too)
import it.

Random candidate: acts with one of N samples of its base, drawn uniformly (no critic): the
imitation level with N times the sampling cost, a sanity baseline for best-of-N."""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from expoft.agents.bc import BCAgent
from expoft.agents.config import AgentConfig
from expoft.agents.registry import AgentSpec, register


@dataclasses.dataclass(frozen=True)
class RandomCandidateConfig:
    num_samples: int = 8
    """N: base samples drawn per decision, one of which is taken."""

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")


@flax.struct.dataclass
class RandomCandidateAgent(BCAgent):
    """BC's fields and construction (a base imitating the demonstrations, learning nothing
    online) plus its own config; only the acting rule differs."""

    options: RandomCandidateConfig = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, config: AgentConfig, options: RandomCandidateConfig, obs_dim: int, action_dim: int, seed: int = 0):
        bc = BCAgent.create(config, None, obs_dim, action_dim, seed)
        return cls(bc.base, bc.base_ema, bc.rng, config, obs_dim, action_dim, options)

    def act(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        k_sample, k_pick = jax.random.split(rng)
        n = self.options.num_samples
        samples = self.base_policy.sample(self.base_ema, k_sample, obs, n)[..., : self.exec_dim]  # [B, N, d]
        pick = jax.random.randint(k_pick, (samples.shape[0],), 0, n)
        return jnp.take_along_axis(samples, pick[:, None, None], axis=1)[:, 0], {"not_first": pick != 0}

    def act_eval(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        return self.act(obs, rng)


register(AgentSpec("random-candidate", RandomCandidateAgent.create, RandomCandidateConfig, learns=False))

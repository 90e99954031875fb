"""An agent added from outside the package, the way a user adds a baseline: this file, plus the
one registry line at its foot. `EXPOFT_AGENTS=tests.plugins.random_candidate` makes every expoft
process (the bench's runs too) import it.

Random candidate: acts with one of N samples of its base, drawn uniformly (no critic): the
imitation level with N times the sampling cost, a sanity baseline for best-of-N."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from expoft.agents.bc import BCAgent
from expoft.agents.registry import AgentSpec, register


@flax.struct.dataclass
class RandomCandidateAgent(BCAgent):
    """BC's fields and construction (a base imitating the demonstrations, learning nothing
    online); only the acting rule differs."""

    def act(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        k_sample, k_pick = jax.random.split(rng)
        n = self.config.num_base_samples
        samples = self.base_policy.sample(self.base_ema, k_sample, obs, n)[..., : self.exec_dim]  # [B, N, d]
        pick = jax.random.randint(k_pick, (samples.shape[0],), 0, n)
        return jnp.take_along_axis(samples, pick[:, None, None], axis=1)[:, 0], {"not_first": pick != 0}

    def act_eval(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        return self.act(obs, rng)


register(AgentSpec("random-candidate", RandomCandidateAgent.create, learns=False))

"""A trained flow or DDPM base policy as an external base: the stand-in "VLA".

Serve an expoft run's base from another process (``expoft serve RUN_DIR --port 8000``; the run is
loaded by ``expoft.train.build.run_base``) and fine-tune with ``expoft finetune --external-base
ws://127.0.0.1:8000 --base-training frozen``: the same path a pi0/pi0.5 behind openpi's server
takes, with a model that runs here.
"""

from __future__ import annotations

import jax
import numpy as np

from expoft.bases.interface import check_obs
from expoft.obs import batch_size


class RunBase:
    """``ExternalBase`` over a base policy (``expoft.policies``) and its parameters; ``chunk_len``
    actions of ``action_dim`` per sample."""

    learns = False

    def __init__(self, policy, params, obs_dim: int, action_dim: int, chunk_len: int):
        self.obs_dim, self.action_dim, self.chunk_len = obs_dim, action_dim, chunk_len
        self._sample = jax.jit(lambda key, obs, n: policy.sample(params, key, obs, n), static_argnums=2)

    def sample(self, obs: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
        obs = check_obs(obs, self.obs_dim)
        chunks = self._sample(jax.random.PRNGKey(seed), obs, int(num_samples))
        return np.asarray(chunks).reshape(batch_size(obs), num_samples, self.chunk_len, self.action_dim)

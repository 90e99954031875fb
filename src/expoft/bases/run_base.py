"""An expoft run's pretrained base (flow or DDPM) as an external base: the stand-in "VLA".

Serve it from another process (``python -m expoft.bases.server run RUN_DIR --port 8000``) and
fine-tune with ``expoft finetune --external-base ws://127.0.0.1:8000 --base-training frozen``:
the same path a pi0/pi0.5 behind openpi's server takes, with a model that runs here.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from expoft.bases.interface import check_obs
from expoft.obs import batch_size


class RunBase:
    """``ExternalBase`` over the (EMA) base of a run folder's latest checkpoint."""

    learns = False

    def __init__(self, run_dir: str | Path):
        from expoft.train.build import load_run_agent  # the training stack, only where a run is served

        cfg, agent, _ = load_run_agent(run_dir)
        if not getattr(agent, "has_base", False):
            raise ValueError(f"the run in {run_dir} ({cfg.algorithm}) has no base policy to serve")
        self.obs_dim, self.action_dim, self.chunk_len = agent.obs_dim, agent.action_dim, cfg.agent.chunk_len
        policy, params = agent.base_policy, agent.base_ema
        self._sample = jax.jit(lambda key, obs, n: policy.sample(params, key, obs, n), static_argnums=2)

    def sample(self, obs: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
        obs = check_obs(obs, self.obs_dim)
        chunks = self._sample(jax.random.PRNGKey(seed), obs, int(num_samples))
        return np.asarray(chunks).reshape(batch_size(obs), num_samples, self.chunk_len, self.action_dim)

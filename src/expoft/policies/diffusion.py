"""DDPM base policy (ALGORITHMS.md, EXPO step 1, the option).

T denoising steps on a variance-preserving cosine schedule; the network
predicts the noise (epsilon loss). Sampling runs the T ancestral steps with the
predicted clean action clipped to [-1, 1] (a standard stabiliser), and the
result clipped to [-1, 1].
"""

from __future__ import annotations

import dataclasses
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np

from expoft.policies.denoising import DenoisingPolicy


def cosine_betas(steps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule, betas clipped to 0.999."""
    x = np.linspace(0, steps, steps + 1) / steps
    alpha_bar = np.cos((x + s) / (1 + s) * np.pi / 2) ** 2
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return np.clip(betas, 0.0, 0.999).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class DiffusionPolicy(DenoisingPolicy):
    def _schedule(self):
        betas = jnp.asarray(cosine_betas(self.steps))
        alphas = 1.0 - betas
        alpha_bar = jnp.cumprod(alphas)
        alpha_bar_prev = jnp.concatenate([jnp.ones(1), alpha_bar[:-1]])
        return betas, alphas, alpha_bar, alpha_bar_prev

    def loss(self, params: dict, rng: jax.Array, obs: jax.Array, actions: jax.Array) -> jax.Array:
        _, _, alpha_bar, _ = self._schedule()
        noise_key, time_key = jax.random.split(rng)
        aug_key = jax.random.fold_in(rng, 1)  # only pixels use it; keeps the state path's stream
        params, obs = self.condition(params, obs, aug_key)
        eps = jax.random.normal(noise_key, actions.shape)
        t = jax.random.randint(time_key, actions.shape[:-1], 0, self.steps)
        ab = alpha_bar[t][..., None]
        xt = jnp.sqrt(ab) * actions + jnp.sqrt(1.0 - ab) * eps
        pred = cast(jax.Array, self.net.apply(params, obs, xt, t.astype(jnp.float32) / self.steps))
        return jnp.mean((pred - eps) ** 2)

    def sample(
        self, params: dict, rng: jax.Array, obs: jax.Array, num_samples: int, steps: int | None = None
    ) -> jax.Array:
        """``[B, D] -> [B, num_samples, d]``. DDPM always runs its T steps."""
        if steps not in (None, self.steps):
            raise ValueError(f"DDPM samples with its {self.steps} training steps; got steps={steps}")
        betas, alphas, alpha_bar, alpha_bar_prev = self._schedule()
        params, cond = self.condition(params, obs)
        init_key, loop_key = jax.random.split(rng)
        x = jax.random.normal(init_key, (cond.shape[0], num_samples, self.action_dim))

        def draw(key, _):  # every step's noise up front, from the key chain a step-by-step loop splits
            key, noise_key = jax.random.split(key)
            return key, jax.random.normal(noise_key, x.shape)

        _, noises = jax.lax.scan(draw, loop_key, length=self.steps)  # [T, B, N, d]

        def run(f, x, noises):
            def step(i, x):
                t = self.steps - 1 - i
                eps = f(x, t / self.steps)
                x0 = jnp.clip((x - jnp.sqrt(1.0 - alpha_bar[t]) * eps) / jnp.sqrt(alpha_bar[t]), -1.0, 1.0)
                coef_x0 = jnp.sqrt(alpha_bar_prev[t]) * betas[t] / (1.0 - alpha_bar[t])
                coef_xt = jnp.sqrt(alphas[t]) * (1.0 - alpha_bar_prev[t]) / (1.0 - alpha_bar[t])
                var = betas[t] * (1.0 - alpha_bar_prev[t]) / (1.0 - alpha_bar[t])
                return coef_x0 * x0 + coef_xt * x + jnp.where(t > 0, jnp.sqrt(var), 0.0) * noises[i]

            return jnp.clip(jax.lax.fori_loop(0, self.steps, step, x), -1.0, 1.0)

        return self.chain(params, cond, (x, jnp.moveaxis(noises, 0, 1)), run)

    def decode(self, params: dict, obs: jax.Array, noise: jax.Array, steps: int | None = None) -> jax.Array:
        """Deterministic noise -> action map (DDIM with eta = 0 on the same schedule and network):
        obs ``[..., D]``, noise x_T ``[..., d]`` -> ``[..., d]``. FQL distils it, DSRL steers its input."""
        if steps not in (None, self.steps):
            raise ValueError(f"DDPM decodes with its {self.steps} training steps; got steps={steps}")
        _, _, alpha_bar, alpha_bar_prev = self._schedule()
        params, obs = self.condition(params, obs)

        def step(i, x):
            t = self.steps - 1 - i
            eps = self.net.apply(params, obs, x, jnp.full(x.shape[:-1], t / self.steps))
            x0 = jnp.clip((x - jnp.sqrt(1.0 - alpha_bar[t]) * eps) / jnp.sqrt(alpha_bar[t]), -1.0, 1.0)
            eps = (x - jnp.sqrt(alpha_bar[t]) * x0) / jnp.sqrt(1.0 - alpha_bar[t])  # consistent with the clip
            return jnp.sqrt(alpha_bar_prev[t]) * x0 + jnp.sqrt(1.0 - alpha_bar_prev[t]) * eps

        return jnp.clip(jax.lax.fori_loop(0, self.steps, step, noise), -1.0, 1.0)

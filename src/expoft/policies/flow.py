"""Flow-matching base policy (ALGORITHMS.md, EXPO step 1, the default).

Training: x0 ~ N(0, I), x1 = a, t ~ U(0, 1), x_t = (1 - t) x0 + t x1,
loss = || v(s, x_t, t) - (x1 - x0) ||^2 (mean over batch and action dims).
Sampling: ``steps`` Euler steps from t = 0 to 1, clipped to [-1, 1].
"""

from __future__ import annotations

import dataclasses
from typing import cast

import jax
import jax.numpy as jnp

from expoft.policies.denoising import DenoisingPolicy


@dataclasses.dataclass(frozen=True)
class FlowPolicy(DenoisingPolicy):
    def loss(self, params: dict, rng: jax.Array, obs: jax.Array, actions: jax.Array) -> jax.Array:
        noise_key, time_key = jax.random.split(rng)
        aug_key = jax.random.fold_in(rng, 1)  # only pixels use it; keeps the state path's stream
        net_params, cond = self.condition(params, obs, aug_key)
        x0 = jax.random.normal(noise_key, actions.shape)
        t = jax.random.uniform(time_key, actions.shape[:-1])
        xt = (1.0 - t[..., None]) * x0 + t[..., None] * actions
        v = cast(jax.Array, self.net.apply(net_params, cond, xt, t))
        return jnp.mean((v - (actions - x0)) ** 2)

    def sample(
        self, params: dict, rng: jax.Array, obs: jax.Array, num_samples: int, steps: int | None = None
    ) -> jax.Array:
        """``[B, D] -> [B, num_samples, d]``; ``steps`` overrides the Euler step count."""
        net_params, cond = self.condition(params, obs)
        noise = jax.random.normal(rng, (cond.shape[0], num_samples, self.action_dim))
        steps = steps or self.steps
        dt = 1.0 / steps

        def run(f, x):
            x = jax.lax.fori_loop(0, steps, lambda k, x: x + dt * f(x, k * dt), x)
            return jnp.clip(x, -1.0, 1.0)

        return self.chain(net_params, cond, (noise,), run)

    def decode(self, params: dict, obs: jax.Array, noise: jax.Array, steps: int | None = None) -> jax.Array:
        """The deterministic map from noise x0 to an action: obs ``[..., D]``, noise ``[..., d]``
        (same leading shape) -> ``[..., d]``. FQL distils it, DSRL steers its input."""
        return self._integrate(*self.condition(params, obs), noise, steps)

    def _integrate(self, params: dict, cond: jax.Array, noise: jax.Array, steps: int | None) -> jax.Array:
        steps = steps or self.steps
        x = noise
        dt = 1.0 / steps

        def euler(k, x):
            t = jnp.full(x.shape[:-1], k * dt)
            return x + dt * self.net.apply(params, cond, x, t)

        x = jax.lax.fori_loop(0, steps, euler, x)
        return jnp.clip(x, -1.0, 1.0)

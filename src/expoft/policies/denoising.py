"""What the flow and DDPM bases share: the network, its size, and initialisation."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from expoft.nets import DenoisingNet


@dataclasses.dataclass(frozen=True)
class DenoisingPolicy:
    """A base policy built on ``DenoisingNet(obs, x_t, t)``; ``steps`` denoising steps."""

    action_dim: int
    steps: int = 10
    width: int = 256
    blocks: int = 3
    time_features: int = 128

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"{type(self).__name__} steps must be >= 1, got {self.steps}")

    @property
    def net(self) -> DenoisingNet:
        return DenoisingNet(self.action_dim, self.width, self.blocks, self.time_features)

    def init(self, rng: jax.Array, obs_dim: int) -> dict:
        return self.net.init(rng, jnp.zeros((1, obs_dim)), jnp.zeros((1, self.action_dim)), jnp.zeros((1,)))

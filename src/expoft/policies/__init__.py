"""Expressive base policies ``pi_base(a | s)``.

Every base policy offers the same three pure functions (see :class:`BasePolicy`);
``action_dim`` is the flattened size of what it emits (``chunk_len * A`` for chunks).
"""

from __future__ import annotations

from typing import Protocol

import jax

from expoft.policies.diffusion import DiffusionPolicy
from expoft.policies.flow import FlowPolicy


class BasePolicy(Protocol):
    action_dim: int

    def init(self, rng: jax.Array, obs_dim: int) -> dict:
        """Fresh parameters."""

    def loss(self, params: dict, rng: jax.Array, obs: jax.Array, actions: jax.Array) -> jax.Array:
        """Imitation loss (scalar) of actions ``[B, d]`` given obs ``[B, D]``."""

    def sample(self, params: dict, rng: jax.Array, obs: jax.Array, num_samples: int) -> jax.Array:
        """``num_samples`` actions per observation: ``[B, D] -> [B, n, d]`` in [-1, 1]."""


BASE_POLICIES = {"flow": FlowPolicy, "ddpm": DiffusionPolicy}

__all__ = ["BASE_POLICIES", "BasePolicy", "DiffusionPolicy", "FlowPolicy"]

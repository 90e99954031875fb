"""What the flow and DDPM bases share: the network, its size, initialisation, and how an
observation becomes the network's conditioning input (a state vector as it is; pixels through
the base's own image encoder, trained by the imitation loss only)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax.typing import VariableDict

from expoft.encoders import EncoderConfig, PixelEncoder, encode
from expoft.nets import DenoisingNet, conditioned_denoiser
from expoft.obs import ObsSpec, PixelSpec
from expoft.obs import zeros as blank_obs

SAMPLE_BLOCK_ROWS = 2048
"""Rows (observations x samples) the sampling chain runs at once. Blocks of this size keep a
layer's activations (2048 x 256 floats, 2 MB) in cache; the whole update pool at once (5120
observations x 8 samples) ran 2.1x slower on one core of this machine (2026-12-05)."""


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

    encoder: EncoderConfig = EncoderConfig()
    """Image encoder (and augmentation during imitation) for pixel observations; unused for states."""

    def init(self, rng: jax.Array, obs_dim: ObsSpec) -> VariableDict:
        """Parameters for state observations of size ``obs_dim``, or for pixel observations
        (``obs_dim`` a ``PixelSpec``: then ``{"encoder": ..., "net": ...}``)."""
        x, t = jnp.zeros((1, self.action_dim)), jnp.zeros((1,))
        if not isinstance(obs_dim, PixelSpec):
            return self.net.init(rng, jnp.zeros((1, obs_dim)), x, t)
        k_enc, k_net = jax.random.split(rng)
        encoder = PixelEncoder(self.encoder)
        enc_params = encoder.init(k_enc, blank_obs(obs_dim))
        features = encoder.apply(enc_params, blank_obs(obs_dim))
        return {"encoder": enc_params, "net": self.net.init(k_net, features, x, t)}

    def condition(self, params: Any, obs: Any, rng: jax.Array | None = None) -> tuple[Any, jax.Array]:
        """``(network params, conditioning [..., F])`` of observations. Pixels are encoded once per
        observation (not once per sample or denoising step); ``rng``: augment them first (training)."""
        if not isinstance(obs, dict):
            return params, obs
        return params["net"], encode(self.encoder, params["encoder"], obs, rng)

    def chain(self, params: Any, cond: jax.Array, per_row: Any, run: Callable) -> jax.Array:
        """``run(f, *row)`` for every observation, where ``f(x [N, d], t)`` is the network under
        that observation's conditioning (``conditioned_denoiser``) and ``row`` its slices of the
        arrays ``per_row`` (leading axis B, as ``cond [B, F]``); blocks of SAMPLE_BLOCK_ROWS rows.
        Row results do not depend on the blocking: it changes speed, not samples."""
        num_samples = jax.tree.leaves(per_row)[0].shape[1]

        def one(args):
            c, row = args
            return run(conditioned_denoiser(self.net, params, c), *row)

        return jax.lax.map(one, (cond, per_row), batch_size=max(1, SAMPLE_BLOCK_ROWS // num_samples))

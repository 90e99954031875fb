"""The critic ensemble of a config, for state or pixel observations.

State observations: ``num_critics`` LayerNorm MLPs on ``concat(s, a)`` (ALGORITHMS.md, EXPO 3).
Pixel observations (EXPO-FT 3): ONE image encoder plus proprioception embedding, trained by the
critic loss, feeds every member; the members are the same MLPs on ``concat(features, a)``.
Sharing the encoder keeps ten critics affordable on images; the members still differ in their
heads and initialisation. The encoder's features (gradient stopped) are what the edit policy
reads.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import jax
import jax.numpy as jnp

from expoft.encoders import EncoderConfig, PixelEncoder, encode
from expoft.nets import Critic, Ensemble


def broadcast_rows(x: jax.Array, actions: jax.Array) -> jax.Array:
    """Rows ``x [B, F]`` repeated along the extra axes of ``actions [B, ..., d]``."""
    x = x.reshape(x.shape[0], *([1] * (actions.ndim - 2)), x.shape[-1])
    return jnp.broadcast_to(x, (*actions.shape[:-1], x.shape[-1]))


class EncodedEnsemble:
    """Critic ensemble on pixel observations; parameters ``{"encoder": ..., "heads": ...}``.

    ``apply(params, obs [B], actions [B, ..., d]) -> [E, B, ...]``: the observation is encoded
    once per row whatever the number of candidate actions per row."""

    def __init__(self, heads: Ensemble, encoder: EncoderConfig):
        self.heads = heads
        self.encoder = encoder
        self.size = heads.size

    def features(self, params: Any, obs: dict, rng: jax.Array | None = None) -> jax.Array:
        """``[B, F]``; ``rng``: augment the images first (critic training)."""
        return encode(self.encoder, params["encoder"], obs, rng)

    def init(self, rng: jax.Array, obs: dict, actions: jax.Array) -> dict:
        k_enc, k_heads = jax.random.split(rng)
        encoder = PixelEncoder(self.encoder).init(k_enc, obs)
        features = PixelEncoder(self.encoder).apply(encoder, obs)
        return {"encoder": encoder, "heads": self.heads.init(k_heads, features, actions)}

    def apply(self, params: Any, obs: dict, actions: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        return self.apply_features(params, self.features(params, obs, rng), actions)

    def apply_features(self, params: Any, features: jax.Array, actions: jax.Array) -> jax.Array:
        """All members on precomputed features ``[B, F]``: ``[E, B, ...]``."""
        return self.heads.apply(params["heads"], broadcast_rows(features, actions), actions)

    def apply_subset(self, params: Any, members: jax.Array, obs: dict, actions: jax.Array) -> jax.Array:
        features = self.features(params, obs)
        return self.heads.apply_subset(params["heads"], members, broadcast_rows(features, actions), actions)

    def random_members(self, rng: jax.Array, m: int) -> jax.Array:
        return self.heads.random_members(rng, m)


@overload
def critic_ensemble(cfg, pixels: Literal[False] = False) -> Ensemble: ...
@overload
def critic_ensemble(cfg, pixels: Literal[True]) -> EncodedEnsemble: ...
@overload
def critic_ensemble(cfg, pixels: bool) -> Ensemble | EncodedEnsemble: ...
def critic_ensemble(cfg, pixels: bool = False) -> Ensemble | EncodedEnsemble:
    """The critic ensemble of a config: ``num_critics`` LayerNorm MLPs, behind a shared image
    encoder (``cfg.encoder``) for pixel observations."""
    heads = Ensemble(Critic(cfg.critic_hidden, layer_norm=True, zero_output=cfg.critic_zero_init), cfg.num_critics)
    return EncodedEnsemble(heads, cfg.encoder) if pixels else heads


def q_values(ensemble, params: Any, obs: Any, actions: jax.Array, rng: jax.Array) -> jax.Array:
    """All members' Q ``[E, B, ...]`` for training: pixel observations are augmented with ``rng``."""
    if isinstance(ensemble, EncodedEnsemble):
        return ensemble.apply(params, obs, actions, rng)
    return ensemble.apply(params, obs, actions)

"""Residual RL (ResFiT-style): a frozen base plus a small learned correction, TD3-style
(ALGORITHMS.md, "baselines"; Ankile et al. 2025).

The action is ``clip(a_b + delta)``, ``a_b`` one sample of the frozen (EMA) base (the executed
part of its chunk) and ``delta = scale * tanh(f(s, a_b))`` per action dimension (scale 0.1),
with the last layer of f zero-initialised so that learning starts from the base exactly.
Exploration: Gaussian noise on delta. Critic: the shared ensemble on executed actions; the
target uses the target residual policy with clipped smoothing noise at a fresh base sample
of s' (TD3), and the min over a random subset of target critics. The residual policy takes
``actor_steps`` deterministic-policy-gradient steps per update call on the mean of the ensemble
(TD3's delayed actor: with UTD 20 that is one actor step per 20 critic steps by default).
Speed: the base samples of a call's pool are drawn once per call (the base is frozen).
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from expoft.agents.common import (
    Trainable,
    WithBase,
    check_pool,
    critic_ensemble,
    critic_steps,
    minibatch_indices,
    new_base,
    polyak,
    subset_min,
)
from expoft.agents.config import AgentConfig
from expoft.data.chunk_sampling import ChunkBatch
from expoft.nets import MLP
from expoft.validation import require_at_least, require_positive


@dataclasses.dataclass(frozen=True)
class ResidualConfig:
    """Residual RL's own settings (the correction network's size and rate are shared:
    ``AgentConfig``)."""

    residual_scale: float = 0.1
    """The correction is scale * tanh(...) per action dimension (0.1-0.2)."""
    residual_explore_noise: float = 0.1
    """Gaussian exploration noise on the correction, as a fraction of the scale."""
    residual_target_noise: float = 0.2
    """TD3 target smoothing: noise on the target correction, a fraction of the scale, clipped
    to twice that."""

    def __post_init__(self):
        require_positive(self, "residual_scale")
        require_at_least(self, 0, "residual_explore_noise", "residual_target_noise")


class ResidualHead(nn.Module):
    """``f(s, a_b)`` with a zero-initialised output layer: the correction starts at exactly 0."""

    out_dim: int
    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = MLP(self.hidden, layer_norm=True)(x)
        return nn.Dense(self.out_dim, kernel_init=nn.initializers.zeros)(h)


@flax.struct.dataclass
class ResidualAgent(WithBase):
    base: Trainable
    base_ema: Any
    actor: Trainable
    target_actor: Any
    critic: Trainable
    target_critic: Any
    rng: jax.Array
    config: AgentConfig = flax.struct.field(pytree_node=False)
    options: ResidualConfig = flax.struct.field(pytree_node=False)
    obs_dim: int = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)

    learns_online = True

    @classmethod
    def create(cls, config: AgentConfig, options: ResidualConfig, obs_dim: int, action_dim: int, seed: int = 0):
        if config.base_training != "frozen":
            raise ValueError(
                "residual RL corrects a frozen base: set base_training='frozen' (the residual method does)"
            )
        rng, k_base, k_actor, k_critic = jax.random.split(jax.random.PRNGKey(seed), 4)
        base, base_ema = new_base(config, k_base, obs_dim, action_dim)
        exec_dim = config.exec_len * action_dim
        actor = ResidualHead(exec_dim, config.actor_hidden).init(k_actor, jnp.zeros((1, obs_dim + exec_dim)))
        critic = critic_ensemble(config).init(k_critic, jnp.zeros((1, obs_dim)), jnp.zeros((1, exec_dim)))
        return cls(
            base=base,
            base_ema=base_ema,
            actor=Trainable.create(actor, optax.adam(config.actor_lr)),
            target_actor=actor,
            critic=Trainable.create(critic, optax.adam(config.critic_lr)),
            target_critic=critic,
            rng=rng,
            config=config,
            options=options,
            obs_dim=obs_dim,
            action_dim=action_dim,
        )

    def correction(self, params: Any, obs: jax.Array, base_action: jax.Array) -> jax.Array:
        head = ResidualHead(self.exec_dim, self.config.actor_hidden)
        out = cast(jax.Array, head.apply(params, jnp.concatenate([obs, base_action], -1)))
        return self.options.residual_scale * jnp.tanh(out)

    def _noisy(self, rng: jax.Array, delta: jax.Array, fraction: float, clip: float | None) -> jax.Array:
        scale = self.options.residual_scale
        noise = fraction * scale * jax.random.normal(rng, delta.shape)
        if clip is not None:
            noise = jnp.clip(noise, -clip * scale, clip * scale)
        return jnp.clip(delta + noise, -scale, scale)

    def act(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        k_base, k_noise = jax.random.split(rng)
        a_b = self.act_base(obs, k_base)
        delta = self._noisy(
            k_noise, self.correction(self.actor.params, obs, a_b), self.options.residual_explore_noise, None
        )
        return jnp.clip(a_b + delta, -1.0, 1.0), {}

    def act_eval(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        a_b = self.act_base(obs, rng)
        return jnp.clip(a_b + self.correction(self.actor.params, obs, a_b), -1.0, 1.0), {}

    def update(self, pool: ChunkBatch, base_batch: ChunkBatch | None = None) -> tuple[ResidualAgent, dict]:
        cfg, bl = self.config, self.options
        pool = check_pool(cfg, pool, self.action_dim)
        rng, k_idx, k_b_next, k_b_now, k_scan = jax.random.split(self.rng, 5)
        index = minibatch_indices(cfg, k_idx)
        base_next = self.act_base(pool.next_observations, k_b_next)  # [P, exec_dim]
        base_now = self.act_base(pool.observations, k_b_now)

        def next_value(key, idx, mb, target):
            k_members, k_smooth = jax.random.split(key)
            a_b = base_next[idx]
            delta = self.correction(self.target_actor, mb.next_observations, a_b)
            delta = self._noisy(k_smooth, delta, bl.residual_target_noise, 2.0 * bl.residual_target_noise)
            a_next = jnp.clip(a_b + delta, -1.0, 1.0)
            return subset_min(cfg, target, k_members, mb.next_observations, a_next), {}

        ensemble = critic_ensemble(cfg)
        critic, target, metrics = critic_steps(
            self.critic, self.target_critic, ensemble, pool, index, k_scan, cfg.tau, next_value
        )

        def actor_step(carry, idx):
            actor, target_actor = carry
            obs, a_b = pool.observations[idx], base_now[idx]

            def loss_fn(params):
                delta = self.correction(params, obs, a_b)
                q = ensemble.apply(critic.params, obs, jnp.clip(a_b + delta, -1.0, 1.0)).mean(axis=0)
                return -q.mean(), jnp.abs(delta).mean()

            (loss, magnitude), grads = jax.value_and_grad(loss_fn, has_aux=True)(actor.params)
            actor = actor.apply_gradients(grads)
            return (actor, polyak(target_actor, actor.params, cfg.tau)), {
                "actor/loss": loss,
                "actor/residual_magnitude": magnitude,
            }

        (actor, target_actor), actor_metrics = jax.lax.scan(
            actor_step, (self.actor, self.target_actor), index[-cfg.actor_steps :]
        )
        metrics.update(jax.tree.map(jnp.mean, actor_metrics))
        agent = self.replace(actor=actor, target_actor=target_actor, critic=critic, target_critic=target, rng=rng)
        return agent, metrics

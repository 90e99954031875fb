"""DSRL: steer a frozen diffusion/flow base through its input noise (ALGORITHMS.md, "baselines";
Wagenmaker et al. 2025, the noise-aliased variant DSRL-NA).

The base is frozen. A tanh-Gaussian noise policy ``w = scale * tanh(z)`` (scale 1.5) picks the
base's input noise; the action is the base's deterministic map ``base(s, w)`` (Euler for
flow, DDIM for DDPM), of which the first ``exec_len`` steps are executed. Two critics:
- the action critic Q^A(s, a), the shared ensemble, learned by TD on the executed actions in
  the buffer (offline and online alike), target at ``a' = base(s', w')``, ``w' ~ pi(s')``;
- the noise critic Q^W(s, w) (2 members), regressed onto the mean of Q^A(s, base(s, w)) at
  noise drawn from the base's own N(0, I), so it covers noises the policy has not tried. It
  takes one regression step per critic step (UTD per call), as in DSRL-NA, on the critic of
  the end of the call: with one step per actor step it would get 1/UTD of the action
  critic's training and the noise policy would chase an under-fitted Q^W.
The noise policy is SAC on Q^W; its temperature targets entropy -d/2 of u = tanh(z).
Speed: the target actions of a call's pool are decoded once per call (the noise policy and
the base do not change during the critic steps).
"""

from __future__ import annotations

import dataclasses
from typing import Any

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
    sac_actor_step,
    subset_min,
    tanh_actor,
    temperature,
)
from expoft.agents.config import AgentConfig
from expoft.data.chunk_sampling import ChunkBatch
from expoft.nets import Critic, Ensemble, TanhGaussian
from expoft.validation import require_positive

NOISE_CRITICS = 2


@dataclasses.dataclass(frozen=True)
class DSRLConfig:
    """DSRL's own settings (the noise policy's size and rates are shared: ``AgentConfig``)."""

    dsrl_noise_scale: float = 1.5
    """The noise policy acts in [-scale, scale]^d."""

    def __post_init__(self):
        require_positive(self, "dsrl_noise_scale")


@flax.struct.dataclass
class DSRLAgent(WithBase):
    base: Trainable
    base_ema: Any
    noise_actor: Trainable
    noise_critic: Trainable
    critic: Trainable
    target_critic: Any
    log_alpha: Trainable
    rng: jax.Array
    config: AgentConfig = flax.struct.field(pytree_node=False)
    options: DSRLConfig = flax.struct.field(pytree_node=False)
    obs_dim: int = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)

    learns_online = True

    @classmethod
    def create(cls, config: AgentConfig, options: DSRLConfig, obs_dim: int, action_dim: int, seed: int = 0):
        if config.base_training != "frozen":
            raise ValueError("DSRL steers a frozen base: set base_training='frozen' (the dsrl method does)")
        rng, k_base, k_actor, k_noise, k_critic = jax.random.split(jax.random.PRNGKey(seed), 5)
        base, base_ema = new_base(config, k_base, obs_dim, action_dim)
        base_dim, exec_dim = config.chunk_len * action_dim, config.exec_len * action_dim
        obs0 = jnp.zeros((1, obs_dim))
        actor = TanhGaussian(base_dim, config.actor_hidden).init(k_actor, obs0)
        noise_critic = _noise_critics(config).init(k_noise, obs0, jnp.zeros((1, base_dim)))
        critic = critic_ensemble(config).init(k_critic, obs0, jnp.zeros((1, exec_dim)))
        return cls(
            base=base,
            base_ema=base_ema,
            noise_actor=Trainable.create(actor, optax.adam(config.actor_lr)),
            noise_critic=Trainable.create(noise_critic, optax.adam(config.critic_lr)),
            critic=Trainable.create(critic, optax.adam(config.critic_lr)),
            target_critic=critic,
            log_alpha=temperature(config.actor_init_temperature, config.temperature_lr),
            rng=rng,
            config=config,
            options=options,
            obs_dim=obs_dim,
            action_dim=action_dim,
        )

    @property
    def head(self) -> TanhGaussian:
        return TanhGaussian(self.base_dim, self.config.actor_hidden)

    def _decode(self, obs: jax.Array, noise: jax.Array) -> jax.Array:
        """The executed part of the frozen base's action for this noise: ``[B, exec_dim]``."""
        return self.base_policy.decode(self.base_ema, obs, noise)[:, : self.exec_dim]

    def _noise(self, rng: jax.Array, obs: jax.Array, explore: bool) -> jax.Array:
        return tanh_actor(self.head, self.noise_actor.params, rng, obs, self.options.dsrl_noise_scale, explore)[0]

    def act(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        return self._decode(obs, self._noise(rng, obs, explore=True)), {}

    def act_eval(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        return self._decode(obs, self._noise(rng, obs, explore=False)), {}

    def update(self, pool: ChunkBatch, base_batch: ChunkBatch | None = None) -> tuple[DSRLAgent, dict]:
        cfg, scale = self.config, self.options.dsrl_noise_scale
        pool = check_pool(cfg, pool, self.action_dim)
        rng, k_idx, k_next, k_scan, k_actor = jax.random.split(self.rng, 5)
        index = minibatch_indices(cfg, k_idx)
        next_actions = self._decode(pool.next_observations, self._noise(k_next, pool.next_observations, True))

        def next_value(key, idx, mb, target):
            return subset_min(cfg, target, key, mb.next_observations, next_actions[idx]), {}

        ensemble = critic_ensemble(cfg)
        critic, target, metrics = critic_steps(
            self.critic, self.target_critic, ensemble, pool, index, k_scan, cfg.tau, next_value
        )
        noise_critics = _noise_critics(cfg)

        def distill_step(noise_critic, xs):
            idx, key = xs
            obs = pool.observations[idx]
            w = jax.random.normal(key, (obs.shape[0], self.base_dim))
            y = jax.lax.stop_gradient(ensemble.apply(critic.params, obs, self._decode(obs, w)).mean(axis=0))

            def distill_loss(params):
                return jnp.mean((noise_critics.apply(params, obs, w) - y) ** 2)

            loss, grads = jax.value_and_grad(distill_loss)(noise_critic.params)
            return noise_critic.apply_gradients(grads), loss

        k_distill, k_actor = jax.random.split(k_actor)
        noise_critic, distill_losses = jax.lax.scan(
            distill_step, self.noise_critic, (index, jax.random.split(k_distill, index.shape[0]))
        )
        metrics["noise_critic/loss"] = distill_losses.mean()

        def actor_step(carry, xs):
            actor, log_alpha = carry
            idx, key = xs
            obs = pool.observations[idx]
            actor, log_alpha, m = sac_actor_step(
                actor, self.head, log_alpha, key, obs,
                lambda noise: noise_critics.apply(noise_critic.params, obs, noise).mean(axis=0),
                cfg.target_entropy_per_dim * self.base_dim, scale,
            )  # fmt: skip
            return (actor, log_alpha), m

        keys = jax.random.split(k_actor, cfg.actor_steps)
        (actor, log_alpha), actor_metrics = jax.lax.scan(
            actor_step, (self.noise_actor, self.log_alpha), (index[-cfg.actor_steps :], keys)
        )
        metrics.update(jax.tree.map(jnp.mean, actor_metrics))
        agent = self.replace(
            noise_critic=noise_critic,
            noise_actor=actor,
            log_alpha=log_alpha,
            critic=critic,
            target_critic=target,
            rng=rng,
        )
        return agent, metrics


def _noise_critics(cfg: AgentConfig) -> Ensemble:
    return Ensemble(Critic(cfg.critic_hidden, layer_norm=True, zero_output=cfg.critic_zero_init), NOISE_CRITICS)

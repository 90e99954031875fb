"""RLPD: SAC with a tanh-Gaussian policy and the offline data in every batch (ALGORITHMS.md,
"baselines"; Ball et al. 2023).

No base policy and no pretraining: the actor starts from scratch, and the offline
demonstrations enter only as half of every critic minibatch (symmetric sampling). The
critic is the shared ensemble (E = 10, LayerNorm, min over a random subset of 2 in the
target), UTD 20 per update call; the actor and the temperature take ``actor_steps`` steps
per call on the last critic minibatches, maximising the mean of the ensemble.
With chunks, the policy emits the executed chunk (``exec_len`` actions) at once.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Self

import flax.struct
import jax
import jax.numpy as jnp
import optax

from expoft.agents.common import (
    Trainable,
    check_pool,
    critic_ensemble,
    critic_steps,
    minibatch_indices,
    sac_actor_step,
    subset_min,
    tanh_actor,
    temperature,
)
from expoft.agents.config import AgentConfig
from expoft.data.chunk_sampling import ChunkBatch
from expoft.nets import TanhGaussian


@dataclasses.dataclass(frozen=True)
class RLPDConfig:
    """RLPD's own settings (the actor's size and rates are shared: ``AgentConfig``)."""

    backup_entropy: bool = False
    """Subtract alpha * log pi(a'|s') in the TD target (SAC's soft backup). Off by default, as for
    EXPO (ALGORITHMS.md) and as RLPD itself runs sparse-reward tasks: with a 0/1 reward the
    entropy bonus summed over ~100 steps would outweigh the reward."""


@flax.struct.dataclass
class RLPDAgent:
    actor: Trainable
    critic: Trainable
    target_critic: Any
    log_alpha: Trainable
    rng: jax.Array
    config: AgentConfig = flax.struct.field(pytree_node=False)
    options: RLPDConfig = flax.struct.field(pytree_node=False)
    obs_dim: int = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)

    if TYPE_CHECKING:  # added by flax.struct.dataclass, which type checkers do not see

        def replace(self, **updates: Any) -> Self: ...

    has_base = False
    learns_online = True

    @property
    def exec_dim(self) -> int:
        return self.config.exec_len * self.action_dim

    @property
    def head(self) -> TanhGaussian:
        return TanhGaussian(self.exec_dim, self.config.actor_hidden)

    @classmethod
    def create(cls, config: AgentConfig, options: RLPDConfig, obs_dim: int, action_dim: int, seed: int = 0):
        rng, k_actor, k_critic = jax.random.split(jax.random.PRNGKey(seed), 3)
        exec_dim = config.exec_len * action_dim
        actor_params = TanhGaussian(exec_dim, config.actor_hidden).init(k_actor, jnp.zeros((1, obs_dim)))
        critic_params = critic_ensemble(config).init(k_critic, jnp.zeros((1, obs_dim)), jnp.zeros((1, exec_dim)))
        return cls(
            actor=Trainable.create(actor_params, optax.adam(config.actor_lr)),
            critic=Trainable.create(critic_params, optax.adam(config.critic_lr)),
            target_critic=critic_params,
            log_alpha=temperature(config.actor_init_temperature, config.temperature_lr),
            rng=rng,
            config=config,
            options=options,
            obs_dim=obs_dim,
            action_dim=action_dim,
        )

    def act(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        return tanh_actor(self.head, self.actor.params, rng, obs, 1.0, explore=True)[0], {}

    def act_eval(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        """The policy's mode, as SAC evaluates."""
        return tanh_actor(self.head, self.actor.params, rng, obs, 1.0, explore=False)[0], {}

    def next_value(self, rng: jax.Array, mb: ChunkBatch, target: Any) -> jax.Array:
        """``min_subset Q'(s', a') - alpha * log pi(a'|s')``, a' ~ pi(s') (entropy term optional)."""
        k_act, k_members = jax.random.split(rng)
        a_next, log_prob = tanh_actor(self.head, self.actor.params, k_act, mb.next_observations, 1.0, explore=True)
        v = subset_min(self.config, target, k_members, mb.next_observations, a_next)
        if self.options.backup_entropy:
            v = v - jnp.exp(self.log_alpha.params) * log_prob
        return v

    def update(self, pool: ChunkBatch, base_batch: ChunkBatch | None = None) -> tuple[RLPDAgent, dict]:
        cfg = self.config
        pool = check_pool(cfg, pool, self.action_dim)
        rng, k_idx, k_scan, k_actor = jax.random.split(self.rng, 4)
        index = minibatch_indices(cfg, k_idx)
        ensemble = critic_ensemble(cfg)
        critic, target, metrics = critic_steps(
            self.critic, self.target_critic, ensemble, pool, index, k_scan, cfg.tau,
            lambda key, idx, mb, tgt: (self.next_value(key, mb, tgt), {}),
        )  # fmt: skip

        def actor_step(carry, xs):
            actor, log_alpha = carry
            idx, key = xs
            obs = pool.observations[idx]
            actor, log_alpha, m = sac_actor_step(
                actor, self.head, log_alpha, key, obs,
                lambda a: ensemble.apply(critic.params, obs, a).mean(axis=0),
                cfg.target_entropy_per_dim * self.exec_dim,
            )  # fmt: skip
            return (actor, log_alpha), m

        keys = jax.random.split(k_actor, cfg.actor_steps)
        (actor, log_alpha), actor_metrics = jax.lax.scan(
            actor_step, (self.actor, self.log_alpha), (index[-cfg.actor_steps :], keys)
        )
        metrics.update(jax.tree.map(jnp.mean, actor_metrics))
        agent = self.replace(actor=actor, critic=critic, target_critic=target, log_alpha=log_alpha, rng=rng)
        return agent, metrics

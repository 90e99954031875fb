"""FQL and QC-FQL: a one-step policy that maximises Q while distilling the flow base (ALGORITHMS.md,
"baselines"; Park et al. 2025, and its chunked form from Q-chunking, Li et al. 2025).

The base (flow or DDPM) learns by imitation exactly as EXPO's does. The one-step policy
``mu(s, z)`` maps the base's input noise z to an action chunk in one network call; its loss
is ``alpha * ||mu(s, z) - base(s, z)||^2 - Q(s, mu(s, z))``, ``base(s, z)`` the base's own
deterministic noise-to-action map (Euler for flow, DDIM for DDPM) and Q the mean of the
ensemble (divided by mean |Q| with ``fql_normalize_q``). It acts, evaluates and forms the
TD target (min over a random subset of target critics at ``mu(s', z')``).

P1 adaptation (deviation): FQL trains its one-step policy jointly with the critic offline.
Here only the base is pretrained (as for EXPO); the one-step policy is distilled from it
during that pretraining (the Q term needs a critic, which starts online), so it does not
begin the online phase as a random policy. The TD target takes the harness's min over a
random subset of target critics (FQL's own code uses the mean or min of two, per task).
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import flax.struct
import jax
import jax.numpy as jnp
import optax

from expoft.agents.common import (
    Trainable,
    WithBase,
    base_batch_arrays,
    check_pool,
    critic_ensemble,
    critic_steps,
    minibatch_indices,
    new_base,
    subset_min,
)
from expoft.agents.config import AgentConfig
from expoft.data.chunk_sampling import ChunkBatch
from expoft.nets import MLP
from expoft.validation import require_at_least


@dataclasses.dataclass(frozen=True)
class FQLConfig:
    """FQL's own settings (also QC-FQL's; the one-step policy's size and rate are shared:
    ``AgentConfig``)."""

    fql_alpha: float = 100.0
    """Weight of the distillation loss ||mu(s, z) - flow(s, z)||^2 (per task in the FQL paper;
    with ``fql_normalize_q`` the Q term is scale-free, so one value serves more tasks)."""
    fql_normalize_q: bool = True
    """Divide the Q term of the one-step policy's loss by mean |Q| (no gradient)."""

    def __post_init__(self):
        require_at_least(self, 0, "fql_alpha")


@flax.struct.dataclass
class FQLAgent(WithBase):
    base: Trainable
    base_ema: Any
    onestep: Trainable
    critic: Trainable
    target_critic: Any
    rng: jax.Array
    config: AgentConfig = flax.struct.field(pytree_node=False)
    options: FQLConfig = flax.struct.field(pytree_node=False)
    obs_dim: int = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)

    learns_online = True

    @classmethod
    def create(cls, config: AgentConfig, options: FQLConfig, obs_dim: int, action_dim: int, seed: int = 0):
        rng, k_base, k_one, k_critic = jax.random.split(jax.random.PRNGKey(seed), 4)
        base, base_ema = new_base(config, k_base, obs_dim, action_dim)
        base_dim, exec_dim = config.chunk_len * action_dim, config.exec_len * action_dim
        onestep = MLP(config.actor_hidden, base_dim).init(k_one, jnp.zeros((1, obs_dim + base_dim)))
        critic = critic_ensemble(config).init(k_critic, jnp.zeros((1, obs_dim)), jnp.zeros((1, exec_dim)))
        return cls(
            base=base,
            base_ema=base_ema,
            onestep=Trainable.create(onestep, optax.adam(config.actor_lr)),
            critic=Trainable.create(critic, optax.adam(config.critic_lr)),
            target_critic=critic,
            rng=rng,
            config=config,
            options=options,
            obs_dim=obs_dim,
            action_dim=action_dim,
        )

    # ---- acting ----------------------------------------------------------
    def _mu(self, params: Any, obs: jax.Array, z: jax.Array) -> jax.Array:
        """The one-step policy: a whole chunk ``[B, base_dim]`` in [-1, 1]."""
        out = cast(
            jax.Array, MLP(self.config.actor_hidden, self.base_dim).apply(params, jnp.concatenate([obs, z], axis=-1))
        )
        return jnp.clip(out, -1.0, 1.0)

    def act(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        z = jax.random.normal(rng, (obs.shape[0], self.base_dim))
        return self._mu(self.onestep.params, obs, z)[:, : self.exec_dim], {}

    def act_eval(self, obs: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
        """FQL evaluates the policy it acts with (noise in, one network call)."""
        return self.act(obs, rng)

    # ---- learning --------------------------------------------------------
    def _onestep_loss(self, params, rng, obs, base_params, critic_params):
        z = jax.random.normal(rng, (obs.shape[0], self.base_dim))
        target = jax.lax.stop_gradient(self.base_policy.decode(base_params, obs, z))
        actions = self._mu(params, obs, z)
        # A mean over every element, as in FQL: a sum over the chunk's dimensions would multiply
        # alpha by chunk_len * action_dim (25 for QC-FQL's chunks of 5 on a 5-D arm).
        distill = jnp.mean((actions - target) ** 2)
        loss, metrics = self.options.fql_alpha * distill, {"actor/distill_loss": distill}
        if critic_params is not None:
            q = critic_ensemble(self.config).apply(critic_params, obs, actions[:, : self.exec_dim]).mean(axis=0)
            q_loss = -q.mean()
            if self.options.fql_normalize_q:
                q_loss = q_loss / jax.lax.stop_gradient(jnp.abs(q).mean() + 1e-6)
            loss = loss + q_loss
            metrics["actor/q"] = q.mean()
        return loss, metrics

    def _onestep_step(self, rng, obs, base_params, critic_params=None):
        grad_fn = jax.value_and_grad(self._onestep_loss, has_aux=True)
        (loss, metrics), grads = grad_fn(self.onestep.params, rng, obs, base_params, critic_params)
        return self.onestep.apply_gradients(grads), {"actor/loss": loss, **metrics}

    def pretrain(self, obs: jax.Array, actions: jax.Array, index: jax.Array):
        """Base imitation steps, each followed by a distillation step of the one-step policy."""

        def step(agent, idx):
            rng, k_base, k_one = jax.random.split(agent.rng, 3)
            base, base_ema, loss = agent._imitation_step(k_base, obs[idx], actions[idx])
            onestep, _ = agent._onestep_step(k_one, obs[idx], base.params)
            return agent.replace(base=base, base_ema=base_ema, onestep=onestep, rng=rng), loss

        return jax.lax.scan(step, self, index)

    def update(self, pool: ChunkBatch, base_batch: ChunkBatch | None = None) -> tuple[FQLAgent, dict]:
        cfg = self.config
        pool = check_pool(cfg, pool, self.action_dim)
        rng, k_idx, k_scan, k_actor = jax.random.split(self.rng, 4)
        index = minibatch_indices(cfg, k_idx)
        base_obs, base_act = base_batch_arrays(cfg, self.action_dim, pool, index, base_batch)

        def next_value(key, idx, mb, target):
            k_z, k_members = jax.random.split(key)
            z = jax.random.normal(k_z, (mb.rewards.shape[0], self.base_dim))
            a_next = self._mu(self.onestep.params, mb.next_observations, z)[:, : self.exec_dim]
            return subset_min(cfg, target, k_members, mb.next_observations, a_next), {}

        critic, target, metrics = critic_steps(
            self.critic, self.target_critic, critic_ensemble(cfg), pool, index, k_scan, cfg.tau, next_value
        )

        def actor_step(agent, xs):
            idx, b_obs, b_act, key = xs
            k_base, k_one = jax.random.split(key)
            base, base_ema, m = agent.base, agent.base_ema, {}
            if cfg.base_training != "frozen":
                base, base_ema, m["base/loss"] = agent._imitation_step(k_base, b_obs, b_act)
            onestep, m_one = agent._onestep_step(k_one, pool.observations[idx], base.params, critic.params)
            return agent.replace(base=base, base_ema=base_ema, onestep=onestep), {**m, **m_one}

        keys = jax.random.split(k_actor, cfg.actor_steps)
        agent, actor_metrics = jax.lax.scan(actor_step, self, (index[-cfg.actor_steps :], base_obs, base_act, keys))
        metrics.update(jax.tree.map(jnp.mean, actor_metrics))
        return agent.replace(critic=critic, target_critic=target, rng=rng), metrics

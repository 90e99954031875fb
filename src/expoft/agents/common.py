"""Pieces every agent shares: trainable state, Polyak/EMA updates, Q-guided selection."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Self, cast

import flax.struct
import jax
import jax.numpy as jnp
import optax

from expoft.agents.critics import EncodedEnsemble, broadcast_rows, critic_ensemble, q_values
from expoft.nets import TanhGaussian, tanh_gaussian_sample
from expoft.obs import ObsSpec, PixelSpec
from expoft.policies import BASE_POLICIES

if TYPE_CHECKING:
    from expoft.agents.config import AgentConfig


@flax.struct.dataclass
class Trainable:
    """Parameters with their optimiser state; the optimiser itself is static."""

    params: Any
    opt_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    if TYPE_CHECKING:  # added by flax.struct.dataclass, which type checkers do not see

        def replace(self, **updates: Any) -> Self: ...

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation) -> Trainable:
        return cls(params=params, opt_state=tx.init(params), tx=tx)

    def apply_gradients(self, grads: Any) -> Trainable:
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(params=optax.apply_updates(self.params, updates), opt_state=opt_state)


def base_policy(cfg, action_dim: int):
    """The base policy object of a config (``cfg.base``, its steps and size) emitting ``action_dim``."""
    return BASE_POLICIES[cfg.base](action_dim, cfg.flow_steps, cfg.base_width, cfg.base_blocks, encoder=cfg.encoder)


def new_base(cfg, rng: jax.Array, obs_dim: ObsSpec, action_dim: int) -> tuple[Trainable, Any]:
    """Fresh base parameters for chunks of ``cfg.chunk_len`` actions: ``(trainable, ema copy)``;
    AdamW with cosine decay (ALGORITHMS.md)."""
    params = base_policy(cfg, cfg.chunk_len * action_dim).init(rng, obs_dim)
    schedule = optax.cosine_decay_schedule(cfg.base_lr, cfg.base_lr_decay_steps)
    return Trainable.create(params, optax.adamw(schedule)), params


class WithBase:
    """Methods of every agent that holds an expressive base policy (fields ``base``: Trainable,
    ``base_ema``: its acting copy, ``rng``, ``config``, ``action_dim``): imitation steps, pretraining,
    acting with the base alone."""

    has_base = True

    if TYPE_CHECKING:  # the fields every agent with a base declares, and flax.struct.dataclass's replace
        base: Trainable
        base_ema: Any
        rng: jax.Array
        config: AgentConfig
        obs_dim: ObsSpec
        action_dim: int

        def replace(self, **updates: Any) -> Self: ...

    @property
    def exec_dim(self) -> int:
        """What the critic (and any actor) sees: the executed chunk, flattened."""
        return self.config.exec_len * self.action_dim

    @property
    def base_dim(self) -> int:
        """What the base emits: a whole chunk, flattened."""
        return self.config.chunk_len * self.action_dim

    @property
    def base_policy(self):
        return base_policy(self.config, self.base_dim)

    def act_base(self, obs: jax.Array, rng: jax.Array) -> jax.Array:
        """The executed part of one sample of the (EMA) base alone: ``[B, exec_dim]``."""
        return self.base_policy.sample(self.base_ema, rng, obs, 1)[:, 0, : self.exec_dim]

    def _imitation_step(self, rng: jax.Array, obs: jax.Array, actions: jax.Array):
        """One base step on chunks ``actions [B, base_dim]``: ``(base, base_ema, loss)``."""
        loss, grads = jax.value_and_grad(self.base_policy.loss)(self.base.params, rng, obs, actions)
        base = self.base.apply_gradients(grads)
        return base, polyak(self.base_ema, base.params, self.config.base_ema), loss

    def pretrain(self, obs: jax.Array, actions: jax.Array, index: jax.Array):
        """Base imitation steps on ``obs [N, D]``, chunks ``actions [N, base_dim]``; one step per row of
        ``index [steps, B]`` (scanned). Returns the agent and the loss of every step."""

        def step(agent, idx):
            rng, key = jax.random.split(agent.rng)
            base, base_ema, loss = agent._imitation_step(key, rows(obs, idx), actions[idx])
            return agent.replace(base=base, base_ema=base_ema, rng=rng), loss

        unroll = scan_unroll(self.obs_dim)
        if unroll and len(index) > MAX_UNROLLED_STEPS:
            raise ValueError(
                f"pixel agents unroll their pretraining scan (see scan_unroll): pass at most {MAX_UNROLLED_STEPS} "
                f"steps per call, got {len(index)} (expoft.train.imitation.pretrain_base calls with 10)"
            )
        return jax.lax.scan(step, self, index, unroll=unroll)


def rows(tree: Any, idx: jax.Array) -> Any:
    """``x[idx]`` for every array of a pytree (state or pixel observations, batches)."""
    return jax.tree.map(lambda x: x[idx], tree)


MAX_UNROLLED_STEPS = 50  # compile time and memory grow with every unrolled copy


def scan_unroll(obs_dim: ObsSpec) -> bool:
    """Whether to unroll the scans of update calls and pretraining. XLA on CPU runs convolutions
    inside a loop body ~20x slower than the same convolutions unrolled (measured: 20 encoder
    steps, 22 s in a while loop, 0.86 s unrolled), while MLPs run equally fast either way; so
    pixel agents unroll (longer compile), state agents keep the loop (short compile)."""
    return isinstance(obs_dim, PixelSpec)


def polyak(target: Any, online: Any, rate: float) -> Any:
    """``target <- (1 - rate) * target + rate * online``: soft target updates and EMAs alike."""
    return jax.tree.map(lambda t, o: (1.0 - rate) * t + rate * o, target, online)


def q_guided_select(candidates: jax.Array, scores: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pick the highest-scoring candidate per row.

    Args:
        candidates: ``[B, C, d]``; scores: ``[B, C]``.

    Returns:
        ``(actions [B, d], index [B])``. The one selection rule EXPO uses for
        acting, evaluation and TD targets.
    """
    index = jnp.argmax(scores, axis=-1)
    return jnp.take_along_axis(candidates, index[:, None, None], axis=1)[:, 0], index


def critic_steps(
    critic: Trainable,
    target: Any,
    ensemble,
    pool,
    index: jax.Array,
    rng: jax.Array,
    tau: float,
    next_value,
    unroll: bool = False,
) -> tuple[Trainable, Any, dict]:
    """TD steps of a critic ensemble, one per row of ``index`` ``[U, B]`` (rows of ``pool``, a
    ``ChunkBatch`` with flat actions), scanned; the target copy is soft-updated after each.

    ``next_value(rng, idx, minibatch, target_params) -> (v [B], metrics)`` is the method's value of
    the next observation (EXPO: the best OTF candidate; SAC: a policy sample minus the entropy
    term...). Every member regresses to ``y = R + gamma^n * mask * v``. Metrics: means over the
    steps, except the non-finite counts, which are summed."""

    def step(carry, idx):
        critic, target, key = carry
        mb = rows(pool, idx)
        key, k_next = jax.random.split(key)
        v_next, extra = next_value(k_next, idx, mb, target)
        y = td_target(mb, v_next)

        def loss_fn(params):
            q = q_values(ensemble, params, mb.observations, mb.actions, jax.random.fold_in(k_next, 1))  # [E, B]
            return jnp.mean((q - y) ** 2), q

        (loss, q), grads = jax.value_and_grad(loss_fn, has_aux=True)(critic.params)
        critic = critic.apply_gradients(grads)
        target = polyak(target, critic.params, tau)
        metrics = {
            "critic/loss": loss,
            "critic/q_mean": q.mean(),
            "critic/q_min": q.min(),
            "critic/q_max": q.max(),
            "critic/target_mean": y.mean(),
            "critic/grad_nonfinite": count_nonfinite(grads),
            "critic/nonfinite": count_nonfinite((loss, q, y)),
            **extra,
        }
        return (critic, target, key), metrics

    (critic, target, _), per_step = jax.lax.scan(step, (critic, target, rng), index, unroll=unroll)
    metrics = jax.tree.map(jnp.mean, per_step)
    for key in ("critic/grad_nonfinite", "critic/nonfinite"):
        metrics[key] = per_step[key].sum()
    return critic, target, metrics


def sac_actor_step(
    actor: Trainable,
    head: TanhGaussian,
    log_alpha: Trainable,
    rng: jax.Array,
    obs: jax.Array,
    value,
    target_entropy: float,
    scale: float = 1.0,
) -> tuple[Trainable, Trainable, dict]:
    """One SAC step of a tanh-Gaussian actor ``scale * tanh(z)`` and one temperature step: maximise
    ``value(output) - alpha * log pi(u | s)`` (``value -> [B]``: the method's Q of what the output
    means, an action for RLPD, the base's input noise for DSRL; the entropy is that of u = tanh(z))."""
    alpha = jnp.exp(log_alpha.params)

    def loss_fn(params):
        u, log_prob = tanh_gaussian_sample(rng, *cast(tuple[jax.Array, jax.Array], head.apply(params, obs)))
        return jnp.mean(alpha * log_prob - value(scale * u)), log_prob

    (loss, log_prob), grads = jax.value_and_grad(loss_fn, has_aux=True)(actor.params)
    entropy = -log_prob.mean()
    metrics = {"actor/loss": loss, "actor/entropy": entropy, "actor/alpha": alpha}
    return actor.apply_gradients(grads), temperature_step(log_alpha, entropy, target_entropy), metrics


def tanh_actor(head: TanhGaussian, params: Any, rng: jax.Array, obs: jax.Array, scale: float, explore: bool):
    """``scale * tanh(z)``: sampled (``explore``, with its log-density) or the mode ``tanh(mean)``."""
    mean, log_std = cast(tuple[jax.Array, jax.Array], head.apply(params, obs))
    if explore:
        u, log_prob = tanh_gaussian_sample(rng, mean, log_std)
        return scale * u, log_prob
    return scale * jnp.tanh(mean), jnp.zeros(mean.shape[:-1])


def temperature(init: float, lr: float) -> Trainable:
    """A learnable SAC temperature, kept as log alpha (Adam at ``lr``)."""
    return Trainable.create(jnp.log(jnp.float32(init)), optax.adam(lr))


def td_target(batch, v_next: jax.Array) -> jax.Array:
    """``y = R + gamma^n * mask * v(s')`` for chunk transitions (no gradient)."""
    return jax.lax.stop_gradient(batch.rewards + batch.discounts * batch.masks * v_next)


def temperature_step(log_alpha: Trainable, entropy: jax.Array, target_entropy: float) -> Trainable:
    """SAC's temperature update: alpha grows while the entropy is below its target."""
    grad = jax.grad(lambda la: jnp.exp(la) * (jax.lax.stop_gradient(entropy) - target_entropy))(log_alpha.params)
    return log_alpha.apply_gradients(grad)


def minibatch_indices(cfg, rng: jax.Array) -> jax.Array:
    """Rows of the pool for each critic step: ``[utd, batch_size]``, each with the configured
    offline/online mix. A default-size pool is split exactly (every row used once, which is
    the same as drawing fresh minibatches); a smaller pool is re-drawn from at every step."""
    utd, b_off = cfg.utd, cfg.minibatch_offline_count
    b_on, p_off = cfg.batch_size - b_off, cfg.pool_offline_count
    p_on = cfg.pool_size - p_off
    if cfg.target_pool_size is None:
        off = jnp.arange(p_off).reshape(utd, b_off)
        on = p_off + jnp.arange(p_on).reshape(utd, b_on)
        return jnp.concatenate([off, on], axis=1)
    k_off, k_on = jax.random.split(rng)

    def draw(key, n_pool, n_take, start):
        keys = jax.random.split(key, utd)
        return start + jax.vmap(lambda k: jax.random.permutation(k, n_pool)[:n_take])(keys)

    parts = []
    if b_off:
        parts.append(draw(k_off, p_off, b_off, 0))
    if b_on:
        parts.append(draw(k_on, p_on, b_on, p_off))
    return jnp.concatenate(parts, axis=1)


def subset_min(cfg, params: Any, rng: jax.Array, obs: Any, actions: jax.Array) -> jax.Array:
    """Min over ``cfg.critic_subset`` random members of the ensemble ``params``: obs ``[B, D]``
    (or pixel observations), actions ``[B, ..., d]`` -> ``[B, ...]`` (the same members for every row)."""
    members = critic_ensemble(cfg, pixels=isinstance(obs, dict)).random_members(rng, cfg.critic_subset)
    return members_q(cfg, params, members, obs, actions).min(axis=0)


def members_q(cfg, params: Any, members: jax.Array, obs: Any, actions: jax.Array) -> jax.Array:
    """Q of the ensemble ``params``' ``members`` (indices ``[m]``): obs ``[B, D]`` (or pixel
    observations), actions ``[B, ..., d]`` -> ``[m, B, ...]``."""
    ensemble = critic_ensemble(cfg, pixels=isinstance(obs, dict))
    if not isinstance(ensemble, EncodedEnsemble):  # pixels are encoded first, then broadcast
        obs = broadcast_rows(obs, actions)
    return ensemble.apply_subset(params, members, obs, actions)


def check_pool(cfg, pool, action_dim: int):
    """An update call's pool, checked (``pool_size`` chunks of ``exec_len`` actions), with its
    actions flattened to ``[P, exec_len * A]``."""
    if pool.rewards.shape != (cfg.pool_size,):
        raise ValueError(f"update expects a pool of {cfg.pool_size} transitions, got {pool.rewards.shape}")
    if pool.actions.shape[1:] != (cfg.exec_len, action_dim):
        raise ValueError(
            f"pool actions have shape {pool.actions.shape[1:]}, expected (exec_len, A) = "
            f"({cfg.exec_len}, {action_dim}); sample the buffer with chunk_len=exec_len"
        )
    return pool._replace(actions=pool.actions.reshape(cfg.pool_size, -1))


def base_batch_arrays(cfg, action_dim: int, pool, index: jax.Array, base_batch=None) -> tuple[jax.Array, jax.Array]:
    """What the base imitates at each of the ``actor_steps`` steps of an update call:
    ``(obs [K, B, D], chunks [K, B, base_dim])``. From ``base_batch`` (``K * B`` rows of
    ``chunk_len`` actions) when the base needs its own data, else the last K critic minibatches
    (then chunk_len == exec_len and the pool's actions are the base's chunks)."""
    k = cfg.actor_steps
    if base_batch is None:
        if cfg.base_needs_own_batch:
            raise ValueError(
                "the base needs its own batch (chunk_len-step chunks, from successful episodes if "
                "base_training='successes')"
            )
        last = index[-k:]
        return rows(pool.observations, last), pool.actions[last]
    if base_batch.actions.shape[1:] != (cfg.chunk_len, action_dim):
        raise ValueError(
            f"base_batch actions have shape {base_batch.actions.shape[1:]}, expected (chunk_len, A) = "
            f"({cfg.chunk_len}, {action_dim})"
        )
    if len(base_batch.actions) != cfg.base_batch_size:
        raise ValueError(
            f"base_batch has {len(base_batch.actions)} rows, expected actor_steps * batch_size = {cfg.base_batch_size}"
        )
    return (
        jax.tree.map(lambda x: x.reshape(k, cfg.batch_size, *x.shape[1:]), base_batch.observations),
        base_batch.actions.reshape(k, cfg.batch_size, -1),
    )


def count_nonfinite(tree: Any) -> jax.Array | int:
    """Number of NaN/inf entries in a pytree (reported as a metric, never replaced); 0 for a tree
    without leaves."""
    leaves = jax.tree.leaves(tree)
    return sum(jnp.sum(~jnp.isfinite(x)) for x in leaves)


# Generic jitted entry points: every agent class is a pytree with these methods, and its class
# and static config are part of the tree structure, so one jit serves all agents.
@jax.jit
def update(agent, pool, base_batch=None, next_base=None):
    """``agent.update(pool, base_batch) -> (agent, metrics)``; ``next_base``: samples of an external
    base at the pool's next observations (EXPO)."""
    if next_base is None:
        return agent.update(pool, base_batch)
    return agent.update(pool, base_batch, next_base)


@jax.jit
def act(agent, obs: jax.Array, rng: jax.Array, base=None):
    """Exploration action for training rollouts: ``(actions [B, exec_dim], info)``; ``base``:
    candidates of an external base ``[B, N, exec_dim]`` (EXPO)."""
    return agent.act(obs, rng) if base is None else agent.act(obs, rng, base)


@jax.jit
def act_eval(agent, obs: jax.Array, rng: jax.Array, base=None):
    """Evaluation action: ``(actions [B, exec_dim], info)``."""
    return agent.act_eval(obs, rng) if base is None else agent.act_eval(obs, rng, base)


@jax.jit
def act_base(agent, obs: jax.Array, rng: jax.Array) -> jax.Array:
    """The base policy alone (agents with ``has_base``)."""
    return agent.act_base(obs, rng)


@functools.partial(jax.jit, static_argnames="policy")
def evaluation_step(agent, obs: jax.Array, key: jax.Array, base=None, policy: str = "otf"):
    """One evaluation decision in a single dispatch: ``(next key, actions [B, exec_dim], info)``.

    The key is split exactly as a loop of ``key, k = split(key)`` followed by :func:`act_eval`
    (``policy="otf"``) or :func:`act_base` (``"base"``) splits it, so the actions are the same;
    done eagerly, the split and the indexing of the results cost as much as the policy itself
    on one CPU core (about 3 of 6.5 ms per decision on cube-double)."""
    key, k = jax.random.split(key)
    if policy == "base":
        return key, agent.act_base(obs, k), {}
    actions, info = agent.act_eval(obs, k) if base is None else agent.act_eval(obs, k, base)
    return key, actions, info


@jax.jit
def pretrain(agent, obs: jax.Array, actions: jax.Array, index: jax.Array):
    """Imitation steps of the base (and whatever the agent pretrains with it)."""
    return agent.pretrain(obs, actions, index)

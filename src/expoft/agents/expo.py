"""EXPO: Expressive Policy Optimization (ALGORITHMS.md, "EXPO").

Parts: a base policy trained only by imitation (its EMA copy acts), a
tanh-Gaussian edit policy ``a~ = clip(a + edit_scale * u)``, an ensemble of
critics with a soft-updated target copy, and the on-the-fly (OTF) rule:
draw ``num_base_samples`` base actions, edit ``num_edit_samples`` of them,
score every candidate with the target critics (min over a random subset) and
take the argmax. OTF acts, evaluates and forms the TD target.

One update call = ``utd`` critic steps (one ``lax.scan``, one minibatch each),
then one base, one edit and one temperature step on the last minibatch.

Speed (see ``EXPOConfig`` and ``AgentConfig``): the base and edit parameters do not change during
the critic steps of an update call, so the OTF candidates of all ``utd``
minibatches are drawn up front in one batched call. That changes nothing
that is learned. The options ``target_pool_size`` and ``targets_per_call``
do change it (fewer distinct transitions per call; targets from the call's
first target critic); they are off by default and stay off until they show
the same learning as the exact update (ALGORITHMS.md).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, cast

import flax.struct
import jax
import jax.numpy as jnp
import optax

from expoft.agents import common
from expoft.agents.common import (
    EncodedEnsemble,
    Trainable,
    WithBase,
    base_batch_arrays,
    check_pool,
    critic_ensemble,
    critic_steps,
    members_q,
    minibatch_indices,
    new_base,
    q_guided_select,
    rows,
    scan_unroll,
    subset_min,
    temperature,
    temperature_step,
)
from expoft.agents.config import AgentConfig
from expoft.agents.critics import broadcast_rows
from expoft.data.chunk_sampling import ChunkBatch
from expoft.nets import TanhGaussian, tanh_gaussian_sample
from expoft.obs import ObsSpec, is_pixels
from expoft.obs import zeros as blank_obs
from expoft.validation import require_at_least

TARGET_BASES = ("ema", "online")
ACT_SCORES = ("subset-min", "mean")


@dataclasses.dataclass(frozen=True)
class EXPOConfig:
    """EXPO's own settings (what it shares with the other agents is ``AgentConfig``); defaults
    are the published ones (ALGORITHMS.md)."""

    edit_scale: float = 0.05
    """beta: a~ = a + beta * u, u in [-1, 1]^d. 0.01-0.15 to refine, 0.4-0.7 to explore."""
    edit_hidden: tuple[int, ...] = (256, 256, 256)
    edit_lr: float = 3e-4
    init_temperature: float = 1.0
    """The edit policy's SAC temperature at the start."""
    num_base_samples: int = 8
    num_edit_samples: int = 8
    """How many of the base samples also enter as edited candidates (0: no edits, an ablation)."""
    otf_in_backup: bool = True
    """False: TD target from one base sample instead of OTF (an ablation)."""
    independent_backup_subsets: bool = True
    """Choose the backup's candidate with one random subset of target critics and value it with a
    second, independent subset, as the published code does. False: one subset chooses and
    values (our rule before 2026-12-05, kept for the ablation; its max over noise biases the
    target upward)."""
    target_flow_steps: int | None = None
    """Euler steps for TD-target candidates (flow only); None = flow_steps, the base's real
    sampling distribution. Not a speed option: with the linear flow path ONE Euler step lands
    every noise on the mean action E[a|s] (the optimal velocity at t = 0 is E[a|s] - x0), so
    all candidates collapse to one off-support action on multimodal data
    (tests/test_target_fidelity.py). Kept only to reproduce the grids run before 2026-12-05."""
    target_base: Literal["ema", "online"] = "ema"
    """Which copy of the base draws the TD-target candidates: ``ema`` (the acting copy; ours so
    far) or ``online`` (the base as trained, as the published code does: its
    ``sample_batch_actions`` samples ``actor.params``, its acting ``target_actor.params``). A
    deviation kept as the default until a screen shows which learns better: with EMA rate 0.001
    and one base step per decision, the EMA lags the online base by ~1000 decisions, most of a P1
    run, so the targets never see what the base learns online. The target-candidate cache
    draws from the same copy."""
    act_score: Literal["subset-min", "mean"] = "subset-min"
    """How acting and evaluation score the OTF candidates: ``subset-min`` (the published rule: the
    min over a random subset of ``critic_subset`` target critics, as the backup chooses) or
    ``mean`` (the mean over the whole target ensemble). A deviation to screen, not a default: on
    P1 the critic's spread over the candidates is about its members' disagreement
    (docs/results/learn.md), so the argmax of a random pair's min follows that pair's noise; the
    mean of all members averages part of it away. TD targets keep the published rule either way."""
    targets_per_call: bool = False
    """Speed option that changes what is learned (off by default): choose and value the target
    candidates once per update call (target critic as of the call's start) instead of at every
    critic step."""
    target_cache_refresh: int | None = 20
    """Reuse the base samples at each transition's next observation for this many update calls
    (``expoft.train.target_cache``); the edits and the scores stay fresh at every critic step.
    None: draw them afresh at every critic step, as the published code does (the ``published``
    preset). A deviation, and the default since 2026-12-06 (seventh session): the samples keep
    the base's real sampling distribution, only up to this many calls old
    (``test_target_candidates_cover_both_modes``), and the cache showed no loss of learning
    against the exact draw on P1 cube-single and cube-double, 3 seeds each, paired, at 2.0-2.8x
    less CPU per run (docs/results/learn.md, "The cache gate"). Used where it applies: state
    observations and the agent's own base; pixel runs and external bases draw afresh."""

    def __post_init__(self):
        require_at_least(self, 1, "num_base_samples")
        if not 0 <= self.num_edit_samples <= self.num_base_samples:
            raise ValueError(
                f"num_edit_samples must lie in [0, num_base_samples={self.num_base_samples}], "
                f"got {self.num_edit_samples}"
            )
        if not 0.0 < self.edit_scale <= 2.0:
            raise ValueError(f"edit_scale must lie in (0, 2], got {self.edit_scale}")
        if self.target_cache_refresh is not None:
            require_at_least(self, 1, "target_cache_refresh")
        if self.target_base not in TARGET_BASES:
            raise ValueError(f"target_base must be one of {TARGET_BASES}, got {self.target_base!r}")
        if self.act_score not in ACT_SCORES:
            raise ValueError(f"act_score must be one of {ACT_SCORES}, got {self.act_score!r}")

    def check(self, config: AgentConfig) -> None:
        """What these settings need of the shared ones."""
        if config.base == "ddpm" and self.target_flow_steps not in (None, config.flow_steps):
            raise ValueError("target_flow_steps applies to flow bases only")


@flax.struct.dataclass
class EXPOAgent(WithBase):
    """Immutable agent: ``agent, metrics = agent.update(batch)``; ``agent.act(obs, rng)``."""

    base: Trainable
    base_ema: Any
    edit: Trainable
    critic: Trainable
    target_critic: Any
    log_alpha: Trainable
    rng: jax.Array
    config: AgentConfig = flax.struct.field(pytree_node=False)
    options: EXPOConfig = flax.struct.field(pytree_node=False)
    obs_dim: ObsSpec = flax.struct.field(pytree_node=False)
    """Size of a state observation, or the ``PixelSpec`` of pixel observations."""
    action_dim: int = flax.struct.field(pytree_node=False)
    """Size of ONE action; chunks are flattened to ``exec_dim`` / ``base_dim``."""

    # ---- construction ----------------------------------------------------
    @classmethod
    def create(
        cls, config: AgentConfig, options: EXPOConfig, obs_dim: ObsSpec, action_dim: int, seed: int = 0
    ) -> EXPOAgent:
        """``obs_dim``: state size, or a ``PixelSpec``; ``action_dim``: size of one action."""
        rng = jax.random.PRNGKey(seed)
        rng, k_base, k_edit, k_critic = jax.random.split(rng, 4)
        exec_dim = config.exec_len * action_dim
        base, base_ema = new_base(config, k_base, obs_dim, action_dim)
        ensemble = critic_ensemble(config, is_pixels(obs_dim))
        critic_params = ensemble.init(k_critic, blank_obs(obs_dim), jnp.zeros((1, exec_dim)))
        if isinstance(ensemble, EncodedEnsemble):  # the edit policy reads the critic's features
            edit_in = ensemble.features(critic_params, blank_obs(obs_dim)).shape[-1]
        else:  # state observations: obs_dim is their size
            edit_in = cast(int, obs_dim)
        edit_net = TanhGaussian(exec_dim, options.edit_hidden)
        edit_params = edit_net.init(k_edit, jnp.zeros((1, edit_in + exec_dim)))
        return cls(
            base=base,
            base_ema=base_ema,
            edit=Trainable.create(edit_params, optax.adam(options.edit_lr)),
            critic=Trainable.create(critic_params, optax.adam(config.critic_lr)),
            target_critic=critic_params,
            log_alpha=temperature(options.init_temperature, config.temperature_lr),
            rng=rng,
            config=config,
            options=options,
            obs_dim=obs_dim,
            action_dim=action_dim,
        )

    # ---- the OTF rule ----------------------------------------------------
    def candidates(
        self,
        rng: jax.Array,
        obs: jax.Array,
        steps: int | None = None,
        base: jax.Array | None = None,
        base_params: Any = None,
    ) -> jax.Array:
        """``[B, D] -> [B, N + M, exec_dim]``: the executed part of N base samples (of
        ``base_params``, default the EMA base), then M edited copies of the first M. ``base [B, N,
        exec_dim]``: base samples drawn elsewhere (an external base, ``expoft.bases``) instead of
        the base's own."""
        cfg = self.options
        k_base, k_edit = jax.random.split(rng)
        if base is None:
            kwargs = {} if steps is None else {"steps": steps}
            params = self.base_ema if base_params is None else base_params
            base = self.base_policy.sample(params, k_base, obs, cfg.num_base_samples, **kwargs)
            base = base[..., : self.exec_dim]
        elif base.shape[1:] != (cfg.num_base_samples, self.exec_dim):
            raise ValueError(
                f"base candidates have shape {base.shape}, expected [B, num_base_samples, exec_dim] = "
                f"[B, {cfg.num_base_samples}, {self.exec_dim}]"
            )
        if cfg.num_edit_samples == 0:
            return base
        to_edit = base[:, : cfg.num_edit_samples]
        edited, _ = self._edit(self.edit.params, k_edit, self._edit_condition(obs, self.critic.params), to_edit)
        return jnp.concatenate([base, edited], axis=1)

    def _edit_condition(self, obs: Any, critic_params: Any) -> jax.Array:
        """What the edit policy reads of an observation: the state itself, or for pixels the
        critic encoder's features with the gradient stopped (EXPO-FT 3): ``[B, F]``."""
        if not isinstance(obs, dict):
            return obs
        ensemble = critic_ensemble(self.config, pixels=True)
        return jax.lax.stop_gradient(ensemble.features(critic_params, obs))

    def _edit(self, params: Any, rng: jax.Array, cond: jax.Array, actions: jax.Array):
        """Edited actions and ``log pi_edit(u | s, a)`` for actions ``[B, ..., d]``; ``cond [B, F]``
        from :meth:`_edit_condition`."""
        cond = broadcast_rows(cond, actions)
        mean, log_std = cast(
            tuple[jax.Array, jax.Array],
            TanhGaussian(self.exec_dim, self.options.edit_hidden).apply(
                params, jnp.concatenate([cond, actions], axis=-1)
            ),
        )
        u, log_prob = tanh_gaussian_sample(rng, mean, log_std)
        return jnp.clip(actions + self.options.edit_scale * u, -1.0, 1.0), log_prob

    def score(self, rng: jax.Array, obs: jax.Array, candidates: jax.Array, critic_params: Any = None) -> jax.Array:
        """Min over a random subset of target critics: ``[B, C]``."""
        params = self.target_critic if critic_params is None else critic_params
        return subset_min(self.config, params, rng, obs, candidates)

    learns_online = True

    def act_eval(self, obs: jax.Array, rng: jax.Array, base: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """EXPO evaluates with the same OTF rule it acts with (the same actions for the same key).
        Its info adds whether the critic can tell the candidates apart at all: ``q_spread``, max
        minus min over candidates of the whole target ensemble's mean Q, beside
        ``q_member_std``, the members' disagreement (std over members, mean over candidates). An
        argmax over candidates whose spread is far below the members' disagreement follows noise."""
        actions, info, cands = self._otf(obs, rng, base)
        q = members_q(self.config, self.target_critic, jnp.arange(self.config.num_critics), obs, cands)  # [E, B, C]
        mean = q.mean(axis=0)
        info["q_spread"] = mean.max(axis=-1) - mean.min(axis=-1)
        info["q_member_std"] = q.std(axis=0).mean(axis=-1)
        return actions, info

    def act(self, obs: jax.Array, rng: jax.Array, base: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """OTF action (executed chunk, ``[B, exec_dim]``) for observations ``[B, D]``; info says
        whether an edited candidate won. ``base``: base samples from an external base."""
        actions, info, _ = self._otf(obs, rng, base)
        return actions, info

    def scored_candidates(
        self, obs: jax.Array, rng: jax.Array, base: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Acting's candidates at ``obs`` and the scores it ranks them by (``act_score``):
        ``([B, C, exec_dim], [B, C])``; diagnostics that replay acting's choice draw them here."""
        k_cand, k_score = jax.random.split(rng)
        cands = self.candidates(k_cand, obs, base=base)
        if self.options.act_score == "mean":
            all_members = jnp.arange(self.config.num_critics)
            return cands, members_q(self.config, self.target_critic, all_members, obs, cands).mean(axis=0)
        return cands, self.score(k_score, obs, cands)

    def _otf(self, obs: jax.Array, rng: jax.Array, base: jax.Array | None) -> tuple[jax.Array, dict, jax.Array]:
        """The OTF rule: ``(actions, info, candidates [B, C, exec_dim])``."""
        cands, scores = self.scored_candidates(obs, rng, base)
        actions, index = q_guided_select(cands, scores)
        edited = index >= self.options.num_base_samples
        return actions, {"edited": edited, "not_first": index != 0, "q": scores.max(axis=-1)}, cands

    def target_candidates(self, rng: jax.Array, next_obs: Any, base: jax.Array | None = None) -> jax.Array:
        """The OTF candidates of TD targets at ``next_obs``: ``[B, N + M, exec_dim]``, drawn as for
        acting (the base's full sampling chain) unless ``target_flow_steps`` says otherwise, by the
        copy of the base ``target_base`` names."""
        steps = self.options.target_flow_steps if self.config.base == "flow" else None
        return self.candidates(rng, next_obs, steps, base=base, base_params=self.target_base_params)

    @property
    def target_base_params(self) -> Any:
        """The parameters of the base copy that draws TD-target candidates (``target_base``)."""
        return self.base.params if self.options.target_base == "online" else self.base_ema

    def backup_value(
        self, rng: jax.Array, next_obs: Any, candidates: jax.Array, critic_params: Any = None
    ) -> tuple[jax.Array, jax.Array]:
        """``V(s')`` of the TD target and the candidate it backs up: ``([B], index [B])``.

        OTF in the backup: the argmax candidate under one random subset of target critics
        (the same rule as acting), valued by the min over a second, independent subset
        (``independent_backup_subsets``, as the published code does: the max over one subset's
        noise, valued by that same subset, biases the target upward). Without OTF in the backup
        (an ablation) the first base sample is backed up. ``candidates [B, C, d]``."""
        cfg = self.options
        # the one-subset rule draws its subset from rng itself, as before 2026-12-05: old
        # configurations reproduce the old runs bit for bit on CPU
        k_choose, k_value = jax.random.split(rng) if cfg.independent_backup_subsets else (rng, rng)
        if not cfg.otf_in_backup:
            index = jnp.zeros(candidates.shape[0], jnp.int32)
        else:
            q_choose = self.score(k_choose, next_obs, candidates, critic_params)  # [B, C]
            index = jnp.argmax(q_choose, axis=-1)
            if not cfg.independent_backup_subsets:
                return jnp.take_along_axis(q_choose, index[:, None], axis=1)[:, 0], index
        chosen = jnp.take_along_axis(candidates, index[:, None, None], axis=1)  # [B, 1, d]
        return self.score(k_value, next_obs, chosen, critic_params)[:, 0], index

    # ---- learning --------------------------------------------------------
    def update(
        self, pool: ChunkBatch, base_batch: ChunkBatch | None = None, next_base: jax.Array | None = None
    ) -> tuple[EXPOAgent, dict]:
        """One update call on a pool of ``config.pool_size`` chunks of ``exec_len`` steps, the
        first ``config.pool_offline_count`` from the offline data (``ReplayBuffer.sample(...,
        num_offline=...)``). ``utd`` minibatches of ``batch_size`` are taken from it.

        ``base_batch``: the base's imitation batch, chunks of ``chunk_len`` actions (drawn from
        whatever data the base learns from). None: the last critic minibatch (only when
        ``chunk_len == exec_len``).

        ``next_base [P, N, exec_dim]``: base samples at the pool's next observations drawn
        elsewhere: by an external base (then ``base_training`` must be frozen: the agent has no
        base of its own), or by this agent's base in earlier calls (``expoft.train.target_cache``).
        The edits of those samples are drawn here, fresh."""
        cfg, own = self.config, self.options
        pool = check_pool(cfg, pool, self.action_dim)  # executed chunks, flat: [P, exec_dim]
        rng, k_idx, k_cand, k_score, k_scan, k_actor = jax.random.split(self.rng, 6)
        pool_cands = self.target_candidates(k_cand, pool.next_observations, next_base)  # [P, C, d]
        if own.targets_per_call:
            pool_v, pool_choice = self.backup_value(k_score, pool.next_observations, pool_cands)  # [P], [P]
        index = minibatch_indices(cfg, k_idx)  # [U, B]
        base_data = base_batch_arrays(cfg, self.action_dim, pool, index, base_batch)  # checked before any work
        ensemble = critic_ensemble(cfg, is_pixels(self.obs_dim))

        def next_value(key, idx, mb, target):
            if own.targets_per_call:
                v, choice = pool_v[idx], pool_choice[idx]
            else:
                v, choice = self.backup_value(key, mb.next_observations, pool_cands[idx], target)  # [B], [B]
            return v, {
                "otf/target_edited_frac": jnp.mean(choice >= own.num_base_samples),
                "otf/target_not_first_frac": jnp.mean(choice != 0),
            }

        unroll = scan_unroll(self.obs_dim)
        critic, target, metrics = critic_steps(
            self.critic, self.target_critic, ensemble, pool, index, k_scan, cfg.tau, next_value, unroll
        )
        actor_idx = index[-cfg.actor_steps :]  # [K, B]
        keys = jax.random.split(k_actor, cfg.actor_steps)

        def actor_step(carry, xs):
            agent = carry
            idx, base_obs, base_act, key = xs
            agent, step_metrics = agent._actor_step(key, critic.params, rows(pool.observations, idx),
                                                    pool.actions[idx], base_obs, base_act)  # fmt: skip
            return agent, step_metrics

        actor, actor_metrics = jax.lax.scan(actor_step, self, (actor_idx, *base_data, keys), unroll=unroll)
        metrics.update(jax.tree.map(jnp.mean, actor_metrics))
        agent = actor.replace(critic=critic, target_critic=target, rng=rng)
        return agent, metrics

    def _actor_step(self, rng, critic_params, obs, act, base_obs, base_act) -> tuple[EXPOAgent, dict]:
        """One base (imitation), one edit and one temperature step; the critic is fixed."""
        cfg = self.config
        k_base, k_edit = jax.random.split(rng)
        pixels = isinstance(obs, dict)
        ensemble = critic_ensemble(cfg, pixels)
        cond = self._edit_condition(obs, critic_params)  # pixels: encoded once, shared with the Q below

        # Base: imitation only; no Q gradient ever reaches it.
        base, base_ema, metrics = self.base, self.base_ema, {}
        if cfg.base_training != "frozen":
            base, base_ema, metrics["base/loss"] = self._imitation_step(k_base, base_obs, base_act)

        # Edit policy: SAC-style on the batch's actions, scored by the mean of the ensemble.
        alpha = jnp.exp(self.log_alpha.params)
        log_scale = self.exec_dim * math.log(self.options.edit_scale)

        def edit_loss_fn(params):
            edited, log_prob = self._edit(params, k_edit, cond, act)
            if pixels:
                q = ensemble.apply_features(critic_params, cond, edited).mean(axis=0)
            else:
                q = ensemble.apply(critic_params, obs, edited).mean(axis=0)
            log_prob_action = log_prob - log_scale  # density of a~ = a + beta u
            return jnp.mean(alpha * log_prob_action - q), (log_prob_action, edited)

        (edit_loss, (log_prob_action, edited)), edit_grads = jax.value_and_grad(edit_loss_fn, has_aux=True)(
            self.edit.params
        )
        edit = self.edit.apply_gradients(edit_grads)

        # Deviation from ALGORITHMS.md, on purpose: the temperature tracks the entropy of u itself.
        # The entropy of a~ = a + beta*u is that of u plus d*log(beta), at most d*log(2*beta)
        # (-11.5 for d = 5, beta = 0.05), which can never reach the target -d/2: alpha would grow
        # without bound. In the edit loss the -d*log(beta) term is a constant (no gradient).
        entropy = -jax.lax.stop_gradient(log_prob_action).mean() - log_scale
        target_entropy = cfg.target_entropy_per_dim * self.exec_dim
        log_alpha = temperature_step(self.log_alpha, entropy, target_entropy)

        metrics.update(
            {
                "edit/loss": edit_loss,
                "edit/entropy": entropy,
                "edit/action_entropy": entropy + log_scale,
                "edit/magnitude": jnp.mean(jnp.linalg.norm(edited - act, axis=-1)),
                "edit/alpha": alpha,
            }
        )
        return self.replace(base=base, base_ema=base_ema, edit=edit, log_alpha=log_alpha), metrics


# The jitted entry points every agent shares, under the names callers of this module know.
act, act_base, pretrain, update = common.act, common.act_base, common.pretrain, common.update

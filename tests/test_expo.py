"""Base policies and the EXPO agent: shapes, known answers, learning on tiny problems."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from expoft.agents.common import Trainable, critic_ensemble, minibatch_indices, q_guided_select, td_target
from expoft.agents.config import AgentConfig
from expoft.agents.expo import EXPOAgent, EXPOConfig, update
from expoft.data.chunk_sampling import ChunkBatch
from expoft.policies import DiffusionPolicy, FlowPolicy
from expoft.train.config import TINY_AGENT, TINY_EXPO

from .conftest import assert_same_leaves

TINY = dataclasses.replace(TINY_AGENT, utd=4, batch_size=16)
OWN = dataclasses.replace(TINY_EXPO, num_base_samples=3, num_edit_samples=2)
OBS, ACT = 6, 2


def pool(
    cfg: AgentConfig, seed: int = 0, rewards: float | None = None, masks: float = 1.0, size=None, steps=None
) -> ChunkBatch:
    """Random chunks: ``size`` rows (default: the config's pool) of ``steps`` actions (default exec_len)."""
    rng = np.random.default_rng(seed)
    p = cfg.pool_size if size is None else size
    h = cfg.exec_len if steps is None else steps
    r = rng.normal(size=p) if rewards is None else np.full(p, rewards)
    return ChunkBatch(
        observations=rng.normal(size=(p, OBS)).astype(np.float32),
        actions=rng.uniform(-1, 1, (p, h, ACT)).astype(np.float32),
        rewards=r.astype(np.float32),
        discounts=np.full(p, cfg.discount, np.float32),
        masks=np.full(p, masks, np.float32),
        next_observations=rng.normal(size=(p, OBS)).astype(np.float32),
        valid=np.ones((p, h), np.float32),
        offline=np.arange(p) < cfg.pool_offline_count,
    )


def test_q_guided_select_picks_the_argmax():
    cands = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    scores = jnp.array([[0.1, 0.9, 0.3, -1.0], [5.0, 1.0, 2.0, 7.0]])
    actions, index = q_guided_select(cands, scores)
    np.testing.assert_array_equal(index, [1, 3])
    np.testing.assert_array_equal(actions, cands[jnp.array([0, 1]), jnp.array([1, 3])])


@pytest.mark.parametrize("policy_cls", [FlowPolicy, DiffusionPolicy])
def test_base_policy_learns_a_conditional_target(policy_cls):
    """Imitation loss falls and samples land near the demonstrated action a = 0.5 * tanh(s)."""
    policy = policy_cls(action_dim=2, steps=5, width=64, blocks=2)
    rng = jax.random.PRNGKey(0)
    params = policy.init(rng, 3)
    state = Trainable.create(params, optax.adam(3e-3))
    obs = jax.random.normal(jax.random.PRNGKey(1), (256, 3))
    target = 0.5 * jnp.tanh(obs[:, :2])

    @jax.jit
    def step(state, key):
        loss, grads = jax.value_and_grad(policy.loss)(state.params, key, obs, target)
        return state.apply_gradients(grads), loss

    losses = []
    for i in range(600):
        state, loss = step(state, jax.random.PRNGKey(i + 10))
        losses.append(float(loss))
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:50])
    samples = policy.sample(state.params, jax.random.PRNGKey(3), obs[:64], 8)
    assert samples.shape == (64, 8, 2) and samples.dtype == jnp.float32
    assert float(jnp.abs(samples).max()) <= 1.0
    err = jnp.abs(samples.mean(axis=1) - target[:64]).mean()
    assert float(err) < 0.1, f"mean sample error {float(err):.3f}"


def test_act_returns_one_candidate_per_observation():
    agent = EXPOAgent.create(TINY, OWN, OBS, ACT)
    obs = jnp.ones((5, OBS))
    cands = agent.candidates(jax.random.PRNGKey(0), obs)
    assert cands.shape == (5, OWN.num_base_samples + OWN.num_edit_samples, ACT)
    # Edited candidates stay within edit_scale of the base sample they edit.
    base, edited = cands[:, : OWN.num_edit_samples], cands[:, OWN.num_base_samples :]
    assert float(jnp.abs(edited - base).max()) <= OWN.edit_scale + 1e-6
    actions, info = agent.act(obs, jax.random.PRNGKey(1))
    assert actions.shape == (5, ACT) and info["edited"].shape == (5,)
    scores = agent.score(jax.random.PRNGKey(2), obs, cands)
    assert scores.shape == (5, OWN.num_base_samples + OWN.num_edit_samples)


def test_update_compiles_once_and_reports_metrics():
    agent = EXPOAgent.create(dataclasses.replace(TINY, tau=0.0123), OWN, OBS, ACT)  # a config no other test compiles
    before = update._cache_size()
    agent, m1 = update(agent, pool(TINY, 0))
    agent, m2 = update(agent, pool(TINY, 1))
    assert update._cache_size() == before + 1
    for key in (
        "critic/loss",
        "critic/q_mean",
        "critic/q_min",
        "critic/q_max",
        "edit/entropy",
        "edit/alpha",
        "edit/magnitude",
        "otf/target_edited_frac",
        "base/loss",
    ):
        assert np.isfinite(float(m2[key])), key
    assert int(m2["critic/grad_nonfinite"]) == 0
    with pytest.raises(ValueError, match="expects a pool of 64"):
        agent.update(pool(dataclasses.replace(TINY, utd=2)))


def test_critic_learns_a_constant_reward_without_bootstrapping():
    """With masks = 0 the target is the reward itself: Q must approach 1."""
    cfg = dataclasses.replace(TINY, critic_lr=3e-3, utd=8)
    agent = EXPOAgent.create(cfg, OWN, OBS, ACT)
    first = None
    for i in range(40):
        agent, m = update(agent, pool(cfg, i, rewards=1.0, masks=0.0))
        first = first if first is not None else float(m["critic/loss"])
    assert float(m["critic/loss"]) < 0.05 * first
    assert abs(float(m["critic/q_mean"]) - 1.0) < 0.1


def test_base_gets_no_q_gradient():
    """The base update is the same whatever the critic says."""
    a = EXPOAgent.create(TINY, OWN, OBS, ACT)
    scrambled = jax.tree.map(lambda p: p * 3.0 + 1.0, a.critic.params)
    b = a.replace(critic=a.critic.replace(params=scrambled), target_critic=scrambled)
    data = pool(TINY)
    new_a, _ = update(a, data)
    new_b, _ = update(b, data)
    assert_same_leaves(new_a.base.params, new_b.base.params)
    # ... while the edit policy, trained on Q, does depend on it.
    assert any(
        not np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(new_a.edit.params), jax.tree.leaves(new_b.edit.params), strict=True)
    )


def test_minibatches_keep_the_offline_mix():
    idx = np.asarray(minibatch_indices(TINY, jax.random.PRNGKey(0)))
    assert idx.shape == (TINY.utd, TINY.batch_size)
    # Default pool: an exact partition, every row once.
    np.testing.assert_array_equal(np.sort(idx.ravel()), np.arange(TINY.pool_size))
    small = dataclasses.replace(TINY, target_pool_size=24)
    idx = np.asarray(minibatch_indices(small, jax.random.PRNGKey(0)))
    n_off = small.pool_offline_count
    assert ((idx < n_off).sum(axis=1) == small.minibatch_offline_count).all()
    assert all(len(set(row)) == small.batch_size for row in idx)  # no repeats within a minibatch
    agent = EXPOAgent.create(small, OWN, OBS, ACT)
    agent, m = update(agent, pool(small))
    assert np.isfinite(float(m["critic/loss"]))


def test_config_validation():
    with pytest.raises(ValueError, match="base must be one of"):
        AgentConfig(base="gan")
    with pytest.raises(ValueError, match="num_edit_samples must lie"):
        EXPOConfig(num_edit_samples=9)
    with pytest.raises(ValueError, match="edit_scale"):
        EXPOConfig(edit_scale=0.0)
    with pytest.raises(ValueError, match="too small"):
        AgentConfig(target_pool_size=100)
    with pytest.raises(ValueError, match="flow bases only"):
        EXPOConfig(target_flow_steps=1).check(AgentConfig(base="ddpm"))


def test_score_is_the_min_over_the_drawn_target_critics_and_the_target_takes_the_best():
    agent = EXPOAgent.create(TINY, OWN, OBS, ACT)
    # Make the target critics differ from each other in a known way: member e adds e to Q.
    ens = critic_ensemble(TINY)
    target = jax.tree.map(lambda p: p, agent.target_critic)
    bias = target["params"]["MLP_0"]["Dense_2"]["bias"]
    target["params"]["MLP_0"]["Dense_2"]["bias"] = bias + jnp.arange(TINY.num_critics, dtype=jnp.float32)[:, None]
    agent = agent.replace(target_critic=target)
    obs = jax.random.normal(jax.random.PRNGKey(0), (3, OBS))
    cands = jax.random.uniform(jax.random.PRNGKey(1), (3, 5, ACT), minval=-1, maxval=1)
    key = jax.random.PRNGKey(2)
    members = ens.random_members(key, TINY.critic_subset)
    full = ens.apply(target, jnp.broadcast_to(obs[:, None], (3, 5, OBS)), cands)  # [E, B, C]
    expected = full[members].min(axis=0)
    np.testing.assert_allclose(agent.score(key, obs, cands), expected, rtol=1e-5, atol=1e-6)
    # Subset slicing evaluates exactly those members.
    obs_c = jnp.broadcast_to(obs[:, None], (3, 5, OBS))
    np.testing.assert_allclose(ens.apply_subset(target, members, obs_c, cands), full[members], rtol=1e-5)

    v_next = jnp.array([2.0, 0.3])  # the backed-up values (EXPOAgent.backup_value)
    batch = pool(TINY)._replace(
        rewards=jnp.array([1.0, 0.0]),
        discounts=jnp.array([0.9, 0.81]),
        masks=jnp.array([1.0, 0.0]),
    )
    np.testing.assert_allclose(td_target(batch, v_next), [1.0 + 0.9 * 2.0, 0.0])
    # q_guided_select on subset-min scores picks the candidate whose worse critic is best.
    scores = agent.score(key, obs, cands)
    actions, index = q_guided_select(cands, scores)
    np.testing.assert_array_equal(index, np.argmax(np.asarray(expected), axis=1))


def test_tanh_gaussian_log_prob_and_edit_correction():
    from jax.scipy.stats import norm

    from expoft.nets import tanh_gaussian_sample

    mean = jnp.array([[0.3, -1.0, 2.0]])
    log_std = jnp.array([[-0.5, 0.2, -1.0]])
    u, log_prob = tanh_gaussian_sample(jax.random.PRNGKey(0), mean, log_std)
    z = jnp.arctanh(jnp.clip(u, -1 + 1e-7, 1 - 1e-7))
    by_hand = jnp.sum(norm.logpdf(z, mean, jnp.exp(log_std)) - jnp.log(1 - jnp.tanh(z) ** 2), axis=-1)
    np.testing.assert_allclose(log_prob, by_hand, rtol=1e-3)
    # The density of a~ = a + beta*u in action space: log pi(u) - d log(beta).
    beta, d = 0.05, 3
    log_prob_action = log_prob - d * np.log(beta)
    np.testing.assert_allclose(log_prob_action - log_prob, -d * np.log(beta))


def step_by_step_sample(policy, params, rng, obs, n):
    """The sampling chains as first written: the whole network on every row at every step."""
    cond = jnp.broadcast_to(obs[:, None], (obs.shape[0], n, obs.shape[-1]))
    if isinstance(policy, FlowPolicy):
        x, dt = jax.random.normal(rng, (obs.shape[0], n, policy.action_dim)), 1.0 / policy.steps
        for k in range(policy.steps):
            x = x + dt * policy.net.apply(params, cond, x, jnp.full(x.shape[:-1], k * dt))
        return jnp.clip(x, -1.0, 1.0)
    betas, alphas, alpha_bar, alpha_bar_prev = policy._schedule()
    init_key, key = jax.random.split(rng)
    x = jax.random.normal(init_key, (obs.shape[0], n, policy.action_dim))
    for t in reversed(range(policy.steps)):
        key, noise_key = jax.random.split(key)
        eps = policy.net.apply(params, cond, x, jnp.full(x.shape[:-1], t / policy.steps))
        x0 = jnp.clip((x - jnp.sqrt(1.0 - alpha_bar[t]) * eps) / jnp.sqrt(alpha_bar[t]), -1.0, 1.0)
        var = betas[t] * (1.0 - alpha_bar_prev[t]) / (1.0 - alpha_bar[t])
        x = (jnp.sqrt(alpha_bar_prev[t]) * betas[t] * x0 + jnp.sqrt(alphas[t]) * (1.0 - alpha_bar_prev[t]) * x) / (
            1.0 - alpha_bar[t]
        ) + (jnp.sqrt(var) if t > 0 else 0.0) * jax.random.normal(noise_key, x.shape)
    return jnp.clip(x, -1.0, 1.0)


@pytest.mark.parametrize("policy_cls", [FlowPolicy, DiffusionPolicy])
def test_sampling_chain_equals_the_step_by_step_network(policy_cls, monkeypatch):
    """The sampler's shortcuts (input layer split by its inputs, rows in blocks) change speed,
    not samples: same noise, same actions as the whole network applied at every step."""
    monkeypatch.setattr("expoft.policies.denoising.SAMPLE_BLOCK_ROWS", 12)  # blocks of 4 obs, a rest of 1
    policy = policy_cls(action_dim=3, steps=5, width=32, blocks=2, time_features=16)
    params = policy.init(jax.random.PRNGKey(0), 4)
    # random, not zero, output layers: the velocity must matter
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
    obs = jax.random.normal(jax.random.PRNGKey(2), (9, 4))
    got = policy.sample(params, jax.random.PRNGKey(3), obs, 3)
    want = step_by_step_sample(policy, params, jax.random.PRNGKey(3), obs, 3)
    assert got.shape == (9, 3, 3)
    assert float(jnp.std(want)) > 0.2
    np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("policy_cls", [FlowPolicy, DiffusionPolicy])
def test_base_policy_reproduces_a_bimodal_distribution(policy_cls):
    """Half the demonstrations go left (-0.6), half right (+0.6): samples must show both modes."""
    policy = policy_cls(action_dim=1, steps=8, width=64, blocks=2)
    state = Trainable.create(policy.init(jax.random.PRNGKey(0), 2), optax.adam(3e-3))
    obs = jnp.zeros((512, 2))
    actions = jnp.where(jnp.arange(512)[:, None] % 2 == 0, -0.6, 0.6) + 0.02 * jax.random.normal(
        jax.random.PRNGKey(1), (512, 1)
    )

    @jax.jit
    def step(state, key):
        grads = jax.grad(policy.loss)(state.params, key, obs, actions)
        return state.apply_gradients(grads)

    for i in range(800):
        state = step(state, jax.random.PRNGKey(100 + i))
    samples = np.asarray(policy.sample(state.params, jax.random.PRNGKey(7), obs[:1], 400))[0, :, 0]
    left, right = np.mean(np.abs(samples + 0.6) < 0.2), np.mean(np.abs(samples - 0.6) < 0.2)
    assert left > 0.3 and right > 0.3, f"modes: left {left:.2f}, right {right:.2f}"
    assert np.mean(np.abs(samples) < 0.2) < 0.15  # little mass between the modes


def test_chunked_agent_shapes_and_base_batch():
    cfg = dataclasses.replace(TINY, chunk_len=4, exec_len=3)
    agent = EXPOAgent.create(cfg, OWN, OBS, ACT)
    assert (agent.exec_dim, agent.base_dim) == (3 * ACT, 4 * ACT)
    obs = jnp.ones((5, OBS))
    assert agent.candidates(jax.random.PRNGKey(0), obs).shape == (5, 5, 3 * ACT)
    actions, _ = agent.act(obs, jax.random.PRNGKey(1))
    assert actions.shape == (5, 3 * ACT)
    assert agent.act_base(obs, jax.random.PRNGKey(1)).shape == (5, 3 * ACT)
    base_batch = pool(cfg, 1, size=cfg.batch_size, steps=4)
    new, metrics = update(agent, pool(cfg), base_batch)
    assert np.isfinite(float(metrics["base/loss"])) and np.isfinite(float(metrics["critic/loss"]))
    # the base learned from base_batch: a different base batch gives a different base
    other, _ = update(agent, pool(cfg), pool(cfg, 2, size=cfg.batch_size, steps=4))
    assert not np.array_equal(jax.tree.leaves(new.base.params)[0], jax.tree.leaves(other.base.params)[0])
    with pytest.raises(ValueError, match="needs its own batch"):
        agent.update(pool(cfg))
    with pytest.raises(ValueError, match=r"expected \(exec_len, A\) = \(3, 2\)"):
        agent.update(pool(cfg, steps=1), base_batch)
    with pytest.raises(ValueError, match=r"expected \(chunk_len, A\) = \(4, 2\)"):
        agent.update(pool(cfg), pool(cfg, size=cfg.batch_size, steps=3))
    with pytest.raises(ValueError, match="exec_len 5 > chunk_len 4"):
        dataclasses.replace(cfg, exec_len=5)


def test_chunk_len_one_is_plain_expo():
    """chunk_len = exec_len = 1 builds the same networks and takes the same update as plain EXPO."""
    plain = EXPOAgent.create(TINY, OWN, OBS, ACT)
    explicit = EXPOAgent.create(dataclasses.replace(TINY, chunk_len=1, exec_len=1), OWN, OBS, ACT)
    a, ma = update(plain, pool(TINY))
    b, mb = update(explicit, pool(TINY))
    assert_same_leaves(a, b)
    assert float(ma["critic/loss"]) == float(mb["critic/loss"])


def test_base_training_modes():
    frozen = dataclasses.replace(TINY, base_training="frozen")
    agent = EXPOAgent.create(frozen, OWN, OBS, ACT)
    new, metrics = update(agent, pool(frozen))
    assert "base/loss" not in metrics
    for x, y in zip(
        jax.tree.leaves((agent.base, agent.base_ema)), jax.tree.leaves((new.base, new.base_ema)), strict=True
    ):
        np.testing.assert_array_equal(x, y)
    successes = dataclasses.replace(TINY, base_training="successes")
    assert successes.base_needs_own_batch and not TINY.base_needs_own_batch
    agent = EXPOAgent.create(successes, OWN, OBS, ACT)
    with pytest.raises(ValueError, match="needs its own batch"):
        agent.update(pool(successes))
    _, metrics = update(agent, pool(successes), pool(successes, 3, size=successes.batch_size))
    assert np.isfinite(float(metrics["base/loss"]))
    with pytest.raises(ValueError, match="base_training must be one of"):
        dataclasses.replace(TINY, base_training="some")


def test_frozen_chunked_base_needs_no_base_batch():
    cfg = dataclasses.replace(TINY, chunk_len=4, exec_len=3, base_training="frozen")
    assert not cfg.base_needs_own_batch
    agent = EXPOAgent.create(cfg, OWN, OBS, ACT)
    new, metrics = update(agent, pool(cfg))
    assert "base/loss" not in metrics and np.isfinite(float(metrics["critic/loss"]))
    for a, b in zip(jax.tree.leaves(agent.base_ema), jax.tree.leaves(new.base_ema), strict=True):
        np.testing.assert_array_equal(a, b)


def test_target_base_names_the_copy_that_draws_target_candidates():
    """``target_base="online"`` (the published code's rule): TD-target candidates are samples of the
    base as trained, acting keeps the EMA copy; ``"ema"``: both from the EMA copy. Known answer:
    an agent whose EMA copy differs from its online base."""
    other = EXPOAgent.create(TINY, OWN, OBS, ACT, seed=7)
    obs = jax.random.normal(jax.random.PRNGKey(0), (4, OBS))
    key = jax.random.PRNGKey(3)
    drawn = {}
    for rule in ("ema", "online"):
        agent = EXPOAgent.create(TINY, dataclasses.replace(OWN, target_base=rule), OBS, ACT)
        agent = agent.replace(base_ema=other.base.params)  # the two copies now differ
        online = agent.candidates(key, obs, base_params=agent.base.params)
        ema = agent.candidates(key, obs)
        assert not np.allclose(online, ema)
        drawn[rule] = np.asarray(agent.target_candidates(key, obs))
        np.testing.assert_array_equal(drawn[rule], online if rule == "online" else ema)
        acted, _ = agent.act(obs, key)  # acting: the EMA copy whatever the rule
        np.testing.assert_array_equal(acted, EXPOAgent.act(agent.replace(options=OWN), obs, key)[0])
    with pytest.raises(ValueError, match="target_base"):
        dataclasses.replace(OWN, target_base="newest")


def test_act_eval_acts_as_act_and_says_whether_the_critic_tells_candidates_apart():
    """Known answers: the evaluation rule takes the acting rule's action for the same key; its
    ``q_spread`` is max - min over the candidates of the whole target ensemble's mean Q and
    ``q_member_std`` the members' std (mean over candidates); a fresh (zero) critic tells nothing apart."""
    agent = EXPOAgent.create(TINY, OWN, OBS, ACT)
    obs = jax.random.normal(jax.random.PRNGKey(0), (3, OBS))
    key = jax.random.PRNGKey(4)
    _, fresh = agent.act_eval(obs, key)
    np.testing.assert_allclose(fresh["q_spread"], 0.0, atol=1e-6)
    np.testing.assert_allclose(fresh["q_member_std"], 0.0, atol=1e-6)
    other = EXPOAgent.create(TINY, dataclasses.replace(OWN), OBS, ACT, seed=3)
    target = jax.tree.map(lambda p: p + 0.1 * jnp.sign(p + 1e-3), other.critic.params)  # nonzero outputs
    agent = agent.replace(target_critic=target)
    acted, _ = agent.act(obs, key)
    evaluated, info = agent.act_eval(obs, key)
    np.testing.assert_array_equal(evaluated, acted)
    cands = agent.candidates(jax.random.split(key)[0], obs)
    q = critic_ensemble(TINY).apply(target, jnp.broadcast_to(obs[:, None], (*cands.shape[:2], OBS)), cands)
    mean = q.mean(axis=0)
    np.testing.assert_allclose(info["q_spread"], mean.max(-1) - mean.min(-1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(info["q_member_std"], q.std(axis=0).mean(-1), rtol=1e-4, atol=1e-6)
    assert (np.asarray(info["q_spread"]) > 0).all()


def test_act_score_mean_takes_the_argmax_of_the_whole_ensembles_mean():
    """``act_score="mean"``: acting and evaluation take the candidate with the highest mean Q over
    all target critics (known answer from the ensemble's own outputs), where the published
    ``subset-min`` takes the argmax of a random pair's min; TD targets are not touched."""
    other = EXPOAgent.create(TINY, OWN, OBS, ACT, seed=3)
    target = jax.tree.map(lambda p: p + 0.1 * jnp.sign(p + 1e-3), other.critic.params)  # members disagree
    obs = jax.random.normal(jax.random.PRNGKey(0), (64, OBS))
    key = jax.random.PRNGKey(5)
    agents = {
        rule: EXPOAgent.create(TINY, dataclasses.replace(OWN, act_score=rule), OBS, ACT).replace(target_critic=target)
        for rule in ("subset-min", "mean")
    }
    cands = agents["mean"].candidates(jax.random.split(key)[0], obs)
    q = critic_ensemble(TINY).apply(target, jnp.broadcast_to(obs[:, None], (*cands.shape[:2], OBS)), cands)
    best_mean = np.asarray(jnp.take_along_axis(cands, jnp.argmax(q.mean(axis=0), -1)[:, None, None], 1)[:, 0])
    acted, _ = agents["mean"].act(obs, key)
    evaluated, _ = agents["mean"].act_eval(obs, key)
    np.testing.assert_allclose(acted, best_mean, rtol=1e-6)
    np.testing.assert_array_equal(evaluated, acted)
    published, _ = agents["subset-min"].act(obs, key)
    assert not np.allclose(published, acted)  # the rules differ where the members disagree
    np.testing.assert_array_equal(
        agents["mean"].target_candidates(key, obs), agents["subset-min"].target_candidates(key, obs)
    )
    with pytest.raises(ValueError, match="act_score"):
        dataclasses.replace(OWN, act_score="max")

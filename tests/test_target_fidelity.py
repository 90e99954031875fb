"""Known answers for what the TD target is made of (issue "EXPO that learns"): a critic that
starts at zero, target candidates from the base's real distribution, and the backup's candidate
chosen and valued by independent critic subsets."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from expoft.agents import create_agent
from expoft.agents.common import critic_ensemble, pretrain
from expoft.agents.dsrl import _noise_critics
from expoft.agents.expo import EXPOAgent
from expoft.data.replay import ReplayBuffer
from expoft.obs import PixelSpec
from expoft.obs import zeros as blank_obs
from expoft.train.config import PRESETS, TINY_AGENT, TINY_EXPO
from expoft.train.target_cache import TargetCandidateCache

OBS, ACT = 6, 2


def _random_obs(spec, batch: int, rng: np.random.Generator):
    if isinstance(spec, PixelSpec):
        obs = blank_obs(spec, batch)
        return jax.tree.map(lambda x: rng.uniform(0, 255 if x.dtype == np.uint8 else 1, x.shape).astype(x.dtype), obs)
    return rng.normal(size=(batch, spec)).astype(np.float32) * 3.0


@pytest.mark.parametrize(
    "algorithm,pixels", [("expo", False), ("expo", True), ("rlpd", False), ("fql", False), ("dsrl", False),
                         ("residual", False)],
)  # fmt: skip
def test_fresh_critic_is_zero(algorithm, pixels):
    """Every member of every critic (and target copy) of a fresh agent outputs ~0 on random
    inputs: offsets of a default init (+-0.5) would be as large as the whole value range of a
    sparse reward and would decide OTF's argmax."""
    cfg = PRESETS["tiny-pixels"].agent if pixels else TINY_AGENT
    cfg = dataclasses.replace(cfg, base_training="frozen" if algorithm in ("dsrl", "residual") else "all")
    spec = PixelSpec(image_size=32, proprio_dim=3) if pixels else OBS
    agent = create_agent(algorithm, cfg, spec, ACT, 0, TINY_EXPO if algorithm == "expo" else None)
    rng = np.random.default_rng(0)
    obs = _random_obs(spec, 16, rng)
    actions = rng.uniform(-1, 1, (16, cfg.exec_len * ACT)).astype(np.float32)
    ensemble = critic_ensemble(cfg, pixels)
    for params in (agent.critic.params, agent.target_critic):
        q = np.asarray(ensemble.apply(params, obs, actions))
        assert q.shape == (cfg.num_critics, 16)
        assert np.abs(q).max() < 1e-3
    if algorithm == "dsrl":  # its second critic, over the base's input noise
        noise = rng.normal(size=(16, cfg.chunk_len * ACT)).astype(np.float32)
        assert np.abs(np.asarray(_noise_critics(cfg).apply(agent.noise_critic.params, obs, noise))).max() < 1e-3
    # the ablation restores the default init: then the members do start apart
    old = create_agent(algorithm, dataclasses.replace(cfg, critic_zero_init=False), spec, ACT, 0, agent.options)
    assert np.abs(np.asarray(ensemble.apply(old.critic.params, obs, actions))).max() > 0.05


MODES = 0.7


def _two_mode_base(target_flow_steps):
    """A flow base trained to imitate a = +-0.7 (half each, noise 0.05) in every state, with
    10 Euler steps to act and ``target_flow_steps`` for TD-target candidates."""
    cfg = dataclasses.replace(TINY_AGENT, base_width=64, base_blocks=2, flow_steps=10, base_lr=1e-3)
    own = dataclasses.replace(TINY_EXPO, num_base_samples=8, num_edit_samples=0, target_flow_steps=target_flow_steps)
    agent = EXPOAgent.create(cfg, own, 2, 1, seed=0)
    rng = np.random.default_rng(0)
    n = 4096
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    actions = (sign * MODES + 0.05 * rng.normal(size=n)).clip(-1, 1).astype(np.float32)[:, None]
    index = jnp.asarray(rng.integers(0, n, (3000, 128)))
    agent, losses = pretrain(agent, jnp.asarray(obs), jnp.asarray(actions), index)
    assert float(losses[-200:].mean()) < float(losses[:200].mean())
    return agent


def _covers_both(cands: np.ndarray) -> float:
    """Fraction of states (rows of ``[B, 8]`` 1-D candidates) with a candidate in each mode."""
    assert cands.shape[1:] == (8,)
    return float(np.mean((cands > 0.35).any(axis=1) & (cands < -0.35).any(axis=1)))


def _both_modes_fraction(agent, states: int = 200) -> float:
    obs = jnp.asarray(np.random.default_rng(1).normal(size=(states, 2)).astype(np.float32))
    return _covers_both(np.asarray(agent.target_candidates(jax.random.PRNGKey(3), obs))[..., 0])


def _online_buffer(transitions: int, capacity: int = 10_000) -> ReplayBuffer:
    rng = np.random.default_rng(2)
    buffer = ReplayBuffer(2, 1, capacity)
    for t in range(transitions):
        obs, nxt = rng.normal(size=2).astype(np.float32), rng.normal(size=2).astype(np.float32)
        end = t % 50 == 49
        buffer.add(obs, rng.uniform(-1, 1, 1).astype(np.float32), 0.0, nxt, False, end)
    return buffer


def test_target_candidates_cover_both_modes():
    """With a base trained on a two-mode action distribution, the best-of-8 target candidates of
    the update hold a sample of each mode in >= 95% of states: those it draws itself
    (``EXPOAgent.target_candidates``) and those the target-candidate cache supplies
    (``target_cache_refresh``). Known answer for the sampler the default replaced: ONE Euler step
    lands every noise on the mean action E[a|s] ~ 0, so no candidate is in either mode."""
    agent = _two_mode_base(target_flow_steps=None)
    assert _both_modes_fraction(agent) >= 0.95
    buffer = _online_buffer(400)
    pool = buffer.sample(np.random.default_rng(0), 300, discount=0.99, num_offline=0)
    cache = TargetCandidateCache(buffer, 8, 1, refresh=10, seed=0)
    assert _covers_both(cache.lookup(agent, pool, call=1)[..., 0]) >= 0.95
    one_step = agent.replace(options=dataclasses.replace(agent.options, target_flow_steps=1))
    assert _both_modes_fraction(one_step) < 0.05
    obs = jnp.zeros((64, 2))
    mean_only = np.asarray(one_step.target_candidates(jax.random.PRNGKey(4), obs))
    assert np.median(np.abs(mean_only)) < 0.1  # at the mean action, between the modes


def test_backup_candidate_is_chosen_and_valued_by_independent_subsets():
    """Known answer: the candidate is the argmax of the min over one random subset of target
    critics and is valued by the min over a second subset drawn from the other half of the
    key; the ablation (one subset, drawn from the key itself) returns the max of its scores, and
    without OTF in the backup the first base sample is valued."""
    cfg = dataclasses.replace(TINY_AGENT, num_critics=6, critic_subset=2, critic_zero_init=False)
    agent = EXPOAgent.create(cfg, TINY_EXPO, OBS, ACT, seed=1)
    ens = critic_ensemble(cfg)
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(5, OBS)).astype(np.float32))
    cands = jnp.asarray(rng.uniform(-1, 1, (5, 4, ACT)).astype(np.float32))
    key = jax.random.PRNGKey(7)
    full = np.asarray(ens.apply(agent.target_critic, jnp.broadcast_to(obs[:, None], (5, 4, OBS)), cands))  # [E, B, C]
    k_choose, k_value = jax.random.split(key)
    choose, value = ens.random_members(k_choose, 2), ens.random_members(k_value, 2)
    q_choose = full[np.asarray(choose)].min(axis=0)  # [B, C]
    best = q_choose.argmax(axis=1)
    expected = full[np.asarray(value)].min(axis=0)[np.arange(5), best]

    v, index = agent.backup_value(key, obs, cands)
    np.testing.assert_array_equal(index, best)
    np.testing.assert_allclose(v, expected, rtol=1e-5, atol=1e-6)

    # the ablation: the pair drawn from the key itself (as before 2026-12-05) chooses and values
    same = agent.replace(options=dataclasses.replace(TINY_EXPO, independent_backup_subsets=False))
    v_same, index_same = same.backup_value(key, obs, cands)
    q_one = full[np.asarray(ens.random_members(key, 2))].min(axis=0)
    np.testing.assert_array_equal(index_same, q_one.argmax(axis=1))
    np.testing.assert_allclose(v_same, q_one.max(axis=1), rtol=1e-5, atol=1e-6)

    no_otf = agent.replace(options=dataclasses.replace(TINY_EXPO, otf_in_backup=False))  # independent pair
    v0, index0 = no_otf.backup_value(key, obs, cands)
    np.testing.assert_array_equal(index0, 0)
    np.testing.assert_allclose(v0, full[np.asarray(value)].min(axis=0)[:, 0], rtol=1e-5, atol=1e-6)


def test_target_cache_reuses_entries_for_refresh_calls_then_redraws():
    """An entry is drawn from the EMA base at the next observation of the chunk's last step, reused
    while younger than ``refresh`` calls, then drawn anew; flush() and an overwritten ring slot
    forget it; nothing is drawn twice within a call."""
    own = dataclasses.replace(TINY_EXPO, num_base_samples=3, num_edit_samples=3)
    agent = EXPOAgent.create(TINY_AGENT, own, 2, 1, seed=0)
    buffer = _online_buffer(120, capacity=100)  # the ring has wrapped: slots 0..19 hold steps 100..119
    rng = np.random.default_rng(0)
    pool = buffer.sample(rng, 64, discount=0.99, num_offline=0)
    cache = TargetCandidateCache(buffer, 3, 1, refresh=3, seed=0)
    first = cache.lookup(agent, pool, call=1)
    assert first.shape == (64, 3, 1) and cache.computed == len(np.unique(pool.last))
    # the samples are the base's at each row's next observation: same key, same rows -> same values
    again = cache.lookup(agent, pool, call=3)
    np.testing.assert_array_equal(again, first)
    assert cache.computed == len(np.unique(pool.last))
    redrawn = cache.lookup(agent, pool, call=4)  # 4 - 1 >= refresh: every entry is drawn anew
    assert not np.allclose(redrawn, first) and cache.computed == 2 * len(np.unique(pool.last))
    # rows that share a last slot share their samples
    for slot in np.unique(pool.last):
        rows = redrawn[pool.last == slot]
        assert (rows == rows[0]).all()
    cache.flush()
    redrawn_after_flush = cache.lookup(agent, pool, call=4)
    assert cache.computed == 3 * len(np.unique(pool.last))
    # a new step overwrites the oldest ring slot: its entry is forgotten, the others are kept; a
    # learner that drew the pool before the step came (async) looks it up as of the draw
    slot = buffer.total_added % buffer.capacity
    drawn = buffer.total_added
    buffer.add(np.zeros(2, np.float32), np.zeros(1, np.float32), 0.0, np.ones(2, np.float32), False, False)
    held = cache.filled_at["online"].copy()
    np.testing.assert_array_equal(cache.lookup(agent, pool, call=5, total_added=drawn), redrawn_after_flush)
    assert np.array_equal(cache.filled_at["online"], held)
    cache._forget_overwritten(buffer.total_added)
    assert cache.filled_at["online"][slot] == -1
    assert np.array_equal(np.delete(cache.filled_at["online"], slot), np.delete(held, slot))
    with pytest.raises(ValueError, match="target_cache_refresh must be >= 1"):
        TargetCandidateCache(buffer, 3, 1, refresh=0, seed=0)


def test_the_cache_is_on_by_default_where_it_applies():
    """The target-candidate cache is the default (refresh 20) for agents that sample their own base
    in TD targets on state observations; the `published` preset draws afresh, as the published code
    does; agents without such targets, pixel runs and external bases have nothing to cache."""
    from expoft.train.config import preset

    assert preset("default").target_cache_refresh == 20 and preset("expo-ft").target_cache_refresh == 20
    assert preset("demo").target_cache_refresh == 20
    assert preset("published").target_cache_refresh is None
    assert preset("p1", algorithm="bc").target_cache_refresh is None
    assert preset("pixels").target_cache_refresh is None and preset("pixels").expo.target_cache_refresh == 20
    frozen = dataclasses.replace(preset("p1").agent, base_training="frozen")
    assert preset("p1", agent=frozen, external_base="ws://127.0.0.1:9").target_cache_refresh is None


def test_a_run_where_the_cache_cannot_apply_says_so(caplog):
    from expoft.train.config import preset
    from expoft.train.target_cache import run_cache

    with caplog.at_level("INFO", logger="expoft.train.target_cache"):
        assert run_cache(preset("pixels"), None) is None
    assert "drawn afresh at every critic step" in caplog.text and "pixel observations" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="expoft.train.target_cache"):
        assert run_cache(preset("p1", algorithm="bc"), None) is None  # nothing to cache: nothing said
        assert run_cache(preset("published"), None) is None  # asked not to cache
    assert not caplog.text

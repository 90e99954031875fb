"""EXPO on pixel observations: shapes, the stopped gradient into the critic encoder, a base that
learns an image-dependent action, and a full update call compiled once."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from expoft.agents import common
from expoft.agents.critics import critic_ensemble
from expoft.agents.expo import EXPOAgent
from expoft.data.replay import ReplayBuffer
from expoft.obs import PIXELS, PROPRIO, PixelSpec
from expoft.train.config import PRESETS, TINY_EXPO

CFG = dataclasses.replace(PRESETS["tiny-pixels"].agent, chunk_len=2, exec_len=2, batch_size=16)
SPEC = PixelSpec(image_size=32, proprio_dim=3)


def pixel_obs(rng, n, bright=None):
    """Frames that are all dark (label 0) or all bright (label 1), plus noise proprioception."""
    bright = rng.integers(0, 2, n) if bright is None else bright
    pixels = np.where(bright[:, None, None, None] == 1, 200, 30).astype(np.uint8)
    pixels = np.broadcast_to(pixels, (n, *SPEC.image_shape)).copy()
    return {PIXELS: pixels, PROPRIO: rng.normal(size=(n, 3)).astype(np.float32)}, bright


def test_shapes_and_the_edit_policy_sees_stopped_critic_features():
    agent = EXPOAgent.create(CFG, TINY_EXPO, SPEC, 3, seed=0)
    obs, _ = pixel_obs(np.random.default_rng(0), 5)
    actions, info = common.act(agent, obs, jax.random.PRNGKey(0))
    assert actions.shape == (5, 2 * 3) and actions.dtype == jnp.float32
    assert info["edited"].shape == (5,)
    assert common.act_base(agent, obs, jax.random.PRNGKey(1)).shape == (5, 6)
    # the critic encoder's features feed the edit policy, but no edit-loss gradient reaches them
    grads = jax.grad(lambda p: agent._edit_condition(obs, p).sum())(agent.critic.params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
    # (a critic with a random output layer: a fresh one's zero output layer passes no gradient back)
    cfg = dataclasses.replace(CFG, critic_zero_init=False)
    agent = EXPOAgent.create(cfg, TINY_EXPO, SPEC, 3, seed=0)
    ensemble = critic_ensemble(cfg, pixels=True)
    grads = jax.grad(lambda p: ensemble.apply(p, obs, actions).sum())(agent.critic.params)
    assert float(jnp.abs(grads["encoder"]["params"]["Dense_0"]["kernel"]).max()) > 0.0  # the critic loss does


def test_pixel_base_learns_an_action_that_depends_on_the_image():
    rng = np.random.default_rng(0)
    cfg = dataclasses.replace(CFG, chunk_len=1, exec_len=1, base_lr=3e-3)
    agent = EXPOAgent.create(cfg, TINY_EXPO, SPEC, 1, seed=0)
    obs, label = pixel_obs(rng, 256)
    actions = np.where(label == 1, 0.6, -0.6).astype(np.float32)[:, None]
    obs_j, actions_j = jax.tree.map(jnp.asarray, obs), jnp.asarray(actions)
    with pytest.raises(ValueError, match="at most"):  # pixel pretraining is unrolled: short calls only
        common.pretrain(agent, obs_j, actions_j, jnp.zeros((200, 32), jnp.int32))
    losses = []
    for _ in range(20):  # as expoft.train.imitation.pretrain_base does: 10 unrolled steps per call
        agent, chunk = common.pretrain(agent, obs_j, actions_j, jnp.asarray(rng.integers(0, 256, size=(10, 32))))
        losses.append(np.asarray(chunk))
    losses = np.concatenate(losses)
    assert float(losses[-30:].mean()) < 0.5 * float(losses[:30].mean())
    test, test_label = pixel_obs(rng, 64)
    # the trained parameters (the acting EMA copy, rate 0.001, has hardly moved in 200 steps)
    sampled = np.asarray(agent.base_policy.sample(agent.base.params, jax.random.PRNGKey(3), test, 1))[:, 0, 0]
    # the proprioception is noise: only the image tells the two actions apart
    assert np.mean(np.sign(sampled) == np.where(test_label == 1, 1, -1)) > 0.9


def test_update_calls_on_a_pixel_buffer_compile_once():
    rng = np.random.default_rng(1)
    buffer = ReplayBuffer(SPEC, 3, capacity=200)
    obs, _ = pixel_obs(rng, 1, np.array([0]))
    for t in range(60):
        nxt, _ = pixel_obs(rng, 1, np.array([t % 2]))
        end = t % 15 == 14
        one = {k: v[0] for k, v in obs.items()}
        buffer.add(one, rng.uniform(-1, 1, 3), float(end), {k: v[0] for k, v in nxt.items()}, end, end, success=end)
        obs = pixel_obs(rng, 1, np.array([0]))[0] if end else nxt
    agent = EXPOAgent.create(CFG, TINY_EXPO, SPEC, 3, seed=0)
    before = common.update._cache_size()
    for _ in range(3):
        pool = buffer.sample(rng, CFG.pool_size, discount=CFG.discount, chunk_len=2, offline_fraction=0.0)
        agent, metrics = common.update(agent, pool)
        assert all(np.isfinite(float(v)) for v in metrics.values())
    assert common.update._cache_size() == before + 1
    assert metrics["critic/nonfinite"] == 0


def test_pixel_observations_are_refused_by_a_state_buffer_and_checked():
    with pytest.raises(ValueError, match="shape"):
        SPEC.check({PIXELS: np.zeros((8, 8, 3), np.uint8), PROPRIO: np.zeros(3)})
    with pytest.raises(ValueError, match="image_size"):
        PixelSpec(image_size=4)

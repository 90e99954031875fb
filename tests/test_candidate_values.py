"""benchmarks/candidate_values.py: the Monte Carlo check of the critic's argmax rests on replaying
an episode from its reset seed to the same state, and on each continuation starting with its own
candidate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gymnasium
import jax
import numpy as np
import pytest

from expoft.envs.chunks import ActionChunks
from expoft.envs.ogbench_domains import get_domain
from expoft.envs.run_env import make_run_env
from expoft.train.build import make_agent
from expoft.train.config import preset

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "candidate_values.py"


@pytest.fixture(scope="module")
def cv():
    spec = importlib.util.spec_from_file_location("candidate_values", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rank_correlation_averages_ties_and_is_none_when_constant(cv):
    assert cv.rank(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]
    assert cv.spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 25.0])) == pytest.approx(1.0)
    assert cv.spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert cv.spearman(np.array([1.0, 2.0]), np.array([0.0, 0.0])) is None


def test_homogeneity_test_tells_different_candidates_from_rollout_noise(cv):
    rng = np.random.default_rng(0)
    assert cv.homogeneity_p(np.ones((16, 4)), rng) == 1.0
    split = np.repeat([[1.0], [0.0]], 8, axis=0) * np.ones((16, 4))  # half always succeed, half never
    assert cv.homogeneity_p(split, rng) < 0.01
    same = (rng.random((16, 4)) < 0.6).astype(float)  # one success rate for all: rarely "different"
    ps = [cv.homogeneity_p((rng.random((16, 4)) < 0.6).astype(float), rng, 500) for _ in range(40)]
    assert cv.homogeneity_p(same, rng) > 0.0 and np.mean(np.array(ps) < 0.05) <= 0.15


class Recorded(gymnasium.Wrapper):
    """Keeps every primitive action it is stepped with."""

    def reset(self, **kwargs):
        self.actions = []
        return self.env.reset(**kwargs)

    def step(self, action):
        self.actions.append(np.asarray(action, np.float32))
        return self.env.step(action)


def test_continuations_replay_the_lead_episode_to_its_state(cv):
    cfg = preset("tiny", env="cube-single", episode_steps=24)
    agent = make_agent(cfg)
    decisions = cv.Decisions(agent)
    lead = ActionChunks(make_run_env(cfg), cfg.agent.exec_len)
    prefix, obs, cands, scores, mean_q, _ = cv.lead_episode(
        lead, decisions, 7, jax.random.PRNGKey(0), np.random.default_rng(3)
    )
    num = agent.options.num_base_samples + agent.options.num_edit_samples
    assert cands.shape == (num, cfg.agent.exec_len * 5) and scores.shape == mean_q.shape == (num,)
    envs = [ActionChunks(Recorded(make_run_env(cfg)), cfg.agent.exec_len) for _ in range(2)]
    success, returns = cv.continuations(
        envs, decisions, 7, prefix, obs, cands[:2], jax.random.PRNGKey(1), cfg.agent.discount
    )
    assert success.shape == returns.shape == (2,) and np.all((returns >= 0) & (returns <= 1 / (1 - 0.99)))
    for env, cand in zip(envs, cands[:2], strict=True):  # the prefix replayed, then its own candidate
        played = np.asarray(env.env.actions)
        np.testing.assert_array_equal(played[: len(prefix)], np.asarray(prefix, np.float32))
        first = played[len(prefix) : len(prefix) + cfg.agent.exec_len]  # shorter where the episode ended
        assert len(first) >= 1
        np.testing.assert_allclose(first, cand.reshape(cfg.agent.exec_len, -1)[: len(first)])
    with pytest.raises(RuntimeError, match="not deterministic"):  # a wrong state is refused, not measured
        cv.continuations(envs, decisions, 8, prefix, obs, cands[:2], jax.random.PRNGKey(1), cfg.agent.discount)


def test_decisions_with_a_cube_carried_are_the_ones_picked(cv):
    rng = np.random.default_rng(0)
    lifted = [False, True, False, True, False]
    assert {cv.pick_decision(lifted, rng) for _ in range(50)} == {1, 3}
    assert cv.pick_decision([False] * 4, rng) is None
    assert {cv.pick_decision([True] * 5, rng) for _ in range(100)} == set(range(5))
    env = ActionChunks(make_run_env(preset("tiny", env="cube-double")), 1)
    env.reset(seed=0)
    domain = get_domain("cube-double")
    assert not cv.cube_lifted(env, domain)  # both cubes at rest on the table
    data = env.env.unwrapped.data
    assert not cv.at_grasp(env, domain)  # the gripper starts above the table, away from both
    data.joint("object_joint_1").qpos[2] = 0.12  # the second cube held up
    assert cv.cube_lifted(env, domain)
    # the pinch point (written where MuJoCo keeps it) 1 cm above the first cube, still on the
    # table: a grasp; at the lifted one: not
    pinch = data.site(cv.PINCH_SITE).xpos
    pinch[:] = data.joint("object_joint_0").qpos[:3] + [0.0, 0.0, 0.01]
    assert cv.at_grasp(env, domain)
    pinch[:] = data.joint("object_joint_1").qpos[:3]
    assert not cv.at_grasp(env, domain)

"""Action chunks: the execution wrapper, chunked imitation targets, a chunked run end to end."""

from __future__ import annotations

import dataclasses
import json

import gymnasium
import jax
import numpy as np
import pytest

from expoft.agents import create_agent
from expoft.agents.common import act_base, act_eval
from expoft.cli import main
from expoft.data.transitions import make_dataset
from expoft.envs.chunks import ActionChunks
from expoft.train.config import TINY_AGENT, TINY_EXPO
from expoft.train.evaluate import evaluate
from expoft.train.imitation import dataset_chunks
from tests.conftest import episode_arrays, metrics_rows


class Counter(gymnasium.Env):
    """obs = [t]; reward = 1 at t == goal (terminates); truncates at t == limit."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (1,))
    action_space = gymnasium.spaces.Box(-1, 1, (2,))

    def __init__(self, goal=7, limit=100):
        self.goal, self.limit, self.t = goal, limit, 0

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t == self.goal
        return np.array([self.t], np.float32), float(done), done, self.t >= self.limit, {"success": done}


class Costly(Counter):
    """Counter with a partial-credit reward: -1 at every step until the goal, 0 there."""

    def step(self, action):
        obs, success, done, truncated, info = super().step(action)
        return obs, success - 1.0, done, truncated, info


def test_evaluation_reports_the_mean_undiscounted_return():
    """Known answer: every episode reaches the goal at step 7 (-1 x 6, then 0), or is cut at
    step 4 (-1 x 4), whatever the agent does; chunks of 3 cut short by the episode's end."""
    agent = create_agent("expo", dataclasses.replace(TINY_AGENT, chunk_len=3, exec_len=3), 1, 2, 0, TINY_EXPO)
    result = evaluate(agent, Costly(goal=7), episodes=2, seed=0)
    assert (result["eval/return"], result["eval/success"], result["eval/episode_length"]) == (-6.0, 1.0, 7.0)
    result = evaluate(agent, Costly(goal=7, limit=4), episodes=2, seed=0, policy="base")
    assert (result["eval_base/return"], result["eval_base/success"], result["eval_base/episode_length"]) == (
        -4.0, 0.0, 4.0,
    )  # fmt: skip


class Recording(Counter):
    """Counter that keeps every action it is given."""

    def __init__(self, goal=7, limit=100):
        super().__init__(goal, limit)
        self.actions = []

    def step(self, action):
        self.actions.append(np.array(action))
        return super().step(action)


@pytest.mark.parametrize(
    ("algorithm", "exec_len", "policy"),
    [("expo", 1, "otf"), ("expo", 3, "otf"), ("expo", 3, "base"), ("rlpd", 1, "otf")],
)
def test_evaluation_acts_as_an_eager_split_then_act_loop(algorithm, exec_len, policy):
    """Known answer: the one-dispatch evaluation step draws its keys as ``key, k = split(key)``
    then ``act_eval`` / ``act_base`` would, so the executed actions are those, bit for bit
    (a run evaluated before and after the change scores the same)."""
    cfg = dataclasses.replace(TINY_AGENT, chunk_len=exec_len, exec_len=exec_len)
    agent = create_agent(algorithm, cfg, 1, 2, 0, TINY_EXPO if algorithm == "expo" else None)
    env = Recording(goal=100, limit=5)
    result = evaluate(agent, env, episodes=2, seed=3, policy=policy)
    key, expected = jax.random.PRNGKey(3), []
    for _ in range(2):
        t = 0
        while t < 5:
            key, k = jax.random.split(key)
            obs = np.array([[t]], np.float32)
            chunk = act_eval(agent, obs, k)[0] if policy == "otf" else act_base(agent, obs, k)
            steps = min(exec_len, 5 - t)
            expected += list(np.asarray(chunk[0]).reshape(exec_len, 2)[:steps])
            t += steps
    np.testing.assert_array_equal(np.stack(env.actions), np.stack(expected))
    prefix = "eval" if policy == "otf" else "eval_base"
    assert result[f"{prefix}/episode_length"] == 5.0 and result[f"{prefix}/success"] == 0.0
    assert (f"{prefix}/edited_frac" in result) == (algorithm == "expo" and policy == "otf")


def test_chunks_execute_in_order_and_stop_at_episode_end():
    steps = []
    env = ActionChunks(Counter(goal=7), exec_len=3, on_step=lambda: steps.append(1))
    obs, _ = env.reset()
    chunk = np.arange(6, dtype=np.float32).reshape(3, 2) / 10
    obs, r, term, trunc, info = env.step(chunk)
    assert obs[0] == 3 and r == 0 and not term and len(info["transitions"]) == 3
    np.testing.assert_array_equal([t.action for t in info["transitions"]], chunk)
    assert [t.observation[0] for t in info["transitions"]] == [0, 1, 2]
    assert [t.next_observation[0] for t in info["transitions"]] == [1, 2, 3]
    env.step(chunk.ravel())  # flat chunks are accepted: t = 6
    obs, r, term, trunc, info = env.step(chunk)  # the goal at t = 7 ends the chunk after one step
    assert obs[0] == 7 and r == 1.0 and term and info["success"] and len(info["transitions"]) == 1
    assert len(steps) == 7
    with pytest.raises(RuntimeError, match="reset"):
        env.step(chunk)
    env.reset()
    with pytest.raises(ValueError, match="does not split into exec_len=3"):
        env.step(np.zeros(5))


def test_dataset_chunks_pad_with_the_last_action_of_the_episode():
    arrays = episode_arrays([3, 2], action_dim=1, terminal_last=[True, False])
    arrays["actions"] = np.array([[1], [2], [3], [4], [5]], np.float32) / 10
    ds = make_dataset(arrays, {"kind": "custom"})
    chunks = np.round(dataset_chunks(ds, 3)[..., 0] * 10)
    np.testing.assert_array_equal(chunks, [[1, 2, 3], [2, 3, 3], [3, 3, 3], [4, 5, 5], [5, 5, 5]])
    np.testing.assert_array_equal(dataset_chunks(ds, 1)[..., 0], arrays["actions"])


def test_chunked_finetune_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "run"
    args = ["finetune", "--preset", "tiny", "--out", str(out), "--no-progress", "--chunk-len", "4", "--exec-len", "2"]
    args += ["--base-training", "successes", "--intervene", "scripted", "--intervene-patience", "5"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["env_steps"] >= 300 and summary["update_calls"] > 0
    assert summary["intervened_steps"] > 0 and summary["episodes_with_intervention"] > 0
    rows = metrics_rows(out)
    assert all(np.isfinite(r["critic/loss"]) for r in rows if "critic/loss" in r)
    assert any(r.get("train/intervention_rate", 0) > 0 for r in rows)
    config = json.loads((out / "config.json").read_text())
    assert (config["agent"]["chunk_len"], config["agent"]["exec_len"]) == (4, 2)
    assert config["agent"]["base_training"] == "successes"
    assert main(["eval", str(out), "--episodes", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["eval/episodes"] == 1


def test_success_only_base_needs_successful_demos(tmp_path, capsys):
    from expoft.data.dataset import save_dataset

    arrays = episode_arrays([5, 4], obs_dim=28, action_dim=5)
    arrays["rewards"] = np.zeros(9, np.float32)
    save_dataset(make_dataset(arrays, {"kind": "custom", "env": "cube-single"}), tmp_path / "failures")
    args = ["finetune", "--preset", "tiny", "--out", str(tmp_path / "run"), "--no-progress"]
    args += ["--dataset", str(tmp_path / "failures.npz"), "--base-training", "successes"]
    assert main(args) == 2
    assert "offline data has none" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())

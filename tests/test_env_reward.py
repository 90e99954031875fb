"""The run's reward, online and offline: the same labels for the same states, and the run's data
labelled for its own task and reward."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from expoft.cli import main
from expoft.data.dataset import load_dataset, save_dataset
from expoft.data.labels import label_for_task
from expoft.data.transitions import DatasetError, make_dataset
from expoft.envs.make import make_env
from expoft.envs.ogbench_domains import QPOS_OBJECTS_START, task_goal
from expoft.train import build as loop
from expoft.train.config import preset

from .conftest import episode_arrays


def _place_cube(env, cube: int, xyz) -> None:
    sim = env.unwrapped
    start = QPOS_OBJECTS_START + 7 * cube
    sim.data.qpos[start : start + 3] = xyz
    sim.data.qvel[:] = 0.0
    mujoco.mj_forward(sim.model, sim.data)


@pytest.mark.parametrize("reward", ["ogbench", "sparse"])
def test_online_reward_is_the_offline_label_of_the_same_states(reward):
    """cube-double task 2: no cube, one cube, both cubes at their goals. OGBench's reward gives
    -2, -1, 0 (partial credit), the success reward 0, 0, 1; both end the episode at success only,
    and label_for_task gives the same rewards to the states the env reached."""
    goal = task_goal("cube-double", 2).cube_xyzs
    env = make_env("cube-double", 2, reward=reward)
    env.reset(seed=0)
    still = np.zeros(5)
    rewards, terminated, next_qpos = [], [], []
    for placed in range(3):
        if placed:
            _place_cube(env, placed - 1, goal[placed - 1])
        _, r, term, _, info = env.step(still)
        assert term == info["success"] == (placed == 2)
        rewards.append(r)
        terminated.append(term)
        next_qpos.append(env.unwrapped.data.qpos.copy())
    expected = [-2.0, -1.0, 0.0] if reward == "ogbench" else [0.0, 0.0, 1.0]
    assert rewards == expected

    arrays = episode_arrays([3], obs_dim=37, action_dim=5, labelled=False)
    offline = label_for_task(make_dataset({**arrays, "next_qpos": np.array(next_qpos)}), "cube-double", 2, reward)
    np.testing.assert_array_equal(offline.rewards, rewards)
    np.testing.assert_array_equal(offline.terminals, terminated)
    with pytest.raises(ValueError, match="reward must be one of"):
        make_env("cube-double", 2, reward="dense")


def _play_data():
    """Two cube-double states, task 1: one cube at its goal, then both (unlabelled)."""
    goal = task_goal("cube-double", 1).cube_xyzs
    qpos = np.zeros((2, 28))
    qpos[:, QPOS_OBJECTS_START : QPOS_OBJECTS_START + 3] = goal[0]
    qpos[1, QPOS_OBJECTS_START + 7 : QPOS_OBJECTS_START + 10] = goal[1]
    arrays = episode_arrays([2], obs_dim=37, action_dim=5, labelled=False)
    return make_dataset({**arrays, "next_qpos": qpos}, {"kind": "play", "env": "cube-double"})


def test_the_runs_data_is_labelled_for_its_task_and_reward(monkeypatch):
    """Data expoft labelled with the other reward is relabelled from its states; data labelled for
    another task is refused; a bad reward name fails in the config."""
    sparse = label_for_task(_play_data(), "cube-double", 1, "sparse")
    monkeypatch.setattr(loop, "get_or_generate", lambda demos, progress: (None, sparse, None))

    dense = loop.offline_data(preset("tiny", env="cube-double", reward="ogbench"), progress=False)
    np.testing.assert_array_equal(dense.rewards, [-1, 0])
    assert dense.meta["reward"] == "ogbench" and sparse.meta["reward"] == "sparse"  # the input is untouched
    same = loop.offline_data(preset("tiny", env="cube-double"), progress=False)
    assert same is sparse
    with pytest.raises(DatasetError, match="labelled for task 1, but the run is for task 3: pass --task 1"):
        loop.offline_data(preset("tiny", env="cube-double", task=3), progress=False)
    with pytest.raises(ValueError, match="reward must be one of"):
        preset("tiny", reward="dense")


def test_data_label_writes_a_labelled_copy_and_keeps_the_input(tmp_path, capsys):
    play = save_dataset(_play_data(), tmp_path / "play")
    before = play.read_bytes()
    assert main(["data", "label", str(play), "--task", "1", "--reward", "ogbench"]) == 0
    out = tmp_path / "play-task1-ogbench.npz"
    assert f"wrote {out}" in capsys.readouterr().out
    labelled = load_dataset(out)
    np.testing.assert_array_equal(labelled.rewards, [-1, 0])
    assert labelled.meta["task"] == 1 and labelled.meta["reward"] == "ogbench" and labelled.episode_success.all()
    assert main(["data", "label", str(play), "--task", "1", "--reward", "ogbench"]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "label", str(play), "--reward", "dense"]) == 2
    assert "--reward must be one of" in capsys.readouterr().err
    assert play.read_bytes() == before and not load_dataset(play).has_task

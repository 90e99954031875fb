"""The robot interface and its safety limits: known answers on a recording arm, and the OGBench
cube arm behind them."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from expoft.envs.make import make_env
from expoft.robot.interface import RobotEnv
from expoft.robot.safety import FileStop, SafetyLimits, SafetyWrapper


class RecordingArm(gymnasium.Env):
    """An arm whose effector moves by 0.1 x the action's first three dimensions; keeps every command."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (3,))
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (4,))

    def __init__(self):
        self.commands, self.stopped, self.pos = [], 0, np.zeros(3)

    def reset(self, *, seed=None, options=None):
        self.pos = np.zeros(3)
        return self.pos.copy(), {"proprio/effector_pos": self.pos.copy()}

    def step(self, action):
        self.commands.append(np.array(action))
        self.pos = self.pos + 0.1 * np.asarray(action[:3])
        return self.pos.copy(), 0.0, False, False, {"success": False, "proprio/effector_pos": self.pos.copy()}

    def safe_stop(self):
        self.stopped += 1


def test_bounds_and_rate_limit_known_answer():
    arm = SafetyWrapper(RecordingArm(), SafetyLimits(action_low=(-1, -1, -1, -0.5), action_high=(1, 1, 1, 0.5),
                                                     max_delta=0.25))  # fmt: skip
    arm.reset()
    _, _, _, _, info = arm.step([1.0, -1.0, 0.1, 1.0])
    np.testing.assert_allclose(arm.env.commands[-1], [0.25, -0.25, 0.1, 0.25])
    assert info["safety/bounded"] == 1 and info["safety/rate_limited"] == 3
    arm.step([1.0, -1.0, 0.1, 1.0])
    np.testing.assert_allclose(arm.env.commands[-1], [0.5, -0.5, 0.1, 0.5])


def test_the_workspace_box_stops_outward_motion_only():
    limits = SafetyLimits(workspace_low=(-0.15, -1, -1), workspace_high=(0.15, 1, 1))
    arm = SafetyWrapper(RecordingArm(), limits)
    arm.reset()
    for _ in range(5):
        arm.step([1.0, 0.0, 0.0, 0.0])
    assert arm.env.pos[0] == pytest.approx(0.2)  # reached the face (0.15) and went one step past it
    _, _, _, _, info = arm.step([1.0, 0.5, 0.0, 0.0])  # outward along x: zeroed; y is free
    np.testing.assert_allclose(arm.env.commands[-1], [0.0, 0.5, 0.0, 0.0])
    assert info["safety/workspace"] == 1
    arm.step([-1.0, 0.0, 0.0, 0.0])  # back inward: allowed
    np.testing.assert_allclose(arm.env.commands[-1], [-1.0, 0.0, 0.0, 0.0])


def test_time_limit_and_emergency_stop(tmp_path):
    stop = FileStop(tmp_path / "STOP")
    arm = SafetyWrapper(RecordingArm(), SafetyLimits(episode_steps=3), stop=stop)
    arm.reset()
    assert [arm.step(np.zeros(4))[3] for _ in range(3)] == [False, False, True]
    arm.reset()
    arm.step(np.zeros(4))
    (tmp_path / "STOP").touch()
    sent = len(arm.env.commands)
    obs, reward, terminated, truncated, info = arm.step(np.ones(4))
    assert truncated and not terminated and info["emergency_stop"] and reward == 0.0
    assert len(arm.env.commands) == sent and arm.env.stopped == 1  # nothing sent; asked to hold still


def test_unsafe_actions_and_bad_limits_are_refused():
    arm = SafetyWrapper(RecordingArm(), SafetyLimits())
    arm.reset()
    with pytest.raises(ValueError, match="nothing was sent"):
        arm.step([np.nan, 0, 0, 0])
    with pytest.raises(ValueError, match="nothing was sent"):
        arm.step([0, 0])
    assert arm.env.commands == []
    with pytest.raises(ValueError, match="max_delta"):
        SafetyLimits(max_delta=0.0)
    with pytest.raises(ValueError, match="together"):
        SafetyLimits(workspace_low=(0, 0, 0))
    with pytest.raises(ValueError, match="action dimensions"):
        SafetyWrapper(RecordingArm(), SafetyLimits(action_low=(-1,), action_high=(1,)))
    with pytest.raises(KeyError, match="effector position"):
        SafetyWrapper(RecordingArm(), SafetyLimits(workspace_low=(0, 0, 0), workspace_high=(1, 1, 1),
                                                   position_key="tcp")).reset()  # fmt: skip


def test_the_ogbench_cube_arm_is_a_robot_env_and_stays_in_its_box():
    """The simulated arm behind the same interface and limits: a policy that pushes the effector
    up and out all the time leaves the box by at most one step's travel."""
    env = make_env("cube-single", 1)
    assert isinstance(env, RobotEnv)
    _, info = env.reset(seed=0)
    start = np.asarray(info["proprio/effector_pos"])
    low, high = tuple(start - 0.05), tuple(start + 0.05)
    arm = SafetyWrapper(env, SafetyLimits(workspace_low=low, workspace_high=high, episode_steps=40))
    arm.reset(seed=0)
    truncated, highest = False, -np.inf
    while not truncated:
        _, _, _, truncated, info = arm.step(np.array([1.0, 1.0, 1.0, 0.0, 0.0], np.float32))
        highest = max(highest, float(np.max(np.asarray(info["proprio/effector_pos"]) - np.asarray(high))))
    assert highest < 0.05  # past a face by less than one step's travel, never further

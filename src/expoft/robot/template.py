"""A template for your own arm: copy this file, fill in ``MyArm``, and run
``expoft actor --learner ws://LEARNER:8765 --robot my_lab.my_arm:make``.

As shipped, ``make`` returns the simulated OGBench cube arm behind the same safety limits, so
``expoft actor --robot expoft.robot.template:make`` runs end to end here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import gymnasium
import numpy as np

from expoft.envs.run_env import make_run_env
from expoft.robot.safety import FileStop, SafetyLimits, SafetyWrapper

if TYPE_CHECKING:
    from expoft.train.config import RunConfig


class MyArm(gymnasium.Env):
    """Your driver (``expoft.robot.interface.RobotEnv``). Each method says what expoft expects."""

    def __init__(self, obs_dim: int, action_dim: int):
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

    def reset(self, *, seed=None, options=None):
        # Move to the home pose; wait until the scene is reset (e.g. input("reset the scene, then Enter"));
        # return (observation, {"proprio/effector_pos": xyz, ...}).
        raise NotImplementedError("connect your arm here: docs/robot.md, 'Your arm'")

    def step(self, action):
        # Scale action ([-1, 1]^A) to your command (e.g. 2 cm per step of end-effector motion), send it,
        # wait for the control period, read the state; success from a detector or a person's key.
        raise NotImplementedError("connect your arm here: docs/robot.md, 'Your arm'")

    def safe_stop(self):
        # Hold the current pose (called on an emergency stop).
        raise NotImplementedError("connect your arm here: docs/robot.md, 'Your arm'")


def make(cfg: RunConfig) -> gymnasium.Env:
    """The actor's environment for the learner's run ``cfg``: here the simulated arm (replace
    ``make_run_env(cfg)`` by ``MyArm(...)``) behind its safety limits."""
    arm = make_run_env(cfg)
    _, info = arm.reset(seed=cfg.seed)
    home = np.asarray(info["proprio/effector_pos"])
    limits = SafetyLimits(
        max_delta=1.0,  # at most half the action range per step
        workspace_low=(home[0] - 0.25, home[1] - 0.35, 0.0),  # the table top around the start pose
        workspace_high=(home[0] + 0.25, home[1] + 0.35, home[2] + 0.2),
    )
    # `touch STOP` (in the actor's folder, or $EXPOFT_STOP_FILE) is the emergency stop: the episode
    # ends and no further command is sent
    return SafetyWrapper(arm, limits, stop=FileStop(os.environ.get("EXPOFT_STOP_FILE", "STOP")))

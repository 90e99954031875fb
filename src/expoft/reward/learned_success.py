"""A run whose success signal is a learned detector (``--success-detector DIR``), as on a robot.

:class:`LearnedSuccess` sits on the pixel environment: after every step the detector looks at the
camera frame; when it fires the episode ends as a success with reward 1, whatever the simulator
says. The simulator's own judgement is still read, only to report how the detector did
(``info["simulator_success"]``: the task was reached at some step of this episode), never to train.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gymnasium

from expoft.envs.run_env import make_run_env
from expoft.obs import PIXELS
from expoft.reward.classifier import SuccessClassifier

if TYPE_CHECKING:
    from expoft.train.config import RunConfig


def never(info: dict) -> bool:
    """The simulator's success detector switched off: its episodes end only at the time limit."""
    return False


class LearnedSuccess(gymnasium.Wrapper):
    """Terminated, reward and ``info["success"]`` from ``detector`` on ``obs["pixels"]`` (sparse
    reward). The wrapped env must not end episodes at its own success (make it with ``never``)."""

    def __init__(self, env: gymnasium.Env, detector: SuccessClassifier):
        super().__init__(env)
        self.detector = detector
        self._reached = False

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._reached = False
        return obs, info

    def step(self, action):
        obs, _, _, truncated, info = self.env.step(action)
        self._reached = self._reached or bool(info.get("simulator_success", False))
        fired = self.detector(obs[PIXELS])
        info = {**info, "success": fired, "simulator_success": self._reached}
        return obs, float(fired), fired, truncated, info


def make_training_env(cfg: RunConfig, render: bool = False) -> gymnasium.Env:
    """The environment a run learns in: the run's, with its success from ``cfg.success_detector``
    when it has one (evaluations use the run's environment as it is)."""
    if cfg.success_detector is None:
        return make_run_env(cfg, render=render)
    detector = SuccessClassifier.load(cfg.success_detector)
    assert cfg.pixels is not None, "RunConfig refuses a success detector without pixels"
    if detector.spec.image_shape != cfg.pixels.image_shape:
        raise ValueError(f"{cfg.success_detector} judges frames {detector.spec.image_shape}, the run observes "
                         f"{cfg.pixels.image_shape}: train it with the run's --image-size and cameras")  # fmt: skip
    return LearnedSuccess(make_run_env(cfg, render=render, detector=never), detector)

"""The environment a run's config asks for: state observations, or pixel ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

from expoft.envs.make import SuccessDetector, env_success, make_env
from expoft.envs.pixels import make_pixel_env

if TYPE_CHECKING:  # annotations only: train builds on envs, not the other way round
    from expoft.train.config import RunConfig


def make_run_env(cfg: RunConfig, render: bool = False, detector: SuccessDetector = env_success):
    """The run's environment: state observations, or pixel ones with ``cfg.pixels``; ``detector``:
    its success (the simulator's flag, by default)."""
    if cfg.pixels is None:
        return make_env(cfg.env, cfg.task, detector, render, cfg.episode_steps, cfg.reward)
    return make_pixel_env(cfg.env, cfg.task, cfg.pixels, cfg.episode_steps, detector, render, cfg.reward)

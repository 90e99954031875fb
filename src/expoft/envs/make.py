"""Environments for online fine-tuning and evaluation.

``make_env`` builds an OGBench singletask env whose reward is the success
signal: r = 1 when the step reaches the goal (the episode then ends), else 0
(ALGORITHMS.md, EXPO-FT step 6). The success detector is a plain function of
``info``; the default reads the environment's own success flag. With
``reward="ogbench"`` the reward is OGBench's own singletask reward instead,
(#parts of the goal that hold) - (#parts), 0 at success: partial credit for each
cube, button, drawer or window in place (protocol P2 on the cube domains, as in the
published OGBench tables); it is what ``label_for_task(..., "ogbench")`` gives
offline data, so offline and online rewards agree.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium
import numpy as np

from expoft.envs.ogbench_domains import check_reward, get_domain, make_singletask_env

SuccessDetector = Callable[[dict], bool]


def env_success(info: dict) -> bool:
    """The simulator's own success flag."""
    return bool(info["success"])


class SuccessReward(gymnasium.Wrapper):
    """The episode terminates at success; the reward is 1 there and 0 before (``sparse``) or
    OGBench's singletask reward (``ogbench``). Observations as float32."""

    def __init__(self, env: gymnasium.Env, detector: SuccessDetector = env_success, reward: str = "sparse"):
        super().__init__(env)
        check_reward(reward)
        self._detector = detector
        self._reward = reward

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return np.asarray(obs, np.float32), info

    def step(self, action):
        obs, env_reward, _, truncated, info = self.env.step(np.asarray(action, np.float64))
        info["simulator_success"] = bool(info["success"])  # kept for reports when a detector decides
        success = self._detector(info)
        info["success"] = success
        reward = float(env_reward) if self._reward == "ogbench" else float(success)
        return np.asarray(obs, np.float32), reward, success, truncated, info


RENDER_SIZE = 160


def make_env(
    env: str,
    task: int,
    detector: SuccessDetector = env_success,
    render: bool = False,
    episode_steps: int | None = None,
    reward: str = "sparse",
) -> gymnasium.Env:
    """Singletask env of ``env`` (e.g. ``cube-single``) for ``task`` with the success reward;
    ``render=True``: ``env.render()`` returns RGB frames (offscreen, for videos);
    ``episode_steps``: time limit (None: the domain's, e.g. 200 for cube-single);
    ``reward``: ``sparse`` (1 at success) or ``ogbench`` (OGBench's partial-credit reward)."""
    domain = get_domain(env)
    kwargs = {"render_mode": "rgb_array", "width": RENDER_SIZE, "height": RENDER_SIZE} if render else {}
    if episode_steps is not None:
        if episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
        kwargs["max_episode_steps"] = episode_steps
    return SuccessReward(make_singletask_env(domain, task, **kwargs), detector, reward)

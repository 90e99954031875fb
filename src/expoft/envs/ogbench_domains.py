"""The OGBench manipulation domains expoft knows, and how to build their environments.

Everything domain-specific that the data generators and the reward relabelling
need lives in :class:`Domain`: which gymnasium ids to build, how big the
observation and action vectors are, where in ``qpos`` the objects live, and the
five singletask goals (read from the environment itself, never re-typed here).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from functools import cache
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# OGBench's float64 action bounds make gymnasium warn on every env built, and glfw
# warns about a missing X display although nothing here opens a window.
warnings.filterwarnings("ignore", message=r".*precision lowered by casting to float32.*")
warnings.filterwarnings("ignore", message=r".*DISPLAY environment variable is missing.*")

# OGBench lays out qpos as: 6 arm joints + 8 gripper joints, then the objects.
QPOS_OBJECTS_START = 14
QPOS_PER_CUBE = 7  # xyz + quaternion


@dataclasses.dataclass(frozen=True)
class Domain:
    """Static facts about one OGBench manipulation domain.

    Attributes:
        name: expoft's short name, e.g. ``cube-double``.
        family: ``cube``, ``scene`` or ``puzzle``; selects oracles and success rules.
        play_env_id: gymnasium id of the goal-conditioned env used for play data.
        obs_dim: state observation size (``[obs_dim]`` float32).
        action_dim: action size; actions live in ``[-1, 1]^action_dim``.
        num_cubes: cubes in the scene (0 for puzzle).
        num_buttons: buttons whose 0/1 state matters for success (0 for cube).
        episode_steps: time limit of the singletask evaluation env.
    """

    name: str
    family: str
    play_env_id: str
    obs_dim: int
    action_dim: int
    num_cubes: int
    num_buttons: int
    episode_steps: int
    num_tasks: int = 5

    def singletask_env_id(self, task: int) -> str:
        check_task(self, task)
        prefix = self.play_env_id.removesuffix("-v0")
        return f"{prefix}-singletask-task{task}-v0"

    @property
    def qpos_drawer(self) -> int:
        """Index of the drawer slide joint in qpos (scene only)."""
        return QPOS_OBJECTS_START + self.num_cubes * QPOS_PER_CUBE + self.num_buttons

    @property
    def qpos_window(self) -> int:
        return self.qpos_drawer + 1

    @property
    def qpos_columns_needed(self) -> int:
        """How many leading qpos entries the success rule reads."""
        if self.family == "scene":
            return self.qpos_window + 1
        return QPOS_OBJECTS_START + self.num_cubes * QPOS_PER_CUBE

    @property
    def has_button_states(self) -> bool:
        return self.num_buttons > 0


DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in [
        Domain("cube-single", "cube", "cube-single-v0", 28, 5, num_cubes=1, num_buttons=0, episode_steps=200),
        Domain("cube-double", "cube", "cube-double-v0", 37, 5, num_cubes=2, num_buttons=0, episode_steps=500),
        Domain("scene", "scene", "scene-v0", 40, 5, num_cubes=1, num_buttons=2, episode_steps=750),
        Domain("puzzle-3x3", "puzzle", "puzzle-3x3-v0", 55, 5, num_cubes=0, num_buttons=9, episode_steps=500),
    ]
}


def get_domain(name: str) -> Domain:
    """Look up a domain by expoft name; accepts OGBench ids like ``cube-double-v0`` too."""
    key = name.removeprefix("ogbench:").removesuffix("-v0")
    for suffix in ("-play", "-noisy"):
        key = key.removesuffix(suffix)
    if key not in DOMAINS:
        raise ValueError(f"unknown environment {name!r}; expoft knows: {', '.join(DOMAINS)}")
    return DOMAINS[key]


def check_task(domain: Domain, task: int) -> None:
    if not 1 <= task <= domain.num_tasks:
        raise ValueError(f"task must be in 1..{domain.num_tasks} for {domain.name}, got {task}")


def _import_ogbench() -> None:
    # Importing registers the ids with gymnasium. glfw complains about a missing
    # X display on headless machines although nothing here opens a window.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ogbench.manipspace  # noqa: F401


def make_singletask_env(domain: Domain, task: int, **kwargs: Any):
    """The singletask evaluation env, with success judged AFTER each step.

    OGBench's singletask envs judge success before the step ('pre'); expoft
    uses 'post' everywhere so that the reward of transition (s, a, s') depends
    on s', matching how offline data is relabelled (from ``next_qpos``).
    """
    import gymnasium

    _import_ogbench()
    kwargs.setdefault("success_timing", "post")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gymnasium.make(domain.singletask_env_id(task), **kwargs)


def make_play_env(domain: Domain, episode_steps: int):
    """The data-collection env (privileged target info for the oracles)."""
    import gymnasium

    _import_ogbench()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gymnasium.make(
            domain.play_env_id,
            terminate_at_goal=False,
            mode="data_collection",
            max_episode_steps=episode_steps,
        )


@dataclasses.dataclass(frozen=True)
class TaskGoal:
    """The goal of one singletask, in the terms of the success rule.

    Attributes:
        cube_xyzs: ``[num_cubes, 3]`` goal position of each cube.
        button_states: ``[num_buttons]`` goal 0/1 state of each button.
        drawer_pos, window_pos: goal joint positions (scene only, else None).
    """

    cube_xyzs: np.ndarray
    button_states: np.ndarray
    drawer_pos: float | None
    window_pos: float | None


@cache
def task_goal(domain_name: str, task: int) -> TaskGoal:
    """Read the goal of ``task`` from OGBench's own task table (no copy of it here)."""
    domain = get_domain(domain_name)
    check_task(domain, task)
    env = make_singletask_env(domain, task)
    info = env.unwrapped.task_infos[task - 1]
    env.close()
    if domain.family == "cube":
        return TaskGoal(np.asarray(info["goal_xyzs"], np.float64), np.zeros(0, np.int64), None, None)
    if domain.family == "scene":
        goal = info["goal"]
        return TaskGoal(
            np.asarray(goal["block_xyzs"], np.float64),
            np.asarray(goal["button_states"], np.int64),
            float(goal["drawer_pos"]),
            float(goal["window_pos"]),
        )
    return TaskGoal(np.zeros((0, 3)), np.asarray(info["goal_button_states"], np.int64), None, None)


# The success tolerances OGBench uses (metres for cubes, joint units for slides).
CUBE_TOLERANCE = 0.04
SLIDE_TOLERANCE = 0.04


def cube_positions(domain: Domain, qpos: np.ndarray) -> np.ndarray:
    """Cube centres ``[N, num_cubes, 3]`` from MuJoCo positions ``qpos [N, nq]``."""
    idx = QPOS_OBJECTS_START + QPOS_PER_CUBE * np.arange(domain.num_cubes)[:, None] + np.arange(3)
    return qpos[:, idx]


CUBE_AT_REST_Z = 0.02
"""A cube's centre height (m) when it lies on the table."""
CUBE_LIFTED_Z = 0.05
"""A cube's centre height (m) above which it counts as carried (where drops happen)."""


def env_cube_positions(domain: Domain, env: Any) -> np.ndarray:
    """Cube centres ``[num_cubes, 3]`` of an OGBench environment now (wrappers allowed)."""
    return cube_positions(domain, np.asarray(env.unwrapped.data.qpos)[None])[0]


def subgoal_successes(domain: Domain, goal: TaskGoal, qpos: np.ndarray, button_states: np.ndarray | None) -> np.ndarray:
    """Which parts of the task goal hold in each state.

    Args:
        qpos: ``[N, nq]`` MuJoCo positions of the states to judge.
        button_states: ``[N, num_buttons]`` integer button states (None for cube).

    Returns:
        ``[N, num_subgoals]`` bool. The task is solved where all are true.
    """
    parts = []
    if domain.num_cubes:
        parts.append(np.linalg.norm(cube_positions(domain, qpos) - goal.cube_xyzs, axis=-1) <= CUBE_TOLERANCE)
    if domain.has_button_states:
        if button_states is None:
            raise ValueError(f"{domain.name} needs button states to judge success")
        parts.append(button_states == goal.button_states)
    if domain.family == "scene":
        parts.append(np.abs(qpos[:, [domain.qpos_drawer]] - goal.drawer_pos) <= SLIDE_TOLERANCE)
        parts.append(np.abs(qpos[:, [domain.qpos_window]] - goal.window_pos) <= SLIDE_TOLERANCE)
    return np.concatenate(parts, axis=-1)


REWARD_MODES = ("sparse", "ogbench")
"""sparse: 1 at success, else 0; ogbench: OGBench's singletask reward (partial credit per part).
Both end the episode at success."""


def check_reward(reward: str, name: str = "reward") -> None:
    """A clear error for a reward mode that is not one of :data:`REWARD_MODES` (``name``: how the
    caller's user spells the setting, e.g. ``--reward``)."""
    if reward not in REWARD_MODES:
        raise ValueError(f"{name} must be one of {REWARD_MODES}, got {reward!r}")

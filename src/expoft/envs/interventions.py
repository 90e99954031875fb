"""Interventions: someone (a person, or in simulation a scripted expert) may take over.

An :class:`Intervener` sees each observation and the action the policy proposes and returns
either an action to execute instead or None. :class:`~expoft.envs.chunks.ActionChunks` asks it
before every executed step and flags the steps it took over, so the flags reach the replay
buffer (step level; the chunk level is "any step of the chunk") and, when the episode
succeeds, the base's success-only imitation pool.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from expoft.envs.ogbench_domains import cube_positions, get_domain, subgoal_successes, task_goal
from expoft.envs.task_director import TaskDirector


class Intervener(Protocol):
    def reset(self, obs: np.ndarray, info: dict) -> None:
        """A new episode starts."""

    def __call__(self, obs: np.ndarray, info: dict, proposed: np.ndarray) -> np.ndarray | None:
        """The action to execute instead of ``proposed``, or None to let the policy act."""


class ScriptedIntervener:
    """OGBench's oracle, steered to the task goal, takes over from a policy that is stuck.

    "Stuck" means: for ``patience`` steps, no new part of the goal came to hold and the objects
    (cubes; drawer and window for scene) came no closer to their goal positions by more than
    ``min_progress`` (metres, summed). Then, with probability ``p_start * decay ** episode``
    (drawn once per stall), the oracle drives for ``takeover_steps`` steps and hands back.
    Interventions thus taper off as training goes on, as a person's would.
    """

    def __init__(
        self,
        env,
        env_name: str,
        task: int,
        seed: int = 0,
        patience: int = 40,
        takeover_steps: int = 40,
        p_start: float = 1.0,
        decay: float = 0.98,
        min_progress: float = 0.01,
    ):
        if patience < 1 or takeover_steps < 1:
            raise ValueError("patience and takeover_steps must be >= 1")
        if not 0.0 <= p_start <= 1.0 or not 0.0 < decay <= 1.0:
            raise ValueError(f"need p_start in [0, 1] and decay in (0, 1], got {p_start}, {decay}")
        self._env = env
        self._domain = get_domain(env_name)
        self._goal = task_goal(self._domain.name, task)
        self.seed = seed
        self.patience, self.takeover_steps = patience, takeover_steps
        self.p_start, self.decay, self.min_progress = p_start, decay, min_progress
        self.episodes = 0
        """Episodes finished so far (set it when resuming a run)."""
        self._director: TaskDirector | None = None

    @property
    def probability(self) -> float:
        """Chance of taking over at the next stall."""
        return self.p_start * self.decay**self.episodes

    def _progress(self, info: dict) -> tuple[int, float]:
        qpos = np.asarray(info["qpos"])[None]
        buttons = getattr(self._env.unwrapped, "_cur_button_states", None)
        buttons = None if buttons is None else np.asarray(buttons)[None]
        solved = int(subgoal_successes(self._domain, self._goal, qpos, buttons).sum())
        distance = 0.0
        if self._domain.num_cubes:
            distance = float(
                np.linalg.norm(cube_positions(self._domain, qpos)[0] - self._goal.cube_xyzs, axis=-1).sum()
            )
        if self._domain.family == "scene":
            drawer_goal, window_goal = self._goal.drawer_pos, self._goal.window_pos
            assert drawer_goal is not None and window_goal is not None, "scene goals set the drawer and window"
            distance += abs(float(qpos[0, self._domain.qpos_drawer]) - float(drawer_goal))
            distance += abs(float(qpos[0, self._domain.qpos_window]) - float(window_goal))
        return solved, distance

    def reset(self, obs: np.ndarray, info: dict) -> None:
        if self._director is not None:
            self.episodes += 1
        # Randomness from (seed, episode) alone, so a resumed run intervenes as the original did.
        # OGBench's oracles draw from numpy's global generator: it is seeded here too.
        self._rng = np.random.default_rng([self.seed, self.episodes])
        np.random.seed(self._rng.integers(2**32))
        self._director = TaskDirector(self._env, self._domain, self._goal, self._rng)
        self._best = self._progress(info)
        self._stalled_for = 0
        self._driving = 0

    def __call__(self, obs: np.ndarray, info: dict, proposed: np.ndarray) -> np.ndarray | None:
        if self._director is None:
            raise RuntimeError("call reset() at the start of each episode")
        if self._driving:
            self._driving -= 1
            return np.clip(self._director.select_action(obs, info), -1.0, 1.0).astype(np.float32)
        solved, distance = self._progress(info)
        if solved > self._best[0] or distance < self._best[1] - self.min_progress:
            self._best = (max(solved, self._best[0]), min(distance, self._best[1]))
            self._stalled_for = 0
            return None
        if self._stalled_for < self.patience:
            self._stalled_for += 1  # one more policy step without progress
            return None
        self._stalled_for = 0
        if self._rng.random() >= self.probability:
            return None
        self._director.reset(obs, info)
        self._driving = self.takeover_steps - 1
        return np.clip(self._director.select_action(obs, info), -1.0, 1.0).astype(np.float32)

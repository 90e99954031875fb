"""Action-chunk execution as an environment wrapper (ALGORITHMS.md, EXPO-FT step 1).

The agent proposes ``exec_len`` actions at a time; this wrapper plays them one by one and
stops early when the episode ends, so a chunk near the end is simply shorter. Every
executed step comes back as its own transition: the replay buffer stores single steps and
rebuilds chunks (discounted reward sums, ``gamma^k`` for the ``k`` steps taken, masks) when it
samples, so no data is ever dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import gymnasium
import numpy as np

from expoft.envs.interventions import Intervener


class Transition(NamedTuple):
    observation: np.ndarray
    action: np.ndarray
    reward: float
    next_observation: np.ndarray
    terminated: bool
    truncated: bool
    intervened: bool = False
    """The action came from an intervener, not the policy."""


class ActionChunks(gymnasium.Wrapper):
    """``step(chunk)`` with ``chunk`` of shape ``[exec_len, A]`` (or flat ``[exec_len * A]``).

    Returns the observation after the last executed step, the undiscounted reward sum, the
    episode flags, and ``info`` of the last step plus ``info["transitions"]`` (one
    :class:`Transition` per executed step). ``on_step()`` is called after every inner step
    (e.g. to render a frame). An ``intervener`` is asked before every step and may replace the
    policy's action (the transition is then flagged ``intervened``). An intervener with
    ``pop_label()`` (a person with keys) may end the episode: ``success`` (terminated, success),
    ``failure`` (truncated) or ``rerecord`` (truncated, ``info["rerecord"]``: the learner drops it).
    """

    def __init__(
        self,
        env: gymnasium.Env,
        exec_len: int,
        on_step: Callable[[], None] | None = None,
        intervener: Intervener | None = None,
    ):
        super().__init__(env)
        if exec_len < 1:
            raise ValueError(f"exec_len must be >= 1, got {exec_len}")
        self.exec_len = exec_len
        self.on_step = on_step
        self.intervener = intervener
        self._obs = None
        self._info: dict = {}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs, self._info = obs, info
        if self.intervener is not None:
            self.intervener.reset(obs, info)
        return obs, info

    def _label(self) -> str | None:
        """The episode's label from a person (``HumanIntervener.pop_label``), if one came."""
        pop = getattr(self.intervener, "pop_label", None)
        return None if pop is None else pop()

    def step(self, chunk):
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        chunk = np.asarray(chunk, np.float32)
        if chunk.size % self.exec_len:
            raise ValueError(f"a chunk of {chunk.size} numbers does not split into exec_len={self.exec_len} actions")
        chunk = chunk.reshape(self.exec_len, -1)
        transitions, total = [], 0.0
        obs = self._obs
        for proposed in chunk:
            override = None if self.intervener is None else self.intervener(obs, self._info, proposed)
            action = proposed if override is None else np.asarray(override, np.float32)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            label = self._label()
            if label is not None:  # a person ended the episode: success, failure, or do it again
                info = {**info, "success": label == "success", "rerecord": label == "rerecord"}
                terminated, truncated = terminated or label == "success", truncated or label != "success"
            transitions.append(
                Transition(
                    obs, action, float(reward), next_obs, bool(terminated), bool(truncated), override is not None
                )
            )
            total += float(reward)
            obs, self._info = next_obs, info
            if self.on_step is not None:
                self.on_step()
            if terminated or truncated:
                break
        self._obs = None if (terminated or truncated) else obs
        return obs, total, terminated, truncated, {**info, "transitions": transitions}

"""Safety limits between a policy and an arm: action bounds, a maximum change per step, a
workspace box for the end effector, a time limit, and an emergency stop that ends the episode
without sending another command. What each limit did is counted in ``info`` (``safety/*``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import gymnasium
import numpy as np

from expoft.robot.interface import hold_still


@dataclasses.dataclass(frozen=True)
class SafetyLimits:
    """Limits in the policy's action units ([-1, 1] per dimension); None: no such limit."""

    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None
    """Per-dimension bounds inside [-1, 1] (e.g. a slower gripper)."""
    max_delta: float | None = None
    """Largest change of any action dimension from one step to the next (smooth commands)."""
    workspace_low: tuple[float, float, float] | None = None
    workspace_high: tuple[float, float, float] | None = None
    """Box the end effector stays in: an action pushing it further out along an axis where it is
    at (or past) the box's face is zeroed along that axis."""
    position_key: str = "proprio/effector_pos"
    """``info`` key of the end effector's position (xyz), needed by the workspace box."""
    position_dims: tuple[int, int, int] = (0, 1, 2)
    """Action dimensions that move the effector along x, y, z (OGBench: the first three)."""
    episode_steps: int | None = None
    """Time limit: the episode is cut (truncated) after this many steps."""

    def __post_init__(self):
        for name in ("action_low", "action_high"):
            bound = getattr(self, name)
            if bound is not None and not all(-1.0 <= b <= 1.0 for b in bound):
                raise ValueError(f"{name} must lie in [-1, 1], got {bound}")
        if (
            self.action_low is not None
            and self.action_high is not None
            and any(lo > hi for lo, hi in zip(self.action_low, self.action_high, strict=True))
        ):
            raise ValueError(f"action_low {self.action_low} exceeds action_high {self.action_high}")
        if self.max_delta is not None and not 0.0 < self.max_delta <= 2.0:
            raise ValueError(f"max_delta must lie in (0, 2], got {self.max_delta}")
        if (self.workspace_low is None) != (self.workspace_high is None):
            raise ValueError("give workspace_low and workspace_high together")
        if self.workspace_low is not None and any(
            lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high or (), strict=True)
        ):
            raise ValueError(f"workspace_low {self.workspace_low} must lie below workspace_high {self.workspace_high}")
        if self.episode_steps is not None and self.episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1, got {self.episode_steps}")


class FileStop:
    """An emergency stop anyone can pull: true while ``path`` exists (``touch STOP``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __call__(self) -> bool:
        return self.path.exists()


class SafetyWrapper(gymnasium.Wrapper):
    """``env`` behind ``limits``; ``stop()`` (e.g. ``FileStop``, a key, ``threading.Event.is_set``)
    is asked before every command: when true, no command is sent, the arm is asked to hold still,
    and the episode ends truncated with ``info["emergency_stop"]``."""

    def __init__(self, env: gymnasium.Env, limits: SafetyLimits, stop: Callable[[], bool] | None = None):
        super().__init__(env)
        self.limits, self.stop = limits, stop
        self.action_dim = int(np.prod(env.action_space.shape or ()))
        for name in ("action_low", "action_high"):
            bound = getattr(limits, name)
            if bound is not None and len(bound) != self.action_dim:
                raise ValueError(f"{name} has {len(bound)} values; the arm has {self.action_dim} action dimensions")
        self._prev = np.zeros(self.action_dim, np.float32)
        self._position: np.ndarray | None = None
        self._obs = None
        self._steps = 0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._prev[:] = 0.0
        self._steps, self._obs = 0, obs
        self._position = self._read_position(info)
        return obs, info

    def _read_position(self, info: dict) -> np.ndarray | None:
        if self.limits.workspace_low is None:
            return None
        if self.limits.position_key not in info:
            raise KeyError(f"the workspace box needs the effector position in info[{self.limits.position_key!r}]; "
                           "set SafetyLimits.position_key to your driver's key")  # fmt: skip
        return np.asarray(info[self.limits.position_key], np.float64)

    def safe_action(self, action) -> tuple[np.ndarray, dict[str, int]]:
        """The action ``limits`` allow, and what each limit changed (number of dimensions)."""
        lim = self.limits
        a = np.asarray(action, np.float32).reshape(-1)
        if a.shape != (self.action_dim,) or not np.isfinite(a).all():
            raise ValueError(f"unsafe action {action!r}: expected {self.action_dim} finite numbers; nothing was sent")
        safe = np.clip(a, -1.0, 1.0)
        if lim.action_low is not None or lim.action_high is not None:
            safe = np.clip(safe, lim.action_low or -1.0, lim.action_high or 1.0)
        counts = {"safety/bounded": int(np.sum(safe != a))}
        if lim.max_delta is not None:
            limited = np.clip(safe, self._prev - lim.max_delta, self._prev + lim.max_delta)
            counts["safety/rate_limited"] = int(np.sum(limited != safe))
            safe = limited
        if self._position is not None:
            before = safe.copy()
            low, high = np.asarray(lim.workspace_low), np.asarray(lim.workspace_high)
            for axis, dim in enumerate(lim.position_dims):
                if (self._position[axis] <= low[axis] and safe[dim] < 0) or (
                    self._position[axis] >= high[axis] and safe[dim] > 0
                ):
                    safe[dim] = 0.0
            counts["safety/workspace"] = int(np.sum(safe != before))
        return safe.astype(np.float32), counts

    def step(self, action):
        if self.stop is not None and self.stop():
            hold_still(self.env)
            return self._obs, 0.0, False, True, {"success": False, "emergency_stop": True}
        safe, counts = self.safe_action(action)
        obs, reward, terminated, truncated, info = self.env.step(safe)
        self._prev, self._obs = safe, obs
        self._steps += 1
        self._position = self._read_position(info)
        if self.limits.episode_steps is not None and self._steps >= self.limits.episode_steps:
            truncated = True
        return obs, reward, terminated, truncated, {**info, **counts}

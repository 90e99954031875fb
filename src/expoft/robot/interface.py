"""What expoft needs of a robot: the protocol an arm's driver implements (docs/robot.md).

Actions are what the policy emits, one step of a chunk at a time, in [-1, 1]^A (the driver maps
them to its commands: end-effector deltas, joint targets, a gripper); ``ActionChunks`` plays a
chunk through ``step``. Observations are a state vector, or a map ``{"pixels": uint8 [V, S, S, 3],
"proprio": float32 [P]}`` (``expoft.obs``). Success comes in ``info["success"]``: from a detector
(``expoft reward``) or from a person's key.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import gymnasium


@runtime_checkable
class RobotEnv(Protocol):
    """A gymnasium environment with these promises (a ``gymnasium.Env`` subclass is simplest)."""

    observation_space: gymnasium.Space
    action_space: gymnasium.spaces.Box
    """``Box(-1, 1, (A,))``: the driver scales it to the arm's units."""

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        """Bring the scene to a start state and return its observation. May block until a person
        has reset the scene (and said so); ``seed`` is the episode's reset seed (a simulator uses it,
        a robot may log it)."""
        ...

    def step(self, action) -> tuple[Any, float, bool, bool, dict]:
        """Command one action; ``(obs, reward, terminated, truncated, info)`` with
        ``info["success"]`` (bool). ``terminated``: the task is done (success); ``truncated``: cut
        (time limit, emergency stop)."""
        ...

    def close(self) -> None: ...


def hold_still(env: Any) -> None:
    """Ask the arm to stop where it is, if its driver can (``safe_stop()``); the emergency stop of
    ``expoft.robot.safety.SafetyWrapper`` calls this."""
    stop = getattr(getattr(env, "unwrapped", env), "safe_stop", None)
    if callable(stop):
        stop()


def load_robot(spec: str) -> Callable[..., Any]:
    """``"module:function"`` -> the function (``function(run_config) -> RobotEnv``)."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"--robot must be MODULE:FUNCTION (e.g. my_lab.arm:make), got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"--robot {spec}: {error}") from error
    if not callable(factory):
        raise ValueError(f"--robot {spec} is not a function")
    return factory

"""A simulated person at a keyboard: key events made from an expert's actions, for runs and
recordings in simulation that go through the same key handling as a real person's
(``expoft.robot.teleop.HumanIntervener`` with the ``KEYBOARD`` mapping).

The expert says what it would do (an action, or None to leave the arm to the policy); the typist
presses keys to do it: ``t`` when the expert starts or stops driving, the motion keys, space when
the gripper should change. A key press moves one axis at full speed for one step, so an expert's
proportional action is typed as a pulse train whose mean is that action (first-order
sigma-delta modulation, a residual per axis), the way a person taps a key to move slowly.
"""

from __future__ import annotations

import numpy as np

from expoft.robot.teleop import KEYBOARD, DeviceEvent, HumanIntervener, Mapping


class SimulatedTypist:
    """An ``Intervener`` (reset / __call__ / pop_label) whose actions come from key events.

    ``expert(obs, info, proposed) -> action | None`` with ``reset(obs, info)``: e.g. a
    ``ScriptedIntervener`` (takes over when the policy is stuck) or ``always_drive(director)``.
    ``health`` and ``active`` are the listening ``HumanIntervener``'s."""

    def __init__(self, expert, action_dim: int, mapping: Mapping = KEYBOARD):
        self.expert, self.mapping = expert, mapping
        self.person = HumanIntervener(self, mapping, action_dim)
        self._events: list[DeviceEvent] = []
        self._residual = np.zeros(action_dim)
        # The key for moving each axis up / down.
        self._keys: dict[int, dict[int, str]] = {}
        for code, (dim, sign) in mapping.motion.items():
            self._keys.setdefault(dim, {})[sign] = code
        self.keys_pressed = 0

    @property
    def active(self) -> bool:
        return self.person.active

    @property
    def health(self) -> dict:
        return self.person.health

    @property
    def gripper(self) -> float:
        return self.person.gripper

    def poll(self) -> list[DeviceEvent]:
        """The person's side of the keyboard (``HumanIntervener`` reads it)."""
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        pass

    def _press(self, code: str) -> None:
        self._events.append(DeviceEvent("key", code))
        self.keys_pressed += 1

    def reset(self, obs, info) -> None:
        self.expert.reset(obs, info)
        self.person.reset(obs, info)
        self._residual[:] = 0.0

    def pop_label(self) -> str | None:
        return self.person.pop_label()

    def __call__(self, obs, info, proposed) -> np.ndarray | None:
        wanted = self.expert(obs, info, proposed)
        if (wanted is not None) != self.person.active:
            self._press(self.mapping.take)
            self._residual[:] = 0.0
        if wanted is not None:
            wanted = np.asarray(wanted, np.float64)
            for dim, keys in self._keys.items():
                self._residual[dim] += float(np.clip(wanted[dim], -1.0, 1.0))
                if self._residual[dim] >= 0.5 and 1 in keys:
                    self._press(keys[1])
                    self._residual[dim] -= 1.0
                elif self._residual[dim] <= -0.5 and -1 in keys:
                    self._press(keys[-1])
                    self._residual[dim] += 1.0
            gripper = self.mapping.gripper
            if gripper is not None and np.sign(wanted[self.mapping.gripper_dim]) * self.person.gripper < 0:
                self._press(gripper)
        return self.person(obs, info, proposed)


class AlwaysDrive:
    """An expert that drives every step: a ``TaskDirector``'s (OGBench oracle's) action, for
    recording demonstrations with a simulated person."""

    def __init__(self, director):
        self.director = director

    def reset(self, obs, info) -> None:
        self.director.reset(obs, info)

    def __call__(self, obs, info, proposed) -> np.ndarray:
        return np.clip(self.director.select_action(obs, info), -1.0, 1.0)

"""A person in the loop: keyboard and gamepad interveners behind the ``Intervener`` protocol
(``expoft.envs.interventions``), with keys to label an episode.

A device is an event source (``poll() -> [DeviceEvent]``, never blocking): a terminal keyboard
(``TerminalKeys``, raw mode on a tty), a Linux gamepad (``EvdevGamepad``, python-evdev), or
``ScriptedEvents`` (tests, demos). ``HumanIntervener`` turns its events into take-over /
hand-back, an action while the person drives, and a label for the episode (success, failure,
re-record), and watches the device: one that stops sending while the person drives, or sends
nothing but zeros, is reported (``health``) and the policy gets the arm back.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LABELS = ("success", "failure", "rerecord")


class DeviceLost(RuntimeError):
    """The device went away (unplugged, its file closed)."""


@dataclasses.dataclass(frozen=True)
class DeviceEvent:
    kind: str
    """key (a character), button (pressed 1 / released 0) or axis (value in [-1, 1])."""
    code: str
    value: float = 1.0


class ScriptedEvents:
    """Events handed out by ``poll`` call: ``script[i]`` at the i-th poll (nothing after the end);
    an entry ``"lost"`` makes that poll raise ``DeviceLost``."""

    def __init__(self, script: Iterable[Iterable[DeviceEvent] | str]):
        self.script = [s if isinstance(s, str) else list(s) for s in script]
        self.polls = 0

    def poll(self) -> list[DeviceEvent]:
        events = self.script[self.polls] if self.polls < len(self.script) else []
        self.polls += 1
        if isinstance(events, str):
            raise DeviceLost("the scripted device went away")
        return list(events)

    def close(self) -> None:
        pass


class TerminalKeys:
    """Key presses from a terminal (``fd``: a tty, default stdin) in raw mode, without blocking."""

    def __init__(self, fd: int | None = None):
        import termios
        import tty

        self.fd = 0 if fd is None else fd
        if not os.isatty(self.fd):
            raise ValueError("the keyboard is read from a terminal: run expoft in one (stdin is not a tty)")
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)  # keys arrive one by one, unechoed; Ctrl-C still interrupts

    def poll(self) -> list[DeviceEvent]:
        events = []
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 64)
            if not data:
                break
            events += [DeviceEvent("key", chr(b).lower()) for b in data]
        return events

    def close(self) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


class EvdevGamepad:
    """A Linux gamepad (``/dev/input/eventN``) through python-evdev: sticks as axes in [-1, 1],
    buttons pressed / released."""

    def __init__(self, path: str):
        try:
            import evdev  # type: ignore[import-not-found]
        except ImportError as error:
            raise ValueError("gamepad interventions need python-evdev: pip install evdev") from error
        self._evdev = evdev
        self.device = evdev.InputDevice(path)
        self._ranges = {code: (info.min, info.max) for code, info in self.device.capabilities(absinfo=True).get(
            evdev.ecodes.EV_ABS, [])}  # fmt: skip

    def poll(self) -> list[DeviceEvent]:
        ecodes, events = self._evdev.ecodes, []
        while True:
            try:
                event = self.device.read_one()
            except BlockingIOError:
                break
            except OSError as error:  # unplugged
                raise DeviceLost(f"{self.device.path}: {error}") from error
            if event is None:
                break
            if event.type == ecodes.EV_ABS and event.code in self._ranges:
                lo, hi = self._ranges[event.code]
                value = 2.0 * (event.value - lo) / max(hi - lo, 1) - 1.0
                events.append(DeviceEvent("axis", ecodes.ABS[event.code], float(np.clip(value, -1, 1))))
            elif event.type == ecodes.EV_KEY:
                name = ecodes.BTN.get(event.code, ecodes.KEY.get(event.code, str(event.code)))
                events.append(DeviceEvent("button", name if isinstance(name, str) else name[0], float(event.value)))
        return events

    def close(self) -> None:
        self.device.close()


@dataclasses.dataclass(frozen=True)
class Mapping:
    """Which key, button or axis does what. ``motion``: code -> (action dimension, sign) for keys
    and buttons (held: full speed), code -> action dimension for axes."""

    take: str
    """Take over / hand back (keys toggle; a button is held)."""
    labels: dict[str, str]
    """code -> success, failure or rerecord (ends the episode with that label)."""
    motion: dict[str, Any]
    gripper: str | None = None
    """Toggles the gripper command between -1 (open) and +1 (closed)."""
    gripper_dim: int = -1


KEYBOARD = Mapping(
    take="t", labels={"y": "success", "n": "failure", "x": "rerecord"}, gripper=" ",
    motion={"w": (0, 1), "s": (0, -1), "a": (1, 1), "d": (1, -1), "r": (2, 1), "f": (2, -1), "q": (3, 1),
            "e": (3, -1)},
)  # fmt: skip
"""Keys: t take over / hand back; w/s, a/d, r/f: x, y, z; q/e: yaw; space: gripper; y success,
n failure, x re-record. A key press moves for one step (terminals send repeats while held)."""

GAMEPAD = Mapping(
    take="BTN_TL", labels={"BTN_START": "success", "BTN_SELECT": "failure", "BTN_WEST": "rerecord"},
    gripper="BTN_SOUTH", motion={"ABS_Y": 0, "ABS_X": 1, "ABS_RY": 2, "ABS_RX": 3},
)  # fmt: skip
"""Hold the left shoulder button to drive: left stick x/y, right stick z/yaw, A the gripper;
Start success, Back failure, X re-record."""


class HumanIntervener:
    """A person with a device: takes over when they say so, drives with it, labels the episode.

    A device that goes away (``DeviceLost``) is reported and the policy gets the arm back.
    ``silence_s``: for devices that report continuously (a spacemouse), while driving, silence this
    long is reported and hands the arm back (None: keyboards and gamepads, which send only
    changes); ``zero_events``: this many axis events in a row while driving that carry only zeros
    are reported (a stick that reads 0 whatever is done). ``clock``: seconds (tests pass their own)."""

    def __init__(self, source, mapping: Mapping, action_dim: int, *, silence_s: float | None = None,
                 zero_events: int = 200,
                 deadzone: float = 0.05, clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.source, self.mapping, self.action_dim = source, mapping, action_dim
        self.silence_s, self.zero_events, self.deadzone, self.clock = silence_s, zero_events, deadzone, clock
        self.active = False
        self.label: str | None = None
        self._axes: dict[str, float] = {}
        self._gripper = -1.0
        self._last_event = clock()
        self._zeros = 0
        self.health = {"silent": 0, "only_zeros": 0, "lost": 0, "takeovers": 0, "events": 0}

    def reset(self, obs, info) -> None:
        self.active, self.label, self._axes = False, None, {}

    def pop_label(self) -> str | None:
        """The episode's label if the person gave one since the last call (then cleared)."""
        label, self.label = self.label, None
        return label

    @property
    def gripper(self) -> float:
        """The gripper command while the person drives: -1 open, +1 closed (kept across episodes)."""
        return self._gripper

    def _take(self, on: bool) -> None:
        if on and not self.active:
            self.health["takeovers"] += 1
            self._last_event = self.clock()
        self.active = on

    def __call__(self, obs, info, proposed) -> np.ndarray | None:
        try:
            events = self.source.poll()
        except DeviceLost as error:
            if self.active or not self.health["lost"]:
                log.warning("the intervention device is gone (%s): the policy acts", error)
            self.health["lost"] += 1
            self.active = False
            return None
        now = self.clock()
        keys = np.zeros(self.action_dim, np.float32)
        for event in events:
            self.health["events"] += 1
            self._last_event = now
            code, m = event.code, self.mapping
            if code == m.take:
                self._take(not self.active if event.kind == "key" else event.value > 0)
            elif code in m.labels and event.value > 0:
                self.label = m.labels[code]
            elif code == m.gripper and event.value > 0:
                self._gripper = -self._gripper
            elif event.kind == "axis" and code in m.motion:
                self._axes[code] = 0.0 if abs(event.value) < self.deadzone else event.value
            elif code in m.motion and event.value > 0:
                dim, sign = m.motion[code]
                keys[dim] += sign
        if self.active and events:
            moving = any(abs(e.value) > self.deadzone for e in events if e.kind == "axis")
            only_axes = all(e.kind == "axis" for e in events)
            self._zeros = self._zeros + len(events) if only_axes and not moving else 0
            if self._zeros >= self.zero_events:
                self.health["only_zeros"] += 1
                log.warning("the device has sent %d events in a row with only zeros while driving: is it the "
                            "right device, and calibrated?", self._zeros)  # fmt: skip
                self._zeros = 0
        if self.active and self.silence_s is not None and now - self._last_event > self.silence_s:
            self.health["silent"] += 1
            log.warning("no event from the device for %.1f s while driving: handing the arm back to the policy",
                        now - self._last_event)  # fmt: skip
            self.active = False
        if not self.active:
            return None
        action = keys
        for code, value in self._axes.items():
            action[self.mapping.motion[code]] += value
        if self.mapping.gripper is not None:
            action[self.mapping.gripper_dim] = self._gripper
        return np.clip(action, -1.0, 1.0)


class LazyActionDim:
    """A ``HumanIntervener`` whose action size is learned from the first proposed action (the actor
    builds its device before it knows the run's environment)."""

    def __init__(self, source, mapping: Mapping, **kwargs):
        self.source, self.mapping, self.kwargs = source, mapping, kwargs
        self.person: HumanIntervener | None = None

    def reset(self, obs, info) -> None:
        if self.person is not None:
            self.person.reset(obs, info)

    def pop_label(self) -> str | None:
        return None if self.person is None else self.person.pop_label()

    @property
    def gripper(self) -> float:
        return -1.0 if self.person is None else self.person.gripper

    def __call__(self, obs, info, proposed) -> np.ndarray | None:
        if self.person is None:
            self.person = HumanIntervener(self.source, self.mapping, int(np.size(proposed)), **self.kwargs)
        return self.person(obs, info, proposed)


def make_teleop(spec: str) -> LazyActionDim:
    """``keyboard`` or ``gamepad:/dev/input/eventN`` -> a person's intervener on that device."""
    if spec == "keyboard":
        return LazyActionDim(TerminalKeys(), KEYBOARD)
    kind, _, path = spec.partition(":")
    if kind == "gamepad" and path:
        return LazyActionDim(EvdevGamepad(path), GAMEPAD)
    raise ValueError(f"--teleop must be keyboard or gamepad:/dev/input/eventN, got {spec!r}")

"""A person in the loop: keyboard (a real pseudo-terminal) and gamepad (synthetic events)
interveners, episode labels, and a device that goes quiet, away or sends only zeros."""

from __future__ import annotations

import os

import numpy as np
import pytest

from expoft.envs.chunks import ActionChunks
from expoft.envs.make import make_env
from expoft.robot.teleop import (
    GAMEPAD,
    KEYBOARD,
    DeviceEvent,
    HumanIntervener,
    ScriptedEvents,
    TerminalKeys,
    make_teleop,
)

A = 5
PROPOSED = np.zeros(A, np.float32)


def test_keyboard_through_a_real_terminal():
    """Keys typed into a pseudo-terminal: t takes over, w drives +x, space closes the gripper,
    t hands back, y labels the episode a success."""
    master, slave = os.openpty()
    keys = TerminalKeys(slave)
    try:
        person = HumanIntervener(keys, KEYBOARD, A)
        assert person(None, {}, PROPOSED) is None
        os.write(master, b"tw ")
        np.testing.assert_array_equal(person(None, {}, PROPOSED), [1, 0, 0, 0, 1])
        np.testing.assert_array_equal(person(None, {}, PROPOSED), [0, 0, 0, 0, 1])  # no key: hold still
        os.write(master, b"dt")
        assert person(None, {}, PROPOSED) is None and person.health["takeovers"] == 1
        os.write(master, b"y")
        person(None, {}, PROPOSED)
        assert person.pop_label() == "success" and person.pop_label() is None
    finally:
        keys.close()
        os.close(master)
        os.close(slave)
    r, w = os.pipe()
    with pytest.raises(ValueError, match="not a tty"):
        TerminalKeys(r)
    os.close(r)
    os.close(w)


def test_gamepad_drives_while_the_button_is_held_and_reports_a_lost_device():
    events = ScriptedEvents([
        [DeviceEvent("button", "BTN_TL", 1), DeviceEvent("axis", "ABS_X", 0.5), DeviceEvent("axis", "ABS_Y", -0.02)],
        [],
        [DeviceEvent("button", "BTN_TL", 0)],
        [DeviceEvent("button", "BTN_TL", 1)],
        "lost",
        [DeviceEvent("button", "BTN_WEST", 1)],
    ])  # fmt: skip
    person = HumanIntervener(events, GAMEPAD, A)
    np.testing.assert_allclose(person(None, {}, PROPOSED), [0, 0.5, 0, 0, -1])  # deadzone on ABS_Y
    np.testing.assert_allclose(person(None, {}, PROPOSED), [0, 0.5, 0, 0, -1])  # the stick stays where it is
    assert person(None, {}, PROPOSED) is None  # released
    assert person(None, {}, PROPOSED) is not None
    assert person(None, {}, PROPOSED) is None and person.health["lost"] == 1 and not person.active
    person(None, {}, PROPOSED)
    assert person.pop_label() == "rerecord"


def test_a_device_sending_only_zeros_or_going_silent_is_reported():
    zeros = [[DeviceEvent("button", "BTN_TL", 1)]] + [[DeviceEvent("axis", "ABS_X", 0.0)] * 50] * 4
    person = HumanIntervener(ScriptedEvents(zeros), GAMEPAD, A, zero_events=200)
    for _ in range(5):
        person(None, {}, PROPOSED)
    assert person.health["only_zeros"] == 1
    now = [0.0]
    quiet = HumanIntervener(ScriptedEvents([[DeviceEvent("key", "t")]]), KEYBOARD, A, silence_s=1.0,
                            clock=lambda: now[0])  # fmt: skip
    assert quiet(None, {}, PROPOSED) is not None
    now[0] = 1.5
    assert quiet(None, {}, PROPOSED) is None and quiet.health["silent"] == 1
    with pytest.raises(ValueError, match="--teleop"):
        make_teleop("joystick")


def test_labels_end_the_episode_through_action_chunks():
    """On the simulated arm: the person takes over mid-chunk (those steps flagged intervened),
    then labels success: the chunk stops there, terminated, success; re-record: truncated and
    flagged for the learner to drop."""
    script = [[], [DeviceEvent("key", "t")], [DeviceEvent("key", "w")], [DeviceEvent("key", "y")]]
    env = ActionChunks(make_env("cube-single", 1), 5, intervener=HumanIntervener(ScriptedEvents(script), KEYBOARD, A))
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(np.zeros((5, A), np.float32))
    flags = [t.intervened for t in info["transitions"]]
    assert flags == [False, True, True, True] and terminated and not truncated and info["success"]
    person = HumanIntervener(ScriptedEvents([[DeviceEvent("key", "x")]]), KEYBOARD, A)
    again = ActionChunks(make_env("cube-single", 1), 2, intervener=person)
    again.reset(seed=0)
    _, _, terminated, truncated, info = again.step(np.zeros((2, A), np.float32))
    assert truncated and not terminated and info["rerecord"] and not info["success"]
    assert len(info["transitions"]) == 1

"""Drive OGBench's scripted oracles towards one singletask goal.

OGBench's oracles solve one *subgoal* at a time (move cube k to p, press
button b, slide the drawer to x) and read that subgoal from privileged keys of
``info`` that only the data-collection mode fills in. For demonstrations of a
singletask we run the real singletask env instead (so start states, goals and
the success flag are exactly the evaluation ones) and a :class:`TaskDirector`
decides the next subgoal from the current state and writes the keys the oracle
expects. Re-planning from the state after every subgoal makes the director
robust to the noisy oracle missing a grasp or pressing a button twice.

The simulation is read through OGBench's public ``data``/``model`` and by site and joint name;
button states, sampling bounds, the puzzle's size and the drawer test have no public accessor
and are read from the env's private attributes, which is why ``ogbench`` is pinned.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np

from expoft.envs.ogbench_domains import CUBE_TOLERANCE, SLIDE_TOLERANCE, Domain, TaskGoal

# Above this the cube rests on another cube (cubes are 4 cm tall, tables at z=0.02).
_STACK_HEIGHT = 0.03
_DRAWER_OPEN = -0.16
_DRAWER_OPEN_ENOUGH = -0.12  # OGBench's own threshold for "open" before placing a cube
_GOAL_IN_DRAWER_Y = -0.3  # goals left of this are inside the drawer


@dataclasses.dataclass(frozen=True)
class Subgoal:
    """One oracle-sized step: ``kind`` in {cube, button, drawer, window}."""

    kind: str
    index: int = 0  # cube or button index
    target: Any = None  # xyz for a cube, 0/1 state for a button, joint position for a slide


def make_markov_oracles(env, family: str, min_norm: float = 0.4) -> dict[str, Any]:
    """The closed-loop (Markov) oracles of a domain family, keyed by subgoal kind."""
    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
    from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle

    if family == "cube":
        return {"cube": CubeMarkovOracle(env=env, min_norm=min_norm)}
    if family == "scene":
        return {
            "cube": CubeMarkovOracle(env=env, min_norm=min_norm, max_step=100),
            "button": ButtonMarkovOracle(env=env, min_norm=min_norm),
            "drawer": DrawerMarkovOracle(env=env, min_norm=min_norm),
            "window": WindowMarkovOracle(env=env, min_norm=min_norm),
        }
    if family == "puzzle":
        return {"button": ButtonMarkovOracle(env=env, min_norm=min_norm, gripper_always_closed=True)}
    raise ValueError(f"no oracles for domain family {family!r}")


class TaskDirector:
    """Chooses subgoals towards ``goal`` and feeds them to the matching oracle."""

    def __init__(self, env, domain: Domain, goal: TaskGoal, rng: np.random.Generator, min_norm: float = 0.4):
        self._env = env
        self._sim = env.unwrapped
        self._domain = domain
        self._goal = goal
        self._rng = rng
        self._oracles = make_markov_oracles(env, domain.family, min_norm)
        self._subgoal: Subgoal | None = None
        self._oracle: Any = None  # the oracle of the current subgoal (untyped OGBench classes), or None

    # ---- state queries -------------------------------------------------
    def _cube_pos(self, i: int) -> np.ndarray:
        return self._sim.data.joint(f"object_joint_{i}").qpos[:3].copy()

    def _button_state(self, i: int) -> int:
        return int(self._sim._cur_button_states[i])

    def _slide(self, joint: str) -> float:
        return float(self._sim.data.joint(joint).qpos[0])

    # ---- planning ------------------------------------------------------
    def plan(self) -> Subgoal | None:
        """The next subgoal, or None when the goal already holds."""
        family = self._domain.family
        if family == "cube":
            return self._plan_cubes()
        if family == "puzzle":
            return self._plan_lights_out()
        return self._plan_scene()

    def _plan_cubes(self) -> Subgoal | None:
        n = self._domain.num_cubes
        pos = np.stack([self._cube_pos(i) for i in range(n)])
        goals = self._goal.cube_xyzs
        todo = [i for i in range(n) if np.linalg.norm(pos[i] - goals[i]) > CUBE_TOLERANCE]
        if not todo:
            return None

        def covered(i):  # another cube rests on cube i
            return any(
                j != i and pos[j, 2] > pos[i, 2] + _STACK_HEIGHT / 2 and np.linalg.norm(pos[j, :2] - pos[i, :2]) < 0.02
                for j in range(n)
            )

        def goal_blocked(i):  # another cube sits where cube i must go
            return any(
                j != i
                and np.linalg.norm(pos[j, :2] - goals[i, :2]) < CUBE_TOLERANCE
                and abs(pos[j, 2] - goals[i, 2]) < _STACK_HEIGHT
                for j in range(n)
            )

        # Bottom of a stack first, so that a stacked goal has its support.
        for i in sorted(todo, key=lambda k: goals[k, 2]):
            if not covered(i) and not goal_blocked(i):
                return Subgoal("cube", i, goals[i].copy())
        # Deadlock (e.g. a swap): park a free cube somewhere out of the way.
        movable = [i for i in todo if not covered(i)] or todo
        return Subgoal("cube", movable[0], self._parking_spot(pos, goals))

    def _parking_spot(self, pos: np.ndarray, goals: np.ndarray) -> np.ndarray:
        low, high = self._sim._target_sampling_bounds
        candidates = self._rng.uniform(low, high, size=(64, 2))
        taken = np.concatenate([pos[:, :2], goals[:, :2]])
        clearance = np.linalg.norm(candidates[:, None] - taken[None], axis=-1).min(axis=1)
        xy = candidates[np.argmax(clearance)]
        return np.array([xy[0], xy[1], 0.02])

    def _plan_lights_out(self) -> Subgoal | None:
        n = self._domain.num_buttons
        cur = np.array([self._button_state(i) for i in range(n)])
        diff = cur ^ self._goal.button_states
        if not diff.any():
            return None
        press = _lights_out_presses(diff, rows=self._sim._num_rows, cols=self._sim._num_cols)
        first = int(np.flatnonzero(press)[0])
        return Subgoal("button", first, 1 - cur[first])

    def _plan_scene(self) -> Subgoal | None:
        goal = self._goal
        cube = self._cube_pos(0)
        cube_in_drawer = bool(self._sim._is_in_drawer(cube))
        goal_in_drawer = goal.cube_xyzs[0, 1] < _GOAL_IN_DRAWER_Y
        cube_done = np.linalg.norm(cube - goal.cube_xyzs[0]) <= CUBE_TOLERANCE
        drawer, window = self._slide("drawer_slide"), self._slide("window_slide")

        if not cube_done and goal_in_drawer != cube_in_drawer:
            # The cube goes into (or out of) the drawer: it must be open first.
            if drawer > _DRAWER_OPEN_ENOUGH:
                return self._unlock_then(0, Subgoal("drawer", target=_DRAWER_OPEN))
            target = self._sim._drawer_center.copy() if goal_in_drawer else goal.cube_xyzs[0].copy()
            return Subgoal("cube", 0, target)
        if not cube_done and not goal_in_drawer:
            return Subgoal("cube", 0, goal.cube_xyzs[0].copy())
        assert goal.drawer_pos is not None and goal.window_pos is not None, "scene goals set the drawer and window"
        if abs(drawer - goal.drawer_pos) > SLIDE_TOLERANCE:
            return self._unlock_then(0, Subgoal("drawer", target=goal.drawer_pos))
        if abs(window - goal.window_pos) > SLIDE_TOLERANCE:
            return self._unlock_then(1, Subgoal("window", target=goal.window_pos))
        for i in range(self._domain.num_buttons):
            if self._button_state(i) != goal.button_states[i]:
                return Subgoal("button", i, int(goal.button_states[i]))
        return None

    def _unlock_then(self, button: int, subgoal: Subgoal) -> Subgoal:
        # Button 0 locks the drawer and button 1 the window while their state is 0.
        if self._button_state(button) == 0:
            return Subgoal("button", button, 1)
        return subgoal

    # ---- acting --------------------------------------------------------
    def reset(self, ob: np.ndarray, info: dict) -> None:
        self._subgoal = None
        self._oracle = None
        self._next_subgoal(ob, info)

    def _next_subgoal(self, ob: np.ndarray, info: dict) -> None:
        self._subgoal = self.plan()
        if self._subgoal is None:
            self._oracle = None
            return
        self._oracle = self._oracles[self._subgoal.kind]
        self._oracle.reset(ob, self._with_subgoal(info))

    def select_action(self, ob: np.ndarray, info: dict) -> np.ndarray:
        """The oracle's action for the current subgoal (zeros once the goal holds)."""
        # Re-plan when a subgoal is finished, and while idle: noise may undo a reached goal.
        if self._oracle is None or self._oracle.done:
            self._next_subgoal(ob, info)
        if self._oracle is None:
            return np.zeros(self._domain.action_dim)
        return np.asarray(self._oracle.select_action(ob, self._with_subgoal(info)), dtype=np.float64)

    def _with_subgoal(self, info: dict) -> dict:
        sub, sim = self._subgoal, self._sim
        assert sub is not None, "an oracle runs only while there is a subgoal"
        out = dict(info)
        if sub.kind == "cube":
            out["privileged/target_block"] = sub.index
            out["privileged/target_block_pos"] = np.asarray(sub.target, np.float64)
            out["privileged/target_block_yaw"] = np.zeros(1)
        elif sub.kind == "button":
            out["privileged/target_button"] = sub.index
            out["privileged/target_button_state"] = sub.target
            out["privileged/target_button_top_pos"] = sim.data.site(f"btntop_{sub.index}").xpos.copy()
        else:
            joint, site = f"{sub.kind}_slide", f"{sub.kind}_handle_center"  # drawer or window
            # Where the handle will be once the slide joint reaches its target.
            jid = sim.model.joint(joint).id
            shift = (sub.target - self._slide(joint)) * sim.data.xaxis[jid]
            out[f"privileged/target_{sub.kind}_handle_pos"] = sim.data.site(site).xpos.copy() + shift
        return out


def _lights_out_presses(diff: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The fewest button presses that toggle exactly the lights in ``diff``.

    A press toggles the button and its 4-neighbours (OGBench's puzzle rule).
    Brute force over subsets is fine up to 4x4 (65k subsets).
    """
    n = rows * cols
    effect = np.zeros((n, n), dtype=np.int64)
    for b in range(n):
        r, c = divmod(b, cols)
        for dr, dc in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]:
            rr, cc = r + dr, c + dc
            if 0 <= rr < rows and 0 <= cc < cols:
                effect[b, rr * cols + cc] = 1
    best = None
    for presses in itertools.product((0, 1), repeat=n):
        p = np.array(presses)
        if best is not None and p.sum() >= best.sum():
            continue
        if np.array_equal((p @ effect) % 2, diff % 2):
            best = p
    if best is None:
        raise ValueError("lights-out configuration has no solution")
    return best

"""One episode of generated data: a noisy oracle demonstration (with an optional disturbance the
oracle recovers from), or a play episode of random subtasks; each seeded from (seed, episode)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from expoft.envs.ogbench_domains import Domain, task_goal
from expoft.envs.task_director import TaskDirector

# Bump when the generated arrays for the same arguments would change.

if TYPE_CHECKING:  # annotations only: the configs live with the generator that runs these
    from expoft.data.generate import DemosConfig, PlayConfig

log = logging.getLogger(__name__)


_ARM_NOISE_SCALE = np.array([1.0, 1.0, 1.0, 3.0])


def _episode_rngs(seed: int, episode: int, attempt: int = 0) -> tuple[np.random.Generator, int, int]:
    """(generator, env reset seed, legacy numpy seed) for one episode attempt."""
    ss = np.random.SeedSequence(seed, spawn_key=(episode, attempt))
    env_seed, legacy_seed = (int(x) for x in ss.generate_state(2))
    return np.random.default_rng(ss), env_seed, legacy_seed


def _record(buf: dict[str, list], ob, action, next_ob, info, domain: Domain) -> None:
    buf["observations"].append(ob)
    buf["actions"].append(action)
    buf["next_observations"].append(next_ob)
    buf["next_qpos"].append(info["qpos"])
    if domain.has_button_states:
        buf["next_button_states"].append(info["button_states"])


def _new_buffer() -> dict[str, list]:
    return {k: [] for k in ("observations", "actions", "next_observations", "next_qpos", "next_button_states")}


def demo_episode(env, domain: Domain, cfg: DemosConfig, episode: int) -> dict[str, np.ndarray]:
    """One noisy oracle episode aimed at ``cfg.task``; ends at success or the time limit."""
    rng, env_seed, legacy_seed = _episode_rngs(cfg.seed, episode)
    np.random.seed(legacy_seed)  # OGBench's oracles draw from numpy's global generator
    ob, info = env.reset(seed=env_seed)
    director = TaskDirector(env, domain, task_goal(domain.name, cfg.task), rng)
    director.reset(ob, info)
    xi = rng.uniform(0.0, cfg.noise)
    noise_std = xi * np.append(_ARM_NOISE_SCALE, cfg.gripper_noise)
    limit = cfg.max_episode_steps or domain.episode_steps
    # Drawn only when disturbing, so that datasets without disturbances keep their arrays.
    disturbance = _Disturbance(rng) if cfg.disturb > 0 and rng.random() < cfg.disturb else None
    buf = _new_buffer()
    success = False
    for _ in range(limit):
        if rng.random() < cfg.p_random_action:
            action = rng.uniform(-1.0, 1.0, domain.action_dim)
        else:
            action = director.select_action(ob, info)
            action = action + rng.normal(0.0, noise_std)
        action = np.clip(action, -1.0, 1.0)
        if disturbance is not None:
            disturbance.maybe_apply(env.unwrapped, domain, info)
        next_ob, _, terminated, _, info = env.step(action)
        _record(buf, ob, action, next_ob, info, domain)
        ob = next_ob
        success = bool(info["success"])
        if terminated or success:
            break
    return _finish(buf, success)


class _Disturbance:
    """Moves the cube nearest the gripper once, a random delay after the gripper first reaches it."""

    REACH = 0.03  # m between the effector and a cube's centre that counts as reaching it
    MAX_DELAY = 20  # steps: about the time from reaching the cube to placing it (demos take ~40 in all)
    DISTANCE = (0.04, 0.12)  # m, the range of the failures left after imitation (benchmarks/failures.py)
    CLEARANCE = 0.05  # m between the moved cube and the gripper, so that it does not land in the fingers

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._countdown: int | None = None
        self.done = False

    def maybe_apply(self, sim, domain: Domain, info: dict) -> None:
        if self.done:
            return
        effector = np.asarray(info["proprio/effector_pos"])
        cubes = [sim.data.joint(f"object_joint_{i}") for i in range(domain.num_cubes)]
        gaps = [np.linalg.norm(c.qpos[:3] - effector) for c in cubes]
        if self._countdown is None:
            if min(gaps) <= self.REACH:
                self._countdown = int(self._rng.integers(0, self.MAX_DELAY))
            return
        if self._countdown > 0:
            self._countdown -= 1
            return
        self.done = True
        self._move(sim, cubes[int(np.argmin(gaps))], effector)

    def _move(self, sim, cube, effector: np.ndarray) -> None:
        import mujoco

        low, high = (np.asarray(b, float) for b in sim._object_sampling_bounds)
        xy = cube.qpos[:2].copy()
        for _ in range(50):  # rejection sampling; the bounds leave room for most draws
            angle = self._rng.uniform(0.0, 2 * np.pi)
            step = self._rng.uniform(*self.DISTANCE) * np.array([np.cos(angle), np.sin(angle)])
            candidate = np.clip(cube.qpos[:2] + step, low, high)
            far_enough = np.linalg.norm(candidate - cube.qpos[:2]) >= self.DISTANCE[0]  # not undone by the clip
            if far_enough and np.linalg.norm(candidate - effector[:2]) >= self.CLEARANCE:
                xy = candidate
                break
        yaw = self._rng.uniform(0.0, 2 * np.pi)
        cube.qpos[:3] = (xy[0], xy[1], 0.02)  # resting on the table, as the env places cubes
        cube.qpos[3:] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))  # wxyz: a turn about z
        cube.qvel[:] = 0.0
        mujoco.mj_forward(sim.model, sim.data)


def _plan_oracles(env, family: str, noise: float) -> dict:
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    if family == "cube":
        return {"cube": CubePlanOracle(env=env, noise=noise)}
    if family == "scene":
        return {
            "cube": CubePlanOracle(env=env, noise=noise),
            "button": ButtonPlanOracle(env=env, noise=noise),
            "drawer": DrawerPlanOracle(env=env, noise=noise),
            "window": WindowPlanOracle(env=env, noise=noise),
        }
    return {"button": ButtonPlanOracle(env=env, noise=noise, gripper_always_closed=True)}


def _stacking_probability(domain: Domain, rng: np.random.Generator) -> float:
    # OGBench varies how often cubes are stacked from episode to episode.
    if domain.num_cubes == 1:
        return 0.0
    if domain.family == "cube":
        return rng.uniform(0.0, 0.25)
    return 0.5


def _scene_episode_healthy(domain: Domain, next_qpos: np.ndarray) -> bool:
    """OGBench's check: the cube stays in view unless it is inside the drawer."""
    if domain.family != "scene":
        return True
    from expoft.envs.ogbench_domains import QPOS_OBJECTS_START

    xyz = next_qpos[:, QPOS_OBJECTS_START : QPOS_OBJECTS_START + 3]
    too_far_right = (xyz[:, 1] >= 0.29).any()
    too_far_left = ((xyz[:, 1] <= -0.3) & ((xyz[:, 2] < 0.06) | (xyz[:, 2] > 0.08))).any()
    return not (too_far_right or too_far_left)


def play_episode(env, domain: Domain, cfg: PlayConfig, episode: int, max_attempts: int = 20) -> dict[str, np.ndarray]:
    """One fixed-length episode of random subtasks (retried if the scene breaks)."""
    for attempt in range(max_attempts):
        rng, env_seed, legacy_seed = _episode_rngs(cfg.seed, episode, attempt)
        np.random.seed(legacy_seed)
        ob, info = env.reset(seed=env_seed)
        oracles = _plan_oracles(env, domain.family, noise=rng.uniform(cfg.noise / 4, cfg.noise))
        p_stack = _stacking_probability(domain, rng)
        oracle = oracles[info["privileged/target_task"]]
        oracle.reset(ob, info)
        buf = _new_buffer()
        for _ in range(cfg.episode_steps):
            action = np.clip(np.asarray(oracle.select_action(ob, info)), -1.0, 1.0)
            next_ob, _, _, _, info = env.step(action)
            _record(buf, ob, action, next_ob, info, domain)
            ob = next_ob
            if oracle.done:
                ob, info = env.unwrapped.set_new_target(p_stack=p_stack)
                oracle = oracles[info["privileged/target_task"]]
                oracle.reset(ob, info)
        episode_arrays = _finish(buf, success=False)
        if _scene_episode_healthy(domain, episode_arrays["next_qpos"]):
            return episode_arrays
        log.debug("episode %d attempt %d left the workspace; retrying", episode, attempt)
    raise RuntimeError(f"episode {episode}: no healthy rollout in {max_attempts} attempts")


def _finish(buf: dict[str, list], success: bool) -> dict[str, np.ndarray]:
    out = {k: np.asarray(v, dtype=np.float32) for k, v in buf.items() if v}
    if "next_button_states" in out:
        out["next_button_states"] = out["next_button_states"].astype(np.int8)
    ends = np.zeros(len(out["actions"]), dtype=bool)
    ends[-1] = True
    out["episode_ends"] = ends
    out["episode_success"] = np.array([success])
    return out

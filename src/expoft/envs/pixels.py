"""Pixel observations for the cube domains: camera images plus the robot's proprioception.

:class:`PixelObservations` turns the state env of :func:`expoft.envs.make.make_env` into one
whose observations are ``{"pixels": uint8 [S, S, 3 * cameras], "proprio": float32 [P]}``
(``expoft.obs``). Everything that needs the simulator state keeps working: the state vector
stays in ``info["state"]``, OGBench's ``info`` (qpos, privileged object poses) passes through
unchanged, and ``env.unwrapped`` is still the OGBench env that the scripted oracles of
:class:`~expoft.envs.interventions.ScriptedIntervener` and the success detector read.

Three choices make a frame a function of the MuJoCo positions ``qpos`` alone, so that frames of
a dataset rendered later from its recorded ``qpos`` are the frames the env showed:

* frames are rendered from a private copy of the state (positions only, kinematics recomputed),
  never from the live ``MjData``: after ``mj_step`` the live kinematics lag ``qpos`` by one
  physics substep, and recomputing them in place would change what the next action does (the
  controller reads the effector pose from them);
* OGBench's task visualisation is off, as in its own ``visual-*`` envs: no translucent goal
  cubes and no cube turning colour at success (a reward signal state observations lack);
* shadows and offscreen multisampling are off: rendering is then ~5x faster on a CPU (EGL on
  Mesa's software rasteriser), at 64x64 pixels the difference is a few grey levels.

The robot is drawn as OGBench draws it for state envs (opaque); only the cube domains are
supported (the scene's buttons show their state by colour, which needs the visualisation).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

import expoft.envs  # noqa: F401  (sets MUJOCO_GL=egl before MuJoCo is imported)
from expoft.envs.make import SuccessDetector, env_success, make_env
from expoft.envs.ogbench_domains import get_domain
from expoft.obs import PIXELS, PROPRIO, PixelSpec
from expoft.report.video import render_error as _render_error


class PixelObservations(gymnasium.Wrapper):
    """Observations ``{"pixels", "proprio"}`` of ``spec``; ``info["state"]`` keeps the state vector.

    ``env`` is a state env of a cube domain (float32 vector observations), e.g. from
    :func:`~expoft.envs.make.make_env`. The wrapper changes the env's model for fast rendering
    (no shadows, no multisampling, no task visualisation); videos of the same env see that too.
    """

    def __init__(self, env: gymnasium.Env, spec: PixelSpec):
        super().__init__(env)
        import mujoco
        from ogbench.manipspace.envs.cube_env import CubeEnv

        sim = env.unwrapped
        if not isinstance(sim, CubeEnv):
            raise ValueError(
                f"pixel observations are implemented for the cube domains (cube-single, cube-double); "
                f"got an environment of type {type(sim).__name__}. Use state observations for it."
            )
        self.pixel_spec = spec
        self._mujoco = mujoco
        if sim.model is None:  # OGBench compiles its model at the first reset
            env.reset()
        self._setup(sim.model)
        assert env.observation_space.shape is not None, "a state env's observations are vectors (a Box space)"
        state_dim = int(np.prod(env.observation_space.shape))
        if not 0 <= spec.proprio_dim <= state_dim:
            raise ValueError(f"proprio_dim {spec.proprio_dim} exceeds the state size {state_dim} of this env")
        self.observation_space = gymnasium.spaces.Dict(
            {
                PIXELS: gymnasium.spaces.Box(0, 255, spec.image_shape, np.uint8),
                PROPRIO: gymnasium.spaces.Box(-np.inf, np.inf, (spec.proprio_dim,), np.float32),
            }
        )

    def _setup(self, model) -> None:
        """Validate the cameras, set the fast render settings and create the renderer for ``model``."""
        mujoco = self._mujoco
        spec = self.pixel_spec
        available = [model.camera(i).name for i in range(model.ncam)]
        unknown = [c for c in spec.cameras if c not in available]
        if unknown:
            raise ValueError(
                f"unknown camera(s) {unknown}; this environment has the cameras {available} "
                "(set PixelSpec(cameras=...) to some of them)"
            )
        sim: Any = self.env.unwrapped  # OGBench's CubeEnv (checked in __init__; ogbench is untyped)
        # OGBench's visual envs turn the task visualisation off the same way; post_step() then
        # re-colours the scene without it (for a cube env it only recomputes success and colours).
        sim._visualize_info = False
        sim.post_step()
        model.light_castshadow[:] = 0
        model.vis.quality.offsamples = 0
        size = spec.image_size
        # MuJoCo's offscreen buffer must be at least as large as the frames.
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), size)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), size)
        self.close_renderer()
        try:
            self._renderer = mujoco.Renderer(model, height=size, width=size)
        except Exception as error:  # MuJoCo raises several types when no GL context can be made
            raise _render_error(error) from error
        self._model = model
        self._scratch = mujoco.MjData(model)

    # ---- rendering -------------------------------------------------------
    def _frame_of(self, qpos: np.ndarray) -> np.ndarray:
        """Frames of all cameras for positions ``qpos``; the live simulator is not touched."""
        sim: Any  # OGBench's CubeEnv (checked in __init__; ogbench is untyped)
        mujoco, sim, scratch = self._mujoco, self.env.unwrapped, self._scratch
        scratch.qpos[:] = qpos
        scratch.mocap_pos[:] = sim.data.mocap_pos  # invisible with the visualisation off; kept for consistency
        scratch.mocap_quat[:] = sim.data.mocap_quat
        mujoco.mj_forward(self._model, scratch)
        frames = []
        try:
            for camera in self.pixel_spec.cameras:
                self._renderer.update_scene(scratch, camera=camera)
                frames.append(self._renderer.render())
        except Exception as error:
            raise _render_error(error) from error
        return np.concatenate(frames, axis=-1).astype(np.uint8, copy=False)

    def render_state(self, qpos: np.ndarray) -> np.ndarray:
        """The ``uint8 [S, S, C]`` frame of the state with MuJoCo positions ``qpos [nq]``.

        A frame depends on the positions only (see the module docstring), so this renders a
        dataset's recorded states exactly as the env shows them. The env's own state is left
        untouched; it must have been reset once (the wrapper does that when it is created).
        """
        qpos = np.asarray(qpos, np.float64)
        nq = self._model.nq
        if qpos.shape != (nq,):
            raise ValueError(f"qpos must have shape ({nq},) for this environment, got {qpos.shape}")
        if not np.isfinite(qpos).all():
            raise ValueError("qpos has non-finite values; cannot render that state")
        return self._frame_of(qpos)

    def _observation(self, state: np.ndarray) -> dict[str, np.ndarray]:
        sim: Any = self.env.unwrapped  # OGBench's CubeEnv (checked in __init__; ogbench is untyped)
        if sim.model is not self._model:  # OGBench recompiled its model
            self._setup(sim.model)
        return {
            PIXELS: self._frame_of(sim.data.qpos),
            PROPRIO: np.asarray(state[: self.pixel_spec.proprio_dim], np.float32),
        }

    # ---- gymnasium -------------------------------------------------------
    def reset(self, **kwargs):
        state, info = self.env.reset(**kwargs)
        state = np.asarray(state, np.float32)
        info["state"] = state
        return self._observation(state), info

    def step(self, action):
        state, reward, terminated, truncated, info = self.env.step(action)
        state = np.asarray(state, np.float32)
        info["state"] = state
        return self._observation(state), reward, terminated, truncated, info

    def close_renderer(self) -> None:
        renderer = getattr(self, "_renderer", None)
        if renderer is not None:
            renderer.close()
        self._renderer = None

    def close(self):
        self.close_renderer()
        super().close()


def find_pixel_wrapper(env: gymnasium.Env) -> PixelObservations:
    """The :class:`PixelObservations` layer of a wrapper stack (e.g. under ``ActionChunks``)."""
    layer = env
    while True:
        if isinstance(layer, PixelObservations):
            return layer
        if not isinstance(layer, gymnasium.Wrapper):
            raise ValueError(
                f"{type(env).__name__} has no PixelObservations layer; make the env with make_pixel_env(...)"
            )
        layer = layer.env


def render_state(env: gymnasium.Env, qpos: np.ndarray) -> np.ndarray:
    """The frame of the state with positions ``qpos`` in a pixel env (see :meth:`PixelObservations.render_state`)."""
    return find_pixel_wrapper(env).render_state(qpos)


def make_pixel_env(
    env: str,
    task: int,
    spec: PixelSpec | None = None,
    episode_steps: int | None = None,
    detector: SuccessDetector = env_success,
    render: bool = False,
    reward: str = "sparse",
) -> PixelObservations:
    """The singletask env of :func:`~expoft.envs.make.make_env` (same reward, success and time
    limit) with pixel observations of ``spec`` (default ``PixelSpec()``: one 64x64 front camera);
    ``render=True`` also lets ``env.render()`` make video frames."""
    domain = get_domain(env)
    if domain.family != "cube":
        raise ValueError(
            f"pixel observations are implemented for the cube domains (cube-single, cube-double), not {domain.name}"
        )
    try:
        state_env = make_env(
            domain.name, task, detector=detector, render=render, episode_steps=episode_steps, reward=reward
        )
    except ImportError as error:
        # dm_control (OGBench's model builder) opens an EGL display when imported with MUJOCO_GL=egl.
        if "EGL" in str(error) or "OpenGL" in str(error):
            raise _render_error(error) from error
        raise
    return PixelObservations(state_env, spec or PixelSpec())

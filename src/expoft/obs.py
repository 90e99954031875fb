"""Observation kinds: a flat state vector, or camera images plus proprioception.

A state observation is ``float32 [D]``. A pixel observation is a dict::

    {"pixels":  uint8   [S, S, 3 * num_cameras],   # cameras stacked on the channel axis
     "proprio": float32 [P]}                       # the robot's own state (no object poses)

Batches add leading axes to every leaf (``pixels [B, S, S, C]``). Code that must handle both
kinds goes through the helpers here rather than testing types itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

PIXELS = "pixels"
PROPRIO = "proprio"

# OGBench's manipulation state starts with the robot's proprioception (arm joint positions and
# velocities, effector position and yaw, gripper opening and contact); object poses follow.
OGBENCH_PROPRIO_DIM = 19


@dataclasses.dataclass(frozen=True)
class PixelSpec:
    """Shape of pixel observations (hashable: agents keep it as a static field)."""

    image_size: int = 64
    """Square frames of this many pixels per side."""
    cameras: tuple[str, ...] = ("front_pixels",)
    """MuJoCo camera names, stacked on the channel axis in this order."""
    proprio_dim: int = OGBENCH_PROPRIO_DIM

    def __post_init__(self):
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16 pixels, got {self.image_size}")
        if not self.cameras:
            raise ValueError("at least one camera is needed for pixel observations")
        if self.proprio_dim < 0:
            raise ValueError(f"proprio_dim must be >= 0, got {self.proprio_dim}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3 * len(self.cameras))

    def check(self, obs: Any, batched: bool = False) -> None:
        """Raise a clear error unless ``obs`` is a pixel observation of this spec."""
        if not isinstance(obs, dict) or set(obs) != {PIXELS, PROPRIO}:
            got = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
            raise ValueError(f"a pixel observation is a dict with keys {PIXELS!r} and {PROPRIO!r}, got {got}")
        lead = np.shape(obs[PROPRIO])[:-1] if batched else ()
        want = {PIXELS: (*lead, *self.image_shape), PROPRIO: (*lead, self.proprio_dim)}
        for key, shape in want.items():
            if tuple(np.shape(obs[key])) != shape:
                raise ValueError(f"observation {key!r} has shape {np.shape(obs[key])}, expected {shape}")
        if np.asarray(obs[PIXELS]).dtype != np.uint8:
            raise ValueError(f"observation {PIXELS!r} must be uint8 (0-255), got {np.asarray(obs[PIXELS]).dtype}")


ObsSpec = int | PixelSpec
"""What an agent needs to know of its observations: the state size, or a :class:`PixelSpec`."""

Observation = np.ndarray | dict[str, np.ndarray]
"""One observation (or a batch): a state vector, or a pixel dict (``PIXELS``, ``PROPRIO``)."""


def is_pixels(spec: ObsSpec) -> bool:
    return isinstance(spec, PixelSpec)


def vector_dim(spec: ObsSpec) -> int:
    """The flat, float part of an observation: the whole state, or the proprioception."""
    return spec.proprio_dim if isinstance(spec, PixelSpec) else int(spec)


def add_batch_axis(obs: Any) -> Any:
    """One observation -> a batch of one (either kind)."""
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs)[None]


def zeros(spec: ObsSpec, batch: int = 1) -> Any:
    """A batch of blank observations (for initialising networks)."""
    if isinstance(spec, PixelSpec):
        return {
            PIXELS: np.zeros((batch, *spec.image_shape), np.uint8),
            PROPRIO: np.zeros((batch, spec.proprio_dim), np.float32),
        }
    return np.zeros((batch, int(spec)), np.float32)


def batch_size(obs: Any) -> int:
    return int(np.shape(obs[PROPRIO] if isinstance(obs, dict) else obs)[0])


def map_rows(fn, obs: Any) -> Any:
    """``fn`` applied to every array of a batch of observations (either kind)."""
    return {k: fn(v) for k, v in obs.items()} if isinstance(obs, dict) else fn(obs)


def take_rows(obs: Any, index) -> Any:
    """``obs[index]`` for a batch of observations of either kind (an int, slice or index array)."""
    return map_rows(lambda x: x[index], obs)


def describe(spec: ObsSpec) -> int | dict:
    """A plain-value description (for JSON / msgpack metadata): the state size, or for pixels
    ``{"image_shape": [S, S, C], "proprio_dim": P}``."""
    if isinstance(spec, PixelSpec):
        return {"image_shape": list(spec.image_shape), "proprio_dim": spec.proprio_dim}
    return int(spec)

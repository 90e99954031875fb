"""The interface of an *external* base policy: a pretrained model expoft samples from but does not own.

expoft's own bases (:mod:`expoft.policies`) are pure JAX functions sampled inside jitted code. An
external base is anything else: a LeRobot diffusion policy, a pi0 / pi0.5 served by openpi, your own
model in any framework. It is called outside jit, with numpy arrays in and out, through
:class:`ExternalBase`. Adapters: :class:`~expoft.bases.callable.CallableBase` (a Python callable in
this process) and :class:`~expoft.bases.remote.RemoteBase` (a model behind a websocket server).

Spaces and units
----------------
* Observations are what the environment emits, flattened: ``float32 [B, obs_dim]``, in the
  environment's units (expoft does not normalise them). A base for pixel runs declares a
  :class:`~expoft.obs.PixelSpec` as its ``obs_dim`` and receives dicts ``{"pixels": uint8 [B, S, S,
  C], "proprio": float32 [B, P]}`` (cameras stacked on the channel axis; ``expoft.obs``).
* Actions are expoft's: ``float32``, each coordinate in ``[-1, 1]`` (the environments' action boxes).
  A chunk is ``chunk_len`` consecutive actions, ``[chunk_len, action_dim]``, the first to be executed
  first.
* A base model usually lives in other spaces (standardised observations, actions in joint radians or
  metres). :class:`Normalization` states the two affine maps between expoft's spaces and the model's;
  the adapters apply them, so the model sees and returns its native values.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Protocol, runtime_checkable

import numpy as np

from expoft.obs import PIXELS, PROPRIO, ObsSpec, PixelSpec, vector_dim


class BaseOutputError(ValueError):
    """A base returned chunks of the wrong shape, a non-float dtype, NaN/inf, or values outside [-1, 1]."""


@runtime_checkable
class ExternalBase(Protocol):
    """A pretrained base policy used from outside jit, numpy in and out.

    Required members:

    ``obs_dim: int | PixelSpec``
        Size of one flattened observation, or the ``PixelSpec`` of pixel observations.
    ``action_dim: int``
        Size of ONE action (not of a chunk).
    ``chunk_len: int``
        Actions per chunk: what one sample contains.
    ``sample(obs, num_samples, seed) -> chunks``
        See :meth:`sample`.

    Optional members (absent means "no"):

    ``learns: bool``
        True only if :meth:`imitation_update` trains the model. Bases without the attribute, or with
        ``learns = False``, are frozen: the agent must not call ``imitation_update`` on them (use
        :func:`base_learns` to ask). A frozen base's ``imitation_update`` may be absent or raise
        ``NotImplementedError``.
    ``imitation_update(obs, chunks) -> dict[str, float]``
        One imitation step on ``obs float32 [B, obs_dim]`` and ``chunks float32 [B, chunk_len,
        action_dim]`` in [-1, 1] (expoft's spaces); returns scalar metrics (e.g. ``{"loss": 0.12}``).
    ``state() -> dict[str, np.ndarray]`` / ``load_state(state) -> None``
        What to checkpoint so that a resumed run samples the same as before: a flat dict of numpy
        arrays (string keys, no objects, saved with ``allow_pickle=False``). Bases without trainable or
        random state return ``{}`` or leave them out (see :func:`base_state`).
    """

    obs_dim: ObsSpec
    action_dim: int
    chunk_len: int

    def sample(self, obs: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
        """``num_samples`` chunks per observation.

        Args:
            obs: ``float32 [B, obs_dim]``, the environment's observations (B >= 1).
            num_samples: N >= 1 chunks per observation (EXPO's candidates).
            seed: an integer in ``[0, 2**31)``; the same ``(obs, num_samples, seed)`` should give the
                same chunks where the model allows it (retries and resumed runs rely on it).

        Returns:
            ``float32 [B, N, chunk_len, action_dim]``, every value in [-1, 1]. Row ``[b, n]`` is the
            n-th sample for observation b. A deterministic model returns N identical chunks.
        """
        ...


def base_learns(base: Any) -> bool:
    """Whether ``base`` can be trained by imitation: ``learns`` is true and ``imitation_update`` exists."""
    return bool(getattr(base, "learns", False)) and callable(getattr(base, "imitation_update", None))


def base_state(base: Any) -> dict[str, np.ndarray]:
    """``base.state()`` checked to be a flat dict of numpy arrays; ``{}`` for bases without state."""
    fn = getattr(base, "state", None)
    if fn is None:
        return {}
    state = fn()
    if not isinstance(state, dict):
        raise TypeError(f"{type(base).__name__}.state() returned {type(state).__name__}, expected a dict of arrays")
    out = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise TypeError(f"{type(base).__name__}.state() has a non-string key {key!r}")
        arr = np.asarray(value)
        if arr.dtype.kind in "OV":
            raise TypeError(f"{type(base).__name__}.state()[{key!r}] has dtype {arr.dtype}; only plain arrays")
        out[key] = arr
    return out


def check_obs(obs: Any, obs_dim: ObsSpec, name: str = "obs") -> Any:
    """``obs`` as a C-contiguous ``float32 [B, obs_dim]`` array (or, for a ``PixelSpec``, a pixel
    observation dict with a batch axis); a clear ValueError otherwise."""
    if isinstance(obs_dim, PixelSpec):
        try:
            obs_dim.check(obs, batched=True)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc} (a batch of pixel observations, leading axis B)") from exc
        proprio = np.ascontiguousarray(obs[PROPRIO], dtype=np.float32)
        if proprio.shape[0] < 1 or not np.isfinite(proprio).all():
            raise ValueError(f"{name}['{PROPRIO}'] is empty or has NaN/inf")
        return {PIXELS: np.ascontiguousarray(obs[PIXELS]), PROPRIO: proprio}
    arr = np.asarray(obs)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} has dtype {arr.dtype}, expected a float array [B, {obs_dim}]")
    if arr.ndim != 2 or arr.shape[1] != obs_dim or arr.shape[0] < 1:
        hint = " (one observation? pass obs[None])" if arr.shape == (obs_dim,) else ""
        raise ValueError(f"{name} has shape {arr.shape}, expected [B, {obs_dim}] with B >= 1{hint}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        rows = np.unique(np.nonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} has NaN/inf in {len(rows)} row(s), first row {rows[0]}")
    return arr


def check_chunks(
    chunks: Any,
    batch: int,
    num_samples: int,
    chunk_len: int,
    action_dim: int,
    *,
    tol: float = 1e-3,
    out_of_range: str = "error",
    source: str = "base",
) -> np.ndarray:
    """Validate what a base returned and return it as ``float32 [batch, num_samples, chunk_len, action_dim]``.

    Checks, in order, each failure a :class:`BaseOutputError` that says what was expected and what came:

    1. a numeric array (numpy, or anything ``np.asarray`` takes, e.g. a CPU torch tensor); integer and
       bool arrays are rejected (a base emits continuous actions);
    2. the exact shape ``[batch, num_samples, chunk_len, action_dim]``;
    3. every value finite (NaN/inf reported with the number of bad chunks and the first one);
    4. every value in ``[-1 - tol, 1 + tol]``. Values within the tolerance are clipped to [-1, 1]
       silently (float round-off of an un-normalisation). Beyond it, ``out_of_range="error"`` (the
       default) raises: a value far outside [-1, 1] almost always means the model's actions are in other
       units and the :class:`Normalization` is wrong or missing, which clipping would hide.
       ``out_of_range="clip"`` clips instead, with a ``RuntimeWarning`` giving the fraction clipped.
    """
    if out_of_range not in ("error", "clip"):
        raise ValueError(f"out_of_range must be 'error' or 'clip', got {out_of_range!r}")
    expected = (batch, num_samples, chunk_len, action_dim)
    try:
        arr = np.asarray(chunks)
    except Exception as exc:  # report what came, whatever it was
        raise BaseOutputError(f"{source} returned {type(chunks).__name__}, not an array: {exc}") from exc
    if arr.dtype.kind != "f":
        raise BaseOutputError(
            f"{source} returned dtype {arr.dtype} ({type(chunks).__name__}), expected float chunks {list(expected)}"
        )
    if arr.shape != expected:
        hint = ""
        if arr.shape == (batch, chunk_len, action_dim):
            hint = " (the samples axis is missing)"
        elif arr.shape == (batch, num_samples, chunk_len * action_dim):
            hint = " (chunks are flattened: reshape to [..., chunk_len, action_dim])"
        elif arr.ndim == 4 and arr.shape[:2] == expected[:2] and arr.shape[3] == action_dim:
            hint = f" (the model's horizon is {arr.shape[2]}, not chunk_len={chunk_len})"
        raise BaseOutputError(
            f"{source} returned chunks of shape {list(arr.shape)}, expected [B, N, chunk_len, action_dim] = "
            f"{list(expected)}{hint}"
        )
    arr = np.asarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.argwhere(~finite.reshape(batch * num_samples, -1).all(axis=1))[:, 0]
        b, n = divmod(int(bad[0]), num_samples)
        raise BaseOutputError(
            f"{source} returned NaN/inf in {len(bad)} of {batch * num_samples} chunks (first: observation {b}, "
            f"sample {n})"
        )
    peak = float(np.abs(arr).max()) if arr.size else 0.0
    if peak > 1.0:
        if peak > 1.0 + tol:
            frac = float(np.mean(np.abs(arr) > 1.0 + tol))
            msg = (
                f"{source} returned actions outside [-1, 1] (max |a| = {peak:.4g}, {frac:.2%} of values beyond the "
                f"tolerance {tol}); expoft's actions are in [-1, 1]: give the base a Normalization with the "
                f"model's action_low/action_high"
            )
            if out_of_range == "error":
                raise BaseOutputError(msg + " (or out_of_range='clip' to clip them)")
            warnings.warn(msg + "; clipped", RuntimeWarning, stacklevel=2)
        arr = np.clip(arr, -1.0, 1.0)
    return arr


def _vector(value: Any, name: str, size: int | None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 or (size is not None and arr.shape[0] != size):
        want = f"[{size}]" if size is not None else "a 1-d vector"
        raise ValueError(f"Normalization.{name} has shape {arr.shape}, expected {want}")
    if not np.isfinite(arr).all():
        raise ValueError(f"Normalization.{name} has NaN/inf")
    return arr


@dataclasses.dataclass(frozen=True)
class Normalization:
    """How a base model's native spaces relate to expoft's.

    Observations: the model expects ``(obs - obs_mean) / obs_std`` (per coordinate, the environment's
    units in, standardised units out). ``None`` (both) means the model takes the environment's
    observations as they are, e.g. because it normalises them itself (LeRobot's pre-processor, openpi's
    input transforms).

    Actions: the model emits actions in its native units, coordinate ``i`` ranging over
    ``[action_low[i], action_high[i]]``; expoft's ``[-1, 1]`` maps affinely onto that box
    (``-1 -> low``, ``+1 -> high``). ``None`` (both) means the model already emits [-1, 1].

    All maps act on the last axis and broadcast over any leading axes (batch, samples, chunk steps).
    Arrays are float64 inside; the maps return float32.
    """

    obs_mean: np.ndarray | None = None
    obs_std: np.ndarray | None = None
    action_low: np.ndarray | None = None
    action_high: np.ndarray | None = None

    def __post_init__(self):
        if (self.obs_mean is None) != (self.obs_std is None):
            raise ValueError("Normalization: give both obs_mean and obs_std, or neither")
        if (self.action_low is None) != (self.action_high is None):
            raise ValueError("Normalization: give both action_low and action_high, or neither")
        if self.obs_mean is not None:
            mean = _vector(self.obs_mean, "obs_mean", None)
            std = _vector(self.obs_std, "obs_std", mean.shape[0])
            if (std <= 0).any():
                raise ValueError(f"Normalization.obs_std must be > 0 (index {int(np.argmin(std))} is {std.min()})")
            object.__setattr__(self, "obs_mean", mean)
            object.__setattr__(self, "obs_std", std)
        if self.action_low is not None:
            low = _vector(self.action_low, "action_low", None)
            high = _vector(self.action_high, "action_high", low.shape[0])
            if (high <= low).any():
                i = int(np.argmax(low - high))
                raise ValueError(f"Normalization: action_high must be > action_low (index {i}: {low[i]} >= {high[i]})")
            object.__setattr__(self, "action_low", low)
            object.__setattr__(self, "action_high", high)

    # ---- construction ----------------------------------------------------
    @classmethod
    def from_data(
        cls, observations: np.ndarray | None = None, actions: np.ndarray | None = None, eps: float = 1e-6
    ) -> Normalization:
        """Statistics of data in the model's native units: observations ``[N, D]`` give mean/std (std
        floored at ``eps``); actions ``[..., A]`` give their per-coordinate min/max as the action box."""
        kwargs: dict[str, np.ndarray] = {}
        if observations is not None:
            obs = np.asarray(observations, dtype=np.float64).reshape(-1, np.shape(observations)[-1])
            kwargs.update(obs_mean=obs.mean(0), obs_std=np.maximum(obs.std(0), eps))
        if actions is not None:
            act = np.asarray(actions, dtype=np.float64).reshape(-1, np.shape(actions)[-1])
            low, high = act.min(0), act.max(0)
            high = np.where(high - low < eps, low + eps, high)
            kwargs.update(action_low=low, action_high=high)
        return cls(**kwargs)

    def check_dims(self, obs_dim: ObsSpec, action_dim: int) -> None:
        """A ValueError if the vectors do not match the base's dimensions (for pixel observations
        the observation statistics are those of the proprioception; images are not normalised)."""
        obs_dim = vector_dim(obs_dim)
        if self.obs_mean is not None and self.obs_mean.shape[0] != obs_dim:
            raise ValueError(f"Normalization has obs_mean of size {self.obs_mean.shape[0]}, the base obs_dim={obs_dim}")
        if self.action_low is not None and self.action_low.shape[0] != action_dim:
            raise ValueError(
                f"Normalization has action_low of size {self.action_low.shape[0]}, the base action_dim={action_dim}"
            )

    # ---- observations ----------------------------------------------------
    def obs_to_base(self, obs: Any) -> Any:
        """Environment observations ``[..., D]`` -> what the model takes: ``(obs - mean) / std``
        (pixel observations: their proprioception; the images pass unchanged)."""
        if isinstance(obs, dict):
            return {**obs, PROPRIO: self.obs_to_base(obs[PROPRIO])}
        obs = np.asarray(obs)
        if self.obs_mean is None:
            return obs.astype(np.float32, copy=False)
        return ((obs - self.obs_mean) / self.obs_std).astype(np.float32)

    def obs_from_base(self, obs: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`obs_to_base`."""
        obs = np.asarray(obs)
        if self.obs_mean is None:
            return obs.astype(np.float32, copy=False)
        return (obs * self.obs_std + self.obs_mean).astype(np.float32)

    # ---- actions ---------------------------------------------------------
    def actions_from_base(self, actions: np.ndarray) -> np.ndarray:
        """The model's native actions ``[..., A]`` -> expoft's [-1, 1]: ``2 (a - low) / (high - low) - 1``.
        Not clipped: :func:`check_chunks` decides what to do with values outside [-1, 1]."""
        actions = np.asarray(actions)
        if self.action_low is None:
            return actions.astype(np.float32, copy=False)
        return (2.0 * (actions - self.action_low) / (self.action_high - self.action_low) - 1.0).astype(np.float32)

    def actions_to_base(self, actions: np.ndarray) -> np.ndarray:
        """expoft's actions in [-1, 1] ``[..., A]`` -> the model's units (for imitation targets)."""
        actions = np.asarray(actions)
        if self.action_low is None:
            return actions.astype(np.float32, copy=False)
        return ((actions + 1.0) * 0.5 * (self.action_high - self.action_low) + self.action_low).astype(np.float32)

    # ---- checkpoints -----------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The set fields as arrays (for a checkpoint or the server's metadata)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> Normalization:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(arrays) - names
        if unknown:
            raise ValueError(f"Normalization.from_arrays: unknown keys {sorted(unknown)}; known: {sorted(names)}")
        return cls(**{k: np.asarray(v) for k, v in arrays.items()})

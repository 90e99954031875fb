"""Transitions in memory: the dataset's fields, their validation, and the error that names the
field and index of a problem. On disk: ``expoft.data.dataset``."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


PER_STEP_FIELDS = (
    "observations",
    "next_observations",
    "actions",
    "episode_ends",
    "rewards",
    "terminals",
    "next_qpos",
    "next_button_states",
)


REQUIRED_FIELDS = ("observations", "next_observations", "actions", "episode_ends")


TASK_FIELDS = ("rewards", "terminals", "episode_success")


DTYPES = {
    "observations": np.float32,
    "next_observations": np.float32,
    "actions": np.float32,
    "episode_ends": np.bool_,
    "rewards": np.float32,
    "terminals": np.bool_,
    "episode_success": np.bool_,
    "next_qpos": np.float32,
    "next_button_states": np.int8,
}


ACTION_BOUND_TOLERANCE = 1e-5


class DatasetError(ValueError):
    """A dataset is malformed; the message says what, where, and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Validated transitions; see the module docstring for every field's shape."""

    observations: np.ndarray
    next_observations: np.ndarray
    actions: np.ndarray
    episode_ends: np.ndarray
    rewards: np.ndarray | None = None
    terminals: np.ndarray | None = None
    episode_success: np.ndarray | None = None
    next_qpos: np.ndarray | None = None
    next_button_states: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def num_transitions(self) -> int:
        return len(self.actions)

    @property
    def num_episodes(self) -> int:
        return int(self.episode_ends.sum())

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def timeouts(self) -> np.ndarray | None:
        """``[N]`` bool: episode ends that are time-limit truncations (needs task labels)."""
        return None if self.terminals is None else self.episode_ends & ~self.terminals

    @property
    def has_task(self) -> bool:
        return self.rewards is not None

    def episode_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, stops)``: episode e covers transitions ``starts[e]:stops[e]``."""
        stops = np.flatnonzero(self.episode_ends) + 1
        starts = np.concatenate([[0], stops[:-1]])
        return starts, stops

    def frame_rows(self) -> np.ndarray:
        """``int64 [N]``: the row of each transition's observation in the dataset's frames (each
        episode keeps its L + 1 observations in order, so the next observation is row + 1;
        ``expoft.data.frames``)."""
        episode = np.concatenate([[0], np.cumsum(self.episode_ends[:-1], dtype=np.int64)])
        return np.arange(self.num_transitions, dtype=np.int64) + episode

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "meta" and getattr(self, f.name) is not None
        }

    def replace(self, **changes: Any) -> Dataset:
        return dataclasses.replace(self, **changes)


def _first_bad_index(bad: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(bad)[0])


def validate(
    ds: Dataset,
    *,
    obs_dim: int | None = None,
    action_dim: int | None = None,
    source: str = "dataset",
) -> None:
    """Raise :class:`DatasetError` on the first problem found, naming field and index."""
    arrays = ds.arrays()
    n = len(ds.observations)
    if n == 0:
        raise DatasetError(f"{source}: has no transitions")
    for name in PER_STEP_FIELDS:
        if name in arrays and len(arrays[name]) != n:
            raise DatasetError(
                f"{source}: length mismatch: '{name}' has {len(arrays[name])} rows but 'observations' has {n}"
            )
    for name in ("observations", "next_observations", "actions"):
        if arrays[name].ndim != 2:
            raise DatasetError(f"{source}: '{name}' must be 2-D [N, dim], got shape {arrays[name].shape}")
    for name in ("episode_ends", "rewards", "terminals", "episode_success"):
        if name in arrays and arrays[name].ndim != 1:
            raise DatasetError(f"{source}: '{name}' must be 1-D, got shape {arrays[name].shape}")
    if ds.next_observations.shape[1] != ds.observations.shape[1]:
        raise DatasetError(
            f"{source}: 'next_observations' has dim {ds.next_observations.shape[1]}, "
            f"'observations' has {ds.observations.shape[1]}"
        )
    for name in ("observations", "next_observations", "actions", "rewards", "next_qpos"):
        if name in arrays and not np.isfinite(arrays[name]).all():
            idx = _first_bad_index(~np.isfinite(arrays[name]))
            raise DatasetError(
                f"{source}: '{name}' has a non-finite value {arrays[name][idx]} at index {idx} "
                f"(transition {idx[0]}); clean or drop that episode before loading"
            )
    out_of_range = np.abs(ds.actions) > 1.0 + ACTION_BOUND_TOLERANCE
    if out_of_range.any():
        idx = _first_bad_index(out_of_range)
        raise DatasetError(
            f"{source}: 'actions' must lie in [-1, 1]; found {float(ds.actions[idx]):.4g} at index {idx} "
            f"(max |a| = {float(np.abs(ds.actions).max()):.4g}). Rescale actions to [-1, 1] with the "
            f"environment's action bounds."
        )
    if not ds.episode_ends[-1]:
        raise DatasetError(
            f"{source}: the last transition must end an episode (episode_ends[-1] is False); "
            "a truncated final episode should be marked as ended"
        )
    if ds.episode_success is not None and len(ds.episode_success) != ds.num_episodes:
        raise DatasetError(
            f"{source}: length mismatch: 'episode_success' has {len(ds.episode_success)} entries "
            f"but 'episode_ends' marks {ds.num_episodes} episodes"
        )
    if (ds.rewards is None) != (ds.terminals is None):
        raise DatasetError(f"{source}: 'rewards' and 'terminals' come together; one of them is missing")
    # Within an episode s_{t+1} of step t is s_t of step t+1: catches missing episode ends.
    inner = ~ds.episode_ends[:-1]
    mismatch = inner & np.any(ds.next_observations[:-1] != ds.observations[1:], axis=1)
    if mismatch.any():
        t = int(np.flatnonzero(mismatch)[0])
        raise DatasetError(
            f"{source}: next_observations[{t}] differs from observations[{t + 1}] although "
            f"episode_ends[{t}] is False; is an episode end missing at transition {t}?"
        )
    if obs_dim is not None and ds.obs_dim != obs_dim:
        raise DatasetError(
            f"{source}: observation dimension {ds.obs_dim} does not match the environment's {obs_dim}; "
            "was this dataset made for another environment?"
        )
    if action_dim is not None and ds.action_dim != action_dim:
        raise DatasetError(
            f"{source}: action dimension {ds.action_dim} does not match the environment's {action_dim}; "
            "was this dataset made for another environment?"
        )


def _coerce(name: str, value: np.ndarray, source: str) -> np.ndarray:
    value = np.asarray(value)
    want = DTYPES[name]
    if value.dtype == object:
        raise DatasetError(f"{source}: '{name}' holds Python objects; expoft only loads numeric arrays")
    if want is np.bool_ and value.dtype != np.bool_:
        if not np.isin(value, (0, 1)).all():
            idx = _first_bad_index(~np.isin(value, (0, 1)))
            raise DatasetError(f"{source}: '{name}' must be 0/1 flags; found {value[idx]} at index {idx}")
    return value.astype(want, copy=False)


def make_dataset(arrays: dict[str, np.ndarray], meta: dict | None = None, source: str = "dataset") -> Dataset:
    """Build a :class:`Dataset` from plain arrays (e.g. your own data), validating it."""
    missing = [f for f in REQUIRED_FIELDS if f not in arrays]
    if missing:
        raise DatasetError(
            f"{source}: missing field(s) {missing}; a dataset needs {list(REQUIRED_FIELDS)} "
            f"(plus {list(TASK_FIELDS)} unless it is play data relabelled per task)"
        )
    known = set(DTYPES)
    unknown = sorted(set(arrays) - known)
    if unknown:
        log.warning("%s: ignoring unknown fields %s", source, unknown)
    fields = {k: _coerce(k, v, source) for k, v in arrays.items() if k in known}
    ds = Dataset(**fields, meta=dict(meta or {}))
    validate(ds, source=source)
    return ds

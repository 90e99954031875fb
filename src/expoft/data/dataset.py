"""expoft's dataset: validated arrays in memory, ``.npz`` + ``.json`` on disk.

On disk a dataset is two files side by side::

    NAME.npz    the arrays below (np.savez; always loaded with allow_pickle=False)
    NAME.json   metadata: format version, env, task, kind, how it was made,
                counts, shapes, dtypes and the sha256 of every array

Arrays (N transitions, E episodes, D observation size, A action size)::

    observations       [N, D] float32   s_t
    next_observations  [N, D] float32   s_{t+1}
    actions            [N, A] float32   a_t, in [-1, 1]
    episode_ends       [N]    bool      t is the last step of its episode (any reason)
    rewards            [N]    float32   r_t = R(s_{t+1})        (task data; see below)
    terminals          [N]    bool      s_{t+1} is terminal: no bootstrapping past t
    episode_success    [E]    bool      the episode reached the task goal
    next_qpos          [N, nq] float32  MuJoCo qpos of s_{t+1}  (optional; for relabelling)
    next_button_states [N, nb] int8     button states of s_{t+1} (optional; scene/puzzle)

``rewards``, ``terminals`` and ``episode_success`` depend on a task. Demonstration
files carry them; play files do not and get them when loaded for a task (from
``next_qpos``), so one play file serves all five tasks. Time-limit truncations
are the episode ends that are not terminals.

OGBench's own ``.npz`` files (observations, actions, terminals meaning
"episode boundary", qpos, qvel, button_states) load too; see
:func:`from_ogbench_arrays`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from expoft.envs.ogbench_domains import check_reward, get_domain, subgoal_successes, task_goal
from expoft.fileio import atomic_write

log = logging.getLogger(__name__)

FORMAT_NAME = "expoft-dataset"
FORMAT_VERSION = 1

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


# ---------------------------------------------------------------------------
# validation


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


# ---------------------------------------------------------------------------
# task relabelling


def label_for_task(ds: Dataset, env: str, task: int, reward: str = "sparse") -> Dataset:
    """Rewards, terminals and per-episode success of ``ds`` for one singletask.

    ``sparse``: r = 1 when s_{t+1} solves the task, else 0 (EXPO-FT's success reward).
    ``ogbench``: r = (#subgoals satisfied) - (#subgoals), as OGBench's singletask envs.
    In both, s_{t+1} is terminal when the task is solved.
    """
    check_reward(reward)
    if ds.next_qpos is None:
        raise DatasetError(
            "cannot compute task rewards: the dataset has no 'next_qpos'. Either load it without a task "
            "(its own rewards are used) or regenerate it with expoft, which records the simulator state"
        )
    domain = get_domain(env)
    if ds.next_qpos.shape[1] < domain.qpos_columns_needed:
        raise DatasetError(
            f"'next_qpos' has {ds.next_qpos.shape[1]} columns; {domain.name} needs {domain.qpos_columns_needed}"
        )
    if domain.has_button_states and ds.next_button_states is None:
        raise DatasetError(f"cannot judge {domain.name} success: the dataset has no 'next_button_states'")
    parts = subgoal_successes(domain, task_goal(domain.name, task), ds.next_qpos, ds.next_button_states)
    solved = parts.all(axis=1)
    if reward == "sparse":
        rewards = solved.astype(np.float32)
    else:
        rewards = (parts.sum(axis=1) - parts.shape[1]).astype(np.float32)
    starts, stops = ds.episode_bounds()
    episode_success = np.logical_or.reduceat(solved, starts) if len(starts) else np.zeros(0, bool)
    meta = {**ds.meta, "task": task, "reward": reward}
    return ds.replace(rewards=rewards, terminals=solved, episode_success=episode_success, meta=meta)


# ---------------------------------------------------------------------------
# checksums, saving, loading


def array_sha256(a: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def dataset_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(NAME.npz, NAME.json)`` for a path given with either suffix or none."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")


def labelled_path(path: str | os.PathLike, task: int, reward: str) -> Path:
    """The usual name of a copy of ``path`` labelled for ``task``: NAME-task<K>-<reward>.npz beside it."""
    npz, _ = dataset_paths(path)
    return npz.with_name(f"{npz.stem}-task{task}-{reward}.npz")


def check_labelled_copy(labelled: str | os.PathLike, source: str | os.PathLike, task: int, reward: str) -> None:
    """Raise :class:`DatasetError` unless ``labelled`` (an existing file made by ``expoft data
    label``) is ``source`` labelled for ``task`` with ``reward``. Compares the recorded checksums of
    the arrays both files hold, so a copy left over from other (e.g. regenerated) data is caught
    without reading the arrays."""
    (_, labelled_meta), (_, source_meta) = dataset_paths(labelled), dataset_paths(source)
    try:
        got, want = (json.loads(p.read_text()) for p in (labelled_meta, source_meta))
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot compare {labelled_meta} with {source_meta}: {e}") from e
    fix = f"move {labelled_meta.with_suffix('')}.npz/.json aside and run again to label {source_meta.stem} anew"
    if (got.get("task"), got.get("reward")) != (task, reward):
        raise DatasetError(
            f"{labelled_meta} is labelled for task {got.get('task')} with reward {got.get('reward')!r}, "
            f"not task {task} with {reward!r}; {fix}"
        )
    got_sha, want_sha = got.get("sha256", {}), want.get("sha256", {})
    shared = sorted(set(got_sha) & set(want_sha))
    differ = [k for k in shared if got_sha[k] != want_sha[k]]
    if not shared or differ:
        what = f"its {differ} differ" if differ else "they record no common array checksums"
        raise DatasetError(f"{labelled_meta} was not labelled from {source_meta.stem}.npz ({what}); {fix}")


def save_dataset(ds: Dataset, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``NAME.npz`` and ``NAME.json``; refuse to replace existing files unless asked."""
    npz, meta_path = dataset_paths(path)
    if not overwrite:
        for p in (npz, meta_path):
            if p.exists():
                raise FileExistsError(f"{p} already exists; choose another path or pass overwrite=True")
    arrays = ds.arrays()
    meta = {
        **ds.meta,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "num_transitions": ds.num_transitions,
        "num_episodes": ds.num_episodes,
        "shapes": {k: list(v.shape) for k, v in arrays.items()},
        "dtypes": {k: v.dtype.str for k, v in arrays.items()},
        "sha256": {k: array_sha256(v) for k, v in arrays.items()},
    }
    if ds.episode_success is not None:
        meta["success_rate"] = float(ds.episode_success.mean()) if len(ds.episode_success) else 0.0
    # The npz goes first: a metadata file only ever describes a complete array file.
    # (ignore: numpy's stub types savez's **kwargs as if they could fill its allow_pickle: bool)
    atomic_write(npz, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
    atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=2, sort_keys=True).encode()))
    return npz


def _read_npz(npz: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(npz, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DatasetError(
                f"{npz}: contains pickled Python objects; expoft never unpickles data (it can run code). "
                "Save plain numeric arrays instead."
            ) from e
        raise DatasetError(f"{npz}: not a readable .npz file ({e})") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{npz}: not a readable .npz file ({e}); is it truncated or corrupted?") from e


def load_dataset(
    path: str | os.PathLike,
    *,
    env: str | None = None,
    task: int | None = None,
    reward: str = "sparse",
    verify_checksum: bool = True,
) -> Dataset:
    """Load and validate a dataset (expoft's format or OGBench's own ``.npz``).

    Args:
        path: ``NAME``, ``NAME.npz`` or ``NAME.json``.
        env: environment the data must fit (dims are checked); defaults to the
            file's own ``env`` metadata. Needed for OGBench files when ``task`` is given.
        task: relabel rewards/terminals/success for this singletask (required
            for play data before training on it).
        reward: ``sparse`` or ``ogbench``; see :func:`label_for_task`.
        verify_checksum: compare every array with the sha256 in the metadata.

    Never writes or deletes anything.
    """
    if Path(path).is_dir():
        raise DatasetError(f"{path} is a directory; name a dataset file (NAME.npz, its NAME.json beside it)")
    npz, meta_path = dataset_paths(path)
    if not npz.exists():
        raise FileNotFoundError(
            f"dataset file {npz} does not exist; generate one with `expoft data demos ...` or "
            "`expoft data play ...`, or pass the path of your own .npz"
        )
    raw = _read_npz(npz)
    source = str(npz)
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{meta_path}: metadata is not valid JSON ({e})") from e
        if not isinstance(meta, dict):
            raise DatasetError(f"{meta_path}: a dataset description is a JSON object, not a {type(meta).__name__}")
        if meta.get("format") != FORMAT_NAME:
            raise DatasetError(f"{meta_path}: not an expoft dataset description (format={meta.get('format')!r})")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise DatasetError(
                f"{meta_path}: format version {meta['format_version']} is newer than this expoft "
                f"understands ({FORMAT_VERSION}); upgrade expoft"
            )
        if verify_checksum:
            _verify_checksums(raw, meta, source)
        arrays = raw
    elif "episode_ends" not in raw:
        _check_ogbench_fields(raw, npz, meta_path)
        meta = {"kind": "ogbench", "source_file": str(npz)}
        arrays = from_ogbench_arrays(raw, source)
    else:
        meta = {"kind": "custom"}
        arrays = raw
    ds = make_dataset(arrays, meta, source)

    env = env or meta.get("env")
    if env is not None:
        domain = get_domain(env)
        validate(ds, obs_dim=domain.obs_dim, action_dim=domain.action_dim, source=source)
    if task is not None:
        if env is None:
            raise DatasetError(f"{source}: pass env= to relabel this dataset for task {task}")
        ds = label_for_task(ds, env, task, reward)
    elif not ds.has_task:
        log.info("%s: no rewards in the file; load it with task=K to label it for a task", source)
    return ds


def _verify_checksums(raw: dict[str, np.ndarray], meta: dict, source: str) -> None:
    expected = meta.get("sha256", {})
    missing = sorted(set(expected) - set(raw))
    if missing:
        raise DatasetError(f"{source}: missing field(s) {missing} that its metadata lists")
    for name, digest in expected.items():
        if array_sha256(raw[name]) != digest:
            raise DatasetError(
                f"{source}: checksum mismatch for '{name}': the file was changed or corrupted after it "
                "was written. Regenerate it (expoft keeps the old copy) or restore it from a backup."
            )


OGBENCH_REQUIRED = frozenset({"observations", "actions", "terminals"})
OGBENCH_OPTIONAL = frozenset({"qpos", "qvel", "button_states"})
"""The fields of OGBench's own dataset files: one row per visited state."""


def _check_ogbench_fields(raw: dict[str, np.ndarray], npz: Path, meta_path: Path) -> None:
    """A file without ``episode_ends`` and without a description is read as OGBench's only when
    its fields are exactly OGBench's: anything else (e.g. an expoft file that lost its .json) would
    be read wrongly, its own rewards and labels dropped without a word."""
    fields = set(raw)
    if OGBENCH_REQUIRED <= fields <= OGBENCH_REQUIRED | OGBENCH_OPTIONAL:
        return
    raise DatasetError(
        f"{npz}: cannot tell its format. It has fields {sorted(fields)}. An expoft dataset has its "
        f"description {meta_path.name} beside it (fields observations, actions, next_observations, "
        "rewards, terminals, episode_ends, ...); a file of your own in expoft's layout needs at least "
        f"'episode_ends'; an OGBench file has exactly {sorted(OGBENCH_REQUIRED)} plus any of "
        f"{sorted(OGBENCH_OPTIONAL)}."
    )


def from_ogbench_arrays(raw: dict[str, np.ndarray], source: str = "ogbench file") -> dict[str, np.ndarray]:
    """Convert OGBench's layout to expoft's.

    OGBench stores one row per visited state and marks the last state of each
    episode with ``terminals`` = 1 (an episode boundary, not an MDP terminal).
    The last state of an episode has no successor, so it yields no transition.
    """
    obs = raw["observations"]
    bounds = raw["terminals"].astype(bool)
    for name, array in raw.items():  # one row per visited state in every field
        if array.ndim == 0 or len(array) != len(obs):
            rows = "a scalar" if array.ndim == 0 else f"{len(array)} rows"
            raise DatasetError(
                f"{source}: OGBench field '{name}' has {rows}, 'observations' {len(obs)}: every field has one row "
                "per visited state"
            )
    if len(obs) < 2:
        raise DatasetError(f"{source}: too short to form transitions")
    if not bounds[-1]:
        raise DatasetError(f"{source}: OGBench 'terminals' must mark the last row as an episode end")
    keep = ~bounds[:-1]  # transition t -> t+1 exists when t is not an episode's last state
    ends_next = bounds[1:]  # the transition into an episode's last state ends that episode
    out = {
        "observations": obs[:-1][keep],
        "next_observations": obs[1:][keep],
        "actions": raw["actions"][:-1][keep],
        "episode_ends": ends_next[keep],
    }
    if "qpos" in raw:
        out["next_qpos"] = raw["qpos"][1:][keep]
    if "button_states" in raw:
        out["next_button_states"] = raw["button_states"][1:][keep]
    return out


# ---------------------------------------------------------------------------
# summary


def _rounded(x: np.ndarray, digits: int) -> list[float]:
    return [round(float(v), digits) for v in x]


def describe(ds: Dataset) -> dict[str, Any]:
    """Counts and statistics for ``expoft data info``."""
    starts, stops = ds.episode_bounds()
    lengths = stops - starts
    obs = ds.observations
    out: dict[str, Any] = {
        "env": ds.meta.get("env"),
        "task": ds.meta.get("task"),
        "kind": ds.meta.get("kind"),
        "episodes": ds.num_episodes,
        "transitions": ds.num_transitions,
        "episode_length": {
            "min": int(lengths.min()),
            "mean": round(float(lengths.mean()), 1),
            "max": int(lengths.max()),
        },
        "obs_dim": ds.obs_dim,
        "action_dim": ds.action_dim,
        "action_min": _rounded(ds.actions.min(axis=0), 4),
        "action_max": _rounded(ds.actions.max(axis=0), 4),
        "obs_mean": _rounded(obs.mean(axis=0), 3),
        "obs_std": _rounded(obs.std(axis=0), 3),
        "obs_min": round(float(obs.min()), 4),
        "obs_max": round(float(obs.max()), 4),
        "constant_obs_dims": int((obs.std(axis=0) == 0).sum()),
    }
    if ds.episode_success is not None:
        out["success_rate"] = float(ds.episode_success.mean())
        out["successful_episodes"] = int(ds.episode_success.sum())
    if ds.rewards is not None:  # a file may carry episode_success without per-step rewards
        out["return_mean"] = round(float(np.add.reduceat(ds.rewards, starts).mean()), 4)
    return out

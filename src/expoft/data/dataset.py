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

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from expoft.data.labels import label_for_task
from expoft.data.transitions import Dataset, DatasetError, make_dataset, validate
from expoft.envs.ogbench_domains import get_domain
from expoft.fileio import NpzError, atomic_write, read_npz

log = logging.getLogger(__name__)


FORMAT_NAME = "expoft-dataset"
FORMAT_VERSION = 1


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
        return read_npz(npz)
    except NpzError as e:
        raise DatasetError(str(e)) from e


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

"""robomimic's HDF5 demonstrations in and out (h5py).

robomimic keeps one group per episode::

    data/                   attrs: total (transitions), env_args (JSON: env_name, type, env_kwargs)
      demo_0/               attrs: num_samples
        actions   [T, A]    rewards [T]    dones [T]
        obs/<key>      [T, ...]   the observation, one dataset per modality
        next_obs/<key> [T, ...]
    mask/<filter>           names of demos (bytes), e.g. mask/train

Mapping to expoft's dataset (``expoft.data.dataset``): the observation is the listed
``obs/<key>`` datasets, each flattened and concatenated in order (default: ``state``, the key
expoft writes); ``dones`` are the terminals (the task reached: no bootstrapping past the step)
and ``rewards`` the rewards, both optional (without them the data has no task labels, like
play data); each demo is one episode, successful when it ends in a done (or when it is listed
in ``mask/successful``). Fields expoft keeps for relabelling (``next_qpos``,
``next_button_states``) travel in ``demo_N/expoft/`` and the dataset's metadata in
``data.attrs["expoft_meta"]``, so that a round trip gives back the same file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from expoft.data.dataset import load_dataset
from expoft.data.transitions import Dataset, DatasetError, make_dataset
from expoft.envs.ogbench_domains import get_domain
from expoft.fileio import atomic_write

STATE_KEY = "state"
SUCCESS_MASK = "successful"
EXTRA_FIELDS = ("next_qpos", "next_button_states")
ROBOMIMIC_GYM_ENV = 2
"""robomimic's EnvType for gym environments (1 robosuite, 3 iGibson)."""


def _demo_names(data: Any, source: str) -> list[str]:
    names = [k for k in data.keys() if re.fullmatch(r"demo_\d+", k)]
    if not names:
        raise DatasetError(f"{source}: 'data' holds no demo_N groups; is this a robomimic dataset?")
    return sorted(names, key=lambda k: int(k.split("_")[1]))


def _observation(group: Any, keys: Sequence[str], where: str, rows: int) -> np.ndarray:
    parts = []
    for key in keys:
        if key not in group:
            raise DatasetError(f"{where}: no observation key '{key}' (it has {sorted(group.keys())}); pass --obs-keys")
        value = np.asarray(group[key])
        if value.dtype == np.uint8 and value.ndim == 4:
            raise DatasetError(f"{where}/{key} holds images {value.shape}; import state keys (--obs-keys)")
        if len(value) != rows:
            raise DatasetError(f"{where}/{key} has {len(value)} rows, the demo's actions {rows} (ragged episode)")
        parts.append(value.reshape(rows, -1).astype(np.float32))
    return np.concatenate(parts, axis=1)


def default_obs_keys(obs: Any) -> list[str]:
    """``state`` when the file has it; else every low-dimensional key, in sorted order."""
    keys = sorted(obs.keys())
    if STATE_KEY in keys:
        return [STATE_KEY]
    return [k for k in keys if not (obs[k].dtype == np.uint8 and obs[k].ndim == 4)]


def import_robomimic(
    path: str | os.PathLike, env: str, *, obs_keys: Sequence[str] | None = None, rescale_actions: bool = False
) -> Dataset:
    """A validated :class:`Dataset` from a robomimic HDF5 file, checked against ``env``'s
    observation and action sizes. ``rescale_actions``: divide each action dimension by its
    largest magnitude in the file when actions leave [-1, 1] (recorded in the metadata)."""
    import h5py

    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"no robomimic file at {path}")
    domain = get_domain(env)
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise DatasetError(f"{source}: not a readable HDF5 file ({error})") from error
    with f:
        if "data" not in f:
            raise DatasetError(f"{source}: no 'data' group; a robomimic file keeps its demos in data/demo_N")
        data = f["data"]
        names = _demo_names(data, source)
        successful = set()
        if "mask" in f and SUCCESS_MASK in f["mask"]:
            successful = {n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][SUCCESS_MASK][()]}
        columns: dict[str, list[np.ndarray]] = {}
        success, has_task, keys = [], None, list(obs_keys or [])
        for name in names:
            demo, where = data[name], f"{source}: data/{name}"
            for group in ("obs", "next_obs"):
                if group not in demo:
                    raise DatasetError(f"{where} has no '{group}' group (robomimic demos keep obs and next_obs)")
            if "actions" not in demo:
                raise DatasetError(f"{where} has no 'actions'")
            actions = np.asarray(demo["actions"], dtype=np.float32)
            rows = len(actions)
            if actions.ndim != 2 or rows == 0:
                raise DatasetError(f"{where}/actions must be [T, A] with T >= 1, got shape {actions.shape}")
            keys = keys or default_obs_keys(demo["obs"])
            step = {
                "observations": _observation(demo["obs"], keys, f"{where}/obs", rows),
                "next_observations": _observation(demo["next_obs"], keys, f"{where}/next_obs", rows),
                "actions": actions,
                "episode_ends": np.arange(rows) == rows - 1,
            }
            demo_has_task = "dones" in demo or "rewards" in demo
            if has_task is None:
                has_task = demo_has_task
            elif has_task != demo_has_task:
                raise DatasetError(f"{where}: some demos have rewards/dones and others not")
            if has_task:
                dones = np.asarray(demo["dones"]).astype(bool) if "dones" in demo else None
                rewards = np.asarray(demo["rewards"], np.float32) if "rewards" in demo else None
                for label, value in (("dones", dones), ("rewards", rewards)):
                    if value is not None and value.shape != (rows,):
                        raise DatasetError(f"{where}/{label} has shape {value.shape}, expected ({rows},)")
                if dones is None:  # rewards only: a positive reward reaches the task
                    dones = np.asarray(rewards) > 0
                step["terminals"] = dones
                step["rewards"] = rewards if rewards is not None else dones.astype(np.float32)
                success.append(bool(step["terminals"].any()) or name in successful)
            if "expoft" in demo:
                for field in EXTRA_FIELDS:
                    if field in demo["expoft"]:
                        step[field] = np.asarray(demo["expoft"][field])
            for field, value in step.items():
                columns.setdefault(field, []).append(value)
        meta = json.loads(data.attrs.get("expoft_meta", "{}"))
        env_args = data.attrs.get("env_args")
    if len({len(v) for v in columns.values()}) != 1:
        raise DatasetError(f"{source}: only some demos carry {[k for k in EXTRA_FIELDS if k in columns]}")
    arrays = {k: np.concatenate(v) for k, v in columns.items()}
    if has_task:
        arrays["episode_success"] = np.array(success)
    if rescale_actions:
        scale = np.maximum(np.abs(arrays["actions"]).max(axis=0), 1.0)
        arrays["actions"] = arrays["actions"] / scale
        meta["action_scale"] = scale.tolist()
    meta = {**meta, "env": env, "kind": meta.get("kind", "robomimic"), "source_file": str(path), "obs_keys": keys}
    if env_args is not None:
        meta["robomimic_env_args"] = env_args if isinstance(env_args, str) else env_args.decode()
    if arrays["actions"].shape[1] != domain.action_dim:
        raise DatasetError(
            f"{source}: 'actions' have {arrays['actions'].shape[1]} dimensions, {env} takes {domain.action_dim}"
        )
    if arrays["observations"].shape[1] != domain.obs_dim:
        raise DatasetError(
            f"{source}: the observation ({' + '.join(keys)}) has {arrays['observations'].shape[1]} dimensions, "
            f"{env} observes {domain.obs_dim}; pick the keys that make its state with --obs-keys"
        )
    if np.abs(arrays["actions"]).max() > 1.0 + 1e-5 and not rescale_actions:
        raise DatasetError(
            f"{source}: 'actions' leave [-1, 1] (max |a| = {float(np.abs(arrays['actions']).max()):.4g}); "
            "expoft's environments take normalised actions: rescale them, or pass --rescale-actions"
        )
    return make_dataset(arrays, meta, source)


def export_robomimic(dataset: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write an expoft dataset as a robomimic HDF5 file (observation as ``obs/state``), atomically;
    an existing ``out`` is refused unless ``overwrite``."""
    import h5py

    ds = load_dataset(dataset)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another path or pass --overwrite")
    env = ds.meta.get("env")
    env_args = {"env_name": env, "type": ROBOMIMIC_GYM_ENV, "env_kwargs": {"task": ds.meta.get("task")}}
    starts, stops = ds.episode_bounds()

    def write(handle) -> None:
        with h5py.File(handle, "w") as f:
            data = f.create_group("data")
            data.attrs["total"] = ds.num_transitions
            data.attrs["env_args"] = json.dumps(env_args)
            data.attrs["expoft_meta"] = json.dumps(
                {k: v for k, v in ds.meta.items() if k not in ("shapes", "dtypes", "sha256")}
            )
            successful = []
            for e, (a, b) in enumerate(zip(starts, stops, strict=True)):
                demo = data.create_group(f"demo_{e}")
                demo.attrs["num_samples"] = int(b - a)
                demo.create_dataset("actions", data=ds.actions[a:b])
                demo.create_dataset(f"obs/{STATE_KEY}", data=ds.observations[a:b])
                demo.create_dataset(f"next_obs/{STATE_KEY}", data=ds.next_observations[a:b])
                if ds.rewards is not None and ds.terminals is not None:
                    demo.create_dataset("rewards", data=ds.rewards[a:b])
                    demo.create_dataset("dones", data=ds.terminals[a:b].astype(np.uint8))
                for field in EXTRA_FIELDS:
                    value = getattr(ds, field)
                    if value is not None:
                        demo.create_dataset(f"expoft/{field}", data=value[a:b])
                if ds.episode_success is not None and ds.episode_success[e]:
                    successful.append(f"demo_{e}")
            names = [f"demo_{e}" for e in range(len(starts))]
            f.create_dataset("mask/train", data=np.array(names, dtype="S"))
            if ds.episode_success is not None:
                f.create_dataset(f"mask/{SUCCESS_MASK}", data=np.array(successful, dtype="S"))

    return atomic_write(out, write)

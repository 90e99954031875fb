"""A pytree of arrays in one ``.npz`` (no pickle), keyed by each array's path in the tree.

Restoring needs a template of the same structure (e.g. a freshly created agent or model): it
says where each array goes, and every shape and dtype is checked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from numpy.typing import ArrayLike

from expoft.fileio import NpzError, atomic_write, read_npz


class CheckpointError(ValueError):
    """A checkpoint does not fit the agent it is restored into."""


def _flatten(tree: Any) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save_pytree(tree: Any, path: str | os.PathLike, **extra: ArrayLike) -> Path:
    """Write ``tree`` (plus ``extra`` arrays, e.g. the step) atomically to ``path``."""
    arrays = _flatten(tree)
    clash = set(arrays) & set(extra)
    if clash:
        raise ValueError(f"extra arrays clash with the tree: {sorted(clash)}")
    extra_arrays = {f"extra/{k}": np.asarray(v) for k, v in extra.items()}
    # (ignore: numpy's stub types savez's **kwargs as if they could fill its allow_pickle: bool)
    return atomic_write(path, lambda f: np.savez(f, **arrays, **extra_arrays))  # type: ignore[arg-type]


def load_pytree(template: Any, path: str | os.PathLike) -> tuple[Any, dict[str, np.ndarray]]:
    """Arrays of ``path`` placed into the structure of ``template``; returns ``(tree, extra)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        stored = read_npz(path)
    except NpzError as e:
        raise CheckpointError(str(e)) from e
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    restored = []
    for key_path, leaf in leaves:
        key = jax.tree_util.keystr(key_path)
        if key not in stored:
            raise CheckpointError(f"{path}: missing array {key}; was it written for another config?")
        value = stored[key]
        want = np.asarray(leaf)
        if value.shape != want.shape or value.dtype != want.dtype:
            raise CheckpointError(
                f"{path}: {key} has shape {value.shape} {value.dtype}, the agent expects {want.shape} {want.dtype}; "
                "was it written for another environment (observation/action size) or agent config?"
            )
        restored.append(jax.numpy.asarray(value))
    extra = {k.removeprefix("extra/"): v for k, v in stored.items() if k.startswith("extra/")}
    return jax.tree_util.tree_unflatten(treedef, restored), extra

"""`expoft data info`: episodes, transitions, success, action ranges and observation statistics."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from expoft.data.transitions import Dataset

log = logging.getLogger(__name__)


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

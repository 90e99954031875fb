"""Where an evaluation sits on a run's evaluation grid (shared by plots and bench tables)."""

from __future__ import annotations

import json
from pathlib import Path


def nominal_step(step: int, every: int | None, total: int | None, chunk: int) -> int:
    """The evaluation grid point an evaluation belongs to. A run evaluates as soon as its env step
    crosses a multiple of ``eval_every``, and with chunks of ``exec_len`` actions that is up to
    ``exec_len - 1`` steps later (1004 for 1000 with chunks of 5); the last evaluation, at or past
    ``env_steps``, is put at ``env_steps``. Runs of chunked and plain methods then share columns."""
    if total is not None and step >= total:
        return int(total)
    if every and step % every < chunk:
        return step - step % every
    return step


def run_grid(run_dir: str | Path) -> tuple[int | None, int | None, int]:
    """``eval_every``, ``env_steps`` and ``exec_len`` from a run folder's ``config.json`` (what
    :func:`nominal_step` needs); ``(None, None, 1)`` without a readable config, which keeps steps as
    they are."""
    try:
        cfg = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None, None, 1
    return cfg.get("eval_every"), cfg.get("env_steps"), (cfg.get("agent") or {}).get("exec_len", 1)

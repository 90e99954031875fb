"""The record an extended run keeps of where it came from (see expoft.train.extend).

Kept apart from extend.py (which needs the training code) so that readers of finished runs (the
bench's RunRecord, benchmarks/room.py) tell an extension from a run of its own grid by the same
record.
"""

from __future__ import annotations

import json
from pathlib import Path

RECORD = "extended.json"
"""What an extended run came from: ``{"from", "env_steps_before", "env_step", "cut", "time"}``
(``cut``: the online transitions its replay buffer held then; the last of them ends the cut
episode)."""


def extension_of(out: Path) -> dict | None:
    """The extension record of the run in ``out``, or None for a run that was not extended."""
    path = Path(out) / RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        return {"from": str(record["from"]), "env_steps_before": int(record["env_steps_before"]),
                "env_step": int(record["env_step"]), "cut": int(record["cut"])}  # fmt: skip
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not an extension record ({e}); copy it again from its source") from None

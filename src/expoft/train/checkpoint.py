"""Checkpoints: every array of an agent pytree in one ``.npz`` (no pickle), keyed by its path.

Restoring needs a template agent of the same config (``EXPOAgent.create(...)``): its
structure says where each array goes, and every shape and dtype is checked.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from expoft.fileio import NpzError, atomic_write, read_npz
from expoft.pytree_io import CheckpointError, load_pytree, save_pytree

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Whole-run checkpoints: what `expoft finetune --resume` needs to continue exactly.

FORMAT_VERSION = 1
"""Bumped whenever the checkpoint layout changes; older or newer checkpoints are refused."""
STAGES = {"pretrain": "pretraining", "offline": "offline phase"}
"""The stages before RL that have checkpoints of their own (file prefix: name), in the order a
run takes them."""


class SaveTimer:
    """When a stage before RL is due its next checkpoint: once ``seconds`` of wall time have
    passed since the last save (or since the timer started)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.perf_counter()

    def due(self) -> bool:
        return time.perf_counter() - self.last >= self.seconds

    def saved(self) -> None:
        self.last = time.perf_counter()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class PendingCheckpoint:
    """A checkpoint taken but not yet written (:meth:`CheckpointStore.prepare`)."""

    step: int
    agent: Any
    """The agent as of ``step``: its arrays are immutable, the run goes on with new ones."""
    segment: dict[str, Any] | None
    """The online transitions added since the previous prepared checkpoint, copied out."""
    total_added: int
    capacity: int
    state: dict
    config: dict | None


class CheckpointStore:
    """The ``checkpoints/`` folder of a run.

    One checkpoint at env step N is ``agent_N.npz`` (every array of the agent: parameters,
    optimiser states, its PRNG key) and ``state_N.json`` (loop counters, the sampling RNG, the
    metrics file's length, the dataset checksum, and the replay segments with their sha256).
    The online replay data lives in ``buffer/online_<first>_<end>.npz``: each save writes only
    what was added since the previous one. Every file is written atomically (temporary name,
    fsync, rename) and the state file last, so a checkpoint exists only once all its parts do;
    a state whose parts are missing or do not match their sha256 is skipped with a warning.
    The newest ``keep`` checkpoints are kept; buffer segments go when no kept checkpoint needs them.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.dir = Path(directory)
        self.keep = keep
        self._segments: list[dict] = []  # segments of the buffer as saved so far
        self._prepared_to = 0  # transitions a prepared checkpoint holds (written or not yet)

    # ---- writing -----------------------------------------------------------
    def save(self, step: int, agent: Any, buffer, state: dict, config: dict | None = None) -> Path:
        """Write a checkpoint; ``buffer`` must be between episodes (its success flags final);
        ``config``: the run's resolved config, kept with the checkpoint."""
        return self.write(self.prepare(step, agent, buffer, state, config))

    def prepare(self, step: int, agent: Any, buffer, state: dict, config: dict | None = None) -> PendingCheckpoint:
        """What a checkpoint at ``step`` holds, taken now (the buffer's new transitions copied out),
        so that :meth:`write` may run later, in another thread, while the run goes on. Pending
        checkpoints must be written in the order they were prepared."""
        segment = buffer.segment(self._prepared_to) if buffer.total_added > self._prepared_to else None
        self._prepared_to = buffer.total_added
        return PendingCheckpoint(step, agent, segment, buffer.total_added, buffer.capacity, state, config)

    def write(self, pending: PendingCheckpoint) -> Path:
        """Write a prepared checkpoint (see :meth:`prepare`); the state file last."""
        try:
            return self._write(pending)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            previous = self.latest_step()
            kept = f"the checkpoint of step {previous} is intact" if previous is not None else "no earlier checkpoint"
            raise OSError(
                errno.ENOSPC,
                f"no space left on device while writing the checkpoint of env step {pending.step} into {self.dir} "
                f"({kept}); free some space, then continue with `expoft finetune --resume {self.dir.parent}`",
            ) from e

    def _write(self, pending: PendingCheckpoint) -> Path:
        arrays, step = pending.segment, pending.step
        if arrays is not None:
            name = f"online_{int(arrays['start'])}_{int(arrays['end'])}.npz"
            path = atomic_write(self.dir / "buffer" / name, lambda f: np.savez(f, **arrays))
            self._segments.append(
                {
                    "file": f"buffer/{name}",
                    "start": int(arrays["start"]),
                    "end": int(arrays["end"]),
                    "sha256": file_sha256(path),
                }  # fmt: skip
            )
        # Only the segments whose transitions the ring still holds are needed to rebuild it.
        needed = [s for s in self._segments if s["end"] > pending.total_added - pending.capacity]
        agent_path = save_pytree(
            pending.agent, self.dir / f"agent_{step}.npz", env_step=np.int64(step),
            format_version=np.int64(FORMAT_VERSION),
        )  # fmt: skip
        record = {
            "format_version": FORMAT_VERSION,
            "env_step": step,
            "agent": {"file": agent_path.name, "sha256": file_sha256(agent_path)},
            "buffer": {"total_added": pending.total_added, "segments": needed},
            "state": pending.state,
            "config": pending.config,
        }
        path = atomic_write(self.dir / f"state_{step}.json", lambda f: f.write(json.dumps(record).encode()))
        self._prune()
        for stage in STAGES:
            self.drop_stage(stage)
        return path

    def _prune(self) -> None:
        steps = self.steps()
        for step in steps[: -self.keep]:
            (self.dir / f"state_{step}.json").unlink(missing_ok=True)
            (self.dir / f"agent_{step}.npz").unlink(missing_ok=True)
        needed: set[str] = set()
        for step in steps[-self.keep :]:
            record = self._read_record(step)
            if record is not None:
                needed.update(s["file"] for s in record["buffer"]["segments"])
        self._segments = [s for s in self._segments if s["file"] in needed]
        for path in (self.dir / "buffer").glob("online_*.npz"):
            if f"buffer/{path.name}" not in needed:
                path.unlink()

    # ---- before RL: pretraining and the offline phase --------------------------
    # Before RL there is no env step and no replay data. A checkpoint of a stage (``pretrain``:
    # imitation steps done; ``offline``: offline update calls done) is the agent
    # (``<stage>_agent_<done>.npz``, with the pretraining's loss of every step) and
    # ``<stage>_state.json`` (what the run needs to continue: steps done, the RNG, the run's
    # config and dataset checksum). The state file is written last and names its agent file, so a
    # kill at any moment leaves a usable pair. A stage's checkpoint supersedes the earlier
    # stage's, and the first online checkpoint supersedes both.

    def save_stage(self, stage: str, agent: Any, done: int, record: dict, losses: np.ndarray) -> Path:
        """Write the checkpoint of ``stage`` after ``done`` of its steps; ``record``: what the
        run needs to continue (kept in the state file); ``losses``: the pretraining's per step."""
        self._check_stage(stage)
        agent_path = save_pytree(
            agent, self.dir / f"{stage}_agent_{done}.npz", losses=np.asarray(losses, np.float32),
            format_version=np.int64(FORMAT_VERSION),
        )  # fmt: skip
        state = {
            **record,
            "format_version": FORMAT_VERSION,
            "done": done,
            "agent": {"file": agent_path.name, "sha256": file_sha256(agent_path)},
        }
        path = atomic_write(self.dir / f"{stage}_state.json", lambda f: f.write(json.dumps(state).encode()))
        for old in self.dir.glob(f"{stage}_agent_*.npz"):
            if old.name != agent_path.name:
                old.unlink()
        for earlier in list(STAGES)[: list(STAGES).index(stage)]:
            self.drop_stage(earlier)
        return path

    def stage_record(self, stage: str) -> dict | None:
        """The state of ``stage``'s checkpoint (see :meth:`save_stage`), or None (with a warning
        when there is one that cannot be used)."""
        self._check_stage(stage)
        if not (self.dir / f"{stage}_state.json").exists():
            return None
        record = self._read_json(f"{stage}_state.json")
        problem = self._problem(record, has_buffer=False)
        if problem is not None:
            log.warning("the %s checkpoint in %s is unusable: %s", STAGES[stage], self.dir, problem)
            return None
        return record

    def restore_stage(self, record: dict, template: Any) -> tuple[Any, np.ndarray]:
        """The agent and the pretraining's per-step losses of a stage checkpoint."""
        agent, extra = load_pytree(template, self.dir / record["agent"]["file"])
        return agent, extra["losses"]

    def drop_stage(self, stage: str) -> None:
        """Remove the checkpoint of ``stage``."""
        self._check_stage(stage)
        (self.dir / f"{stage}_state.json").unlink(missing_ok=True)
        for path in self.dir.glob(f"{stage}_agent_*.npz"):
            path.unlink()

    @staticmethod
    def _check_stage(stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {list(STAGES)}")

    # ---- reading -----------------------------------------------------------
    def steps(self) -> list[int]:
        """Env steps of the checkpoints present (valid or not), oldest first."""
        found = []
        for path in self.dir.glob("state_*.json"):
            try:
                found.append(int(path.stem.removeprefix("state_")))
            except ValueError:
                continue
        return sorted(found)

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def _read_record(self, step: int) -> dict | None:
        return self._read_json(f"state_{step}.json")

    def _read_json(self, name: str) -> dict | None:
        try:
            return json.loads((self.dir / name).read_text())
        except (OSError, ValueError):
            return None

    def _problem(self, record: dict | None, has_buffer: bool = True) -> str | None:
        """Why a checkpoint cannot be used, or None; ``has_buffer``: False for a pretraining
        checkpoint, which has no replay segments."""
        if record is None:
            return "its state file is unreadable or truncated"
        version = record.get("format_version")
        if version != FORMAT_VERSION:
            return f"it has checkpoint format {version}, this expoft reads format {FORMAT_VERSION}"
        parts = [record["agent"], *(record["buffer"]["segments"] if has_buffer else [])]
        for part in parts:
            path = self.dir / part["file"]
            if not path.exists():
                return f"{part['file']} is missing"
            if file_sha256(path) != part["sha256"]:
                return f"{part['file']} does not match its sha256 (corrupt or partly written)"
        return None

    def latest_valid(self) -> dict | None:
        """The newest usable checkpoint record, warning about every newer one that is not."""
        steps = self.steps()
        for i in reversed(range(len(steps))):
            record = self._read_record(steps[i])
            problem = self._problem(record)
            if problem is None:
                return record
            step = steps[i]
            fallback = f"trying the one of step {steps[i - 1]}" if i else "no earlier checkpoint left"
            log.warning("checkpoint of env step %d is unusable: %s; %s", step, problem, fallback)
        return None

    def restore(self, record: dict, template: Any, buffer) -> Any:
        """Agent of ``record`` (see :meth:`latest_valid`) and its replay data put back into ``buffer``;
        later saves continue from there."""
        agent, extra = load_pytree(template, self.dir / record["agent"]["file"])
        if int(extra.get("format_version", -1)) != FORMAT_VERSION:
            raise CheckpointError(
                f"{record['agent']['file']}: checkpoint format {extra.get('format_version')}, this expoft reads "
                f"format {FORMAT_VERSION}; continue the run with the expoft version that wrote it"
            )
        for segment in record["buffer"]["segments"]:
            try:
                buffer.restore_segment(read_npz(self.dir / segment["file"]))
            except NpzError as e:
                raise CheckpointError(str(e)) from e
        if buffer.total_added != record["buffer"]["total_added"]:
            raise CheckpointError(
                f"replay segments restore {buffer.total_added} transitions, the checkpoint says "
                f"{record['buffer']['total_added']}"
            )
        self._segments = list(record["buffer"]["segments"])
        self._prepared_to = buffer.total_added
        # Newer checkpoints were unusable; the run replays from here. Keep their files for a look.
        for step in self.steps():
            if step > record["env_step"]:
                aside = self.dir / "unusable"
                aside.mkdir(exist_ok=True)
                for name in (f"state_{step}.json", f"agent_{step}.npz"):
                    if (self.dir / name).exists():
                        os.replace(self.dir / name, aside / name)
        for path in self.dir.glob(".*.tmp"):
            path.unlink()
        for path in (self.dir / "buffer").glob(".*.tmp"):
            path.unlink()
        return agent

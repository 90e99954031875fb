"""A bench folder: bench.json (what was planned), the lock one bench holds, a run's state
(finished, resume, restart), each attempt's record (bench_run.json) and log tails."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from expoft.bench.plan import PlannedRun
from expoft.fileio import move_aside, write_json

if TYPE_CHECKING:  # the data package imports MuJoCo/OGBench: only where demos are made
    pass


LOG_TAIL = 15
"""Lines of a failed run's log shown in the failure report."""


def log_tail(path: Path, lines: int = LOG_TAIL) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---------------------------------------------------------------------------
# running


def lock_folder(out: Path) -> int:
    """Hold DIR/.bench.lock (released when this process and every run it started have ended)."""
    fd = os.open(out / ".bench.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FileExistsError(
            f"another `expoft bench` is working in {out} (or runs it started are still going); wait for it, "
            "or end it and rerun this command to continue"
        ) from None
    return fd


BENCH_ENTRIES = ("bench.json", "runs", "logs", "report")


def only_finished_runs(runs: Path) -> bool:
    """Whether ``runs`` holds nothing but finished run folders (``METHOD/seedS/``, and their
    ``seedS.log``), copied in from another bench that ran the same commands: a new bench in the
    folder above adopts them (and warns if a config differs from its plan)."""
    entries = [e for method in runs.iterdir() if method.is_dir() for e in method.iterdir()]
    return bool(entries) and all(
        e.name.startswith("seed") and (e.is_dir() and run_state(e) == "finished" or e.is_file() and e.suffix == ".log")
        for e in entries
    )


def existing_bench(folder: Path, fix: str) -> dict | None:
    """The bench.json of the bench in ``folder``; None when the folder is missing, empty, or holds
    only finished runs copied in (:func:`only_finished_runs`). Any other folder without
    bench.json, or a bench.json that is not one, is an error that ends with ``fix`` (what the
    caller's user should do)."""
    if not folder.exists():
        return None
    path = folder / "bench.json"
    if not path.exists():
        others = sorted(p.name for p in folder.iterdir() if p.name != ".bench.lock")
        if others and not (others == ["runs"] and only_finished_runs(folder / "runs")):
            raise FileExistsError(f"{folder} is not empty and holds no bench.json ({', '.join(others[:5])}); {fix}")
        return None
    try:
        bench = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); move it away, or {fix}") from None
    if not isinstance(bench, dict) or not isinstance(bench.get("runs"), list) or "arguments" not in bench:
        raise ValueError(f"{path} lacks 'arguments' or 'runs', so `expoft bench` did not write it; {fix}")
    return bench


def same_runs(before: list[dict], after: list[dict]) -> bool:
    """Whether two benches' ``runs`` (as in bench.json) are the same runs: the same methods and
    seeds, each with the same config (``same_config``). Two benches whose arguments differ may
    still be one, e.g. a flag that has since become the default, given in one and not the other."""
    from expoft.train.rundir import same_config  # imports JAX: only where a bench is compared

    def by_label(runs: list[dict]) -> dict:
        return {(r.get("method"), r.get("seed")): r.get("config") for r in runs if isinstance(r, dict)}

    earlier, later = by_label(before), by_label(after)
    return bool(later) and earlier.keys() == later.keys() and all(same_config(earlier[k], later[k]) for k in later)


def prepare_folder(
    out: Path, arguments: dict, overwrite: bool, act: bool = True, runs: list[dict] | None = None
) -> dict | None:
    """Check --out; return the earlier bench.json when continuing that bench: one with the same
    arguments, or with other arguments that plan the same ``runs`` (:func:`same_runs`). With
    ``act``, an earlier bench with other arguments is moved aside (--overwrite); without, only
    errors."""
    old = existing_bench(out, "choose a new or empty --out")
    if old is None:
        return None
    before = old.get("arguments", {})
    if before == arguments:
        if overwrite and act:
            print(f"{out} holds a bench with the same arguments: continuing it (--overwrite changes nothing here)")
        return old
    diffs = "; ".join(
        f"{key}: {before.get(key)!r} -> {arguments.get(key)!r}"
        for key in sorted(set(before) | set(arguments))
        if before.get(key) != arguments.get(key)
    )
    if runs is not None and same_runs(old["runs"], runs):
        if act:
            print(f"{out} holds a bench with other arguments ({diffs}) that plans the same runs with the same "
                  "configs: continuing it (bench.json records these arguments from now on)", flush=True)  # fmt: skip
        return old
    if not overwrite:
        raise FileExistsError(
            f"{out} holds a bench with other arguments ({diffs}). Rerun its own command to continue it "
            f"({old.get('command', '?')}), choose another --out, or pass --overwrite to start again "
            f"(the old bench is moved to {out}/replaced-<time>/, nothing is deleted)"
        )
    if not act:
        return None
    dest = move_aside(out, BENCH_ENTRIES)
    print(f"--overwrite: the earlier bench ({diffs}) was moved to {dest}/")
    return None


def run_state(run_dir: Path) -> str:
    """finished, resume (a checkpoint, or one of a stage before RL, to continue from), restart
    (killed before its first checkpoint) or start."""
    if (run_dir / "summary.json").exists():
        return "finished"
    if not (run_dir / "config.json").exists():
        return "start"
    checkpoints = run_dir / "checkpoints"
    # state_<step>.json: online; <stage>_state.json: pretraining or the offline phase (read by path:
    # this process does not import JAX)
    if any(checkpoints.glob("state_*.json")) or any(checkpoints.glob("*_state.json")):
        return "resume"
    return "restart"


def record_attempt(run: PlannedRun, attempt: dict, stopped: bool = False) -> dict:
    """Append the attempt to RUN_DIR/bench_run.json; return the record. ``stopped``: the bench
    ended the run (interrupted), which is not a failure of the run."""
    path = run.run_dir / "bench_run.json"
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        record = {"method": run.method, "seed": run.seed, "attempts": []}
    if stopped:
        attempt = {**attempt, "stopped_by_bench": True}
    record["attempts"].append(attempt)
    record["cpu_seconds"] = round(sum(a["cpu_seconds"] for a in record["attempts"]), 2)
    record["wall_seconds"] = round(sum(a["wall_seconds"] for a in record["attempts"]), 2)
    finished = (run.run_dir / "summary.json").exists()
    record["status"] = "finished" if finished and attempt["returncode"] == 0 else "stopped" if stopped else "failed"
    if record["status"] == "failed":
        record["log_tail"] = log_tail(run.log)
    else:
        record.pop("log_tail", None)
    write_json(path, record)
    return record

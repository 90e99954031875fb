"""Serving a run's online phase to actors: `expoft learner` (one actor, ``learner.LearnerServer``,
or several, ``fleet.FleetServer``, optionally started on Ray)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from expoft.actorlearner.fleet import FleetServer
from expoft.actorlearner.learner import MODES, LearnerServer
from expoft.fileio import atomic_write
from expoft.train.online_loop import OnlineLearner

log = logging.getLogger(__name__)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); port 0 picks a free one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:8765), got {listen!r}")
    return host, int(port)


def _run_id(run_dir: Path) -> str:
    """The run's identity, kept in RUN/learner.json: weights from another run are refused."""
    path = run_dir / "learner.json"
    if path.exists():
        return json.loads(path.read_text())["run_id"]
    run_id = uuid.uuid4().hex
    atomic_write(path, lambda f: f.write(json.dumps({"run_id": run_id}).encode()))
    return run_id


def serve_run(cfg, out: str | Path, listen: str = "127.0.0.1:8765", *, mode: str = "sync", actors: int = 1,
              ray: bool = False, ray_address: str | None = None, ray_cpus_per_actor: float = 1.0,
              overwrite: bool = False, resume: bool = False, progress: bool = True,
              on_listening: Callable[[int], None] | None = None, **server_args: Any) -> dict:  # fmt: skip
    """Pretrain (or resume) the run in ``out`` as `expoft finetune` would, then serve its online
    phase to actors at ``listen`` until the env-step budget is collected; the run's summary.
    ``actors`` > 1: that many actor processes at once (async mode, ``expoft.actorlearner.fleet``).
    ``ray``: start the ``actors`` on Ray (a local Ray, or the cluster at ``ray_address``); the
    summary then lists each one's decisions and latencies under ``actors``.
    ``cfg`` is ignored with ``resume`` (the run's own config.json is used)."""
    from expoft.train.finetune import finetune
    from expoft.train.finetune import resume as resume_run

    if mode not in MODES:
        raise ValueError(f"--mode must be one of {MODES}, got {mode!r}")
    if actors < 1 or (actors > 1 and mode != "async"):
        raise ValueError(f"--actors must be 1, or more with --mode async; got --actors {actors} --mode {mode}")
    host, port = parse_listen(listen)
    if ray:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ValueError("--ray needs Ray: pip install 'expoft[ray]' (or ray==2.60.0)")

    def online(learner: OnlineLearner) -> dict:
        run_id = _run_id(learner.run.path)
        if actors > 1:
            server: LearnerServer = FleetServer(learner, run_id, host, port, actors=actors, **server_args)
        else:
            server = LearnerServer(learner, run_id, host, port, mode=mode, **server_args)
        log.info("learner of %s listening on ws://%s:%d (%s mode, %d actor%s)", learner.run.path, host, server.port,
                 mode, actors, "s" * (actors > 1))  # fmt: skip
        if on_listening is not None:
            on_listening(server.port)
        if not ray:
            return server.serve()
        from expoft.actorlearner.ray_actors import RayActors, reachable_url

        # training videos (--video-every) into the run's folder, not into a Ray worker's working folder
        options = {"video_dir": str(learner.run.path.resolve() / "actor-videos")}
        fleet = RayActors(reachable_url(host, server.port), actors, ray_address, ray_cpus_per_actor, options).start()
        summary = server.serve()
        return {**summary, "actors": fleet.results()}

    if resume:
        return resume_run(out, progress=progress, online=online)
    return finetune(cfg, out, overwrite=overwrite, progress=progress, online=online)

"""The learner process: owns the agent, the replay buffer, the run folder and its checkpoints
(the files of `expoft finetune`), and serves an actor over a websocket.

Sync mode (the default): the learner takes each decision the actor executed, makes the update
calls due (the run's own schedule), and answers with the weights when they changed; the actor
waits for that answer before its next decision. With one actor this is the single-process loop
cut in two, and logs the same metrics (CPU runs are deterministic).

Async mode: the learner stores each decision and answers at once, with the newest weights; a
thread of its own makes update calls continuously, as many as the run's schedule allows by then
and never more (it may lag behind when updates are slower than acting). The actor never waits
for an update.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websockets.exceptions
import websockets.sync.server

from expoft.actorlearner.messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL,
    ProtocolError,
    decision_from_message,
    decode,
    expect,
    field,
    weights_of,
)
from expoft.agents.common import update
from expoft.bases.wire import packb
from expoft.envs.ogbench_domains import get_domain
from expoft.fileio import atomic_write
from expoft.obs import PixelSpec
from expoft.train.online_loop import OnlineLearner
from expoft.train.rundir import stop_if_diverged, to_jsonable

log = logging.getLogger(__name__)

MODES = ("sync", "async")


class LearnerServer:
    """Serve ``learner`` to one actor at a time until the run's env-step budget is spent."""

    def __init__(self, learner: OnlineLearner, run_id: str, host: str = "127.0.0.1", port: int = 0, *,
                 mode: str = "sync", hello_timeout_s: float = 30.0, idle_timeout_s: float = 600.0,
                 ping_s: float = 5.0, max_message_bytes: int = MAX_MESSAGE_BYTES):  # fmt: skip
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.learner, self.run_id, self.mode = learner, run_id, mode
        self.lock = threading.Lock()
        """Async mode: the learner's state is shared by the connection and the update thread."""
        self._stop_learning = threading.Event()
        self._learning: threading.Thread | None = None
        self.hello_timeout_s, self.idle_timeout_s = hello_timeout_s, idle_timeout_s
        self.session: str | None = None
        """The actor process served last: another one cannot continue its episode."""
        self.summary: dict | None = None
        self.failure: BaseException | None = None
        self.finished = threading.Event()
        self._busy = threading.Lock()
        self._random: Any = None  # the next decision's random chunk, drawn once
        cfg = learner.cfg
        self.obs_dim = None if isinstance(cfg.obs_spec, PixelSpec) else int(cfg.obs_spec)
        self.action_dim, self.exec_len = get_domain(cfg.env).action_dim, cfg.agent.exec_len
        self._server = websockets.sync.server.serve(
            self._handle, host, port, max_size=max_message_bytes, ping_interval=ping_s, ping_timeout=4 * ping_s,
            compression=None,
        )  # fmt: skip

    @property
    def port(self) -> int:
        return self._server.socket.getsockname()[1]

    def serve(self) -> dict:
        """Serve until the run has finished; its summary."""
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        if self.mode == "async":
            self._learning = threading.Thread(target=self._learn_continuously, daemon=True)
            self._learning.start()
        self.finished.wait()
        self._stop_learning.set()
        self._last_answers()
        self._server.shutdown()
        thread.join()
        if self.failure is not None:
            raise self.failure
        assert self.summary is not None
        return self.summary

    def _last_answers(self) -> None:
        """Before the server shuts down: one actor was told the run is done; nothing else waits."""

    # ---- one actor's connection ------------------------------------------------------------------
    def _handle(self, ws) -> None:
        refusal = self._serve_session(ws)
        if refusal is not None:
            self._refuse(ws, refusal)
        if self.failure is not None:  # after the actor was told why
            self.finished.set()

    def _serve_session(self, ws) -> str | None:
        """Serve one connection; why it is refused, if it is (its actor slot is free by then: the
        sender may connect again at once)."""
        try:
            self._session(ws)
        except (websockets.exceptions.ConnectionClosed, TimeoutError) as exc:
            log.warning("actor connection lost: %s", exc)
        except ProtocolError as exc:
            return str(exc)
        except BaseException as exc:  # the learner itself failed: the run stops, the actor is told why
            self.failure = exc
            return f"the learner failed: {type(exc).__name__}: {exc}"
        return None

    def _hello(self, ws) -> dict:
        hello = expect(self._recv(ws, self.hello_timeout_s), "hello")
        if field(hello, "protocol", int) != PROTOCOL:
            raise ProtocolError(f"protocol {hello['protocol']} is not this learner's ({PROTOCOL}); update expoft")
        return hello

    def _refuse(self, ws, message: str) -> None:
        log.warning("refused: %s", message)
        try:
            ws.send(packb({"type": "error", "message": message}))
            ws.close()
        except websockets.exceptions.ConnectionClosed:
            pass

    def _recv(self, ws, timeout: float) -> dict:
        return decode(ws.recv(timeout=timeout))

    def _learn_continuously(self) -> None:
        """Async mode: update calls, one after another, as far as the schedule allows by now; the
        batches are drawn under the lock, the update itself runs outside it."""
        learner = self.learner
        try:
            while not self._stop_learning.is_set():
                with self.lock:
                    ready = not learner.done and learner.state.update_calls < learner.calls_due
                    if ready:
                        agent, (pool, base_batch) = learner.agent, learner.draw()
                        n = learner.state.update_calls + 1
                if not ready:
                    time.sleep(0.002)
                    continue
                t0 = time.perf_counter()
                new_agent, metrics = update(agent, pool._replace(last=None), base_batch, None)
                metrics = {k: float(v) for k, v in metrics.items()}
                with self.lock:
                    stop_if_diverged(metrics, agent, learner.run, f"update call {n}", f"last_finite_call{n}",
                                     {"env_step": learner.state.step})  # fmt: skip
                    learner.take_update(new_agent, metrics, time.perf_counter() - t0)
        except BaseException as exc:  # the run stops; the actor is told at its next message
            self.failure = exc
            self.finished.set()

    def _random_chunk(self):
        if self._random is None:
            self._random = self.learner.random_chunk()
        return self._random

    def _session(self, ws) -> None:
        if not self._busy.acquire(blocking=False):
            raise ProtocolError("this learner serves one actor at a time; another one is connected")
        try:
            self._one_actor(ws, self._hello(ws))
        finally:
            self._busy.release()

    def _one_actor(self, ws, hello: dict) -> None:
        learner = self.learner
        if hello.get("slot", 0) != 0:
            raise ProtocolError(f"actor slot {hello['slot']!r}: this learner serves one actor (slot 0); start it "
                                "with --actors N for several")  # fmt: skip
        session = field(hello, "session", str)
        if session != self.session:
            with self.lock:  # async: the update thread samples the buffer
                learner.drop_open_episode(f"actor {self.session} left it unfinished; actor {session} took over")
            self.session = session
        with self.lock:
            actor_version = learner.version
            welcome = {
                "type": "welcome", "protocol": PROTOCOL, "run_id": self.run_id, "config": to_jsonable(learner.cfg),
                "step": learner.state.step, "episodes": learner.state.episodes, "durable_step": learner.durable_step,
                "version": actor_version, "weights": weights_of(learner.agent), "random_chunk": self._random_chunk(),
                "done": learner.done,
            }  # fmt: skip
        ws.send(packb(welcome))
        while not learner.done:
            message = self._recv(ws, self.idle_timeout_s)
            seq = field(expect(message, "decision"), "seq", int)
            if seq > learner.state.step:
                raise ProtocolError(f"the decision at env step {seq} arrived before the one at {learner.state.step}")
            if seq == learner.state.step:  # an older one is a resend after a lost ack: answered, not taken again
                decision = decision_from_message(message, self.obs_dim, self.action_dim, self.exec_len)
                with self.lock:
                    learner.absorb(decision, learn=self.mode == "sync")
                self._random = None
                if learner.done:
                    self._stop_learning.set()
                    if self._learning is not None:
                        self._learning.join()
                    self.summary = learner.finish()
            with self.lock:
                agent, version = learner.agent, learner.version
                reply = {"type": "ack", "seq": seq, "version": version, "done": learner.done,
                         "durable_step": learner.durable_step, "weights": None,
                         "random_chunk": None if learner.done else self._random_chunk()}  # fmt: skip
            if version != actor_version:
                reply["weights"], actor_version = weights_of(agent), version
            ws.send(packb(reply))
        self.finished.set()


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); port 0 picks a free one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:8765), got {listen!r}")
    return host, int(port)


def check_learnable(cfg, mode: str = "sync") -> None:
    """What the learner-actor split does not carry yet, refused before anything is written."""
    if cfg.video_every:
        raise ValueError(
            "--video-every: training videos are filmed where the environment runs; the actor keeps no run "
            "folder yet. Set --video-every 0 (evaluate with `expoft eval --video`)"
        )
    if cfg.external_base is not None:
        raise ValueError("--external-base with a learner is not supported yet: run `expoft finetune` for it")
    if mode == "async" and cfg.expo.target_cache_refresh is not None:
        raise ValueError("--target-cache-refresh with an async learner is not supported yet: use --mode sync")


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
    from expoft.actorlearner.fleet import FleetServer
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
    if not resume:
        check_learnable(cfg, mode)

    def online(learner: OnlineLearner) -> dict:
        check_learnable(learner.cfg, mode)
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

        fleet = RayActors(reachable_url(host, server.port), actors, ray_address, ray_cpus_per_actor).start()
        summary = server.serve()
        return {**summary, "actors": fleet.results()}

    if resume:
        return resume_run(out, progress=progress, online=online)
    return finetune(cfg, out, overwrite=overwrite, progress=progress, online=online)

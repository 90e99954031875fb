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

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import websockets.exceptions
import websockets.sync.server

from expoft.actorlearner.messages import (
    BUSY,
    MAX_MESSAGE_BYTES,
    PROTOCOL,
    Busy,
    ProtocolError,
    decision_from_message,
    decode,
    expect,
    field,
    weights_of,
)
from expoft.bases.wire import packb
from expoft.envs.ogbench_domains import get_domain
from expoft.obs import PixelSpec
from expoft.train.build import next_base_samples, update_on
from expoft.train.checkpoint import PendingCheckpoint
from expoft.train.external import step_seed
from expoft.train.online_loop import OnlineLearner
from expoft.train.rundir import stop_if_diverged, to_jsonable

log = logging.getLogger(__name__)

MODES = ("sync", "async")
CHECKPOINT_WRITER = "expoft-checkpoint-writer"
"""The name of an asynchronous learner's thread that writes checkpoints."""


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
        """Async mode: the update thread stops; the evaluation thread makes what is queued, then stops."""
        self._learning: threading.Thread | None = None
        self._evaluating: threading.Thread | None = None
        self._writing: threading.Thread | None = None
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
            self.learner.defer_evaluations = self.learner.defer_checkpoints = True
            self._learning = threading.Thread(target=self._learn_continuously, daemon=True)
            self._evaluating = threading.Thread(target=self._evaluate_continuously, daemon=True)
            self._writing = threading.Thread(target=self._write_checkpoints_continuously, daemon=True,
                                             name=CHECKPOINT_WRITER)  # fmt: skip
            for background in (self._learning, self._evaluating, self._writing):
                background.start()
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

    def _serve_session(self, ws) -> ProtocolError | None:
        """Serve one connection; why it is refused, if it is (its actor slot is free by then: the
        sender may connect again at once)."""
        try:
            self._session(ws)
        except (websockets.exceptions.ConnectionClosed, TimeoutError) as exc:
            log.warning("actor connection lost: %s", exc)
        except ProtocolError as exc:
            return exc
        except BaseException as exc:  # the learner itself failed: the run stops, the actor is told why
            self.failure = exc
            return ProtocolError(f"the learner failed: {type(exc).__name__}: {exc}")
        return None

    def _hello(self, ws) -> dict:
        hello = expect(self._recv(ws, self.hello_timeout_s), "hello")
        if field(hello, "protocol", int) != PROTOCOL:
            raise ProtocolError(f"protocol {hello['protocol']} is not this learner's ({PROTOCOL}); update expoft")
        return hello

    def _refuse(self, ws, refusal: ProtocolError) -> None:
        log.warning("refused: %s", refusal)
        try:
            ws.send(packb({"type": "error", "message": str(refusal), "retry": isinstance(refusal, Busy)}))
            ws.close()
        except websockets.exceptions.ConnectionClosed:
            pass

    def _recv(self, ws, timeout: float) -> dict:
        return decode(ws.recv(timeout=timeout))

    def _learn_continuously(self) -> None:
        """Async mode: update calls, one after another, as far as the schedule allows by now; the
        batches are drawn under the lock, the base samples from outside (an external base, the
        target-candidate cache) and the update itself outside it."""
        learner = self.learner
        external = learner.external
        try:
            while not self._stop_learning.is_set():
                with self.lock:
                    ready = not learner.done and learner.state.update_calls < learner.calls_due
                    if ready:
                        agent, (pool, base_batch) = learner.agent, learner.draw()
                        n, drawn = learner.state.update_calls + 1, learner.buffer.total_added
                        seed = None if external is None else step_seed(learner.cfg, learner.state.step, salt=n)
                if not ready:
                    time.sleep(0.002)
                    continue
                t0 = time.perf_counter()
                next_base = next_base_samples(agent, pool, external=external, external_seed=seed,
                                              cache=learner.cache, call=n, total_added=drawn)  # fmt: skip
                new_agent, metrics = update_on(agent, pool, base_batch, next_base)
                with self.lock:
                    stop_if_diverged(metrics, agent, learner.run, f"update call {n}", f"last_finite_call{n}",
                                     {"env_step": learner.state.step})  # fmt: skip
                    learner.take_update(new_agent, metrics, time.perf_counter() - t0)
        except BaseException as exc:  # the run stops; the actor is told at its next message
            self.failure = exc
            self.finished.set()

    def _evaluate_continuously(self) -> None:
        """Async mode: the queued evaluations (``OnlineLearner.evaluations_due``), in order, outside
        the lock: actors and update calls go on meanwhile."""
        learner = self.learner

        def evaluate(job: tuple[int, Any, bool]) -> None:
            step, agent, last = job
            result = learner.evaluation(agent, last)
            with self.lock:
                learner.evaluations_due.pop(0)
                learner.record_evaluation(step, result)

        self._drain(learner.evaluations_due, evaluate, 0.01)

    def _write_checkpoints_continuously(self) -> None:
        """Async mode: the checkpoints taken under the lock (``OnlineLearner.checkpoints_due``),
        written in order outside it; each becomes the durable one once it is on disk."""
        learner = self.learner

        def write(pending: PendingCheckpoint) -> None:
            learner.store.write(pending)
            with self.lock:
                learner.checkpoints_due.pop(0)
                learner.checkpoint_durable(pending)

        self._drain(learner.checkpoints_due, write, 0.005)

    def _drain(self, queue: list, work: Callable[[Any], None], idle_s: float) -> None:
        """A background thread's loop: ``work`` on the head of ``queue`` (which ``work`` pops, under
        the lock, once done) until the run stops and nothing is queued."""
        try:
            while True:
                with self.lock:
                    job = queue[0] if queue else None
                if job is None:
                    if self._stop_learning.is_set():
                        return
                    time.sleep(idle_s)
                    continue
                work(job)
        except BaseException as exc:  # the run stops; the actor is told at its next message
            self.failure = exc
            self.finished.set()

    def _stop_background(self) -> None:
        """The run's budget is collected: stop updating, make the evaluations and write the
        checkpoints still queued (the last evaluation among them); the final checkpoint is then
        written in place. Not under the lock: the threads take it."""
        self._stop_learning.set()
        for thread in (self._learning, self._evaluating, self._writing):
            if thread is not None:
                thread.join()
        self.learner.defer_checkpoints = False

    def _random_chunk(self):
        if self._random is None:
            self._random = self.learner.random_chunk()
        return self._random

    def _welcome(self, step: int, episodes: int, durable: int, random_chunk: Any, **extra: Any) -> dict:
        """The answer to an actor's hello (under the lock): where its actor stands (``step``,
        ``episodes``, ``durable``: the env step up to which a checkpoint holds its decisions), the
        run's config and the newest weights."""
        learner = self.learner
        return {"type": "welcome", "protocol": PROTOCOL, "run_id": self.run_id, "config": to_jsonable(learner.cfg),
                **extra, "step": step, "episodes": episodes, "durable_step": durable, "version": learner.version,
                "weights": weights_of(learner.agent), "random_chunk": random_chunk, "done": learner.done}  # fmt: skip

    def _ack(self, seq: int, durable: int, random_chunk: Any) -> tuple[dict, Any]:
        """The answer to decision ``seq`` (under the lock) and the agent as of it; the weights go in
        with :meth:`_with_new_weights`, outside the lock (serialising them takes ~0.1 s)."""
        learner = self.learner
        reply = {"type": "ack", "seq": seq, "version": learner.version, "done": learner.done,
                 "durable_step": durable, "weights": None, "random_chunk": random_chunk}  # fmt: skip
        return reply, learner.agent

    @staticmethod
    def _with_new_weights(reply: dict, agent: Any, actor_version: int) -> int:
        """Put ``agent``'s weights into ``reply`` if the actor's are older; the actor's version now."""
        if reply["version"] != actor_version:
            reply["weights"], actor_version = weights_of(agent), reply["version"]
        return actor_version

    def _session(self, ws) -> None:
        if not self._busy.acquire(blocking=False):
            raise Busy(BUSY)
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
            welcome = self._welcome(learner.state.step, learner.state.episodes, learner.durable_step,
                                    self._random_chunk())  # fmt: skip
        actor_version = welcome["version"]
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
                    self._stop_background()
                    self.summary = learner.finish()
            with self.lock:
                reply, agent = self._ack(seq, learner.durable_step, None if learner.done else self._random_chunk())
            actor_version = self._with_new_weights(reply, agent, actor_version)
            ws.send(packb(reply))
        self.finished.set()

"""The actor process: runs the environment and acts with the newest weights the learner sent.

It learns the run's config from the learner (so it builds the same environment and agent), and
streams each executed decision; in sync mode it waits for the learner's answer (and new weights)
before the next decision, with a deadline and keepalive pings on every wait. A lost connection is
retried with backoff; an unanswered decision is sent again (the learner takes it once).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import websockets.exceptions
import websockets.sync.client

from expoft.actorlearner.messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL,
    ProtocolError,
    decision_message,
    expect,
    field,
    with_weights,
)
from expoft.bases.wire import packb, unpackb
from expoft.train.build import make_agent
from expoft.train.config import RunConfig
from expoft.train.online_loop import Decision, EnvSide, decide
from expoft.train.rundir import config_from_json

log = logging.getLogger(__name__)


class LearnerGone(RuntimeError):
    """The learner could not be reached within the retries."""


class Actor:
    """Act for the learner at ``url`` (ws://HOST:PORT) until its run has finished."""

    def __init__(self, url: str, *, name: str = "actor", answer_timeout_s: float = 600.0, retries: int = 10,
                 backoff_s: float = 0.5, ping_s: float = 5.0):  # fmt: skip
        self.url, self.name = url, name
        self.answer_timeout_s, self.retries, self.backoff_s, self.ping_s = answer_timeout_s, retries, backoff_s, ping_s
        self.ws: Any = None
        self.run_id: str | None = None
        self.cfg: RunConfig | None = None
        self.agent: Any = None
        self.side: EnvSide | None = None
        self.version = -1
        self.step = 0
        self.random_chunk = None
        self.unanswered: dict | None = None
        self.decisions = 0
        self.latencies: list[float] = []
        """Seconds from observation to chunk, per decision (the acting latency at the robot)."""

    # ---- connection ----------------------------------------------------------------------------
    def _connect(self) -> dict:
        """(Re)connect with backoff; the learner's welcome."""
        delay, last = self.backoff_s, None
        for attempt in range(self.retries + 1):
            try:
                self.ws = websockets.sync.client.connect(self.url, max_size=MAX_MESSAGE_BYTES, compression=None,
                                                         ping_interval=self.ping_s, ping_timeout=4 * self.ping_s,
                                                         open_timeout=10, legacy=True)  # fmt: skip
                self.ws.send(packb({"type": "hello", "protocol": PROTOCOL, "actor": self.name}))
                return expect(self._recv(30.0), "welcome")
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                last = exc
                log.warning("learner at %s not reachable (%s); retry %d/%d in %.1f s", self.url, exc, attempt + 1,
                            self.retries, delay)  # fmt: skip
                time.sleep(delay)
                delay = min(2 * delay, 30.0)
        raise LearnerGone(f"no learner at {self.url} after {self.retries} retries: {last}")

    def _recv(self, timeout: float) -> dict:
        raw = self.ws.recv(timeout=timeout)
        if not isinstance(raw, bytes):
            raise ProtocolError("messages are binary msgpack frames, got text")
        return unpackb(raw)

    def _welcome(self, welcome: dict) -> bool:
        """Take a welcome: config and weights of the run; whether the run has finished."""
        if field(welcome, "protocol", int) != PROTOCOL:
            raise ProtocolError(f"the learner speaks protocol {welcome['protocol']}, this actor {PROTOCOL}")
        run_id = field(welcome, "run_id", str)
        if self.run_id is None:
            self.run_id = run_id
            self.cfg = config_from_json(field(welcome, "config", dict))
            self.agent = make_agent(self.cfg)
        elif run_id != self.run_id:
            raise ProtocolError(f"the learner now serves run {run_id}, this actor acted for run {self.run_id}")
        self._take_weights(welcome)
        step = field(welcome, "step", int)
        if self.unanswered is not None and step == self.step + len(self.unanswered["rewards"]):
            self.step, self.unanswered = step, None  # taken before the connection dropped
        elif self.side is None or step != self.step:
            # a fresh actor, or a learner that went back to its checkpoint: start at its episode
            if self.side is not None:
                log.warning("the learner is at env step %d, this actor at %d: starting the learner's next episode",
                            step, self.step)  # fmt: skip
            assert self.cfg is not None
            self.side = EnvSide(self.cfg, field(welcome, "episodes", int))
            self.step, self.unanswered = step, None
        self.random_chunk = welcome.get("random_chunk")
        return field(welcome, "done", bool)

    def _take_weights(self, message: dict) -> None:
        weights = message.get("weights")
        if weights is not None:
            self.agent = with_weights(self.agent, weights)  # between decisions: the swap is atomic
            self.version = field(message, "version", int)

    def latency_ms(self) -> dict[str, float]:
        """Median and 99th percentile of the acting latency so far, in milliseconds."""
        ms = 1000 * np.asarray(self.latencies or [0.0])
        return {"act_latency_p50_ms": round(float(np.percentile(ms, 50)), 3),
                "act_latency_p99_ms": round(float(np.percentile(ms, 99)), 3)}  # fmt: skip

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> int:
        """Act until the learner says the run is done; the number of decisions taken."""
        done = self._welcome(self._connect())
        assert self.cfg is not None and self.side is not None
        try:
            while not done:
                if self.unanswered is None:
                    t0 = time.perf_counter()
                    chunk, edited, not_first = decide(self.cfg, self.agent, self.side.obs, self.step,
                                                      self.random_chunk)  # fmt: skip
                    act_seconds = time.perf_counter() - t0
                    self.latencies.append(act_seconds)
                    episode = self.side.episodes
                    transitions, ended, success = self.side.execute(chunk, self.step)
                    decision = Decision(transitions, ended, success, edited, not_first, act_seconds)
                    self.unanswered = decision_message(self.step, episode, self.version, decision)
                    self.decisions += 1
                try:
                    self.ws.send(packb(self.unanswered))
                    ack = expect(self._recv(self.answer_timeout_s), "ack")
                except (websockets.exceptions.ConnectionClosed, TimeoutError, OSError) as exc:
                    log.warning("lost the learner (%s); reconnecting", exc)
                    done = self._welcome(self._connect())
                    continue
                if field(ack, "seq", int) != self.unanswered["seq"]:
                    raise ProtocolError(f"the learner answered decision {ack['seq']}, not {self.unanswered['seq']}")
                self.step += len(self.unanswered["rewards"])
                self.unanswered = None
                self._take_weights(ack)
                self.random_chunk = ack.get("random_chunk")
                done = field(ack, "done", bool)
        finally:
            self.ws.close()
        return self.decisions

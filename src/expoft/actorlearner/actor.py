"""The actor process: runs the environment and acts with the newest weights the learner sent.

It learns the run's config from the learner (so it builds the same environment and agent), and
streams each executed decision; in sync mode it waits for the learner's answer (and new weights)
before the next decision, with a deadline and keepalive pings on every wait.

Nothing is lost when either side dies. The actor keeps every decision the learner has not yet
written into a checkpoint (its outbox; the learner's answers say up to which env step it has). A
lost connection is retried with backoff; then the learner's welcome says at which env step it
stands: a learner that went back to its newest checkpoint gets the outbox again from there (each
decision is taken once: they are numbered by env step), and this actor goes on with its episode.
A new actor process starts at the learner's episode; the learner drops the episode the dead one
left unfinished.

``robot``: the actor's own environment (``expoft actor --robot my_lab.arm:make``), e.g. a real arm
behind ``expoft.robot.interface.RobotEnv`` with ``expoft.robot.safety`` limits; by default the
run's simulator.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import websockets.exceptions
import websockets.sync.client

from expoft.actorlearner.messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL,
    Busy,
    ProtocolError,
    decision_message,
    decode,
    expect,
    field,
    transition_ids,
    with_weights,
)
from expoft.bases.wire import packb
from expoft.report.video import write_video
from expoft.train.build import make_agent
from expoft.train.config import RunConfig
from expoft.train.external import external_candidates
from expoft.train.online_loop import EnvSide, decide
from expoft.train.rundir import config_from_json

log = logging.getLogger(__name__)


class LearnerGone(ConnectionError):
    """The learner could not be reached within the retries (`expoft actor` exits 1 with this message)."""


def _steps(message: dict) -> int:
    return len(message["rewards"])


class VideoFolder:
    """Where an actor writes the training episodes it films (what ``RunDir.video`` is to a
    single-process run: the same names, ``episode_<n>.<gif|mp4>``)."""

    def __init__(self, path: Path):
        self.path = path

    def video(self, frames, name: str, step: int, fps: int = 20) -> Path:
        return write_video(frames, self.path / name, fps)


def check_person(cfg: RunConfig, robot: Any, intervener: Any) -> None:
    """Refuse a run that asks for the simulated person (``intervene`` scripted or keys: OGBench's
    oracle, which reads the simulator's state) on an actor with a robot of its own and no person."""
    if robot is not None and intervener is None and cfg.intervene in ("scripted", "keys"):
        raise ValueError(
            f"the learner's run asks for the simulated person (intervene={cfg.intervene!r}, as the demo preset "
            "does), which drives the simulator only: start the learner with --intervene none, or give this actor "
            "a person with --teleop"
        )


class Actor:
    """Act for the learner at ``url`` (ws://HOST:PORT) until its run has finished.

    ``journal``: a JSON-lines file that gets one line per executed decision (its env step, the
    episode, whether it ended it, and an id per transition): what this process handed over, to
    check against the learner's replay buffer."""

    def __init__(self, url: str, *, name: str = "actor", answer_timeout_s: float = 600.0, retries: int = 10,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0, ping_s: float = 5.0,
                 journal: str | Path | None = None,
                 robot: Callable[[RunConfig], Any] | None = None, intervener: Any = None, slot: int = 0,
                 hz: float | None = None, video_dir: str | Path | None = "actor-videos"):  # fmt: skip
        self.url, self.name, self.slot = url, name, slot
        """``slot``: this actor's place at a learner of several actors (``--actors N``): its own
        reset seeds, acting stream and numbering of decisions."""
        if retries < 0 or not 0 < backoff_s <= max_backoff_s:
            raise ValueError(f"actor: need retries >= 0 and 0 < backoff ({backoff_s} s) <= max backoff "
                             f"({max_backoff_s} s); got retries {retries}")  # fmt: skip
        self.answer_timeout_s, self.retries, self.backoff_s, self.ping_s = answer_timeout_s, retries, backoff_s, ping_s
        self.max_backoff_s = max_backoff_s
        """Reconnection waits double from ``backoff_s`` up to this: the longest a restarted learner
        may wait for its actor (a lab restarting its learner often may want a few seconds)."""
        self.session = uuid.uuid4().hex
        self.journal = None if journal is None else Path(journal)
        self.robot = robot
        """``robot(cfg) -> env``: this actor's own environment (a real arm behind
        ``expoft.robot.interface.RobotEnv``, with its safety limits) instead of the run's simulator."""
        if hz is not None and not hz > 0:
            raise ValueError(f"--hz must be > 0 (env steps per second), got {hz}")
        self.hz = hz
        """Hold a simulator to this many env steps per second, as a robot's control loop would
        (None: as fast as it goes). A real arm's driver paces itself; leave it None there."""
        self.video_dir = None if video_dir is None else Path(video_dir)
        """Where the training episodes the run films (its ``video_every``) are written, in
        ``<run id>/slot<K>/``: this actor runs the environment, the learner never sees a frame."""
        self._due = 0.0
        self.intervener = intervener
        """A person's device (``expoft.robot.teleop.HumanIntervener``): takes over, labels episodes."""
        self.ws: Any = None
        self.run_id: str | None = None
        self.cfg: RunConfig | None = None
        self.agent: Any = None
        self.external: Any = None
        """The run's external base (``cfg.external_base``), asked here for this actor's candidates."""
        self.side: EnvSide | None = None
        self.version = -1
        self.step = 0
        """The env step up to which the learner has answered."""
        self.random_chunk = None
        self.outbox: list[dict] = []
        """Decisions executed here and not yet in a learner checkpoint, in order."""
        self.pending: deque[dict] = deque()
        """Decisions of the outbox still to be (re)sent."""
        self.decisions = 0
        self.latencies: list[float] = []
        """Seconds from observation to chunk, per decision (the acting latency at the robot)."""
        self.waits: list[float] = []
        """Seconds from sending a decision to the learner's answer (sync: its update calls), while
        the run goes on: not the last answer, which waits for the learner to finish the run."""

    # ---- connection ----------------------------------------------------------------------------
    def _connect(self) -> dict:
        """(Re)connect with backoff; the learner's welcome."""
        delay = self.backoff_s
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                self.ws = websockets.sync.client.connect(self.url, max_size=MAX_MESSAGE_BYTES, compression=None,
                                                         ping_interval=self.ping_s, ping_timeout=4 * self.ping_s,
                                                         open_timeout=10, legacy=True)  # fmt: skip
                self.ws.send(
                    packb(
                        {
                            "type": "hello",
                            "protocol": PROTOCOL,
                            "actor": self.name,
                            "session": self.session,
                            "slot": self.slot,
                        }
                    )
                )
                return expect(self._recv(30.0), "welcome")
            except Busy as exc:  # refused for now, e.g. while our own last session is still closing
                self.ws.close()
                last = exc
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                last = exc
            log.warning("learner at %s not reachable (%s); retry %d/%d in %.1f s", self.url, last, attempt + 1,
                        self.retries, delay)  # fmt: skip
            time.sleep(delay)
            delay = min(2 * delay, self.max_backoff_s)
        raise LearnerGone(f"no learner at {self.url} after {self.retries} retries: {last}")

    def _recv(self, timeout: float) -> dict:
        return decode(self.ws.recv(timeout=timeout))

    def _welcome(self, welcome: dict) -> bool:
        """Take a welcome (config, weights, the learner's env step); whether the run has finished."""
        if field(welcome, "protocol", int) != PROTOCOL:
            raise ProtocolError(f"the learner speaks protocol {welcome['protocol']}, this actor {PROTOCOL}")
        run_id = field(welcome, "run_id", str)
        if self.run_id is None:
            self.run_id = run_id
            self.cfg = config_from_json(field(welcome, "config", dict))
            self.agent = make_agent(self.cfg)
            # an external base (a VLA behind a server): this actor asks it for its own candidates
            self.external = external_candidates(self.cfg)
        elif run_id != self.run_id:
            raise ProtocolError(f"the learner now serves run {run_id}, this actor acted for run {self.run_id}")
        assert self.cfg is not None
        self._take_weights(welcome)
        step = field(welcome, "step", int)
        first = self.outbox[0]["seq"] if self.outbox else self.step
        end = self.outbox[-1]["seq"] + _steps(self.outbox[-1]) if self.outbox else self.step
        if self.side is not None and first <= step <= end:
            # the learner has everything before ``step``: send it the rest of this episode's story
            self.pending = deque(m for m in self.outbox if m["seq"] >= step)
            if self.pending:
                log.warning("the learner is at env step %d (its checkpoint): resending %d decisions", step,
                            len(self.pending))  # fmt: skip
        else:  # a fresh actor, or one whose decisions the learner no longer needs: its next episode
            if self.side is not None:
                log.warning("the learner is at env step %d, this actor at %d: starting the learner's next episode",
                            step, end)  # fmt: skip
            check_person(self.cfg, self.robot, self.intervener)
            env = None if self.robot is None else self.robot(self.cfg)
            videos = None
            if self.cfg.video_every and self.video_dir is not None:
                videos = VideoFolder(self.video_dir / self.run_id[:12] / f"slot{self.slot}")
                log.info("filming every %d-th training episode into %s", self.cfg.video_every, videos.path)
            self.side = EnvSide(self.cfg, field(welcome, "episodes", int), run=videos, env=env,
                                intervener=self.intervener, slot=self.slot)  # fmt: skip
            self.outbox, self.pending = [], deque()
        self.step = step
        self.random_chunk = welcome.get("random_chunk")
        self._trim(welcome)
        return field(welcome, "done", bool)

    def _take_weights(self, message: dict) -> None:
        weights = message.get("weights")
        if weights is not None:
            self.agent = with_weights(self.agent, weights)  # between decisions: the swap is atomic
            self.version = field(message, "version", int)

    def _trim(self, message: dict) -> None:
        """Forget the decisions the learner has written into a checkpoint."""
        durable = field(message, "durable_step", int)
        self.outbox = [m for m in self.outbox if m["seq"] + _steps(m) > durable]

    def latency_ms(self) -> dict[str, float]:
        """Acting latency (median, 99th percentile) and the wait for the learner's answers (median,
        99th percentile, longest) so far, in milliseconds."""
        ms = 1000 * np.asarray(self.latencies or [0.0])
        waits = 1000 * np.asarray(self.waits or [0.0])
        return {"act_latency_p50_ms": round(float(np.percentile(ms, 50)), 3),
                "act_latency_p99_ms": round(float(np.percentile(ms, 99)), 3),
                "answer_wait_p50_ms": round(float(np.percentile(waits, 50)), 3),
                "answer_wait_p99_ms": round(float(np.percentile(waits, 99)), 3),
                "longest_stall_ms": round(float(waits.max()), 3)}  # fmt: skip

    # ---- the loop ------------------------------------------------------------------------------
    def _act(self) -> dict:
        """Choose and execute the next decision; its message (also in the outbox and the journal)."""
        assert self.cfg is not None and self.side is not None
        seq = self.outbox[-1]["seq"] + _steps(self.outbox[-1]) if self.outbox else self.step
        t0 = time.perf_counter()
        chunk, edited, not_first = decide(self.cfg, self.agent, self.side.obs, seq, self.random_chunk, self.external,
                                          slot=self.slot)  # fmt: skip
        act_seconds = time.perf_counter() - t0
        self.latencies.append(act_seconds)
        episode = self.side.episodes
        decision = self.side.execute(chunk, seq)
        if self.hz is not None:  # a robot's pace: the next decision after these steps' control periods
            now = time.perf_counter()
            self._due = max(now, self._due) + len(decision.transitions) / self.hz
            time.sleep(max(0.0, self._due - now))
        decision = dataclasses.replace(decision, edited=edited, not_first=not_first, act_seconds=act_seconds)
        message = decision_message(seq, episode, self.version, decision)
        if self.journal is not None:
            with self.journal.open("a") as f:
                f.write(json.dumps({"session": self.session, "slot": self.slot, "episode": episode, "seq": seq,
                                    "ended": decision.episode_ended and not decision.rerecord,
                                    "ids": transition_ids(message)}) + "\n")  # fmt: skip
        self.outbox.append(message)
        self.decisions += 1
        return message

    def run(self) -> int:
        """Act until the learner says the run is done; the number of decisions taken."""
        done = self._welcome(self._connect())
        try:
            while not done:
                if not self.pending:
                    self.pending.append(self._act())
                message = self.pending[0]
                try:
                    t0 = time.perf_counter()
                    self.ws.send(packb(message))
                    ack = expect(self._recv(self.answer_timeout_s), "ack")
                    if not ack.get("done"):
                        self.waits.append(time.perf_counter() - t0)
                except (websockets.exceptions.ConnectionClosed, TimeoutError, OSError) as exc:
                    log.warning("lost the learner (%s); reconnecting", exc)
                    self.ws.close()
                    done = self._welcome(self._connect())
                    continue
                if field(ack, "seq", int) != message["seq"]:
                    raise ProtocolError(f"the learner answered decision {ack['seq']}, not {message['seq']}")
                self.pending.popleft()
                self.step = message["seq"] + _steps(message)
                self._take_weights(ack)
                self.random_chunk = ack.get("random_chunk")
                self._trim(ack)
                done = field(ack, "done", bool)
        finally:
            self.ws.close()
        return self.decisions

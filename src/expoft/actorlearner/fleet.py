"""Several actors feeding one learner (``expoft learner --actors N``), always in async mode.

Each actor process takes an actor slot (``expoft actor --slot K``, 0 <= K < N): its own reset
seeds and acting stream, and its own numbering of decisions (by its own env steps). A slot's
decisions are staged at the learner until their episode ends, and only then written into the
replay buffer, whole and in order: episodes of different actors never interleave in the buffer
(chunked TD targets read consecutive steps), and an episode cut by a dead actor never reaches it
(it is dropped whole and reported, as with one actor).

What a checkpoint holds of each slot (``LoopState.actors``: the slot's env steps and episodes
that are settled, in the buffer or dropped) is where a restarted learner puts that slot's actor:
the actor resends what it executed since (its outbox), so a learner restart loses nothing of an
episode that ends later. Steps of dropped episodes do not count toward the run's env-step budget.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from expoft.actorlearner.learner import LearnerServer
from expoft.actorlearner.messages import Busy, ProtocolError, decision_from_message, expect, field
from expoft.bases.wire import packb
from expoft.train.checkpoint import PendingCheckpoint
from expoft.train.online_loop import Decision

log = logging.getLogger(__name__)

LAST_ANSWERS_S = 30.0
"""After the run's end, how long the learner keeps answering the other actors' decisions with
"done" before it shuts down."""


@dataclasses.dataclass
class Slot:
    """The learner's view of one actor slot."""

    settled: int = 0
    """Env steps of this slot's actor in the buffer or dropped (a checkpoint's ``LoopState.actors``)."""
    episodes: int = 0
    """Its episodes in the buffer: where its next reset seed comes from."""
    staged: list[Decision] = dataclasses.field(default_factory=list)
    """The decisions of its open episode, held until the episode ends."""
    durable: int = 0
    """``settled`` as of the newest checkpoint: the actor may forget decisions before it."""
    session: str | None = None
    random: Any = None
    busy: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def accepted(self) -> int:
        """Env steps of this slot the learner holds (settled or staged): the next decision's number."""
        return self.settled + sum(len(d.transitions) for d in self.staged)


class FleetServer(LearnerServer):
    """Serve ``learner`` to ``actors`` actor processes at once (async mode)."""

    def __init__(self, learner, run_id: str, host: str = "127.0.0.1", port: int = 0, *, actors: int,
                 mode: str = "async", **kwargs):  # fmt: skip
        if actors < 1:
            raise ValueError(f"--actors must be >= 1, got {actors}")
        if mode != "async":
            raise ValueError(
                "several actors need --mode async: in sync mode one actor waits for the update calls of its own "
                "decisions, which several actors would interleave"
            )
        super().__init__(learner, run_id, host, port, mode="async", **kwargs)
        self.slots = [Slot() for _ in range(actors)]
        for k, (settled, episodes) in learner.state.actors.items():
            if int(k) < actors:
                self.slots[int(k)] = Slot(settled, episodes, durable=settled)
        self._finishing = threading.Lock()
        learner.on_durable.append(self._checkpoint_durable)

    def _last_answers(self) -> None:
        deadline = time.monotonic() + LAST_ANSWERS_S
        while any(slot.busy.locked() for slot in self.slots) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _session(self, ws) -> None:
        hello = self._hello(ws)
        k = hello.get("slot", 0)
        if not isinstance(k, int) or not 0 <= k < len(self.slots):
            raise ProtocolError(
                f"actor slot {k!r} is not one of this learner's 0..{len(self.slots) - 1} (--actors {len(self.slots)}); "
                "start each actor with its own --slot"
            )
        slot = self.slots[k]
        if not slot.busy.acquire(blocking=False):
            raise Busy(
                f"actor slot {k} is served to another actor process (or this one's last session, still "
                "closing); give each actor its own --slot"
            )
        try:
            self._serve_slot(ws, k, slot, field(hello, "session", str))
        finally:
            slot.busy.release()

    def _serve_slot(self, ws, k: int, slot: Slot, session: str) -> None:
        learner = self.learner
        with self.lock:
            if session != slot.session:
                if slot.session is not None or slot.staged:
                    self._drop(
                        k, slot, f"actor {slot.session} of slot {k} left it unfinished; actor {session} took over"
                    )
                slot.session = session
            welcome = self._welcome(slot.accepted, slot.episodes, slot.durable, self._random_for(slot), slot=k)
        version = welcome["version"]
        ws.send(packb(welcome))
        while True:
            message = self._recv(ws, self.idle_timeout_s)
            seq = field(expect(message, "decision"), "seq", int)
            decision = decision_from_message(message, self.obs_dim, self.action_dim, self.exec_len)
            with self.lock:
                if not learner.done:
                    if seq > slot.accepted:
                        raise ProtocolError(
                            f"slot {k}: the decision at its env step {seq} arrived before the one at {slot.accepted}"
                        )
                    if seq == slot.accepted:  # an older one is a resend after a lost ack: answered, not taken again
                        self._take(k, slot, decision)
                reply, agent = self._ack(seq, slot.durable, None if learner.done else self._random_for(slot))
            version = self._with_new_weights(reply, agent, version)
            if reply["done"]:
                self._finish()
            ws.send(packb(reply))
            if reply["done"]:
                return

    def _random_for(self, slot: Slot):
        if slot.random is None:
            slot.random = self.learner.random_chunk()
        return slot.random

    def _take(self, k: int, slot: Slot, decision: Decision) -> None:
        """Stage a decision; at its episode's end write the episode into the buffer (under the lock)."""
        learner = self.learner
        slot.random = None
        slot.staged.append(decision)
        if decision.rerecord:
            self._drop(k, slot, "the person asked to record it again")
            return
        if not decision.episode_ended:
            return
        episode, slot.staged = slot.staged, []
        slot.settled += sum(len(d.transitions) for d in episode)
        slot.episodes += 1
        self._record_slots()  # before the episode's last decision: a checkpoint there must hold it
        for d in episode:
            learner.absorb(d, learn=False)

    def _checkpoint_durable(self, pending: PendingCheckpoint) -> None:
        """A checkpoint is on disk (under the lock): each slot's actor may forget what it holds."""
        for k, (settled, _) in pending.state["actors"].items():
            if int(k) < len(self.slots):
                self.slots[int(k)].durable = settled

    def _finish(self) -> None:
        """Once the budget is collected (by whichever actor): the run's summary, then shut down."""
        with self._finishing:
            if self.summary is not None:
                return
            self._stop_background()
            with self.lock:
                for j, other in enumerate(self.slots):
                    if other.staged:
                        self._drop(j, other, "the run's env-step budget was collected before it ended")
                self.summary = self.learner.finish()
            self.finished.set()

    def _drop(self, k: int, slot: Slot, why: str) -> None:
        steps = sum(len(d.transitions) for d in slot.staged)
        slot.settled += steps
        slot.staged = []
        self._record_slots()
        if steps:
            self.learner.report_dropped(steps, 0, why, slot=k)
            # the next episode end writes a checkpoint: a learner restarted from an older one would
            # send this slot's actor back before the drop, to steps that actor no longer holds
            self.learner.state.checkpoint_due = True
            log.warning("slot %d: dropped an episode of %d steps: %s", k, steps, why)

    def _record_slots(self) -> None:
        self.learner.state.actors = {str(j): [s.settled, s.episodes] for j, s in enumerate(self.slots)}

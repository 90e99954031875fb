"""The online loop in two halves, so that acting and learning may live in two processes.

- :class:`EnvSide` runs the environment: executes a decision (a chunk of actions, through the
  interventions), resets finished episodes with the run's reset seeds, films training episodes.
- :class:`OnlineLearner` takes what one decision produced (its transitions, whether the episode
  ended and succeeded) into the replay buffer and makes the update calls due, logs, evaluates and
  checkpoints, exactly as the single-process loop did in one body.
- :func:`decide` chooses a decision's chunk: uniform random in the first ``random_steps`` (from the
  learner's sampling generator, which the update calls share), else the agent's acting rule.

``expoft finetune`` runs the three in one process (:func:`run_local`); ``expoft learner`` and
``expoft actor`` put the environment side and the acting in another (``expoft.actorlearner``).
In both the calls come in the same order with the same keys, which is what makes a synchronous
actor-learner run log the metrics of the single-process one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from expoft.agents.common import act
from expoft.envs.chunks import ActionChunks, Transition
from expoft.envs.interventions import ScriptedIntervener
from expoft.envs.ogbench_domains import get_domain
from expoft.obs import add_batch_axis
from expoft.progress import Progress
from expoft.report.video import render_frame
from expoft.reward.learned_success import make_training_env
from expoft.robot.typist import SimulatedTypist
from expoft.train.build import draw_batches, update_call
from expoft.train.checkpoint import PendingCheckpoint
from expoft.train.config import RunConfig
from expoft.train.evaluate import evaluate, evaluation_seed
from expoft.train.external import step_seed
from expoft.train.online_state import LoopState, log_row
from expoft.train.rundir import stop_if_diverged, to_jsonable
from expoft.train.summary import finish
from expoft.train.target_cache import run_cache

log = logging.getLogger(__name__)


class StoppedAtCheckpoint(Exception):
    """The run was asked to stop (SIGTERM) and stopped at the next episode end, after writing a
    checkpoint there: ``expoft finetune --resume`` continues it as a run that was never stopped
    would have gone on (as from any checkpoint)."""


@dataclasses.dataclass
class Decision:
    """What executing one decision produced, as the learner takes it."""

    transitions: Sequence[Transition]
    episode_ended: bool
    success: bool
    """The last step's success flag (meaningful when the episode ended)."""
    edited: bool | None = None
    not_first: bool | None = None
    """Did an edited candidate, or any candidate but the first base sample, win (EXPO's OTF)?"""
    act_seconds: float = 0.0
    rerecord: bool = False
    """A person asked to do the episode again: it is dropped, not learned from."""
    simulator_success: bool | None = None
    """With a learned success detector (``success`` is its): did the simulator see the task reached
    in this episode (reported, never learned from)? None without one."""


SLOT_SEED_STRIDE = 10_000_000
"""Reset seeds of actor slot k start k strides above slot 0's: the actors of one learner see
different episodes (slot 0's are the single-actor run's)."""


def reset_seed(cfg: RunConfig, episodes: int, slot: int = 0) -> int:
    """Reset seed of the training episode after ``episodes`` finished ones (of actor ``slot``)."""
    return (cfg.seed if episodes == 0 else cfg.seed + 1_000_000 + episodes) + slot * SLOT_SEED_STRIDE


def crossed(prev: int, step: int, every: int) -> int:
    """How many multiples of ``every`` lie in ``(prev, step]``."""
    return step // every - prev // every


def update_calls_due(cfg: RunConfig, prev: int, step: int, episode_ended: bool) -> int:
    """Update calls due after the environment moved from step ``prev`` to ``step`` (one chunk):
    one per multiple of the update period (``update_every``, or one decision) passed since
    ``start_training``, or ``updates_per_episode`` when an episode has just ended."""
    if step < cfg.start_training:
        return 0
    if cfg.updates_per_episode:
        return cfg.updates_per_episode if episode_ended else 0
    return crossed(max(prev, cfg.start_training - 1), step, cfg.update_period)


class EnvSide:
    """The run's training environment with action chunks, interventions and filming; starts at the
    episode after ``episodes`` finished ones (a resumed run's)."""

    def __init__(self, cfg: RunConfig, episodes: int, run=None, env=None, intervener=None, slot: int = 0):
        self.cfg, self.run, self.episodes, self.slot = cfg, run, episodes, slot
        filming = run is not None and cfg.video_every > 0
        raw = env if env is not None else make_training_env(cfg, render=filming)
        self.raw_env, self.filming = raw, filming
        self.frames: list[np.ndarray] = []
        if intervener is None and cfg.intervene in ("scripted", "keys"):
            intervener = ScriptedIntervener(
                raw,
                cfg.env,
                cfg.task,
                seed=cfg.seed + slot * SLOT_SEED_STRIDE,
                patience=cfg.intervene_patience,
                decay=cfg.intervene_decay,
            )
            intervener.episodes = episodes
            if cfg.intervene == "keys":  # the same expert, typed on a keyboard
                intervener = SimulatedTypist(intervener, get_domain(cfg.env).action_dim)
        self.env = ActionChunks(raw, cfg.agent.exec_len, intervener=intervener, on_step=self._film)
        self.obs, _ = self.env.reset(seed=reset_seed(cfg, episodes, slot))
        self._film()

    def _film(self) -> None:
        if self.filming and self.episodes % self.cfg.video_every == 0:
            self.frames.append(render_frame(self.raw_env))

    def execute(self, chunk: np.ndarray, step_before: int) -> Decision:
        """Execute ``chunk`` (``step_before``: the run's env step before it, for the video's time
        axis); start the next episode when this one ended (a re-recorded one again, same reset)."""
        self.obs, _, terminated, truncated, info = self.env.step(chunk)
        transitions = info["transitions"]
        ended, rerecord = bool(terminated or truncated), bool(info.get("rerecord", False))
        if ended:
            if self.frames:
                self.run.video(self.frames, f"episode_{self.episodes}.{self.cfg.video_format}",
                               step_before + len(transitions))  # fmt: skip
                self.frames.clear()
            self.episodes += not rerecord
            self.obs, _ = self.env.reset(seed=reset_seed(self.cfg, self.episodes, self.slot))
            self._film()
        simulator = info.get("simulator_success") if self.cfg.success_detector is not None else None
        return Decision(transitions, ended, bool(info["success"]), rerecord=rerecord, simulator_success=simulator)


def decide(cfg: RunConfig, agent, obs, step: int, random_chunk: np.ndarray | None, external=None, slot: int = 0):
    """The chunk of the decision at env step ``step`` (of actor ``slot``) and EXPO's (edited,
    not_first) flags."""
    if random_chunk is not None:
        return random_chunk, None, None
    batch = add_batch_axis(obs)
    base = None if external is None else external(batch, step_seed(cfg, step + slot * SLOT_SEED_STRIDE))
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed + 1), step + 1)
    if slot:  # slot 0 keeps the single-actor run's stream
        key = jax.random.fold_in(key, slot)
    a, info = act(agent, batch, key, base)
    # one transfer: indexing device arrays would dispatch an op each
    a, edited, not_first = jax.device_get((a, info.get("edited"), info.get("not_first")))
    flags = (None, None) if edited is None else (bool(edited[0]), bool(not_first[0]))
    return np.asarray(a[0]), *flags


class OnlineLearner:
    """The learner's half of the loop: the agent, the replay buffer, the run folder."""

    def __init__(self, cfg, run, agent, buffer, store, state: LoopState, eval_env, progress, clock, external=None):
        self.cfg, self.run, self.agent, self.buffer, self.store = cfg, run, agent, buffer, store
        self.state, self.eval_env, self.clock, self.external = state, eval_env, clock, external
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state.sampling_rng
        self.eval_seed = evaluation_seed(cfg)
        self.bar = Progress(cfg.env_steps, "finetune", unit="step", enabled=progress, initial=state.step)
        self.cache = run_cache(cfg, buffer)
        self.episode_steps = self.episode_intervened = 0
        self.version = 0
        """Bumped whenever update calls change the agent: the weights an actor must fetch."""
        self.durable_step = state.step
        """Env step of the newest checkpoint: where a restarted learner resumes."""
        self.calls_due = state.update_calls
        """Update calls the run's schedule has made due so far: an asynchronous learner
        (``learn=False`` in :meth:`absorb`) makes them in its own time, never more."""
        self.defer_evaluations = False
        """An asynchronous learner evaluates in a thread of its own, off the lock its actors wait on:
        :meth:`absorb` then queues each evaluation (the agent as of its env step, and whether it is
        the run's last) in ``evaluations_due``, and the run finishes once they are made."""
        self.evaluations_due: list[tuple[int, Any, bool]] = [(s, agent, False) for s in state.evaluations_due]
        """Queued evaluations; those a checkpoint still had queued are made by the resumed run with
        its restored agent."""
        self.defer_checkpoints = False
        """An asynchronous learner writes checkpoints in a thread of its own, off the lock its actors
        wait on (a 30 MiB agent takes a second to write): :meth:`checkpoint` then takes what the
        checkpoint holds and queues it in ``checkpoints_due``; ``durable_step`` moves once it is
        written (:meth:`checkpoint_durable`)."""
        self.checkpoints_due: list[PendingCheckpoint] = []
        self.on_durable: list[Callable[[PendingCheckpoint], None]] = []
        """Called with each checkpoint once it is on disk."""
        self.stop_requested = False
        """Set by :func:`stop_on_sigterm`: checkpoint at the next episode end, then raise
        :class:`StoppedAtCheckpoint` (a single-process run; an environment cannot be saved
        mid-episode, so the stop waits for the episode to end)."""
        if state.checkpoint_due:  # the first one, before RL
            self.checkpoint()

    @property
    def done(self) -> bool:
        return self.state.step >= self.cfg.env_steps

    def elapsed(self) -> float:
        return self.state.elapsed_seconds + self.clock.wall()

    def cpu(self) -> float:
        return self.state.cpu_seconds + self.clock.cpu()

    def random_chunk(self) -> np.ndarray | None:
        """The next decision's chunk while ``random_steps`` last (drawn from the sampling generator
        the update calls share, so it must be drawn here, in order), else None."""
        if self.state.step >= self.cfg.random_steps:
            return None
        return self.rng.uniform(-1.0, 1.0, (self.cfg.agent.exec_len, get_domain(self.cfg.env).action_dim)).astype(
            np.float32
        )

    def checkpoint(self) -> None:
        """Take a checkpoint of the run as it stands: written at once, or, with
        ``defer_checkpoints``, queued in ``checkpoints_due`` for a writer thread."""
        state = self.state
        if self.cache is not None:  # a resumed run starts with an empty cache: so does this one, from here
            self.cache.flush()
        state.sampling_rng = self.rng.bit_generator.state
        state.evaluations_due = [step for step, _, _ in self.evaluations_due]
        state.metrics_bytes = self.run.metrics_bytes()
        state.checkpoint_due = False  # as the resumed run must see it
        saved = dataclasses.replace(state, elapsed_seconds=self.elapsed(), cpu_seconds=self.cpu())
        pending = self.store.prepare(state.step, self.agent, self.buffer, dataclasses.asdict(saved),
                                     to_jsonable(self.cfg))  # fmt: skip
        if self.defer_checkpoints:
            self.checkpoints_due.append(pending)
        else:
            self.store.write(pending)
            self.checkpoint_durable(pending)

    def checkpoint_durable(self, pending: PendingCheckpoint) -> None:
        """``pending`` is on disk: a restarted learner resumes from it (``durable_step``)."""
        self.run.checkpoint_written()
        self.durable_step = pending.step
        for hook in self.on_durable:
            hook(pending)

    def drop_open_episode(self, why: str) -> int:
        """Leave the episode in progress out of the replay buffer (its actor died; a new one starts
        the episode again from the same reset): the steps dropped, logged with ``why``."""
        steps = self.episode_steps
        if not steps:
            return 0
        dropped = self.buffer.drop_open_episode()
        self.episode_steps = self.episode_intervened = 0
        self.report_dropped(dropped, steps - dropped, why)
        return dropped

    def report_dropped(self, dropped: int, kept: int, why: str, **extra: Any) -> None:
        """Count an episode left out of the replay buffer (``dropped`` of its steps; ``kept``: those
        already learned from) and log it as an ``episode_dropped`` row with ``why``."""
        self.state.dropped_episodes += 1
        self.state.dropped_steps += dropped
        self.run.log({"phase": "episode_dropped", "env_step": self.state.step, **extra, "dropped_steps": dropped,
                      "kept_steps": kept, "why": why})  # fmt: skip

    def absorb(self, decision: Decision, learn: bool = True) -> None:
        """Take one executed decision: store its steps, make the update calls due (``learn``;
        else they only count in ``calls_due``, for an asynchronous learner: :meth:`draw`,
        :meth:`take_update`), log, evaluate, checkpoint at the first episode end after one is due."""
        cfg, state, buffer, run = self.cfg, self.state, self.buffer, self.run
        prev = state.step
        state.act_time += decision.act_seconds
        if decision.edited is not None:
            state.acted_edited.append(decision.edited)
            state.acted_not_first.append(bool(decision.not_first))
        ended = decision.episode_ended
        for t in decision.transitions:
            last_of_episode = (t.terminated or t.truncated) and not decision.rerecord
            buffer.add(t.observation, t.action, t.reward, t.next_observation, t.terminated and last_of_episode,
                       last_of_episode, success=last_of_episode and decision.success,
                       intervened=t.intervened)  # fmt: skip
        state.step += len(decision.transitions)
        self.episode_steps += len(decision.transitions)
        self.episode_intervened += sum(t.intervened for t in decision.transitions)
        if decision.rerecord:
            self.drop_open_episode("the person asked to record it again")
        elif ended:
            state.finish_episode(decision.success, self.episode_intervened / self.episode_steps,
                                 decision.simulator_success)  # fmt: skip
            self.episode_steps = self.episode_intervened = 0

        step = state.step
        due = 0
        if self.agent.learns_online and state.episodes >= cfg.start_episodes:
            due = update_calls_due(cfg, prev, step, ended)
        self.calls_due += due
        calls = due if learn else 0
        if calls:
            t0 = time.perf_counter()
            for i in range(calls):
                n = state.update_calls + i + 1
                seed = step_seed(cfg, step, salt=n) if self.external is not None else None
                new_agent, metrics = update_call(
                    cfg, self.agent, buffer, self.rng, external=self.external, external_seed=seed, cache=self.cache,
                    call=n,
                )  # fmt: skip
                stop_if_diverged(metrics, self.agent, run, f"env step {step} (update call {n})", f"last_finite_{step}",
                                 {"env_step": step})  # fmt: skip
                self.agent = new_agent
                state.pending.append(metrics)
            state.update_calls += calls
            state.update_time += time.perf_counter() - t0
            self.version += 1

        last = step >= cfg.env_steps
        if crossed(prev, step, cfg.log_every) or last:
            row = log_row(state, buffer)
            row.update({"time/update_s": state.update_time, "time/act_s": state.act_time,
                        "time/elapsed_s": self.elapsed(), "time/cpu_s": self.cpu()})  # fmt: skip
            run.log(row)
            state.pending, state.acted_edited, state.acted_not_first = [], [], []
            grad_per_s = state.update_calls * cfg.agent.utd / state.update_time if state.update_time else 0.0
            self.bar.set(success=f"{row['train/rolling_success']:.2f}", calls=state.update_calls,
                         grad_per_s=f"{grad_per_s:.0f}")  # fmt: skip
        if crossed(prev, step, cfg.eval_every) or last:
            if self.defer_evaluations:
                self.evaluations_due.append((step, self.agent, last))
            else:
                for queued, agent, _ in self.evaluations_due:  # queued by an async learner before a restart
                    self.record_evaluation(queued, self.evaluation(agent))
                self.evaluations_due = []
                self.record_evaluation(step, self.evaluation(self.agent, last))
        state.checkpoint_due |= crossed(prev, step, cfg.checkpoint_every) > 0
        if (state.checkpoint_due or self.stop_requested) and ended and not last:
            self.checkpoint()
            if self.stop_requested and not self.defer_checkpoints:
                self.bar.close()
                raise StoppedAtCheckpoint(
                    f"stopped by SIGTERM at env step {step} (an episode end), with a checkpoint there: continue "
                    f"with `expoft finetune --resume {self.run.path}`"
                )
        self.bar.update(step - prev)

    def evaluation(self, agent, last: bool = False) -> dict:
        """Evaluate ``agent`` (OTF, and its base alone when the run asks for it and always at the
        end: final_base_success); reads nothing the acting or learning sides change."""
        cfg, external = self.cfg, self.external
        result = evaluate(agent, self.eval_env, cfg.eval_episodes, self.eval_seed, external=external)
        if (cfg.eval_base or last) and agent.has_base:
            result |= evaluate(agent, self.eval_env, cfg.eval_episodes, self.eval_seed, policy="base",
                               external=external)  # fmt: skip
        return result

    def record_evaluation(self, step: int, result: dict) -> None:
        state = self.state
        self.run.log({"env_step": step, **result})
        state.evals.append({"env_step": step, **result, "time/cpu_s": self.cpu()})
        if state.first_95 is None and result["eval/success"] >= 0.95:
            state.first_95, state.cpu_to_95 = step, state.evals[-1]["time/cpu_s"]
        self.bar.set(eval=f"{result['eval/success']:.2f}")

    def draw(self):
        """The batches of the next update call (``update_call``'s draw), for an asynchronous learner
        that updates outside its lock."""
        return draw_batches(self.cfg, self.buffer, self.rng)

    def take_update(self, agent, metrics: dict, seconds: float) -> None:
        """Adopt the result of an asynchronous update call."""
        self.agent = agent
        self.state.pending.append(metrics)
        self.state.update_calls += 1
        self.state.update_time += seconds
        self.version += 1

    def finish(self, extra: dict[str, Any] | None = None) -> dict:
        """The final agent and replay data (for `expoft eval`, `--base-from`, analysis), then the
        summary. The run may end mid-episode: that episode's flags are final too, since it ends
        with the run."""
        self.bar.close()
        self.checkpoint()
        extra = dict(extra or {})
        if self.external is not None:  # this process's calls (a learner's: targets and evaluations)
            extra["external_base_latency_ms"] = self.external.latency_ms()
        return finish(self.cfg, self.run, self.state, self.buffer, self.elapsed(), self.cpu(), extra)


@contextlib.contextmanager
def stop_on_sigterm(learner: OnlineLearner) -> Iterator[None]:
    """Within the block, the first SIGTERM asks ``learner`` to stop at the next episode end with a
    checkpoint (what a scheduler's or a bench's stop sends: the work since the last scheduled
    checkpoint is kept); a second one ends the process at once, as SIGTERM does by default.
    Ctrl-C (SIGINT) is left as it is: it stops at once. Outside the main thread: nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request(signum, frame):
        learner.stop_requested = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the second one is not waited for
        log.warning("SIGTERM: stopping at the next episode end with a checkpoint (SIGTERM again: stop now)")

    previous = signal.signal(signal.SIGTERM, request)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_local(learner: OnlineLearner) -> dict:
    """The single-process loop: act, execute, learn, until the env-step budget is spent (or a
    SIGTERM asks it to stop at an episode end: :func:`stop_on_sigterm`)."""
    with stop_on_sigterm(learner):
        return _run_local(learner)


def _run_local(learner: OnlineLearner) -> dict:
    cfg, state = learner.cfg, learner.state
    side = EnvSide(cfg, state.episodes, learner.run)
    while not learner.done:
        t0 = time.perf_counter()
        chunk, edited, not_first = decide(cfg, learner.agent, side.obs, state.step, learner.random_chunk(),
                                          learner.external)  # fmt: skip
        act_seconds = time.perf_counter() - t0
        decision = side.execute(chunk, state.step)
        learner.absorb(dataclasses.replace(decision, edited=edited, not_first=not_first, act_seconds=act_seconds))
    return learner.finish()

"""Online fine-tuning: the EXPO loop over an environment, with checkpoints it can resume from.

``finetune`` pretrains the base (or takes it from another run), evaluates it, then interacts:
act with the OTF rule, store the executed steps, run update calls on the configured schedule,
log, evaluate and checkpoint. ``resume`` continues a killed run from its newest usable
checkpoint and reproduces, on CPU bit for bit, what the uninterrupted run would have logged.

Why checkpoints wait for an episode end: the simulator's state mid-episode is not saved, but
every episode starts from a reset seeded by the number of episodes so far. A checkpoint due at
step N is therefore written when the episode running at N ends (at most one episode later).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import jax
import numpy as np

from expoft.agents.common import act
from expoft.data.replay import ReplayBuffer
from expoft.data.transitions import Dataset
from expoft.envs.chunks import ActionChunks
from expoft.envs.interventions import ScriptedIntervener
from expoft.envs.ogbench_domains import get_domain
from expoft.obs import add_batch_axis
from expoft.progress import Progress
from expoft.report.video import render_frame
from expoft.train.build import make_agent, make_run_env, offline_data, offline_frames, update_call, with_base_from
from expoft.train.checkpoint import CheckpointStore
from expoft.train.config import RunConfig
from expoft.train.evaluate import evaluate, evaluation_seed
from expoft.train.external import external_candidates, step_seed
from expoft.train.offline_rl import OfflinePoint, checkpointed_offline_phase, reopen_offline_phase
from expoft.train.online_state import LoopState, log_row
from expoft.train.pretrain import (
    STAGE_SAVE_SECONDS,
    Clock,
    check_dataset,
    check_resumable,
    check_same_data,
    checkpointed_pretraining,
    continue_pretraining,
    dataset_sha256,
    never_checkpointed,
)
from expoft.train.rundir import RunDir, config_from_json, stop_if_diverged, to_jsonable
from expoft.train.summary import finish
from expoft.train.target_cache import run_cache

log = logging.getLogger(__name__)


def run_buffer(cfg: RunConfig, ds: Dataset, frames: np.ndarray | None) -> ReplayBuffer:
    """The run's replay buffer, the offline data (and its frames, for pixels) mixed in."""
    domain = get_domain(cfg.env)
    return ReplayBuffer(cfg.obs_spec, domain.action_dim, cfg.buffer_capacity, offline=ds, offline_frames=frames)


def finetune(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    base=None,
    stage_save_seconds: float = STAGE_SAVE_SECONDS,
) -> dict:
    """Pretrain the base on the offline data, take the offline phase (if any), then run online;
    returns the summary.

    ``base``: an external base policy (``expoft.bases.ExternalBase``, e.g. a ``CallableBase``) to
    use instead of the agent's own; ``cfg.external_base`` names a server instead."""
    clock = Clock.start()
    ds = offline_data(cfg, progress)
    check_dataset(cfg, ds)  # before the run folder exists: bad data leaves nothing to clean up
    frames = offline_frames(cfg, ds, progress)
    external = external_candidates(cfg, base)
    sha = dataset_sha256(ds)
    agent = make_agent(cfg)
    if agent.has_base and external is None and cfg.base_from is not None:
        agent = with_base_from(agent, cfg.base_from)  # checked before the run folder is touched
    run = RunDir(out, cfg, overwrite)
    store = CheckpointStore(run.path / "checkpoints", keep=cfg.keep_checkpoints)
    losses = np.zeros(0)
    if not agent.has_base:
        pass  # e.g. RLPD: no base to start from or pretrain
    elif external is not None:
        run.log({"phase": "pretrain", "pretrain/external_base": cfg.external_base or type(base).__name__})
    elif cfg.base_from is not None:
        run.log({"phase": "pretrain", "pretrain/base_from": str(cfg.base_from)})
    elif cfg.pretrain_steps:
        agent, losses = checkpointed_pretraining(
            cfg, run, store, agent, ds, sha, frames, progress, stage_save_seconds, clock
        )
    return _start_online(cfg, run, store, agent, losses, ds, sha, frames, progress, clock, external, stage_save_seconds)


def _start_online(
    cfg, run, store, agent, losses, ds, sha, frames, progress, clock: Clock, external, save_seconds: float,
    offline_start: OfflinePoint | None = None,
) -> dict:  # fmt: skip
    """Take the offline phase (if any; continued from ``offline_start``), evaluate the agent
    before RL, write the first checkpoint, then run online."""
    buffer = run_buffer(cfg, ds, frames)
    agent = checkpointed_offline_phase(
        cfg, run, store, agent, buffer, losses, sha, clock, progress, save_seconds, external, offline_start
    )  # fmt: skip
    eval_env = make_run_env(cfg)
    before = evaluate(agent, eval_env, cfg.eval_episodes, evaluation_seed(cfg), external=external)
    before_base = {}
    if agent.has_base:
        before_base = evaluate(
            agent, eval_env, cfg.eval_episodes, evaluation_seed(cfg), policy="base", external=external
        )
    run.log({"env_step": 0, **before, **before_base})
    log.info("before RL: success %.2f, base alone %s", before["eval/success"], before_base.get("eval_base/success"))
    state = LoopState(
        evals=[{**before, **(before_base if cfg.eval_base else {}), "time/cpu_s": clock.cpu()}],
        sampling_rng=np.random.default_rng(cfg.seed).bit_generator.state,
        before={**before, **before_base, "pretrain_final_loss": float(losses[-100:].mean()) if len(losses) else None},
        dataset_sha256=sha,
        checkpoint_due=True,  # a first checkpoint before RL: a resume never repeats pretraining
    )
    return _online(cfg, run, agent, buffer, store, state, eval_env, progress, clock, external)


def resume(
    out: str | Path, *, progress: bool = True, base=None, stage_save_seconds: float = STAGE_SAVE_SECONDS
) -> dict:
    """Continue the run in ``out`` from its newest usable checkpoint (its own config.json), or,
    killed before RL, from the checkpoint of its offline phase or of its pretraining; ``base``:
    the external base object the run started with, if it was given from Python."""
    clock = Clock.start()
    out = Path(out)
    config_path = out / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} does not exist: {out} is not an expoft run folder")
    if (out / "summary.json").exists():
        raise ValueError(f"the run in {out} has finished (summary.json exists); nothing to resume")
    cfg = config_from_json(json.loads(config_path.read_text()))
    store = CheckpointStore(out / "checkpoints", keep=cfg.keep_checkpoints)
    if never_checkpointed(store):
        # killed before its first checkpoint (in its first seconds, or early in pretraining): there is
        # nothing to lose, and the user asked to go on, so the run starts again from its own config
        log.warning("%s has no checkpoint yet: starting the run again from its config.json", out)
        return finetune(cfg, out, overwrite=True, progress=progress, base=base, stage_save_seconds=stage_save_seconds)
    record = store.latest_valid()
    if record is None:
        offline_start = None
        reopened = reopen_offline_phase(cfg, out, store, config_path, progress)
        if reopened is not None:
            done, offline_start = reopened
        else:
            done = continue_pretraining(cfg, out, store, config_path, progress, stage_save_seconds, only=False)
        return _start_online(cfg, done.run, store, done.agent, done.losses, done.ds, done.sha, done.frames, progress,
                             done.clock, external_candidates(cfg, base), stage_save_seconds, offline_start)  # fmt: skip
    check_resumable(record, cfg, config_path, f"env step {record['env_step']}")
    ds = offline_data(cfg, progress)
    check_dataset(cfg, ds)
    state = LoopState(**record["state"])
    check_same_data(ds, state.dataset_sha256, out)
    template = make_agent(cfg)
    buffer = run_buffer(cfg, ds, offline_frames(cfg, ds, progress))
    agent = store.restore(record, template, buffer)
    run = RunDir.reopen(out, state.metrics_bytes, cfg, state.step)
    run.log({"phase": "resume", "env_step": state.step})
    log.info("resuming %s at env step %d", out, state.step)
    return _online(
        cfg,
        run,
        agent,
        buffer,
        store,
        state,
        make_run_env(cfg),
        progress,
        clock,
        external_candidates(cfg, base),
    )


def _online(cfg, run, agent, buffer, store, state: LoopState, eval_env, progress, clock: Clock, external=None) -> dict:
    domain = get_domain(cfg.env)
    agent_cfg, h = cfg.agent, cfg.agent.exec_len
    rng = np.random.default_rng()
    rng.bit_generator.state = state.sampling_rng
    act_key = jax.random.PRNGKey(cfg.seed + 1)
    intervener = None
    env = make_run_env(cfg, render=cfg.video_every > 0)
    raw_env, frames = env, []

    def filming() -> bool:
        return cfg.video_every > 0 and state.episodes % cfg.video_every == 0

    def film() -> None:
        if filming():
            frames.append(render_frame(raw_env))

    if cfg.intervene == "scripted":
        intervener = ScriptedIntervener(
            env, cfg.env, cfg.task, seed=cfg.seed, patience=cfg.intervene_patience, decay=cfg.intervene_decay
        )
        intervener.episodes = state.episodes
    env = ActionChunks(env, h, intervener=intervener, on_step=film)
    obs, _ = env.reset(seed=_reset_seed(cfg, state.episodes))
    film()
    episode_steps = episode_intervened = 0
    eval_seed = evaluation_seed(cfg)
    bar = Progress(cfg.env_steps, "finetune", unit="step", enabled=progress, initial=state.step)

    def elapsed() -> float:
        return state.elapsed_seconds + clock.wall()

    def cpu() -> float:
        return state.cpu_seconds + clock.cpu()

    cache = run_cache(cfg, buffer)

    def checkpoint() -> None:
        if cache is not None:  # a resumed run starts with an empty cache: so does this one, from here
            cache.flush()
        state.sampling_rng = rng.bit_generator.state
        state.metrics_bytes = run.metrics_bytes()
        state.checkpoint_due = False  # as the resumed run must see it
        saved = dataclasses.replace(state, elapsed_seconds=elapsed(), cpu_seconds=cpu())
        store.save(state.step, agent, buffer, dataclasses.asdict(saved), to_jsonable(cfg))
        run.checkpoint_written()

    if state.checkpoint_due:  # the first one, before RL
        checkpoint()
    while state.step < cfg.env_steps:
        prev = state.step
        t0 = time.perf_counter()
        if prev < cfg.random_steps:
            chunk = rng.uniform(-1.0, 1.0, (h, domain.action_dim)).astype(np.float32)
        else:
            batch = add_batch_axis(obs)
            base = None if external is None else external(batch, step_seed(cfg, prev))
            a, info = act(agent, batch, jax.random.fold_in(act_key, prev + 1), base)
            # one transfer: indexing device arrays would dispatch an op each
            a, edited, not_first = jax.device_get((a, info.get("edited"), info.get("not_first")))
            chunk = np.asarray(a[0])
            if edited is not None:
                state.acted_edited.append(bool(edited[0]))
                state.acted_not_first.append(bool(not_first[0]))
        state.act_time += time.perf_counter() - t0
        obs, _, terminated, truncated, info = env.step(chunk)
        episode_ended = terminated or truncated
        for t in info["transitions"]:
            ended = t.terminated or t.truncated
            buffer.add(t.observation, t.action, t.reward, t.next_observation, t.terminated, ended,
                       success=ended and bool(info["success"]), intervened=t.intervened)  # fmt: skip
        state.step += len(info["transitions"])
        episode_steps += len(info["transitions"])
        episode_intervened += sum(t.intervened for t in info["transitions"])
        if episode_ended:
            if frames:
                run.video(frames, f"episode_{state.episodes}.{cfg.video_format}", state.step)
                frames.clear()
            state.finish_episode(bool(info["success"]), episode_intervened / episode_steps)
            episode_steps = episode_intervened = 0
            obs, _ = env.reset(seed=_reset_seed(cfg, state.episodes))
            film()

        step = state.step
        calls = 0
        if agent.learns_online and state.episodes >= cfg.start_episodes:
            calls = _update_calls_due(cfg, prev, step, episode_ended)
        if calls:
            t0 = time.perf_counter()
            for i in range(calls):
                n = state.update_calls + i + 1
                seed = step_seed(cfg, step, salt=n) if external is not None else None
                new_agent, metrics = update_call(
                    cfg, agent, buffer, rng, external=external, external_seed=seed, cache=cache, call=n
                )
                stop_if_diverged(metrics, agent, run, f"env step {step} (update call {n})", f"last_finite_{step}",
                                 {"env_step": step})  # fmt: skip
                agent = new_agent
                state.pending.append(metrics)
            state.update_calls += calls
            state.update_time += time.perf_counter() - t0

        last = step >= cfg.env_steps
        if _crossed(prev, step, cfg.log_every) or last:
            row = log_row(state, buffer)
            row.update({"time/update_s": state.update_time, "time/act_s": state.act_time, "time/elapsed_s": elapsed(),
                        "time/cpu_s": cpu()})  # fmt: skip
            run.log(row)
            state.pending, state.acted_edited, state.acted_not_first = [], [], []
            grad_per_s = state.update_calls * agent_cfg.utd / state.update_time if state.update_time else 0.0
            bar.set(success=f"{row['train/rolling_success']:.2f}", calls=state.update_calls,
                    grad_per_s=f"{grad_per_s:.0f}")  # fmt: skip
        if _crossed(prev, step, cfg.eval_every) or last:
            result = evaluate(agent, eval_env, cfg.eval_episodes, eval_seed, external=external)
            if (cfg.eval_base or last) and agent.has_base:  # the base at the end always: final_base_success
                result |= evaluate(agent, eval_env, cfg.eval_episodes, eval_seed, policy="base", external=external)
            run.log({"env_step": step, **result})
            state.evals.append({"env_step": step, **result, "time/cpu_s": cpu()})
            if state.first_95 is None and result["eval/success"] >= 0.95:
                state.first_95, state.cpu_to_95 = step, state.evals[-1]["time/cpu_s"]
            bar.set(eval=f"{result['eval/success']:.2f}")
        state.checkpoint_due |= _crossed(prev, step, cfg.checkpoint_every) > 0
        if state.checkpoint_due and episode_ended and not last:
            checkpoint()
        bar.update(step - prev)
    bar.close()
    # The final agent and replay data (for `expoft eval`, `--base-from`, analysis). The run may end
    # mid-episode: that episode's flags are final too, since it ends with the run.
    checkpoint()
    extra = {} if external is None else {"external_base_latency_ms": external.latency_ms()}
    return finish(cfg, run, state, buffer, elapsed(), cpu(), extra)


def _reset_seed(cfg: RunConfig, episodes: int) -> int:
    """Reset seed of the training episode after ``episodes`` finished ones."""
    return cfg.seed if episodes == 0 else cfg.seed + 1_000_000 + episodes


def _crossed(prev: int, step: int, every: int) -> int:
    """How many multiples of ``every`` lie in ``(prev, step]``."""
    return step // every - prev // every


def _update_calls_due(cfg: RunConfig, prev: int, step: int, episode_ended: bool) -> int:
    """Update calls due after the environment moved from step ``prev`` to ``step`` (one chunk):
    one per multiple of the update period (``update_every``, or one decision) passed since
    ``start_training``, or
    ``updates_per_episode`` when an episode has just ended."""
    if step < cfg.start_training:
        return 0
    if cfg.updates_per_episode:
        return cfg.updates_per_episode if episode_ended else 0
    return _crossed(max(prev, cfg.start_training - 1), step, cfg.update_period)

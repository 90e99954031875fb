"""Pretraining, online fine-tuning and evaluation; every run writes one folder.

Run folder (``out``)::

    config.json        the resolved RunConfig
    metrics.jsonl      one row per log interval (namespaced keys) and per evaluation
    checkpoints/       agent_<step>.npz (all arrays, no pickle) and buffer.npz
    summary.json       success before RL, final success, steps, wall time
    learning_curve.png success against environment steps
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import jax
import numpy as np

from expoft.agents.expo import EXPOAgent, EXPOConfig, act, act_base, pretrain, update
from expoft.data.dataset import Dataset, load_dataset
from expoft.data.generate import DemosConfig, get_or_generate
from expoft.data.replay import ReplayBuffer
from expoft.envs.chunks import ActionChunks
from expoft.envs.interventions import ScriptedIntervener
from expoft.envs.make import make_env
from expoft.envs.ogbench_domains import get_domain
from expoft.fileio import atomic_write
from expoft.progress import Progress
from expoft.report.plots import plot_learning_curves
from expoft.report.video import render_frame, write_gif
from expoft.train.checkpoint import load_pytree, save_pytree
from expoft.train.config import RunConfig

log = logging.getLogger(__name__)

PRETRAIN_CHUNK = 500  # imitation steps per compiled scan call


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.generic, jax.Array)):
        return value.item()
    return value


class RunDir:
    """The folder of one run. Refuses to write into a folder that already holds a run."""

    def __init__(self, out: str | Path, config: RunConfig, overwrite: bool = False):
        self.path = Path(out)
        if (self.path / "config.json").exists() and not overwrite:
            raise FileExistsError(f"{self.path} already holds a run; choose another --out or pass --overwrite")
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.write_json("config.json", to_jsonable(config))
        self._metrics = open(self.path / "metrics.jsonl", "w")

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.path / name, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode()))

    def log(self, row: dict) -> None:
        self._metrics.write(json.dumps(to_jsonable(row)) + "\n")
        self._metrics.flush()

    def close(self) -> None:
        self._metrics.close()


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluation_seed(cfg: RunConfig) -> int:
    """First reset seed of a run's evaluations: fixed, and disjoint from its training resets."""
    return 10_000 + 1000 * cfg.seed


def evaluate(
    agent: EXPOAgent,
    env,
    episodes: int,
    seed: int,
    policy: str = "otf",
    video: str | Path | None = None,
    video_episodes: int = 1,
) -> dict:
    """Run ``episodes`` episodes with reset seeds ``seed, seed+1, ...``.

    ``policy``: ``otf`` (EXPO's rule, the default) or ``base`` (the imitation policy alone).
    ``video``: a ``.gif`` of the first ``video_episodes`` episodes (``env`` made with ``render=True``).
    """
    if policy not in ("otf", "base"):
        raise ValueError(f"policy must be 'otf' or 'base', got {policy!r}")
    if video is not None and Path(video).suffix.lower() != ".gif":
        raise ValueError(f"videos are written as animated GIFs; name the file *.gif, got {video}")
    key = jax.random.PRNGKey(seed)
    successes, lengths, edited, frames = 0, [], [], []
    filming = False

    def film():
        if filming:
            frames.append(render_frame(env))

    chunked = ActionChunks(env, agent.config.exec_len, on_step=film)
    for e in range(episodes):
        obs, _ = chunked.reset(seed=seed + e)
        filming = video is not None and e < video_episodes
        film()
        done, steps = False, 0
        while not done:
            key, k = jax.random.split(key)
            if policy == "otf":
                action, info = act(agent, obs[None], k)
                edited.append(bool(info["edited"][0]))
            else:
                action = act_base(agent, obs[None], k)
            obs, _, terminated, truncated, step_info = chunked.step(np.asarray(action[0]))
            steps += len(step_info["transitions"])
            done = terminated or truncated
        successes += int(step_info["success"])
        lengths.append(steps)
    if video is not None:
        write_gif(frames, video)
    low, high = wilson_interval(successes, episodes)
    prefix = "eval" if policy == "otf" else "eval_base"
    result = {
        f"{prefix}/success": successes / episodes,
        f"{prefix}/success_ci_low": low,
        f"{prefix}/success_ci_high": high,
        f"{prefix}/episode_length": float(np.mean(lengths)),
        f"{prefix}/episodes": episodes,
    }
    if edited:
        result[f"{prefix}/edited_frac"] = float(np.mean(edited))
    return result


def offline_data(cfg: RunConfig, progress: bool) -> Dataset:
    if cfg.dataset is not None:
        return load_dataset(cfg.dataset, env=cfg.env, task=None)
    demos = DemosConfig(env=cfg.env, task=cfg.task, episodes=cfg.demo_episodes, seed=cfg.seed, noise=cfg.demo_noise)
    _, ds, _ = get_or_generate(demos, progress=progress)
    return ds


def dataset_chunks(ds: Dataset, chunk_len: int) -> np.ndarray:
    """``[N, chunk_len, A]``: the actions from every step of ``ds`` on, within its episode (steps past
    the episode's end repeat its last action, as in replay sampling)."""
    if chunk_len == 1:
        return ds.actions[:, None]
    buffer = ReplayBuffer(ds.obs_dim, ds.action_dim, 1, offline=ds)
    index = np.arange(ds.num_transitions)
    return buffer.chunks_at(index, source="offline", chunk_len=chunk_len, discount=1.0).actions


def pretrain_base(agent: EXPOAgent, ds: Dataset, steps: int, seed: int, progress: bool = True):
    """``steps`` imitation steps of the base on all of ``ds`` (chunks of ``chunk_len`` actions);
    returns ``(agent, losses)``."""
    obs = jax.numpy.asarray(ds.observations)
    actions = jax.numpy.asarray(dataset_chunks(ds, agent.config.chunk_len).reshape(ds.num_transitions, -1))
    rng = np.random.default_rng(seed)
    bar = Progress(steps, "pretrain", unit="step", enabled=progress)
    losses = []
    done = 0
    while done < steps:
        n = min(PRETRAIN_CHUNK, steps - done)
        index = rng.integers(0, ds.num_transitions, size=(n, agent.config.batch_size))
        agent, chunk_losses = pretrain(agent, obs, actions, index)
        losses.append(np.asarray(chunk_losses))
        done += n
        bar.update(n)
        bar.set(loss=f"{float(losses[-1][-50:].mean()):.4f}")
    bar.close()
    return agent, np.concatenate(losses) if losses else np.zeros(0)


def finetune(cfg: RunConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Pretrain the base on the offline data, then run online EXPO; returns the summary."""
    start_time = time.perf_counter()
    run = RunDir(out, cfg, overwrite)
    domain = get_domain(cfg.env)
    ds = offline_data(cfg, progress)
    if ds.obs_dim != domain.obs_dim or ds.action_dim != domain.action_dim:
        raise ValueError(f"dataset dims ({ds.obs_dim}, {ds.action_dim}) do not fit {domain.name}")
    if not ds.has_task:
        raise ValueError("the offline data has no rewards; pass a dataset labelled for the task")
    if cfg.agent.base_training == "successes" and not np.any(ds.episode_success):
        raise ValueError(
            "base_training='successes' imitates successful episodes, and the offline data has none; "
            "use demonstrations that reach the goal, or --base-training all|frozen"
        )
    agent = EXPOAgent.create(cfg.agent, domain.obs_dim, domain.action_dim, seed=cfg.seed)
    losses = np.zeros(0)
    if cfg.base_from is not None:
        agent = with_base_from(agent, cfg.base_from)
        run.log({"phase": "pretrain", "pretrain/base_from": str(cfg.base_from)})
    elif cfg.pretrain_steps:
        agent, losses = pretrain_base(agent, ds, cfg.pretrain_steps, cfg.seed, progress)
        run.log(
            {
                "phase": "pretrain",
                "pretrain/steps": cfg.pretrain_steps,
                "pretrain/final_loss": float(losses[-100:].mean()),
            }
        )

    env = make_env(cfg.env, cfg.task)
    eval_env = make_env(cfg.env, cfg.task)
    eval_seed = evaluation_seed(cfg)
    before = evaluate(agent, eval_env, cfg.eval_episodes, eval_seed)
    before_base = evaluate(agent, eval_env, cfg.eval_episodes, eval_seed, policy="base")
    run.log({"env_step": 0, **before, **before_base})
    log.info("before RL: OTF success %.2f, base alone %.2f", before["eval/success"], before_base["eval_base/success"])

    buffer = ReplayBuffer(domain.obs_dim, domain.action_dim, cfg.buffer_capacity, offline=ds)
    rng = np.random.default_rng(cfg.seed)
    act_key = jax.random.PRNGKey(cfg.seed + 1)
    h, agent_cfg = cfg.agent.exec_len, cfg.agent
    intervener = None
    if cfg.intervene == "scripted":
        intervener = ScriptedIntervener(
            env, cfg.env, cfg.task, seed=cfg.seed, patience=cfg.intervene_patience, decay=cfg.intervene_decay
        )
    env = ActionChunks(env, h, intervener=intervener)
    obs, _ = env.reset(seed=cfg.seed)
    episode_successes: deque[bool] = deque(maxlen=20)
    episode_interventions: deque[float] = deque(maxlen=20)  # fraction of each episode's steps
    episode_steps = episode_intervened = episodes_with_intervention = 0
    episodes, total_successes, update_calls = 0, 0, 0
    pending: list[dict] = []
    acted_edited: list[bool] = []
    update_time = act_time = 0.0
    evals = [before]
    first_95 = None
    bar = Progress(cfg.env_steps, "finetune", unit="step", enabled=progress)
    step = 0
    while step < cfg.env_steps:
        prev = step
        t0 = time.perf_counter()
        if step < cfg.random_steps:
            chunk = rng.uniform(-1.0, 1.0, (h, domain.action_dim)).astype(np.float32)
        else:
            a, info = act(agent, obs[None], jax.random.fold_in(act_key, step + 1))
            chunk = np.asarray(a[0])
            acted_edited.append(bool(info["edited"][0]))
        act_time += time.perf_counter() - t0
        obs, _, terminated, truncated, info = env.step(chunk)
        episode_ended = terminated or truncated
        for t in info["transitions"]:
            ended = t.terminated or t.truncated
            buffer.add(
                t.observation,
                t.action,
                t.reward,
                t.next_observation,
                t.terminated,
                ended,
                success=ended and bool(info["success"]),
                intervened=t.intervened,
            )
        step += len(info["transitions"])
        episode_steps += len(info["transitions"])
        episode_intervened += sum(t.intervened for t in info["transitions"])
        if episode_ended:
            episodes += 1
            episode_successes.append(bool(info["success"]))
            total_successes += int(info["success"])
            episode_interventions.append(episode_intervened / episode_steps)
            episodes_with_intervention += episode_intervened > 0
            episode_steps = episode_intervened = 0
            obs, _ = env.reset(seed=cfg.seed + 1_000_000 + episodes)

        calls = _update_calls_due(cfg, prev, step, episode_ended) if episodes >= cfg.start_episodes else 0
        if calls:
            t0 = time.perf_counter()
            for _ in range(calls):
                pool = buffer.sample(
                    rng,
                    agent_cfg.pool_size,
                    discount=agent_cfg.discount,
                    chunk_len=h,
                    num_offline=agent_cfg.pool_offline_count,
                )
                base_batch = None
                if agent_cfg.base_needs_own_batch:
                    base_batch = buffer.sample(
                        rng,
                        agent_cfg.batch_size,
                        discount=agent_cfg.discount,
                        chunk_len=agent_cfg.chunk_len,
                        offline_fraction=agent_cfg.offline_fraction,
                        successful_only=agent_cfg.base_training == "successes",
                    )
                agent, metrics = update(agent, pool, base_batch)
                pending.append(metrics)
            jax.block_until_ready(metrics)  # dispatch is async: time the work, not the call
            update_calls += calls
            update_time += time.perf_counter() - t0

        last = step >= cfg.env_steps
        if _crossed(prev, step, cfg.log_every) or last:
            row = _log_row(step, episodes, total_successes, episode_successes, update_calls, pending, acted_edited)
            row.update(
                {
                    "time/update_s": update_time,
                    "time/act_s": act_time,
                    "time/elapsed_s": time.perf_counter() - start_time,
                    "train/successful_online_steps": buffer.successful_steps[1],
                    "train/intervened_steps": buffer.intervened_steps,
                    "train/intervention_rate": float(np.mean(episode_interventions)) if episode_interventions else 0.0,
                    "train/episodes_with_intervention": episodes_with_intervention,
                }
            )
            if pending and not math.isfinite(row["critic/loss"]):
                run.log(row)
                raise FloatingPointError(
                    f"training diverged at env step {step}: critic loss {row['critic/loss']}; "
                    "lower the learning rates or check the rewards"
                )
            run.log(row)
            pending, acted_edited = [], []
            grad_per_s = update_calls * agent_cfg.utd / update_time if update_time else 0.0
            bar.set(success=f"{row['train/rolling_success']:.2f}", calls=update_calls, grad_per_s=f"{grad_per_s:.0f}")
        if _crossed(prev, step, cfg.eval_every) or last:
            result = evaluate(agent, eval_env, cfg.eval_episodes, eval_seed)
            run.log({"env_step": step, **result})
            evals.append({"env_step": step, **result})
            if first_95 is None and result["eval/success"] >= 0.95:
                first_95 = step
            bar.set(eval=f"{result['eval/success']:.2f}")
        if _crossed(prev, step, cfg.checkpoint_every) or last:
            save_pytree(agent, run.path / "checkpoints" / f"agent_{step}.npz", env_step=np.int64(step))
        bar.update(step - prev)
    bar.close()
    buffer.save(run.path / "checkpoints" / "buffer.npz")

    summary = {
        "env": domain.name,
        "task": cfg.task,
        "seed": cfg.seed,
        "offline_transitions": ds.num_transitions,
        "pretrain_final_loss": float(losses[-100:].mean()) if len(losses) else None,
        "bc_success": before_base["eval_base/success"],
        "success_before_rl": before["eval/success"],
        "final_success": evals[-1]["eval/success"],
        "final_success_ci": [evals[-1]["eval/success_ci_low"], evals[-1]["eval/success_ci_high"]],
        "env_steps": step,
        "env_steps_to_95": first_95,
        "update_calls": update_calls,
        "train_episodes": episodes,
        "train_success_rate": total_successes / max(episodes, 1),
        "intervened_steps": buffer.intervened_steps,
        "intervention_rate": buffer.intervened_steps / max(step, 1),
        "episodes_with_intervention": episodes_with_intervention,
        "wall_seconds": round(time.perf_counter() - start_time, 1),
        "update_s": round(update_time, 1),
        "critic_steps_per_s": round(update_calls * cfg.agent.utd / update_time, 2) if update_time else None,
        "evaluations": [{"env_step": e.get("env_step", 0), "success": e["eval/success"]} for e in evals],
    }
    run.write_json("summary.json", summary)
    plot_learning_curves(
        {f"EXPO seed {cfg.seed}": run.path},
        run.path / "learning_curve.png",
        f"{domain.name} task {cfg.task}",
        levels={f"imitation only ({summary['bc_success']:.0%})": summary["bc_success"]},
    )
    run.close()
    return summary


def _crossed(prev: int, step: int, every: int) -> int:
    """How many multiples of ``every`` lie in ``(prev, step]``."""
    return step // every - prev // every


def _update_calls_due(cfg: RunConfig, prev: int, step: int, episode_ended: bool) -> int:
    """Update calls due after the environment moved from step ``prev`` to ``step`` (one chunk):
    one per multiple of ``update_every`` passed since ``start_training``, or
    ``updates_per_episode`` when an episode has just ended."""
    if step < cfg.start_training:
        return 0
    if cfg.updates_per_episode:
        return cfg.updates_per_episode if episode_ended else 0
    return _crossed(max(prev, cfg.start_training - 1), step, cfg.update_every)


def _log_row(step, episodes, total_successes, recent, update_calls, pending, acted_edited) -> dict:
    row = {
        "env_step": step,
        "train/episodes": episodes,
        "train/success_rate": total_successes / max(episodes, 1),
        "train/rolling_success": float(np.mean(recent)) if recent else 0.0,
        "train/update_calls": update_calls,
        "otf/edited_frac": float(np.mean(acted_edited)) if acted_edited else None,
    }
    if pending:
        stacked = jax.tree.map(lambda *xs: np.mean([float(x) for x in xs]), *pending)
        row.update(stacked)
    return row


def config_from_json(data: dict) -> RunConfig:
    """Rebuild a RunConfig from its ``config.json``."""
    agent = {k: tuple(v) if isinstance(v, list) else v for k, v in data["agent"].items()}
    fields = {**data, "agent": EXPOConfig(**agent)}
    for name in ("dataset", "base_from"):
        if fields.get(name) is not None:
            fields[name] = Path(fields[name])
    return RunConfig(**fields)


def latest_checkpoint(run_dir: Path) -> Path:
    found = sorted((run_dir / "checkpoints").glob("agent_*.npz"), key=lambda p: int(p.stem.split("_")[1]))
    if not found:
        raise FileNotFoundError(f"no checkpoints in {run_dir / 'checkpoints'}")
    return found[-1]


def load_run_agent(run_dir: str | Path, checkpoint: str | Path | None = None) -> tuple[RunConfig, EXPOAgent, int]:
    """The config and agent of a run folder (latest checkpoint unless one is named)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} does not exist; is {run_dir} an expoft run folder?")
    cfg = config_from_json(json.loads(config_path.read_text()))
    domain = get_domain(cfg.env)
    template = EXPOAgent.create(cfg.agent, domain.obs_dim, domain.action_dim, seed=cfg.seed)
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    agent, extra = load_pytree(template, path)
    return cfg, agent, int(extra.get("env_step", 0))


BASE_FIELDS = ("base", "flow_steps", "base_width", "base_blocks")


def with_base_from(agent: EXPOAgent, run_dir: str | Path) -> EXPOAgent:
    """``agent`` with the base policy (and its EMA copy) of another run's latest checkpoint.
    The base optimiser starts afresh; critic, edit policy and temperature stay as they are."""
    source_cfg, source, _ = load_run_agent(run_dir)
    mismatched = [
        f"{name}: {getattr(source_cfg.agent, name)!r} there, {getattr(agent.config, name)!r} here"
        for name in BASE_FIELDS
        if getattr(source_cfg.agent, name) != getattr(agent.config, name)
    ]
    if source.obs_dim != agent.obs_dim or source.action_dim != agent.action_dim:
        mismatched.append(
            f"dims ({source.obs_dim}, {source.action_dim}) there, ({agent.obs_dim}, {agent.action_dim}) here"
        )
    if mismatched:
        raise ValueError(f"the base in {run_dir} does not fit this run's agent: " + "; ".join(mismatched))
    base = agent.base.replace(params=source.base.params, opt_state=agent.base.tx.init(source.base.params))
    return agent.replace(base=base, base_ema=source.base_ema)


def evaluate_run(
    run_dir: str | Path,
    episodes: int,
    seed: int,
    checkpoint: str | Path | None = None,
    video: str | Path | None = None,
    video_episodes: int = 1,
) -> dict:
    cfg, agent, step = load_run_agent(run_dir, checkpoint)
    env = make_env(cfg.env, cfg.task, render=video is not None)
    result = evaluate(agent, env, episodes, seed, video=video, video_episodes=video_episodes)
    if video is not None:
        result["video"] = str(video)
    return {"run": str(run_dir), "env_step": step, **result}


def pretrain_only(cfg: RunConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Imitation pretraining of the base; saves ``checkpoints/agent_0.npz`` and a summary."""
    run = RunDir(out, cfg, overwrite)
    domain = get_domain(cfg.env)
    ds = offline_data(cfg, progress)
    agent = EXPOAgent.create(cfg.agent, domain.obs_dim, domain.action_dim, seed=cfg.seed)
    agent, losses = pretrain_base(agent, ds, cfg.pretrain_steps, cfg.seed, progress)
    save_pytree(agent, run.path / "checkpoints" / "agent_0.npz", env_step=np.int64(0))
    result = evaluate(agent, make_env(cfg.env, cfg.task), cfg.eval_episodes, evaluation_seed(cfg), policy="base")
    summary = {
        "pretrain_steps": cfg.pretrain_steps,
        "final_loss": float(losses[-100:].mean()) if len(losses) else None,
        **result,
    }
    run.log({"phase": "pretrain", **summary})
    run.write_json("summary.json", summary)
    run.close()
    return summary

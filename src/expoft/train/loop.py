"""Pretraining, online fine-tuning and evaluation; every run writes one folder.

Run folder (``out``)::

    config.json        the resolved RunConfig
    metrics.jsonl      one row per log interval (namespaced keys) and per evaluation
    checkpoints/       agent_<step>.npz (all arrays, no pickle), state_<step>.json (what a resume
                       needs) and buffer/ (the online replay data, in segments)
    summary.json       success before RL, final success, steps, wall time
    learning_curve.png success against environment steps
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from expoft.agents import create_agent
from expoft.agents.baselines_config import BaselineConfig
from expoft.agents.common import evaluation_step, pretrain, update
from expoft.agents.expo import EXPOConfig
from expoft.data.dataset import Dataset, DatasetError, label_for_task, load_dataset
from expoft.data.generate import DemosConfig, get_or_generate
from expoft.data.replay import ReplayBuffer
from expoft.encoders import EncoderConfig
from expoft.envs.chunks import ActionChunks
from expoft.envs.make import make_env
from expoft.envs.ogbench_domains import get_domain
from expoft.fileio import atomic_write, move_aside
from expoft.obs import PIXELS, PROPRIO, PixelSpec, add_batch_axis
from expoft.progress import Progress
from expoft.report.sinks import MetricSink, open_sinks
from expoft.report.video import check_video_path, render_frame, write_video
from expoft.train.checkpoint import load_pytree, save_pytree
from expoft.train.config import RunConfig

log = logging.getLogger(__name__)

PRETRAIN_CHUNK = 500  # imitation steps per compiled scan call
PRETRAIN_CHUNK_PIXELS = 10  # pixel agents unroll the scan (expoft.agents.common.scan_unroll): keep it short


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


RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    "metrics.replayed.jsonl",
    "summary.json",
    "learning_curve.png",
    "checkpoints",
)


class RunDir:
    """The folder of one run. Refuses to write into a folder that already holds a run, unless
    ``overwrite``: then the old run's files are moved aside to ``replaced-<time>/`` in the folder,
    and deleted only once the new run has written its first checkpoint (:meth:`checkpoint_written`):
    a new run that fails early leaves the old one recoverable."""

    def __init__(self, out: str | Path, config: RunConfig, overwrite: bool = False):
        self.path = Path(out)
        self.replaced: Path | None = None
        if (self.path / "config.json").exists():
            if not overwrite:
                raise FileExistsError(
                    f"{self.path} already holds a run; choose another --out, continue it with "
                    f"`expoft finetune --resume {self.path}`, or replace it with --overwrite"
                )
            self.replaced = move_aside(self.path, RUN_FILES)  # only what a run writes; the user's files stay
            log.info("moved the run in %s aside to %s until this run's first checkpoint", self.path, self.replaced)
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.write_json("config.json", to_jsonable(config))
        self._metrics = open(self.path / "metrics.jsonl", "w")
        self.sinks = self._open_sinks(config, resumed=False)

    def _open_sinks(self, config: RunConfig, resumed: bool, purge_step: int | None = None) -> list[MetricSink]:
        return open_sinks(self.path, config.log, to_jsonable(config), wandb_project=config.wandb_project,
                          wandb_mode=config.wandb_mode, resumed=resumed, purge_step=purge_step)  # fmt: skip

    def checkpoint_written(self) -> None:
        """The new run can be continued from now on: delete the run it replaced (if any)."""
        if self.replaced is not None:
            shutil.rmtree(self.replaced)
            log.info("deleted %s (the run this one replaced)", self.replaced)
            self.replaced = None

    @classmethod
    def reopen(cls, out: str | Path, metrics_bytes: int, config: RunConfig, resume_step: int | None = None) -> RunDir:
        """An existing run folder, its metrics cut back to the first ``metrics_bytes`` bytes (what was
        logged up to the checkpoint being resumed). The cut rows are appended to
        ``metrics.replayed.jsonl``, not thrown away; the resumed run logs them again. ``resume_step``:
        the env step an online run resumes at; TensorBoard drops what it had from there on."""
        run = cls.__new__(cls)
        run.path, run.replaced, run.sinks = Path(out), None, []
        metrics = run.path / "metrics.jsonl"
        data = metrics.read_bytes() if metrics.exists() else b""
        if len(data) < metrics_bytes:
            raise ValueError(
                f"{metrics} holds {len(data)} bytes, fewer than the {metrics_bytes} the checkpoint "
                "recorded; it was truncated or replaced since"
            )
        if len(data) > metrics_bytes:
            cut = data[metrics_bytes:]
            with open(run.path / "metrics.replayed.jsonl", "ab") as f:
                # a row cut short by a kill ends its fragment, so the next one starts on a line of its own
                f.write(cut if cut.endswith(b"\n") else cut + b"\n")
        run._metrics = open(metrics, "r+")
        run._metrics.truncate(metrics_bytes)
        run._metrics.seek(metrics_bytes)
        run.sinks = run._open_sinks(config, resumed=True, purge_step=resume_step)
        return run

    def metrics_bytes(self) -> int:
        self._metrics.flush()
        return self._metrics.tell()

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.path / name, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode()))

    def log(self, row: dict) -> None:
        row = to_jsonable(row)
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        for sink in self.sinks:
            sink.log(row)

    def video(self, frames: Sequence[np.ndarray], name: str, step: int, fps: int = 20) -> Path:
        """Write ``frames`` to RUN/videos/``name`` (.gif or .mp4) and hand them to the sinks."""
        path = write_video(frames, self.path / "videos" / name, fps)
        for sink in self.sinks:
            sink.video(f"video/{Path(name).stem}", frames, path, step, fps)
        return path

    def close(self) -> None:
        self._metrics.close()
        for sink in self.sinks:
            sink.close()
        self.sinks = []


NONFINITE_KEYS = ("critic/loss", "critic/q_mean", "critic/q_min", "critic/q_max", "edit/loss", "base/loss")


def stop_if_diverged(metrics: dict, last_finite, run: RunDir, where: str, name: str, row: dict) -> None:
    """Divergence guard: stop at the first update call with a non-finite loss or Q-value, after
    saving the agent as it was before that call to checkpoints/``name``.npz. ``where``: the call,
    for the message; ``row``: what locates it in metrics.jsonl (e.g. its env step)."""
    bad = [k for k in NONFINITE_KEYS if k in metrics and not math.isfinite(metrics[k])]
    if metrics.get("critic/grad_nonfinite", 0) or metrics.get("critic/nonfinite", 0):
        bad.append("critic gradients" if metrics.get("critic/grad_nonfinite", 0) else "critic values")
    if not bad:
        return
    path = run.path / "checkpoints" / f"{name}.npz"
    save_pytree(last_finite, path, env_step=np.int64(row.get("env_step", 0)))
    run.log({**row, "phase": "diverged", "diverged": bad, **metrics})
    raise FloatingPointError(
        f"training diverged at {where}: non-finite {', '.join(bad)}. The agent before that call is "
        f"saved in {path} (`expoft eval {run.path} --checkpoint {path}`); lower the learning rates, "
        "check the rewards, or resume from an earlier checkpoint with other settings"
    )


def update_call(
    cfg: RunConfig,
    agent,
    buffer: ReplayBuffer,
    rng: np.random.Generator,
    *,
    offline_only: bool = False,
    external=None,
    external_seed: int | None = None,
    cache=None,
    call: int = 0,
):
    """One update call of the agent on batches drawn from ``buffer``: the pool of executed
    chunks (offline and online rows as the agent's config mixes them) and, when the base learns
    from its own data, the base's batch. ``offline_only``: every row from the offline data (the
    offline phase). ``external``: the external base, asked for its samples at the pool's next
    observations with ``external_seed``. ``cache``: a ``TargetCandidateCache`` that supplies the
    base samples at the pool's next observations instead (``call``: this call's number, for its
    staleness). Returns ``(agent, metrics as floats)``."""
    a = cfg.agent
    num_offline = a.pool_size if offline_only else a.pool_offline_count
    pool = buffer.sample(rng, a.pool_size, discount=a.discount, chunk_len=a.exec_len, num_offline=num_offline)
    base_batch = None
    if a.base_needs_own_batch:
        base_batch = buffer.sample(
            rng, a.base_batch_size, discount=a.discount, chunk_len=a.chunk_len,
            offline_fraction=1.0 if offline_only else a.offline_fraction,
            successful_only=a.base_training == "successes",
        )  # fmt: skip
    next_base = None if external is None else external(pool.next_observations, external_seed, "update")
    if cache is not None:
        next_base = cache.lookup(agent, pool, call)
    new_agent, metrics = update(agent, pool._replace(last=None), base_batch, next_base)
    return new_agent, {k: float(v) for k, v in metrics.items()}  # float() waits for the work: honest timing


def paired_difference(a: list[int], b: list[int], z: float = 1.96) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired episodes (same reset seeds) and its normal-approximation
    interval ``mean +- z * sd / sqrt(n)``; pairing removes the variance the two share (how hard
    each reset is)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference needs two equally long, non-empty lists, got {len(a)} and {len(b)}")
    d = np.asarray(a, float) - np.asarray(b, float)
    half = z * float(d.std(ddof=1)) / np.sqrt(len(d)) if len(d) > 1 else float("inf")
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


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
    agent,
    env,
    episodes: int,
    seed: int,
    policy: str = "otf",
    video: str | Path | None = None,
    video_episodes: int = 1,
    external=None,
) -> dict:
    """Run ``episodes`` episodes with reset seeds ``seed, seed+1, ...``.

    ``policy``: ``otf`` (the agent's evaluation policy: EXPO's OTF rule, a baseline's own) or
    ``base`` (the imitation policy alone).
    ``video``: a ``.gif`` or ``.mp4`` of the first ``video_episodes`` episodes (``env`` made with
    ``render=True``).
    ``external``: an ``ExternalCandidates`` whose base replaces the agent's own (EXPO).
    """
    if policy not in ("otf", "base"):
        raise ValueError(f"policy must be 'otf' or 'base', got {policy!r}")
    if video is not None:
        check_video_path(video)
    key = jax.random.PRNGKey(seed)
    successes, lengths, returns, edited, not_first, frames = [], [], [], [], [], []
    first_q, discounted = [], []  # critic calibration: Q of each episode's first decision vs its return
    gamma = agent.config.discount
    filming = False

    def film():
        if filming:
            frames.append(render_frame(env))

    chunked = ActionChunks(env, agent.config.exec_len, on_step=film)
    for e in range(episodes):
        obs, _ = chunked.reset(seed=seed + e)
        filming = video is not None and e < video_episodes
        film()
        done, steps, episode_return, discounted_return = False, 0, 0.0, 0.0
        while not done:
            draw = (seed + e) * 1009 + steps  # the external base's seed: fixed per episode and step
            batch = add_batch_axis(obs)
            if policy == "base" and external is not None:
                action = external(batch, draw, num_samples=1)[:, 0]
            else:
                base = None if policy == "base" or external is None else external(batch, draw)
                key, action, info = evaluation_step(agent, batch, key, base, policy)
                # one transfer of what is read here: indexing device arrays dispatches an op each
                action, info = jax.device_get((action, {k: info[k] for k in ("edited", "not_first", "q") if k in info}))
                if "edited" in info:
                    edited.append(bool(info["edited"][0]))
                    not_first.append(bool(info["not_first"][0]))
                if steps == 0 and "q" in info:
                    first_q.append(float(info["q"][0]))
            obs, reward, terminated, truncated, step_info = chunked.step(np.asarray(action[0]))
            for t in step_info["transitions"]:
                discounted_return += gamma**steps * t.reward
                steps += 1
            episode_return += reward
            done = terminated or truncated
        successes.append(int(step_info["success"]))
        lengths.append(steps)
        returns.append(episode_return)
        discounted.append(discounted_return)
    if video is not None:
        write_video(frames, video)
    low, high = wilson_interval(sum(successes), episodes)
    prefix = "eval" if policy == "otf" else "eval_base"
    result = {
        f"{prefix}/success": sum(successes) / episodes,
        f"{prefix}/success_ci_low": low,
        f"{prefix}/success_ci_high": high,
        f"{prefix}/episode_length": float(np.mean(lengths)),
        # undiscounted, under the run's reward: with OGBench's partial credit (cube-double P2) it
        # shows progress (cubes placed) that the 0/1 success hides
        f"{prefix}/return": float(np.mean(returns)),
        f"{prefix}/episodes": episodes,
        # per episode, in reset-seed order: the base alone and the policy pair up episode by episode
        f"{prefix}/successes": successes,
    }
    if edited:
        result[f"{prefix}/edited_frac"] = float(np.mean(edited))
        result[f"{prefix}/not_first_frac"] = float(np.mean(not_first))
    if first_q:
        result.update(calibration(first_q, discounted, prefix))
    return result


def calibration(q: list[float], returns: list[float], prefix: str = "eval") -> dict:
    """The critic against what happened: Q of each evaluation episode's first decision (the
    subset-min target Q of the chosen candidate) and the episode's observed discounted return,
    their means and correlation (None when either is constant, e.g. no episode succeeded)."""
    q_arr, g_arr = np.asarray(q), np.asarray(returns)
    constant = len(q_arr) < 2 or np.std(q_arr) == 0 or np.std(g_arr) == 0
    return {
        f"{prefix}/first_q": float(q_arr.mean()),
        f"{prefix}/first_return": float(g_arr.mean()),
        f"{prefix}/q_return_corr": None if constant else float(np.corrcoef(q_arr, g_arr)[0, 1]),
    }


def offline_data(cfg: RunConfig, progress: bool) -> Dataset:
    """The run's offline data (``cfg.dataset``, or generated demos) with rewards, terminals and
    episode success for the run's task and reward (:func:`task_labels`)."""
    if cfg.dataset is not None:
        ds = load_dataset(cfg.dataset, env=cfg.env, task=None)
        return task_labels(ds, cfg, str(cfg.dataset))
    _, ds, _ = get_or_generate(demos_config(cfg), progress=progress)
    return task_labels(ds, cfg, "the generated demos")


def task_labels(ds: Dataset, cfg: RunConfig, source: str) -> Dataset:
    """``ds`` labelled for ``cfg.task`` with ``cfg.reward``. Task-agnostic (play) data is labelled
    here; data expoft labelled with the other reward is relabelled (the labels follow from its
    recorded states; the file is not touched); data labelled for another task is refused. Rewards
    that did not come from expoft (no ``task``/``reward`` in its meta) are used as they are."""
    if not ds.has_task:
        return label_for_task(ds, cfg.env, cfg.task, cfg.reward)
    task, reward = ds.meta.get("task"), ds.meta.get("reward")
    if task is not None and task != cfg.task:
        raise DatasetError(
            f"{source} is labelled for task {task}, but the run is for task {cfg.task}: pass --task {task}, "
            f"or data labelled for task {cfg.task} (task-agnostic play data is labelled for the run's task)"
        )
    if reward is not None and reward != cfg.reward:
        return label_for_task(ds, cfg.env, cfg.task, cfg.reward)
    return ds


def demos_config(cfg: RunConfig) -> DemosConfig:
    """The demonstrations a run without ``dataset`` generates (or reuses from the cache)."""
    seed = cfg.seed if cfg.demo_seed is None else cfg.demo_seed
    return DemosConfig(
        env=cfg.env, task=cfg.task, episodes=cfg.demo_episodes, seed=seed, noise=cfg.demo_noise,
        gripper_noise=cfg.demo_gripper_noise, disturb=cfg.demo_disturb,
    )  # fmt: skip


def dataset_chunks(ds: Dataset, chunk_len: int) -> np.ndarray:
    """``[N, chunk_len, A]``: the actions from every step of ``ds`` on, within its episode (steps past
    the episode's end repeat its last action, as in replay sampling)."""
    if chunk_len == 1:
        return ds.actions[:, None]
    buffer = ReplayBuffer(ds.obs_dim, ds.action_dim, 1, offline=ds)
    index = np.arange(ds.num_transitions)
    return buffer.chunks_at(index, source="offline", chunk_len=chunk_len, discount=1.0).actions


def make_agent(cfg: RunConfig):
    """A fresh agent of ``cfg.algorithm`` for ``cfg.env`` (on pixels with ``cfg.pixels``)."""
    domain = get_domain(cfg.env)
    return create_agent(cfg.algorithm, cfg.agent, cfg.obs_spec, domain.action_dim, cfg.seed, cfg.baseline)


def make_run_env(cfg: RunConfig, render: bool = False):
    """The run's environment: state observations, or pixel ones with ``cfg.pixels``."""
    if cfg.pixels is None:
        return make_env(cfg.env, cfg.task, render=render, episode_steps=cfg.episode_steps, reward=cfg.reward)
    from expoft.envs.pixels import make_pixel_env  # MuJoCo rendering: only pixel runs need it

    return make_pixel_env(
        cfg.env, cfg.task, cfg.pixels, episode_steps=cfg.episode_steps, render=render, reward=cfg.reward
    )


def offline_frames(cfg: RunConfig, ds: Dataset, progress: bool = True) -> np.ndarray | None:
    """The offline data's frames for a pixel run (rendered once, then cached); None for states.
    A ``cfg.dataset`` file keeps its frames beside it (`expoft data render`, or decoded from a
    LeRobot dataset's videos by `expoft data import lerobot`); generated demos in the data cache."""
    if cfg.pixels is None:
        return None
    from expoft.data.frames import frames_for

    return frames_for(cfg.dataset if cfg.dataset is not None else ds, cfg.pixels, progress=progress)


def dataset_observations(ds: Dataset, frames: np.ndarray | None, spec: PixelSpec | None):
    """Every transition's observation: ``[N, D]`` states, or pixel observations from ``frames``."""
    if spec is None:
        return ds.observations
    assert frames is not None, "pixel observations are made from the dataset's frames"
    return {PIXELS: frames[ds.frame_rows()], PROPRIO: ds.observations[:, : spec.proprio_dim]}


@dataclasses.dataclass(frozen=True)
class PretrainPoint:
    """How far a pretraining got: what continuing it needs besides the agent."""

    done: int
    """Imitation steps taken."""
    rng: Mapping[str, Any]
    """``numpy.random.Generator.bit_generator.state`` of the minibatch sampling."""
    loss_chunks: tuple[np.ndarray, ...]
    """The loss of every step so far, in pieces (joined only when asked for: a long pretraining
    would otherwise copy its whole history at every chunk)."""

    @property
    def losses(self) -> np.ndarray:
        return np.concatenate(self.loss_chunks) if self.loss_chunks else np.zeros(0, np.float32)


def pretrain_base(
    agent,
    ds: Dataset,
    steps: int,
    seed: int,
    progress: bool = True,
    frames: np.ndarray | None = None,
    *,
    start: PretrainPoint | None = None,
    on_chunk: Callable[[Any, PretrainPoint], None] | None = None,
):
    """``steps`` imitation steps of the base on all of ``ds`` (chunks of ``chunk_len`` actions);
    ``frames``: the dataset's frames when the agent sees pixels. Returns ``(agent, losses)``.

    ``start``: where an interrupted pretraining stopped (``agent`` is then its agent): it goes on
    exactly as it would have. ``on_chunk(agent, point)`` is called after every compiled chunk of
    steps, e.g. to write a checkpoint."""
    spec = agent.obs_dim if isinstance(agent.obs_dim, PixelSpec) else None
    obs = jax.tree.map(jax.numpy.asarray, dataset_observations(ds, frames, spec))
    actions = jax.numpy.asarray(dataset_chunks(ds, agent.config.chunk_len).reshape(ds.num_transitions, -1))
    rng = np.random.default_rng(seed)
    done, losses = 0, []
    if start is not None:
        rng.bit_generator.state = start.rng
        done, losses = start.done, [np.asarray(start.losses, np.float32)]
    bar = Progress(steps, "pretrain", unit="step", enabled=progress, initial=done)
    while done < steps:
        n = min(PRETRAIN_CHUNK_PIXELS if spec is not None else PRETRAIN_CHUNK, steps - done)
        index = rng.integers(0, ds.num_transitions, size=(n, agent.config.batch_size))
        agent, chunk_losses = pretrain(agent, obs, actions, index)
        losses.append(np.asarray(chunk_losses))
        done += n
        bar.update(n)
        bar.set(loss=f"{float(losses[-1][-50:].mean()):.4f}")
        if on_chunk is not None:
            on_chunk(agent, PretrainPoint(done, rng.bit_generator.state, tuple(losses)))
    bar.close()
    return agent, np.concatenate(losses) if losses else np.zeros(0)


def config_from_json(data: dict) -> RunConfig:
    """Rebuild a RunConfig from its ``config.json``."""

    def tuples(d: dict) -> dict:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

    agent = tuples(data["agent"])
    if isinstance(agent.get("encoder"), dict):
        agent["encoder"] = EncoderConfig(**tuples(agent["encoder"]))
    fields = {**data, "agent": EXPOConfig(**agent)}
    if data.get("pixels") is not None:
        fields["pixels"] = PixelSpec(**tuples(data["pixels"]))
    if "baseline" in data:
        fields["baseline"] = BaselineConfig(**tuples(data["baseline"]))
    for name in ("dataset", "base_from"):
        if fields.get(name) is not None:
            fields[name] = Path(fields[name])
    return RunConfig(**fields)


def same_config(written, planned: dict) -> bool:
    """Whether ``written`` (a config as stored in config.json or a checkpoint record) is the
    config ``planned`` (``to_jsonable`` of a RunConfig). Compared as configs, not as JSON: a field
    added to RunConfig after the file was written is missing from it and takes its default, which
    is no difference. An unreadable one differs."""
    try:
        return to_jsonable(config_from_json(written)) == planned
    except (KeyError, TypeError, ValueError):
        return False


def latest_checkpoint(run_dir: Path) -> Path:
    found = sorted((run_dir / "checkpoints").glob("agent_*.npz"), key=lambda p: int(p.stem.split("_")[1]))
    if not found:
        raise FileNotFoundError(f"no checkpoints in {run_dir / 'checkpoints'}")
    return found[-1]


def load_run_agent(run_dir: str | Path, checkpoint: str | Path | None = None) -> tuple[RunConfig, Any, int]:
    """The config and agent of a run folder (latest checkpoint unless one is named)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} does not exist; is {run_dir} an expoft run folder?")
    cfg = config_from_json(json.loads(config_path.read_text()))
    template = make_agent(cfg)
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    agent, extra = load_pytree(template, path)
    return cfg, agent, int(extra.get("env_step", 0))


BASE_FIELDS = ("base", "chunk_len", "flow_steps", "base_width", "base_blocks")


def with_base_from(agent, source_path: str | Path):
    """``agent`` with the base policy (and its EMA copy) of another run: ``source_path`` is a run
    folder (its newest checkpoint) or one checkpoint file of it, ``RUN/checkpoints/agent_<step>.npz``
    (``agent_0.npz`` of a fine-tuning run is its base as pretrained, before RL trained it further).
    The base optimiser starts afresh; critic, edit policy and temperature stay as they are."""
    source_path = Path(source_path)
    run_dir, checkpoint = source_path, None
    if source_path.suffix == ".npz":
        if not source_path.is_file():
            raise FileNotFoundError(f"--base-from {source_path} does not exist; name a run folder or one of its "
                                    "checkpoints/agent_<step>.npz files")  # fmt: skip
        run_dir, checkpoint = source_path.parent.parent, source_path
    source_cfg, source, _ = load_run_agent(run_dir, checkpoint)
    if not (agent.has_base and source.has_base):
        raise ValueError(f"--base-from needs a base policy on both sides; {run_dir} or this run's algorithm has none")
    mismatched = [
        f"{name}: {getattr(source_cfg.agent, name)!r} there, {getattr(agent.config, name)!r} here"
        for name in BASE_FIELDS + (("encoder",) if isinstance(agent.obs_dim, PixelSpec) else ())
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
    seed: int | None = None,
    checkpoint: str | Path | None = None,
    video: str | Path | None = None,
    video_episodes: int = 1,
    policy: str = "otf",
) -> dict:
    """Evaluate a run's checkpoint; ``seed``: the first reset seed (default: the run's own
    evaluation seed, so that the run's logged evaluations are reproduced); ``policy``: ``otf``
    (the agent's evaluation policy) or ``base`` (its base policy alone)."""
    cfg, agent, step = load_run_agent(run_dir, checkpoint)
    if policy == "base" and not agent.has_base:
        raise ValueError(f"the agent of {run_dir} ({cfg.algorithm}) has no base policy; evaluate it with policy 'otf'")
    env = make_run_env(cfg, render=video is not None)
    seed = evaluation_seed(cfg) if seed is None else seed
    result = evaluate(agent, env, episodes, seed, policy=policy, video=video, video_episodes=video_episodes)
    if video is not None:
        result["video"] = str(video)
    return {"run": str(run_dir), "env_step": step, "seed": seed, **result}

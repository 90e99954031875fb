"""A learned success detector: a small image classifier, P(success | camera frame).

A robot has no simulator to say whether the cube is on its target; HIL-SERL and LeRobot's RL
stack train a binary classifier on frames of recorded episodes instead. Here:

- frames: a dataset's frames (``expoft.data.frames``: rendered from a simulator's states, or
  decoded from a LeRobot dataset's videos by ``expoft data import lerobot``), one per state;
- labels: the last ``positive_frames`` states of each successful episode are positives (an
  episode ends where the task was reached, by the simulator's flag or a person's success key), the
  ``ignore_frames`` states just before them are left out (the boundary is ambiguous to a camera),
  every other state is a negative;
- held out: the last ``holdout`` fraction of the episodes, never trained on;
- model: the critic's image encoder (``expoft.encoders.PixelEncoder``, images only, smaller) and a
  linear logit; balanced batches (positives are ~1% of the states), the critic's augmentation.

The threshold is 0.5 on the balanced-trained probability; ``evaluate`` reports frame precision and
recall on the held-out episodes and, per episode, whether the detector would have ended it early
(fired before the last state), at the right state, or never.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from expoft.data.transitions import Dataset, DatasetError
from expoft.encoders import EncoderConfig, PixelEncoder, augment
from expoft.fileio import write_json
from expoft.obs import PIXELS, PROPRIO, PixelSpec
from expoft.pytree_io import load_pytree, save_pytree

MODEL_FILE, CONFIG_FILE = "model.npz", "detector.json"


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """How ``expoft reward train`` labels frames and trains the classifier."""

    positive_frames: int = 1
    """The last this many states of each successful episode are positives."""
    ignore_frames: int = 0
    """This many states before the positives are left out of training and evaluation."""
    holdout: float = 0.2
    """Fraction of the episodes (the last ones) held out for evaluation."""
    steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 3e-4
    channels: tuple[int, ...] = (16, 32, 32, 32)
    feature_dim: int = 128
    threshold: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.positive_frames < 1 or self.ignore_frames < 0:
            raise ValueError(f"need positive_frames >= 1 and ignore_frames >= 0, got {self.positive_frames}, "
                             f"{self.ignore_frames}")  # fmt: skip
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"holdout must lie in (0, 1), got {self.holdout}")
        if self.steps < 1 or self.batch_size < 2 or not self.learning_rate > 0:
            raise ValueError("need steps >= 1, batch_size >= 2 and learning_rate > 0")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")
        object.__setattr__(self, "channels", tuple(self.channels))

    @property
    def encoder(self) -> EncoderConfig:
        return EncoderConfig(channels=self.channels, feature_dim=self.feature_dim, proprio_dim_embed=0)


class SuccessNet(nn.Module):
    encoder: EncoderConfig

    @nn.compact
    def __call__(self, pixels: jax.Array) -> jax.Array:
        features = PixelEncoder(self.encoder)({PIXELS: pixels, PROPRIO: None})
        return nn.Dense(1)(features)[..., 0]


def frame_labels(ds: Dataset, cfg: DetectorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per frame row (``N + E``, the frames' layout): label (1 success, 0 not, -1 left out) and
    its episode."""
    if ds.episode_success is None:
        raise DatasetError("training a success detector needs each episode's success (episode_success)")
    starts, stops = ds.episode_bounds()
    labels, episode = [], []
    for e, (start, stop) in enumerate(zip(starts, stops, strict=True)):
        states = stop - start + 1
        y = np.zeros(states, np.int8)
        if ds.episode_success[e]:
            y[-cfg.positive_frames :] = 1
            y[max(0, states - cfg.positive_frames - cfg.ignore_frames) : max(0, states - cfg.positive_frames)] = -1
        labels.append(y)
        episode.append(np.full(states, e))
    return np.concatenate(labels), np.concatenate(episode)


class SuccessClassifier:
    """A trained detector: ``probability(pixels)`` for a batch of frames ``uint8 [B, S, S, C]``,
    ``__call__(pixels)`` for one frame -> bool."""

    def __init__(self, cfg: DetectorConfig, spec: PixelSpec, params, meta: dict | None = None):
        self.cfg, self.spec, self.params, self.meta = cfg, spec, params, dict(meta or {})
        net = SuccessNet(cfg.encoder)
        self._prob = jax.jit(lambda p, x: jax.nn.sigmoid(cast(jax.Array, net.apply(p, x))))

    def probability(self, pixels: np.ndarray, batch: int = 512) -> np.ndarray:
        pixels = np.asarray(pixels)
        if pixels.shape[1:] != self.spec.image_shape:
            raise ValueError(f"the detector was trained on frames {self.spec.image_shape}, got {pixels.shape[1:]}")
        out = [np.asarray(self._prob(self.params, pixels[i : i + batch])) for i in range(0, len(pixels), batch)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def __call__(self, pixels: np.ndarray) -> bool:
        return bool(self.probability(np.asarray(pixels)[None])[0] >= self.cfg.threshold)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_pytree(self.params, folder / MODEL_FILE)
        doc = {"config": dataclasses.asdict(self.cfg), "pixels": dataclasses.asdict(self.spec), **self.meta}
        write_json(folder / CONFIG_FILE, doc)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SuccessClassifier:
        folder = Path(folder)
        if not (folder / CONFIG_FILE).exists():
            raise FileNotFoundError(f"{folder} holds no success detector ({CONFIG_FILE}); train one with "
                                    "`expoft reward train`")  # fmt: skip
        try:
            doc = json.loads((folder / CONFIG_FILE).read_text())
            cfg = DetectorConfig(**doc["config"])
            spec = PixelSpec(**{**doc["pixels"], "cameras": tuple(doc["pixels"]["cameras"])})
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{folder / CONFIG_FILE}: not a success detector description ({error})") from error
        template = SuccessNet(cfg.encoder).init(jax.random.key(0), jnp.zeros((1, *spec.image_shape), jnp.uint8))
        params, _ = load_pytree(template, folder / MODEL_FILE)
        meta = {k: v for k, v in doc.items() if k not in ("config", "pixels")}
        return cls(cfg, spec, params, meta)


def split_episodes(num_episodes: int, holdout: float) -> int:
    """The first held-out episode: the last ``holdout`` fraction (at least one each side)."""
    if num_episodes < 2:
        raise DatasetError(f"a success detector needs >= 2 episodes (training and held out), got {num_episodes}")
    return min(num_episodes - 1, max(1, int(round(num_episodes * (1.0 - holdout)))))


def train_detector(ds: Dataset, frames: np.ndarray, spec: PixelSpec, cfg: DetectorConfig,
                   progress: bool = True) -> tuple[SuccessClassifier, dict]:  # fmt: skip
    """Train on the first episodes, evaluate on the held-out rest; returns (detector, report)."""
    labels, episode = frame_labels(ds, cfg)
    if len(frames) != len(labels):
        raise DatasetError(f"{len(frames)} frames for {len(labels)} states: the frames are not this dataset's")
    first_held = split_episodes(ds.num_episodes, cfg.holdout)
    train = episode < first_held
    pos = np.flatnonzero(train & (labels == 1))
    neg = np.flatnonzero(train & (labels == 0))
    if len(pos) == 0 or len(neg) == 0:
        raise DatasetError(f"the training episodes hold {len(pos)} positive and {len(neg)} negative frames; a "
                           "detector needs both (successful and unsuccessful states)")  # fmt: skip
    net = SuccessNet(cfg.encoder)
    rng = jax.random.key(cfg.seed)
    rng, init = jax.random.split(rng)
    params = net.init(init, jnp.zeros((1, *spec.image_shape), jnp.uint8))
    opt = optax.adam(cfg.learning_rate)
    opt_state = opt.init(params)
    half = cfg.batch_size // 2
    target = jnp.concatenate([jnp.ones(half), jnp.zeros(cfg.batch_size - half)])

    @jax.jit
    def step(params, opt_state, pixels, key):
        def loss_fn(p):
            logits = net.apply(p, augment(key, pixels, cfg.encoder))
            return optax.sigmoid_binary_cross_entropy(logits, target).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    draw = np.random.default_rng(cfg.seed)
    started, losses = time.perf_counter(), []
    for i in range(cfg.steps):
        rows = np.concatenate([draw.choice(pos, half), draw.choice(neg, cfg.batch_size - half)])
        rng, key = jax.random.split(rng)
        params, opt_state, loss = step(params, opt_state, frames[rows], key)
        losses.append(float(loss))
        if progress and (i + 1) % max(1, cfg.steps // 10) == 0:
            print(f"step {i + 1}/{cfg.steps}: loss {np.mean(losses[-100:]):.4f}", flush=True)
    detector = SuccessClassifier(cfg, spec, params)
    report = evaluate_detector(detector, frames, labels, episode, np.asarray(ds.episode_success), first_held)
    report.update(train_episodes=int(first_held), train_positives=int(len(pos)), train_negatives=int(len(neg)),
                  final_loss=float(np.mean(losses[-100:])), train_seconds=time.perf_counter() - started)  # fmt: skip
    detector.meta = {"report": report}
    return detector, report


def evaluate_detector(detector: SuccessClassifier, frames: np.ndarray, labels: np.ndarray, episode: np.ndarray,
                      episode_success: np.ndarray, first: int) -> dict:  # fmt: skip
    """Frame precision / recall on episodes ``first..``, and what the detector would have done to
    each: a successful episode ended at its success (``on_time``: first fired on a positive or
    left-out state), before it (``early``: a false success in a run) or never (``missed``); an
    unsuccessful one falsely ended (``false_success``)."""
    all_rows = np.flatnonzero(episode >= first)
    all_fired = detector.probability(frames[all_rows]) >= detector.cfg.threshold  # once: both reports read it
    judged = labels[all_rows] >= 0  # left-out states count in neither precision nor recall
    rows, fired = all_rows[judged], all_fired[judged]
    truth = labels[rows] == 1
    tp, fp, fn = int((fired & truth).sum()), int((fired & ~truth).sum()), int((~fired & truth).sum())
    counts = {"on_time": 0, "early": 0, "missed": 0, "false_success": 0, "quiet_failure": 0}
    for e in range(first, int(episode.max()) + 1):
        mine = episode[all_rows] == e
        fires = np.flatnonzero(all_fired[mine])
        if episode_success[e]:
            if len(fires) == 0:
                counts["missed"] += 1
            else:
                counts["on_time" if labels[all_rows[mine]][fires[0]] != 0 else "early"] += 1
        else:
            counts["false_success" if len(fires) else "quiet_failure"] += 1
    return {
        "held_out_episodes": int(episode.max()) + 1 - first,
        "held_out_frames": int(len(rows)),
        "held_out_positives": int(truth.sum()),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "false_positive_rate": fp / max(1, int((~truth).sum())),
        "episodes": counts,
    }

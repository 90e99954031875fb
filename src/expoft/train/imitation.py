"""Imitation of the base on the offline data, in compiled chunks of steps with a progress bar:
the pretraining every run starts with (``expoft.train.pretrain`` checkpoints it)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from expoft.agents.common import pretrain
from expoft.data.replay import ReplayBuffer
from expoft.data.transitions import Dataset
from expoft.obs import PixelSpec
from expoft.progress import Progress
from expoft.train.build import dataset_observations

log = logging.getLogger(__name__)


PRETRAIN_CHUNK = 500  # imitation steps per compiled scan call


PRETRAIN_CHUNK_PIXELS = 10  # pixel agents unroll the scan (expoft.agents.common.scan_unroll): keep it short


def dataset_chunks(ds: Dataset, chunk_len: int) -> np.ndarray:
    """``[N, chunk_len, A]``: the actions from every step of ``ds`` on, within its episode (steps past
    the episode's end repeat its last action, as in replay sampling)."""
    if chunk_len == 1:
        return ds.actions[:, None]
    buffer = ReplayBuffer(ds.obs_dim, ds.action_dim, 1, offline=ds)
    index = np.arange(ds.num_transitions)
    return buffer.chunks_at(index, source="offline", chunk_len=chunk_len, discount=1.0).actions


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

"""Cached TD-target candidates: the base's samples at each transition's next observation, reused
across update calls (``EXPOConfig.target_cache_refresh``; on by default since 2026-12-06).

Why: drawing the target candidates is most of an exact update call. Every critic step draws
``num_base_samples`` full denoising chains for each of its 256 next observations: 5120 x 8 x 10
network passes per call, while only one new transition arrives per call. The base (an EMA copy
of a network trained by imitation) changes slowly, so a sample drawn a few calls ago is still a
sample of nearly the same distribution.

What it changes, and so why it had to show the same learning as the exact update before it
became the default (ALGORITHMS.md "Known costs"; shown on P1 cube-single and cube-double, 3
seeds each, docs/results/learn.md): a transition's candidates
come from the EMA base of up to ``refresh`` calls ago, and a transition drawn twice within that
window reuses the same base samples (its edits are drawn fresh at every step: only the base
part is cached). Entries keep the base's real sampling distribution (the full chain), so
``tests/test_target_fidelity.py::test_target_candidates_cover_both_modes`` holds for them too.

How: an entry per stored step, keyed by the slot of a chunk's LAST step (the step whose
next observation the chunk's target bootstraps from), for the offline part and the online ring.
Entries are filled lazily, when a pool first draws them, and are recomputed once older than
``refresh`` update calls. The samples of the fill at call ``c`` use ``fold_in(key, c)``, and the
cache is emptied whenever the run writes a checkpoint, so a resumed run computes exactly what the
uninterrupted one did.
"""

from __future__ import annotations

import functools
import logging

import jax
import numpy as np

from expoft.agents.registry import agent_spec
from expoft.data.chunk_sampling import ChunkBatch
from expoft.data.replay import ReplayBuffer

log = logging.getLogger(__name__)


@functools.partial(jax.jit, static_argnames="num_samples")
def _base_samples(agent, obs: jax.Array, key: jax.Array, num_samples: int) -> jax.Array:
    """``[B, num_samples, exec_dim]``: the executed part of the samples of the base copy that
    draws TD-target candidates (``EXPOConfig.target_base``)."""
    return agent.base_policy.sample(agent.target_base_params, key, obs, num_samples)[..., : agent.exec_dim]


def _bucket(n: int) -> int:
    """Rows padded to a power of two (at least 64): a handful of compiled shapes, not one per n."""
    return max(64, 1 << (n - 1).bit_length())


class TargetCandidateCache:
    """Base samples at next observations for ``buffer``, reused for ``refresh`` update calls."""

    def __init__(self, buffer: ReplayBuffer, num_samples: int, exec_dim: int, refresh: int, seed: int):
        if refresh < 1:
            raise ValueError(f"target_cache_refresh must be >= 1 (update calls), got {refresh}")
        if buffer.pixels is not None:
            raise ValueError("the target-candidate cache holds state observations only; unset target_cache_refresh")
        self.buffer, self.num_samples, self.exec_dim, self.refresh = buffer, num_samples, exec_dim, refresh
        self.key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x7A7C)
        self.parts = {"offline": buffer.offline_size, "online": buffer.capacity}
        self.samples = {name: np.zeros((0, num_samples, exec_dim), np.float32) for name in self.parts}
        self.filled_at = {name: np.zeros(0, np.int64) for name in self.parts}
        self.seen_online = buffer.total_added
        self._flush_due = False
        self.computed = 0
        """Entries computed so far (the cost this cache leaves)."""

    def flush(self) -> None:
        """Forget every entry before the next look-up (at every checkpoint: a resumed run starts
        from an empty cache too). Only marked here: an asynchronous learner's checkpoint calls
        it while its update thread may be inside :meth:`lookup`."""
        self._flush_due = True

    def _hold(self, name: str, slot: int) -> None:
        """Room up to ``slot``: grown by doubling (the online ring's capacity, 1M by default, is
        far more than a run fills, and 1M x 32 samples x 25 floats would be 3 GB)."""
        size = len(self.filled_at[name])
        if slot < size:
            return
        new = min(self.parts[name], max(2 * size, 1024, slot + 1))
        samples = np.zeros((new, self.num_samples, self.exec_dim), np.float32)
        samples[:size] = self.samples[name]
        filled = np.full(new, -1, np.int64)
        filled[:size] = self.filled_at[name]
        self.samples[name], self.filled_at[name] = samples, filled

    def _forget_overwritten(self, total: int) -> None:
        """Online slots written since the last look-up (up to ``total`` transitions added) hold
        other transitions now."""
        cap = self.buffer.capacity
        held = self.filled_at["online"]
        if total - self.seen_online >= cap:
            held[:] = -1
        elif total > self.seen_online:
            slots = np.arange(self.seen_online, total) % cap
            held[slots[slots < len(held)]] = -1
        self.seen_online = total

    def lookup(self, agent, pool: ChunkBatch, call: int, total_added: int | None = None) -> np.ndarray:
        """The base samples at the pool's next observations, ``[P, num_samples, exec_dim]``,
        computing the entries that are missing or older than ``refresh`` calls with ``agent``'s
        base (``EXPOConfig.target_base``). ``call``: the number of this update call (1, 2, ...)
        in the run; ``total_added``: the buffer's count when ``pool`` was drawn (default: now),
        so that slots overwritten since are not taken for the pool's transitions."""
        if pool.last is None:
            raise ValueError("the pool carries no chunk end slots (ChunkBatch.last): draw it with ReplayBuffer.sample")
        if self._flush_due:
            for name in self.parts:
                self.filled_at[name][:] = -1
            self._flush_due = False
        self._forget_overwritten(self.buffer.total_added if total_added is None else total_added)
        out = np.empty((len(pool.last), self.num_samples, self.exec_dim), np.float32)
        for name, rows in (("offline", np.flatnonzero(pool.offline)), ("online", np.flatnonzero(~pool.offline))):
            if not len(rows):
                continue
            slots = pool.last[rows]
            self._hold(name, int(slots.max()))
            # each slot once, with a pool row that drew it (its next observation)
            unique, first = np.unique(slots, return_index=True)
            filled = self.filled_at[name][unique]
            due = (filled < 0) | (call - filled >= self.refresh)
            if due.any():
                self._fill(agent, name, unique[due], np.asarray(pool.next_observations)[rows[first[due]]], call)
            out[rows] = self.samples[name][slots]
        return out

    def _fill(self, agent, name: str, stale: np.ndarray, obs: np.ndarray, call: int) -> None:
        """Draw the entries of slots ``stale`` at their next observations ``obs``."""
        n = len(stale)
        padded = np.zeros((_bucket(n), *obs.shape[1:]), obs.dtype)
        padded[:n] = obs
        key = jax.random.fold_in(jax.random.fold_in(self.key, call), 0 if name == "offline" else 1)
        samples = np.asarray(_base_samples(agent, padded, key, self.num_samples))[:n]
        self.samples[name][stale] = samples
        self.filled_at[name][stale] = call
        self.computed += n


def run_cache(cfg, buffer: ReplayBuffer) -> TargetCandidateCache | None:
    """The cache of a run config (``cfg.target_cache_refresh``), or None where it is off or does
    not apply."""
    refresh = cfg.target_cache_refresh
    if refresh is None:
        # asked for, by an agent with base samples in its targets, but this run cannot cache them
        if cfg.expo.target_cache_refresh is not None and agent_spec(cfg.algorithm).target_cache:
            log.info("TD-target candidates drawn afresh at every critic step: the target-candidate cache holds "
                     "state samples of expoft's own base, and this run has %s", cfg.target_cache_blocker)  # fmt: skip
        return None
    return TargetCandidateCache(buffer, cfg.expo.num_base_samples, cfg.agent.exec_len * buffer.action_dim,
                                refresh, cfg.seed)  # fmt: skip

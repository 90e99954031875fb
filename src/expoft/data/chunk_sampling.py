"""A chunk batch and the chunked sampling of one contiguous part of the replay buffer (the
offline data, or the online ring); ``expoft.data.replay`` mixes the parts."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np

from expoft.obs import PIXELS, PROPRIO

log = logging.getLogger(__name__)


class ChunkBatch(NamedTuple):
    """A batch of (possibly length-1) chunks; see the module docstring for shapes."""

    # Any: a [B, D] float32 array, or a dict of them for pixels (see the module docstring); numpy
    # arrays as the buffer returns them, jax arrays inside the jitted agent code.
    observations: Any
    actions: np.ndarray  # [B, h, A] float32 in [-1, 1]
    rewards: np.ndarray  # [B] float32, discounted sum over the valid steps
    discounts: np.ndarray  # [B] float32, gamma ** (number of valid steps)
    masks: np.ndarray  # [B] float32, 0 where the chunk ends in a terminal state
    next_observations: Any  # [B, D] float32 (or a dict), as observations
    valid: np.ndarray  # [B, h] float32
    offline: np.ndarray  # [B] bool
    intervened: np.ndarray | None = None  # [B] bool: an intervener chose some step of the chunk
    last: np.ndarray | None = None  # [B] int64: slot of the chunk's last step in its part (offline/online)


class Part:
    """Contiguous transition arrays seen as a ring (the offline part is a full ring)."""

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        size: int,
        ptr: int,
        frames: np.ndarray | None = None,
        frames_written: int = 0,
    ):
        self.a = arrays
        self.size = size
        self.ptr = ptr  # next write position
        # Pixels: a["frame_ids"][i] is the id of transition i's observation frame, its next
        # observation is frame id + 1; frame id g lives in frames[g % len(frames)].
        self.frames = frames
        self.frames_written = frames_written

    def frame_lost(self, idx: np.ndarray) -> np.ndarray:
        """Transitions whose observation frame the frame ring has already overwritten."""
        if self.frames is None:
            return np.zeros(len(idx), bool)
        return self.a["frame_ids"][idx] < self.frames_written - len(self.frames)

    def observations_at(self, idx: np.ndarray, last: np.ndarray) -> tuple:
        a = self.a
        if self.frames is None:
            return a["observations"][idx], a["next_observations"][last]
        ids = a["frame_ids"]
        fc = len(self.frames)
        obs = {PIXELS: self.frames[ids[idx] % fc], PROPRIO: a["observations"][idx]}
        nxt = {PIXELS: self.frames[(ids[last] + 1) % fc], PROPRIO: a["next_observations"][last]}
        return obs, nxt

    @property
    def capacity(self) -> int:
        return len(self.a["actions"])

    def retract(self, n: int) -> bool:
        """Forget the last ``n`` writes (their frames stay, unreferenced); False, and nothing
        changed, when the ring has wrapped over them (its slots before them are gone)."""
        if not 0 <= n <= self.size or self.size == self.capacity:
            return False
        self.ptr, self.size = (self.ptr - n) % self.capacity, self.size - n
        return True

    def gather(self, idx: np.ndarray, chunk_len: int, discount: float) -> dict[str, np.ndarray]:
        a, cap = self.a, self.capacity
        pos = (idx[:, None] + np.arange(chunk_len)) % cap  # [B, h]
        # Steps written after idx: the chunk may not run into the write head.
        ahead = (self.ptr - 1 - idx) % cap if self.size == cap else self.size - 1 - idx
        done = a["terminals"] | a["episode_ends"]
        valid = np.ones(pos.shape, dtype=bool)
        for j in range(1, chunk_len):
            valid[:, j] = valid[:, j - 1] & ~done[pos[:, j - 1]] & (ahead >= j)
        n = valid.sum(axis=1)
        last = pos[np.arange(len(idx)), n - 1]
        powers = discount ** np.arange(chunk_len, dtype=np.float64)
        rewards = (a["rewards"][pos] * valid * powers).sum(axis=1)
        actions = np.where(valid[..., None], a["actions"][pos], a["actions"][last][:, None])
        observations, next_observations = self.observations_at(idx, last)
        return {
            "observations": observations,
            "actions": actions,
            "rewards": rewards.astype(np.float32),
            "discounts": (discount**n).astype(np.float32),
            "masks": (~a["terminals"][last]).astype(np.float32),
            "next_observations": next_observations,
            "valid": valid.astype(np.float32),
            "intervened": (a["intervened"][pos] & valid).any(axis=1),
            "last": last,
        }


FIELDS = ("observations", "next_observations", "actions", "rewards", "terminals", "episode_ends")


def concat(pieces: list[ChunkBatch]) -> ChunkBatch:
    if len(pieces) == 1:
        return pieces[0]

    def join(fields):
        if isinstance(fields[0], dict):  # pixel observations
            return {k: np.concatenate([f[k] for f in fields]) for k in fields[0]}
        return None if fields[0] is None else np.concatenate(fields)

    return ChunkBatch(*(join(fields) for fields in zip(*pieces, strict=True)))

"""Replay buffer: a read-only offline part and an online ring, sampled as chunks.

A chunk of length h starting at step t covers steps t .. t+n-1 with n <= h:
it stops early at an episode end, at a terminal, or (online) at the newest
written step. For each sampled chunk (all shapes with batch B)::

    observations       [B, D]     s_t
    actions            [B, h, A]  a_t .. a_{t+h-1}; steps past the end repeat the last valid action
    rewards            [B]        R = sum_{k<n} gamma^k r_{t+k}
    discounts          [B]        gamma^n, the bootstrap discount for the n steps taken
    masks              [B]        0 if s_{t+n} is terminal, else 1
    next_observations  [B, D]     s_{t+n}
    valid              [B, h]     1 for the n steps inside the episode, 0 after
    offline            [B]        1 if drawn from the offline part

so that the TD target is ``y = rewards + discounts * masks * Q'(next_observations, .)``.
h = 1 gives the ordinary transition (discount gamma). The discount is an
argument: it belongs to the agent's config, not to the buffer.

Pixel observations (``expoft.obs``): ``observations`` and ``next_observations``
are then dicts ``{"pixels": uint8 [B, S, S, C], "proprio": float32 [B, P]}``.
Each frame is stored once: an episode of L steps keeps its L + 1 frames
s_0 .. s_L in a frame ring, and transition t points at frame s_t (its next
observation is the following frame). Proprioception is small and kept per
transition like a state vector.
"""

from __future__ import annotations

import logging
from typing import cast

import numpy as np

from expoft.data.chunk_sampling import FIELDS, ChunkBatch, Part, concat
from expoft.data.transitions import Dataset
from expoft.obs import PIXELS, PROPRIO, Observation, ObsSpec, PixelSpec, vector_dim

log = logging.getLogger(__name__)


class ReplayBuffer:
    """Offline dataset (read-only) + preallocated online ring buffer.

    Args:
        obs_dim: size of one state observation, or a ``PixelSpec`` for pixel observations.
        action_dim: size of one action.
        capacity: online transitions kept; the oldest are overwritten.
        offline: task-labelled dataset to mix in (see ``load_dataset(..., task=K)``).
        offline_frames: with pixels, the offline dataset's frames in the layout of
            ``expoft.data.frames`` (``[N + E, S, S, C]``, each episode's L + 1 frames in order).
    """

    # Frame slots per transition slot of the online ring: an episode of L steps needs L + 1 frames,
    # so episodes averaging >= 10 steps fit; with shorter ones the oldest transitions lose their
    # frames a little before they leave the ring, and are no longer drawn.
    FRAME_SLACK = 1.1

    def __init__(
        self,
        obs_dim: ObsSpec,
        action_dim: int,
        capacity: int,
        offline: Dataset | None = None,
        offline_frames: np.ndarray | None = None,
    ):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.pixels = obs_dim if isinstance(obs_dim, PixelSpec) else None
        obs_dim = vector_dim(obs_dim)  # the flat part: the state, or the proprioception
        self.obs_dim, self.action_dim = obs_dim, action_dim
        shapes = {
            "observations": ((obs_dim,), np.float32),
            "next_observations": ((obs_dim,), np.float32),
            "actions": ((action_dim,), np.float32),
            "rewards": ((), np.float32),
            "terminals": ((), np.bool_),
            "episode_ends": ((), np.bool_),
            "successful": ((), np.bool_),
            "intervened": ((), np.bool_),
        }
        frames = None
        if self.pixels is not None:
            shapes["frame_ids"] = ((), np.int64)
            frames = np.zeros((int(capacity * self.FRAME_SLACK) + 2, *self.pixels.image_shape), np.uint8)
        self._online = Part({k: np.zeros((capacity, *s), d) for k, (s, d) in shapes.items()}, 0, 0, frames)
        if offline_frames is not None and self.pixels is None:
            raise ValueError("offline_frames given to a buffer of state observations; pass a PixelSpec as obs_dim")
        self._offline = self._offline_part(offline, offline_frames) if offline is not None else None
        self._episode_len = 0  # steps of the online episode being written
        self.total_added = 0  # online transitions ever added (a global index, for saving in segments)
        self._success_index: tuple[np.ndarray, np.ndarray] | None = None  # cached flagged slots

    def _offline_part(self, ds: Dataset, frames: np.ndarray | None) -> Part:
        if not ds.has_task:
            raise ValueError(
                "the offline dataset has no rewards/terminals; play data must be labelled for a task "
                "first: load_dataset(path, env=..., task=K)"
            )
        # With pixels the dataset's state vectors start with the proprioception the buffer keeps.
        dims_fit = ds.obs_dim >= self.obs_dim if self.pixels is not None else ds.obs_dim == self.obs_dim
        if not dims_fit or ds.action_dim != self.action_dim:
            raise ValueError(
                f"offline dataset has obs/action dims ({ds.obs_dim}, {ds.action_dim}); "
                f"the buffer expects ({self.obs_dim}, {self.action_dim})"
            )
        arrays = {}
        for k in FIELDS:
            view = getattr(ds, k).view()
            view.flags.writeable = False  # the user's data is never modified
            arrays[k] = view
        starts, stops = ds.episode_bounds()
        success = ds.episode_success if ds.episode_success is not None else np.zeros(len(starts), bool)
        arrays["successful"] = np.repeat(success, stops - starts)
        arrays["intervened"] = np.zeros(ds.num_transitions, bool)
        if self.pixels is None:
            return Part(arrays, ds.num_transitions, 0)
        if frames is None:
            raise ValueError("a pixel buffer needs the offline dataset's frames (expoft.data.frames.frames_for)")
        want = (ds.num_transitions + ds.num_episodes, *self.pixels.image_shape)
        if frames.shape != want or frames.dtype != np.uint8:
            raise ValueError(
                f"offline frames have shape {frames.shape} {frames.dtype}; expected {want} uint8 "
                "(one frame per observation of each episode, L + 1 per episode; see expoft.data.frames)"
            )
        arrays["observations"] = ds.observations[:, : self.obs_dim]
        arrays["next_observations"] = ds.next_observations[:, : self.obs_dim]
        arrays["frame_ids"] = ds.frame_rows()
        view = frames.view()
        view.flags.writeable = False
        return Part(arrays, ds.num_transitions, 0, view, frames_written=len(frames))

    # ---- sizes -----------------------------------------------------------
    @property
    def offline_size(self) -> int:
        return self._size(self._offline)

    @property
    def online_size(self) -> int:
        return self._online.size

    @property
    def capacity(self) -> int:
        return self._online.capacity

    # ---- writing ---------------------------------------------------------
    def add(
        self,
        observation: Observation,
        action: np.ndarray,
        reward: float,
        next_observation: Observation,
        terminal: bool,
        episode_end: bool,
        success: bool = False,
        intervened: bool = False,
    ) -> None:
        """Append one online transition; ``episode_end`` marks the last step of an episode and
        ``success`` (on that step) flags the whole episode as successful (see ``successful_only``
        in :meth:`sample`); ``intervened`` flags a step whose action an intervener chose.
        Pixel buffers take pixel observations; within an episode ``observation`` must be the
        previous step's ``next_observation`` (its frame is stored once)."""
        frames = None
        if self.pixels is not None:
            self.pixels.check(observation)
            self.pixels.check(next_observation)
            frames = (observation[PIXELS], next_observation[PIXELS])
            observation, next_observation = observation[PROPRIO], next_observation[PROPRIO]
        observation = np.asarray(observation, np.float32)
        next_observation = np.asarray(next_observation, np.float32)
        action = np.asarray(action, np.float32)
        if observation.shape != (self.obs_dim,) or next_observation.shape != (self.obs_dim,):
            raise ValueError(
                f"observation shapes {observation.shape}/{next_observation.shape}; expected ({self.obs_dim},)"
            )
        if action.shape != (self.action_dim,):
            raise ValueError(f"action shape {action.shape}; expected ({self.action_dim},)")
        for name, value in (("observation", observation), ("next_observation", next_observation), ("action", action),
                            ("reward", np.asarray(reward))):  # fmt: skip
            if not np.isfinite(value).all():
                raise ValueError(f"non-finite {name} {value}; refusing to store it in the replay buffer")
        if np.abs(action).max() > 1.0 + 1e-5:
            raise ValueError(f"action {action} lies outside [-1, 1]")
        part = self._online
        i = part.ptr
        a = part.a
        if frames is not None:
            a["frame_ids"][i] = self._write_frames(*frames)
        a["observations"][i] = observation
        a["next_observations"][i] = next_observation
        a["actions"][i] = action
        a["rewards"][i] = reward
        a["terminals"][i] = terminal
        a["episode_ends"][i] = episode_end or terminal
        a["intervened"][i] = intervened
        if a["successful"][i]:
            self._success_index = None
        a["successful"][i] = False
        part.ptr = (i + 1) % part.capacity
        part.size = min(part.size + 1, part.capacity)
        self.total_added += 1
        self._episode_len += 1
        if episode_end or terminal:
            if success:
                n = min(self._episode_len, part.capacity)
                a["successful"][(part.ptr - 1 - np.arange(n)) % part.capacity] = True
                self._success_index = None
            self._episode_len = 0

    def drop_open_episode(self) -> int:
        """Forget the online episode being written (its actor died): the steps dropped; 0 when the
        ring has wrapped (the episode is then kept, closed as cut by a time limit)."""
        n = self._episode_len
        if n and not self._online.retract(n):
            self.end_episode_at(self.total_added - 1)
            return 0
        self._episode_len = 0
        self.total_added -= n
        return n

    def end_episode_at(self, index: int) -> None:
        """Make online transition ``index`` (counted as ``total_added`` counts) an episode's last,
        as cut by a time limit (not a terminal, not a success), if the ring still holds it."""
        if self.total_added - self._online.size <= index < self.total_added:
            self._online.a["episode_ends"][index % self._online.capacity] = True
            if index == self.total_added - 1:
                self._episode_len = 0

    def _write_frames(self, frame: np.ndarray, next_frame: np.ndarray) -> int:
        """Store an online step's frames; returns the id of its observation frame."""
        part = self._online
        assert part.frames is not None, "only a pixel buffer stores frames"
        fc = len(part.frames)
        if self._episode_len == 0:  # an episode's first observation
            part.frames[part.frames_written % fc] = frame
            part.frames_written += 1
        elif not np.array_equal(part.frames[(part.frames_written - 1) % fc], frame):
            raise ValueError(
                "this observation's frame differs from the previous step's next observation: within an "
                "episode add transitions in order (s_t = previous s_{t+1}); end the episode first otherwise"
            )
        part.frames[part.frames_written % fc] = next_frame
        part.frames_written += 1
        if part.frames_written > fc:  # old frames are being overwritten: the success index may go stale
            self._success_index = None
        return part.frames_written - 2

    @property
    def frame_bytes(self) -> int:
        """Bytes of the online part (frames included): what the buffer costs in memory."""
        part = self._online
        return sum(a.nbytes for a in part.a.values()) + (0 if part.frames is None else part.frames.nbytes)

    # ---- sampling --------------------------------------------------------
    def sample(
        self,
        rng: np.random.Generator,
        batch_size: int,
        *,
        discount: float,
        chunk_len: int = 1,
        offline_fraction: float = 0.5,
        num_offline: int | None = None,
        successful_only: bool = False,
    ) -> ChunkBatch:
        """Draw ``round(batch_size * offline_fraction)`` chunks offline (or exactly ``num_offline``)
        and the rest online; offline rows come first.

        ``successful_only``: draw uniformly from the steps of successful episodes, offline and
        online together (EXPO-FT's imitation pool); the fractions do not apply."""
        if not 0.0 <= offline_fraction <= 1.0:
            raise ValueError(f"offline_fraction must lie in [0, 1], got {offline_fraction}")
        if num_offline is not None and not 0 <= num_offline <= batch_size:
            raise ValueError(f"num_offline must lie in [0, batch_size={batch_size}], got {num_offline}")
        if chunk_len < 1:
            raise ValueError(f"chunk_len must be >= 1, got {chunk_len}")
        if not 0.0 <= discount <= 1.0:
            raise ValueError(f"discount must lie in [0, 1], got {discount}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if successful_only:
            return self._sample_successful(rng, batch_size, chunk_len, discount)
        n_off = int(round(batch_size * offline_fraction)) if num_offline is None else num_offline
        pieces = []
        for part, n, name in ((self._offline, n_off, "offline"), (self._online, batch_size - n_off, "online")):
            if n == 0:
                continue
            if part is None or part.size == 0:
                raise ValueError(
                    f"cannot draw {n} of {batch_size} samples from the {name} part: it is empty "
                    f"(offline_fraction={offline_fraction})"
                )
            pieces.append(self.chunks_at(self._draw(rng, part, n), source=name, chunk_len=chunk_len, discount=discount))
        return concat(pieces)

    @property
    def intervened_steps(self) -> int:
        """Online steps held whose action an intervener chose."""
        return int(self._online.a["intervened"][: self._online.size].sum())

    @property
    def successful_steps(self) -> tuple[int, int]:
        """Steps of successful episodes held: ``(offline, online)``."""
        off, on = self._successful_slots()
        return len(off), len(on)

    def _successful_slots(self) -> tuple[np.ndarray, np.ndarray]:
        if self._success_index is None:
            off = np.zeros(0, np.int64) if self._offline is None else np.flatnonzero(self._offline.a["successful"])
            on = np.flatnonzero(self._online.a["successful"][: self._online.size])
            on = on[~self._online.frame_lost(on)]
            self._success_index = (off, on)
        return self._success_index

    def _sample_successful(self, rng, batch_size, chunk_len, discount) -> ChunkBatch:
        off, on = self._successful_slots()
        if len(off) + len(on) == 0:
            raise ValueError("no successful episodes in the buffer yet: nothing to imitate (successful_only=True)")
        pick = rng.integers(0, len(off) + len(on), size=batch_size)
        pick.sort()  # offline rows first, as in every batch
        from_off = pick < len(off)
        pieces = []
        if from_off.any():
            pieces.append(self.chunks_at(off[pick[from_off]], source="offline", chunk_len=chunk_len, discount=discount))
        if (~from_off).any():
            idx = on[pick[~from_off] - len(off)]
            pieces.append(self.chunks_at(idx, source="online", chunk_len=chunk_len, discount=discount))
        return concat(pieces)

    def chunks_at(self, indices: np.ndarray, *, source: str, chunk_len: int, discount: float) -> ChunkBatch:
        """Chunks starting at given slots of the ``offline`` or ``online`` part (no randomness)."""
        part = {"offline": self._offline, "online": self._online}[source]
        indices = np.asarray(indices, dtype=np.int64)
        if part is None or ((indices < 0) | (indices >= part.size)).any():
            raise IndexError(f"indices {indices} out of range for the {source} part of size {self._size(part)}")
        chunk = part.gather(indices, chunk_len, discount)
        return ChunkBatch(**chunk, offline=np.full(len(indices), source == "offline"))

    @staticmethod
    def _size(part: Part | None) -> int:
        return 0 if part is None else part.size

    @staticmethod
    def _draw(rng: np.random.Generator, part: Part, n: int) -> np.ndarray:
        idx = rng.integers(0, part.size, size=n)
        lost = part.frame_lost(idx)
        for _ in range(100):  # only the oldest few transitions can have lost their frames
            if not lost.any():
                return idx
            idx[lost] = rng.integers(0, part.size, size=int(lost.sum()))
            lost = part.frame_lost(idx)
        raise RuntimeError("could not draw transitions whose frames are still held; raise the buffer capacity")

    # ---- persistence (online part; the offline part is its dataset file) --
    # A checkpoint stores the online ring as segments: the transitions added since the last save,
    # as plain arrays. Saving therefore costs what was added, not what is held.
    SEGMENT_FIELDS = ("observations", "next_observations", "actions", "rewards", "terminals",
                      "episode_ends", "successful", "intervened")  # fmt: skip

    def _segment_fields(self) -> tuple[str, ...]:
        return self.SEGMENT_FIELDS + (("frame_ids",) if self.pixels is not None else ())

    def segment(self, start: int) -> dict[str, np.ndarray | np.int64]:
        """The transitions with global indices ``[start, total_added)`` still held (at most
        ``capacity`` of them), as arrays in the order they were added, plus ``start``/``end``;
        pixel buffers add the frames those transitions use (``frames``, from id ``frame_start``).
        Call it between episodes: ``successful`` is only final once an episode has ended."""
        if not 0 <= start <= self.total_added:
            raise ValueError(f"segment start {start} outside [0, {self.total_added}]")
        part = self._online
        first = max(start, self.total_added - part.capacity)
        slots = np.arange(first, self.total_added) % part.capacity
        arrays: dict[str, np.ndarray | np.int64] = {k: part.a[k][slots] for k in self._segment_fields()}
        arrays["start"] = np.int64(first)
        arrays["end"] = np.int64(self.total_added)
        if self.pixels is not None:
            assert part.frames is not None, "a pixel buffer stores frames"
            fc = len(part.frames)
            lo = int(cast(np.ndarray, arrays["frame_ids"])[0]) if len(slots) else part.frames_written
            lo = max(lo, part.frames_written - fc)
            arrays["frames"] = part.frames[np.arange(lo, part.frames_written) % fc]
            arrays["frame_start"] = np.int64(lo)
        return arrays

    def restore_segment(self, arrays: dict[str, np.ndarray]) -> None:
        """Write back a segment from :meth:`segment`; segments must come in order, each starting
        where the buffer's ``total_added`` stands (or later, when the ring had overwritten the rest)."""
        start, end = int(arrays["start"]), int(arrays["end"])
        # A later start is fine only when the segment fills the whole ring (what it skipped was overwritten).
        if start != self.total_added and not (start > self.total_added and end - start == self.capacity):
            raise ValueError(
                f"segment [{start}, {end}) does not continue the {self.total_added} transitions restored so far"
            )
        n = end - start
        for k in self._segment_fields():
            want = (n, *self._online.a[k].shape[1:])
            if k not in arrays or arrays[k].shape != want or arrays[k].dtype != self._online.a[k].dtype:
                got = None if k not in arrays else (arrays[k].shape, arrays[k].dtype)
                raise ValueError(f"segment field {k!r}: expected {want} {self._online.a[k].dtype}, got {got}")
        part = self._online
        if self.pixels is not None:
            self._restore_frames(arrays)
        slots = np.arange(start, end) % part.capacity
        for k in self._segment_fields():
            part.a[k][slots] = arrays[k]
        self.total_added = end
        part.ptr = end % part.capacity
        part.size = min(end, part.capacity)
        self._episode_len = 0
        self._success_index = None

    def _restore_frames(self, arrays: dict[str, np.ndarray]) -> None:
        part = self._online
        assert part.frames is not None, "only a pixel buffer stores frames"
        frames = arrays.get("frames")
        if frames is None or "frame_start" not in arrays:
            raise ValueError("segment of a pixel buffer without 'frames'/'frame_start'; was it written by a state run?")
        if frames.shape[1:] != part.frames.shape[1:] or frames.dtype != np.uint8:
            raise ValueError(
                f"segment frames {frames.shape} {frames.dtype}; this buffer holds {part.frames.shape[1:]} uint8"
            )
        lo = int(arrays["frame_start"])
        if lo > part.frames_written:
            raise ValueError(f"segment frames start at id {lo}; only {part.frames_written} frames restored so far")
        part.frames[np.arange(lo, lo + len(frames)) % len(part.frames)] = frames
        part.frames_written = lo + len(frames)

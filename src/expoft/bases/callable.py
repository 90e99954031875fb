"""Any Python callable as an external base policy (a torch / LeRobot model, a numpy function, ...)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from expoft.bases.interface import BaseOutputError, Normalization, check_chunks, check_obs
from expoft.obs import ObsSpec, PixelSpec, batch_size, map_rows, take_rows, vector_dim


class CallableBase:
    """Wrap ``fn``, a function from observations to action chunks, as an :class:`~expoft.bases.ExternalBase`.

    ``fn`` works in the MODEL's spaces: it receives ``normalization.obs_to_base(obs)`` and returns actions
    in the model's native units, which ``normalization.actions_from_base`` maps to [-1, 1] (no
    normalization: the model takes the environment's observations and emits [-1, 1] itself).

    Calling conventions:

    * ``batched=True`` (default): ``fn(obs float32 [M, obs_dim]) -> [M, H, action_dim]``, called once per
      :meth:`sample` with ``M = B * num_samples`` rows, observation ``b`` repeated ``num_samples`` times
      (row ``b * num_samples + n``), or in pieces of at most ``max_batch`` rows.
    * ``batched=False``: ``fn(obs float32 [obs_dim]) -> [H, action_dim]``, called once per row (a loop
      over the ``B * num_samples`` rows; for models that take one observation at a time).
    * ``takes_rng=True``: ``fn(obs, rng)`` also receives a ``numpy.random.Generator`` seeded from the
      call's ``seed`` (draw the model's noise from it and sampling is reproducible).
    * ``seed_fn``: called as ``seed_fn(seed)`` at the start of every :meth:`sample`, for models that draw
      from a global generator (``torch.manual_seed``, ``np.random.seed``).

    ``H`` must equal ``chunk_len``, or be longer with ``truncate=True`` (the first ``chunk_len`` steps are
    kept; e.g. a model trained with a horizon of 16 used for chunks of 8). The output may be anything
    ``np.asarray`` accepts (a CPU torch tensor without grad, a JAX array) and must be floating point.

    Stochastic vs deterministic: EXPO draws ``num_samples`` candidates per observation and lets the
    critic choose. A stochastic ``fn`` (diffusion / flow sampling from fresh noise) gives distinct
    candidates. A deterministic one (a regression policy, a diffusion policy with fixed noise) returns
    the same chunk every time: the base candidates COLLAPSE to one and only the edit policy's copies
    differ. Declare it with ``deterministic=True``: ``fn`` is then called once per observation and the
    chunk repeated (no wasted calls). Undeclared, the first :meth:`sample` that sees identical samples
    for every observation warns once.

    Learning: ``update_fn(obs [B, obs_dim], chunks [B, chunk_len, action_dim]) -> dict`` (model spaces)
    makes the base trainable (``learns`` is True); without it the base is frozen and
    :meth:`imitation_update` raises ``NotImplementedError``. ``state_fn() -> dict[str, np.ndarray]`` /
    ``load_state_fn(dict)`` give checkpointing; without them :meth:`state` is ``{}``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        obs_dim: ObsSpec,
        action_dim: int,
        chunk_len: int,
        normalization: Normalization | None = None,
        batched: bool = True,
        *,
        deterministic: bool = False,
        takes_rng: bool = False,
        seed_fn: Callable[[int], Any] | None = None,
        max_batch: int | None = None,
        truncate: bool = False,
        out_of_range: str = "error",
        update_fn: Callable[[np.ndarray, np.ndarray], dict] | None = None,
        state_fn: Callable[[], dict] | None = None,
        load_state_fn: Callable[[dict], Any] | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        dims = (("obs_dim", vector_dim(obs_dim) or 1), ("action_dim", action_dim), ("chunk_len", chunk_len))
        for name, value in dims:
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.fn = fn
        self.obs_dim = obs_dim if isinstance(obs_dim, PixelSpec) else int(obs_dim)
        self.action_dim, self.chunk_len = int(action_dim), int(chunk_len)
        self.normalization = normalization or Normalization()
        self.normalization.check_dims(self.obs_dim, self.action_dim)
        self.batched = batched
        self.deterministic = deterministic
        self.takes_rng = takes_rng
        self.seed_fn = seed_fn
        self.max_batch = max_batch
        self.truncate = truncate
        self.out_of_range = out_of_range
        self.update_fn, self.state_fn, self.load_state_fn = update_fn, state_fn, load_state_fn
        self._warned_collapse = False

    @property
    def learns(self) -> bool:
        return self.update_fn is not None

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", type(self.fn).__name__)

    # ---- sampling --------------------------------------------------------
    def sample(self, obs: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
        """``obs float32 [B, obs_dim]`` -> ``float32 [B, num_samples, chunk_len, action_dim]`` in [-1, 1]."""
        obs = check_obs(obs, self.obs_dim)
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        num_samples = int(num_samples)
        batch = batch_size(obs)
        if self.seed_fn is not None:
            self.seed_fn(int(seed))
        rng = np.random.default_rng(int(seed)) if self.takes_rng else None
        draws = 1 if self.deterministic else num_samples
        rows = map_rows(lambda x: np.repeat(x, draws, axis=0), self.normalization.obs_to_base(obs))  # [B * draws, D]
        native = self._call_rows(rows, rng)  # [B * draws, chunk_len, A]
        chunks = self.normalization.actions_from_base(native).reshape(batch, draws, self.chunk_len, self.action_dim)
        if draws != num_samples:
            chunks = np.repeat(chunks, num_samples, axis=1)
        chunks = check_chunks(
            chunks, batch, num_samples, self.chunk_len, self.action_dim, out_of_range=self.out_of_range,
            source=f"CallableBase({self.name})",
        )  # fmt: skip
        if draws > 1 and not self._warned_collapse and np.all(chunks == chunks[:, :1]):
            self._warned_collapse = True
            warnings.warn(
                f"CallableBase({self.name}) returned {num_samples} identical samples for every observation: the "
                "base candidates collapse to one. If the model is deterministic pass deterministic=True "
                "(one call per observation); if it should be stochastic, check its noise/seeding.",
                RuntimeWarning,
                stacklevel=2,
            )
        return chunks

    def _call(self, rows: np.ndarray, rng: np.random.Generator | None) -> Any:
        return self.fn(rows, rng) if self.takes_rng else self.fn(rows)

    def _call_rows(self, rows: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        n = batch_size(rows)
        if not self.batched:
            return np.stack([self._checked(self._call(take_rows(rows, i), rng), None) for i in range(n)])
        step = n if self.max_batch is None else self.max_batch
        parts = [
            self._checked(self._call(take_rows(rows, slice(i, i + step)), rng), min(step, n - i))
            for i in range(0, n, step)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _checked(self, out: Any, rows: int | None) -> np.ndarray:
        """One output of ``fn``: ``[rows, H, A]`` (batched) or ``[H, A]`` (one row), float; truncated to
        chunk_len steps if allowed."""
        source = f"CallableBase({self.name})"
        try:
            arr = np.asarray(out)
        except Exception as exc:
            raise BaseOutputError(f"{source}: fn returned {type(out).__name__}, not an array: {exc}") from exc
        lead = () if rows is None else (rows,)
        want = "[H, action_dim]" if rows is None else f"[{rows}, H, action_dim]"
        if arr.dtype.kind != "f":
            raise BaseOutputError(f"{source}: fn returned dtype {arr.dtype}, expected floating-point chunks {want}")
        if arr.ndim != len(lead) + 2 or arr.shape[: len(lead)] != lead or arr.shape[-1] != self.action_dim:
            hint = " (a batched fn was expected: pass batched=False for one observation per call)" if rows else ""
            raise BaseOutputError(
                f"{source}: fn returned shape {list(arr.shape)}, expected {want} with action_dim="
                f"{self.action_dim}, H={self.chunk_len}{hint}"
            )
        horizon = arr.shape[-2]
        if horizon != self.chunk_len:
            if horizon > self.chunk_len and self.truncate:
                return arr[..., : self.chunk_len, :]
            extra = " (pass truncate=True to keep the first chunk_len steps)" if horizon > self.chunk_len else ""
            raise BaseOutputError(f"{source}: fn returned chunks of {horizon} steps, chunk_len={self.chunk_len}{extra}")
        return arr

    # ---- learning and checkpoints -----------------------------------------
    def imitation_update(self, obs: np.ndarray, chunks: np.ndarray) -> dict[str, float]:
        """One imitation step through ``update_fn`` on ``obs [B, obs_dim]`` and ``chunks [B, chunk_len,
        action_dim]`` in [-1, 1] (mapped to the model's spaces first); returns its metrics as floats."""
        if self.update_fn is None:
            raise NotImplementedError(f"CallableBase({self.name}) is frozen (no update_fn): it cannot learn")
        obs = check_obs(obs, self.obs_dim)
        chunks = np.asarray(chunks, dtype=np.float32)
        if chunks.shape != (batch_size(obs), self.chunk_len, self.action_dim):
            raise ValueError(
                f"chunks have shape {list(chunks.shape)}, expected [B, chunk_len, action_dim] = "
                f"{[batch_size(obs), self.chunk_len, self.action_dim]}"
            )
        metrics = self.update_fn(self.normalization.obs_to_base(obs), self.normalization.actions_to_base(chunks))
        return {str(k): float(v) for k, v in (metrics or {}).items()}

    def state(self) -> dict[str, np.ndarray]:
        return {} if self.state_fn is None else {k: np.asarray(v) for k, v in self.state_fn().items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if self.load_state_fn is not None:
            self.load_state_fn(dict(state))
        elif state:
            raise ValueError(f"CallableBase({self.name}) has no load_state_fn but was given state {sorted(state)}")

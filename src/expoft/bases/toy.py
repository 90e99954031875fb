"""A toy numpy base behind the policy server, and a localhost latency benchmark of the server
(`python -m expoft.bases.server demo|bench`)."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np

from expoft.bases.interface import check_obs
from expoft.bases.remote import RemoteBase


class ToyBase:
    """A small numpy base for smoke tests and latency measurements: chunk ``= clip(0.9 tanh(obs @ W) +
    noise * N(0, 1), -1, 1)``, ``W`` fixed, the noise drawn from ``seed``: deterministic given
    ``(obs, num_samples, seed)``."""

    learns = False

    def __init__(self, obs_dim: int, action_dim: int, chunk_len: int, noise: float = 0.1):
        self.obs_dim, self.action_dim, self.chunk_len, self.noise = obs_dim, action_dim, chunk_len, noise
        w = np.random.default_rng(12345).standard_normal((obs_dim, chunk_len * action_dim))
        self.w = (w / np.sqrt(obs_dim)).astype(np.float32)

    def sample(self, obs: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
        obs = check_obs(obs, self.obs_dim)
        mean = 0.9 * np.tanh(obs @ self.w).reshape(len(obs), 1, self.chunk_len, self.action_dim)
        eps = np.random.default_rng(seed).standard_normal((len(obs), num_samples, self.chunk_len, self.action_dim))
        return np.clip(mean + self.noise * eps, -1.0, 1.0).astype(np.float32)


# ---- command line ------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def demo_command(port: int, obs_dim: int, action_dim: int, chunk_len: int, host: str = "127.0.0.1") -> list[str]:
    """The command line that serves a :class:`ToyBase` (what tests and the benchmark start)."""
    return [sys.executable, "-m", "expoft.bases.server", "demo", "--host", host, "--port", str(port),
            "--obs-dim", str(obs_dim), "--action-dim", str(action_dim), "--chunk-len", str(chunk_len)]  # fmt: skip


def bench(batches: list[int], calls: int, num_samples: int, obs_dim: int, action_dim: int, chunk_len: int) -> list:
    """Round trips to a :class:`ToyBase` served by another process on localhost, per batch size."""
    port = free_port()
    proc = subprocess.Popen(
        demo_command(port, obs_dim, action_dim, chunk_len), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    rows = []
    try:
        for batch in batches:
            url = f"ws://127.0.0.1:{port}"
            with RemoteBase(url, obs_dim, action_dim, chunk_len, retries=40, backoff=0.1, max_backoff=0.5) as base:
                base.connect()
                obs = np.random.default_rng(0).standard_normal((batch, obs_dim)).astype(np.float32)
                for i in range(5):  # warm-up, not counted
                    base.sample(obs, num_samples, i)
                base._latency = type(base._latency)()
                base._server_ms = type(base._server_ms)()
                for i in range(calls):
                    base.sample(obs, num_samples, i)
                stats = base.latency()
            rows.append({"batch": batch, "num_samples": num_samples, "chunk_len": chunk_len, "action_dim": action_dim,
                         "obs_dim": obs_dim, **{k: stats[k] for k in ("calls", "p50_ms", "p99_ms", "mean_ms",
                                                                        "server_p50_ms")}})  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows

"""Shared fixtures: small hand-made datasets and one tiny generated demo set."""

from __future__ import annotations

import numpy as np
import pytest

from expoft.data.dataset import make_dataset


def episode_arrays(lengths, obs_dim=3, action_dim=2, terminal_last=None, seed=0):
    """Arrays of consecutive episodes with consistent next_observations.

    Observation rows are distinct random vectors; rewards are 0..N-1 so that
    sums are easy to compute by hand; ``terminal_last[e]`` makes episode e end
    in a terminal state (else it is a time-limit truncation).
    """
    rng = np.random.default_rng(seed)
    terminal_last = terminal_last or [False] * len(lengths)
    obs, nxt, ends, terms = [], [], [], []
    for length, term in zip(lengths, terminal_last, strict=True):
        states = rng.normal(size=(length + 1, obs_dim)).astype(np.float32)
        obs.append(states[:-1])
        nxt.append(states[1:])
        e = np.zeros(length, bool)
        e[-1] = True
        ends.append(e)
        t = np.zeros(length, bool)
        t[-1] = term
        terms.append(t)
    n = sum(lengths)
    return {
        "observations": np.concatenate(obs),
        "next_observations": np.concatenate(nxt),
        "actions": rng.uniform(-1, 1, size=(n, action_dim)).astype(np.float32),
        "rewards": np.arange(n, dtype=np.float32),
        "terminals": np.concatenate(terms),
        "episode_ends": np.concatenate(ends),
        "episode_success": np.array(terminal_last, bool),
    }


@pytest.fixture
def small_arrays():
    return episode_arrays([4, 3], terminal_last=[True, False])


@pytest.fixture
def small_dataset(small_arrays):
    return make_dataset(small_arrays, {"kind": "custom"})


@pytest.fixture(scope="session")
def cube_demos():
    """Three cube-single task-1 demonstrations (about 2 s to make)."""
    from expoft.data.generate import DemosConfig, generate

    return generate(DemosConfig(env="cube-single", task=1, episodes=3, seed=0), workers=1, progress=False)

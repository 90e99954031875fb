"""Interventions: the scripted expert takes over a stuck policy; flags reach the buffer."""

from __future__ import annotations

import numpy as np
import pytest

from expoft.data.replay import ReplayBuffer
from expoft.envs.chunks import ActionChunks
from expoft.envs.interventions import ScriptedIntervener
from expoft.envs.make import make_env


def test_scripted_takeover_flags_reach_buffer_and_success_pool():
    env = make_env("cube-single", 1)
    intervener = ScriptedIntervener(env, "cube-single", 1, seed=0, patience=5, takeover_steps=500)
    chunked = ActionChunks(env, exec_len=2, intervener=intervener)
    buffer = ReplayBuffer(28, 5, capacity=1000)
    obs, _ = chunked.reset(seed=3)
    flags, done = [], False
    while not done:
        obs, _, terminated, truncated, info = chunked.step(np.zeros((2, 5), np.float32))  # a policy that never moves
        done = terminated or truncated
        for t in info["transitions"]:
            end = t.terminated or t.truncated
            buffer.add(*t[:5], end, success=end and info["success"], intervened=t.intervened)
            flags.append(t.intervened)
    # the idle policy is left alone for `patience` steps, then the oracle drives to success
    assert not any(flags[:5]) and all(flags[5:])
    assert info["success"] and terminated
    assert buffer.intervened_steps == len(flags) - 5
    assert buffer.successful_steps == (0, len(flags))
    batch = buffer.sample(np.random.default_rng(0), 256, discount=0.99, chunk_len=3, successful_only=True)
    starts = batch.observations
    assert batch.intervened.any() and not batch.intervened.all()  # the first chunks are the policy's
    first_obs = buffer.chunks_at(np.arange(3), source="online", chunk_len=3, discount=0.99)
    np.testing.assert_array_equal(first_obs.intervened, [False, False, False])  # steps 0-4 are the policy's
    assert len(starts) == 256


def test_takeover_probability_decays_per_episode():
    env = make_env("cube-single", 1)
    intervener = ScriptedIntervener(env, "cube-single", 1, p_start=0.5, decay=0.5)
    obs, info = env.reset(seed=0)
    for _ in range(3):
        intervener.reset(obs, info)
    assert intervener.probability == pytest.approx(0.5 * 0.5**2)
    never = ScriptedIntervener(env, "cube-single", 1, p_start=0.0, patience=2)
    never.reset(obs, info)
    assert all(never(obs, info, np.zeros(5)) is None for _ in range(20))
    with pytest.raises(ValueError, match="p_start"):
        ScriptedIntervener(env, "cube-single", 1, p_start=2.0)

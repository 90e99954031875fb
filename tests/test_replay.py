"""Replay buffer: hand-computed chunk targets, ring wrap-around, offline fraction, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from expoft.data.replay import ReplayBuffer
from expoft.data.transitions import make_dataset

from .conftest import episode_arrays

GAMMA = 0.5


@pytest.fixture
def buffer(small_dataset):
    # Offline: episode A = steps 0..3 ending terminal, episode B = steps 4..6 truncated.
    # Rewards are 0..6.
    return ReplayBuffer(obs_dim=3, action_dim=2, capacity=5, offline=small_dataset)


def test_chunk_targets_match_hand_computation(buffer, small_dataset):
    ds = small_dataset
    b = buffer.chunks_at([0, 2, 3, 4, 5, 6], source="offline", chunk_len=3, discount=GAMMA)
    # start 0: steps 0,1,2 inside episode A.       R = 0 + .5*1 + .25*2
    # start 2: steps 2,3; 3 is terminal.           R = 2 + .5*3, no bootstrap
    # start 3: step 3 only (terminal).             R = 3
    # start 4: steps 4,5,6 of episode B.           R = 4 + .5*5 + .25*6
    # start 5: steps 5,6; 6 is a time-limit end.   R = 5 + .5*6, bootstrap from s_7
    # start 6: step 6 only.                        R = 6
    np.testing.assert_allclose(b.rewards, [1.0, 3.5, 3.0, 8.0, 8.0, 6.0])
    np.testing.assert_allclose(b.discounts, [0.125, 0.25, 0.5, 0.125, 0.25, 0.5])
    np.testing.assert_array_equal(b.masks, [1, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(b.valid, [[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(b.observations, ds.observations[[0, 2, 3, 4, 5, 6]])
    np.testing.assert_array_equal(b.next_observations, ds.next_observations[[2, 3, 3, 6, 6, 6]])
    # Actions past an episode's end repeat its last valid action.
    np.testing.assert_array_equal(b.actions[1], ds.actions[[2, 3, 3]])
    np.testing.assert_array_equal(b.actions[3], ds.actions[[4, 5, 6]])
    assert b.actions.shape == (6, 3, 2) and b.actions.dtype == np.float32
    assert b.offline.all()


def test_chunk_len_one_is_the_ordinary_transition(buffer, small_dataset):
    ds = small_dataset
    idx = np.arange(7)
    b = buffer.chunks_at(idx, source="offline", chunk_len=1, discount=0.99)
    np.testing.assert_array_equal(b.rewards, ds.rewards)
    np.testing.assert_allclose(b.discounts, np.full(7, 0.99, np.float32))
    np.testing.assert_array_equal(b.masks, 1.0 - ds.terminals)
    np.testing.assert_array_equal(b.next_observations, ds.next_observations)
    np.testing.assert_array_equal(b.actions[:, 0], ds.actions)
    assert b.valid.shape == (7, 1) and b.valid.all()


def _add_steps(buf, rewards, ends, rng):
    for r, end in zip(rewards, ends, strict=True):
        obs = rng.normal(size=3).astype(np.float32)
        buf.add(obs, rng.uniform(-1, 1, 2), r, obs + 1, terminal=False, episode_end=end)


def test_ring_wrap_around_never_crosses_the_write_head(buffer):
    rng = np.random.default_rng(0)
    # Episode A = t0..t2 (ends), episode B = t3..t6 still running. Capacity 5, so
    # t5 and t6 overwrite slots 0 and 1 and slot 2 (t2) is now the oldest.
    _add_steps(buffer, rewards=range(7), ends=[0, 0, 1, 0, 0, 0, 0], rng=rng)
    assert buffer.online_size == 5
    b = buffer.chunks_at([3, 0, 1, 2], source="online", chunk_len=4, discount=GAMMA)
    # slot 3 = t3: t3..t6 wrap around the array end.
    # slot 0 = t5: t5, t6, then the write head: stop.
    # slot 1 = t6: newest step.
    # slot 2 = t2: the end of episode A.
    np.testing.assert_array_equal(b.valid, [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_allclose(b.rewards, [3 + 0.5 * 4 + 0.25 * 5 + 0.125 * 6, 5 + 0.5 * 6, 6, 2])
    np.testing.assert_allclose(b.discounts, [0.0625, 0.25, 0.5, 0.5])
    np.testing.assert_array_equal(b.masks, [1, 1, 1, 1])
    assert not b.offline.any()


def test_terminal_online_step_stops_bootstrapping(buffer):
    obs = np.zeros(3, np.float32)
    buffer.add(obs, np.zeros(2), 1.0, obs + 1, terminal=True, episode_end=False)
    buffer.add(obs + 1, np.zeros(2), 0.0, obs + 2, terminal=False, episode_end=False)
    b = buffer.chunks_at([0], source="online", chunk_len=2, discount=GAMMA)
    np.testing.assert_array_equal(b.valid, [[1, 0]])
    np.testing.assert_array_equal(b.masks, [0])
    np.testing.assert_array_equal(b.next_observations, [obs + 1])


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_offline_fraction_is_honoured(buffer, fraction):
    rng = np.random.default_rng(1)
    _add_steps(buffer, rewards=range(5), ends=[0, 0, 0, 0, 1], rng=rng)
    b = buffer.sample(rng, 256, discount=0.99, chunk_len=2, offline_fraction=fraction)
    assert b.observations.shape == (256, 3) and b.actions.shape == (256, 2, 2)
    assert b.offline.sum() == round(256 * fraction)
    # Offline rows really come from the dataset (its rewards are 0..6), online ones from the ring.
    offline_obs = {tuple(o) for o in buffer._offline.a["observations"]}
    assert all((tuple(o) in offline_obs) == bool(f) for o, f in zip(b.observations, b.offline, strict=True))


def test_sampling_covers_all_slots_uniformly(buffer):
    rng = np.random.default_rng(2)
    counts = np.zeros(7)
    for _ in range(200):
        b = buffer.sample(rng, 70, discount=0.9, offline_fraction=1.0)
        rows = [int(np.flatnonzero((buffer._offline.a["observations"] == o).all(1))[0]) for o in b.observations]
        counts += np.bincount(rows, minlength=7)
    expected = counts.sum() / 7
    # 14000 draws over 7 slots: each count within 5 standard deviations of 2000.
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected * 6 / 7)


def test_sample_errors(buffer, small_dataset):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"offline_fraction must lie in \[0, 1\], got 1.5"):
        buffer.sample(rng, 8, discount=0.99, offline_fraction=1.5)
    with pytest.raises(ValueError, match="from the online part: it is empty"):
        buffer.sample(rng, 8, discount=0.99, offline_fraction=0.5)
    with pytest.raises(ValueError, match="discount must lie"):
        buffer.sample(rng, 8, discount=1.5, offline_fraction=1.0)
    with pytest.raises(ValueError, match="chunk_len must be >= 1"):
        buffer.sample(rng, 8, discount=0.9, chunk_len=0, offline_fraction=1.0)
    no_offline = ReplayBuffer(3, 2, 10)
    with pytest.raises(ValueError, match="from the offline part: it is empty"):
        no_offline.sample(rng, 8, discount=0.99, offline_fraction=0.5)


def test_add_rejects_bad_input(buffer):
    obs = np.zeros(3)
    with pytest.raises(ValueError, match="non-finite observation"):
        buffer.add(np.array([0, np.nan, 0]), np.zeros(2), 0.0, obs, False, False)
    with pytest.raises(ValueError, match="non-finite reward"):
        buffer.add(obs, np.zeros(2), np.inf, obs, False, False)
    with pytest.raises(ValueError, match=r"action shape \(3,\); expected \(2,\)"):
        buffer.add(obs, np.zeros(3), 0.0, obs, False, False)
    with pytest.raises(ValueError, match="outside"):
        buffer.add(obs, np.array([2.0, 0.0]), 0.0, obs, False, False)
    assert buffer.online_size == 0


def test_offline_data_is_read_only_and_needs_rewards(buffer, small_dataset):
    before = small_dataset.observations.copy()
    buffer.sample(np.random.default_rng(0), 16, discount=0.9, offline_fraction=1.0)
    np.testing.assert_array_equal(small_dataset.observations, before)
    with pytest.raises(ValueError, match="read-only"):
        buffer._offline.a["observations"][0] = 1.0
    arrays = episode_arrays([3], labelled=False)
    with pytest.raises(ValueError, match="must be labelled for a task"):
        ReplayBuffer(3, 2, 10, offline=make_dataset(arrays))
    with pytest.raises(ValueError, match="obs/action dims"):
        ReplayBuffer(4, 2, 10, offline=small_dataset)


def test_successful_only_draws_from_successful_episodes(small_dataset):
    # offline: episode 0 (4 steps) succeeded, episode 1 (3 steps) did not
    buffer = ReplayBuffer(obs_dim=3, action_dim=2, capacity=6, offline=small_dataset)
    assert buffer.successful_steps == (4, 0)
    rng = np.random.default_rng(0)
    batch = buffer.sample(rng, 64, discount=0.9, successful_only=True)
    assert batch.offline.all()
    offline_obs = {tuple(o) for o in small_dataset.observations[:4]}
    assert {tuple(o) for o in batch.observations} <= offline_obs

    def episode(length, value, success):
        for t in range(length):
            end = t == length - 1
            obs = np.full(3, value + t, np.float32)
            buffer.add(obs, np.zeros(2), float(end and success), obs + 1, end and success, end, success=end and success)

    episode(2, 100, success=False)
    assert buffer.successful_steps == (4, 0)
    episode(3, 200, success=True)
    assert buffer.successful_steps == (4, 3)
    batch = buffer.sample(rng, 400, discount=0.9, successful_only=True, chunk_len=2)
    online = batch.observations[~batch.offline][:, 0]
    assert set(online) == {200, 201, 202} and 0.3 < (~batch.offline).mean() < 0.6  # 3 of 7 successful steps
    assert np.all(batch.offline[: batch.offline.sum()])  # offline rows first
    # capacity 6: a 4-step episode wraps over the failed episode and the first successful step
    episode(4, 300, success=False)
    assert buffer.successful_steps == (4, 2)
    batch = buffer.sample(rng, 200, discount=0.9, successful_only=True)
    assert set(batch.observations[~batch.offline][:, 0]) == {201, 202}


def test_successful_only_needs_a_success():
    buffer = ReplayBuffer(obs_dim=3, action_dim=2, capacity=4)
    buffer.add(np.zeros(3), np.zeros(2), 0.0, np.ones(3), False, True)
    with pytest.raises(ValueError, match="no successful episodes"):
        buffer.sample(np.random.default_rng(0), 4, discount=0.9, successful_only=True)


def test_drop_open_episode_forgets_only_the_episode_being_written():
    """An actor that died mid-episode: its steps leave the buffer, the finished episodes stay, and
    the next episode is written (and flagged successful) as if the dropped one never was."""
    buf = ReplayBuffer(3, 2, capacity=20)
    obs = np.zeros(3, np.float32)

    def add(n, end_success=None):
        for i in range(n):
            last = end_success is not None and i == n - 1
            buf.add(obs + buf.total_added, np.zeros(2, np.float32), 0.0, obs, False, last, success=bool(end_success))

    add(5, end_success=False)
    add(3)  # open
    assert buf.drop_open_episode() == 3
    assert (buf.online_size, buf.total_added, buf.drop_open_episode()) == (5, 5, 0)
    add(4, end_success=True)
    assert buf.successful_steps[1] == 4 and buf.online_size == 9
    np.testing.assert_array_equal(buf._online.a["observations"][5:9, 0], [5, 6, 7, 8])
    wrapped = ReplayBuffer(3, 2, capacity=6)
    for _ in range(8):  # one open episode longer than the ring: its first steps are gone
        wrapped.add(obs, np.zeros(2, np.float32), 0.0, obs, False, False)
    assert wrapped.drop_open_episode() == 0  # kept, closed as cut by a time limit
    assert wrapped._online.a["episode_ends"][(wrapped._online.ptr - 1) % 6] and wrapped.online_size == 6


def test_end_episode_at_cuts_an_episode_as_a_time_limit_would():
    buffer = ReplayBuffer(3, 2, capacity=6)
    obs = np.zeros(3, np.float32)
    for i in range(8):  # the ring holds global steps 2..7; step 1 ended (successfully) an episode
        buffer.add(obs, np.zeros(2, np.float32), 0.0, obs, False, i == 1, success=i == 1)
    buffer.end_episode_at(4)
    buffer.end_episode_at(1)  # no longer held: nothing happens
    ends = {g: bool(buffer._online.a["episode_ends"][g % 6]) for g in range(2, 8)}
    assert ends == {2: False, 3: False, 4: True, 5: False, 6: False, 7: False}
    assert not buffer._online.a["terminals"].any() and not buffer._online.a["successful"][[4 % 6]].any()
    buffer.end_episode_at(7)  # the newest: the open episode is closed
    assert buffer._online.a["episode_ends"][7 % 6] and buffer._episode_len == 0
    batch = buffer.chunks_at(np.array([2 % 6]), source="online", chunk_len=5, discount=0.9)
    assert batch.valid[0].tolist() == [1, 1, 1, 0, 0]  # a chunk stops at the cut

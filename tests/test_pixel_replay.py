"""Replay buffer with pixel observations: each frame stored once, chunks see the right frames."""

import numpy as np
import pytest

from expoft.data.replay import ReplayBuffer
from expoft.data.transitions import make_dataset
from expoft.obs import PIXELS, PROPRIO, PixelSpec

SPEC = PixelSpec(image_size=16, cameras=("front_pixels",), proprio_dim=2)


def frame(k: int) -> np.ndarray:
    """A frame that encodes the number k (k < 256) in every pixel."""
    return np.full(SPEC.image_shape, k, np.uint8)


def obs(k: int) -> dict:
    return {PIXELS: frame(k), PROPRIO: np.array([k, -k], np.float32)}


def add_episode(buffer, first: int, length: int, success=False, terminal=True):
    """Observations first, first+1, ..., first+length; the reward is 1 at the last step."""
    for t in range(length):
        last = t == length - 1
        buffer.add(obs(first + t), np.zeros(2), float(last), obs(first + t + 1), terminal and last, last,
                   success=success and last)  # fmt: skip


def test_frames_are_stored_once_and_chunks_see_the_right_frames():
    buffer = ReplayBuffer(SPEC, 2, capacity=20)
    add_episode(buffer, 0, 3)  # observations 0..3
    add_episode(buffer, 10, 2)  # observations 10..12
    # 5 transitions, 2 episodes: 7 frames, not 10
    assert buffer._online.frames_written == 7
    batch = buffer.chunks_at(np.arange(5), source="online", chunk_len=2, discount=0.5)
    np.testing.assert_array_equal(batch.observations[PIXELS][:, 0, 0, 0], [0, 1, 2, 10, 11])
    np.testing.assert_array_equal(batch.observations[PROPRIO][:, 0], [0, 1, 2, 10, 11])
    # two steps ahead, or the episode's final observation when the chunk runs into its end
    np.testing.assert_array_equal(batch.next_observations[PIXELS][:, 0, 0, 0], [2, 3, 3, 12, 12])
    np.testing.assert_array_equal(batch.next_observations[PROPRIO][:, 0], [2, 3, 3, 12, 12])
    np.testing.assert_allclose(batch.rewards, [0.0, 0.5, 1.0, 0.5, 1.0])
    assert batch.observations[PIXELS].dtype == np.uint8
    sampled = buffer.sample(np.random.default_rng(0), 8, discount=0.9, chunk_len=2, offline_fraction=0.0)
    assert sampled.observations[PIXELS].shape == (8, *SPEC.image_shape)


def test_out_of_order_and_malformed_observations_are_refused():
    buffer = ReplayBuffer(SPEC, 2, capacity=10)
    buffer.add(obs(0), np.zeros(2), 0.0, obs(1), False, False)
    with pytest.raises(ValueError, match="previous step's next observation"):
        buffer.add(obs(5), np.zeros(2), 0.0, obs(6), False, False)
    with pytest.raises(ValueError, match="uint8"):
        buffer.add({PIXELS: frame(1).astype(np.float32), PROPRIO: np.zeros(2)}, np.zeros(2), 0.0, obs(2), False, False)
    with pytest.raises(ValueError, match="keys"):
        buffer.add(np.zeros(2), np.zeros(2), 0.0, obs(2), False, False)
    with pytest.raises(ValueError, match="shape"):
        buffer.add({PIXELS: frame(1)[:8], PROPRIO: np.zeros(2)}, np.zeros(2), 0.0, obs(2), False, False)


def test_ring_wraparound_never_serves_overwritten_frames():
    buffer = ReplayBuffer(SPEC, 2, capacity=10)
    k = 0
    for _ in range(30):  # one-step episodes: 2 frames per transition, more than the frame ring holds
        add_episode(buffer, k, 1)
        k += 2
    rng = np.random.default_rng(0)
    for _ in range(20):
        batch = buffer.sample(rng, 16, discount=0.9, offline_fraction=0.0)
        # every served frame matches its transition's proprioception (which is kept per transition)
        np.testing.assert_array_equal(batch.observations[PIXELS][:, 0, 0, 0], batch.observations[PROPRIO][:, 0])
        np.testing.assert_array_equal(
            batch.next_observations[PIXELS][:, 0, 0, 0], batch.next_observations[PROPRIO][:, 0]
        )


def test_offline_frames_and_segments_round_trip():
    n_ep, length = 2, 3
    obs_vec = np.array([[k, -k, 7.0] for e in range(n_ep) for k in range(10 * e, 10 * e + length)], np.float32)
    arrays = {
        "observations": obs_vec,
        "next_observations": obs_vec + np.array([1, -1, 0], np.float32),
        "actions": np.zeros((n_ep * length, 2), np.float32),
        "rewards": np.tile([0.0, 0.0, 1.0], n_ep).astype(np.float32),
        "terminals": np.tile([False, False, True], n_ep),
        "episode_ends": np.tile([False, False, True], n_ep),
        "episode_success": np.ones(n_ep, bool),
    }
    ds = make_dataset(arrays)
    frames = np.stack([frame(k) for e in range(n_ep) for k in range(10 * e, 10 * e + length + 1)])  # L+1 each
    buffer = ReplayBuffer(SPEC, 2, capacity=8, offline=ds, offline_frames=frames)
    batch = buffer.chunks_at(np.arange(6), source="offline", chunk_len=1, discount=0.9)
    np.testing.assert_array_equal(batch.observations[PIXELS][:, 0, 0, 0], [0, 1, 2, 10, 11, 12])
    np.testing.assert_array_equal(batch.next_observations[PIXELS][:, 0, 0, 0], [1, 2, 3, 11, 12, 13])
    assert batch.observations[PROPRIO].shape == (6, 2)  # the state's first proprio_dim entries
    with pytest.raises(ValueError, match="expected"):
        ReplayBuffer(SPEC, 2, capacity=8, offline=ds, offline_frames=frames[:-1])
    with pytest.raises(ValueError, match="needs the offline dataset's frames"):
        ReplayBuffer(SPEC, 2, capacity=8, offline=ds)

    add_episode(buffer, 100, 3, success=True)
    first = buffer.segment(0)
    add_episode(buffer, 120, 2)
    second = buffer.segment(first["end"])
    assert len(first["frames"]) == 4 and len(second["frames"]) == 3  # L + 1 frames per episode
    copy = ReplayBuffer(SPEC, 2, capacity=8, offline=ds, offline_frames=frames)
    copy.restore_segment(first)
    copy.restore_segment(second)
    a = buffer.chunks_at(np.arange(5), source="online", chunk_len=2, discount=0.9)
    b = copy.chunks_at(np.arange(5), source="online", chunk_len=2, discount=0.9)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, dict):
            for key in x:
                np.testing.assert_array_equal(x[key], y[key])
        elif x is not None:
            np.testing.assert_array_equal(x, y)
    assert copy.successful_steps == buffer.successful_steps == (6, 3)


def test_mixed_offline_online_batches_join_pixel_observations():
    n = 4
    obs_vec = np.array([[k, -k, 0.0] for k in range(n + 1)], np.float32)
    ends = np.array([False, False, False, True])
    ds = make_dataset({"observations": obs_vec[:-1], "next_observations": obs_vec[1:],
                       "actions": np.zeros((n, 2), np.float32), "rewards": ends.astype(np.float32),
                       "terminals": ends, "episode_ends": ends, "episode_success": np.ones(1, bool)})  # fmt: skip
    buffer = ReplayBuffer(SPEC, 2, capacity=8, offline=ds, offline_frames=np.stack([frame(k) for k in range(n + 1)]))
    add_episode(buffer, 50, 3)
    batch = buffer.sample(np.random.default_rng(0), 10, discount=0.9, num_offline=6)
    assert batch.observations[PIXELS].shape == (10, *SPEC.image_shape)
    pix = batch.observations[PIXELS][:, 0, 0, 0]
    assert (pix[:6] < 50).all() and (pix[6:] >= 50).all()  # offline rows first
    np.testing.assert_array_equal(pix, batch.observations[PROPRIO][:, 0])

"""Pixel observations: the wrapper, frames of datasets rendered from their states, their cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from expoft.data.episodes import _episode_rngs
from expoft.data.frames import (
    FramesError,
    _load_cached,
    dataset_digest,
    frames_for,
    frames_paths,
    get_or_render,
    render_frames,
)
from expoft.data.generate import DemosConfig, PlayConfig, generate, get_or_generate
from expoft.envs.make import make_env
from expoft.envs.pixels import PixelObservations, make_pixel_env, render_state
from expoft.obs import PIXELS, PROPRIO, PixelSpec

TWO_CAMERAS = PixelSpec(cameras=("front_pixels", "front"))


# Building an OGBench env takes ~0.5-1 s: the tests share these (each resets with its own seed).
@pytest.fixture(scope="module")
def state_env(rendering):
    return make_env("cube-single", 1)


@pytest.fixture(scope="module")
def pixel_env(rendering):
    return make_pixel_env("cube-single", 1)


def test_frame_rows_follow_the_episode_major_layout(small_dataset):
    # episodes of 4 and 3 steps: states in rows 0..4 and 5..8; episode 1's transitions start at row 5
    np.testing.assert_array_equal(small_dataset.frame_rows(), [0, 1, 2, 3, 5, 6, 7])
    assert small_dataset.frame_rows().dtype == np.int64


def test_pixel_env_refuses_other_domains_and_unknown_cameras(rendering, state_env):
    with pytest.raises(ValueError, match="cube domains"):
        make_pixel_env("scene", 1)
    # (the camera check comes before any change to the env)
    with pytest.raises(ValueError, match=r"unknown camera\(s\) \['top'\].*'front_pixels'"):
        PixelObservations(state_env, PixelSpec(cameras=("front_pixels", "top")))


def test_observations_are_frames_and_proprio_and_the_state_stays_in_info(rendering, state_env, pixel_env):
    env = make_pixel_env("cube-single", 1, TWO_CAMERAS, episode_steps=10)
    obs, info = env.reset(seed=3)
    state, _ = state_env.reset(seed=3)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(4, 5)).astype(np.float32)
    for action in actions:
        TWO_CAMERAS.check(obs)
        assert env.observation_space.contains(obs)
        assert obs[PIXELS].shape == (64, 64, 6) and obs[PIXELS].dtype == np.uint8
        assert obs[PROPRIO].dtype == np.float32 and info["state"].dtype == np.float32
        np.testing.assert_array_equal(obs[PROPRIO], info["state"][:19])
        # the wrapper does not change the dynamics: same states as the plain state env
        np.testing.assert_array_equal(info["state"], state)
        # cameras are stacked in the spec's order; the first is what a one-camera env shows
        np.testing.assert_array_equal(obs[PIXELS][..., :3], render_state(pixel_env, env.unwrapped.data.qpos))
        assert obs[PIXELS][..., :3].std() > 5 and not np.array_equal(obs[PIXELS][..., :3], obs[PIXELS][..., 3:])
        obs, reward, terminated, truncated, info = env.step(action)
        state, *_ = state_env.step(action)
    assert {"qpos", "success", "state"} <= set(info)  # OGBench's info passes through


def test_render_state_reproduces_the_frame_and_leaves_the_env_alone(rendering, pixel_env, state_env):
    env = pixel_env
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, *_ = env.step(env.action_space.sample())
    data = env.unwrapped.data
    before = (data.qpos.copy(), data.qvel.copy(), data.site_xpos.copy())
    np.testing.assert_array_equal(render_state(env, data.qpos), obs[PIXELS])
    # positions as a dataset stores them (float32) give the same frame
    np.testing.assert_array_equal(env.render_state(data.qpos.astype(np.float32)), obs[PIXELS])
    for a, b in zip(before, (data.qpos, data.qvel, data.site_xpos), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"qpos must have shape \(21,\)"):
        env.render_state(np.zeros(5))
    with pytest.raises(ValueError, match="no PixelObservations"):
        render_state(state_env, data.qpos)


@pytest.fixture(scope="module")
def tiny_demos(rendering, tmp_path_factory):
    """Two short cube-single demos saved in a temporary folder: (path, dataset)."""
    cfg = DemosConfig(env="cube-single", task=1, episodes=2, seed=0, max_episode_steps=12)
    path, ds, _ = get_or_generate(cfg, out=tmp_path_factory.mktemp("data"), workers=1, progress=False)
    return path, ds


def test_dataset_frames_are_the_frames_of_a_pixel_env_replaying_the_actions(rendering, tiny_demos, pixel_env):
    path, ds = tiny_demos
    frames = frames_for(path, PixelSpec(), progress=False)
    assert frames.shape == (ds.num_transitions + ds.num_episodes, 64, 64, 3) and frames.dtype == np.uint8
    # Known answer: the pixel env reset with the generator's seed and driven by the dataset's actions.
    env = pixel_env
    rows = ds.frame_rows()
    starts, stops = ds.episode_bounds()
    for e, (start, stop) in enumerate(zip(starts, stops, strict=True)):
        _, env_seed, _ = _episode_rngs(0, e)
        obs, info = env.reset(seed=env_seed)
        np.testing.assert_allclose(info["state"], ds.observations[start], atol=1e-5)
        np.testing.assert_array_equal(frames[start + e], obs[PIXELS])
        for j in range(start, stop):
            assert rows[j] == j + e
            np.testing.assert_array_equal(frames[rows[j]], obs[PIXELS], err_msg=f"s_t of transition {j}")
            obs, *_ = env.step(ds.actions[j])
            np.testing.assert_array_equal(frames[rows[j] + 1], obs[PIXELS], err_msg=f"s_t+1 of transition {j}")


def test_frames_cache_is_reused_checked_and_rendered_again_on_request(rendering, tiny_demos):
    path, ds = tiny_demos
    spec = PixelSpec()
    npz, meta_path = frames_paths(path, spec)
    first_path, frames, _ = get_or_render(path, spec, progress=False)
    assert first_path == npz and npz.name.endswith(".frames-64px-front_pixels.npz") and npz.parent == path.parent
    mtime = npz.stat().st_mtime_ns
    again_path, again, reused = get_or_render(path, spec, progress=False)
    assert reused and again_path == npz and npz.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again, frames)
    meta = json.loads(meta_path.read_text())
    assert meta["shape"] == list(frames.shape) and meta["spec"]["cameras"] == ["front_pixels"]

    # A cache made for other data is stale (None: rendered again), not an error.
    other = ds.replace(next_qpos=ds.next_qpos + np.float32(1e-3))
    assert dataset_digest(other) != dataset_digest(ds)
    assert _load_cached(npz, meta_path, spec, dataset_digest(other), len(frames)) is None

    description = meta_path.read_text()
    meta_path.write_text("{not json")
    with pytest.raises(FramesError, match=r"(?s)\.json.*not valid JSON.*--force"):
        frames_for(path, spec, progress=False)
    meta_path.write_text(description)
    npz.write_bytes(npz.read_bytes()[:200])  # truncated
    with pytest.raises(FramesError, match=r"(?s)frames-64px-front_pixels\.npz.*--force"):
        frames_for(path, spec, progress=False)
    _, rendered, reused = get_or_render(path, spec, force=True, progress=False)
    assert not reused and npz.with_name(npz.name + ".bak").exists()
    np.testing.assert_array_equal(rendered, frames)


def test_frames_only_for_unmodified_expoft_datasets(rendering, tiny_demos, small_dataset, tmp_path):
    _, ds = tiny_demos
    with pytest.raises(FramesError, match="generated by expoft"):
        render_frames(small_dataset, PixelSpec(), progress=False)
    edited = ds.replace(observations=ds.observations + np.float32(0.01))
    with pytest.raises(FramesError, match="episode 0: resetting the environment as the generator did"):
        render_frames(edited, PixelSpec(), progress=False)
    # A dataset object (no path) is cached under its generator's name, in cache_dir if given.
    frames = frames_for(ds, PixelSpec(), cache_dir=tmp_path, progress=False)
    assert len(frames) == ds.num_transitions + ds.num_episodes
    assert len(list(tmp_path.glob("cube-single-task1-demos-2ep-seed0-*.frames-64px-front_pixels.npz"))) == 1
    np.testing.assert_array_equal(frames_for(tiny_demos[0], PixelSpec(), progress=False), frames)


def test_play_data_frames(rendering, pixel_env):
    ds = generate(PlayConfig(env="cube-single", transitions=8, episode_steps=8, seed=1), workers=1, progress=False)
    frames = render_frames(ds, PixelSpec(), progress=False)
    assert frames.shape == (9, 64, 64, 3)
    np.testing.assert_array_equal(frames[1:], np.stack([pixel_env.render_state(q) for q in ds.next_qpos]))


def test_cli_render_writes_then_validates(rendering, tiny_demos, capsys):
    from expoft.cli import main

    path, ds = tiny_demos
    args = ["data", "render", str(path), "--image-size", "64", "--cameras", "front_pixels", "--no-progress"]
    # The first call renders, or validates the cache of a test above when the same worker ran it
    # first (xdist decides); the second always finds the file and validates it.
    assert main(args) == 0
    assert capsys.readouterr().out.startswith(("wrote ", "validated "))
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = ds.num_transitions + ds.num_episodes
    assert out.startswith("validated ") and "frames-64px-front_pixels.npz" in out and f"[{rows}, 64, 64, 3]" in out
    assert main(["data", "render", str(path), "--cameras", "nope"]) == 2
    assert "unknown camera" in capsys.readouterr().err


def test_scripted_interventions_drive_the_pixel_env(rendering, pixel_env):
    from expoft.envs.chunks import ActionChunks
    from expoft.envs.interventions import ScriptedIntervener

    # The oracle reads OGBench's info and the simulator (env.unwrapped), never the observation.
    intervener = ScriptedIntervener(pixel_env, "cube-single", 1, seed=0, patience=3, takeover_steps=100)
    chunked = ActionChunks(pixel_env, exec_len=2, intervener=intervener)
    chunked.reset(seed=3)
    transitions = []
    for _ in range(7):
        _, _, terminated, truncated, info = chunked.step(np.zeros((2, 5), np.float32))
        transitions += info["transitions"]
        assert not (terminated or truncated)
    flags = [t.intervened for t in transitions]
    assert not any(flags[:3]) and all(flags[3:])  # the idle policy is left alone for `patience` steps
    assert all(isinstance(t.observation, dict) and t.observation[PIXELS].shape == (64, 64, 3) for t in transitions)
    assert np.abs(np.stack([t.action for t in transitions[3:]])).max() > 0.1  # the oracle moves the arm

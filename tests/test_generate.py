"""Oracle data generation: determinism, success flags, play labelling, the cache."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from expoft.data.dataset import load_dataset
from expoft.data.generate import DemosConfig, PlayConfig, generate, get_or_generate
from expoft.data.transitions import DatasetError
from expoft.envs.ogbench_domains import get_domain, make_singletask_env


def _same(a, b):
    assert a.arrays().keys() == b.arrays().keys()
    for k, v in a.arrays().items():
        np.testing.assert_array_equal(v, getattr(b, k), err_msg=k)


def test_demos_are_deterministic_across_worker_counts(cube_demos, monkeypatch):
    cfg = DemosConfig(env="cube-single", task=1, episodes=3, seed=0)
    _same(cube_demos, generate(cfg, workers=1, progress=False))
    # Force one job per episode so that two spawned worker processes really share the work:
    # they must give the same arrays as one process.
    import expoft.data.generate as gen

    monkeypatch.setattr(gen, "_IN_PROCESS_STEPS", 1)
    _same(cube_demos, generate(cfg, workers=2, progress=False))
    other = generate(DemosConfig(env="cube-single", task=1, episodes=3, seed=1), workers=1, progress=False)
    assert not np.array_equal(other.actions[:10], cube_demos.actions[:10])


def test_demo_episodes_end_at_success_with_sparse_reward(cube_demos):
    ds = cube_demos
    assert ds.meta["kind"] == "demos" and ds.meta["task"] == 1
    assert ds.observations.shape[1] == 28 and ds.actions.shape[1] == 5
    assert ds.observations.dtype == np.float32
    assert np.abs(ds.actions).max() <= 1.0
    starts, stops = ds.episode_bounds()
    for e, (s, t) in enumerate(zip(starts, stops, strict=True)):
        if ds.episode_success[e]:
            # Reward 1 and a terminal exactly on the last step of a successful episode.
            assert ds.terminals[t - 1] and ds.rewards[t - 1] == 1.0
            assert ds.rewards[s : t - 1].sum() == 0 and not ds.terminals[s : t - 1].any()
        else:
            assert t - s == get_domain("cube-single").episode_steps


def test_replaying_demo_actions_reproduces_the_episode(cube_demos):
    """The stored observations are what the env produced for the stored actions."""
    ds = cube_demos
    from expoft.data.episodes import _episode_rngs

    _, env_seed, _ = _episode_rngs(0, 0)
    env = make_singletask_env(get_domain("cube-single"), 1)
    ob, _ = env.reset(seed=env_seed)
    _, stop = ds.episode_bounds()[0][0], ds.episode_bounds()[1][0]
    np.testing.assert_allclose(ob, ds.observations[0], atol=1e-5)
    for t in range(stop):
        ob, reward, terminated, _, info = env.step(ds.actions[t].astype(np.float64))
        np.testing.assert_allclose(ob, ds.next_observations[t], atol=1e-4)
    assert info["success"] == ds.episode_success[0]


def test_gripper_noise_scales_only_the_gripper_and_keeps_old_cache_names():
    base = DemosConfig(env="cube-single", task=1, episodes=1, seed=0, noise=0.1)
    calm = DemosConfig(env="cube-single", task=1, episodes=1, seed=0, noise=0.1, gripper_noise=0.0)
    # The default is OGBench's scale and is left out of the digest, so the cache name of a dataset
    # generated before the option existed is unchanged; any other value names another dataset.
    assert base.gripper_noise == 10.0 and base.cache_name().endswith("-af05ee54")
    assert calm.cache_name() != base.cache_name()
    noisy, quiet = (generate(c, workers=1, progress=False) for c in (base, calm))
    # Same draws, so the first action's arm part is identical (the gripper's noise does not shift
    # the random stream).
    np.testing.assert_array_equal(noisy.actions[0, :4], quiet.actions[0, :4])
    # Without gripper noise the commands are the oracle's own, fully open or closed (-1 or 1);
    # with OGBench's scale about half of them are somewhere in between.
    assert np.all(np.abs(quiet.actions[:, 4]) == 1.0)
    assert np.mean(np.abs(noisy.actions[:, 4]) == 1.0) < 0.8
    with pytest.raises(ValueError, match="gripper_noise must be >= 0"):
        DemosConfig(gripper_noise=-1.0)


@pytest.mark.parametrize("env", ["cube-double", "scene", "puzzle-3x3"])
def test_demos_for_other_domains_reach_their_goal(env):
    ds = generate(DemosConfig(env=env, task=2, episodes=1, seed=0, noise=0.05), workers=1, progress=False)
    assert ds.episode_success.all(), f"the directed oracle failed {env} task 2"
    assert ds.obs_dim == get_domain(env).obs_dim
    if get_domain(env).has_button_states:
        assert ds.next_button_states.shape == (ds.num_transitions, get_domain(env).num_buttons)


def test_play_data_has_fixed_length_episodes_and_labels_per_task():
    cfg = PlayConfig(env="cube-double", transitions=300, episode_steps=150, seed=0)
    ds = generate(cfg, workers=1, progress=False)
    assert ds.num_transitions == 300 and ds.num_episodes == 2
    np.testing.assert_array_equal(np.flatnonzero(ds.episode_ends), [149, 299])
    assert not ds.has_task and ds.next_qpos.shape == (300, 28)
    _same(ds, generate(cfg, workers=1, progress=False))
    from expoft.data.labels import label_for_task

    for task in range(1, 6):
        labelled = label_for_task(ds, "cube-double", task, reward="ogbench")
        assert labelled.rewards.shape == (300,) and labelled.rewards.max() <= 0
        assert labelled.episode_success.shape == (2,)


@pytest.mark.parametrize("env", ["scene", "puzzle-3x3"])
def test_play_with_buttons_records_button_states(env):
    ds = generate(PlayConfig(env=env, transitions=120, episode_steps=120, seed=0), workers=1, progress=False)
    domain = get_domain(env)
    assert ds.next_button_states.shape == (120, domain.num_buttons)
    assert set(np.unique(ds.next_button_states)) <= {0, 1}


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cache_reuses_valid_copies_and_never_silently_regenerates(tmp_path):
    cfg = DemosConfig(env="cube-single", task=3, episodes=1, seed=0)
    path, ds, reused = get_or_generate(cfg, data_dir=tmp_path, progress=False, workers=1)
    assert not reused and path.parent == tmp_path
    mtime = path.stat().st_mtime_ns
    path2, ds2, reused2 = get_or_generate(cfg, data_dir=tmp_path, progress=False, workers=1)
    assert reused2 and path2 == path and path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(ds.actions, ds2.actions)

    # Corrupt the cached copy: an error, and the files stay exactly as they were.
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the array data
    path.write_bytes(bytes(raw))
    before = _digest(path)
    with pytest.raises(DatasetError, match=r"(?s)not usable.*--force"):
        get_or_generate(cfg, data_dir=tmp_path, progress=False, workers=1)
    assert _digest(path) == before

    # --force regenerates and keeps the old files next to the new ones.
    get_or_generate(cfg, data_dir=tmp_path, force=True, progress=False, workers=1)
    assert _digest(path.with_name(path.name + ".bak")) == before
    np.testing.assert_array_equal(load_dataset(path).actions, ds.actions)
    # a second --force keeps both: the first backup is never replaced (issue 39, finding 2)
    regenerated = _digest(path)
    get_or_generate(cfg, data_dir=tmp_path, force=True, progress=False, workers=1)
    assert _digest(path.with_name(path.name + ".bak")) == before
    assert _digest(path.with_name(path.name + ".bak.1")) == regenerated


def test_out_dir_and_default_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "cache"))
    cfg = DemosConfig(env="cube-single", task=2, episodes=1, seed=0)
    path, _, _ = get_or_generate(cfg, progress=False, workers=1)
    assert path.parent == tmp_path / "cache"
    out, _, reused = get_or_generate(cfg, out=tmp_path / "mine", progress=False, workers=1)
    assert out.parent == tmp_path / "mine" and not reused


def test_disturbed_demos_knock_the_cube_away_once_and_the_oracle_recovers():
    from expoft.envs.ogbench_domains import QPOS_OBJECTS_START

    base = DemosConfig(env="cube-single", task=1, episodes=3, seed=0)
    assert DemosConfig(env="cube-single", task=1, episodes=3, seed=0, disturb=0.0).cache_name() == base.cache_name()
    disturbed = DemosConfig(env="cube-single", task=1, episodes=3, seed=0, disturb=1.0)
    assert disturbed.cache_name() != base.cache_name()
    ds = generate(disturbed, workers=1, progress=False)
    cube = ds.next_qpos[:, QPOS_OBJECTS_START : QPOS_OBJECTS_START + 3]
    disturbed_episodes = 0
    for start, stop in zip(*ds.episode_bounds(), strict=True):
        jumps = np.linalg.norm(np.diff(cube[start:stop, :2], axis=0), axis=1)
        # at most one step moves the cube 4-12 cm across (the arm never moves it 3.5 cm in one step); an
        # episode that reaches the goal before the drawn delay ends is not disturbed
        moved = np.flatnonzero(jumps > 0.035)
        assert len(moved) <= 1 and jumps.max() < 0.13, jumps
        if len(moved):
            disturbed_episodes += 1
            assert cube[start + moved[0] + 1, 2] < 0.03  # put down on the table
    assert disturbed_episodes >= 2
    # the closed-loop oracle goes back for the cube: the episodes still succeed, and take longer
    assert ds.episode_success.all()
    plain = generate(base, workers=1, progress=False)
    assert ds.num_transitions > plain.num_transitions
    with pytest.raises(ValueError, match="disturb must lie in"):
        DemosConfig(disturb=1.5)
    with pytest.raises(ValueError, match="not scene"):
        DemosConfig(env="scene", disturb=0.5)


def test_config_validation():
    with pytest.raises(ValueError, match="task must be in 1..5"):
        DemosConfig(task=0)
    with pytest.raises(ValueError, match="episodes must be positive"):
        DemosConfig(episodes=0)
    with pytest.raises(ValueError, match="p_random_action"):
        DemosConfig(p_random_action=2.0)
    with pytest.raises(ValueError, match="unknown environment"):
        PlayConfig(env="antmaze")
    with pytest.raises(ValueError, match="noise must be >= 0"):
        PlayConfig(noise=-1.0)


@pytest.mark.slow
@pytest.mark.parametrize("env", ["cube-single", "cube-double", "scene", "puzzle-3x3"])
def test_directed_oracle_solves_every_task(env):
    """Five default-noise demos per task; the oracle must solve most of them (about 2 min in all)."""
    for task in range(1, 6):
        ds = generate(DemosConfig(env=env, task=task, episodes=5, seed=0), workers=1, progress=False)
        assert ds.episode_success.mean() >= 0.6, f"{env} task {task}: {ds.episode_success}"

"""The on-disk format: round trip, every validation error, OGBench files, task labels."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from expoft.data.dataset import check_labelled_copy, dataset_paths, from_ogbench_arrays, load_dataset, save_dataset
from expoft.data.describe import describe
from expoft.data.labels import label_for_task
from expoft.data.transitions import DatasetError, make_dataset
from expoft.envs.ogbench_domains import QPOS_OBJECTS_START, get_domain, task_goal
from expoft.fileio import NpzError, read_npz

from .conftest import episode_arrays


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_preserves_arrays_and_metadata(tmp_path, small_dataset):
    ds = small_dataset.replace(meta={"kind": "custom", "note": "x"})
    path = save_dataset(ds, tmp_path / "d")
    npz, meta_path = dataset_paths(path)
    assert npz.exists() and meta_path.exists()
    back = load_dataset(path)
    for name, arr in ds.arrays().items():
        np.testing.assert_array_equal(getattr(back, name), arr)
        assert getattr(back, name).dtype == arr.dtype
    meta = json.loads(meta_path.read_text())
    assert meta["num_transitions"] == 7 and meta["num_episodes"] == 2
    assert meta["shapes"]["observations"] == [7, 3]
    assert set(meta["sha256"]) == set(ds.arrays())
    assert back.meta["note"] == "x"
    # The same path works given with either suffix or none.
    assert load_dataset(meta_path).num_transitions == 7


def test_save_refuses_to_overwrite(tmp_path, small_dataset):
    save_dataset(small_dataset, tmp_path / "d")
    before = _digest(tmp_path / "d.npz")
    with pytest.raises(FileExistsError, match="already exists"):
        save_dataset(small_dataset, tmp_path / "d")
    assert _digest(tmp_path / "d.npz") == before


def test_missing_field(small_arrays):
    del small_arrays["actions"]
    with pytest.raises(DatasetError, match=r"missing field\(s\) \['actions'\]"):
        make_dataset(small_arrays)


def test_length_mismatch_names_the_field(small_arrays):
    small_arrays["rewards"] = small_arrays["rewards"][:-1]
    with pytest.raises(DatasetError, match="length mismatch: 'rewards' has 6 rows but 'observations' has 7"):
        make_dataset(small_arrays)


def test_nan_reports_first_bad_index(small_arrays):
    small_arrays["observations"][5, 2] = np.nan
    small_arrays["observations"][6, 0] = np.inf
    with pytest.raises(DatasetError, match=r"'observations' has a non-finite value nan at index \(5, 2\)"):
        make_dataset(small_arrays)


def test_inf_reward(small_arrays):
    small_arrays["rewards"][3] = -np.inf
    with pytest.raises(DatasetError, match=r"'rewards' has a non-finite value -inf at index \(3,\)"):
        make_dataset(small_arrays)


def test_actions_out_of_range(small_arrays):
    small_arrays["actions"][4, 1] = 1.5
    with pytest.raises(DatasetError, match=r"must lie in \[-1, 1\]; found 1.5 at index \(4, 1\)"):
        make_dataset(small_arrays)


def test_missing_episode_end_is_caught(small_arrays):
    small_arrays["episode_ends"][3] = False  # glues the two episodes together
    small_arrays["episode_success"] = small_arrays["episode_success"][:1]
    with pytest.raises(DatasetError, match=r"next_observations\[3\] differs from observations\[4\]"):
        make_dataset(small_arrays)


def test_last_transition_must_end_an_episode(small_arrays):
    small_arrays["episode_ends"][-1] = False
    with pytest.raises(DatasetError, match="last transition must end an episode"):
        make_dataset(small_arrays)


def test_episode_success_count(small_arrays):
    small_arrays["episode_success"] = np.array([True])
    with pytest.raises(DatasetError, match="'episode_success' has 1 entries but 'episode_ends' marks 2"):
        make_dataset(small_arrays)


def test_describe_returns_and_success_without_rewards(small_arrays):
    info = describe(make_dataset(small_arrays))
    assert info["success_rate"] == 0.5 and info["successful_episodes"] == 1
    assert info["return_mean"] == 10.5  # episodes of rewards 0..3 and 4..6: (6 + 15) / 2
    without_labels = {k: v for k, v in small_arrays.items() if k != "episode_success"}
    assert describe(make_dataset(without_labels))["return_mean"] == 10.5 and "success_rate" not in describe(
        make_dataset(without_labels))  # fmt: skip
    del small_arrays["rewards"], small_arrays["terminals"]  # success labels alone (no per-step task signal)
    info = describe(make_dataset(small_arrays))
    assert info["success_rate"] == 0.5 and "return_mean" not in info


def test_non_binary_flags(small_arrays):
    small_arrays["terminals"] = small_arrays["terminals"].astype(np.float32)
    small_arrays["terminals"][2] = 0.5
    with pytest.raises(DatasetError, match=r"'terminals' must be 0/1 flags; found 0.5 at index \(2,\)"):
        make_dataset(small_arrays)


def test_dimension_mismatch_with_environment(tmp_path, small_dataset):
    path = save_dataset(small_dataset, tmp_path / "d")
    with pytest.raises(DatasetError, match="observation dimension 3 does not match the environment's 28"):
        load_dataset(path, env="cube-single")
    arrays = episode_arrays([3], obs_dim=28, action_dim=4)
    path = save_dataset(make_dataset(arrays), tmp_path / "e")
    with pytest.raises(DatasetError, match="action dimension 4 does not match the environment's 5"):
        load_dataset(path, env="cube-single")


def test_checksum_mismatch_and_file_untouched(tmp_path, small_dataset):
    path = save_dataset(small_dataset, tmp_path / "d")
    arrays = small_dataset.arrays()
    arrays["actions"] = arrays["actions"].copy()
    arrays["actions"][0, 0] *= -0.5  # still valid data, but not what was written
    np.savez(path, **arrays)
    before = (_digest(path), _digest(tmp_path / "d.json"))
    with pytest.raises(DatasetError, match="checksum mismatch for 'actions'"):
        load_dataset(path)
    assert (_digest(path), _digest(tmp_path / "d.json")) == before
    assert load_dataset(path, verify_checksum=False).num_transitions == 7


def test_pickled_objects_are_refused(tmp_path, small_arrays):
    small_arrays["observations"] = np.array([object()] * 7, dtype=object)
    path = tmp_path / "evil.npz"
    np.savez(path, **small_arrays)
    with pytest.raises(DatasetError, match="pickled Python objects"):
        load_dataset(path)


def test_missing_and_truncated_files(tmp_path, small_dataset):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "nope.npz")
    path = save_dataset(small_dataset, tmp_path / "d")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_dataset(path)


def test_files_it_cannot_read_unambiguously_are_refused_by_name(tmp_path, small_dataset):
    """Issue 39, finding 5: an expoft file that lost its .json is not taken for an OGBench file
    (its rewards and labels would be dropped silently), a list sidecar, ragged OGBench arrays and
    a directory each get an error that names them."""
    path = save_dataset(small_dataset, tmp_path / "d")
    path.with_suffix(".json").rename(tmp_path / "elsewhere.json")
    arrays = dict(np.load(path))
    del arrays["episode_ends"]
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=r"cannot tell its format.*'rewards'.*d\.json"):
        load_dataset(path)
    (tmp_path / "d.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="a JSON object, not a list"):
        load_dataset(path)
    ragged = {"observations": np.zeros((5, 2), np.float32), "actions": np.zeros((4, 2), np.float32),
              "terminals": np.array([0, 0, 0, 0, 1], np.float32)}  # fmt: skip
    np.savez(tmp_path / "og.npz", **ragged)
    with pytest.raises(DatasetError, match="'actions' has 4 rows, 'observations' 5"):
        load_dataset(tmp_path / "og.npz")
    with pytest.raises(DatasetError, match="is a directory"):
        load_dataset(tmp_path)


def test_ogbench_layout_conversion():
    # OGBench: one row per visited state, terminals=1 on an episode's last state.
    obs = np.arange(7, dtype=np.float32)[:, None].repeat(2, axis=1)
    raw = {
        "observations": obs,
        "actions": np.linspace(-1, 1, 14, dtype=np.float32).reshape(7, 2),
        "terminals": np.array([0, 0, 1, 0, 0, 0, 1], np.float32),
        "qpos": np.arange(7, dtype=np.float32)[:, None] * 10,
    }
    out = from_ogbench_arrays(raw)
    # Episodes of 3 and 4 states give 2 and 3 transitions.
    np.testing.assert_array_equal(out["observations"][:, 0], [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(out["next_observations"][:, 0], [1, 2, 4, 5, 6])
    np.testing.assert_array_equal(out["episode_ends"], [False, True, False, False, True])
    np.testing.assert_array_equal(out["next_qpos"][:, 0], [10, 20, 40, 50, 60])
    np.testing.assert_array_equal(out["actions"], raw["actions"][[0, 1, 3, 4, 5]])


def test_ogbench_file_loads_and_labels(tmp_path):
    domain = get_domain("cube-single")
    goal = task_goal("cube-single", 1).cube_xyzs[0]
    n = 6
    qpos = np.zeros((n, 21), np.float32)
    qpos[:, QPOS_OBJECTS_START : QPOS_OBJECTS_START + 3] = goal + np.array([0.2, 0, 0])
    qpos[4, QPOS_OBJECTS_START : QPOS_OBJECTS_START + 3] = goal  # state 4 solves task 1
    raw = {
        "observations": np.random.default_rng(0).normal(size=(n, domain.obs_dim)).astype(np.float32),
        "actions": np.zeros((n, 5), np.float32),
        "terminals": np.array([0, 0, 0, 0, 0, 1], np.float32),
        "qpos": qpos,
    }
    np.savez(tmp_path / "cube-single-play-v0.npz", **raw)
    ds = load_dataset(tmp_path / "cube-single-play-v0.npz", env="cube-single", task=1)
    assert ds.num_transitions == 5 and ds.meta["kind"] == "ogbench"
    # Transition 3 leads into state 4: reward 1 and terminal there only.
    np.testing.assert_array_equal(ds.rewards, [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(ds.terminals, [False, False, False, True, False])
    np.testing.assert_array_equal(ds.episode_success, [True])


def test_label_for_task_ogbench_reward_counts_subgoals():
    goal = task_goal("cube-double", 2).cube_xyzs
    qpos = np.zeros((3, 28), np.float32)
    far = np.array([0.0, 0.0, 0.3])
    for row, placed in enumerate([(False, False), (True, False), (True, True)]):
        for cube in range(2):
            start = QPOS_OBJECTS_START + 7 * cube
            qpos[row, start : start + 3] = goal[cube] if placed[cube] else goal[cube] + far
    arrays = episode_arrays([3], obs_dim=37, action_dim=5, labelled=False)
    arrays.update(next_qpos=qpos)
    ds = make_dataset(arrays, {"kind": "play"})
    assert not ds.has_task
    labelled = label_for_task(ds, "cube-double", 2, reward="ogbench")
    np.testing.assert_array_equal(labelled.rewards, [-2, -1, 0])
    np.testing.assert_array_equal(labelled.terminals, [False, False, True])
    sparse = label_for_task(ds, "cube-double", 2, reward="sparse")
    np.testing.assert_array_equal(sparse.rewards, [0, 0, 1])
    with pytest.raises(ValueError, match="reward must be one of"):
        label_for_task(ds, "cube-double", 2, reward="dense")


def test_a_labelled_copy_is_checked_against_its_play_data(tmp_path):
    arrays = episode_arrays([3], obs_dim=37, action_dim=5, labelled=False)
    arrays.update(next_qpos=np.zeros((3, 28), np.float32))
    play = make_dataset(arrays, {"kind": "play"})
    play_path = save_dataset(play, tmp_path / "play")
    copy = save_dataset(label_for_task(play, "cube-double", 2, reward="ogbench"), tmp_path / "play-task2-ogbench")
    check_labelled_copy(copy, play_path, 2, "ogbench")
    with pytest.raises(DatasetError, match="labelled for task 2 with reward 'ogbench', not task 1"):
        check_labelled_copy(copy, play_path, 1, "ogbench")
    # the play data regenerated under the same name: the copy is refused, and left as it was
    before = _digest(copy)
    for p in dataset_paths(play_path):
        p.unlink()
    save_dataset(play.replace(actions=play.actions + 0.5), play_path)
    with pytest.raises(DatasetError, match=r"was not labelled from play.npz \(its \['actions'\] differ\); move"):
        check_labelled_copy(copy, play_path, 2, "ogbench")
    assert _digest(copy) == before


def test_label_without_state_is_an_error(small_dataset):
    with pytest.raises(DatasetError, match="has no 'next_qpos'"):
        label_for_task(small_dataset, "cube-single", 1)


def test_unknown_env_and_task():
    with pytest.raises(ValueError, match="unknown environment 'cube-quintuple'"):
        get_domain("cube-quintuple")
    with pytest.raises(ValueError, match="task must be in 1..5"):
        get_domain("scene").singletask_env_id(6)


def test_read_npz_says_which_kind_of_unreadable_a_file_is(tmp_path, small_arrays):
    """numpy alone calls any file that is neither a zip nor a .npy "pickled data"; the one reader of
    .npz files (datasets, checkpoints, replay segments, frames) says what the file is instead."""
    np.savez(tmp_path / "ok.npz", **small_arrays)
    assert sorted(read_npz(tmp_path / "ok.npz")) == sorted(small_arrays)
    cases = {
        "text.npz": (b"time,x\n0,1\n", r"text.npz is not an .npz file .*starts with b'time,x'"),
        "empty.npz": (b"", r"empty.npz is not an .npz file .*: empty"),
        "array.npz": (None, r"array.npz is not an .npz file .*: a .npy array"),
        "half.npz": ((tmp_path / "ok.npz").read_bytes()[:300], r"half.npz is not a readable .npz file .*truncated"),
    }
    for name, (content, message) in cases.items():
        if content is None:
            with open(tmp_path / name, "wb") as f:
                np.save(f, np.zeros(3))
        else:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(NpzError, match=message):
            read_npz(tmp_path / name)
        with pytest.raises(DatasetError, match=message):  # what `expoft data info` and training print
            load_dataset(tmp_path / name)
    np.savez(tmp_path / "objects.npz", x=np.array([object()], dtype=object))
    with pytest.raises(NpzError, match="holds pickled Python objects; expoft never unpickles"):
        read_npz(tmp_path / "objects.npz")

"""Other formats in and out: robomimic HDF5 and LeRobotDataset v3 (pyarrow + PyAV)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from expoft.cli import main
from expoft.data.dataset import load_dataset, save_dataset
from expoft.data.lerobot import import_lerobot
from expoft.data.robomimic import import_robomimic
from expoft.data.transitions import DatasetError
from expoft.train.config import preset
from expoft.train.finetune import finetune
from expoft.train.pretrain import pretrain_only

FIELDS = ("observations", "next_observations", "actions", "episode_ends", "rewards", "terminals",
          "episode_success", "next_qpos")  # fmt: skip


def same_arrays(a, b) -> None:
    for field in FIELDS:
        assert np.array_equal(getattr(a, field), getattr(b, field)), field


@pytest.fixture
def demos_file(cube_demos, tmp_path):
    return save_dataset(cube_demos, tmp_path / "demos")


def test_robomimic_round_trip_through_the_cli(demos_file, cube_demos, tmp_path, capsys):
    x = tmp_path / "x.hdf5"
    assert main(["data", "export", "robomimic", str(demos_file), str(x)]) == 0
    with h5py.File(x) as f:
        assert sorted(f["data"]) == ["demo_0", "demo_1", "demo_2"]
        assert f["data/demo_0/obs/state"].shape == (int(f["data/demo_0"].attrs["num_samples"]), 28)
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == "cube-single"
    assert main(["data", "import", "robomimic", str(x), "--env", "cube-single", "--out", str(tmp_path / "r")]) == 0
    same_arrays(load_dataset(tmp_path / "r"), cube_demos)
    # nothing is replaced: neither the imported dataset nor the exported file
    assert main(["data", "import", "robomimic", str(x), "--env", "cube-single", "--out", str(tmp_path / "r")]) == 2
    assert main(["data", "export", "robomimic", str(demos_file), str(x)]) == 2
    assert "already exists" in capsys.readouterr().err


def _edit_copy(src, dst, edit) -> None:
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        for key in f:
            f.copy(f[key], g, key)
        for key, value in f["data"].attrs.items():
            g["data"].attrs[key] = value
        edit(g)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda g: g.__delitem__("data"), "no 'data' group"),
        (lambda g: g["data/demo_1"].__delitem__("next_obs"), "no 'next_obs' group"),
        (
            lambda g: (
                g["data/demo_1/obs"].__delitem__("state"),
                g["data/demo_1/obs"].create_dataset("state", data=np.zeros((3, 28))),
            )[0],
            "ragged",
        ),  # fmt: skip
        (lambda g: g["data/demo_0/actions"].__setitem__((2, 1), np.nan), "non-finite"),
        (lambda g: g["data/demo_0/actions"].__setitem__((2, 1), 3.0), "--rescale-actions"),
    ],
)
def test_robomimic_bad_files_are_refused_and_nothing_is_written(demos_file, tmp_path, edit, match):
    x, bad = tmp_path / "x.hdf5", tmp_path / "bad.hdf5"
    assert main(["data", "export", "robomimic", str(demos_file), str(x)]) == 0
    _edit_copy(x, bad, edit)
    with pytest.raises(DatasetError, match=match):
        import_robomimic(bad, "cube-single")
    assert main(["data", "import", "robomimic", str(bad), "--env", "cube-single", "--out", str(tmp_path / "o")]) == 2
    assert not list(tmp_path.glob("o*"))


def test_robomimic_wrong_env_and_rescaled_actions(demos_file, cube_demos, tmp_path):
    x = tmp_path / "x.hdf5"
    main(["data", "export", "robomimic", str(demos_file), str(x)])
    with pytest.raises(DatasetError, match="28 dimensions, cube-double observes 37"):
        import_robomimic(x, "cube-double")
    with h5py.File(x, "r+") as f:
        f["data/demo_0/actions"][0, 0] = 4.0
    ds = import_robomimic(x, "cube-single", rescale_actions=True)
    assert np.abs(ds.actions).max() <= 1.0 and ds.meta["action_scale"][0] == 4.0


def test_lerobot_v3_round_trip_through_the_cli(demos_file, cube_demos, tmp_path):
    out = tmp_path / "L"
    assert main(["data", "export", "lerobot", str(demos_file), str(out)]) == 0
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"].startswith("v3.") and info["total_frames"] == cube_demos.num_transitions
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet")
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), 28)
    assert data.column("next.done").to_pylist() == cube_demos.episode_ends.tolist()
    episodes = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pydict()
    assert episodes["length"] == np.diff([0, *np.flatnonzero(cube_demos.episode_ends) + 1]).tolist()
    tasks = pq.read_table(out / "meta" / "tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]  # pandas' index: the text
    assert main(["data", "import", "lerobot", str(out), "--env", "cube-single", "--out", str(tmp_path / "li")]) == 0
    same_arrays(load_dataset(tmp_path / "li"), cube_demos)
    assert main(["data", "export", "lerobot", str(demos_file), str(out)]) == 2  # an existing folder stays


def test_lerobot_written_elsewhere_and_bad_folders(demos_file, cube_demos, tmp_path):
    """Without expoft's own columns: the next state is the next frame's (the last one repeated),
    success is a positive reward on an episode's last frame."""
    out = tmp_path / "L"
    main(["data", "export", "lerobot", str(demos_file), str(out)])
    path = out / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["next.success", "next.observation.state", "expoft.next_qpos"]), path)
    ds, _ = import_lerobot(out, "cube-single")
    ends = cube_demos.episode_ends
    assert np.array_equal(ds.next_observations[~ends], cube_demos.next_observations[~ends])
    assert np.array_equal(ds.next_observations[ends], cube_demos.observations[ends])
    assert ds.meta["next_observation_of_last_frame"] == "repeated"
    assert np.array_equal(ds.terminals, cube_demos.terminals) and ds.episode_success.all()
    with pytest.raises(DatasetError, match="no column 'obs'"):
        import_lerobot(out, "cube-single", state_key="obs")
    with pytest.raises(DatasetError, match="37"):
        import_lerobot(out, "cube-double")
    info = json.loads((out / "meta" / "info.json").read_text())
    (out / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DatasetError, match="v3"):
        import_lerobot(out, "cube-single")
    (out / "meta" / "info.json").unlink()
    with pytest.raises(DatasetError, match="no meta/info.json"):
        import_lerobot(out, "cube-single")


@pytest.mark.slow  # ~40 s; the state round trip and the bad-data refusals stay in the default suite
def test_lerobot_pixels_round_trip_trains_a_pixel_base(demos_file, cube_demos, tmp_path, rendering, monkeypatch):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "L"
    assert main(["data", "export", "lerobot", str(demos_file), str(out), "--image-size", "32"]) == 0
    assert (out / "videos" / "observation.images.front_pixels" / "chunk-000" / "file-000.mp4").is_file()
    imported = tmp_path / "li"
    flags = ["--env", "cube-single", "--out", str(imported), "--image-size", "32"]
    assert main(["data", "import", "lerobot", str(out), *flags]) == 0
    original = np.load(next(tmp_path.glob("demos.frames-32px-*.npz")))["frames"].astype(int)
    decoded = np.load(next(tmp_path.glob("li.frames-32px-*.npz")))["frames"].astype(int)
    assert original.shape == decoded.shape
    assert np.abs(original - decoded).mean() < 4  # H.264's loss
    # the pixel base imitates the decoded frames (`expoft pretrain`; a whole pixel run: the slow test below)
    cfg = preset("tiny-pixels", dataset=imported.with_suffix(".npz"), pretrain_steps=20, eval_episodes=1)
    summary = pretrain_only(cfg, tmp_path / "pre", progress=False)
    assert summary["pretrain_steps"] == 20 and np.isfinite(summary["final_loss"])


@pytest.mark.slow
def test_lerobot_pixels_round_trip_trains_a_pixel_run(demos_file, cube_demos, tmp_path, rendering, monkeypatch):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    out, imported = tmp_path / "L", tmp_path / "li"
    assert main(["data", "export", "lerobot", str(demos_file), str(out), "--image-size", "32"]) == 0
    flags = ["--env", "cube-single", "--out", str(imported), "--image-size", "32"]
    assert main(["data", "import", "lerobot", str(out), *flags]) == 0
    cfg = preset("tiny-pixels", dataset=imported.with_suffix(".npz"), env_steps=100, eval_every=100, eval_episodes=1)
    summary = finetune(cfg, tmp_path / "run", progress=False)
    assert summary["update_calls"] > 0 and summary["offline_transitions"] == cube_demos.num_transitions


LEROBOT_CHECK = """
import json, sys
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("expoft/export", root=sys.argv[1])
item = ds[5]
out = {"frames": len(ds), "episodes": ds.num_episodes, "fps": ds.fps, "task": item["task"],
       "state": list(item["observation.state"].shape), "action": list(item["action"].shape),
       "episode_index": int(item["episode_index"]), "frame_index": int(item["frame_index"])}
out.update({k: list(v.shape) for k, v in item.items() if k.startswith("observation.images.")})
print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_lerobot_package_loads_our_export(demos_file, cube_demos, tmp_path, rendering, monkeypatch):
    """The real LeRobotDataset (lerobot 0.4.4, in a virtual environment of its own made by
    scripts/lerobot_venv.sh, or the Python named by EXPOFT_LEROBOT_PYTHON) reads our v3 export."""
    import os
    import subprocess
    from pathlib import Path

    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    root = Path(__file__).resolve().parents[1]
    python = os.environ.get("EXPOFT_LEROBOT_PYTHON")
    if python is None:
        made = subprocess.run(["bash", str(root / "scripts" / "lerobot_venv.sh")], capture_output=True, text=True)
        assert made.returncode == 0, made.stderr[-2000:]
        python = made.stdout.strip().splitlines()[-1]
    out = tmp_path / "L"
    assert main(["data", "export", "lerobot", str(demos_file), str(out), "--image-size", "32"]) == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([python, "-c", LEROBOT_CHECK, str(out)], capture_output=True, text=True, env=env)
    if "torchvision::nms does not exist" in done.stderr:  # a CUDA torchvision beside the CPU torch
        pytest.skip("torchvision's operators do not load with this torch build (no CPU torchvision wheel here)")
    assert done.returncode == 0, done.stderr[-3000:]
    item = json.loads(done.stdout.strip().splitlines()[-1])
    assert item["frames"] == cube_demos.num_transitions and item["episodes"] == cube_demos.num_episodes
    assert item["state"] == [28] and item["action"] == [5] and item["frame_index"] == 5
    assert item["observation.images.front_pixels"] == [3, 32, 32]


def test_lerobot_bad_data_is_refused_and_nothing_is_written(demos_file, tmp_path):
    out = tmp_path / "L"
    main(["data", "export", "lerobot", str(demos_file), str(out)])
    path = out / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    shuffled = table.take(pa.array(np.random.default_rng(0).permutation(table.num_rows))).drop_columns(["index"])
    pq.write_table(shuffled, path)
    with pytest.raises(DatasetError, match="not grouped by episode_index"):
        import_lerobot(out, "cube-single")
    actions = np.asarray(table.column("action").to_pylist(), np.float32)
    actions[3, 1] = np.nan
    column = pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), actions.shape[1])
    pq.write_table(table.set_column(table.column_names.index("action"), "action", column), path)
    with pytest.raises(DatasetError, match="non-finite"):
        import_lerobot(out, "cube-single")
    assert main(["data", "import", "lerobot", str(out), "--env", "cube-single", "--out", str(tmp_path / "o")]) == 2
    assert not list(tmp_path.glob("o*"))

"""LeRobotDataset v3 in and out, with pyarrow and PyAV (not the torch-based ``lerobot`` package).

The v3 layout (LeRobot >= 0.4)::

    meta/info.json                       codebase_version "v3.0", fps, features, path templates
    meta/stats.json                      per-feature mean, std, min, max, count
    meta/tasks.parquet                   task text (the index) -> task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, tasks, where its rows
                                         and video frames are
    data/chunk-000/file-000.parquet      one row per frame
    videos/<key>/chunk-000/file-000.mp4  one stream per camera, every episode's frames in a row

Columns, by LeRobot's conventions: ``observation.state``, ``action``, ``next.reward``,
``next.done`` (the episode's last frame), ``timestamp``, ``frame_index``, ``episode_index``,
``index``, ``task_index``; expoft adds ``next.success`` (the step reaches the task: expoft's
terminals), ``next.observation.state`` (the state after the step) and ``expoft.next_qpos`` /
``expoft.next_button_states`` (the simulator state after it) so that its datasets come back
exactly. Cameras are ``observation.images.<camera>`` videos (H.264, yuv420p).

Import of a dataset written elsewhere: episodes from ``episode_index``; the next state of a
frame is the next frame's state, and for an episode's last frame, ``next.observation.state`` if
present, else its own state (recorded as ``next_observation_of_last_frame: repeated``);
terminals from ``next.success``, else a positive ``next.reward`` on an episode's last frame;
rewards from ``next.reward``; without either the data has no task labels (like play data).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from expoft.data.dataset import load_dataset
from expoft.data.transitions import Dataset, DatasetError, make_dataset
from expoft.envs.ogbench_domains import get_domain
from expoft.obs import PixelSpec

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
STATE, ACTION, REWARD, DONE = "observation.state", "action", "next.reward", "next.done"
SUCCESS, NEXT_STATE = "next.success", "next.observation.state"
IMAGE_PREFIX = "observation.images."
EXTRA_PREFIX = "expoft."
"""Columns of expoft's own (the simulator state after each step), ignored by other readers."""
DEFAULT_FPS = 20
"""Frames per second written into the timestamps and videos (``--fps``)."""


def _fixed_list(values: np.ndarray):
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _feature(dtype: str, shape: tuple[int, ...], names: list[str] | None = None) -> dict:
    return {"dtype": dtype, "shape": list(shape), "names": names}


def _stats(values: np.ndarray) -> dict:
    values = values.reshape(len(values), -1).astype(np.float64)
    return {"mean": values.mean(0).tolist(), "std": values.std(0).tolist(), "min": values.min(0).tolist(),
            "max": values.max(0).tolist(), "count": [len(values)]}  # fmt: skip


def _tasks_table(task: str):
    """meta/tasks.parquet as LeRobot reads it: pandas' index is the task text (pandas metadata
    written by hand, so that pandas is not needed here)."""
    import pyarrow as pa

    table = pa.table({"task_index": pa.array([0], pa.int64()), "task": pa.array([task])})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "expoft", "version": "0.1.0"},
        "pandas_version": "2.2.0",
    }  # fmt: skip
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def export_lerobot(
    dataset: str | os.PathLike, out: str | os.PathLike, *, fps: int = DEFAULT_FPS, pixels: PixelSpec | None = None,
    task: str | None = None, overwrite: bool = False,
) -> Path:  # fmt: skip
    """Write an expoft dataset as a LeRobotDataset v3 folder ``out`` (built in a temporary folder
    beside it and moved into place whole). ``pixels``: also export camera frames (from the
    dataset's frames cache, rendered when missing: `expoft data render`) as one MP4 per camera."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from expoft.report.video import write_mp4

    ds = load_dataset(dataset)
    out = Path(out)
    if out.exists() and not (overwrite and out.is_dir()):
        raise FileExistsError(f"{out} already exists; choose another folder or pass --overwrite")
    env = ds.meta.get("env", "unknown")
    task = task or f"{env} task {ds.meta.get('task', '?')}"
    starts, stops = ds.episode_bounds()
    lengths = stops - starts
    n, episodes = ds.num_transitions, ds.num_episodes
    episode_index = np.repeat(np.arange(episodes), lengths)
    frame_index = np.arange(n) - np.repeat(starts, lengths)
    columns: dict[str, Any] = {
        STATE: _fixed_list(ds.observations),
        ACTION: _fixed_list(ds.actions),
        NEXT_STATE: _fixed_list(ds.next_observations),
        DONE: pa.array(ds.episode_ends),
        "timestamp": pa.array((frame_index / fps).astype(np.float32)),
        "frame_index": pa.array(frame_index, pa.int64()),
        "episode_index": pa.array(episode_index, pa.int64()),
        "index": pa.array(np.arange(n), pa.int64()),
        "task_index": pa.array(np.zeros(n, np.int64)),
    }
    features = {
        STATE: _feature("float32", (ds.obs_dim,)),
        ACTION: _feature("float32", (ds.action_dim,)),
        NEXT_STATE: _feature("float32", (ds.obs_dim,)),
        DONE: _feature("bool", (1,)),
        "timestamp": _feature("float32", (1,)),
        "frame_index": _feature("int64", (1,)),
        "episode_index": _feature("int64", (1,)),
        "index": _feature("int64", (1,)),
        "task_index": _feature("int64", (1,)),
    }
    for field, kind in (("next_qpos", "float32"), ("next_button_states", "int8")):
        value = getattr(ds, field)
        if value is not None:  # the simulator state after the step: relabelling and rendering
            column = EXTRA_PREFIX + field
            columns[column] = pa.FixedSizeListArray.from_arrays(pa.array(value.reshape(-1)), value.shape[1])
            features[column] = _feature(kind, (value.shape[1],))
    stats = {STATE: _stats(ds.observations), ACTION: _stats(ds.actions)}
    if ds.rewards is not None and ds.terminals is not None:
        columns[REWARD], columns[SUCCESS] = pa.array(ds.rewards), pa.array(ds.terminals)
        features[REWARD], features[SUCCESS] = _feature("float32", (1,)), _feature("bool", (1,))
        stats[REWARD] = _stats(ds.rewards)
    episode_rows: dict[str, Any] = {
        "episode_index": np.arange(episodes), "tasks": [[task]] * episodes, "length": lengths,
        "data/chunk_index": np.zeros(episodes, np.int64), "data/file_index": np.zeros(episodes, np.int64),
        "dataset_from_index": starts, "dataset_to_index": stops,
        "meta/episodes/chunk_index": np.zeros(episodes, np.int64),
        "meta/episodes/file_index": np.zeros(episodes, np.int64),
    }  # fmt: skip
    videos: dict[str, np.ndarray] = {}
    if pixels is not None:
        from expoft.data.frames import frames_for

        frames = frames_for(Path(dataset), pixels)  # [N + E, S, S, 3 * cameras]
        rows = ds.frame_rows()  # each transition's observation (s_L of an episode is not a frame in LeRobot)
        for c, camera in enumerate(pixels.cameras):
            key = IMAGE_PREFIX + camera
            videos[key] = frames[rows, :, :, 3 * c : 3 * c + 3]
            shape = (pixels.image_size, pixels.image_size, 3)
            features[key] = {**_feature("video", shape, ["height", "width", "channels"]),
                             "info": {"video.fps": fps, "video.codec": "h264", "video.pix_fmt": "yuv420p",
                                      "video.is_depth_map": False, "has_audio": False}}  # fmt: skip
            episode_rows[f"videos/{key}/chunk_index"] = np.zeros(episodes, np.int64)
            episode_rows[f"videos/{key}/file_index"] = np.zeros(episodes, np.int64)
            episode_rows[f"videos/{key}/from_timestamp"] = starts / fps
            episode_rows[f"videos/{key}/to_timestamp"] = stops / fps
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": f"ogbench-{env}", "fps": fps,
        "total_episodes": episodes, "total_frames": n, "total_tasks": 1, "chunks_size": 1000,
        "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "splits": {"train": f"0:{episodes}"},
        "data_path": DATA_PATH, "video_path": VIDEO_PATH if videos else None, "features": features,
        "expoft": {k: v for k, v in ds.meta.items() if k not in ("shapes", "dtypes", "sha256")},
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        (tmp / "data" / "chunk-000").mkdir(parents=True)
        pq.write_table(pa.table(columns), tmp / DATA_PATH.format(chunk_index=0, file_index=0))
        pq.write_table(pa.table(episode_rows), tmp / EPISODES_FILE)
        pq.write_table(_tasks_table(task), tmp / "meta" / "tasks.parquet")
        for key, frames in videos.items():
            write_mp4(list(frames), tmp / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0), fps=fps)
        (tmp / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
        (tmp / "meta" / "info.json").write_text(json.dumps(info, indent=2))
        if out.exists():  # --overwrite of a folder: the old one goes only once the new one is complete
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _require(table, name: str, source: str):
    if name not in table.column_names:
        raise DatasetError(f"{source}: no column '{name}' (it has {table.column_names}); name it with a flag")
    return table.column(name)


def _column(table, name: str, source: str) -> np.ndarray:
    return np.asarray(_require(table, name, source).to_numpy(zero_copy_only=False))


def _vectors(table, name: str, source: str) -> np.ndarray:
    values = _require(table, name, source).to_pylist()
    try:
        array = np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError) as error:
        raise DatasetError(f"{source}: column '{name}' is ragged or not numeric ({error})") from error
    return array.reshape(len(values), -1)


def read_info(root: Path) -> dict:
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise DatasetError(f"{root}: no meta/info.json; is this a LeRobotDataset folder?")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from error
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise DatasetError(f"{path}: codebase_version {version!r}; expoft reads LeRobotDataset v3.x")
    return info


def import_lerobot(
    root: str | os.PathLike, env: str, *, state_key: str = STATE, action_key: str = ACTION,
    pixels: PixelSpec | None = None,
) -> tuple[Dataset, np.ndarray | None]:  # fmt: skip
    """A validated :class:`Dataset` from a LeRobotDataset v3 folder, checked against ``env``, and
    with ``pixels`` its camera frames ``uint8 [N + E, S, S, 3 * cameras]`` in the layout of
    ``expoft.data.frames`` (decoded from the MP4 streams; an episode's final next state repeats
    its last frame, which LeRobot does not store)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no LeRobotDataset folder at {root}")
    info = read_info(root)
    source = str(root)
    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(f"{root}: no data/chunk-*/file-*.parquet files")
    try:
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    except (pa.ArrowInvalid, OSError) as error:
        raise DatasetError(f"{root}: unreadable parquet data ({error})") from error
    if "index" in table.column_names:
        table = table.take(pa.compute.sort_indices(table.column("index")))
    episode = _column(table, "episode_index", source).astype(np.int64)
    if len(episode) == 0:
        raise DatasetError(f"{root}: the data has no frames")
    order_ok = np.all(np.diff(episode) >= 0)
    if not order_ok:
        raise DatasetError(f"{root}: frames are not grouped by episode_index (sort them by index)")
    observations = _vectors(table, state_key, source)
    actions = _vectors(table, action_key, source)
    ends = np.append(episode[1:] != episode[:-1], True)
    next_obs = np.empty_like(observations)
    next_obs[:-1] = observations[1:]
    if NEXT_STATE in table.column_names:
        stored = _vectors(table, NEXT_STATE, source)
        next_obs[ends] = stored[ends]
        last = "stored"
    else:
        next_obs[ends] = observations[ends]
        last = "repeated"
    arrays: dict[str, np.ndarray] = {"observations": observations, "next_observations": next_obs,
                                     "actions": actions, "episode_ends": ends}  # fmt: skip
    if SUCCESS in table.column_names or REWARD in table.column_names:
        rewards = _column(table, REWARD, source).astype(np.float32) if REWARD in table.column_names else None
        if SUCCESS in table.column_names:
            terminals = _column(table, SUCCESS, source).astype(bool)
        else:  # rewards only: a sparse success reward ends its episode
            terminals = ends & (_column(table, REWARD, source) > 0)
        arrays["rewards"] = rewards if rewards is not None else terminals.astype(np.float32)
        arrays["terminals"] = terminals
        arrays["episode_success"] = np.logical_or.reduceat(terminals, np.flatnonzero(np.append(True, ends[:-1])))
    for field, dtype in (("next_qpos", np.float32), ("next_button_states", np.int8)):
        if EXTRA_PREFIX + field in table.column_names:
            values = table.column(EXTRA_PREFIX + field).to_pylist()
            arrays[field] = np.asarray(values, dtype=dtype).reshape(len(values), -1)
    domain = get_domain(env)
    for name, have, want in (("observation", observations.shape[1], domain.obs_dim),
                             ("action", actions.shape[1], domain.action_dim)):  # fmt: skip
        if have != want:
            key = state_key if name == "observation" else action_key
            raise DatasetError(f"{source}: '{key}' has {have} dimensions, {env}'s {name} has {want}")
    meta = {**info.get("expoft", {}), "env": env, "source_file": str(root), "lerobot_fps": info.get("fps"),
            "next_observation_of_last_frame": last}  # fmt: skip
    meta.setdefault("kind", "lerobot")
    ds = make_dataset(arrays, meta, source)
    frames = None if pixels is None else _import_frames(root, info, ds, pixels, source)
    return ds, frames


def _import_frames(root: Path, info: dict, ds: Dataset, pixels: PixelSpec, source: str) -> np.ndarray:
    from expoft.report.video import read_video

    per_camera = []
    size = pixels.image_size
    for camera in pixels.cameras:
        key = IMAGE_PREFIX + camera
        if info.get("features", {}).get(key, {}).get("dtype") != "video":
            raise DatasetError(f"{source}: no video feature '{key}' in meta/info.json (cameras: --cameras)")
        videos = sorted((root / "videos" / key).glob("chunk-*/file-*.mp4"))
        if not videos:
            raise DatasetError(f"{source}: no MP4 files under videos/{key}/")
        decoded = np.concatenate([read_video(v) for v in videos])
        if len(decoded) != ds.num_transitions:
            raise DatasetError(f"{source}: videos/{key} holds {len(decoded)} frames, the data {ds.num_transitions}")
        if decoded.shape[1] < size or decoded.shape[2] < size:
            raise DatasetError(
                f"{source}: videos/{key} frames are {decoded.shape[1:3]}, smaller than --image-size {size}"
            )
        per_camera.append(decoded[:, :size, :size])  # codec padding (odd sizes) cut away
    obs_frames = np.concatenate(per_camera, axis=-1)
    frames = np.empty((ds.num_transitions + ds.num_episodes, *obs_frames.shape[1:]), np.uint8)
    rows = ds.frame_rows()
    frames[rows] = obs_frames
    frames[rows[ds.episode_ends] + 1] = obs_frames[ds.episode_ends]  # s_L: not stored in LeRobot
    return frames

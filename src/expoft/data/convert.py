"""``expoft data import`` and ``expoft data export``: other formats' datasets in and out.

expoft data import robomimic FILE.hdf5 --env cube-single --out OUT [--obs-keys state]
expoft data export robomimic FILE.npz OUT.hdf5
expoft data import lerobot DIR --env cube-single --out OUT [--image-size 48]
expoft data export lerobot FILE.npz DIR [--image-size 48]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro

from expoft.data.dataset import dataset_paths, save_dataset
from expoft.obs import PixelSpec


def _refuse_existing(out: Path) -> None:
    """Before any work: an import never replaces a dataset the user has."""
    for existing in dataset_paths(out):
        if existing.exists():
            raise FileExistsError(f"{existing} already exists; choose another --out or remove it")


@dataclasses.dataclass(frozen=True)
class ImportRobomimic:
    """A robomimic HDF5 file (data/demo_N/{obs,next_obs,actions,rewards,dones}) as an expoft dataset."""

    path: tyro.conf.Positional[Path]
    """The .hdf5 file."""
    env: str
    """The environment the data is for (its observation and action sizes are checked)."""
    out: Path
    """Output dataset (OUT.npz and OUT.json); an existing one is refused."""
    obs_keys: tuple[str, ...] = ()
    """obs/<key> datasets that make the observation, concatenated in this order; default: 'state'
    if the file has it, else every low-dimensional key in sorted order."""
    rescale_actions: bool = False
    """Divide each action dimension by its largest magnitude when actions leave [-1, 1]."""

    def run(self) -> None:
        from expoft.data.robomimic import import_robomimic

        _refuse_existing(self.out)
        ds = import_robomimic(self.path, self.env, obs_keys=self.obs_keys or None, rescale_actions=self.rescale_actions)
        print(f"wrote {save_dataset(ds, self.out)} ({ds.num_episodes} episodes, {ds.num_transitions} transitions)")


@dataclasses.dataclass(frozen=True)
class ExportRobomimic:
    """An expoft dataset as a robomimic HDF5 file (observation as obs/state)."""

    path: tyro.conf.Positional[Path]
    """Dataset file (NAME.npz, NAME.json or NAME)."""
    out: tyro.conf.Positional[Path]
    """The .hdf5 file to write; an existing one is refused unless --overwrite."""
    overwrite: bool = False

    def run(self) -> None:
        from expoft.data.robomimic import export_robomimic

        print(f"wrote {export_robomimic(self.path, self.out, overwrite=self.overwrite)}")


@dataclasses.dataclass(frozen=True)
class ImportLerobot:
    """A LeRobotDataset v3 folder (meta/info.json, data/*.parquet, videos/*.mp4) as an expoft
    dataset; with --image-size, its camera videos as the dataset's frames (for pixel runs)."""

    path: tyro.conf.Positional[Path]
    """The dataset's root folder."""
    env: str
    """The environment the data is for (its observation and action sizes are checked)."""
    out: Path
    """Output dataset (OUT.npz and OUT.json, and the frames beside them); an existing one is refused."""
    state_key: str = "observation.state"
    """Column holding the state observation."""
    action_key: str = "action"
    """Column holding the action."""
    image_size: int | None = None
    """Also import the cameras' videos as frames of this size (the size they were exported at)."""
    cameras: tuple[str, ...] = ("front_pixels",)
    """Cameras to import (observation.images.<camera>), stacked on the channel axis in this order."""

    def run(self) -> None:
        from expoft.data.frames import save_frames
        from expoft.data.lerobot import import_lerobot

        _refuse_existing(self.out)
        spec = None if self.image_size is None else PixelSpec(image_size=self.image_size, cameras=self.cameras)
        ds, frames = import_lerobot(self.path, self.env, state_key=self.state_key, action_key=self.action_key,
                                    pixels=spec)  # fmt: skip
        written = save_dataset(ds, self.out)
        if frames is not None and spec is not None:
            print(f"wrote {save_frames(frames, written, ds, spec)}")
        print(f"wrote {written} ({ds.num_episodes} episodes, {ds.num_transitions} transitions)")


@dataclasses.dataclass(frozen=True)
class ExportLerobot:
    """An expoft dataset as a LeRobotDataset v3 folder (parquet data, JSON metadata, MP4 videos)."""

    path: tyro.conf.Positional[Path]
    """Dataset file (NAME.npz, NAME.json or NAME)."""
    out: tyro.conf.Positional[Path]
    """The folder to write; an existing one is refused unless --overwrite."""
    fps: int = 20
    """Frames per second of the timestamps and videos."""
    task: str | None = None
    """The task's text (LeRobot's tasks.parquet); default '<env> task <k>'."""
    image_size: int | None = None
    """Also export camera frames of this size as MP4 (from the dataset's frames cache, rendered
    when missing); only datasets made by `expoft data demos/play`."""
    cameras: tuple[str, ...] = ("front_pixels",)
    overwrite: bool = False

    def run(self) -> None:
        from expoft.data.lerobot import export_lerobot

        spec = None if self.image_size is None else PixelSpec(image_size=self.image_size, cameras=self.cameras)
        written = export_lerobot(self.path, self.out, fps=self.fps, pixels=spec, task=self.task,
                                 overwrite=self.overwrite)  # fmt: skip
        print(f"wrote {written}")


ImportFormat = (
    Annotated[ImportRobomimic, tyro.conf.subcommand("robomimic")]
    | Annotated[ImportLerobot, tyro.conf.subcommand("lerobot")]
)
ExportFormat = (
    Annotated[ExportRobomimic, tyro.conf.subcommand("robomimic")]
    | Annotated[ExportLerobot, tyro.conf.subcommand("lerobot")]
)


@dataclasses.dataclass(frozen=True)
class Import:
    """Convert another format's dataset into an expoft dataset."""

    source: Annotated[ImportFormat, tyro.conf.OmitArgPrefixes, tyro.conf.OmitSubcommandPrefixes]

    def run(self) -> None:
        self.source.run()


@dataclasses.dataclass(frozen=True)
class Export:
    """Write an expoft dataset in another format."""

    target: Annotated[ExportFormat, tyro.conf.OmitArgPrefixes, tyro.conf.OmitSubcommandPrefixes]

    def run(self) -> None:
        self.target.run()

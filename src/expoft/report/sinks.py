"""Where a run's metrics go besides ``metrics.jsonl`` (always written, the record every tool of
expoft reads): TensorBoard event files and Weights & Biases.

Each metrics row goes to every sink as scalars (numbers and booleans; lists such as
``eval/successes`` and text stay in metrics.jsonl only) at the row's step: its ``env_step``, or
for rows of the stages before RL, the stage's own counter under its own tags (``pretrain/*``,
``offline/*``). Videos go as GIF images (TensorBoard) or video files (W&B).

A resumed run replays the rows logged after its checkpoint (``RunDir.reopen``); the TensorBoard
sink then opens with ``purge_step`` at the resumed env step, so TensorBoard drops what the killed
process logged from there on and the curves carry every step once.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np

from expoft.report.video import encode_gif

log = logging.getLogger(__name__)

LOG_BACKENDS = ("tensorboard", "wandb")
WANDB_MODES = ("offline", "online", "disabled")
TENSORBOARD_DIR = "tensorboard"
"""Event files go to RUN/tensorboard/ (``tensorboard --logdir RUN/tensorboard``)."""


class MetricSink(Protocol):
    def log(self, row: dict) -> None: ...

    def video(self, tag: str, frames: Sequence[np.ndarray], path: Path, step: int, fps: int) -> None: ...

    def close(self) -> None: ...


def check_backends(backends: Sequence[str]) -> None:
    unknown = [b for b in backends if b not in LOG_BACKENDS]
    if unknown:
        raise ValueError(
            f"unknown --log backend(s) {unknown}; choose from {list(LOG_BACKENDS)} (metrics.jsonl is always written)"
        )
    if len(set(backends)) != len(backends):
        raise ValueError(f"--log names a backend twice: {list(backends)}")


def row_step(row: dict) -> int:
    """The x-axis value of a metrics row: its env step, or the counter of the stage it reports."""
    if row.get("phase") == "offline" and "offline/update_calls" in row:
        return int(row["offline/update_calls"])
    if row.get("phase") == "pretrain":
        return int(row.get("pretrain/steps", row.get("pretrain_step", 0)) or 0)
    return int(row.get("env_step", 0) or 0)


def scalars(row: dict) -> dict[str, float]:
    """The row's finite numbers and booleans, by key; steps and the phase label are not scalars."""
    out = {}
    for key, value in row.items():
        if key in ("env_step", "phase") or isinstance(value, (str, list, dict, tuple)) or value is None:
            continue
        if isinstance(value, (bool, int, float, np.generic)):
            value = float(value)
            if math.isfinite(value):
                out[key] = value
    return out


class TensorBoardSink:
    """Scalars and GIF videos in TensorBoard event files (tensorboardX) under RUN/tensorboard/."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as error:
            raise ImportError("--log tensorboard needs tensorboardX: pip install tensorboardX") from error
        # a suffix of its own: a resumed run opened within the same second as the killed one would
        # otherwise get the same file name and truncate its events
        suffix = f".{os.getpid()}.{time.time_ns()}"
        logdir = str(Path(run_dir) / TENSORBOARD_DIR)
        self.writer = SummaryWriter(logdir=logdir, purge_step=purge_step, filename_suffix=suffix)

    def log(self, row: dict) -> None:
        step = row_step(row)
        for key, value in scalars(row).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def video(self, tag: str, frames: Sequence[np.ndarray], path: Path, step: int, fps: int) -> None:
        # TensorBoard shows an animated GIF in an image summary (what add_video writes, without
        # the moviepy dependency it would need)
        from tensorboardX.proto.summary_pb2 import Summary

        height, width = np.asarray(frames[0]).shape[:2]
        gif = encode_gif(frames, fps)
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Scalars, the run's config and videos in a Weights & Biases run. ``offline`` (the default)
    needs no account: the run is written under RUN/wandb/ (``wandb sync RUN/wandb/offline-run-*``
    uploads it later)."""

    def __init__(self, run_dir: Path, config: dict, project: str, mode: str, resumed: bool = False):
        if mode not in WANDB_MODES:
            raise ValueError(f"--wandb-mode must be one of {list(WANDB_MODES)}, got {mode!r}")
        try:
            import wandb
        except ImportError as error:
            raise ImportError("--log wandb needs wandb: pip install wandb") from error
        self.wandb = wandb
        run_dir = Path(run_dir).resolve()
        checked_mode = cast(Literal["offline", "online", "disabled"], mode)
        self.run = wandb.init(
            project=project, dir=str(run_dir), mode=checked_mode, config=config, name=run_dir.name,
            id=wandb_run_id(run_dir), resume="allow" if resumed else None, reinit="create_new",
        )  # fmt: skip

    def log(self, row: dict) -> None:
        # the step is a logged value, not wandb's own monotonic step: a resumed run replays rows
        self.run.log({**scalars(row), "step": row_step(row)})

    def video(self, tag: str, frames: Sequence[np.ndarray], path: Path, step: int, fps: int) -> None:
        fmt: Literal["mp4", "gif"] = "mp4" if path.suffix.lower() == ".mp4" else "gif"
        self.run.log({tag: self.wandb.Video(str(path), format=fmt), "step": step})

    def close(self) -> None:
        self.run.finish()


def wandb_run_id(run_dir: Path) -> str:
    """A stable W&B run id for a run folder, so a resumed run continues the same W&B run."""
    import hashlib

    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def open_sinks(
    run_dir: Path, backends: Sequence[str], config: dict[str, Any], *, wandb_project: str, wandb_mode: str,
    resumed: bool = False, purge_step: int | None = None,
) -> list[MetricSink]:  # fmt: skip
    """The sinks named by ``backends``. ``resumed``: a resumed run; ``purge_step``: the env step an
    online run resumes at (TensorBoard drops its events from there on, which the run logs again)."""
    check_backends(backends)
    sinks: list[MetricSink] = []
    for backend in backends:
        if backend == "tensorboard":
            sinks.append(TensorBoardSink(run_dir, purge_step=purge_step))
        else:
            sinks.append(WandbSink(run_dir, config, wandb_project, wandb_mode, resumed=resumed))
    return sinks


def tensorboard_events(logdir: str | Path) -> Iterator[Any]:
    """Every Event (tensorboardX's protobuf) of every event file under ``logdir``, oldest file
    first. Reads the TFRecord framing (length, its CRC, the Event, its CRC) without checking the
    CRCs; a record cut short by a kill ends its file."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    files = sorted(Path(logdir).glob("**/events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {logdir}")
    for path in files:
        data = path.read_bytes()
        offset = 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            record = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            if len(record) < length:
                break
            yield Event.FromString(record)


def read_tensorboard_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars under ``logdir`` as TensorBoard shows them: ``{tag: [(step, value), ...]}`` in
    write order, where a session start with a ``purge_step`` (a resumed run) drops the points at
    or after that step written before it."""
    from tensorboardX.proto.event_pb2 import SessionLog

    points: dict[str, list[tuple[int, float]]] = {}
    for event in tensorboard_events(logdir):
        if event.HasField("session_log") and event.session_log.status == SessionLog.START:
            for tag in points:
                points[tag] = [(s, v) for s, v in points[tag] if s < event.step]
        for value in event.summary.value:
            if value.HasField("simple_value"):
                points.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return points

"""A run's folder and its records.

Run folder (``out``)::

    config.json        the resolved RunConfig
    metrics.jsonl      one row per log interval (namespaced keys) and per evaluation
    checkpoints/       agent_<step>.npz (all arrays, no pickle), state_<step>.json (what a resume
                       needs) and buffer/ (the online replay data, in segments)
    summary.json       success before RL, final success, steps, wall time
    learning_curve.png success against environment steps
    tensorboard/, wandb/   the metric sinks a run was asked for (``--log``)

Also: the config's (de)serialisation, and the divergence guard that saves the agent as it was
before a non-finite update.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from expoft.encoders import EncoderConfig
from expoft.fileio import move_aside, write_json
from expoft.obs import PixelSpec
from expoft.pytree_io import save_pytree
from expoft.report.sinks import MetricSink, open_sinks
from expoft.report.video import write_video
from expoft.train.config import AGENT_SECTIONS, SECTIONS, RunConfig, section_type, split_agent_settings

log = logging.getLogger(__name__)


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.generic, jax.Array)):
        return value.item()
    return value


RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    "metrics.replayed.jsonl",
    "summary.json",
    "learning_curve.png",
    "checkpoints",
)


class RunDir:
    """The folder of one run. Refuses to write into a folder that already holds a run, unless
    ``overwrite``: then the old run's files are moved aside to ``replaced-<time>/`` in the folder,
    and deleted only once the new run has written its first checkpoint (:meth:`checkpoint_written`):
    a new run that fails early leaves the old one recoverable."""

    def __init__(self, out: str | Path, config: RunConfig, overwrite: bool = False):
        self.path = Path(out)
        self.replaced: Path | None = None
        if (self.path / "config.json").exists():
            if not overwrite:
                raise FileExistsError(
                    f"{self.path} already holds a run; choose another --out, continue it with "
                    f"`expoft finetune --resume {self.path}`, or replace it with --overwrite"
                )
            self.replaced = move_aside(self.path, RUN_FILES)  # only what a run writes; the user's files stay
            log.info("moved the run in %s aside to %s until this run's first checkpoint", self.path, self.replaced)
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.write_json("config.json", to_jsonable(config))
        self._metrics = open(self.path / "metrics.jsonl", "w")
        self.sinks = self._open_sinks(config, resumed=False)

    def _open_sinks(self, config: RunConfig, resumed: bool, purge_step: int | None = None) -> list[MetricSink]:
        return open_sinks(self.path, config.log, to_jsonable(config), wandb_project=config.wandb_project,
                          wandb_mode=config.wandb_mode, resumed=resumed, purge_step=purge_step)  # fmt: skip

    def checkpoint_written(self) -> None:
        """The new run can be continued from now on: delete the run it replaced (if any)."""
        if self.replaced is not None:
            shutil.rmtree(self.replaced)
            log.info("deleted %s (the run this one replaced)", self.replaced)
            self.replaced = None

    @classmethod
    def reopen(cls, out: str | Path, metrics_bytes: int, config: RunConfig, resume_step: int | None = None) -> RunDir:
        """An existing run folder, its metrics cut back to the first ``metrics_bytes`` bytes (what was
        logged up to the checkpoint being resumed). The cut rows are appended to
        ``metrics.replayed.jsonl``, not thrown away; the resumed run logs them again. ``resume_step``:
        the env step an online run resumes at; TensorBoard drops what it had from there on."""
        run = cls.__new__(cls)
        run.path, run.replaced, run.sinks = Path(out), None, []
        metrics = run.path / "metrics.jsonl"
        data = metrics.read_bytes() if metrics.exists() else b""
        if len(data) < metrics_bytes:
            raise ValueError(
                f"{metrics} holds {len(data)} bytes, fewer than the {metrics_bytes} the checkpoint "
                "recorded; it was truncated or replaced since"
            )
        if len(data) > metrics_bytes:
            cut = data[metrics_bytes:]
            with open(run.path / "metrics.replayed.jsonl", "ab") as f:
                # a row cut short by a kill ends its fragment, so the next one starts on a line of its own
                f.write(cut if cut.endswith(b"\n") else cut + b"\n")
        run._metrics = open(metrics, "r+")
        run._metrics.truncate(metrics_bytes)
        run._metrics.seek(metrics_bytes)
        run.sinks = run._open_sinks(config, resumed=True, purge_step=resume_step)
        return run

    def metrics_bytes(self) -> int:
        self._metrics.flush()
        return self._metrics.tell()

    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.path / name, obj, sort_keys=True)

    def log(self, row: dict) -> None:
        row = to_jsonable(row)
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        for sink in self.sinks:
            sink.log(row)

    def video(self, frames: Sequence[np.ndarray], name: str, step: int, fps: int = 20) -> Path:
        """Write ``frames`` to RUN/videos/``name`` (.gif or .mp4) and hand them to the sinks."""
        path = write_video(frames, self.path / "videos" / name, fps)
        for sink in self.sinks:
            sink.video(f"video/{Path(name).stem}", frames, path, step, fps)
        return path

    def close(self) -> None:
        self._metrics.close()
        for sink in self.sinks:
            sink.close()
        self.sinks = []


NONFINITE_KEYS = ("critic/loss", "critic/q_mean", "critic/q_min", "critic/q_max", "edit/loss", "base/loss")


def stop_if_diverged(metrics: dict, last_finite, run: RunDir, where: str, name: str, row: dict) -> None:
    """Divergence guard: stop at the first update call with a non-finite loss or Q-value, after
    saving the agent as it was before that call to checkpoints/``name``.npz. ``where``: the call,
    for the message; ``row``: what locates it in metrics.jsonl (e.g. its env step)."""
    bad = [k for k in NONFINITE_KEYS if k in metrics and not math.isfinite(metrics[k])]
    if metrics.get("critic/grad_nonfinite", 0) or metrics.get("critic/nonfinite", 0):
        bad.append("critic gradients" if metrics.get("critic/grad_nonfinite", 0) else "critic values")
    if not bad:
        return
    path = run.path / "checkpoints" / f"{name}.npz"
    save_pytree(last_finite, path, env_step=np.int64(row.get("env_step", 0)))
    run.log({**row, "phase": "diverged", "diverged": bad, **metrics})
    raise FloatingPointError(
        f"training diverged at {where}: non-finite {', '.join(bad)}. The agent before that call is "
        f"saved in {path} (`expoft eval {run.path} --checkpoint {path}`); lower the learning rates, "
        "check the rewards, or resume from an earlier checkpoint with other settings"
    )


def config_from_json(data: dict) -> RunConfig:
    """Rebuild a RunConfig from its ``config.json``. Files written before each agent owned its
    settings (2026-12-05) hold EXPO's settings in ``agent`` and the baselines' in ``baseline``:
    every setting goes to the section that holds it now, by its name (the flag's)."""

    def tuples(d: dict) -> dict:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

    stored = ("baseline", *SECTIONS)
    if not isinstance(data, dict) or not all(isinstance(data.get(s) or {}, dict) for s in stored):
        raise ValueError(f"a run config is a map with a map per agent section {stored}, got {type(data).__name__}")
    settings = {k: v for section in stored for k, v in tuples(data.get(section) or {}).items()}
    if isinstance(settings.get("encoder"), dict):
        settings["encoder"] = EncoderConfig(**tuples(settings["encoder"]))
    fields = {k: v for k, v in data.items() if k not in stored}
    by_section = split_agent_settings(settings)
    fields.update({section: section_type(section)(**by_section.get(section, {})) for section in SECTIONS})
    if data.get("pixels") is not None:
        fields["pixels"] = PixelSpec(**tuples(data["pixels"]))
    for name in ("dataset", "base_from"):
        if fields.get(name) is not None:
            fields[name] = Path(fields[name])
    return RunConfig(**fields)


def same_config(written, planned: dict) -> bool:
    """Whether ``written`` (a config as stored in config.json or a checkpoint record) is the
    config ``planned`` (``to_jsonable`` of a RunConfig). Compared as configs, not as JSON: a field
    added to RunConfig after the file was written is missing from it and takes its default, which
    is no difference; nor are the settings of agents other than the run's own (a BC run's EXPO
    section changes nothing it does). An unreadable one differs."""
    try:
        return _own_settings(to_jsonable(config_from_json(written))) == _own_settings(planned)
    except (KeyError, TypeError, ValueError):
        return False


def _own_settings(config: dict) -> dict:
    """A jsonable RunConfig without the sections of other agents than its ``algorithm``."""
    return {k: v for k, v in config.items() if k not in AGENT_SECTIONS or k == config.get("algorithm")}


def latest_checkpoint(run_dir: Path) -> Path:
    found = sorted((run_dir / "checkpoints").glob("agent_*.npz"), key=lambda p: int(p.stem.split("_")[1]))
    if not found:
        raise FileNotFoundError(f"no checkpoints in {run_dir / 'checkpoints'}")
    return found[-1]

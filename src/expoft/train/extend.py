"""`expoft extend RUN --env-steps N --out NEW`: a finished run continued to a larger budget.

Whether more interaction would change a result (does the critic-guided policy's gain over its own
base grow past the protocol's budget?) is a question about finished runs, and running them again
from the start costs the whole budget again. A finished run's checkpoint of its end (written by
every run as it finishes) holds all a resume needs: NEW starts as a copy of RUN (its metrics,
evaluations and checkpoints; not its summary, plot or bench record) whose config has ``env_steps
= N``, and goes on as `expoft finetune --resume` does. RUN is not touched; NEW/extended.json says
where NEW came from. The same command again continues a killed extension (as `expoft finetune
--resume NEW` does). The extension runs in one process, as `expoft finetune` does, whatever ran
the source (a learner with actors too).

NEW differs from a run given N from the start in one place: RUN ended where its budget ran out,
mid-episode as a rule, and the environment cannot be saved there. That episode is closed in the
replay buffer as cut by a time limit (not a terminal: its last step still bootstraps) and NEW's
first step starts the next episode. Nothing else depends on ``env_steps`` but the end of the
loop, so the rest follows from the checkpoint exactly as a resume does.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from expoft.fileio import write_json
from expoft.train.checkpoint import CheckpointStore
from expoft.train.config import RunConfig
from expoft.train.extension_record import RECORD, extension_of
from expoft.train.rundir import config_from_json, to_jsonable

LEFT_BEHIND = ("summary.json", "learning_curve.png", "bench_run.json")
"""What only the finished source has: NEW writes its own summary and plot when it finishes."""


def checkpoint_config(cfg: RunConfig, out: Path, env_step: int) -> RunConfig:
    """The config the run in ``out`` wrote its checkpoint of ``env_step`` with: an extended run's
    checkpoints up to where it was extended were written under the source's budget."""
    extension = extension_of(out)
    if extension is None or env_step > extension["env_step"]:
        return cfg
    return dataclasses.replace(cfg, env_steps=extension["env_steps_before"])


def close_cut_episode(out: Path, buffer) -> None:
    """In the restored replay buffer of the run in ``out``: if it was extended, end the episode its
    source was cut in (mid-episode as a rule) where it was cut, as a time limit would. Done at every
    resume, since the checkpoints' replay segments hold that episode as it was written."""
    extension = extension_of(out)
    if extension is not None:
        buffer.end_episode_at(extension["cut"] - 1)


def prepare_extension(source: str | Path, out: str | Path, env_steps: int) -> Path:
    """The folder ``out`` ready for ``expoft.train.finetune.resume`` to continue the finished run
    in ``source`` to ``env_steps`` env steps: a new copy, or the copy an earlier call made for the
    same source and budget (a killed extension)."""
    source, out = Path(source), Path(out)
    if not (source / "config.json").exists():
        raise FileNotFoundError(f"{source / 'config.json'} does not exist: {source} is not an expoft run folder")
    if not (source / "summary.json").exists():
        raise ValueError(f"the run in {source} has not finished (no summary.json): continue it with "
                         f"`expoft finetune --resume {source}` first")  # fmt: skip
    cfg = config_from_json(json.loads((source / "config.json").read_text()))
    if env_steps <= cfg.env_steps:
        raise ValueError(f"--env-steps must be more than the {cfg.env_steps} env steps the run in {source} had, "
                         f"got {env_steps}")  # fmt: skip
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise ValueError(f"--out {out} is the source run or inside it; choose a new folder")
    earlier = extension_of(out) if out.is_dir() else None
    if earlier is not None:  # the same command again: continue what it started
        planned = config_from_json(json.loads((out / "config.json").read_text())).env_steps
        if earlier["from"] != str(source.resolve()) or planned != env_steps:
            raise FileExistsError(f"{out} holds another extension ({earlier['from']} to {planned} env steps); "
                                  "choose a new --out")  # fmt: skip
        if (out / "summary.json").exists():
            raise ValueError(f"the extension in {out} has finished (summary.json exists); nothing to continue")
        return out
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out (the source run is never changed)")
    record = CheckpointStore(source / "checkpoints", keep=cfg.keep_checkpoints).latest_valid()
    if record is None or int(record["env_step"]) < cfg.env_steps:
        found = "none" if record is None else f"the newest is of env step {record['env_step']}"
        raise ValueError(f"{source} holds no usable checkpoint of its end (env step >= {cfg.env_steps}; {found}): "
                         "only a run whose final checkpoint is kept can be extended")  # fmt: skip
    partial = out.with_name(out.name + ".partial")
    if partial.exists():  # an extension killed while copying: nothing of it ran
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, partial, ignore=lambda folder, names: [n for n in names if n in LEFT_BEHIND])
    extended = dataclasses.replace(cfg, env_steps=env_steps)
    write_json(partial / "config.json", to_jsonable(extended), sort_keys=True)  # as RunDir writes it
    entry = {"from": str(source.resolve()), "env_steps_before": cfg.env_steps, "env_step": int(record["env_step"]),
             "cut": int(record["buffer"]["total_added"]), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    write_json(partial / RECORD, entry)
    if out.exists():
        out.rmdir()  # empty (checked above)
    partial.rename(out)
    return out

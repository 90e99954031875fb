"""The ``expoft`` command. Thin: parse a typed config, build, run.

expoft data demos --env cube-single --task 1 --episodes 30 --seed 0
expoft data play --env cube-double --transitions 1000000 --seed 0
expoft data info PATH
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import tyro

from expoft.data.dataset import REWARD_MODES, DatasetError, describe, load_dataset
from expoft.data.generate import DemosConfig, GenConfig, PlayConfig, get_or_generate

log = logging.getLogger("expoft")


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    out: Path | None = None
    """Write NAME.npz and NAME.json into this folder instead of the cache."""
    data_dir: Path | None = None
    """Cache folder; default $EXPOFT_DATA_DIR, else ~/.cache/expoft/datasets."""
    force: bool = False
    """Regenerate even if a copy exists (the old files are kept as *.bak)."""
    workers: int = 2
    """Worker processes for generation."""
    progress: bool = True
    """Show a progress bar."""
    show_info: bool = False
    """Print the dataset summary (as `expoft data info`) afterwards."""


def _generate(cfg: GenConfig, opts: OutputOptions) -> None:
    if opts.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {opts.workers}")
    path, ds, reused = get_or_generate(
        cfg, data_dir=opts.data_dir, out=opts.out, force=opts.force, workers=opts.workers, progress=opts.progress
    )
    verb = "reused" if reused else "wrote"
    msg = f"{verb} {path} ({ds.num_episodes} episodes, {ds.num_transitions} transitions"
    if ds.episode_success is not None:
        msg += f", success {ds.episode_success.mean():.0%}"
    if not reused:
        msg += f", {ds.meta['generation_seconds']:.1f} s"
    print(msg + ")")
    if opts.show_info:
        _print_info(describe(ds))


def _print_info(info: dict) -> None:
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")


@dataclasses.dataclass(frozen=True)
class Demos:
    """Generate noisy oracle demonstrations of one singletask."""

    config: Annotated[DemosConfig, tyro.conf.OmitArgPrefixes] = DemosConfig()
    output: Annotated[OutputOptions, tyro.conf.OmitArgPrefixes] = OutputOptions()

    def run(self) -> None:
        _generate(self.config, self.output)


@dataclasses.dataclass(frozen=True)
class Play:
    """Generate task-agnostic play data (labelled for a task when loaded)."""

    config: Annotated[PlayConfig, tyro.conf.OmitArgPrefixes] = PlayConfig()
    output: Annotated[OutputOptions, tyro.conf.OmitArgPrefixes] = OutputOptions()

    def run(self) -> None:
        _generate(self.config, self.output)


@dataclasses.dataclass(frozen=True)
class Info:
    """Print episodes, transitions, success rate, action ranges and observation statistics."""

    path: tyro.conf.Positional[Path]
    """Dataset file (NAME.npz, NAME.json or NAME)."""
    env: str | None = None
    """Environment to check dimensions against (default: from the file's metadata)."""
    task: int | None = None
    """Label play data for this task first (success rate and returns then refer to it)."""
    reward: str = "sparse"
    """Reward used with --task: sparse or ogbench."""
    json: bool = False
    """Print one JSON object instead of a table."""

    def run(self) -> None:
        if self.reward not in REWARD_MODES:
            raise ValueError(f"--reward must be one of {REWARD_MODES}, got {self.reward!r}")
        ds = load_dataset(self.path, env=self.env, task=self.task, reward=self.reward)
        info = describe(ds)
        if self.json:
            print(json.dumps(info))
        else:
            _print_info(info)


DataCommand = (
    Annotated[Demos, tyro.conf.subcommand("demos")]
    | Annotated[Play, tyro.conf.subcommand("play")]
    | Annotated[Info, tyro.conf.subcommand("info")]
)


# Top-level command groups: name -> (tyro target, one-line help). New groups
# (pretrain, finetune, eval, demo, bench) are added here.
COMMANDS: dict[str, tuple[object, str]] = {
    "data": (DataCommand, "generate, inspect and validate datasets"),
}


def _usage() -> str:
    lines = ["usage: expoft COMMAND ...", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run `expoft COMMAND --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"expoft: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # MuJoCo's GL backend chatter
    target, _ = COMMANDS[argv[0]]
    try:
        # Config dataclasses validate themselves while tyro builds them.
        cmd = tyro.cli(target, args=argv[1:], prog=f"expoft {argv[0]}")
        cmd.run()
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"expoft: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

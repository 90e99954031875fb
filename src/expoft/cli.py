"""The ``expoft`` command. Thin: parse a typed config, build, run.

expoft data demos --env cube-single --task 1 --episodes 30 --seed 0
expoft data play --env cube-double --transitions 1000000 --seed 0
expoft data label PATH --env cube-double --task 1 --reward ogbench
expoft data info PATH
expoft data render PATH --image-size 64 --cameras front_pixels
expoft data import robomimic FILE.hdf5 --env cube-single --out OUT
expoft data export robomimic FILE.npz OUT.hdf5
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from expoft.bench import parse_bench
from expoft.cli_runtime import Actor, Learner, Record, RewardCommand, Serve
from expoft.data.convert import Export, Import
from expoft.data.dataset import dataset_paths, labelled_path, load_dataset, save_dataset
from expoft.data.describe import describe
from expoft.data.frames import get_or_render
from expoft.data.generate import DemosConfig, GenConfig, PlayConfig, get_or_generate
from expoft.data.transitions import DatasetError
from expoft.envs.ogbench_domains import check_reward
from expoft.obs import PixelSpec
from expoft.report.video import RenderError
from expoft.train.config import RunConfig
from expoft.train.evaluate import evaluate_run
from expoft.train.extend import prepare_extension
from expoft.train.finetune import finetune, resume
from expoft.train.methods import base_config, split_preset_and_method
from expoft.train.online_loop import StoppedAtCheckpoint
from expoft.train.pretrain import pretrain_only, resume_pretrain_only

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
        check_reward(self.reward, "--reward")
        ds = load_dataset(self.path, env=self.env, task=self.task, reward=self.reward)
        info = describe(ds)
        if self.json:
            print(json.dumps(info))
        else:
            _print_info(info)


@dataclasses.dataclass(frozen=True)
class Label:
    """Label task-agnostic play data for one singletask (rewards, terminals, episode success) and
    save the copy, a `--dataset` for `expoft finetune`. The input file is left as it is; an
    existing output is refused."""

    path: tyro.conf.Positional[Path]
    """Dataset file (NAME.npz, NAME.json or NAME) with the simulator states (`expoft data play`)."""
    task: int = 1
    """Singletask to label for, 1..5."""
    reward: str = "sparse"
    """sparse (1 at success) or ogbench (OGBench's partial-credit singletask reward)."""
    env: str | None = None
    """Domain (default: from the file's metadata)."""
    out: Path | None = None
    """Output file; default NAME-task<K>-<reward>.npz beside the input."""

    def run(self) -> None:
        check_reward(self.reward, "--reward")
        out = self.out or labelled_path(self.path, self.task, self.reward)
        for existing in dataset_paths(out):  # before the work, not after it
            if existing.exists():
                raise FileExistsError(f"{existing} already exists; choose another --out or remove it")
        ds = load_dataset(self.path, env=self.env, task=self.task, reward=self.reward)
        written = save_dataset(ds, out)
        assert ds.terminals is not None and ds.episode_success is not None  # labelled just now
        print(
            f"wrote {written} (task {self.task}, {self.reward} reward: {int(ds.terminals.sum())} transitions "
            f"reach the goal, {int(ds.episode_success.sum())} of {ds.num_episodes} episodes succeed)"
        )


@dataclasses.dataclass(frozen=True)
class Render:
    """Render camera frames of every state of a generated dataset (for pixel observations) and
    cache them beside it as NAME.frames-<S>px-<cameras>.npz; an existing file is validated."""

    path: tyro.conf.Positional[Path]
    """Dataset file (NAME.npz, NAME.json or NAME) made by `expoft data demos` or `expoft data play`."""
    image_size: int = 64
    """Square frames of this many pixels per side."""
    cameras: tuple[str, ...] = ("front_pixels",)
    """MuJoCo cameras, stacked on the channel axis in this order."""
    force: bool = False
    """Render again even if a valid file exists (the old files are kept as *.bak)."""
    progress: bool = True
    """Show a progress bar."""

    def run(self) -> None:
        spec = PixelSpec(image_size=self.image_size, cameras=tuple(self.cameras))
        path, frames, reused = get_or_render(self.path, spec, force=self.force, progress=self.progress)
        verb = "validated" if reused else "wrote"
        size_mb = path.stat().st_size / 2**20
        print(f"{verb} {path} (frames {list(frames.shape)} uint8, {size_mb:.1f} MB)")


DataCommand = (
    Annotated[Demos, tyro.conf.subcommand("demos")]
    | Annotated[Play, tyro.conf.subcommand("play")]
    | Annotated[Label, tyro.conf.subcommand("label")]
    | Annotated[Info, tyro.conf.subcommand("info")]
    | Annotated[Render, tyro.conf.subcommand("render")]
    | Annotated[Import, tyro.conf.subcommand("import")]
    | Annotated[Export, tyro.conf.subcommand("export")]
)


@dataclasses.dataclass(frozen=True)
class Finetune:
    """Pretrain the base on the offline data, then fine-tune online with EXPO."""

    config: Annotated[RunConfig, tyro.conf.OmitArgPrefixes]
    out: Path = Path("runs/finetune")
    """Run folder: config.json, metrics.jsonl, checkpoints/, summary.json."""
    overwrite: bool = False
    """Replace the run in --out if there is one (its checkpoints and metrics are deleted)."""
    resume: Path | None = None
    """Continue the killed run in this folder from its newest usable checkpoint, with the run's
    own config.json (other flags are ignored)."""
    progress: bool = True

    def run(self) -> None:
        if self.resume is not None:
            summary = resume(self.resume, progress=self.progress)
        else:
            summary = finetune(self.config, self.out, overwrite=self.overwrite, progress=self.progress)
        print(json.dumps({k: v for k, v in summary.items() if k != "evaluations"}))


@dataclasses.dataclass(frozen=True)
class Extend:
    """Continue a finished run to a larger budget in a new folder (the source is not touched): does
    more interaction change its result? See `expoft.train.extend`."""

    run_dir: tyro.conf.Positional[Path]
    """The finished run (its config.json, summary.json and the checkpoint of its end)."""
    env_steps: int
    """The new budget in env steps: more than the run had."""
    out: Path
    """The new run folder (new or empty); if killed, the same command continues it."""
    progress: bool = True

    def run(self) -> None:
        summary = resume(prepare_extension(self.run_dir, self.out, self.env_steps), progress=self.progress)
        print(json.dumps({k: v for k, v in summary.items() if k != "evaluations"}))


@dataclasses.dataclass(frozen=True)
class Pretrain:
    """Imitation of the base only; writes a checkpoint that `expoft eval` can load."""

    config: Annotated[RunConfig, tyro.conf.OmitArgPrefixes]
    out: Path = Path("runs/pretrain")
    overwrite: bool = False
    """Replace what an earlier run wrote in --out (without it an existing run folder is refused)."""
    resume: Path | None = None
    """Continue the killed pretraining in this folder from its pretraining checkpoint (written every
    5 minutes), with the run's own config.json (other flags are ignored)."""
    progress: bool = True

    def run(self) -> None:
        if self.resume is not None:
            summary = resume_pretrain_only(self.resume, progress=self.progress)
        else:
            summary = pretrain_only(self.config, self.out, overwrite=self.overwrite, progress=self.progress)
        print(json.dumps(summary))


@dataclasses.dataclass(frozen=True)
class Eval:
    """Success rate (95% interval), mean return and episode length of a checkpoint over N episodes
    with fixed seeds."""

    run_dir: tyro.conf.Positional[Path]
    """Run folder (its config.json and latest checkpoint are used)."""
    episodes: int = 50
    seed: int | None = None
    """First reset seed; default: the run's own evaluation seed (10000 + 1000 * its seed), so
    that the run's logged evaluations are reproduced."""
    checkpoint: Path | None = None
    """A specific checkpoint file instead of the latest one."""
    policy: Literal["otf", "base"] = "otf"
    """otf: the agent's evaluation policy (EXPO's OTF rule, a baseline's own); base: its base
    policy alone (e.g. how far the base moved during fine-tuning)."""
    video: Path | None = None
    """Also write the first --video-episodes episodes to this video, an animated .gif or an .mp4
    (needs EGL rendering)."""
    video_episodes: int = 1
    num_base_samples: int | None = None
    """The OTF rule over this many base samples instead of the run's own (EXPO's agents: EXPO,
    EXPO-FT, QC, best-of-N), with the same critic: where does a policy's gain come from?"""
    num_edit_samples: int | None = None
    """How many of them are also edited; 0: the critic's choice among the base's samples alone,
    without the edit policy."""
    act_score: Literal["subset-min", "mean"] | None = None
    """How the OTF rule scores its candidates instead of the run's own: subset-min (the published
    rule) or mean (of the whole target ensemble)."""

    def run(self) -> None:
        if self.episodes < 1 or self.video_episodes < 1:
            raise ValueError("--episodes and --video-episodes must be >= 1")
        result = evaluate_run(
            self.run_dir, self.episodes, self.seed, self.checkpoint, self.video, self.video_episodes, self.policy,
            {"num_base_samples": self.num_base_samples, "num_edit_samples": self.num_edit_samples,
             "act_score": self.act_score},
        )  # fmt: skip
        print(json.dumps(result))


@dataclasses.dataclass(frozen=True)
class Demo:
    """The main job: demos for cube-single task 1, pretrain, EXPO fine-tuning, evaluation, plot."""

    config: Annotated[RunConfig, tyro.conf.OmitArgPrefixes]
    out: Path = Path("runs/demo")
    overwrite: bool = False
    resume: bool = False
    """Continue the killed demo in --out/seed<seed> from its newest checkpoint."""
    progress: bool = True

    def run(self) -> None:
        out = self.out / f"seed{self.config.seed}"
        if self.resume:
            summary = resume(out, progress=self.progress)
        else:
            summary = finetune(self.config, out, overwrite=self.overwrite, progress=self.progress)
        keys = ("bc_success", "final_success", "env_steps", "env_steps_to_95", "wall_seconds", "seed")
        for key in keys:
            print(f"{key:<16} {summary[key]}")
        print(f"{'run folder':<16} {out}  (learning_curve.png, summary.json, metrics.jsonl)")


def _with_preset(target, argv: list[str], name: str = "default"):
    """``--preset NAME`` picks the defaults, ``--method NAME`` changes them into that method's
    (`expoft.train.methods`); the other flags then override."""
    name, method, rest = split_preset_and_method(argv, name)
    config = base_config(name, method)
    return tyro.cli(target, args=rest, default=target(config=config), prog=f"expoft {target.__name__.lower()}")


# Top-level commands: name -> (parser, one-line help). New commands (demo, bench) go here.
COMMANDS: dict[str, tuple[Callable[[list[str]], Any], str]] = {
    "data": (
        lambda argv: tyro.cli(DataCommand, args=argv, prog="expoft data"),
        "generate, inspect and validate datasets; import and export robomimic and LeRobot",
    ),
    "pretrain": (lambda argv: _with_preset(Pretrain, argv), "imitation pretraining of the base (--preset NAME)"),
    "finetune": (lambda argv: _with_preset(Finetune, argv), "pretrain + online EXPO fine-tuning (--preset NAME)"),
    "extend": (
        lambda argv: tyro.cli(Extend, args=argv, prog="expoft extend"),
        "continue a finished run to a larger budget in a new folder",
    ),
    "eval": (lambda argv: tyro.cli(Eval, args=argv, prog="expoft eval"), "evaluate a run's checkpoint"),
    "serve": (lambda argv: tyro.cli(Serve, args=argv, prog="expoft serve"), "serve a run's base policy (websocket)"),
    "learner": (lambda argv: _with_preset(Learner, argv), "own a run and serve its online phase to an actor"),
    "actor": (lambda argv: tyro.cli(Actor, args=argv, prog="expoft actor"), "act for a learner (ws://HOST:PORT)"),
    "record": (lambda argv: _with_preset(Record, argv), "record demonstrations by a person (keyboard, gamepad)"),
    "reward": (
        lambda argv: tyro.cli(RewardCommand, args=argv, prog="expoft reward"),
        "train and evaluate a learned success detector (an image classifier)",
    ),
    "demo": (lambda argv: _with_preset(Demo, argv, "demo"), "the main job: fine-tune cube-single task 1 end to end"),
    "bench": (
        parse_bench,
        "compare methods over seeds (`expoft bench report DIR` re-renders the report, `expoft bench "
        "export DIR DEST` copies it without checkpoints)",
    ),
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
    for noisy in ("absl", "jax._src.xla_bridge", "OpenGL"):  # GL backend and TPU-probe chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    parse, _ = COMMANDS[argv[0]]
    try:
        # Config dataclasses validate themselves while tyro builds them.
        cmd = parse(argv[1:])
        cmd.run()
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError, FloatingPointError, RenderError) as e:
        print(f"expoft: error: {e}", file=sys.stderr)
        return 2
    except ConnectionError as e:  # a peer that cannot be reached (an actor's learner): not a usage error
        print(f"expoft: error: {e}", file=sys.stderr)
        return 1
    except StoppedAtCheckpoint as e:  # asked to stop; 143 = 128 + SIGTERM, as a process ended by it
        print(f"expoft: {e}", file=sys.stderr)
        return 143
    return 0


if __name__ == "__main__":
    sys.exit(main())

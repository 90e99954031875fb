"""What a bench runs: every method x seed as an `expoft finetune` command with its resolved
config, and the data commands that make the runs' data first."""

from __future__ import annotations

import dataclasses
import functools
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from expoft.bench.protocols import Protocol as BenchProtocol

if TYPE_CHECKING:  # the data package imports MuJoCo/OGBench: only where demos are made
    from expoft.data.generate import DemosConfig


EXPOFT_ARGV = (sys.executable, "-m", "expoft.cli")
"""How the runner starts `expoft` (this interpreter, so the runs use the same installation)."""


class PlanArgs(Protocol):
    """What :func:`plan` reads of the bench's options (``expoft.bench.runner.Bench``)."""

    @property
    def seeds(self) -> int: ...
    @property
    def task(self) -> int: ...
    @property
    def finetune_args(self) -> str: ...
    @property
    def method_args(self) -> str: ...
    @property
    def eval_base(self) -> bool: ...


@dataclasses.dataclass
class PlannedRun:
    method: str
    seed: int
    run_dir: Path
    log: Path
    args: list[str]
    """`expoft` arguments of a fresh start (`finetune ... --out RUN_DIR --no-progress`)."""
    config: dict
    """The resolved RunConfig (as config.json will hold it)."""
    demos: DemosConfig | None = None
    """The ``DemosConfig`` the run generates its offline data from; None with a ``dataset``."""

    @property
    def label(self) -> str:
        return f"{self.method} seed {self.seed}"


@dataclasses.dataclass
class DataStep:
    what: str
    path: Path
    """The .npz the step writes (the step is skipped if it exists)."""
    argv: list[str]
    """Full command (executable first)."""
    command: str
    """The same, as a shell line for people."""
    check: Callable[[], None] | None = None
    """For a file that exists: raises if it is not what the step would write (it is then left as it is)."""


def parse_methods(spec: str) -> list[str]:
    from expoft.train.methods import method_names

    known = method_names()

    names = [m.strip().lower() for m in spec.split(",") if m.strip()]
    if not names:
        raise ValueError("--methods is empty; name at least one method")
    unknown = [m for m in names if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    twice = sorted({m for m in names if names.count(m) > 1})
    if twice:
        raise ValueError(f"method(s) listed twice in --methods: {', '.join(twice)}")
    return names


def method_flags(spec: str, methods: list[str]) -> dict[str, list[str]]:
    """``--method-args`` as {method: [flags]}, refusing entries that cannot be what was meant."""
    flags: dict[str, list[str]] = {}
    for entry in (e.strip() for e in spec.split(";")):
        if not entry:
            continue
        name, sep, rest = entry.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise ValueError(f"--method-args entry {entry!r} is not METHOD=FLAGS (e.g. 'expo-ft=--update-every 20')")
        if name not in methods:
            raise ValueError(f"--method-args names {name!r}, which is not in --methods ({', '.join(methods)})")
        if name in flags:
            raise ValueError(f"--method-args names {name!r} twice; put all its flags in one entry")
        try:
            flags[name] = shlex.split(rest)
        except ValueError as err:
            raise ValueError(f"--method-args entry {entry!r}: {err}") from None
        if not flags[name]:
            raise ValueError(f"--method-args entry {entry!r} has no flags")
    return flags


def flag_of(field: str) -> str:
    return "--" + field.replace("_", "-")


def plan(args: PlanArgs, methods: list[str], proto: BenchProtocol, env: str, dataset: Path | None, out: Path):
    """Every run (seed-major: all methods of seed 0 first, so that a partial bench compares them)."""
    from expoft.train.build import demos_config
    from expoft.train.methods import fixes, run_config
    from expoft.train.rundir import to_jsonable

    extra = shlex.split(args.finetune_args)
    tuning = method_flags(args.method_args, methods)
    settings = {**proto.overrides, **({"offline_updates": proto.offline_updates} if proto.offline_updates else {})}
    runs = []
    for seed in range(args.seeds):
        for method in methods:
            # A setting that defines the method (rlpd: no pretraining) wins over the protocol's.
            flags = [
                x
                for field, value in settings.items()
                if field not in fixes(method)
                for x in (flag_of(field), str(value))
            ]
            run_dir = out / "runs" / method / f"seed{seed}"
            given = ["--preset", proto.preset, "--method", method, "--seed", str(seed)]
            given += ["--env", env, "--task", str(args.task)]
            if dataset is not None:
                given += ["--dataset", str(dataset)]
            diagnostics = ["--eval-base"] if args.eval_base else []
            given += [*flags, *diagnostics, *extra, *tuning.get(method, [])]
            resolved = run_config(given)
            cmd = ["finetune", *given, "--out", str(run_dir), "--no-progress"]
            demos = demos_config(resolved) if resolved.dataset is None else None
            log = run_dir.parent / f"seed{seed}.log"
            runs.append(PlannedRun(method, seed, run_dir, log, cmd, to_jsonable(resolved), demos))
    return runs


def expoft_command(args: list[str]) -> tuple[list[str], str]:
    """(argv to execute, the command as people type it)."""
    return [*EXPOFT_ARGV, *args], shlex.join(["expoft", *args])


def demos_flags(demos: DemosConfig) -> list[str]:
    """``expoft data demos`` flags that make exactly ``demos`` (a ``DemosConfig``): every field
    that is set, so that a field added to it later is passed too."""
    flags = []
    for field in dataclasses.fields(demos):
        value = getattr(demos, field.name)
        if value is not None:  # None: the field's own default (e.g. the env's time limit)
            flags += [flag_of(field.name), str(value)]
    return flags


def demo_steps(demo_configs, jobs: int) -> list[DataStep]:
    """`expoft data demos` for every demo set the runs use, so that parallel runs never generate
    the same cache file at once. Every field of ``DemosConfig`` is passed: the step's file is named
    by all of them (``cache_name``), and a field left out (until 2026-12-06 ``disturb`` and
    ``gripper_noise`` were) makes the default demos under another name, and the step fails."""
    from expoft.data.generate import default_data_dir

    steps = []
    for demos in sorted(demo_configs, key=lambda d: (d.seed, d.cache_name())):
        argv, cmd = expoft_command(["data", "demos", *demos_flags(demos), "--no-progress", "--workers", str(jobs)])
        steps.append(DataStep(f"demos seed {demos.seed}", default_data_dir() / f"{demos.cache_name()}.npz", argv, cmd))
    return steps


def play_steps(proto: BenchProtocol, env: str, task: int, jobs: int) -> tuple[list[DataStep], Path | None]:
    """p2: the play data and its copy labelled for the task, the runs' `dataset`."""
    from expoft.data.dataset import check_labelled_copy, labelled_path
    from expoft.data.generate import PlayConfig, default_data_dir

    if proto.play_transitions is None:
        return [], None
    folder = default_data_dir()
    play = PlayConfig(env=env, transitions=proto.play_transitions, seed=0)
    play_path = folder / f"{play.cache_name()}.npz"
    argv, cmd = expoft_command(
        ["data", "play", "--env", env, "--transitions", str(play.transitions), "--seed", "0", "--no-progress",
         "--workers", str(jobs)]
    )  # fmt: skip
    steps = [DataStep("play data", play_path, argv, cmd)]
    # Play data has no rewards until it is labelled for a task; the runs get a copy labelled once
    # (rewards, terminals, episode success for the task, with the protocol's reward) rather than
    # each labelling 100k+ transitions itself.
    reward = proto.overrides.get("reward", "sparse")
    labelled = labelled_path(play_path, task, reward)
    argv, cmd = expoft_command(
        ["data", "label", str(play_path), "--env", env, "--task", str(task), "--reward", reward, "--out", str(labelled)]
    )
    # a copy labelled from other play data (regenerated since) is refused, never reused or replaced
    check = functools.partial(check_labelled_copy, labelled, play_path, task, reward)
    steps.append(DataStep(f"play data labelled for task {task}", labelled, argv, cmd, check))
    return steps, labelled

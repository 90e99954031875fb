"""`expoft bench`: run a grid of methods x seeds as `expoft finetune` processes, then report.

Folder layout (``--out DIR``)::

    DIR/bench.json                 the bench command, its arguments, every run's exact command and
                                   resolved config, the data commands (written before anything runs)
    DIR/logs/                      output of the data commands
    DIR/runs/METHOD/seedS/         one `expoft finetune` run folder, plus bench_run.json (the
                                   runner's measurements: CPU and wall seconds of each attempt)
    DIR/runs/METHOD/seedS.log      the run's stdout and stderr (appended on every attempt)
    DIR/report/                    see `expoft.bench.report`

Resumable: a run with summary.json is finished and skipped; one with a checkpoint continues with
`expoft finetune --resume`; one killed before its first checkpoint starts again. One bench at a
time per folder (a lock file that the run processes hold too).
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import functools
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import tyro

from expoft.fileio import atomic_write, move_aside

if TYPE_CHECKING:  # the data package imports MuJoCo/OGBench: only where demos are made
    from expoft.bench.export import BenchExport
    from expoft.data.generate import DemosConfig
    from expoft.envs.ogbench_domains import Domain

DEFAULT_METHODS = ("expo", "expo-ft", "rlpd", "qc", "qc-fql", "fql", "dsrl", "residual", "bc")
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false"
"""Eigen's own multi-threading off (jax-ml/jax#743). (Benches before 2026-12 also passed
``intra_op_parallelism_threads=1``, which is a TensorFlow session option, not an XLA flag: XLA
ignored it, so their runs computed exactly as these do.) This does not make XLA:CPU single-threaded
(jax-ml/jax#1539): with jax 0.10 a run still computes on a pool of one thread per core (measured
on 2 cores: 2 pool threads at ~50% each, the main thread ~2%), so --jobs 2 puts 4 busy threads
on 2 cores. The bench therefore pins each of its --jobs runs to cores of its own (``pin_cores``,
``Bench.pin``)."""
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
TASKSET = shutil.which("taskset")


def pin_cores(jobs: int) -> list[tuple[int, ...]] | None:
    """The cores of each of ``jobs`` run slots: the CPUs this process may use, split into equal
    disjoint sets (a left-over CPU stays unused). None where there are fewer CPUs than jobs or
    the platform cannot pin (no ``taskset``, util-linux's, or no ``os.sched_getaffinity``).

    Why: unpinned, two runs on 2 cores are two XLA thread pools of 2 threads each on the same 2
    cores. Measured on this 2-core machine (2026-12-02, benchmarks/throughput.py --variant fast,
    two copies at once, two rounds): a critic step took 108-121 ms unpinned and 85-100 ms pinned
    (one copy alone, pinned to one core: 89 ms), the whole loop 0.125 against 0.160-0.166 env
    steps/s. A pinned run computes the same numbers: the tiny preset's metrics, pinned and not,
    were identical."""
    if TASKSET is None or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if jobs > len(cpus):
        return None
    per = len(cpus) // jobs
    return [tuple(cpus[i * per : (i + 1) * per]) for i in range(jobs)]


LOG_TAIL = 15
"""Lines of a failed run's log shown in the failure report."""
POLL_SECONDS = 0.2
EXPOFT_ARGV = (sys.executable, "-m", "expoft.cli")
"""How the runner starts `expoft` (this interpreter, so the runs use the same installation)."""


@dataclasses.dataclass(frozen=True)
class Protocol:
    name: str
    preset: str
    env: str
    overrides: dict
    """RunConfig fields set on every run (as `expoft finetune` flags), but on a method that fixes
    them (`expoft.train.methods.FIXED`)."""
    play_transitions: int | None = None
    """P2: play data of this size, labelled for the task, is the offline data."""
    offline_updates: int = 0
    """P2's offline phase: update calls on the offline data alone (offline RL) after the base's
    pretraining and before going online, for every method but those that fix it
    (`expoft.train.methods.FIXED`: rlpd, online-only by definition; bc, which does not learn; EXPO
    and its variants, which pretrain only the base offline)."""

    def describe(self) -> str:
        if self.play_transitions is None:
            data = "fine-tune from demos (noisy oracle demos generated for the task, base pretrained by imitation)"
        else:
            data = (
                f"offline-to-online from play data ({self.play_transitions:,} task-agnostic transitions labelled "
                f"for the task, offline pretraining of the base, then {self.offline_updates:,} offline RL update "
                "calls for the methods that have an offline RL phase: not rlpd, bc, or EXPO)"
            )
        budget = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in self.overrides.items())
        return f"{data}, then online; preset {self.preset}" + (f" with {budget}" if budget else "")


P2_REWARD = {"cube": "ogbench", "scene": "sparse", "puzzle": "sparse"}
"""P2's reward by domain family (BENCHMARKS.md: "cube-double, scene (sparse), puzzle-3x3
(sparse)", the published tables' settings): OGBench's partial-credit singletask reward on the cube
domains, the success reward on scene and puzzle (OGBench's sparse variants give -1 per step and 0
at success; expoft's gives 0 and 1: the same ordering of policies, with the episode ending at
success in both)."""

P2_OFFLINE_UPDATES = 500
"""Offline RL update calls of reduced P2 (each UTD 20 critic steps on offline batches)."""

PROTOCOLS = {
    # P1: the `p1` preset: 30 noisy demos, 20k imitation steps, 5000 online env steps.
    "p1": Protocol("p1", "p1", "cube-single", {}),
    # P2, reduced so that a grid finishes on a 2-core CPU: 100k play transitions, the p1
    # preset's 20k imitation steps, P2_OFFLINE_UPDATES offline RL update calls, 5000 online env
    # steps. With the old defaults (before 2026-12-05) P1 runs took 20-40 CPU minutes per 5000 env
    # steps; with the exact update at the published ratio plain EXPO takes about 12 CPU hours
    # (20 critic steps of ~0.45 s per env step, pinned), chunked methods a quarter to a half of that.
    "p2": Protocol(
        "p2",
        "p1",
        "cube-double",
        {"env_steps": 5_000, "eval_every": 1_000, "checkpoint_every": 1_000},
        100_000,
        P2_OFFLINE_UPDATES,
    ),  # fmt: skip
    # P2 at full size (--full): 1M play transitions, 1M imitation steps of the base, 1M offline
    # critic steps (50k update calls of UTD 20), 1M online env steps.
    "p2-full": Protocol(
        "p2",
        "default",
        "cube-double",
        {"pretrain_steps": 1_000_000, "env_steps": 1_000_000, "eval_every": 50_000, "checkpoint_every": 50_000},
        1_000_000,
        50_000,
    ),
}
TINY_PLAY_TRANSITIONS = 5_000
"""P2 play data with --preset tiny (unless --play-transitions)."""
TINY_OFFLINE_UPDATES = 5
"""P2 offline update calls with --preset tiny (unless --offline-updates)."""


@dataclasses.dataclass(frozen=True)
class Bench:
    """Compare methods side by side: every method x seed as its own `expoft finetune` process (up
    to --jobs at a time), then a report in --out/report/ (table.md, seeds.md, table.csv, learning_curves.png,
    configs/, commands.txt). Rerun the same command to continue: finished runs are skipped, killed
    ones resumed. `expoft bench report DIR` re-renders the report from the finished runs."""

    methods: str = ",".join(DEFAULT_METHODS)
    """Comma-separated method names (`expoft.train.methods`); they label the table's rows."""
    protocol: str = "p1"
    """p1: fine-tune from 30 generated noisy demos (preset demo). p2: offline-to-online from
    task-agnostic play data labelled for the task (reduced size; --full for 1M + 1M)."""
    env: str | None = None
    """Domain; default: cube-single (p1), cube-double (p2)."""
    task: int = 1
    """Singletask, 1..5."""
    seeds: int = 3
    """Seeds 0..N-1 of every method."""
    env_steps: int | None = None
    """Online environment steps per run; default: the protocol's (p1: the p1 preset's 5000;
    p2: 5000, --full 1M)."""
    preset: str | None = None
    """Start the runs from this preset instead of the protocol's (then the protocol's budget
    settings are not applied); `tiny` for a smoke run."""
    full: bool = False
    """p2 at full size: 1M play transitions, 1M offline pretraining steps, 1M online env steps."""
    play_transitions: int | None = None
    """p2: size of the play data; default 100k (--full 1M, --preset tiny 5000)."""
    offline_updates: int | None = None
    """p2: update calls of the offline phase (offline RL on the play data before going online; not
    for rlpd); default 500 (--full 50k, --preset tiny 5)."""
    finetune_args: str = ""
    """More `expoft finetune` flags for every run, as one string (e.g. "--eval-episodes 20")."""
    method_args: str = ""
    """More `expoft finetune` flags for single methods: their tuning, recorded in bench.json and the
    report. ``METHOD=FLAGS`` entries separated by ``;``, e.g. "expo-ft=--update-every 20
    --actor-steps 20; qc=--num-critics 2". They come after --finetune-args (and win over them)."""
    out: Path = Path("runs/bench")
    """Bench folder."""
    jobs: int = 2
    """Runs at a time (one process each)."""
    pin: bool = True
    """Give each of the --jobs runs cores of its own (CPU affinity; see ``pin_cores``): on 2 cores
    this made critic steps 12-30% faster (two rounds of two runs at once). Recorded per attempt in
    bench_run.json (``cores``); it does not change what a run computes. Off, or with more jobs than
    cores, runs are not pinned."""
    single_thread: bool = True
    """Limit every run's BLAS/OpenMP to one thread and turn off Eigen's multi-threading (XLA_FLAGS,
    OMP_NUM_THREADS, ...); XLA:CPU still uses a pool of one thread per core (see SINGLE_THREAD_XLA)."""
    overwrite: bool = False
    """If --out holds a bench with other arguments: start again, after moving the old bench
    (bench.json, runs/, logs/, report/) to --out/replaced-<time>/. Nothing is deleted."""
    report: bool = True
    """Render the report at the end."""
    eval_base: bool = True
    """Evaluate every run's base alone at every evaluation too, on the same reset seeds as the
    policy: the report's "policy − base" (what the critic-guided rule adds to its own base)."""
    argv: tyro.conf.Suppress[tuple[str, ...]] = ()
    """The command line as given (filled in by the CLI; recorded in bench.json)."""

    def run(self) -> None:
        run_bench(self)


@dataclasses.dataclass(frozen=True)
class BenchReport:
    """Re-render the table and plots of a bench folder from its finished runs."""

    bench_dir: tyro.conf.Positional[Path]
    """The bench folder (the --out of `expoft bench`)."""
    checkpoints: tuple[int, ...] = ()
    """Environment steps shown in table.md (default: up to 6 of the common evaluation steps)."""
    quiet: bool = False
    """Write the files only; print nothing."""

    def run(self) -> None:
        from expoft.bench.report import render_report

        render_report(self.bench_dir, self.checkpoints or None, echo=not self.quiet)


def parse_bench(argv: list[str]) -> Bench | BenchReport | BenchExport:
    """``expoft bench [run] ...``, ``expoft bench report DIR ...`` or ``expoft bench export DIR DEST``."""
    if argv and argv[0] == "report":
        return tyro.cli(BenchReport, args=argv[1:], prog="expoft bench report")
    if argv and argv[0] == "export":
        from expoft.bench.export import BenchExport

        return tyro.cli(BenchExport, args=argv[1:], prog="expoft bench export")
    if argv and argv[0] == "run":
        argv = argv[1:]
    args = tyro.cli(Bench, args=argv, prog="expoft bench")
    return dataclasses.replace(args, argv=tuple(argv))


# ---------------------------------------------------------------------------
# the plan


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


def _methods(spec: str) -> list[str]:
    from expoft.train.methods import METHODS

    names = [m.strip().lower() for m in spec.split(",") if m.strip()]
    if not names:
        raise ValueError("--methods is empty; name at least one method")
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))}; choose from {', '.join(METHODS)}")
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


def resolve_protocol(args: Bench) -> Protocol:
    if args.protocol not in ("p1", "p2"):
        raise ValueError(f"--protocol must be p1 or p2, got {args.protocol!r}")
    if args.full and args.protocol != "p2":
        raise ValueError("--full applies to protocol p2 only")
    proto = PROTOCOLS["p2-full" if args.full else args.protocol]
    if args.preset is not None and args.preset != proto.preset:
        # Another preset brings its own budget; only the data part of the protocol stays.
        proto = dataclasses.replace(proto, preset=args.preset, overrides={})
        if proto.play_transitions is not None and args.preset == "tiny":
            proto = dataclasses.replace(
                proto, play_transitions=TINY_PLAY_TRANSITIONS, offline_updates=TINY_OFFLINE_UPDATES
            )
    if args.env_steps is not None:
        proto = dataclasses.replace(proto, overrides={**proto.overrides, "env_steps": args.env_steps})
    if args.play_transitions is not None:
        if proto.play_transitions is None:
            raise ValueError("--play-transitions applies to protocol p2 only")
        proto = dataclasses.replace(proto, play_transitions=args.play_transitions)
    if args.offline_updates is not None:
        if proto.play_transitions is None:
            raise ValueError("--offline-updates applies to protocol p2 only")
        proto = dataclasses.replace(proto, offline_updates=args.offline_updates)
    return proto


def check_args(args: Bench) -> tuple[list[str], Protocol, dict]:
    """Validate; return (methods, protocol, the grid-defining arguments as recorded in bench.json)."""
    from expoft.envs.ogbench_domains import check_task, get_domain
    from expoft.train.config import preset

    methods = _methods(args.methods)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    if args.env_steps is not None and args.env_steps < 1:
        raise ValueError(f"--env-steps must be >= 1, got {args.env_steps}")
    if args.play_transitions is not None and args.play_transitions < 1:
        raise ValueError(f"--play-transitions must be >= 1, got {args.play_transitions}")
    if args.offline_updates is not None and args.offline_updates < 0:
        raise ValueError(f"--offline-updates must be >= 0, got {args.offline_updates}")
    proto = resolve_protocol(args)
    preset(proto.preset)  # unknown preset: a clear error
    domain = get_domain(args.env or proto.env)
    env = domain.name
    check_task(domain, args.task)
    proto = with_domain_reward(proto, domain)
    arguments = {
        "methods": methods,
        "protocol": args.protocol,
        "full": args.full,
        "env": env,
        "task": args.task,
        "seeds": args.seeds,
        "env_steps": args.env_steps,
        "preset": proto.preset,
        "play_transitions": proto.play_transitions,
        "finetune_args": args.finetune_args,
        "eval_base": args.eval_base,
    }
    if proto.play_transitions is not None:  # p2 only: the p1 benches made before it continue
        arguments["offline_updates"] = proto.offline_updates
        arguments["reward"] = proto.overrides["reward"]
    tuning = method_flags(args.method_args, methods)
    if tuning:  # absent when unused, so that benches started before the option continue as they were
        arguments["method_args"] = tuning
    return methods, proto, arguments


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _resolve_config(args: list[str]):
    """The RunConfig that `expoft finetune` makes of these arguments (parsed exactly as it does)."""
    from expoft.cli import Finetune, _with_preset

    try:
        return _with_preset(Finetune, args[1:]).config
    except SystemExit:
        raise ValueError(
            f"`expoft {shlex.join(args)}` is not a valid finetune command (see the message above)"
        ) from None


def plan(args: Bench, methods: list[str], proto: Protocol, env: str, dataset: Path | None, out: Path):
    """Every run (seed-major: all methods of seed 0 first, so that a partial bench compares them)."""
    from expoft.train.build import demos_config
    from expoft.train.methods import fixes
    from expoft.train.rundir import to_jsonable

    extra = shlex.split(args.finetune_args)
    tuning = method_flags(args.method_args, methods)
    settings = {**proto.overrides, **({"offline_updates": proto.offline_updates} if proto.offline_updates else {})}
    runs = []
    for seed in range(args.seeds):
        for method in methods:
            # A setting that defines the method (rlpd: no pretraining) wins over the protocol's.
            flags = [
                x for field, value in settings.items() if field not in fixes(method) for x in (_flag(field), str(value))
            ]
            run_dir = out / "runs" / method / f"seed{seed}"
            cmd = ["finetune", "--preset", proto.preset, "--method", method, "--seed", str(seed)]
            cmd += ["--env", env, "--task", str(args.task)]
            if dataset is not None:
                cmd += ["--dataset", str(dataset)]
            diagnostics = ["--eval-base"] if args.eval_base else []
            cmd += [*flags, *diagnostics, *extra, *tuning.get(method, []), "--out", str(run_dir), "--no-progress"]
            resolved = _resolve_config(cmd)
            demos = demos_config(resolved) if resolved.dataset is None else None
            log = run_dir.parent / f"seed{seed}.log"
            runs.append(PlannedRun(method, seed, run_dir, log, cmd, to_jsonable(resolved), demos))
    return runs


def _expoft(args: list[str]) -> tuple[list[str], str]:
    """(argv to execute, the command as people type it)."""
    return [*EXPOFT_ARGV, *args], shlex.join(["expoft", *args])


def demo_steps(demo_configs, jobs: int) -> list[DataStep]:
    """`expoft data demos` for every demo set the runs use, so that parallel runs never generate
    the same cache file at once."""
    from expoft.data.generate import default_data_dir

    steps = []
    for demos in sorted(demo_configs, key=lambda d: (d.seed, d.cache_name())):
        argv, cmd = _expoft(
            ["data", "demos", "--env", demos.env, "--task", str(demos.task), "--episodes", str(demos.episodes),
             "--seed", str(demos.seed), "--noise", str(demos.noise), "--no-progress", "--workers", str(jobs)]
        )  # fmt: skip
        steps.append(DataStep(f"demos seed {demos.seed}", default_data_dir() / f"{demos.cache_name()}.npz", argv, cmd))
    return steps


def with_domain_reward(proto: Protocol, domain: Domain) -> Protocol:
    """A play-data protocol (P2) with the reward of ``domain``'s family (:data:`P2_REWARD`);
    other protocols as they are (the success reward)."""
    if proto.play_transitions is None:
        return proto
    return dataclasses.replace(proto, overrides={**proto.overrides, "reward": P2_REWARD[domain.family]})


def play_steps(proto: Protocol, env: str, task: int, jobs: int) -> tuple[list[DataStep], Path | None]:
    """p2: the play data and its copy labelled for the task, the runs' `dataset`."""
    from expoft.data.dataset import check_labelled_copy, labelled_path
    from expoft.data.generate import PlayConfig, default_data_dir

    if proto.play_transitions is None:
        return [], None
    folder = default_data_dir()
    play = PlayConfig(env=env, transitions=proto.play_transitions, seed=0)
    play_path = folder / f"{play.cache_name()}.npz"
    argv, cmd = _expoft(
        ["data", "play", "--env", env, "--transitions", str(play.transitions), "--seed", "0", "--no-progress",
         "--workers", str(jobs)]
    )  # fmt: skip
    steps = [DataStep("play data", play_path, argv, cmd)]
    # Play data has no rewards until it is labelled for a task; the runs get a copy labelled once
    # (rewards, terminals, episode success for the task, with the protocol's reward) rather than
    # each labelling 100k+ transitions itself.
    reward = proto.overrides.get("reward", "sparse")
    labelled = labelled_path(play_path, task, reward)
    argv, cmd = _expoft(
        ["data", "label", str(play_path), "--env", env, "--task", str(task), "--reward", reward, "--out", str(labelled)]
    )
    # a copy labelled from other play data (regenerated since) is refused, never reused or replaced
    check = functools.partial(check_labelled_copy, labelled, play_path, task, reward)
    steps.append(DataStep(f"play data labelled for task {task}", labelled, argv, cmd, check))
    return steps, labelled


def child_env(single_thread: bool) -> tuple[dict, dict]:
    """(environment of every command, the variables the bench set in it)."""
    env = dict(os.environ)
    changes = {"PYTHONUNBUFFERED": "1"}
    if single_thread:
        flags = env.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            changes["XLA_FLAGS"] = f"{flags} {SINGLE_THREAD_XLA}".strip()
        for name in THREAD_VARS:
            if name not in env:
                changes[name] = "1"
    env.update(changes)
    return env, changes


# ---------------------------------------------------------------------------
# the bench folder


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def _lock(out: Path) -> int:
    """Hold DIR/.bench.lock (released when this process and every run it started have ended)."""
    fd = os.open(out / ".bench.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FileExistsError(
            f"another `expoft bench` is working in {out} (or runs it started are still going); wait for it, "
            "or end it and rerun this command to continue"
        ) from None
    return fd


BENCH_ENTRIES = ("bench.json", "runs", "logs", "report")


def existing_bench(folder: Path, fix: str) -> dict | None:
    """The bench.json of the bench in ``folder``; None when the folder is missing or empty. A
    non-empty folder without bench.json, or a bench.json that is not one, is an error that ends
    with ``fix`` (what the caller's user should do)."""
    if not folder.exists():
        return None
    path = folder / "bench.json"
    if not path.exists():
        others = sorted(p.name for p in folder.iterdir() if p.name != ".bench.lock")
        if others:
            raise FileExistsError(f"{folder} is not empty and holds no bench.json ({', '.join(others[:5])}); {fix}")
        return None
    try:
        bench = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); move it away, or {fix}") from None
    if not isinstance(bench, dict) or not isinstance(bench.get("runs"), list) or "arguments" not in bench:
        raise ValueError(f"{path} lacks 'arguments' or 'runs', so `expoft bench` did not write it; {fix}")
    return bench


def prepare_folder(out: Path, arguments: dict, overwrite: bool, act: bool = True) -> dict | None:
    """Check --out; return the earlier bench.json when continuing that bench. With ``act``, an
    earlier bench with other arguments is moved aside (--overwrite); without, only errors."""
    old = existing_bench(out, "choose a new or empty --out")
    if old is None:
        return None
    before = old.get("arguments", {})
    if before == arguments:
        if overwrite and act:
            print(f"{out} holds a bench with the same arguments: continuing it (--overwrite changes nothing here)")
        return old
    diffs = "; ".join(
        f"{key}: {before.get(key)!r} -> {arguments.get(key)!r}"
        for key in sorted(set(before) | set(arguments))
        if before.get(key) != arguments.get(key)
    )
    if not overwrite:
        raise FileExistsError(
            f"{out} holds a bench with other arguments ({diffs}). Rerun its own command to continue it "
            f"({old.get('command', '?')}), choose another --out, or pass --overwrite to start again "
            f"(the old bench is moved to {out}/replaced-<time>/, nothing is deleted)"
        )
    if not act:
        return None
    dest = move_aside(out, BENCH_ENTRIES)
    print(f"--overwrite: the earlier bench ({diffs}) was moved to {dest}/")
    return None


def run_state(run_dir: Path) -> str:
    """finished, resume (a checkpoint, or one of a stage before RL, to continue from), restart
    (killed before its first checkpoint) or start."""
    if (run_dir / "summary.json").exists():
        return "finished"
    if not (run_dir / "config.json").exists():
        return "start"
    checkpoints = run_dir / "checkpoints"
    # state_<step>.json: online; <stage>_state.json: pretraining or the offline phase (read by path:
    # this process does not import JAX)
    if any(checkpoints.glob("state_*.json")) or any(checkpoints.glob("*_state.json")):
        return "resume"
    return "restart"


def _tail(path: Path, lines: int = LOG_TAIL) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---------------------------------------------------------------------------
# running


@dataclasses.dataclass
class Started:
    run: PlannedRun
    pid: int
    mode: str
    command: str
    started: str
    t0: float
    log: BinaryIO
    cores: tuple[int, ...] | None = None


class Scheduler:
    """Up to ``jobs`` processes at a time; each one's exact CPU time from ``os.wait4``."""

    def __init__(self, jobs: int, env: dict, lock_fd: int, slots: list[tuple[int, ...]] | None = None):
        self.jobs, self.env, self.lock_fd = jobs, env, lock_fd
        self.running: dict[int, Started] = {}
        self.free_slots = list(slots or [])

    def start(self, run: PlannedRun, mode: str) -> None:
        import subprocess

        if mode == "resume":
            args = ["finetune", "--resume", str(run.run_dir), "--no-progress"]
        elif mode == "restart":
            args = [*run.args, "--overwrite"]
        else:
            args = run.args
        argv, command = _expoft(args)
        run.log.parent.mkdir(parents=True, exist_ok=True)
        log = open(run.log, "ab")
        log.write(f"\n===== {_stamp()} {mode}: {command}\n".encode())
        log.flush()
        cores = self.free_slots.pop(0) if self.free_slots else None
        if cores is not None:
            assert TASKSET is not None  # pin_cores gives no slots without it
            # taskset sets the affinity and execs the run (same pid, so wait4 still measures the run);
            # set before the run starts, every thread it starts inherits it. (No preexec_fn: Python
            # code between fork and exec can deadlock in a process with threads, as this one has.)
            argv = [TASKSET, "-c", ",".join(map(str, cores)), *argv]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
            pass_fds=(self.lock_fd,),  # the run holds the bench lock until it ends, even if the bench dies
        )  # fmt: skip
        proc.returncode = 0  # reaped by os.wait4 below, never by Popen
        self.running[proc.pid] = Started(run, proc.pid, mode, command, _stamp(), time.perf_counter(), log, cores)

    def reap(self, block: bool = False) -> list[tuple[Started, dict]]:
        """Finished processes: (what was started, the attempt record)."""
        done = []
        for pid, item in list(self.running.items()):
            wpid, status, usage = os.wait4(pid, 0 if block else os.WNOHANG)
            if wpid == 0:
                continue
            del self.running[pid]
            item.log.close()
            if item.cores is not None:
                self.free_slots.append(item.cores)
            attempt = {
                "mode": item.mode,
                "command": item.command,
                "started": item.started,
                "ended": _stamp(),
                "returncode": os.waitstatus_to_exitcode(status),
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                "user_seconds": round(usage.ru_utime, 2),
                "system_seconds": round(usage.ru_stime, 2),
                "wall_seconds": round(time.perf_counter() - item.t0, 2),
                "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
            }
            if item.cores is not None:
                attempt["cores"] = list(item.cores)
            done.append((item, attempt))
        return done

    def stop_all(self) -> list[tuple[Started, dict]]:
        import signal

        for pid in self.running:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return self.reap(block=True)


def record_attempt(run: PlannedRun, attempt: dict, stopped: bool = False) -> dict:
    """Append the attempt to RUN_DIR/bench_run.json; return the record. ``stopped``: the bench
    ended the run (interrupted), which is not a failure of the run."""
    path = run.run_dir / "bench_run.json"
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        record = {"method": run.method, "seed": run.seed, "attempts": []}
    if stopped:
        attempt = {**attempt, "stopped_by_bench": True}
    record["attempts"].append(attempt)
    record["cpu_seconds"] = round(sum(a["cpu_seconds"] for a in record["attempts"]), 2)
    record["wall_seconds"] = round(sum(a["wall_seconds"] for a in record["attempts"]), 2)
    finished = (run.run_dir / "summary.json").exists()
    record["status"] = "finished" if finished and attempt["returncode"] == 0 else "stopped" if stopped else "failed"
    if record["status"] == "failed":
        record["log_tail"] = _tail(run.log)
    else:
        record.pop("log_tail", None)
    _write_json(path, record)
    return record


def run_data_steps(steps: list[DataStep], env: dict, out: Path) -> None:
    import subprocess

    for i, step in enumerate(steps):
        if step.path.exists():
            if step.check is not None:
                step.check()
            print(f"data: {step.what}: reusing {step.path}", flush=True)
            continue
        log = out / "logs" / f"data-{i}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"data: {step.what}: {step.command}", flush=True)
        t0 = time.perf_counter()
        with open(log, "ab") as f:
            f.write(f"\n===== {_stamp()} {step.command}\n".encode())
            f.flush()
            code = subprocess.call(step.argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env)
        if code != 0 or not step.path.exists():
            raise ValueError(
                f"making the {step.what} failed (exit {code}); no run was started. Last lines of {log}:\n{_tail(log)}"
            )
        print(f"data: {step.what}: wrote {step.path} ({time.perf_counter() - t0:.0f} s)", flush=True)


def run_bench(args: Bench) -> None:
    methods, proto, arguments = check_args(args)
    out = args.out.resolve()
    env_name = arguments["env"]
    # Everything is planned (and every run's flags parsed) before the folder is touched.
    steps, dataset = play_steps(proto, env_name, args.task, args.jobs)
    runs = plan(args, methods, proto, env_name, dataset, out)
    demos = {r.demos for r in runs if r.demos is not None}
    steps = demo_steps(demos, args.jobs) + steps
    env, changes = child_env(args.single_thread)
    slots = pin_cores(args.jobs) if args.pin else None
    command = shlex.join(["expoft", "bench", *args.argv])

    prepare_folder(out, arguments, args.overwrite, act=False)
    out.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock(out)
    try:
        previous = prepare_folder(out, arguments, args.overwrite, act=True)
        bench = {
            "command": command,
            "argv": list(args.argv),
            "cwd": os.getcwd(),
            "arguments": arguments,
            "protocol": {
                "name": proto.name,
                "description": proto.describe(),
                "preset": proto.preset,
                "overrides": proto.overrides,
                "play_transitions": proto.play_transitions,
                "offline_updates": proto.offline_updates,
            },
            "jobs": args.jobs,
            "pinned_cores": None if slots is None else [list(c) for c in slots],
            "executable": shlex.join(EXPOFT_ARGV),
            "environment": changes,
            "created": (previous or {}).get("created", _stamp()),
            "invocations": [*(previous or {}).get("invocations", []), {"command": command, "time": _stamp()}],
            "data": [{"what": s.what, "path": str(s.path), "command": s.command} for s in steps],
            "runs": [
                {
                    "method": r.method,
                    "seed": r.seed,
                    "run_dir": str(r.run_dir.relative_to(out)),
                    "log": str(r.log.relative_to(out)),
                    "command": _expoft(r.args)[1],
                    "config": r.config,
                }
                for r in runs
            ],
        }
        _write_json(out / "bench.json", bench)
        print(f"bench: {len(methods)} methods x {args.seeds} seeds = {len(runs)} runs, {args.jobs} at a time; "
              f"protocol {proto.name}: {proto.describe()}; {out}/bench.json", flush=True)  # fmt: skip
        failures = execute(runs, steps, env, out, args.jobs, lock_fd, slots)
    finally:
        os.close(lock_fd)
    if args.report:
        from expoft.bench.report import render_report

        print()
        render_report(out)
    if failures:
        print(f"\n{len(failures)} of {len(runs)} runs failed:", file=sys.stderr)
        for run, attempt in failures:
            print(f"\n--- {run.label}: exit {attempt['returncode']}; log {run.log}; last lines:", file=sys.stderr)
            print(_tail(run.log), file=sys.stderr)
        raise ValueError(
            f"{len(failures)} of {len(runs)} runs failed (see above); the others finished. Rerun the same "
            "command to retry the failed ones (finished runs are skipped)"
        )


def execute(
    runs: list[PlannedRun],
    steps: list[DataStep],
    env: dict,
    out: Path,
    jobs: int,
    lock_fd: int,
    slots: list[tuple[int, ...]] | None = None,
):
    """Make the data, then run every unfinished run; return the failures (run, attempt)."""
    from expoft.train.rundir import same_config

    todo: collections.deque[tuple[PlannedRun, str]] = collections.deque()
    for run in runs:
        state = run_state(run.run_dir)
        if state == "finished":
            print(f"skip {run.label}: finished ({run.run_dir})", flush=True)
            continue
        existing = run.run_dir / "config.json"
        if state in ("resume", "restart") and not same_config(json.loads(existing.read_text()), run.config):
            print(f"warning: {existing} differs from the config this bench plans for {run.label} (changed code or "
                  "defaults?); resuming with the run's own config", flush=True)  # fmt: skip
        todo.append((run, state))
    if not todo:
        print("all runs have finished", flush=True)
        return []
    run_data_steps(steps, env, out)
    scheduler = Scheduler(jobs, env, lock_fd, slots)
    failures, total, done_count = [], len(todo), 0
    restore = _stop_on_signals()
    try:
        while todo or scheduler.running:
            while todo and len(scheduler.running) < jobs:
                run, state = todo.popleft()
                print(f"[{done_count + len(scheduler.running) + 1}/{total}] {state} {run.label} (log {run.log})",
                      flush=True)  # fmt: skip
                scheduler.start(run, state)
            finished = scheduler.reap()
            if not finished:
                time.sleep(POLL_SECONDS)
            for item, attempt in finished:
                done_count += 1
                record = record_attempt(item.run, attempt)
                head = f"[{done_count}/{total}] {item.run.label}"
                times = f"{attempt['cpu_seconds'] / 60:.1f} CPU min, {attempt['wall_seconds'] / 60:.1f} wall min"
                if record["status"] == "finished":
                    summary = json.loads((item.run.run_dir / "summary.json").read_text())
                    print(f"{head}: done, final success {summary.get('final_success')}, {times}", flush=True)
                else:
                    print(f"{head}: FAILED (exit {attempt['returncode']}), {times}; see {item.run.log}", flush=True)
                    failures.append((item.run, attempt))
    except (KeyboardInterrupt, Stopped) as e:
        for item, attempt in scheduler.stop_all():
            record_attempt(item.run, attempt, stopped=True)
        print(f"\n{e or 'interrupted'}: the runs were stopped (finished ones are kept); rerun the same command "
              "to continue", file=sys.stderr)  # fmt: skip
        raise SystemExit(130 if isinstance(e, KeyboardInterrupt) else 143) from None
    finally:
        restore()
    return failures


class Stopped(Exception):
    """The bench received SIGTERM or SIGHUP."""


def _stop_on_signals():
    """SIGTERM and SIGHUP end the bench as Ctrl-C does: its runs are stopped and recorded, not
    left running on their own. Returns a function that restores the previous handlers."""
    import signal

    seen = []

    def stop(signum, frame):
        if not seen:  # once: a second signal must not break off the cleanup
            seen.append(signum)
            raise Stopped(f"stopped by {signal.Signals(signum).name}")

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread: leave the signals alone
            pass
    return lambda: [signal.signal(sig, handler) for sig, handler in previous.items()]

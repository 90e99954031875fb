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
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import tyro

from expoft.bench.folder import lock_folder, log_tail, prepare_folder, record_attempt, run_state, stamp
from expoft.bench.plan import (
    EXPOFT_ARGV,
    DataStep,
    PlannedRun,
    demo_steps,
    expoft_command,
    method_flags,
    parse_methods,
    plan,
    play_steps,
)
from expoft.bench.protocols import (
    PROTOCOLS,
    TINY_OFFLINE_UPDATES,
    TINY_PLAY_TRANSITIONS,
    Protocol,
    with_domain_reward,
)
from expoft.bench.scheduler import (
    POLL_SECONDS,
    Scheduler,
    Stopped,
    child_env,
    pin_cores,
    run_data_steps,
    stop_on_signals,
)
from expoft.fileio import write_json
from expoft.train.methods import COMPARED

if TYPE_CHECKING:  # the data package imports MuJoCo/OGBench: only where demos are made
    from expoft.bench.export import BenchExport


@dataclasses.dataclass(frozen=True)
class Bench:
    """Compare methods side by side: every method x seed as its own `expoft finetune` process (up
    to --jobs at a time), then a report in --out/report/ (table.md, seeds.md, table.csv, learning_curves.png,
    configs/, commands.txt). Rerun the same command to continue: finished runs are skipped, killed
    ones resumed. `expoft bench report DIR` re-renders the report from the finished runs."""

    methods: str = ",".join(COMPARED)
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
    only: str = ""
    """Run only these runs of the grid this time: comma-separated METHOD or METHOD:SEED (e.g.
    "bc,expo:0"). The grid stays the same (bench.json plans every run; a later call without --only
    continues the rest): for work that must fit a session, the cheap runs or one long one first."""
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


def check_args(args: Bench) -> tuple[list[str], Protocol, dict]:
    """Validate; return (methods, protocol, the grid-defining arguments as recorded in bench.json)."""
    from expoft.envs.ogbench_domains import check_task, get_domain
    from expoft.train.config import preset

    methods = parse_methods(args.methods)
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


def select_runs(runs: list[PlannedRun], only: str, methods: list[str], seeds: int) -> list[PlannedRun]:
    """The runs ``--only`` names (all of them without it), in the plan's order."""
    if not only.strip():
        return runs
    wanted: set[tuple[str, int | None]] = set()
    for entry in (e.strip() for e in only.split(",")):
        method, colon, seed_text = entry.partition(":")
        if method not in methods:
            known = ", ".join(methods)
            raise ValueError(f"--only: {entry!r} names method {method!r}, not one of this bench's: {known}")
        if colon and not (seed_text.isdigit() and int(seed_text) < seeds):
            raise ValueError(f"--only: {entry!r}: the seed must be one of 0..{seeds - 1} (METHOD or METHOD:SEED)")
        wanted.add((method, int(seed_text) if colon else None))
    return [r for r in runs if (r.method, r.seed) in wanted or (r.method, None) in wanted]


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


def run_bench(args: Bench) -> None:
    methods, proto, arguments = check_args(args)
    out = args.out.resolve()
    env_name = arguments["env"]
    # Everything is planned (and every run's flags parsed) before the folder is touched.
    steps, dataset = play_steps(proto, env_name, args.task, args.jobs)
    runs = plan(args, methods, proto, env_name, dataset, out)
    chosen = select_runs(runs, args.only, methods, args.seeds)
    demos = {r.demos for r in runs if r.demos is not None}
    steps = demo_steps(demos, args.jobs) + steps
    env, changes = child_env(args.single_thread)
    slots = pin_cores(args.jobs) if args.pin else None
    command = shlex.join(["expoft", "bench", *args.argv])

    planned = [
        {
            "method": r.method,
            "seed": r.seed,
            "run_dir": str(r.run_dir.relative_to(out)),
            "log": str(r.log.relative_to(out)),
            "command": expoft_command(r.args)[1],
            "config": r.config,
        }
        for r in runs
    ]
    prepare_folder(out, arguments, args.overwrite, act=False, runs=planned)
    out.mkdir(parents=True, exist_ok=True)
    lock_fd = lock_folder(out)
    try:
        previous = prepare_folder(out, arguments, args.overwrite, act=True, runs=planned)
        earlier = (previous or {}).get("invocations", [])
        # A rerun with nothing left to do (a queue restarting its finished grids) is not recorded:
        # the invocations say which commands made the runs.
        idle = previous is not None and all(run_state(r.run_dir) == "finished" for r in chosen)
        invocations = earlier if idle else [*earlier, {"command": command, "time": stamp()}]
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
            "created": (previous or {}).get("created", stamp()),
            "invocations": invocations,
            "data": [{"what": s.what, "path": str(s.path), "command": s.command} for s in steps],
            "runs": planned,
        }
        write_json(out / "bench.json", bench)
        print(f"bench: {len(methods)} methods x {args.seeds} seeds = {len(runs)} runs, {args.jobs} at a time; "
              f"protocol {proto.name}: {proto.describe()}; {out}/bench.json", flush=True)  # fmt: skip
        if len(chosen) < len(runs):
            print(f"--only {args.only}: {len(chosen)} of the {len(runs)} runs this time: "
                  f"{', '.join(r.label for r in chosen)}", flush=True)  # fmt: skip
        failures = execute(chosen, steps, env, out, args.jobs, lock_fd, slots)
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
            print(log_tail(run.log), file=sys.stderr)
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
        existing = run.run_dir / "config.json"
        # a finished run copied in from another bench (the same command in another grid) is checked too
        differs = existing.exists() and not same_config(json.loads(existing.read_text()), run.config)
        if state == "finished":
            print(f"skip {run.label}: finished ({run.run_dir})", flush=True)
            if differs:
                print(f"warning: {existing} differs from the config this bench plans for {run.label}: its result "
                      "is not this bench's run", flush=True)  # fmt: skip
            continue
        if differs:
            print(f"warning: {existing} differs from the config this bench plans for {run.label} (changed code or "
                  "defaults?); resuming with the run's own config", flush=True)  # fmt: skip
        todo.append((run, state))
    if not todo:
        print("all runs have finished", flush=True)
        return []
    run_data_steps(steps, env, out)
    scheduler = Scheduler(jobs, env, lock_fd, slots)
    failures, total, done_count = [], len(todo), 0
    restore = stop_on_signals()
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

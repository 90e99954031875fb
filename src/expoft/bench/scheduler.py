"""Runs processes side by side: each run pinned to cores of its own with one BLAS thread, its
output to its log, stopped and recorded together on Ctrl-C, SIGTERM or SIGHUP; the data commands
before them."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from expoft.bench.folder import log_tail, stamp
from expoft.bench.plan import DataStep, PlannedRun, expoft_command

if TYPE_CHECKING:  # the data package imports MuJoCo/OGBench: only where demos are made
    pass


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


POLL_SECONDS = 0.2


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
        argv, command = expoft_command(args)
        run.log.parent.mkdir(parents=True, exist_ok=True)
        log = open(run.log, "ab")
        log.write(f"\n===== {stamp()} {mode}: {command}\n".encode())
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
        self.running[proc.pid] = Started(run, proc.pid, mode, command, stamp(), time.perf_counter(), log, cores)

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
                "ended": stamp(),
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


class Stopped(Exception):
    """The bench received SIGTERM or SIGHUP."""


def stop_on_signals():
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
            f.write(f"\n===== {stamp()} {step.command}\n".encode())
            f.flush()
            code = subprocess.call(step.argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env)
        if code != 0 or not step.path.exists():
            raise ValueError(
                f"making the {step.what} failed (exit {code}); no run was started. "
                f"Last lines of {log}:\n{log_tail(log)}"
            )
        print(f"data: {step.what}: wrote {step.path} ({time.perf_counter() - t0:.0f} s)", flush=True)

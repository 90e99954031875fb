"""benchmarks/learn_queue.sh: a lane on a fresh machine starts each grid from its export in git
(finished runs are not run again), shares finished expo-ft runs with the learn grid, and passes a
lane item's runs to `expoft bench --only`. The bench itself is replaced by `echo` (EXPOFT)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ROOT / "benchmarks/results/cache-p1-cube-single-cached"
needs_taskset = pytest.mark.skipif(
    shutil.which("taskset") is None, reason="the queue pins lanes with taskset (util-linux)"
)


def run_lane(runs_dir: Path, core: str, *items: str) -> subprocess.CompletedProcess:
    """One lane of the queue on ``runs_dir``, with `echo` in place of expoft (its commands printed)."""
    env = {**os.environ, "RUNS_DIR": str(runs_dir), "EXPOFT": "echo"}
    lane = ["bash", "benchmarks/learn_queue.sh", "lane", core, *items]
    return subprocess.run(lane, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@needs_taskset
def test_a_lane_on_a_fresh_machine_starts_from_the_exports(tmp_path):
    finished = sorted(p.parent.name for p in EXPORT.glob("runs/expo-ft/seed*/summary.json"))
    assert finished, f"{EXPORT} holds no finished run to start from"
    items = ("cache-p1-cube-single-cached", "learn-p1-cube-single@bc")
    done = run_lane(tmp_path, "0", *items)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"cache-p1-cube-single-cached: not in {tmp_path}; started from its export" in out
    for seed in finished:  # the export's finished runs, as they are in git
        run = tmp_path / "cache-p1-cube-single-cached/runs/expo-ft" / seed
        assert json.loads((run / "summary.json").read_text()) == json.loads(
            (EXPORT / "runs/expo-ft" / seed / "summary.json").read_text()
        )
        # in the learn grid too: from the learn grid's own export where it has one, else from the cache grid
        assert (tmp_path / "learn-p1-cube-single/runs/expo-ft" / seed / "summary.json").exists()
    benches = [line for line in out.splitlines() if line.startswith("bench --methods")]
    assert len(benches) == 2
    assert "--only" not in benches[0] and "--out " + str(tmp_path / "cache-p1-cube-single-cached") in benches[0]
    assert benches[1].endswith("--only bc") and "--methods expo,expo-ft,qc,bc" in benches[1]

    # again: the folders are there now and are not replaced by the export
    marker = tmp_path / "cache-p1-cube-single-cached/runs/expo-ft/seed9"
    marker.mkdir()
    again = run_lane(tmp_path, "0", *items)
    assert again.returncode == 0 and "started from its export" not in again.stdout and marker.exists()


@needs_taskset
def test_a_learn_grid_gets_the_finished_expo_ft_runs_it_lacks(tmp_path):
    """A learn grid already in RUNS_DIR (not replaced by its export) but without expo-ft runs gets
    the cache grid's finished ones copied in, logs included, and a run it has is not replaced."""
    finished = sorted(p.parent.name for p in EXPORT.glob("runs/expo-ft/seed*/summary.json"))
    assert len(finished) >= 2, f"{EXPORT} holds fewer than 2 finished runs"
    learn = tmp_path / "learn-p1-cube-single"
    own = learn / "runs/expo-ft" / finished[0]
    own.mkdir(parents=True)
    (own / "mine").write_text("a run of the learn grid's own")
    done = run_lane(tmp_path, "0", "learn-p1-cube-single@bc")
    assert done.returncode == 0, done.stderr
    assert "learn-p1-cube-single: not in" not in done.stdout  # it was there: not from its export
    assert (own / "mine").exists() and not (own / "summary.json").exists()
    for seed in finished[1:]:
        assert f"copied cache-p1-cube-single-cached/runs/expo-ft/{seed} into learn-p1-cube-single" in done.stdout
        copied = learn / "runs/expo-ft" / seed
        assert (copied / "summary.json").read_bytes() == (EXPORT / "runs/expo-ft" / seed / "summary.json").read_bytes()
        if (EXPORT / f"runs/expo-ft/{seed}.log").exists():
            assert (learn / f"runs/expo-ft/{seed}.log").exists()
    assert not list(learn.glob("runs/expo-ft/*.partial"))


@needs_taskset
def test_a_lane_on_both_cores_lets_the_bench_pin_two_runs(tmp_path):
    """The BOTH phase: its items run as one bench of two jobs that pins each run itself (no taskset
    around it, no --no-pin), with the item's runs passed to --only; a lane of one core runs one
    single-threaded job, unpinned by the bench (the lane's taskset pins it)."""
    item = "cache-p1-cube-double-exact@expo-ft:0,expo-ft:1"
    both = run_lane(tmp_path, "both", item)
    assert both.returncode == 0, both.stderr
    (bench,) = [line for line in both.stdout.splitlines() if line.startswith("bench --methods")]
    assert "--jobs 2" in bench and "--no-pin" not in bench and bench.endswith("--only expo-ft:0,expo-ft:1")
    assert "lane of core both: " + item in both.stdout
    one = run_lane(tmp_path, "1", item)
    (bench,) = [line for line in one.stdout.splitlines() if line.startswith("bench --methods")]
    assert "--jobs 1 --no-pin --single-thread" in bench


@needs_taskset
def test_a_wide_lane_runs_one_run_on_every_core(tmp_path):
    """The WIDE phase (a run longer than a session on one core): one job, pinned neither by the lane
    nor by the bench, so XLA's pool computes it on every core; a lane of one core is pinned to it."""
    fake = tmp_path / "fake-expoft"  # prints the CPUs it may run on, then its arguments
    fake.write_text('#!/usr/bin/env bash\ngrep Cpus_allowed_list /proc/self/status\necho "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "RUNS_DIR": str(tmp_path / "runs"), "EXPOFT": str(fake)}

    def lane(core: str) -> tuple[str, str]:
        done = subprocess.run(["bash", "benchmarks/learn_queue.sh", "lane", core, "learn-p2-scene@qc:0"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        (bench,) = [line for line in lines if line.startswith("bench --methods")]
        return lines[lines.index(bench) - 1].split(":")[1].strip(), bench

    every = Path("/proc/self/status").read_text().split("Cpus_allowed_list:")[1].split()[0]
    cpus, bench = lane("wide")
    assert cpus == every and "--jobs 1 --no-pin --single-thread" in bench and bench.endswith("--only qc:0")
    cpus, bench = lane("0")
    assert cpus == "0" and "--jobs 1 --no-pin" in bench


def test_pause_freezes_the_runs_of_its_runs_dir_only_and_cont_lets_them_go_on(tmp_path):
    """`pause` sends SIGSTOP to the runs of RUNS_DIR (fresh: `finetune --out RUN`, resumed:
    `finetune --resume RUN`), not to a run of another folder; `cont` sends SIGCONT."""

    def fake_run(*args: str) -> subprocess.Popen:  # a command line like a run's; `; :` keeps bash from exec'ing sleep
        proc = subprocess.Popen(["bash", "-c", "sleep 60; :", "python", "-m", "expoft.cli", "finetune", *args])
        for _ in range(500):  # until it has exec'd: before, its command line is still this process's
            if b"expoft.cli" in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
                return proc
            time.sleep(0.01)
        raise AssertionError("the stand-in run did not start")

    def state(proc: subprocess.Popen) -> str:
        return Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

    def settled(procs, stopped: bool) -> list[bool]:
        """Whether each is stopped (T), once a signal sent has taken effect: a process stops when it
        next runs, a moment after the signal on a busy machine (it reads 'R' until then)."""
        for _ in range(300):
            if all((state(p) == "T") == stopped for p in procs):
                break
            time.sleep(0.01)
        return [state(p) == "T" for p in procs]

    def queue(command: str) -> str:
        env = {**os.environ, "RUNS_DIR": str(tmp_path / "runs")}
        done = subprocess.run(["bash", "benchmarks/learn_queue.sh", command], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    fresh = fake_run("--preset", "p1", "--out", str(tmp_path / "runs/g/runs/expo-ft/seed0"), "--no-progress")
    resumed = fake_run("--resume", str(tmp_path / "runs/g/runs/expo-ft/seed1"), "--no-progress")
    other = fake_run("--out", str(tmp_path / "elsewhere/seed0"))
    try:
        assert "sent SIGSTOP" in queue("pause")
        assert settled((fresh, resumed), stopped=True) == [True, True] and state(other) != "T"
        assert "sent SIGCONT" in queue("cont")
        assert settled((fresh, resumed), stopped=False) == [False, False]
    finally:
        for p in (fresh, resumed, other):
            p.kill()
            p.wait()
    assert "no run of" in queue("pause")


def test_stop_waits_for_the_lanes_and_start_refuses_a_queue_still_running(tmp_path):
    """A stopped queue's lanes go on for a moment (exporting what finished) after their benches end:
    `stop` returns only once the queue has exited, and `start` refuses while it runs, so that old
    lanes never carry on beside new ones. Then it writes every run's standing into the results (in
    git): a run in flight is otherwise only in RUNS_DIR, which the next machine may not have."""
    runs = tmp_path / "runs"
    in_flight = runs / "learn-p2-scene/runs/qc/seed0"
    in_flight.mkdir(parents=True)
    (in_flight / "config.json").write_text("{}")
    (in_flight / "metrics.jsonl").write_text(
        '{"env_step": 0, "eval/success": 0.72, "eval_base/success": 0.08}\n{"env_step": 1004}\n'
    )
    offline = runs / "learn-p2-scene/runs/qc/seed1"  # still in P2's offline phase (hours, no env step)
    offline.mkdir(parents=True)
    (offline / "config.json").write_text('{"offline_updates": 500}')
    (offline / "metrics.jsonl").write_text(
        '{"phase": "pretrain"}\n{"phase": "offline", "env_step": 0, "offline/update_calls": 175}\n'
    )
    # stands in for the queue process and its lanes; like the real one (started by `nohup ... &`
    # from a shell that has exited) not a child of this process, so nothing here must reap it
    pid = int(subprocess.run(["bash", "-c", "sleep 3 > /dev/null 2>&1 & echo $!"], capture_output=True,
                             text=True, check=True).stdout)  # fmt: skip
    (runs / "queue.pid").write_text(f"{pid}\n")
    results = tmp_path / "results"
    results.mkdir()
    env = {**os.environ, "RUNS_DIR": str(runs), "RESULTS_DIR": str(results)}

    def alive() -> bool:
        stat = Path(f"/proc/{pid}/stat")
        return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"

    def command(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "benchmarks/learn_queue.sh", name], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    (results / "queue-status.txt").write_text("the last session's record")
    empty = subprocess.run(["bash", "benchmarks/learn_queue.sh", "stop"], cwd=ROOT, capture_output=True, text=True,
                           env={**env, "RUNS_DIR": str(tmp_path / "fresh")}, timeout=60)  # fmt: skip
    assert empty.returncode == 0 and "queue-status.txt left as it is" in empty.stdout
    assert (results / "queue-status.txt").read_text() == "the last session's record"  # a fresh machine's
    refused = command("start")
    assert refused.returncode == 1 and f"(pid {pid}) still runs: stop it first" in refused.stderr
    assert alive()
    stopped = command("stop")
    assert stopped.returncode == 0 and "no bench of" in stopped.stdout
    assert not alive() and (runs / "queue.stop").exists()  # `stop` returned after the queue had exited
    standing = (results / "queue-status.txt").read_text()
    assert standing.startswith("# learn_queue.sh status at stop") and str(runs) in standing.splitlines()[0]
    assert "  qc seed0: at env step 1004; evaluations 0.72 (base 0.08)\n" in standing
    assert "  qc seed1: offline phase, 175 of 500 update calls\n" in standing
    assert "qcchoice-p2-scene: not started" in standing


@needs_taskset
def test_an_extension_lane_item_extends_the_finished_source_runs_and_exports_the_finished_ones(tmp_path):
    """longer-p1-cube-double (no bench): `expoft extend` for each finished source run it lacks,
    a finished extension skipped and exported without its checkpoints; an unfinished source run
    is left alone."""
    source = tmp_path / "cache-p1-cube-double-cached/runs/expo-ft"
    longer = tmp_path / "longer-p1-cube-double/runs/expo-ft"
    for seed in ("seed0", "seed1", "seed2"):
        (source / seed).mkdir(parents=True)
    for seed in ("seed0", "seed2"):
        (source / seed / "summary.json").write_text("{}")
    (longer / "seed2/checkpoints").mkdir(parents=True)
    (longer / "seed2/checkpoints/agent_10000.npz").write_bytes(b"weights")
    (longer / "seed2/summary.json").write_text('{"env_steps": 10000}')
    (longer / "seed2.log").write_text("its log")
    results = tmp_path / "results"
    env = {**os.environ, "RUNS_DIR": str(tmp_path), "EXPOFT": "echo", "RESULTS_DIR": str(results)}
    lane = ["bash", "benchmarks/learn_queue.sh", "lane", "0", "longer-p1-cube-double"]
    done = subprocess.run(lane, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "skip runs/expo-ft/seed2: finished" in done.stdout
    assert (longer / "seed0.log").read_text().strip() == (
        f"extend {source / 'seed0'} --env-steps 10000 --out {longer / 'seed0'} --no-progress"
    )
    assert not (longer / "seed1.log").exists()  # its source has not finished
    exported = results / "longer-p1-cube-double/runs/expo-ft"
    assert (exported / "seed2/summary.json").read_text() == '{"env_steps": 10000}'
    assert (exported / "seed2.log").read_text() == "its log"
    assert not (exported / "seed2/checkpoints").exists() and not (exported / "seed0").exists()


def test_check_accepts_the_plan_and_names_a_misspelt_item(tmp_path):
    env = {**os.environ, "RUNS_DIR": str(tmp_path / "runs")}

    def check(*items: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "benchmarks/learn_queue.sh", "check", *items], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    plan = check()  # WIDE, BOTH and both lanes as the script lists them
    assert plan.returncode == 0, plan.stderr
    bad = check("learn-p2-scene@bc", "learn-p1-cube-singel@qc")
    assert bad.returncode == 2
    assert "unknown grid 'learn-p1-cube-singel'" in bad.stderr and "fix it first" in bad.stderr
    assert not (tmp_path / "runs").exists()  # a check starts nothing

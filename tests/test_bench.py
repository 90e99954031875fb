"""`expoft bench`: statistics, the report from hand-made run folders, the runner (with a fake
`expoft` for resume/failure handling, and one real tiny smoke bench), argument errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest

from expoft.bench import folder, protocols, runner, scheduler
from expoft.bench import plan as planning
from expoft.bench import report as rep
from expoft.bench import stats as bstats
from expoft.cli import main

T_975_DF1 = 12.706204736174707  # Student-t 97.5% quantiles (tables)
T_975_DF2 = 4.302652729749464


# ---------------------------------------------------------------------------
# statistics


def test_t_interval_by_hand():
    assert bstats.t_quantile(1) == pytest.approx(T_975_DF1, rel=1e-9)
    assert bstats.t_quantile(2) == pytest.approx(T_975_DF2, rel=1e-9)
    # mean 0.7, sample sd 0.2, se 0.2 / sqrt(3) = 0.11547; half width 4.30265 * 0.11547 = 0.49683
    mean, low, high = bstats.t_interval([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7)
    assert low == pytest.approx(0.7 - 0.496828, abs=1e-6) and high == pytest.approx(0.7 + 0.496828, abs=1e-6)
    # two seeds 0 and 1: sd sqrt(0.5), se 0.5, half width 12.706 * 0.5
    mean, low, high = bstats.t_interval([0.0, 1.0])
    assert (mean, low, high) == pytest.approx((0.5, 0.5 - T_975_DF1 / 2, 0.5 + T_975_DF1 / 2))
    assert bstats.t_interval([0.8, 0.8, 0.8]) == pytest.approx((0.8, 0.8, 0.8))
    assert bstats.t_interval([0.6]) == (0.6, None, None)  # one seed: no interval
    with pytest.raises(ValueError):
        bstats.t_interval([])


def test_steps_to_threshold_by_hand():
    evals = [
        {"env_step": 2000, "success": 0.85},
        {"env_step": 0, "success": 0.2},
        {"env_step": 1000, "success": 0.5},
        {"env_step": 3000, "success": 0.96},
        {"env_step": 4000, "success": 0.7},
    ]
    assert bstats.steps_to_threshold(evals, 0.2) == 0
    assert bstats.steps_to_threshold(evals, 0.5) == 1000  # reaching exactly the level counts
    assert bstats.steps_to_threshold(evals, 0.8) == 2000
    assert bstats.steps_to_threshold(evals, 0.95) == 3000  # the first time, not the last evaluation
    assert bstats.steps_to_threshold(evals, 0.99) is None
    assert bstats.steps_to_threshold([], 0.5) is None


def test_select_checkpoints():
    assert bstats.select_checkpoints([200, 0, 200]) == [0, 200]
    picked = bstats.select_checkpoints([i * 1000 for i in range(11)], limit=6)
    assert picked == [0, 2000, 4000, 6000, 8000, 10000]


# ---------------------------------------------------------------------------
# the report from hand-made run folders


def test_metrics_reader_skips_a_cut_last_row_and_refuses_a_damaged_one(tmp_path):
    from expoft.fileio import read_metrics

    rows = [{"env_step": 0, "eval/success": 0.5}, {"env_step": 500, "otf/edited_frac": 0.7}]
    whole = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "metrics.jsonl").write_text(whole + '{"env_step": 1000, "otf/ed')  # a row cut by a kill
    assert read_metrics(tmp_path) == rows
    (tmp_path / "metrics.jsonl").write_text(whole + json.dumps(rows[0]))  # whole, its newline not yet written
    assert read_metrics(tmp_path) == rows + rows[:1]
    (tmp_path / "metrics.jsonl").write_text('{"env_step": 0, "eval/succ\n' + whole)
    with pytest.raises(ValueError, match="line 1: not a JSON row"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(whole + '{"env_step": 1000, "otf/ed\n')  # cut, then written on
    with pytest.raises(ValueError, match="line 3: not a JSON row"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(whole + "[1]\n")
    with pytest.raises(ValueError, match="line 3: a row is a JSON object"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_bytes(whole.replace("\n", "\r\n").encode())  # written on Windows
    assert read_metrics(tmp_path) == rows
    (tmp_path / "metrics.jsonl").write_text("")
    assert read_metrics(tmp_path) == []


def write_run(
    run_dir: Path, seed: int, successes: dict[int, float], cpu: float | None = None, grad: float = 10.0, run_cpu=None,
    edited=None, own_cpu=None, returns=None, reward=None, diagnostics=None,
):  # fmt: skip
    """``run_cpu``: the run's own CPU seconds at each evaluation step (absent: an older run);
    ``edited``: the ``otf/edited_frac`` of its training log rows; ``own_cpu``: summary.json's
    ``cpu_seconds`` (absent: an older run); ``returns``: the mean evaluation return at each step
    (absent: a run from before expoft logged it); ``reward``: config.json's (absent: sparse, as in
    older runs)."""
    run_dir.mkdir(parents=True)
    evals = [{"env_step": step, "success": s} for step, s in sorted(successes.items())]
    if returns is not None:
        evals = [{**e, "return": returns[e["env_step"]]} for e in evals]
    if run_cpu is not None:
        evals = [{**e, "cpu_seconds": run_cpu[e["env_step"]]} for e in evals]
    summary = {
        "seed": seed,
        "evaluations": evals,
        "final_success": evals[-1]["success"],
        "bc_success": 0.4,
        "env_steps": evals[-1]["env_step"],
        "wall_seconds": 100.0,
        "critic_steps_per_s": grad,
    }
    if own_cpu is not None:
        summary["cpu_seconds"] = own_cpu
    if diagnostics is not None:  # "EXPO that learns": paired policy - base, calibration, the ratio run
        summary["final_policy_minus_base"] = diagnostics["policy_minus_base"]
        summary["final_base_success"] = round(evals[-1]["success"] - diagnostics["policy_minus_base"], 6)
        summary["critic_steps_per_env_step"], summary["actor_steps_per_env_step"] = 20.0, 1.0
        evals[-1].update(first_q=0.5, first_return=0.4, q_return_corr=0.6, q_spread=0.02, q_member_std=0.05)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    config = {"seed": seed, "env": "cube-single", **({"reward": reward} if reward else {})}
    (run_dir / "config.json").write_text(json.dumps(config))
    rows = [{"env_step": e["env_step"], "eval/success": e["success"]} for e in evals]
    rows += [{"env_step": 500 * (i + 1), "otf/edited_frac": x} for i, x in enumerate(edited or [])]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if cpu is not None:
        attempt = {
            "command": f"expoft finetune --seed {seed}",
            "returncode": 0,
            "cpu_seconds": cpu,
            "wall_seconds": 120,
        }
        record = {"attempts": [attempt], "cpu_seconds": cpu, "wall_seconds": 120.0, "status": "finished"}
        (run_dir / "bench_run.json").write_text(json.dumps(record))


@pytest.fixture
def synthetic_bench(tmp_path):
    d = tmp_path / "bench"
    write_run(d / "runs/expo/seed0", 0, {0: 0.4, 1000: 0.6, 2000: 0.9}, cpu=60, grad=10, edited=[None, 0.5, 0.7],
              diagnostics={"policy_minus_base": 0.1})  # fmt: skip
    write_run(
        d / "runs/expo/seed1",
        1,
        {0: 0.5, 1000: 0.8, 2000: 0.96},
        cpu=120,
        grad=20,
        run_cpu={0: 100.0, 1000: 400.0, 2000: 600.0},
        edited=[0.8, 0.8],
        diagnostics={"policy_minus_base": 0.2},
    )
    write_run(d / "runs/expo/seed2", 2, {0: 0.6, 1000: 0.9, 2000: 1.0}, cpu=180, grad=30,
              run_cpu={0: 100.0, 1000: 500.0, 2000: 900.0}, diagnostics={"policy_minus_base": 0.3})  # fmt: skip
    write_run(d / "runs/qc/seed0", 0, {0: 0.3, 1000: 0.5, 2000: 0.7}, cpu=30, edited=[0.0, 0.0])
    write_run(d / "runs/qc/seed1", 1, {0: 0.3, 1000: 0.4, 1500: 0.45, 2000: 0.5})  # no runner record
    failed = d / "runs/qc/seed2"
    failed.mkdir(parents=True)
    (failed / "config.json").write_text("{}")
    (failed / "bench_run.json").write_text(json.dumps({"attempts": [], "status": "failed", "cpu_seconds": 5}))
    write_run(d / "runs/bc/seed0", 0, {0: 0.4, 2000: 0.42})
    runs = [(m, s) for m in ("expo", "qc", "bc") for s in range(3) if (m, s) not in (("bc", 1), ("bc", 2))]
    bench = {
        "command": "expoft bench --methods expo,qc,bc --out bench",
        "arguments": {"env": "cube-single", "task": 1, "protocol": "p1", "preset": "demo"},
        "runs": [
            {"method": m, "seed": s, "run_dir": f"runs/{m}/seed{s}", "command": f"expoft finetune --method {m}"}
            for m, s in runs
        ],
    }
    (d / "bench.json").write_text(json.dumps(bench))
    return d


def test_report_figures(synthetic_bench, capsys):
    stats = rep.render_report(synthetic_bench)
    expo, qc, bc = stats["expo"], stats["qc"], stats["bc"]
    half = T_975_DF2 * 0.1 / math.sqrt(3)  # successes 0.4, 0.5, 0.6 at step 0: sd 0.1
    assert expo["success"][0]["mean"] == pytest.approx(0.5)
    assert expo["success"][0]["low"] == pytest.approx(0.5 - half) and expo["success"][0]["high"] == pytest.approx(
        0.5 + half
    )
    # 0.9, 0.96, 1.0 at step 2000: mean 0.9533, sd 0.05033, half width 4.30265 * 0.05033 / sqrt(3) = 0.1250
    assert expo["success"][2000]["low"] == pytest.approx(0.8283, abs=1e-4)
    assert expo["success"][2000]["high"] == 1.0  # clipped to [0, 1]
    # first evaluation >= 50%: 1000, 0, 0; >= 80%: 2000, 1000, 1000; >= 95%: never, 2000, 2000
    assert expo["steps_to_50"] == {"mean": pytest.approx(1000 / 3), "reached": 3, "n": 3}
    assert expo["steps_to_80"] == {"mean": pytest.approx(4000 / 3), "reached": 3, "n": 3}
    assert expo["steps_to_95"] == {"mean": 2000, "reached": 2, "n": 3}
    # the runs' own CPU time at their first evaluation >= 95%: 600 s and 900 s -> 12.5 minutes
    assert expo["cpu_minutes_to_95"] == {"mean": pytest.approx(12.5), "reached": 2, "n": 3}
    assert bstats.cpu_to_threshold([{"env_step": 0, "success": 1.0}], 0.95) is None  # an older run: no CPU record
    # without their own CPU count (older runs): the runner's; wall: the runs' own (100 s), not the runner's 120
    assert expo["cpu_minutes"] == pytest.approx(2.0) and expo["wall_minutes"] == pytest.approx(100 / 60)
    assert expo["grad_steps_per_s"] == pytest.approx(20.0)
    # edited acts: per run the mean of its rows (None rows skipped), 0.6 and 0.8; seed 2 logged none
    assert expo["edited_frac"] == pytest.approx(0.7) and qc["edited_frac"] == 0.0 and bc["edited_frac"] is None
    # qc: two finished seeds, one failed; 1500 is not common to both finished runs
    assert (qc["runs"], qc["finished"], qc["failed"]) == (3, 2, 1)
    assert sorted(qc["success"]) == [0, 1000, 2000]
    assert qc["success"][2000]["mean"] == pytest.approx(0.6)
    assert qc["cpu_minutes"] == pytest.approx(0.5)  # only the run the runner measured
    assert qc["wall_minutes"] == pytest.approx(100 / 60)
    assert qc["steps_to_95"] == {"mean": None, "reached": 0, "n": 2}
    assert bc["success"][2000]["n"] == 1 and bc["success"][2000]["low"] is None

    out = synthetic_bench / "report"
    table = (out / "table.md").read_text()
    expo_row = next(line for line in table.splitlines() if line.startswith("| expo |"))
    cells = [c.strip() for c in expo_row.strip("|").split("|")]
    assert cells[:5] == ["expo", "3/3", "0.50 [0.25, 0.75]", "0.77 [0.39, 1.00]", "0.95 [0.83, 1.00]"]
    assert cells[5:10] == ["333 (3/3)", "1,333 (3/3)", "2,000 (2/3)", "12.5 (2/3)", "0.40"]
    # policy - base: 0.2 +- t(2) * 0.1 / sqrt(3) = 0.2 +- 0.248
    assert cells[10:14] == ["+0.20 [-0.05, +0.45]", "0.50 / 0.40 (r 0.60)", "0.020 / 0.050", "20.00 / 1.00"]
    assert cells[14:] == ["2.0", "1.7", "20.0", "0.70"]
    # the base alone at the last evaluation: 0.8, 0.76, 0.7
    assert stats["expo"]["final_base_success"]["mean"] == pytest.approx(0.7533, abs=1e-4)
    assert stats["expo"]["final_base_success"]["n"] == 3 and "final_base_success" not in stats["qc"]
    assert "| qc | 2/3 (1 failed) |" in table and "– (0/2)" in table
    assert "| bc | 1/1 | 0.40 (n=1) | – | 0.42 (n=1) |" in table
    bc_row = next(line for line in table.splitlines() if line.startswith("| bc |"))
    assert bc_row.endswith("| – |")  # no OTF: no edited acts
    seeds = (out / "seeds.md").read_text()
    assert "Success before RL -> at 1k / 2k env steps" in seeds
    expo_seeds = (
        "| expo | 0.40 -> 0.60 / 0.90 | 0.50 -> 0.80 / 0.96 | 0.60 -> 0.90 / 1.00 | +0.45 (3 seeds) | 1.0 / 2.0 / 3.0 |"  # noqa: E501
    )
    assert expo_seeds in seeds
    # qc seed 1's evaluation at 1500 is not a common step, and it has no CPU count; seed 2 failed
    assert "| qc | 0.30 -> 0.50 / 0.70 | 0.30 -> 0.40 / 0.50 | failed | +0.30 (2 seeds) | 0.5 / – / – |" in seeds
    assert "| bc | 0.40 -> n.a. / 0.42 | – | – | +0.02 (1 seed) | – / – / – |" in seeds
    with open(out / "table.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(rows["expo"]["success_0_low"]) == pytest.approx(0.5 - half, abs=1e-4)
    assert "success_1500_mean" not in rows["qc"] and rows["bc"]["success_1000_n"] == ""
    assert rows["expo"]["steps_to_95_reached"] == "2" and float(rows["expo"]["cpu_minutes_to_95_mean"]) == 12.5
    lines = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert [h["method"] for h in lines] == ["expo", "qc", "bc"]
    assert lines[0]["final_success"] == pytest.approx(2.86 / 3) and lines[0]["final_success_ci95"][1] == 1.0
    assert lines[0]["cpu_minutes_to_95"] == pytest.approx(12.5) and lines[1]["cpu_minutes_to_95"] is None
    assert lines[0]["edited_frac"] == pytest.approx(0.7) and float(rows["expo"]["edited_frac"]) == pytest.approx(0.7)
    assert (out / "learning_curves.png").stat().st_size > 10_000
    assert sorted(p.name for p in (out / "configs").iterdir()) == [
        "bc_seed0.json", "expo_seed0.json", "expo_seed1.json", "expo_seed2.json",
        "qc_seed0.json", "qc_seed1.json", "qc_seed2.json",
    ]  # fmt: skip
    commands = (out / "commands.txt").read_text()
    assert "expoft bench --methods expo,qc,bc --out bench" in commands and "--seed 1  # exit 0" in commands

    printed = capsys.readouterr().out
    assert expo_row in printed and printed.count('{"method": ') == 3

    # `expoft bench report DIR` renders the same; without bench.json the run folders are found
    (synthetic_bench / "bench.json").unlink()
    (out / "table.md").unlink()
    assert main(["bench", "report", str(synthetic_bench), "--checkpoints", "2000", "0"]) == 0  # put in order
    table = (out / "table.md").read_text()
    assert "success @0 | success @2k |" in table and "@1k" not in table
    assert "| expo | 3/3 | 0.50 [0.25, 0.75] | 0.95 [0.83, 1.00] |" in table
    seeds = (out / "seeds.md").read_text()  # the same steps, seed by seed
    assert "Success before RL -> at 2k env steps" in seeds and "| expo | 0.40 -> 0.90 | 0.50 -> 0.96 |" in seeds
    assert "| bc | 0.40 -> 0.42 |" in seeds
    assert main(["bench", "report", str(synthetic_bench), "--checkpoints", "1000"]) == 0  # one step: no change
    seeds = (out / "seeds.md").read_text()
    assert "Success at 1k env steps" in seeds and "| expo | 0.60 | 0.80 | 0.90 | 1.0 / 2.0 / 3.0 |" in seeds
    assert "| bc | n.a. | – | – | – / – / – |" in seeds and "last minus first, mean |" not in seeds


def test_cpu_per_run_is_the_runs_own_count_when_it_has_one(tmp_path):
    """A run resumed after its runner was killed (a session that ended): the runner saw only the
    last attempt (120 s), the run's own count carried the whole (600 s); a run without its own
    count (older) falls back to the runner's."""
    write_run(tmp_path / "runs/expo/seed0", 0, {0: 0.4, 1000: 0.6}, cpu=120, own_cpu=600)
    write_run(tmp_path / "runs/expo/seed1", 1, {0: 0.4, 1000: 0.6}, cpu=240)
    _, runs = bstats.load_bench(tmp_path)
    assert [r.cpu_seconds for r in runs] == [600, 240] and [r.runner_cpu_seconds for r in runs] == [120, 240]
    stats = bstats.method_stats(runs)
    assert stats["cpu_minutes"] == pytest.approx(7.0) and stats["runner_cpu_minutes"] == pytest.approx(3.0)
    rep.render_report(tmp_path, echo=False)
    assert "| 10.0 / 4.0 |" in (tmp_path / "report" / "seeds.md").read_text()


def test_seeds_md_shows_returns_where_runs_logged_them(tmp_path):
    """Success at 0 throughout, the partial-credit return moving: seeds.md shows both; a run from
    before returns were logged reads n.a."""
    write_run(tmp_path / "runs/expo/seed0", 0, {0: 0.0, 1000: 0.0}, returns={0: -900.0, 1000: -850.5}, reward="ogbench")
    write_run(tmp_path / "runs/expo/seed1", 1, {0: 0.0, 1000: 0.0}, reward="ogbench")
    rep.render_report(tmp_path, echo=False)
    seeds = (tmp_path / "report" / "seeds.md").read_text()
    assert "| expo | 0.00 throughout | 0.00 throughout | +0.00 (2 seeds) |" in seeds
    assert "Mean evaluation return (undiscounted, reward ogbench)" in seeds
    assert "| expo | -900.0 -> -850.5 | n.a. -> n.a. | +49.5 (1 seed) |" in seeds
    # under the sparse reward the return is the success again: no second table
    write_run(tmp_path / "sparse/runs/expo/seed0", 0, {0: 0.5, 1000: 0.6}, returns={0: 0.5, 1000: 0.6})
    rep.render_report(tmp_path / "sparse", echo=False)
    assert "return" not in (tmp_path / "sparse/report/seeds.md").read_text()


def test_report_of_a_bench_without_a_finished_run(tmp_path):
    """Renderable at any time: a bench whose only run failed gets a table and a seeds.md that say so."""
    failed = tmp_path / "runs/expo/seed0"
    failed.mkdir(parents=True)
    (failed / "bench_run.json").write_text(json.dumps({"attempts": [], "status": "failed", "cpu_seconds": 5}))
    stats = rep.render_report(tmp_path, echo=False)
    assert (stats["expo"]["runs"], stats["expo"]["finished"], stats["expo"]["failed"]) == (1, 0, 1)
    assert "| expo | 0/1 (1 failed) |" in (tmp_path / "report" / "table.md").read_text()
    assert "No finished run has an evaluation yet." in (tmp_path / "report" / "seeds.md").read_text()


def test_report_errors(tmp_path, capsys):
    assert main(["bench", "report", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", "report", str(tmp_path)]) == 2
    assert "no bench.json" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# the runner with a fake `expoft` (fast): skipping, resuming, restarting, failures, --overwrite

FAKE_EXPOFT = """
import json, os, sys, time
from pathlib import Path

argv = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(argv) + "\\n")
t0 = time.process_time()
while time.process_time() - t0 < 0.25:  # some CPU time for the runner to measure
    pass
opt = lambda name: argv[argv.index(name) + 1]
if "--resume" in argv:
    out = Path(opt("--resume"))
    config = json.loads((out / "config.json").read_text())
else:
    out = Path(opt("--out"))
    config = {"method": opt("--method"), "seed": int(opt("--seed"))}
if config["method"] in os.environ.get("FAKE_FAIL", "").split(","):
    print("boom: this method cannot run yet", file=sys.stderr)
    sys.exit(3)
out.mkdir(parents=True, exist_ok=True)
(out / "config.json").write_text(json.dumps(config))
(out / "affinity.json").write_text(json.dumps(sorted(os.sched_getaffinity(0))))
evals = [{"env_step": 0, "success": 0.5}, {"env_step": 200, "success": 0.6 + 0.1 * config["seed"]}]
summary = {"evaluations": evals, "final_success": evals[-1]["success"], "bc_success": 0.5, "env_steps": 200,
           "critic_steps_per_s": 10.0, "wall_seconds": 0.3, "seed": config["seed"]}
(out / "summary.json").write_text(json.dumps(summary))
"""


@pytest.fixture
def fake_expoft(tmp_path, monkeypatch):
    script = tmp_path / "fake_expoft.py"
    script.write_text(FAKE_EXPOFT)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setattr(planning, "EXPOFT_ARGV", (sys.executable, str(script)))
    monkeypatch.setattr(runner, "demo_steps", lambda *a: [])  # no data generation
    monkeypatch.setenv("FAKE_CALLS", str(calls))

    def read_calls():
        found = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
        calls.unlink(missing_ok=True)
        return found

    return read_calls


def _key(argv):
    if "--resume" in argv:
        return ("resume", Path(argv[argv.index("--resume") + 1]).parent.name, argv[argv.index("--resume") + 1][-1])
    mode = "restart" if "--overwrite" in argv else "start"
    return (mode, argv[argv.index("--method") + 1], argv[argv.index("--seed") + 1])


def test_runner_skips_resumes_restarts_and_reports_failures(tmp_path, fake_expoft, monkeypatch, capsys):
    out = tmp_path / "b"
    common = ["bench", "--methods", "expo,expo-no-edit,qc", "--preset", "tiny", "--out", str(out)]
    args = [*common, "--seeds", "2"]
    monkeypatch.setenv("FAKE_FAIL", "qc")
    assert main(args) == 2  # qc fails; the others run
    captured = capsys.readouterr()
    assert "2 of 6 runs failed" in captured.err and "boom: this method cannot run yet" in captured.err
    assert sorted(_key(c) for c in fake_expoft()) == sorted(
        ("start", m, s) for m in ("expo", "expo-no-edit", "qc") for s in "01"
    )
    bench = json.loads((out / "bench.json").read_text())
    assert bench["command"] == "expoft " + " ".join(args) and len(bench["runs"]) == 6
    first = bench["runs"][0]
    assert (first["method"], first["seed"]) == ("expo", 0)  # seed-major order
    assert first["command"].startswith("expoft finetune --preset tiny --method expo --seed 0 --env cube-single")
    assert first["config"]["env_steps"] == 300 and first["config"]["expo"]["num_edit_samples"] == 4
    assert "--xla_cpu_multi_thread_eigen=false" in bench["environment"]["XLA_FLAGS"].split()  # after the user's
    record = json.loads((out / "runs/expo/seed0/bench_run.json").read_text())
    assert record["status"] == "finished" and record["cpu_seconds"] >= 0.2 and record["wall_seconds"] >= 0.2
    failed = json.loads((out / "runs/qc/seed1/bench_run.json").read_text())
    assert failed["status"] == "failed" and failed["attempts"][0]["returncode"] == 3 and "boom" in failed["log_tail"]
    table = (out / "report/table.md").read_text()
    assert "| qc | 0/2 (2 failed) |" in table and "| expo | 2/2 | 0.50 [0.50, 0.50] |" in table

    # expo seed 1 killed after a checkpoint, expo-no-edit seed 0 while pretraining (after its
    # pretraining checkpoint), expo-no-edit seed 1 before any; qc works now
    (out / "runs/expo/seed1/summary.json").unlink()
    (out / "runs/expo/seed1/checkpoints").mkdir()
    (out / "runs/expo/seed1/checkpoints/state_100.json").write_text("{}")
    (out / "runs/expo-no-edit/seed0/summary.json").unlink()
    (out / "runs/expo-no-edit/seed0/checkpoints").mkdir()
    (out / "runs/expo-no-edit/seed0/checkpoints/pretrain_state.json").write_text("{}")
    (out / "runs/expo-no-edit/seed1/summary.json").unlink()
    finished = out / "runs/expo/seed0/summary.json"
    mtime = finished.stat().st_mtime_ns
    monkeypatch.setenv("FAKE_FAIL", "")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "skip expo seed 0: finished" in printed and "skip expo-no-edit" not in printed
    assert sorted(_key(c) for c in fake_expoft()) == sorted([
        ("resume", "expo", "1"), ("resume", "expo-no-edit", "0"), ("restart", "expo-no-edit", "1"),
        ("start", "qc", "0"), ("start", "qc", "1"),
    ])  # fmt: skip
    assert finished.stat().st_mtime_ns == mtime
    record = json.loads((out / "runs/expo/seed1/bench_run.json").read_text())
    assert [a["mode"] for a in record["attempts"]] == ["start", "resume"]
    assert record["cpu_seconds"] == pytest.approx(sum(a["cpu_seconds"] for a in record["attempts"]))
    assert "| qc | 2/2 |" in (out / "report/table.md").read_text()
    assert len(json.loads((out / "bench.json").read_text())["invocations"]) == 2
    # again with every run finished: nothing runs, and no invocation is recorded
    assert main(args) == 0
    assert fake_expoft() == []
    assert len(json.loads((out / "bench.json").read_text())["invocations"]) == 2

    # other arguments: refused, unless --overwrite (which moves the old bench aside)
    assert main([*common, "--seeds", "3"]) == 2
    assert "other arguments (seeds: 2 -> 3)" in capsys.readouterr().err
    assert fake_expoft() == []
    assert main([*common, "--seeds", "1", "--overwrite"]) == 0
    assert len(fake_expoft()) == 3
    replaced = list(out.glob("replaced-*"))
    assert len(replaced) == 1 and (replaced[0] / "runs/expo/seed1/summary.json").exists()
    assert json.loads((out / "bench.json").read_text())["arguments"]["seeds"] == 1

    # other arguments that plan the same runs (a flag at the preset's value): the same bench, continued
    assert main([*common, "--seeds", "1", "--finetune-args=--eval-episodes 2"]) == 0
    assert "plans the same runs with the same configs: continuing it" in capsys.readouterr().out
    assert fake_expoft() == [] and len(list(out.glob("replaced-*"))) == 1
    assert json.loads((out / "bench.json").read_text())["arguments"]["finetune_args"] == "--eval-episodes 2"
    assert main([*common, "--seeds", "1", "--finetune-args=--eval-episodes 3"]) == 2  # not the same runs
    assert "other arguments (finetune_args: '--eval-episodes 2' -> '--eval-episodes 3')" in capsys.readouterr().err
    assert fake_expoft() == []


def test_pin_cores_splits_the_cpus_into_disjoint_slots(monkeypatch):
    monkeypatch.setattr(scheduler, "TASKSET", "/usr/bin/taskset")
    for cpus, jobs, slots in [
        ({0, 1}, 2, [(0,), (1,)]),
        ({0, 1}, 1, [(0, 1)]),
        ({4, 5, 6, 7, 9}, 2, [(4, 5), (6, 7)]),  # a left-over CPU stays unused
        ({0, 1}, 3, None),  # more jobs than cores: not pinned
    ]:
        monkeypatch.setattr(scheduler.os, "sched_getaffinity", lambda pid, cpus=cpus: cpus)
        assert scheduler.pin_cores(jobs) == slots
    monkeypatch.setattr(scheduler, "TASKSET", None)
    assert scheduler.pin_cores(1) is None


@pytest.mark.skipif(scheduler.TASKSET is None or len(os.sched_getaffinity(0)) < 2, reason="needs taskset and 2 CPUs")
def test_bench_pins_each_run_to_its_own_cores(tmp_path, fake_expoft):
    out = tmp_path / "b"
    args = ["bench", "--methods", "expo,qc", "--preset", "tiny", "--seeds", "2", "--out", str(out)]
    assert main(args) == 0
    slots = [list(c) for c in scheduler.pin_cores(2)]
    assert json.loads((out / "bench.json").read_text())["pinned_cores"] == slots
    for run in ("expo/seed0", "expo/seed1", "qc/seed0", "qc/seed1"):
        cores = json.loads((out / f"runs/{run}/affinity.json").read_text())  # what the run itself saw
        assert cores in slots
        assert json.loads((out / f"runs/{run}/bench_run.json").read_text())["attempts"][-1]["cores"] == cores
    assert len(fake_expoft()) == 4
    unpinned = tmp_path / "u"
    assert main([*args[:-1], str(unpinned), "--no-pin"]) == 0
    assert json.loads((unpinned / "runs/expo/seed0/affinity.json").read_text()) == sorted(os.sched_getaffinity(0))
    assert "cores" not in json.loads((unpinned / "runs/expo/seed0/bench_run.json").read_text())["attempts"][-1]


def test_export_leaves_checkpoints_and_unfinished_runs_out_and_the_bench_continues(tmp_path, fake_expoft, capsys):
    src, dest = tmp_path / "b", tmp_path / "exported"
    args = ["bench", "--methods", "expo,qc", "--preset", "tiny", "--seeds", "2", "--out", str(src)]
    assert main(args) == 0
    fake_expoft()
    for run in ("expo/seed0", "expo/seed1", "qc/seed0"):
        (src / f"runs/{run}/checkpoints").mkdir()
        (src / f"runs/{run}/checkpoints/agent_100.npz").write_bytes(b"weights")
    (src / "runs/qc/seed1/summary.json").unlink()  # killed: unfinished
    (src / "runs/qc/seed1/checkpoints").mkdir()
    (src / "runs/qc/seed1/checkpoints/state_100.json").write_text("{}")
    capsys.readouterr()

    assert main(["bench", "export", str(src), str(dest)]) == 0
    assert "3 run(s) copied, 0 already there, 1 unfinished left out" in capsys.readouterr().out
    assert not list(dest.rglob("checkpoints")) and not (dest / "runs/qc/seed1").exists()
    for run in ("expo/seed0", "expo/seed1", "qc/seed0"):
        for name in ("summary.json", "config.json", "bench_run.json"):
            assert (dest / f"runs/{run}/{name}").read_bytes() == (src / f"runs/{run}/{name}").read_bytes()
        assert (dest / f"runs/{run}.log").read_bytes() == (src / f"runs/{run}.log").read_bytes()
    assert json.loads((dest / "bench.json").read_text()) == json.loads((src / "bench.json").read_text())
    table = (dest / "report/table.md").read_text()
    assert "| expo | 2/2 |" in table and "| qc | 1/2 |" in table  # rendered from what was exported
    assert (src / "runs/expo/seed0/checkpoints/agent_100.npz").exists()  # the source is untouched

    # the bench continues in the export: only the unfinished run starts (from scratch: no checkpoint)
    assert main([*args[:-1], str(dest)]) == 0
    assert [c[c.index("--method") + 1 :][:3] for c in fake_expoft()] == [["qc", "--seed", "1"]]
    assert "| qc | 2/2 |" in (dest / "report/table.md").read_text()
    assert len(json.loads((dest / "bench.json").read_text())["invocations"]) == 2

    # exporting again: finished runs in the destination are never touched; invocations of both kept
    (src / "runs/qc/seed1/summary.json").write_text('{"from": "the source"}')
    kept = (dest / "runs/qc/seed1/summary.json").read_bytes()
    capsys.readouterr()
    assert main(["bench", "export", str(src), str(dest)]) == 0
    assert "0 run(s) copied, 4 already there" in capsys.readouterr().out
    assert (dest / "runs/qc/seed1/summary.json").read_bytes() == kept
    assert len(json.loads((dest / "bench.json").read_text())["invocations"]) == 2

    # the source continued under other arguments that plan the same runs: still the same bench
    (src / "runs/qc/seed1/summary.json").write_bytes(kept)
    assert main([*args, "--finetune-args=--eval-episodes 2"]) == 0
    assert fake_expoft() == []
    capsys.readouterr()
    assert main(["bench", "export", str(src), str(dest)]) == 0
    assert "0 run(s) copied, 4 already there" in capsys.readouterr().out

    # refused: inside the bench, another bench, a folder that is not a bench, a missing bench
    other = tmp_path / "other"
    assert main(["bench", "--methods", "expo", "--preset", "tiny", "--seeds", "1", "--out", str(other)]) == 0
    capsys.readouterr()
    cases = [
        ([str(src), str(src / "copy")], "inside it"),
        ([str(other), str(dest)], "holds another bench"),
        ([str(src), str(tmp_path)], "not empty and holds no bench.json"),
        ([str(tmp_path / "missing"), str(tmp_path / "x")], "holds no bench.json"),
    ]
    for argv, message in cases:
        assert main(["bench", "export", *argv]) == 2
        assert message in capsys.readouterr().err


def test_protocol_plans(tmp_path):
    args = runner.Bench(methods="expo,qc,rlpd", protocol="p2", full=True, seeds=1, out=tmp_path)
    methods, proto, arguments = runner.check_args(args)
    assert arguments["env"] == "cube-double" and arguments["play_transitions"] == 1_000_000
    steps, dataset = planning.play_steps(proto, arguments["env"], args.task, args.jobs)
    assert steps[0].command.startswith("expoft data play --env cube-double --transitions 1000000 --seed 0")
    # cube-double: OGBench's partial-credit reward, offline and online, as in the published tables
    assert dataset.name.endswith("-task1-ogbench.npz") and steps[1].path == dataset
    assert steps[1].command.startswith("expoft data label ") and "--reward ogbench" in steps[1].command
    assert arguments["reward"] == "ogbench"
    expo, qc, rlpd = planning.plan(args, methods, proto, arguments["env"], dataset, tmp_path)
    assert expo.config["dataset"] == str(dataset) and expo.config["pretrain_steps"] == 1_000_000
    assert {r.config["reward"] for r in (expo, qc, rlpd)} == {"ogbench"}
    scene = runner.Bench(methods="qc", protocol="p2", env="scene", seeds=1, out=tmp_path)
    _, scene_proto, scene_args = runner.check_args(scene)
    (scene_run,) = planning.plan(scene, ["qc"], scene_proto, "scene", Path("play.npz"), tmp_path)
    assert scene_run.config["reward"] == "sparse" == scene_args["reward"]  # BENCHMARKS.md: scene (sparse)
    assert planning.play_steps(scene_proto, "scene", 1, 1)[1].name.endswith("-task1-sparse.npz")
    assert expo.config["env_steps"] == 1_000_000 and expo.config["eval_every"] == 50_000
    assert "--pretrain-steps" not in rlpd.args and rlpd.config["pretrain_steps"] == 0  # the method's setting wins
    # the offline phase: 1M critic steps at full size for qc; none for rlpd (online-only) and
    # expo (offline-to-online EXPO pretrains only its base, ALGORITHMS.md)
    assert qc.config["offline_updates"] == 50_000 and arguments["offline_updates"] == 50_000
    for run in (expo, rlpd):
        assert "--offline-updates" not in run.args and run.config["offline_updates"] == 0

    default = runner.Bench(methods="expo,qc-fql,rlpd", protocol="p2", seeds=1, out=tmp_path)
    methods, proto, arguments = runner.check_args(default)
    expo, fql, rlpd = planning.plan(default, methods, proto, "cube-double", Path("play.npz"), tmp_path)
    assert (expo.config["env_steps"], expo.config["pretrain_steps"], proto.play_transitions) == (5000, 20_000, 100_000)
    offline = [r.config["offline_updates"] for r in (expo, fql, rlpd)]
    assert offline == [0, protocols.P2_OFFLINE_UPDATES, 0] and protocols.P2_OFFLINE_UPDATES > 0
    assert "offline RL" in proto.describe()
    # EXPO-FT as published takes no offline RL phase; its named deviation takes P2's, and nothing else differs
    both = runner.Bench(methods="expo-ft,expo-ft-offline", protocol="p2", seeds=1, out=tmp_path)
    ft, ft_offline = planning.plan(both, runner.check_args(both)[0], proto, "cube-double", Path("play.npz"), tmp_path)
    assert (ft.config["offline_updates"], ft_offline.config["offline_updates"]) == (0, protocols.P2_OFFLINE_UPDATES)
    assert {**ft.config, "offline_updates": None} == {**ft_offline.config, "offline_updates": None}
    changed = runner.Bench(methods="qc", protocol="p2", seeds=1, offline_updates=7, out=tmp_path)
    methods, proto, arguments = runner.check_args(changed)
    (run,) = planning.plan(changed, methods, proto, "cube-double", Path("play.npz"), tmp_path)
    assert run.config["offline_updates"] == 7 == arguments["offline_updates"]
    p1 = runner.check_args(runner.Bench(methods="expo", seeds=1, out=tmp_path))
    assert p1[1].offline_updates == 0 and "offline_updates" not in p1[2]  # p1 benches made before it continue
    assert "reward" not in p1[2] and "reward" not in p1[1].overrides  # p1: the success reward

    reduced = runner.Bench(methods="expo", protocol="p2", seeds=1, env_steps=3000, out=tmp_path)
    methods, proto, arguments = runner.check_args(reduced)
    assert proto.play_transitions == 100_000
    (run,) = planning.plan(reduced, methods, proto, "cube-double", Path("play.npz"), tmp_path)
    assert run.config["env_steps"] == 3000 and run.config["eval_every"] == 1000 and run.config["env"] == "cube-double"

    tiny = runner.Bench(methods="expo", protocol="p2", preset="tiny", seeds=1, out=tmp_path)
    _, proto, _ = runner.check_args(tiny)
    assert proto.play_transitions == protocols.TINY_PLAY_TRANSITIONS and proto.overrides == {"reward": "ogbench"}
    assert proto.offline_updates == protocols.TINY_OFFLINE_UPDATES  # a smoke run takes the offline phase too

    tuned = runner.Bench(
        methods="expo,expo-ft", seeds=1, out=tmp_path, finetune_args="--actor-steps 2",
        method_args="expo-ft=--update-every 25 --actor-steps 10 ; ",
    )  # fmt: skip
    methods, proto, arguments = runner.check_args(tuned)
    assert arguments["method_args"] == {"expo-ft": ["--update-every", "25", "--actor-steps", "10"]}
    assert "method_args" not in runner.check_args(reduced)[2]  # unused: benches made before it continue
    expo, expo_ft = planning.plan(tuned, methods, proto, "cube-single", None, tmp_path)
    # over --finetune-args and over the preset's schedule (a call per decision)
    assert expo_ft.config["update_every"] == 25 and expo_ft.config["agent"]["actor_steps"] == 10
    assert expo.config["update_every"] is None and expo.config["agent"]["actor_steps"] == 2
    # every run evaluates its base alone too (paired policy - base in the report), unless told not to
    assert expo.config["eval_base"] and expo_ft.config["eval_base"] and arguments["eval_base"]
    quiet = dataclasses.replace(tuned, eval_base=False)
    assert not planning.plan(quiet, methods, proto, "cube-single", None, tmp_path)[0].config["eval_base"]

    env, changes = scheduler.child_env(single_thread=True)
    assert "xla_cpu_multi_thread_eigen=false" in env["XLA_FLAGS"] and env["OMP_NUM_THREADS"]
    assert "XLA_FLAGS" not in scheduler.child_env(single_thread=False)[1]


def test_single_thread_xla_flags_are_xla_flags():
    """XLA aborts on an unknown ``--flag`` but silently ignores a token without dashes, so a
    misspelt or foreign option (a TensorFlow session option once stood here) would do nothing."""
    import subprocess

    assert all(token.startswith("--") for token in scheduler.SINGLE_THREAD_XLA.split())
    code = "import jax.numpy as jnp; print(float(jnp.ones(3).sum()))"
    env, _ = scheduler.child_env(single_thread=True)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "3.0", done.stderr[-2000:]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "expo,nope"], "unknown method(s) 'nope'"),
        (["--methods", "expo,expo"], "listed twice"),
        (["--methods", " , "], "--methods is empty"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--protocol", "p3"], "--protocol must be p1 or p2"),
        (["--full"], "--full applies to protocol p2 only"),
        (["--offline-updates", "5"], "--offline-updates applies to protocol p2 only"),
        (["--protocol", "p2", "--offline-updates", "-1"], "--offline-updates must be >= 0"),
        (["--jobs", "0"], "--jobs must be >= 1"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--env", "kitchen"], "unknown environment 'kitchen'"),
        (["--task", "9"], "task"),
        (["--methods", "expo", "--method-args", "expo --utd 2"], "is not METHOD=FLAGS"),
        (["--methods", "expo", "--method-args", "qc=--utd 2"], "names 'qc', which is not in --methods (expo)"),
        (["--methods", "expo", "--method-args", "expo=--utd 2;expo=--seed 1"], "names 'expo' twice"),
        (["--methods", "expo", "--method-args", "expo= "], "has no flags"),
        (["--methods", "expo", "--method-args", "expo=--utd '2"], "No closing quotation"),
    ],
)
def test_bad_arguments(tmp_path, capsys, extra, message):
    out = tmp_path / "b"
    assert main(["bench", "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing written


def test_refuses_a_folder_that_is_not_a_bench(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["bench", "--methods", "expo", "--preset", "tiny", "--out", str(tmp_path), "--overwrite"]) == 2
    assert "not empty and holds no bench.json" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    # a bench.json that `expoft bench` did not write, or not JSON: refused, and left as it is
    for text, message in [("{}", "did not write it"), ("{runs", "is not valid JSON")]:
        (tmp_path / "bench.json").write_text(text)
        assert main(["bench", "--methods", "expo", "--preset", "tiny", "--out", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err
        assert (tmp_path / "bench.json").read_text() == text


# ---------------------------------------------------------------------------
# a real smoke bench (two tiny runs in parallel, about a minute)


def test_smoke_bench_then_skip(tmp_path, capsys):
    out = tmp_path / "smoke"
    args = ["bench", "--methods", "expo,expo-no-edit", "--preset", "tiny", "--seeds", "1", "--env-steps", "200"]
    args += ["--method-args", "expo-no-edit=--eval-episodes 1", "--out", str(out)]
    assert main([*args, "--only", "expo:1"]) == 2  # checked before the folder is made
    assert "seed must be one of 0..0" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--only", "qc"]) == 2
    assert "names method 'qc', not one of this bench's: expo, expo-no-edit" in capsys.readouterr().err
    # --only: one run of the grid now, the rest by the same command later (the bench is the same)
    assert main([*args, "--only", "expo-no-edit:0"]) == 0
    printed = capsys.readouterr().out
    assert "--only expo-no-edit:0: 1 of the 2 runs this time: expo-no-edit seed 0" in printed
    assert (out / "runs/expo-no-edit/seed0/summary.json").exists() and not (out / "runs/expo/seed0").exists()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "skip expo-no-edit seed 0: finished" in printed
    table = (out / "report/table.md").read_text()
    for method in ("expo", "expo-no-edit"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
        assert row.startswith(f"| {method} | 1/1 | ") and "(n=1)" in row
        assert row in printed
        summary = json.loads((out / f"runs/{method}/seed0/summary.json").read_text())
        assert summary["env_steps"] == 200
        record = json.loads((out / f"runs/{method}/seed0/bench_run.json").read_text())
        assert record["status"] == "finished" and record["cpu_seconds"] > 1
        config = json.loads((out / f"report/configs/{method}_seed0.json").read_text())
        assert config["env_steps"] == 200 and config["seed"] == 0
        assert config["eval_episodes"] == (1 if method == "expo-no-edit" else 2)
    assert "success @0 | success @200 |" in table
    assert "Tuning (flags given to single methods, beyond the protocol's): expo-no-edit: `--eval-episodes 1`" in table
    assert (out / "report/learning_curves.png").stat().st_size > 10_000
    assert (out / "report/policy_vs_base.png").stat().st_size > 10_000  # each method against its base alone
    commands = (out / "report/commands.txt").read_text()
    assert "--method expo-no-edit --seed 0 --env cube-single --task 1 --env-steps 200" in commands

    logs = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in out.glob("runs/*/seed0.log")}
    summaries = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/summary.json")}
    assert len(logs) == 2 and len(summaries) == 2
    assert main(args) == 0  # again: nothing to run
    printed = capsys.readouterr().out
    assert "skip expo seed 0: finished" in printed and "skip expo-no-edit seed 0: finished" in printed
    assert "all runs have finished" in printed and "| expo | 1/1 |" in printed
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in logs} == logs
    assert {p: p.stat().st_mtime_ns for p in summaries} == summaries
    assert "differs from the config" not in printed

    # a finished run of another config in its place (copied in from another grid): kept, but said
    written = out / "runs/expo/seed0/config.json"
    written.write_text(json.dumps({**json.loads(written.read_text()), "env_steps": 300}))
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "runs/expo/seed0/config.json differs from the config this bench plans for expo seed 0" in printed
    assert "expo-no-edit/seed0/config.json differs" not in printed

    # finished runs copied into a new folder (another grid of the same commands): the bench adopts
    # them, and runs nothing; any other content without bench.json is still refused
    grid = tmp_path / "grid"
    shutil.copytree(out / "runs/expo-no-edit", grid / "runs/expo-no-edit")
    other = [*args[: args.index("--out")], "--out", str(grid), "--only", "expo-no-edit"]
    assert main(other) == 0
    printed = capsys.readouterr().out
    assert "skip expo-no-edit seed 0: finished" in printed and "all runs have finished" in printed
    assert (grid / "bench.json").exists()
    stray = tmp_path / "stray"
    shutil.copytree(out / "runs/expo-no-edit", stray / "runs/expo-no-edit")
    (stray / "notes.txt").write_text("mine")
    assert main([*args[: args.index("--out")], "--out", str(stray)]) == 2
    assert "is not empty and holds no bench.json" in capsys.readouterr().err


def test_nominal_step_puts_chunked_evaluations_on_the_grid():
    from expoft.report.steps import nominal_step

    assert nominal_step(1004, 1000, 2000, 5) == 1000  # a chunk of 5 overshot the grid point
    assert nominal_step(1000, 1000, 2000, 1) == 1000
    assert nominal_step(2003, 1000, 2000, 5) == 2000  # the last evaluation, past env_steps
    assert nominal_step(1500, 1000, 5000, 5) == 1500  # not a grid point: kept
    assert nominal_step(0, 1000, 2000, 5) == 0


def test_mean_curve_of_chunked_seeds_meets_on_the_grid(tmp_path):
    """Seeds of a chunked run evaluate at 3001 / 3004 / ...; the mean over seeds must still have a
    point at every grid step (not only at 0 and the end), with the hand-computed mean and spread."""
    from expoft.report.plots import mean_curve, plot_mean_curves

    evals = {0: [(0, 0.4), (3001, 0.8), (6004, 0.8), (9003, 1.0)], 1: [(0, 0.6), (3004, 0.9), (6001, 0.7), (9003, 0.9)]}
    runs = []
    for seed, points in evals.items():
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"eval_every": 3000, "env_steps": 9000, "agent": {"exec_len": 5}}))
        rows = [{"env_step": 10, "critic/loss": 1.0}]  # a training row: not an evaluation
        ci = {"eval/success_ci_low": 0.0, "eval/success_ci_high": 1.0}
        rows += [{"env_step": s, "eval/success": v, **ci} for s, v in points]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs.append(run)
    curve = mean_curve(runs)
    assert curve["env_step"] == [0, 3000, 6000, 9000]
    assert curve["success"] == pytest.approx([0.5, 0.85, 0.75, 0.95])
    assert curve["low"] == pytest.approx([0.4, 0.8, 0.7, 0.9])
    assert curve["high"] == pytest.approx([0.6, 0.9, 0.8, 1.0])
    assert plot_mean_curves({"expo": runs}, tmp_path / "curves.png").stat().st_size > 0


def test_a_run_config_written_before_a_field_existed_is_the_same_config():
    from expoft.train.config import preset
    from expoft.train.rundir import same_config, to_jsonable

    planned = to_jsonable(preset("p1"))
    older = {k: v for k, v in planned.items() if k != "offline_updates"}  # written before the field
    assert same_config(older, planned)
    assert not same_config({**planned, "env_steps": 7}, planned)
    assert not same_config({"not": "a config"}, planned)
    assert not same_config(None, planned)  # a checkpoint record without its config
    # another agent's settings change nothing a run does: a BC run is the same whatever EXPO's say
    bc = to_jsonable(preset("p1", algorithm="bc"))
    assert same_config({**bc, "expo": {**bc["expo"], "target_cache_refresh": None}}, bc)
    assert not same_config({**planned, "expo": {**planned["expo"], "target_cache_refresh": None}}, planned)


def test_a_run_is_resumed_from_any_checkpoint_it_has(tmp_path):
    """run_state: an online checkpoint or one of a stage before RL (pretraining, the offline
    phase) is resumed; a run that wrote only its config is restarted."""
    run_state = folder.run_state
    run = tmp_path / "run"
    assert run_state(run) == "start"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert run_state(run) == "restart"
    (run / "checkpoints").mkdir()
    for name in ("pretrain_state.json", "offline_state.json", "state_1000.json"):
        (run / "checkpoints" / name).write_text("{}")
        assert run_state(run) == "resume", name
        (run / "checkpoints" / name).unlink()
    assert run_state(run) == "restart"
    (run / "summary.json").write_text("{}")
    assert run_state(run) == "finished"


def test_an_existing_data_file_is_checked_before_it_is_reused(tmp_path, capsys):
    made = tmp_path / "made.npz"
    made.write_bytes(b"x")

    def refuse():
        raise ValueError("not what the step writes")

    never = [sys.executable, "-c", "raise SystemExit(3)"]  # would fail the bench if it ran
    scheduler.run_data_steps([planning.DataStep("kept", made, never, "x")], {}, tmp_path)
    assert "reusing" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not what the step writes"):
        scheduler.run_data_steps([planning.DataStep("checked", made, never, "x", refuse)], {}, tmp_path)
    assert made.read_bytes() == b"x"


def test_an_agent_added_from_outside_runs_in_the_bench_by_name(tmp_path, monkeypatch):
    """One new file (tests/plugins/random_candidate.py, which registers its agent in one line) and
    $EXPOFT_AGENTS: `expoft bench --methods random-candidate` runs it, in processes of its own."""
    import os

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("EXPOFT_AGENTS", "tests.plugins.random_candidate")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.syspath_prepend(str(root))
    out = tmp_path / "b"
    args = ["bench", "--methods", "random-candidate", "--preset", "tiny", "--seeds", "1", "--env-steps", "100",
            "--out", str(out), "--jobs", "1", "--no-pin"]  # fmt: skip
    assert main(args) == 0
    config = json.loads((out / "runs" / "random-candidate" / "seed0" / "config.json").read_text())
    assert config["algorithm"] == "random-candidate"
    summary = json.loads((out / "runs" / "random-candidate" / "seed0" / "summary.json").read_text())
    assert summary["update_calls"] == 0 and 0.0 <= summary["final_success"] <= 1.0
    assert "random-candidate" in (out / "report" / "table.md").read_text()


def test_p1_data_step_makes_the_demos_its_runs_use(tmp_path):
    """A bench's data step passes every demo setting a run has (here recoveries and another
    gripper noise through --finetune-args): `expoft data demos` with the step's flags is the
    runs' own DemosConfig, and the step's file is the one those demos are cached as."""
    import tyro

    from expoft.cli import DataCommand
    from expoft.data.generate import DemosConfig, default_data_dir

    args = runner.Bench(
        methods="expo-ft", seeds=2, out=tmp_path, finetune_args="--demo-disturb 1.0 --demo-gripper-noise 5"
    )
    methods, proto, arguments = runner.check_args(args)
    runs = planning.plan(args, methods, proto, arguments["env"], None, tmp_path)
    wanted = sorted({r.demos for r in runs}, key=lambda d: d.seed)
    assert [(d.seed, d.disturb, d.gripper_noise) for d in wanted] == [(0, 1.0, 5.0), (1, 1.0, 5.0)]
    steps = planning.demo_steps(set(wanted), jobs=1)
    for step, demos in zip(steps, wanted, strict=True):
        parsed = tyro.cli(DataCommand, args=step.argv[step.argv.index("data") + 1 :]).config
        assert isinstance(parsed, DemosConfig) and parsed == demos
        assert step.path == default_data_dir() / f"{demos.cache_name()}.npz"


def test_report_names_a_damaged_summary_instead_of_dropping_its_run(tmp_path, capsys):
    """The bench skips a run that has summary.json (finished); read back as "not finished", a
    damaged one would vanish from the table without a word."""
    write_run(tmp_path / "runs/expo/seed0", 0, {0: 0.4, 1000: 0.6})
    write_run(tmp_path / "runs/expo/seed1", 1, {0: 0.4, 1000: 0.6})
    (tmp_path / "runs/expo/seed1/summary.json").write_text('{"final_success": 0.')
    assert main(["bench", "report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "runs/expo/seed1/summary.json is not valid JSON" in err and "restore it from a copy" in err


def test_scripts_reading_a_bench_end_with_a_message_not_a_traceback(tmp_path):
    """benchmarks/*.py read bench folders through load_bench_or_exit: a missing folder and a
    damaged summary.json each end the script with what is wrong and how to fix it."""
    with pytest.raises(SystemExit, match="does not exist"):
        bstats.load_bench_or_exit(tmp_path / "nowhere")
    write_run(tmp_path / "runs/expo/seed0", 0, {0: 0.4, 1000: 0.6})
    assert len(bstats.load_bench_or_exit(tmp_path)[1]) == 1
    (tmp_path / "runs/expo/seed0/summary.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"summary.json is not valid JSON .*restore it from a copy"):
        bstats.load_bench_or_exit(tmp_path)

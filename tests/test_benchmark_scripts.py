"""benchmarks/acceptance.py, room.py, screens.py, candidate_sets.py and eval_cost.py on made-up
bench folders: the verdicts and figures they print follow from the runs' summaries and logs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(grid: Path, method: str, seed: int, success: float, base: float, evals=None) -> None:
    run = grid / "runs" / method / f"seed{seed}"
    run.mkdir(parents=True)
    evals = evals or [(0, base, base), (1000, success, base)]
    summary = {
        "final_success": success, "final_base_success": base, "final_policy_minus_base": round(success - base, 4),
        "env_steps": 1000, "evaluations": [{"env_step": s, "success": p, "base_success": b} for s, p, b in evals],
    }  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.json").write_text(json.dumps({"env": "cube-single", "eval_every": 1000, "env_steps": 1000}))


def run_script(name: str, *args: Path | str) -> list[dict]:
    done = subprocess.run([sys.executable, f"benchmarks/{name}.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_acceptance_reads_pass_fail_and_pending_off_the_grids(tmp_path):
    wins, loses, short = tmp_path / "wins", tmp_path / "loses", tmp_path / "short"
    for seed in range(3):
        write_run(wins, "expo-ft", seed, 0.90, 0.70)  # +0.20, and QC 0.92: within 0.05
        write_run(wins, "qc", seed, 0.92, 0.92)
        write_run(loses, "expo-ft", seed, 0.80, 0.76)  # +0.04, and QC 0.90: 0.10 below
        write_run(loses, "qc", seed, 0.90, 0.90)
    write_run(short, "expo-ft", 0, 0.90, 0.10)  # one seed: pending
    lines = run_script("acceptance", wins, loses, short)
    verdicts = {line["grid"]: (line["gain"], line["vs_qc"]) for line in lines[:3]}
    assert verdicts == {"wins": ("pass", "pass"), "loses": ("fail", "fail"), "short": ("pending", "pending")}
    assert lines[0]["expo_ft"]["policy_minus_base"]["mean"] == pytest.approx(0.20)
    assert lines[0]["expo_ft"]["policy_minus_base_after_rl"] == pytest.approx(0.20)  # one evaluation after RL
    assert lines[3] == {"grids": ["wins", "loses", "short"], "gain_on_2_of_3": "pending", "vs_qc_on_all": "fail"}

    # a variant's EXPO-FT runs in place of a grid's, against that grid's QC
    variant = tmp_path / "variant"
    for seed in range(3):
        write_run(variant, "expo-ft", seed, 0.89, 0.70)
    line = run_script("acceptance", loses, "--expo-ft-from", f"loses={variant}")[0]
    assert (line["gain"], line["vs_qc"], line["expo_ft_from"]) == ("pass", "pass", str(variant))
    assert line["qc"]["final_success"]["mean"] == pytest.approx(0.90)  # QC still the grid's
    for bad in ("loses", f"other={variant}"):  # no folder; a grid not read
        done = subprocess.run([sys.executable, "benchmarks/acceptance.py", str(loses), "--expo-ft-from", bad],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2 and "--expo-ft-from" in done.stderr and "Traceback" not in done.stderr, bad

    acceptance = load_script("acceptance")
    two = [{"grid": g, "gain": v, "vs_qc": "pass"} for g, v in (("a", "pass"), ("b", "pass"), ("c", "fail"))]
    assert acceptance.overall(two) == {"grids": ["a", "b", "c"], "gain_on_2_of_3": "pass", "vs_qc_on_all": "pass"}
    two[1]["gain"] = "fail"
    assert acceptance.overall(two)["gain_on_2_of_3"] == "fail"


def test_room_counts_a_copied_run_once_and_gives_the_share_of_failures_fixed(tmp_path):
    a, b = tmp_path / "cache-grid", tmp_path / "learn-grid"
    evals = [(0, 0.5, 0.5), (1000, 0.7, 0.6), (2000, 0.8, 0.6)]
    write_run(a, "expo-ft", 0, 0.8, 0.6, evals)
    write_run(b, "expo-ft", 0, 0.8, 0.6, evals)  # the same run, copied into another grid
    write_run(b, "bc", 0, 0.5, 0.5)  # the base is the policy: left out
    write_run(b, "expo", 0, 0.9, 0.5, evals)  # an extension of a run of another grid: left out
    (b / "runs/expo/seed0/extended.json").write_text(
        json.dumps({"from": "x", "env_steps_before": 1000, "env_step": 1000, "cut": 10, "time": 0})
    )
    lines = run_script("room", a, b)
    assert len(lines) == 2 and lines[-1]["runs"] == 1
    run = lines[0]
    assert (run["grid"], run["task"], run["method"]) == ("cache-grid", "? cube-single", "expo-ft")
    assert (run["base"], run["gain"]) == (0.6, 0.2)
    assert run["base_after_rl"] == pytest.approx(0.6) and run["gain_after_rl"] == pytest.approx(0.15)
    assert run["fixed_after_rl"] == pytest.approx(0.15 / 0.4)


def test_screens_gives_each_evaluation_and_the_mean_gain_after_rl(tmp_path):
    grid = tmp_path / "screen"
    write_run(grid, "expo-ft", 1, 0.8, 0.6, [(0, 0.5, 0.5), (1000, 0.7, 0.6), (2000, 0.8, 0.7)])
    config = {"env": "cube-single", "eval_every": 1000, "env_steps": 2000}
    (grid / "runs/expo-ft/seed1/config.json").write_text(json.dumps(config))
    done = subprocess.run([sys.executable, "benchmarks/screens.py", str(grid)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["env_step"], r["success"], r["base_success"]) for r in rows] == [
        (0, 0.5, 0.5), (1000, 0.7, 0.6), (2000, 0.8, 0.7)
    ]  # fmt: skip
    row = next(line for line in done.stderr.splitlines() if line.startswith("| screen | expo-ft | 1 |"))
    assert "| 0.50 / 0.70 / 0.80 | 0.70 |" in row and "| +0.100 |" in row  # mean of +0.1 and +0.1


def test_a_damaged_summary_is_an_error_that_names_it_and_a_run_without_evaluations_is_skipped(tmp_path):
    grid = tmp_path / "grid"
    write_run(grid, "expo-ft", 0, 0.8, 0.6)
    write_run(grid, "expo-ft", 1, 0.8, 0.6)
    (grid / "runs/expo-ft/seed1/summary.json").write_text('{"evaluations": [')  # cut off
    for script in ("screens", "room", "acceptance"):
        done = subprocess.run([sys.executable, f"benchmarks/{script}.py", str(grid)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode != 0 and "Traceback" not in done.stderr, (script, done.stderr)
        assert "runs/expo-ft/seed1/summary.json is not valid JSON" in done.stderr, script
    (grid / "runs/expo-ft/seed1/summary.json").write_text('{"evaluations": []}')
    done = subprocess.run([sys.executable, "benchmarks/screens.py", str(grid)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "seed1: its summary.json holds no evaluation" in done.stderr
    assert [json.loads(line)["seed"] for line in done.stdout.splitlines()] == [0, 0]


def test_candidate_sets_parses_sets_and_refuses_bad_ones():
    parse = load_script("candidate_sets").parse_set
    assert parse("8+0") == {"num_base_samples": 8, "num_edit_samples": 0, "act_score": None}
    assert parse("16+16:mean") == {"num_base_samples": 16, "num_edit_samples": 16, "act_score": "mean"}
    for bad in ("8", "8+x", "8+0+1"):
        with pytest.raises(Exception, match="a candidate set is N\\+M"):
            parse(bad)
    with pytest.raises(Exception, match="must be subset-min or mean"):
        parse("8+0:max")


@pytest.mark.slow
def test_candidate_sets_pairs_every_set_with_the_runs_own_rule(tmp_path, monkeypatch):
    """A tiny EXPO run, then its checkpoint choosing among other candidate sets: the run's own
    rule reproduces itself (difference 0 on every episode) and a set without edits takes none."""
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    from expoft.cli import main

    run = tmp_path / "run"
    assert main(["finetune", "--preset", "tiny", "--env-steps", "150", "--out", str(run), "--no-progress"]) == 0
    done = subprocess.run([sys.executable, "benchmarks/candidate_sets.py", str(run), "--sets", "2+0", "4+2:mean",
                           "--episodes", "3"], cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["policy"]: r for r in map(json.loads, done.stdout.strip().splitlines())}
    assert set(rows) == {"own", "base", "2+0", "4+2:mean"}
    assert rows["own"]["minus_own"][0] == 0.0 and rows["2+0"]["edited_frac"] == 0.0
    assert rows["2+0"]["choice"] == {"num_base_samples": 2, "num_edit_samples": 0, "act_score": "subset-min"}
    assert rows["4+2:mean"]["choice"] == {"num_base_samples": 4, "num_edit_samples": 2, "act_score": "mean"}
    assert rows["base"]["minus_base"] == [0.0, 0.0, 0.0]


def test_eval_cost_takes_an_evaluation_as_its_interval_less_updates_and_the_plain_remainder(tmp_path):
    grid = tmp_path / "grid"
    write_run(grid, "expo-ft", 0, 0.8, 0.6)
    # logged every 250 env steps: updates 10 s and acting 1 s per interval, 4 s of stepping;
    # the interval after each evaluation holds 30 s more; a resume breaks one interval off
    lines, elapsed, update, act = [], 0.0, 0.0, 0.0
    for step in range(250, 2001, 250):
        elapsed, update, act = elapsed + 15 + (30 if step in (1250, 2000) else 0), update + 10, act + 1
        if step == 1500:
            lines.append({"phase": "resume", "env_step": 1400})
            elapsed += 500  # the interval across the resume is left out
        lines.append({"env_step": step, "time/elapsed_s": elapsed, "time/update_s": update, "time/act_s": act})
        if step in (1000, 1750):
            lines.append({"env_step": step, "eval/success": 0.5})
    lines.append({"env_step": 2000, "eval/success": 0.5})
    (grid / "runs/expo-ft/seed0/metrics.jsonl").write_text("\n".join(map(json.dumps, lines)))
    [row] = run_script("eval_cost", grid)
    assert row["seconds_per_evaluation"] == 30.0 and row["evaluations"] == 3
    assert row["share"] == pytest.approx(90 / (elapsed + 30), abs=1e-3)
    done = subprocess.run([sys.executable, "benchmarks/eval_cost.py", str(tmp_path / "missing")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr


def test_every_benchmark_script_is_in_the_index():
    index = (ROOT / "benchmarks/README.md").read_text()
    scripts = sorted(p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in (".py", ".sh"))
    assert scripts and [name for name in scripts if f"`{name}`" not in index] == []

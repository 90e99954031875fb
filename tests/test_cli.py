"""The `expoft` command: every data subcommand runs, errors are clear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from expoft.cli import main


def test_demos_then_info(tmp_path, capsys):
    args = ["data", "demos", "--env", "cube-single", "--task", "1", "--episodes", "2", "--seed", "0"]
    assert main([*args, "--out", str(tmp_path), "--no-progress", "--workers", "1"]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npz")
    assert "wrote" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path), "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("reused")

    npz = next(tmp_path.glob("*.npz"))
    assert main(["data", "info", str(npz)]) == 0
    table = capsys.readouterr().out
    for key in ("episodes", "transitions", "success_rate", "action_min", "obs_mean"):
        assert key in table
    assert main(["data", "info", "--json", str(npz)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 2 and info["obs_dim"] == 28 and len(info["action_max"]) == 5


def test_play_and_info_for_a_task(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "play",
                "--env",
                "cube-single",
                "--transitions",
                "100",
                "--episode-steps",
                "50",
                "--out",
                str(tmp_path),
                "--no-progress",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    npz = next(tmp_path.glob("*.npz"))
    capsys.readouterr()
    assert main(["data", "info", "--json", str(npz)]) == 0
    assert "success_rate" not in json.loads(capsys.readouterr().out)
    assert main(["data", "info", "--json", "--task", "2", str(npz)]) == 0
    assert "success_rate" in json.loads(capsys.readouterr().out)
    # fine-tuning from play data labels it for the run's task (P2: play offline-to-online)
    run = tmp_path / "run"
    args = ["finetune", "--preset", "tiny", "--task", "2", "--dataset", str(npz), "--env-steps", "60",
            "--pretrain-steps", "10", "--out", str(run), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["offline_transitions"] == 100 and summary["task"] == 2


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # tyro reports config errors and exits
        main(["data", "demos", "--task", "9", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "task must be in 1..5" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert main(["nonsense"]) == 2
    assert main([]) == 2
    # an actor whose learner cannot be reached: its reason, exit 1, no traceback
    assert main(["actor", "--learner", "ws://127.0.0.1:9", "--retries", "0"]) == 1
    assert "no learner at ws://127.0.0.1:9 after 0 retries" in capsys.readouterr().err
    assert main(["actor", "--learner", "ws://127.0.0.1:9", "--max-backoff-s", "0.1"]) == 2
    assert "0 < backoff (0.5 s) <= max backoff (0.1 s)" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "expoft.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "data" in out.stdout


def test_gpu_check_without_a_gpu_says_so_and_exits_0():
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "JAX backend: cpu" in done.stdout and "no GPU" in done.stdout

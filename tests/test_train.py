"""Training loop, run folders, checkpoints and the training CLI commands (tiny preset)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from expoft.agents.expo import EXPOAgent, act
from expoft.cli import main
from expoft.train.checkpoint import CheckpointError, load_pytree, save_pytree
from expoft.train.config import TINY_AGENT, preset
from expoft.train.loop import RunDir, load_run_agent, wilson_interval


def test_wilson_interval_known_values():
    low, high = wilson_interval(50, 50)
    assert high == 1.0 and abs(low - 0.9287) < 1e-3
    low, high = wilson_interval(25, 50)
    assert abs(low - 0.3664) < 1e-3 and abs(high - 0.6336) < 1e-3
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_checkpoint_round_trip_restores_every_array(tmp_path):
    agent = EXPOAgent.create(TINY_AGENT, 6, 2, seed=0)
    path = save_pytree(agent, tmp_path / "a.npz", env_step=np.int64(7))
    other = EXPOAgent.create(TINY_AGENT, 6, 2, seed=1)
    restored, extra = load_pytree(other, path)
    assert int(extra["env_step"]) == 7
    for x, y in zip(jax.tree.leaves(agent), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(x, y)
    obs = np.ones((1, 6), np.float32)
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(act(agent, obs, key)[0], act(restored, obs, key)[0])
    wrong = EXPOAgent.create(TINY_AGENT, 7, 2, seed=0)
    with pytest.raises(CheckpointError, match="the agent expects"):
        load_pytree(wrong, path)
    with pytest.raises(FileNotFoundError):
        load_pytree(agent, tmp_path / "missing.npz")


def test_run_dir_refuses_to_clobber(tmp_path):
    RunDir(tmp_path / "r", preset("tiny")).close()
    with pytest.raises(FileExistsError, match="already holds a run"):
        RunDir(tmp_path / "r", preset("tiny"))


def test_finetune_and_eval_commands_write_a_complete_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "run"
    assert main(["finetune", "--preset", "tiny", "--out", str(out), "--no-progress", "--seed", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name in (
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "learning_curve.png",
        "checkpoints/agent_300.npz",
        "checkpoints/buffer.npz",
    ):
        assert (out / name).exists(), name
    assert summary["env_steps"] == 300 and summary["update_calls"] > 0
    assert 0.0 <= summary["final_success"] <= 1.0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "critic/loss" in r]
    assert train_rows and all(np.isfinite(r["critic/loss"]) for r in train_rows)
    assert {"train/rolling_success", "edit/alpha", "otf/edited_frac", "base/loss"} <= set(train_rows[-1])
    assert any("eval/success" in r for r in rows) and any("eval_base/success" in r for r in rows)
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 1 and config["agent"]["utd"] == TINY_AGENT.utd

    cfg, agent, step = load_run_agent(out)
    assert step == 300 and cfg.seed == 1
    assert main(["eval", str(out), "--episodes", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["eval/episodes"] == 2 and result["env_step"] == 300

    # A second run into the same folder is refused, not merged.
    assert main(["finetune", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_pretrain_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "pre"
    assert main(["pretrain", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["pretrain_steps"] == 50 and np.isfinite(summary["final_loss"])
    assert (out / "checkpoints" / "agent_0.npz").exists()


def test_preset_errors():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ValueError, match="env_steps must be >= 1"):
        preset("tiny", env_steps=0)


def test_demo_command_writes_summary_and_curve(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    assert main(["demo", "--preset", "tiny", "--out", str(tmp_path / "demo"), "--no-progress", "--seed", "2"]) == 0
    run = tmp_path / "demo" / "seed2"
    summary = json.loads((run / "summary.json").read_text())
    for key in ("bc_success", "final_success", "env_steps", "wall_seconds", "seed"):
        assert key in summary, key
    assert summary["seed"] == 2 and summary["env_steps"] == 300
    assert (run / "learning_curve.png").stat().st_size > 10_000
    assert "final_success" in capsys.readouterr().out

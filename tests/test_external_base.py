"""EXPO around an external base: in-process callables and a model behind a websocket server,
including a server that dies and comes back in the middle of a run."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from expoft.agents.common import act
from expoft.agents.expo import EXPOAgent
from expoft.bases import CallableBase
from expoft.bases.toy import ToyBase, demo_command, free_port
from expoft.fileio import read_metrics
from expoft.train.config import TINY_AGENT, TINY_EXPO, preset
from expoft.train.external import ExternalCandidates
from expoft.train.finetune import finetune

from .conftest import xla_env

OBS, ACT = 28, 5  # cube-single


def test_act_uses_the_candidates_it_is_given():
    """With external candidates and no edits, the chosen action is one of the given ones, the one
    the target critics score highest."""
    cfg = dataclasses.replace(TINY_AGENT, base_training="frozen")
    own = dataclasses.replace(TINY_EXPO, num_edit_samples=0)
    agent = EXPOAgent.create(cfg, own, OBS, ACT)
    obs = np.zeros((3, OBS), np.float32)
    cands = np.random.default_rng(0).uniform(-1, 1, (3, own.num_base_samples, ACT)).astype(np.float32)
    actions, _ = act(agent, obs, jax.random.PRNGKey(0), cands)
    scores = agent.score(jax.random.split(jax.random.PRNGKey(0))[1], obs, cands)
    np.testing.assert_allclose(actions, cands[np.arange(3), np.argmax(scores, axis=1)])
    with pytest.raises(ValueError, match="base candidates have shape"):
        agent.act(obs, jax.random.PRNGKey(0), cands[:, :2])


def test_external_candidates_check_the_base():
    toy = ToyBase(OBS, ACT, chunk_len=4)
    ext = ExternalCandidates(toy, OBS, ACT, chunk_len=4, exec_len=2, num_samples=3)
    out = ext(np.zeros((2, OBS), np.float32), seed=1)
    assert out.shape == (2, 3, 2 * ACT) and out.dtype == np.float32
    full = toy.sample(np.zeros((2, OBS), np.float32), 3, 1)
    np.testing.assert_array_equal(out, full[:, :, :2].reshape(2, 3, -1))  # the executed part, flattened
    assert ext.latency_ms()["act"]["calls"] == 1
    with pytest.raises(ValueError, match="chunk_len 4 \\(expected 5\\)"):
        ExternalCandidates(toy, OBS, ACT, chunk_len=5, exec_len=5, num_samples=3)


def test_finetune_around_an_in_process_callable(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    toy = ToyBase(OBS, ACT, chunk_len=1)
    # a model that takes one batch of rows and draws its noise from the generator it is given
    base = CallableBase(lambda rows, rng: toy.sample(rows, 1, int(rng.integers(2**31)))[:, 0], OBS, ACT, 1,
                        takes_rng=True)  # fmt: skip
    cfg = preset("tiny", env_steps=120, agent=dataclasses.replace(TINY_AGENT, base_training="frozen"))
    summary = finetune(cfg, tmp_path / "run", progress=False, base=base)
    lat = summary["external_base_latency_ms"]
    assert lat["act"]["calls"] >= 120 and lat["update"]["calls"] == summary["update_calls"] > 0
    with pytest.raises(ValueError, match="base_training 'frozen'"):
        finetune(preset("tiny"), tmp_path / "other", progress=False, base=base)


def test_remote_base_survives_a_server_restart_mid_run(tmp_path):
    """`expoft finetune --external-base ws://...` against a server in another process; the server is
    killed once the run is past its first evaluation and restarted 1.5 s later on the same port:
    the run retries, reconnects and finishes."""
    port = free_port()
    server_cmd = demo_command(port, OBS, ACT, chunk_len=1)
    server = subprocess.Popen(server_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "run"
    run_cmd = [sys.executable, "-m", "expoft.cli", "finetune", "--preset", "tiny", "--base-training", "frozen",
               "--external-base", f"ws://127.0.0.1:{port}", "--external-timeout-s", "5", "--env-steps", "300",
               "--out", str(out), "--no-progress"]  # fmt: skip
    env = {"EXPOFT_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin", **xla_env()}
    run = subprocess.Popen(run_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.time() + 240
        metrics = out / "metrics.jsonl"
        while time.time() < deadline and run.poll() is None:
            rows = read_metrics(out) if metrics.exists() else []  # skips a row the run is writing
            if any(r.get("env_step", 0) > 0 for r in rows):  # online, past the first evaluation
                break
            time.sleep(0.2)
        assert run.poll() is None, run.stdout.read()
        server.kill()
        server.wait()
        time.sleep(1.5)
        server = subprocess.Popen(server_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        output, _ = run.communicate(timeout=300)
    finally:
        run.kill()
        server.kill()
    assert run.returncode == 0, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] >= 300
    latency = summary["external_base_latency_ms"]
    assert latency["act"]["calls"] >= 300
    assert latency["connection"]["reconnects"] >= 1 and latency["connection"]["failed_calls"] == 0

"""The offline phase of offline-to-online runs (`RunConfig.offline_updates`, protocol P2)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import expoft.train.loop as loop
import expoft.train.offline_rl as offline_rl
from expoft.agents.common import update
from expoft.train.config import preset
from expoft.train.finetune import finetune, resume, run_buffer
from expoft.train.loop import RunDir, make_agent, offline_data

from .conftest import assert_same_checkpoints


def rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_offline_phase_takes_its_calls_on_offline_batches_only_and_lowers_the_critic_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    calls = 40
    cfg = preset("tiny", offline_updates=calls)
    ds = offline_data(cfg, False)
    buffer = run_buffer(cfg, ds, None)
    run = RunDir(tmp_path / "run", cfg)
    seen = []

    def spy(agent, pool, base_batch, next_base):
        seen.append((pool.offline.all(), len(pool.rewards), base_batch))
        return update(agent, pool, base_batch, next_base)

    monkeypatch.setattr(loop, "update", spy)
    agent = make_agent(cfg)
    trained = offline_rl.offline_phase(cfg, run, agent, buffer, progress=False)
    run.close()
    assert len(seen) == calls and all(off and n == cfg.agent.pool_size for off, n, _ in seen)
    assert buffer.online_size == 0  # nothing was added to the online part
    logged = [r for r in rows(run.path) if r.get("phase") == "offline"]
    assert [r["offline/update_calls"] for r in logged] == list(range(2, calls + 1, 2))  # 20 rows
    assert all(r["env_step"] == 0 for r in logged)
    first, last = logged[0]["offline/critic/loss"], np.mean([r["offline/critic/loss"] for r in logged[-3:]])
    assert last < first, (first, last)
    changed = [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(agent), jax.tree.leaves(trained), strict=True)]
    assert any(changed)


def test_no_offline_phase_leaves_the_agent_alone_and_bad_settings_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    cfg = preset("tiny")
    agent = make_agent(cfg)
    assert offline_rl.offline_phase(cfg, None, agent, None, progress=False) is agent
    with pytest.raises(ValueError, match="offline_updates must be >= 0"):
        preset("tiny", offline_updates=-1)
    with pytest.raises(ValueError, match="'bc' does not learn"):
        preset("tiny", algorithm="bc", offline_updates=5)


def test_a_run_killed_in_its_offline_phase_resumes_to_the_agent_of_an_uninterrupted_run(tmp_path, monkeypatch):
    """The phase has no checkpoints of its own: the end of pretraining is saved before it, and a
    run killed in it does the phase again from there, reaching the same agent before RL."""
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    # No online update call (env_steps < start_training): what is compared is the agent before RL.
    cfg = preset("tiny", pretrain_steps=60, offline_updates=6, env_steps=20, eval_episodes=1)
    straight = finetune(cfg, tmp_path / "straight", progress=False)

    done = []

    def killed(*args):
        done.append(1)
        if len(done) > 3:
            raise KeyboardInterrupt  # stands in for a kill: nothing after it runs
        return update(*args)

    monkeypatch.setattr(loop, "update", killed)
    run = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, run, progress=False)
    state = json.loads((run / "checkpoints" / "pretrain_state.json").read_text())
    assert state["done"] == cfg.pretrain_steps  # the end of pretraining, saved for the phase
    monkeypatch.setattr(loop, "update", update)

    resumed = resume(run, progress=False)
    assert resumed["success_before_rl"] == straight["success_before_rl"]
    straight_agent = tmp_path / "straight" / "checkpoints" / "agent_0.npz"
    assert_same_checkpoints(make_agent(cfg), straight_agent, run / "checkpoints" / "agent_0.npz")

    def offline_rows(path):
        return [{k: v for k, v in r.items() if "time" not in k} for r in rows(path) if r.get("phase") == "offline"]

    assert offline_rows(run) == offline_rows(tmp_path / "straight")  # the killed attempt's rows are gone
    assert not list((run / "checkpoints").glob("pretrain*"))  # superseded by the online checkpoint

"""The offline phase of offline-to-online runs (`RunConfig.offline_updates`, protocol P2)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import types

import jax
import numpy as np
import pytest

import expoft.train.build as loop
import expoft.train.checkpoint as checkpoint
import expoft.train.offline_rl as offline_rl
from expoft.agents.common import update
from expoft.train.build import make_agent, offline_data
from expoft.train.checkpoint import CheckpointStore
from expoft.train.config import preset
from expoft.train.finetune import finetune, resume, run_buffer
from expoft.train.rundir import RunDir

from .conftest import assert_same_checkpoints, assert_same_leaves, metrics_rows


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
    logged = [r for r in metrics_rows(run.path) if r.get("phase") == "offline"]
    assert [r["offline/update_calls"] for r in logged] == list(range(2, calls + 1, 2))  # 20 rows
    assert all(r["env_step"] == 0 for r in logged)
    # the critic starts at Q = 0 and the demos' only rewards are their successes (1): what the
    # offline phase learns is their value, propagated back from the successes
    first, last = logged[0]["offline/critic/q_mean"], np.mean([r["offline/critic/q_mean"] for r in logged[-3:]])
    assert abs(first) < 0.05 and last > first + 0.02, (first, last)
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


def killed_after_updates(monkeypatch, n: int):
    """build.update, raising KeyboardInterrupt (a kill: nothing after it runs) at its call n + 1."""
    done = []

    def killed(*args):
        done.append(1)
        if len(done) > n:
            raise KeyboardInterrupt
        return update(*args)

    monkeypatch.setattr(loop, "update", killed)


def offline_rows(path):
    return [{k: v for k, v in r.items() if "time" not in k} for r in metrics_rows(path) if r.get("phase") == "offline"]


# base_from (the base from another run: no pretraining checkpoint at all) in the slow tier: the
# default suite stays under 10 minutes, and the phase's own checkpoints are the same code
@pytest.mark.parametrize("base", ["pretrained", pytest.param("base_from", marks=pytest.mark.slow)])
def test_a_run_killed_in_its_offline_phase_resumes_to_the_agent_of_an_uninterrupted_run(tmp_path, monkeypatch, base):
    """The phase is checkpointed at its start and then at a metrics row once ``save_seconds``
    have passed (here every third row, on a clock that ticks once a reading; the pretraining's
    save timer reads it too): killed in call 8
    of 10, the run continues from the checkpoint of call 6 (not from the end of pretraining),
    drops the row of call 7 that the killed attempt logged, and reaches the agent before RL and
    the offline metrics of the uninterrupted run. A run whose base comes from another run (no
    pretraining checkpoint at all) resumes the same way."""
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    # No online update call (env_steps < start_training): what is compared is the agent before RL.
    cfg = preset("tiny", pretrain_steps=60, offline_updates=10, env_steps=20, eval_episodes=1)
    if base == "base_from":
        finetune(dataclasses.replace(cfg, offline_updates=0), tmp_path / "source", progress=False)
        cfg = dataclasses.replace(cfg, base_from=str(tmp_path / "source"))
    straight = finetune(cfg, tmp_path / "straight", progress=False)
    offline = [r for r in metrics_rows(tmp_path / "straight") if r.get("phase") == "offline"]
    assert [r["offline/update_calls"] for r in offline] == list(range(1, 11))

    run = tmp_path / "killed"
    calls_done = []

    save = CheckpointStore.save_stage

    def spy(self, stage, agent, done, *rest):  # the phase's checkpoints, as written
        if stage == "offline":
            calls_done.append(done)
        return save(self, stage, agent, done, *rest)

    monkeypatch.setattr(CheckpointStore, "save_stage", spy)
    monkeypatch.setattr(checkpoint, "time", types.SimpleNamespace(perf_counter=itertools.count().__next__))
    killed_after_updates(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, run, progress=False, stage_save_seconds=2.5)
    assert calls_done == [0, 3, 6]
    assert offline_rows(run)[-1]["offline/update_calls"] == 7
    state = json.loads((run / "checkpoints" / "offline_state.json").read_text())
    assert state["done"] == 6 and not list((run / "checkpoints").glob("pretrain*"))  # superseded
    assert [p.name for p in (run / "checkpoints").glob("offline_agent_*")] == ["offline_agent_6.npz"]
    monkeypatch.setattr(loop, "update", update)

    calls = []
    monkeypatch.setattr(loop, "update", lambda *args: calls.append(1) or update(*args))
    resumed = resume(run, progress=False)
    assert len(calls) == 4  # calls 7-10 only
    assert resumed["success_before_rl"] == straight["success_before_rl"]
    assert resumed["pretrain_final_loss"] == straight["pretrain_final_loss"]
    straight_agent = tmp_path / "straight" / "checkpoints" / "agent_0.npz"
    assert_same_checkpoints(make_agent(cfg), straight_agent, run / "checkpoints" / "agent_0.npz")
    assert offline_rows(run) == offline_rows(tmp_path / "straight")  # the killed attempt's row 7 is gone
    assert [r for r in metrics_rows(run) if r.get("phase") == "resume"][0]["offline/update_calls"] == 6
    assert not list((run / "checkpoints").glob("offline*"))  # superseded by the online checkpoint


def test_an_unusable_offline_checkpoint_is_reported_and_a_finished_phase_not_retaken(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    cfg = preset("tiny", pretrain_steps=20, offline_updates=4, env_steps=20, eval_episodes=1)
    run = tmp_path / "killed"
    killed_after_updates(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, run, progress=False, stage_save_seconds=0)
    agent_file = next((run / "checkpoints").glob("offline_agent_*.npz"))
    agent_file.write_bytes(agent_file.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING), pytest.raises(FileNotFoundError, match="--overwrite"):
        resume(run, progress=False)
    assert "offline phase checkpoint" in caplog.text and "does not match its sha256" in caplog.text
    with pytest.raises(ValueError, match=r"offline calls 5\.\.4 lie outside"):
        offline_rl.offline_phase(cfg, None, make_agent(cfg), run_buffer(cfg, offline_data(cfg, False), None), False,
                                 start=offline_rl.OfflinePoint(5, {}))  # fmt: skip


def test_the_phase_taken_in_parts_is_the_phase_taken_whole(tmp_path, monkeypatch):
    """What benchmarks/offline_phase.py relies on: a phase taken in parts (start and stop, the
    point passed on) reaches the agent of the phase taken at once."""
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    cfg = preset("tiny", offline_updates=6)
    ds = offline_data(cfg, False)
    whole = offline_rl.offline_phase(cfg, RunDir(tmp_path / "whole", cfg), make_agent(cfg), run_buffer(cfg, ds, None),
                                     False)  # fmt: skip
    run, agent, buffer = RunDir(tmp_path / "parts", cfg), make_agent(cfg), run_buffer(cfg, ds, None)
    points = [offline_rl.OfflinePoint.start(cfg)]
    for stop in (2, 5, 6):
        agent = offline_rl.offline_phase(cfg, run, agent, buffer, False, start=points[-1], stop=stop,
                                         on_row=lambda _, point: points.append(point))  # fmt: skip
    assert [p.done for p in points] == [0, 1, 2, 3, 4, 5, 6]
    assert_same_leaves(whole, agent)

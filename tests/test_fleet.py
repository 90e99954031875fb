"""Several actors feeding one learner (``expoft learner --actors N``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

from expoft.actorlearner.messages import buffer_ids
from expoft.actorlearner.serve import serve_run
from expoft.bases.toy import free_port
from expoft.train.build import make_agent, offline_data
from expoft.train.checkpoint import CheckpointStore
from expoft.train.config import preset
from expoft.train.finetune import run_buffer
from expoft.train.rundir import config_from_json

from .conftest import metrics_rows, xla_env
from .test_actorlearner import _journal, _wait_for


@pytest.mark.slow  # three processes, two of them killed and restarted (~95 s on one core)
def test_two_actors_and_kills_lose_nothing_and_never_interleave_episodes(tmp_path):
    """A learner with two actor processes (slots 0 and 1) over real sockets. Slot 1's actor is
    killed with SIGKILL mid-episode and another one started in its slot; later the learner is
    killed and restarted with --resume. The run completes; every transition of every episode an
    actor completed is in the replay buffer exactly once and its episode's rows lie together, in
    order (episodes of the two actors never interleave); the episode the dead actor left open is
    not in it; the two slots acted in different episodes."""
    port, run = free_port(), tmp_path / "run"
    env = {"EXPOFT_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin", **xla_env(tmp_path / "xla-cache")}
    env.update({k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ})  # a work tree's own sources
    cli = [sys.executable, "-m", "expoft.cli"]
    learner_cmd = [*cli, "learner", "--preset", "tiny", "--env-steps", "600", "--checkpoint-every", "100",
                   "--out", str(run), "--listen", f"127.0.0.1:{port}", "--no-progress", "--mode", "async",
                   "--actors", "2"]  # fmt: skip

    def start(cmd):
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def actor(journal, slot):
        return start([*cli, "actor", "--learner", f"ws://127.0.0.1:{port}", "--journal", str(journal),
                      "--slot", str(slot), "--max-backoff-s", "1", "--retries", "300"])  # fmt: skip

    journals = [tmp_path / "slot0.jsonl", tmp_path / "slot1.jsonl", tmp_path / "slot1-again.jsonl"]
    procs = [start(learner_cmd), actor(journals[0], 0), actor(journals[1], 1)]
    try:
        _wait_for(lambda: len(_journal(journals[1])) >= 70 and not _journal(journals[1])[-1]["ended"],
                  "slot 1's actor mid-episode after 70 decisions", procs=procs)  # fmt: skip
        procs[2].kill()
        procs[2].wait()
        cut = _journal(journals[1])
        procs[1].send_signal(signal.SIGSTOP)  # slot 0 waits (its link may time out: it reconnects) ...
        procs[2] = actor(journals[2], 1)  # ... while a new process takes slot 1, whatever their speeds
        _wait_for(
            lambda: len(_journal(journals[2])) >= 120,
            "the new slot-1 actor's 120th decision (a checkpoint after the drop)",
            procs=procs,
        )
        procs[0].kill()
        procs[0].wait()
        procs[0] = start([*cli, "learner", "--resume", "--out", str(run), "--listen", f"127.0.0.1:{port}",
                          "--no-progress", "--mode", "async", "--actors", "2"])  # fmt: skip
        procs[1].send_signal(signal.SIGCONT)
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outputs
    finally:
        for p in procs:
            p.kill()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] >= 600
    rows = metrics_rows(run)
    assert any(r.get("phase") == "resume" for r in rows)
    assert any(r.get("phase") == "episode_dropped" and r.get("slot") == 1 for r in rows)

    cfg = config_from_json(json.loads((run / "config.json").read_text()))
    store = CheckpointStore(run / "checkpoints")
    buffer = run_buffer(cfg, offline_data(cfg, progress=False), None)
    store.restore(store.latest_valid(), make_agent(cfg), buffer)
    online = buffer._online
    ids = buffer_ids(online.a["observations"][: online.size], online.a["actions"][: online.size])
    held, where = Counter(ids), {i: n for n, i in enumerate(ids)}
    episodes: dict[tuple, list[dict]] = {}
    for line in (line for path in journals for line in _journal(path)):
        episodes.setdefault((line["session"], line["episode"]), []).append(line)
    cut_ids = [i for line in episodes.pop((cut[-1]["session"], cut[-1]["episode"])) for i in line["ids"]]
    assert all(held[i] == 0 for i in cut_ids)
    completed = [lines for lines in episodes.values() if lines[-1]["ended"]]
    slots_seen = {lines[0]["slot"] for lines in completed}
    assert slots_seen == {0, 1} and len(completed) >= 6
    for lines in completed:
        episode_ids = [i for line in lines for i in line["ids"]]
        assert all(held[i] == 1 for i in episode_ids), "a transition of a completed episode is not held exactly once"
        rows_at = [where[i] for i in episode_ids]
        assert rows_at == list(range(rows_at[0], rows_at[0] + len(rows_at))), "an episode's rows are not together"
    first_obs = {lines[0]["slot"]: lines[0]["ids"][0] for lines in completed if lines[0]["episode"] == 0}
    assert len(set(first_obs.values())) == len(first_obs)  # different reset seeds per slot


def test_several_actors_are_refused_where_they_cannot_work(tmp_path):
    cfg = preset("tiny")
    with pytest.raises(ValueError, match="--mode async"):
        serve_run(cfg, tmp_path / "run", "127.0.0.1:0", mode="sync", actors=2, progress=False)
    with pytest.raises(ValueError, match="--actors must be 1"):
        serve_run(cfg, tmp_path / "run", "127.0.0.1:0", mode="async", actors=0, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a local Ray and a whole learner run (~50 s)
def test_ray_starts_the_actors_and_they_finish_the_run(tmp_path, monkeypatch, rendering):
    """`expoft learner --actors 2 --ray`: a local Ray starts both actor processes, each in its
    slot; the run ends at its budget and the summary lists what each actor did; the training
    videos are in the run's folder (not in a Ray worker's working folder)."""
    pytest.importorskip("ray")
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    cfg = preset("tiny", env_steps=300, video_every=1000)
    summary = serve_run(cfg, tmp_path / "run", "127.0.0.1:0", mode="async", actors=2, ray=True,
                        ray_cpus_per_actor=0.5, progress=False)  # fmt: skip
    assert summary["env_steps"] >= 300
    assert sorted(a["slot"] for a in summary["actors"]) == [0, 1]
    assert all(a["decisions"] > 0 for a in summary["actors"])
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["env_steps"] >= 300
    films = sorted(p.relative_to(tmp_path / "run") for p in (tmp_path / "run" / "actor-videos").rglob("episode_0.*"))
    assert [f.parts[-2] for f in films] == ["slot0", "slot1"]  # each slot's first episode

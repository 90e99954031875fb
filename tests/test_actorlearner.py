"""Learner and actor processes: the run's online loop cut in two over a websocket."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest
import websockets.exceptions
import websockets.sync.client

from expoft.actorlearner.actor import Actor
from expoft.actorlearner.messages import (
    BUSY,
    Busy,
    ProtocolError,
    buffer_ids,
    decision_from_message,
    decision_message,
    expect,
    with_weights,
)
from expoft.actorlearner.serve import serve_run
from expoft.bases.toy import free_port
from expoft.envs.chunks import Transition
from expoft.train.build import make_agent, offline_data
from expoft.train.checkpoint import CheckpointStore
from expoft.train.config import preset
from expoft.train.finetune import finetune, run_buffer
from expoft.train.online_loop import Decision
from expoft.train.rundir import config_from_json

from .conftest import metrics_rows, xla_env
from .test_resume import comparable_rows

LIMIT = 1 << 20
"""The learners of these tests take messages of at most 1 MiB (a tiny run's decisions are far smaller)."""
SMALL = {"env_steps": 120, "eval_every": 60, "log_every": 30, "checkpoint_every": 60, "start_training": 40}


def _learner_in_thread(cfg, out, **kwargs):
    """A learner serving ``cfg`` from a thread; (thread, result dict, the port once listening)."""
    port, result = threading.Event(), {}

    def listening(p):
        result["port"] = p
        port.set()

    def serve():
        try:
            result["summary"] = serve_run(cfg, out, "127.0.0.1:0", progress=False, on_listening=listening, **kwargs)
        except BaseException as exc:  # surfaced by the test
            result["error"] = exc
            port.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert port.wait(300), "the learner never listened"
    if "error" in result:
        raise result["error"]
    return thread, result


@pytest.mark.parametrize("method", ["expo", pytest.param("rlpd", marks=pytest.mark.slow)])
def test_sync_actor_learner_equals_single_process(tmp_path, method, caplog):
    """Known answer: a sync learner with one actor is the single-process loop cut in two: the same
    metrics rows (clock columns aside), on the same seeds, for an agent with a base and one
    without (random first steps drawn by the learner, in order)."""
    from expoft.train.methods import apply_method

    cfg = apply_method(method, preset("tiny", **SMALL, random_steps=20 if method == "rlpd" else 0))
    single = finetune(cfg, tmp_path / "single", progress=False)
    thread, result = _learner_in_thread(cfg, tmp_path / "learner", max_message_bytes=LIMIT)
    _bad_clients_are_refused(result["port"])  # ... and change nothing: the metrics below still match
    holder = _hold_the_learner(result["port"])  # the actor finds it busy, retries, gets in once it leaves
    threading.Timer(1.5, holder.close).start()
    actor = Actor(f"ws://127.0.0.1:{result['port']}", retries=8, backoff_s=0.2, max_backoff_s=0.5, hz=600.0)
    t0 = time.perf_counter()  # hz: a robot's pace, sleeps only
    with caplog.at_level("WARNING", logger="expoft.actorlearner.actor"):
        decisions = actor.run()
    assert any(BUSY in r.getMessage() for r in caplog.records), "the actor was never refused as busy"
    assert time.perf_counter() - t0 >= cfg.env_steps / 600.0
    thread.join(120)
    assert "error" not in result, result.get("error")
    assert decisions == len(actor.latencies) > 0
    with pytest.raises(ValueError, match="--hz"):
        Actor("ws://127.0.0.1:1", hz=0.0)
    assert comparable_rows(tmp_path / "learner") == comparable_rows(tmp_path / "single")
    assert result["summary"]["final_success"] == single["final_success"]
    for name in ("config.json", "summary.json", "learner.json"):
        assert (tmp_path / "learner" / name).exists(), name


@pytest.mark.slow  # two short runs that render (~40 s)
def test_an_actor_films_the_training_episodes_a_single_process_run_films(tmp_path, rendering):
    """`expoft learner --video-every K`: the actor runs the environment, so it films; the same
    episodes, frame for frame, as the single-process run of the same config writes into its run
    folder, into the actor's --video-dir/<run id>/slot0/."""
    from expoft.report.video import read_video

    cfg = preset("tiny", env_steps=60, eval_every=60, log_every=30, checkpoint_every=60, start_training=40,
                 episode_steps=20, video_every=2, video_format="mp4")  # fmt: skip
    finetune(cfg, tmp_path / "single", progress=False)
    thread, result = _learner_in_thread(cfg, tmp_path / "learner")
    Actor(f"ws://127.0.0.1:{result['port']}", retries=2, video_dir=tmp_path / "videos").run()
    thread.join(120)
    assert "error" not in result, result.get("error")
    (filmed,) = (tmp_path / "videos").glob("*/slot0")
    names = sorted(p.name for p in filmed.iterdir())
    assert names == ["episode_0.mp4", "episode_2.mp4"]  # 3 episodes of 20 steps, every 2nd
    assert names == sorted(p.name for p in (tmp_path / "single" / "videos").iterdir())
    for name in names:
        np.testing.assert_array_equal(read_video(filmed / name), read_video(tmp_path / "single" / "videos" / name))
    assert filmed.parent.name == json.loads((tmp_path / "learner" / "learner.json").read_text())["run_id"][:12]


def _hold_the_learner(port: int):
    """A client that says hello, takes its welcome and stays: the learner's one session, held."""
    from expoft.bases.wire import packb, unpackb

    deadline = time.monotonic() + 30
    while True:  # the last bad client's session may still be closing: busy for a moment
        ws = websockets.sync.client.connect(f"ws://127.0.0.1:{port}", max_size=None, compression=None, legacy=True)
        ws.send(packb({"type": "hello", "protocol": 1, "actor": "holder", "session": "holder"}))
        reply = unpackb(ws.recv(timeout=30))
        if reply["type"] == "welcome":
            return ws
        ws.close()
        assert reply["message"] == BUSY and time.monotonic() < deadline, reply
        time.sleep(0.1)


def _bad_clients_are_refused(port: int) -> None:
    """Malformed input at a serving learner: each sender gets an error that says what is wrong,
    and the learner goes on serving."""
    from expoft.bases.wire import packb, unpackb

    url = f"ws://127.0.0.1:{port}"

    def refusal(*messages) -> str:
        with websockets.sync.client.connect(url, max_size=None, compression=None) as ws:
            for message in messages:
                ws.send(message)
            reply = unpackb(ws.recv(timeout=30))
            while reply["type"] == "welcome":
                reply = unpackb(ws.recv(timeout=30))
        assert reply["type"] == "error", reply
        return reply["message"]

    assert "undecodable" in refusal(b"\xc1 not msgpack")
    assert "expected a 'hello'" in refusal(packb({"type": "decision"}))
    assert "protocol 99" in refusal(packb({"type": "hello", "protocol": 99, "actor": "x", "session": "s"}))
    hello = packb({"type": "hello", "protocol": 1, "actor": "bad", "session": "bad"})
    bad_shape = {"type": "decision", "seq": 0, "obs": np.zeros((1, 99), np.float32), "actions": np.zeros((1, 5))}
    assert "shape" in refusal(hello, packb(bad_shape))
    with websockets.sync.client.connect(url, max_size=None, compression=None) as ws:  # oversized: cut off
        ws.send(b"\x00" * (LIMIT + 1))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # "message too big"


def _decision(k=2, obs_dim=3, action_dim=2, end=False):
    rng = np.random.default_rng(0)
    ts = [
        Transition(
            rng.normal(size=obs_dim).astype(np.float32),
            rng.uniform(-1, 1, action_dim).astype(np.float32),
            float(i),
            rng.normal(size=obs_dim).astype(np.float32),
            False,
            end and i == k - 1,
        )  # fmt: skip
        for i in range(k)
    ]
    return Decision(ts, end, False, True, False, 0.001)


def test_a_decision_message_round_trips_and_bad_ones_are_refused():
    message = decision_message(7, 1, 3, _decision(end=True))
    back = decision_from_message(message, 3, 2, exec_len=2)
    assert back.episode_ended and back.edited and len(back.transitions) == 2
    np.testing.assert_array_equal(back.transitions[1].action, message["actions"][1])
    assert back.simulator_success is None  # no learned detector
    judged = decision_message(7, 1, 3, dataclasses.replace(_decision(end=True), simulator_success=True))
    assert decision_from_message(judged, 3, 2, exec_len=2).simulator_success is True

    def refused(change, match, **kwargs):
        with pytest.raises(ProtocolError, match=match):
            decision_from_message({**message, **change}, kwargs.get("obs_dim", 3), 2, exec_len=2)

    refused({"actions": message["actions"][:, :1]}, "actions has shape")
    refused({"actions": message["actions"] * 3}, r"in \[-1, 1\]")
    refused({"obs": np.full((2, 3), np.nan, np.float32)}, "NaN")
    refused({"rewards": "1"}, "must be ndarray")
    refused({"truncated": np.array([True, False])}, "only a decision's last step")
    refused({"episode_ended": False}, "episode_ended must say")
    refused({"type": "hello"}, "expected a 'decision'")
    refused({"simulator_success": 1}, "simulator_success must be")
    refused({}, "obs has shape", obs_dim=4)


def test_an_error_that_says_retry_is_busy_and_only_that_one():
    """The one refusal an actor retries: an error message with ``"retry": true``."""
    with pytest.raises(Busy, match=BUSY):
        expect({"type": "error", "message": BUSY, "retry": True}, "welcome")
    for retry in (False, None, 1, "yes"):
        with pytest.raises(ProtocolError, match="refused: no") as refused:
            expect({"type": "error", "message": "no", "retry": retry}, "welcome")
        assert not isinstance(refused.value, Busy), retry


@pytest.mark.parametrize(
    "algorithm",
    # the pixel agent (~10 s) in the slow tier: the default suite stays under 10 minutes
    ["expo", pytest.param("expo-pixels", marks=pytest.mark.slow), "rlpd", "fql", "dsrl", "residual", "bc"],
)
def test_an_actor_gets_exactly_the_arrays_it_acts_with(algorithm):
    """The weights sent to actors are the arrays the acting rule reads: with every other array of
    the agent set to NaN the actions are the same, bit for bit, and an actor's agent given them
    (``with_weights``) acts as the learner's does. EXPO's are its EMA base, its edit policy's
    parameters and its target critic: not its online networks or optimiser states."""
    import jax

    from expoft.actorlearner.messages import acting_keys, weights_of
    from expoft.agents import create_agent
    from expoft.agents.common import act
    from expoft.obs import PixelSpec
    from expoft.obs import zeros as blank_obs
    from expoft.train.config import PRESETS, TINY_AGENT, TINY_EXPO

    pixels = algorithm == "expo-pixels"
    algorithm = algorithm.removesuffix("-pixels")
    cfg = PRESETS["tiny-pixels"].agent if pixels else TINY_AGENT
    cfg = dataclasses.replace(cfg, base_training="frozen" if algorithm in ("dsrl", "residual") else "all")
    spec = PixelSpec(image_size=32, proprio_dim=3) if pixels else 6
    learner = create_agent(algorithm, cfg, spec, 2, 0, TINY_EXPO if algorithm == "expo" else None)
    actor = create_agent(algorithm, cfg, spec, 2, 1, TINY_EXPO if algorithm == "expo" else None)  # other init
    rng = np.random.default_rng(0)
    obs = jax.tree.map(lambda x: rng.uniform(0, 255 if x.dtype == np.uint8 else 1, x.shape).astype(x.dtype),
                       blank_obs(spec, 4))  # fmt: skip
    key = jax.random.PRNGKey(3)
    expected = np.asarray(act(learner, obs, key)[0])  # jitted: one compilation for the three agents

    keys = acting_keys(learner)
    paths = jax.tree_util.tree_flatten_with_path(learner)[0]
    assert keys and keys <= {jax.tree_util.keystr(p) for p, _ in paths}
    poisoned = jax.tree_util.tree_map_with_path(
        lambda p, x: x if jax.tree_util.keystr(p) in keys or not np.issubdtype(np.asarray(x).dtype, np.floating)
        else np.full(np.shape(x), np.nan, np.asarray(x).dtype), learner)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(act(poisoned, obs, key)[0]), expected)
    np.testing.assert_array_equal(np.asarray(act(with_weights(actor, weights_of(learner)), obs, key)[0]), expected)
    if algorithm == "expo":  # on pixels the edit policy also reads the online critic's image encoder
        groups = {"base_ema", "edit", "target_critic"} | ({"critic"} if pixels else set())
        assert {k.split("[")[0].split(".")[1] for k in keys} == groups
        assert all(".opt_state" not in k for k in keys)
        sent = sum(a.nbytes for a in weights_of(learner).values())
        assert sent < 0.4 * sum(np.asarray(x).nbytes for _, x in paths)


def test_a_robot_actor_refuses_the_simulated_person():
    """The demo preset's simulated person (OGBench's oracle) reads the simulator: an actor with a
    robot of its own and no person is refused with what to do; with --teleop, or none asked, it is not."""
    from expoft.actorlearner.actor import check_person

    demo = preset("demo")
    assert demo.intervene == "scripted"
    robot = object()
    for intervene in ("scripted", "keys"):
        with pytest.raises(ValueError, match="--intervene none, or give this actor a person with --teleop"):
            check_person(dataclasses.replace(demo, intervene=intervene), robot, None)
    check_person(demo, robot, intervener=object())  # a person at the keys
    check_person(demo, None, None)  # the simulator: the oracle can drive it
    check_person(dataclasses.replace(demo, intervene="none"), robot, None)


def test_weights_of_another_agent_are_refused():
    cfg = preset("tiny")
    agent = make_agent(cfg)
    from expoft.actorlearner.messages import weights_of

    weights = weights_of(agent)
    assert with_weights(agent, weights) is not None
    key = next(iter(weights))
    with pytest.raises(ProtocolError, match="missing"):
        with_weights(agent, {k: v for k, v in weights.items() if k != key})
    with pytest.raises(ProtocolError, match="expected float32"):
        with_weights(agent, {**weights, key: np.zeros((1, 1), np.float64)})


def _journal(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for(predicate, what, timeout=300, procs=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        for p in procs:
            assert p.poll() is None, f"{p.args[3]} exited ({p.returncode}) while waiting for {what}: {p.stdout.read()}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_actor_learner_loses_no_transition(tmp_path):
    """Two processes over a real socket; the actor is killed with SIGKILL mid-episode and another
    one started, later the learner is killed with SIGKILL and restarted with --resume: the run
    completes, every transition of every episode an actor completed is in the learner's replay
    buffer exactly once, and the episode the dead actor left open is in it not at all."""
    port, run = free_port(), tmp_path / "run"
    # the learner is killed: a copy of the XLA cache of its own, shared with its restarted self
    env = {"EXPOFT_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin", **xla_env(tmp_path / "xla-cache")}
    cli = [sys.executable, "-m", "expoft.cli"]
    learner_cmd = [*cli, "learner", "--preset", "tiny", "--env-steps", "400", "--checkpoint-every", "100",
                   "--out", str(run), "--listen", f"127.0.0.1:{port}", "--no-progress"]  # fmt: skip

    def start(cmd):
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def actor(journal):  # retrying every second (for 5 minutes): no idle wait for a learner (re)starting
        return start([*cli, "actor", "--learner", f"ws://127.0.0.1:{port}", "--journal", str(journal),
                      "--max-backoff-s", "1", "--retries", "300"])  # fmt: skip

    first, second = tmp_path / "actor1.jsonl", tmp_path / "actor2.jsonl"
    procs = [start(learner_cmd), actor(first)]
    try:
        _wait_for(lambda: len(_journal(first)) >= 70 and not _journal(first)[-1]["ended"],
                  "the first actor mid-episode after 70 decisions", procs=procs)  # fmt: skip
        procs[1].kill()
        procs[1].wait()
        cut = _journal(first)  # read after the kill: the actor wrote each line before sending it
        procs[1] = actor(second)
        _wait_for(lambda: len(_journal(second)) >= 180, "the second actor's 180th decision", procs=procs)
        procs[0].kill()
        procs[0].wait()
        procs[0] = start([*cli, "learner", "--resume", "--out", str(run), "--listen", f"127.0.0.1:{port}",
                          "--no-progress"])  # fmt: skip
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
    finally:
        for p in procs:
            p.kill()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] >= 400
    assert "lost the learner" in outputs[1] and "resending" in outputs[1], outputs[1][-2000:]
    assert any(r.get("phase") == "resume" for r in metrics_rows(run))

    cfg = config_from_json(json.loads((run / "config.json").read_text()))
    store = CheckpointStore(run / "checkpoints")
    buffer = run_buffer(cfg, offline_data(cfg, progress=False), None)
    store.restore(store.latest_valid(), make_agent(cfg), buffer)
    online = buffer._online
    held = Counter(buffer_ids(online.a["observations"][: online.size], online.a["actions"][: online.size]))
    episodes: dict[tuple, list[dict]] = {}
    for line in _journal(first) + _journal(second):
        episodes.setdefault((line["session"], line["episode"]), []).append(line)
    # The dead actor's last episode: the learner holds all of it once (it took its last decision
    # before the kill) or none of it (dropped whole); every other completed episode, all once.
    last = (cut[-1]["session"], cut[-1]["episode"])
    cut_ids = [i for line in episodes.pop(last) for i in line["ids"]]
    assert all(held[i] == 0 for i in cut_ids) or (cut[-1]["ended"] and all(held[i] == 1 for i in cut_ids))
    if not cut[-1]["ended"] and len(cut_ids) >= 2:  # the learner had taken its first steps: dropped
        assert any(r.get("phase") == "episode_dropped" for r in metrics_rows(run))
    completed = [lines for lines in episodes.values() if lines[-1]["ended"]]
    assert len(completed) >= 4
    for lines in completed:
        for i in (i for line in lines for i in line["ids"]):
            assert held[i] == 1, f"a transition of a completed episode is held {held[i]} times"


@pytest.mark.slow  # a whole learner-actor run (~40 s); the mechanics are in test_robot / test_teleop
def test_an_actor_with_its_own_robot_env_runs_a_learner_to_the_end(tmp_path, monkeypatch):
    """`expoft actor --robot MODULE:FUNCTION`: the template arm (the simulated cube arm behind
    its safety limits and a file emergency stop) in place of the run's simulator."""
    from expoft.robot.interface import load_robot

    monkeypatch.setenv("EXPOFT_STOP_FILE", str(tmp_path / "STOP"))
    cfg = preset("tiny", **SMALL)
    thread, result = _learner_in_thread(cfg, tmp_path / "run")
    actor = Actor(f"ws://127.0.0.1:{result['port']}", retries=2, robot=load_robot("expoft.robot.template:make"))
    assert actor.run() > 0
    thread.join(120)
    assert result["summary"]["env_steps"] >= 120
    with pytest.raises(ValueError, match="MODULE:FUNCTION"):
        load_robot("no_colon")
    with pytest.raises(ValueError, match="no_such_module"):
        load_robot("no_such_module:make")


@pytest.mark.slow  # a whole learner-actor run (~40 s); the mechanics are in test_robot / test_teleop
def test_a_person_with_keys_drives_and_labels_episodes_through_the_actor(tmp_path):
    """Synthetic key events stand in for the person: take over and drive (steps flagged
    intervened in the learner's buffer), ask to re-record an episode (the learner drops it), and
    label one a success (it ends there, successful)."""
    from expoft.robot.teleop import KEYBOARD, DeviceEvent, HumanIntervener, ScriptedEvents

    key = lambda k: [DeviceEvent("key", k)]  # noqa: E731
    script = [[]] * 10 + [key("t")] + [key("w")] * 10 + [[]] * 4 + [key("x")]  # drive, then re-record
    script += [[]] * 20 + [key("t")] + [key("d")] * 5 + [key("t")] + [[]] * 5 + [key("y")]  # drive, hand back, success
    person = HumanIntervener(ScriptedEvents(script), KEYBOARD, 5)
    thread, result = _learner_in_thread(preset("tiny", **SMALL), tmp_path / "run")
    Actor(f"ws://127.0.0.1:{result['port']}", retries=2, intervener=person).run()
    thread.join(120)
    rows = metrics_rows(tmp_path / "run")
    dropped = [r for r in rows if r.get("phase") == "episode_dropped"]
    assert len(dropped) == 1 and "again" in dropped[0]["why"] and dropped[0]["dropped_steps"] == 26
    train = [r for r in rows if "train/intervened_steps" in r]
    # 1 + 5 steps driven in the kept episode (the key that hands back is the policy's step); 33 steps labelled
    assert train[-1]["train/intervened_steps"] == 6 and train[-1]["train/successful_online_steps"] >= 33
    assert person.health["takeovers"] == 2


@pytest.mark.slow  # a whole learner-actor run (~30 s)
def test_async_learner_updates_while_the_actor_acts(tmp_path, monkeypatch):
    """Async mode: the run finishes, the learner made update calls in its own thread and never
    more than the schedule allows, the actor got new weights along the way, and it never waited
    for an evaluation or a checkpoint (each made 3 s slower here): they run in threads of their
    own, and a checkpoint becomes the durable one only once it is written."""
    from expoft.actorlearner.learner import CHECKPOINT_WRITER
    from expoft.train.online_loop import OnlineLearner

    evaluation, write = OnlineLearner.evaluation, CheckpointStore.write
    writers = []

    def slow_evaluation(self, agent, last=False):
        time.sleep(3.0)
        return evaluation(self, agent, last)

    def slow_write(self, pending):
        writers.append((pending.step, threading.current_thread().name))
        time.sleep(3.0)
        return write(self, pending)

    monkeypatch.setattr(OnlineLearner, "evaluation", slow_evaluation)
    monkeypatch.setattr(CheckpointStore, "write", slow_write)
    cfg = preset("tiny", **SMALL)
    thread, result = _learner_in_thread(cfg, tmp_path / "run", mode="async")
    actor = Actor(f"ws://127.0.0.1:{result['port']}", retries=2)
    actor.run()
    thread.join(120)
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    allowed = (summary["env_steps"] - cfg.start_training + 1) // cfg.update_period
    assert 0 < summary["update_calls"] <= allowed
    assert actor.version > 0 and 0 < actor.latency_ms()["longest_stall_ms"] < 2000
    evals = [r["env_step"] for r in metrics_rows(tmp_path / "run") if "eval/success" in r]
    assert evals == [0, 60, 120], evals  # before RL, at eval_every, and the last one, in order
    assert summary["final_base_success"] is not None
    # before RL (before the server starts) and the final one in place; the one due at 60 by the writer
    assert [name for _, name in writers[1:-1]] == [CHECKPOINT_WRITER], writers
    assert 60 <= writers[1][0] < 120 and writers[-1][0] == 120
    assert CheckpointStore(tmp_path / "run" / "checkpoints").steps() == [0, writers[1][0], 120]


@pytest.mark.slow  # a base server, a single-process run and a learner run (~45 s)
def test_a_learner_and_its_actor_around_an_external_base(tmp_path):
    """`expoft learner --external-base ws://...`: the actor asks the base server for its own
    candidates, the learner for its targets' and evaluations'; with the same seeds a sync run is
    the single-process run (the toy base draws from the request's seed)."""
    import subprocess

    from expoft.bases.toy import demo_command, free_port
    from expoft.train.config import TINY_AGENT

    port = free_port()
    server = subprocess.Popen(demo_command(port, 28, 5, chunk_len=1), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        cfg = preset("tiny", **SMALL, agent=dataclasses.replace(TINY_AGENT, base_training="frozen"),
                     external_base=f"ws://127.0.0.1:{port}")  # fmt: skip
        finetune(cfg, tmp_path / "single", progress=False)
        thread, result = _learner_in_thread(cfg, tmp_path / "learner")
        actor = Actor(f"ws://127.0.0.1:{result['port']}", retries=2)
        assert actor.run() > 0 and actor.external.latency_ms()["act"]["calls"] > 0
        thread.join(120)
        # async: the update thread asks the server for its targets' samples too, one call per update
        thread, async_result = _learner_in_thread(cfg, tmp_path / "async", mode="async")
        Actor(f"ws://127.0.0.1:{async_result['port']}", retries=2).run()
        thread.join(120)
    finally:
        server.kill()
    assert "error" not in result, result.get("error")
    assert comparable_rows(tmp_path / "learner") == comparable_rows(tmp_path / "single")
    summary = result["summary"]
    assert summary["external_base_latency_ms"]["update"]["calls"] == summary["update_calls"] > 0
    assert "error" not in async_result, async_result.get("error")
    summary = async_result["summary"]
    assert summary["external_base_latency_ms"]["update"]["calls"] == summary["update_calls"] > 0


@pytest.mark.slow  # a learner-actor run (~25 s)
def test_an_async_learner_takes_target_candidates_from_the_cache(tmp_path, monkeypatch):
    """`--target-cache-refresh` under an async learner: every update call looks its base samples up
    in the cache, as of the buffer it drew the pool from, while the actor adds transitions."""
    from expoft.train.target_cache import TargetCandidateCache

    lookup, looked_up = TargetCandidateCache.lookup, []

    def recording(self, agent, pool, call, total_added=None):
        looked_up.append((call, total_added))
        return lookup(self, agent, pool, call, total_added)

    monkeypatch.setattr(TargetCandidateCache, "lookup", recording)
    cfg = preset("tiny", **SMALL)
    cfg = dataclasses.replace(cfg, expo=dataclasses.replace(cfg.expo, target_cache_refresh=2))
    thread, result = _learner_in_thread(cfg, tmp_path / "run", mode="async")
    Actor(f"ws://127.0.0.1:{result['port']}", retries=2).run()
    thread.join(120)
    assert "error" not in result, result.get("error")
    calls = result["summary"]["update_calls"]
    assert [c for c, _ in looked_up] == list(range(1, calls + 1)) and calls > 0
    assert all(cfg.start_training <= total <= cfg.env_steps for _, total in looked_up)

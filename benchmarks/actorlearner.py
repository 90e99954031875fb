"""Learner-actor transport (issue "EXPO-FT on a robot"): learner ingest, weight broadcast, acting
latency. Run by hand, not by CI; one JSON line per figure with the machine and settings.

- ``ingest_transitions_per_s``: a learner (state observations, cube-single sizes, no update
  calls: start_training beyond the budget) taking decisions from a synthetic actor that sends
  them as fast as the answers come (no environment): decode, check, replay buffer, answer, over
  a loopback websocket. The learner side's own cost, chunks of ``--exec-len`` steps per message.
- ``fleet_ingest_transitions_per_s``: the same with ``--actors`` synthetic actor processes at a
  learner of several actors (async, ``expoft learner --actors N``; episodes staged per actor and
  written whole at their end), messages encoded before the clock starts: the learner's rate with
  N connections, from the go signal until the budget (N x decisions) is in its buffer.
- ``weights_mb`` / ``weights_roundtrip_ms``: the weights of the published-size EXPO agent (the
  arrays an actor acts with: EMA base, edit policy, target critics) encoded, sent over a
  loopback websocket, decoded and checked into an agent: what one weight broadcast costs
  (median of ``--repeats``).

    python benchmarks/actorlearner.py                # median of 5, chunks of 1 and 5
    python benchmarks/actorlearner.py --actors 1 2 4 --only-fleet
    python benchmarks/actorlearner.py --only-weights --repeats 9
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import tempfile
import threading
import time

import numpy as np
import websockets.sync.client
import websockets.sync.server

from expoft.actorlearner.messages import MAX_MESSAGE_BYTES, PROTOCOL, decode, weights_of, with_weights
from expoft.actorlearner.serve import serve_run
from expoft.agents.registry import create_agent
from expoft.bases.wire import packb
from expoft.train.config import RunConfig, preset, with_agent_settings


def connect(url: str):
    return websockets.sync.client.connect(url, max_size=MAX_MESSAGE_BYTES, compression=None, legacy=True)


def recv(ws) -> dict:
    return decode(ws.recv())


def emit(metric: str, value: float, unit: str, **extra) -> None:
    print(json.dumps({"metric": metric, "value": round(value, 3), "unit": unit, "machine": platform.machine(),
                      "cpus": os.cpu_count(), **extra}), flush=True)  # fmt: skip


def ingest(decisions: int, exec_len: int, out: str) -> float:
    """Transitions per second a learner takes from a synthetic actor."""
    steps = decisions * exec_len
    cfg = preset("tiny", env_steps=steps, start_training=10 * steps, eval_every=10 * steps, log_every=10 * steps,
                 checkpoint_every=10 * steps, episode_steps=200)  # fmt: skip
    cfg = with_agent_settings(cfg, chunk_len=exec_len, exec_len=exec_len)
    port, ready = {}, threading.Event()

    def listening(p: int) -> None:
        port["p"] = p
        ready.set()

    thread = threading.Thread(
        target=lambda: serve_run(cfg, out, "127.0.0.1:0", progress=False, on_listening=listening), daemon=True
    )
    thread.start()
    ready.wait(600)
    rng = np.random.default_rng(0)
    ws = connect(f"ws://127.0.0.1:{port['p']}")
    ws.send(packb({"type": "hello", "protocol": PROTOCOL, "actor": "bench", "session": "bench"}))
    welcome = recv(ws)
    step, start = welcome["step"], time.perf_counter()
    for _ in range(decisions):
        message = synthetic_decision(rng, step, exec_len)
        ws.send(packb(message))
        recv(ws)
        step += exec_len
    seconds = time.perf_counter() - start
    ws.close()
    thread.join(600)
    return steps / seconds


def synthetic_decision(rng: np.random.Generator, step: int, exec_len: int, episode: int = 200) -> dict:
    """A decision message of random cube-single-sized states at env step ``step``; episodes of
    ``episode`` steps."""
    end = (step + exec_len) % episode == 0
    return {
        "type": "decision", "seq": step, "episode": step // episode, "version": 0,
        "obs": rng.normal(size=(exec_len, 28)).astype(np.float32),
        "next_obs": rng.normal(size=(exec_len, 28)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (exec_len, 5)).astype(np.float32),
        "rewards": np.zeros(exec_len), "terminated": np.zeros(exec_len, bool),
        "truncated": np.arange(exec_len) == exec_len - 1 if end else np.zeros(exec_len, bool),
        "intervened": np.zeros(exec_len, bool), "success": False, "episode_ended": end,
        "edited": None, "not_first": None, "act_seconds": 0.0,
    }  # fmt: skip


def _synthetic_actor(url: str, slot: int, decisions: int, exec_len: int, ready, go) -> None:
    rng = np.random.default_rng(slot)
    messages = [packb(synthetic_decision(rng, k * exec_len, exec_len)) for k in range(decisions)]
    ws = connect(url)
    ws.send(packb({"type": "hello", "protocol": PROTOCOL, "actor": "bench", "session": f"bench{slot}", "slot": slot}))
    recv(ws)
    ready.release()
    go.wait()
    for message in messages:
        ws.send(message)
        if recv(ws)["done"]:
            break
    ws.close()


def fleet_ingest(actors: int, decisions: int, exec_len: int, out: str) -> float:
    """Transitions per second a learner of ``actors`` actors takes from as many synthetic actor
    processes, each sending ``decisions`` decisions (episodes of 200 steps), rounded down to whole
    episodes: the learner counts an episode's steps at its end."""
    decisions = max(1, decisions * exec_len // 200) * 200 // exec_len
    steps = actors * decisions * exec_len
    cfg = preset("tiny", env_steps=steps, start_training=10 * steps, eval_every=10 * steps, log_every=10 * steps,
                 checkpoint_every=10 * steps, episode_steps=200)  # fmt: skip
    cfg = with_agent_settings(cfg, chunk_len=exec_len, exec_len=exec_len)
    port: dict[str, int] = {}
    listening = threading.Event()
    summary: dict[str, dict] = {}
    end: list[float] = []

    def on_listening(p: int) -> None:
        port["p"] = p
        listening.set()

    def serve() -> None:
        summary["run"] = serve_run(cfg, out, "127.0.0.1:0", mode="async", actors=actors, progress=False,
                                   on_listening=on_listening)  # fmt: skip
        end.append(time.perf_counter())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    listening.wait(600)
    spawn = multiprocessing.get_context("spawn")
    ready, go = spawn.Semaphore(0), spawn.Event()
    procs = [spawn.Process(target=_synthetic_actor, args=(f"ws://127.0.0.1:{port['p']}", k, decisions, exec_len,
                                                         ready, go)) for k in range(actors)]  # fmt: skip
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    start = time.perf_counter()
    go.set()
    thread.join(600)
    for p in procs:
        p.join(60)
    return summary["run"]["env_steps"] / (end[0] - start)


def weights_roundtrip(repeats: int) -> tuple[float, float]:
    """(MB, median ms) of one published-size agent's weights over a loopback websocket."""
    cfg = RunConfig()
    agent = create_agent("expo", cfg.agent, 28, 5, 0, cfg.expo)
    template = create_agent("expo", cfg.agent, 28, 5, 1, cfg.expo)

    def echo(ws):
        for raw in ws:
            ws.send(raw)

    server = websockets.sync.server.serve(echo, "127.0.0.1", 0, max_size=MAX_MESSAGE_BYTES, compression=None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.socket.getsockname()[1]
    ws = connect(f"ws://127.0.0.1:{port}")
    times, size = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        data = packb({"weights": weights_of(agent)})
        ws.send(data)
        with_weights(template, recv(ws)["weights"])
        times.append(time.perf_counter() - start)
        size = len(data)
    ws.close()
    server.shutdown()
    return size / 2**20, 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--actors", type=int, nargs="*", default=[1, 2, 4], help="fleet sizes for fleet ingest")
    parser.add_argument("--only-fleet", action="store_true", help="measure the fleet ingest only")
    parser.add_argument("--only-weights", action="store_true", help="measure the weight broadcast only")
    args = parser.parse_args()
    for n in [] if args.only_weights else args.actors:
        with tempfile.TemporaryDirectory() as out:
            rates = [fleet_ingest(n, args.decisions // n, 5, f"{out}/run{i}") for i in range(3)]
        emit("fleet_ingest_transitions_per_s", float(np.median(rates)), "transitions/s", exec_len=5, actors=n,
             decisions=args.decisions, runs=3, affinity=len(os.sched_getaffinity(0)))  # fmt: skip
    if args.only_fleet:
        return
    for exec_len in () if args.only_weights else (1, 5):
        with tempfile.TemporaryDirectory() as out:
            rates = [ingest(args.decisions, exec_len, f"{out}/run{i}") for i in range(3)]
        emit("ingest_transitions_per_s", float(np.median(rates)), "transitions/s", exec_len=exec_len,
             decisions=args.decisions, actors=1, runs=3)  # fmt: skip
    mb, ms = weights_roundtrip(args.repeats)
    emit(
        "weights_mb",
        mb,
        "MiB",
        agent="expo published (10 critics 256x3, base 256x3, edit 256x3)",
        arrays="what acting reads: EMA base, edit policy, target critics",
    )
    emit("weights_roundtrip_ms", ms, "ms", repeats=args.repeats, what="encode, loopback send and echo, decode, check")


if __name__ == "__main__":
    main()

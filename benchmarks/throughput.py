"""EXPO compute (protocol P3): update-call speed, action latency, compile time. Run by hand.

    python benchmarks/throughput.py                   # published and fast variants
    python benchmarks/throughput.py --variants fast --calls 10

Shapes are the published state setting: observation 37-d (cube-double), action 5-d,
batch 256, UTD 20, 10 critics of (256, 256, 256), 8 + 8 candidates. Variants differ only in
the speed options of ``EXPOConfig``:

- ``published``: flow base, 10 Euler steps everywhere, every critic minibatch fresh and
  scored at every critic step (what the published code computes, on a flow base);
- ``published-ddpm``: the same with the DDPM base (T = 10), the published code's base;
- ``fast``: 1 Euler step for TD-target candidates, a pool of 1024 transitions per update
  call whose target candidates are drawn and scored once per call.

Prints one JSON line per figure (medians over ``--calls`` timed update calls after one
warm-up call, and over ``--act-calls`` single-observation action selections) and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import jax
import numpy as np

from expoft.agents.expo import EXPOAgent, EXPOConfig, act, update
from expoft.data.replay import ChunkBatch

OBS_DIM, ACTION_DIM = 37, 5
VARIANTS = {
    "published": EXPOConfig(),
    "published-ddpm": EXPOConfig(base="ddpm"),
    "fast": EXPOConfig(target_flow_steps=1, target_pool_size=1024, targets_per_call=True),
}


def random_pool(cfg: EXPOConfig, rng: np.random.Generator) -> ChunkBatch:
    p = cfg.pool_size
    return ChunkBatch(
        observations=rng.normal(size=(p, OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-1, 1, (p, 1, ACTION_DIM)).astype(np.float32),
        rewards=(rng.random(p) < 0.1).astype(np.float32),
        discounts=np.full(p, cfg.discount, np.float32),
        masks=np.ones(p, np.float32),
        next_observations=rng.normal(size=(p, OBS_DIM)).astype(np.float32),
        valid=np.ones((p, 1), np.float32),
        offline=np.arange(p) < cfg.pool_offline_count,
    )


def measure(name: str, cfg: EXPOConfig, calls: int, act_calls: int) -> list[dict]:
    rng = np.random.default_rng(0)
    agent = EXPOAgent.create(cfg, OBS_DIM, ACTION_DIM)
    start = time.perf_counter()
    agent, metrics = update(agent, random_pool(cfg, rng))
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(calls):
        pool = random_pool(cfg, rng)
        start = time.perf_counter()
        agent, metrics = update(agent, pool)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    call_s = float(np.median(times))

    obs = rng.normal(size=(1, OBS_DIM)).astype(np.float32)
    start = time.perf_counter()
    jax.block_until_ready(act(agent, obs, jax.random.PRNGKey(0)))
    act_compile_s = time.perf_counter() - start
    latencies = []
    for i in range(act_calls):
        start = time.perf_counter()
        jax.block_until_ready(act(agent, obs, jax.random.PRNGKey(i + 1)))
        latencies.append(time.perf_counter() - start)
    base = {"variant": name, "utd": cfg.utd, "batch": cfg.batch_size}
    return [
        {**base, "figure": "update_call_s", "value": round(call_s, 4), "runs": calls},
        {**base, "figure": "critic_step_ms", "value": round(1000 * call_s / cfg.utd, 2)},
        {**base, "figure": "critic_steps_per_s", "value": round(cfg.utd / call_s, 2)},
        {**base, "figure": "update_compile_s", "value": round(compile_s - call_s, 2)},
        {**base, "figure": "act_p50_ms", "value": round(1000 * float(np.percentile(latencies, 50)), 3)},
        {**base, "figure": "act_p99_ms", "value": round(1000 * float(np.percentile(latencies, 99)), 3)},
        {**base, "figure": "act_compile_s", "value": round(act_compile_s, 2)},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="published,fast", help=f"comma list of {sorted(VARIANTS)}")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--act-calls", type=int, default=300)
    args = parser.parse_args()
    rows = []
    for name in args.variants.split(","):
        for row in measure(name, VARIANTS[name], args.calls, args.act_calls):
            row["device"] = jax.devices()[0].platform
            row["cpus"] = os.cpu_count()
            print(json.dumps(row), flush=True)
            rows.append(row)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"figure": "peak_rss_mb", "value": round(peak_mb)}))
    print(f"\n{'variant':<16}{'figure':<22}value")
    for r in rows:
        print(f"{r['variant']:<16}{r['figure']:<22}{r['value']}")


if __name__ == "__main__":
    main()

"""EXPO compute (protocol P3). Run by hand, not by CI.

    python benchmarks/throughput.py                      # the default preset's agent
    python benchmarks/throughput.py --variant fast exact old-fast --loop-steps 0   # in one run
    python benchmarks/throughput.py --variant published-ddpm --calls 3

Shapes are the published state setting: observation 37-d (cube-double), action 5-d,
batch 256, UTD 20, 10 critics of (256, 256, 256), 8 + 8 candidates. Variants differ only in
the speed options of ``AgentConfig`` and ``EXPOConfig``:

- ``published``: flow base with 10 Euler steps everywhere, every critic minibatch fresh and
  scored at every critic step (no speed options);
- ``published-ddpm``: the same on the DDPM base (T = 10), the published code's base;
- ``fast``: the default preset's agent: the published update with the target-candidate cache
  (``target_cache_refresh`` 20, the default since 2026-12-06, seventh session): ``critic_step_ms``
  is then the mean over ``--calls`` calls after a first refresh period (refills included) on
  pools from a buffer of 5000 transitions, divided by UTD;
- ``exact``: the same without the cache (the default from 2026-12-05 to 2026-12-06: every
  candidate drawn afresh at every critic step, as ``published`` but on the default agent);
- ``qc-exact``: QC's agent (32 base samples, no edit, chunks of 5 executed whole) without the
  cache: the update of P2's offline phase (its 100k+ offline transitions rarely hit the cache);
- ``old-fast``: the speed options of the grids before 2026-12-05 (1 Euler step for target
  candidates: the mean action, not the base's samples; a pool of 1024; targets once per call).

Each figure is one JSON line on stdout with exactly the keys ``metric``, ``value``, ``unit``,
``variant``; a table follows on stderr. ``critic_step_ms`` is the median over ``--calls``
update calls (after a warm-up call) divided by UTD; action latency percentiles come from
``--act-calls`` single-observation selections; ``env_steps_per_s`` runs the whole loop (env
step, OTF action, buffer insert, pool sampling, one update call per env step as in EXPO) on
cube-double task 1 for ``--loop-steps`` steps; ``eval_env_steps_per_s`` times ``evaluate`` (the
run's evaluation loop) for ``--eval-episodes`` full-length episodes there; ``peak_rss_mb`` is the process peak so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time

import jax
import numpy as np

from expoft.agents.config import AgentConfig
from expoft.agents.expo import EXPOAgent, EXPOConfig, act, update
from expoft.data.chunk_sampling import ChunkBatch
from expoft.data.replay import ReplayBuffer
from expoft.envs.make import make_env
from expoft.train.config import RunConfig
from expoft.train.evaluate import evaluate
from expoft.train.target_cache import TargetCandidateCache

OBS_DIM, ACTION_DIM = 37, 5
VARIANTS: dict[str, tuple[AgentConfig, EXPOConfig]] = {
    "published": (AgentConfig(), EXPOConfig(target_cache_refresh=None)),
    "published-ddpm": (AgentConfig(base="ddpm"), EXPOConfig(target_cache_refresh=None)),
    # the default preset's agent (RunConfig's): since 2026-12-06 with the target-candidate cache
    "fast": (RunConfig().agent, RunConfig().expo),
    # the default agent without the cache: every target candidate drawn afresh
    "exact": (RunConfig().agent, dataclasses.replace(RunConfig().expo, target_cache_refresh=None)),
    # QC's agent (32 base samples, no edit, chunks of 5 executed whole), every candidate drawn
    # afresh: the workload of P2's offline phase, where the cache rarely hits
    "qc-exact": (
        dataclasses.replace(RunConfig().agent, chunk_len=5, exec_len=5),
        dataclasses.replace(RunConfig().expo, num_base_samples=32, num_edit_samples=0, target_cache_refresh=None),
    ),
    # the speed options of the grids run before 2026-12-05 (1-step targets: not the base's samples)
    "old-fast": (
        AgentConfig(target_pool_size=1024),
        EXPOConfig(target_flow_steps=1, targets_per_call=True, target_cache_refresh=None),
    ),
}
CACHE_BUFFER = 5_000
"""Transitions in the buffer the cached variant draws its pools from (P1's online data)."""


def random_pool(cfg: AgentConfig, rng: np.random.Generator) -> ChunkBatch:
    p = cfg.pool_size
    return ChunkBatch(
        observations=rng.normal(size=(p, OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-1, 1, (p, cfg.exec_len, ACTION_DIM)).astype(np.float32),
        rewards=(rng.random(p) < 0.1).astype(np.float32),
        discounts=np.full(p, cfg.discount, np.float32),
        masks=np.ones(p, np.float32),
        next_observations=rng.normal(size=(p, OBS_DIM)).astype(np.float32),
        valid=np.ones((p, cfg.exec_len), np.float32),
        offline=np.arange(p) < cfg.pool_offline_count,
    )


def cached_call_seconds(agent: EXPOAgent, cfg: AgentConfig, calls: int, rng: np.random.Generator) -> float:
    """Mean seconds of an update call with the cache (look-up, lazy refills, update) over
    ``max(calls, refresh)`` calls after a first refresh period, on pools drawn from a buffer of
    CACHE_BUFFER random transitions: the amortised cost, refills included (every entry is
    refilled once per period; fewer calls than a period would over- or under-count them)."""
    refresh = agent.options.target_cache_refresh
    assert refresh is not None, "a cached variant sets target_cache_refresh"
    buffer = ReplayBuffer(OBS_DIM, ACTION_DIM, 100_000)
    for t in range(CACHE_BUFFER):
        obs, nxt = rng.normal(size=(2, OBS_DIM)).astype(np.float32)
        action = rng.uniform(-1, 1, ACTION_DIM).astype(np.float32)
        buffer.add(obs, action, float(rng.random() < 0.1), nxt, False, t % 200 == 199)
    cache = TargetCandidateCache(buffer, agent.options.num_base_samples, cfg.exec_len * ACTION_DIM, refresh, 0)

    def call(agent, n):
        pool = buffer.sample(rng, cfg.pool_size, discount=cfg.discount, num_offline=0)
        next_base = cache.lookup(agent, pool, n)
        agent, metrics = update(agent, pool._replace(last=None), None, next_base)
        jax.block_until_ready(metrics)
        return agent

    warm = refresh
    for n in range(1, warm + 1):
        agent = call(agent, n)
    calls = max(calls, warm)
    start = time.perf_counter()
    for n in range(warm + 1, warm + calls + 1):
        agent = call(agent, n)
    return (time.perf_counter() - start) / calls


def timed_update(agent, pool):
    start = time.perf_counter()
    agent, metrics = update(agent, pool)
    jax.block_until_ready(metrics)
    return agent, time.perf_counter() - start


def whole_loop(agent: EXPOAgent, cfg: AgentConfig, steps: int, rng: np.random.Generator) -> float:
    """Environment steps per second with one update call per step (EXPO's schedule)."""
    env = make_env("cube-double", 1)
    buffer = ReplayBuffer(OBS_DIM, ACTION_DIM, 100_000)
    obs, _ = env.reset(seed=0)
    # Fill the buffer so that every pool can be drawn from the online part alone.
    while buffer.online_size < cfg.pool_size:
        action = rng.uniform(-1, 1, ACTION_DIM).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, float(reward), next_obs, terminated, terminated or truncated)
        obs = env.reset()[0] if terminated or truncated else next_obs
    start = time.perf_counter()
    for step in range(steps):
        a, _ = act(agent, obs[None], jax.random.PRNGKey(step))
        action = np.asarray(a[0])
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, float(reward), next_obs, terminated, terminated or truncated)
        obs = env.reset()[0] if terminated or truncated else next_obs
        pool = buffer.sample(rng, cfg.pool_size, discount=cfg.discount, num_offline=0)
        agent, metrics = update(agent, pool)
    jax.block_until_ready(metrics)
    return steps / (time.perf_counter() - start)


def evaluation_loop(agent: EXPOAgent, episodes: int) -> float:
    """Environment steps per second of ``evaluate`` (OTF decisions every step, no learning) on
    cube-double task 1: what the 50-episode evaluations of a run cost per step."""
    env = make_env("cube-double", 1)
    evaluate(agent, env, 1, seed=99)  # compile outside the timing
    start = time.perf_counter()
    result = evaluate(agent, env, episodes, seed=0)
    return episodes * result["eval/episode_length"] / (time.perf_counter() - start)


def measure(
    variant: str, calls: int, act_calls: int, loop_steps: int, eval_episodes: int
) -> list[tuple[str, float, str]]:
    cfg, own = VARIANTS[variant]
    # The whole loop samples online-only pools: same shapes, no offline part needed.
    loop_cfg = dataclasses.replace(cfg, offline_fraction=0.0)
    rng = np.random.default_rng(0)
    agent = EXPOAgent.create(cfg, own, OBS_DIM, ACTION_DIM)
    if own.target_cache_refresh is not None:  # cached: measured on pools of a real buffer
        start = time.perf_counter()
        agent, _ = timed_update(agent, random_pool(cfg, rng))  # the exact update, compiled
        first = time.perf_counter() - start
        call_s = cached_call_seconds(agent, dataclasses.replace(cfg, offline_fraction=0.0), calls, rng)
    else:
        agent, first = timed_update(agent, random_pool(cfg, rng))
        times = []
        for _ in range(calls):
            agent, seconds = timed_update(agent, random_pool(cfg, rng))
            times.append(seconds)
        call_s = float(np.median(times))

    obs = rng.normal(size=(1, OBS_DIM)).astype(np.float32)
    jax.block_until_ready(act(agent, obs, jax.random.PRNGKey(0)))
    latencies = []
    for i in range(act_calls):
        start = time.perf_counter()
        jax.block_until_ready(act(agent, obs, jax.random.PRNGKey(i + 1)))
        latencies.append(time.perf_counter() - start)

    loop_agent = EXPOAgent.create(loop_cfg, own, OBS_DIM, ACTION_DIM)
    loop_agent, _ = timed_update(loop_agent, random_pool(loop_cfg, rng))  # compile outside the timing
    # the whole loop runs the exact update (no cache): skipped with --loop-steps 0
    env_steps_per_s = whole_loop(loop_agent, loop_cfg, loop_steps, rng) if loop_steps else None
    eval_steps_per_s = evaluation_loop(agent, eval_episodes) if eval_episodes else None
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [
        ("critic_step_ms", round(1000 * call_s / cfg.utd, 2), "ms"),
        ("update_compile_s", round(first - call_s, 2), "s"),
        ("act_latency_p50_ms", round(1000 * float(np.percentile(latencies, 50)), 3), "ms"),
        ("act_latency_p99_ms", round(1000 * float(np.percentile(latencies, 99)), 3), "ms"),
        *([("env_steps_per_s", round(env_steps_per_s, 3), "steps/s")] if env_steps_per_s else []),
        *([("eval_env_steps_per_s", round(eval_steps_per_s, 1), "steps/s")] if eval_steps_per_s else []),
        ("peak_rss_mb", round(peak_mb), "MB"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="fast", choices=[*VARIANTS, "both"], nargs="+")
    parser.add_argument("--calls", type=int, default=5, help="timed update calls (median)")
    parser.add_argument("--act-calls", type=int, default=300)
    parser.add_argument("--loop-steps", type=int, default=20, help="whole-loop env steps timed (0: skip)")
    parser.add_argument("--eval-episodes", type=int, default=2, help="evaluation episodes timed (500 steps each)")
    args = parser.parse_args()
    variants = ["published", "fast"] if args.variant == ["both"] else args.variant
    rows = []
    for variant in variants:
        for metric, value, unit in measure(variant, args.calls, args.act_calls, args.loop_steps, args.eval_episodes):
            row = {"metric": metric, "value": value, "unit": unit, "variant": variant}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n{'variant':<16}{'metric':<22}{'value':>10} unit", file=sys.stderr)
    for r in rows:
        print(f"{r['variant']:<16}{r['metric']:<22}{r['value']:>10} {r['unit']}", file=sys.stderr)


if __name__ == "__main__":
    main()

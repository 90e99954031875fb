"""Cost of the pixel path (issue: pixels and pluggable bases): rendering, replay memory, update
calls and action selection of EXPO on images, at a preset's sizes.

Figures (one JSON line each: ``{"metric", "value", "unit", "preset", "image_size"}``):
- ``render_fps``: pixel-env steps per second with random actions (render + physics);
- ``buffer_mb_per_100k``: memory of the online replay per 100k transitions (frames stored once,
  plus the frame ring's slack; proprioception, actions and flags included);
- ``buffer_mb_per_100k_twice``: what storing observation and next observation would cost;
- ``update_call_s``: median seconds of one update call (``utd`` critic steps on image batches, the
  TD-target candidates of the pool, the actor steps), compile excluded; ``update_compile_s``;
- ``act_latency_p50_ms`` / ``act_latency_p99_ms``: OTF action selection for one observation.

The buffer is filled with random frames (what is timed does not depend on their content). Run by
hand: ``python benchmarks/pixels.py --preset pixels`` (also ``--image-size 64`` to compare).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import numpy as np

from expoft.agents import common
from expoft.agents.expo import EXPOAgent
from expoft.data.replay import ReplayBuffer
from expoft.obs import PIXELS, PROPRIO
from expoft.train.config import preset


def emit(metric: str, value: float, unit: str, args) -> None:
    print(json.dumps({"metric": metric, "value": round(float(value), 4), "unit": unit, "preset": args.preset,
                      "image_size": args.image_size}), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="pixels")
    parser.add_argument("--image-size", type=int, default=None, help="override the preset's frame size")
    parser.add_argument("--calls", type=int, default=5, help="timed update calls")
    parser.add_argument("--render-steps", type=int, default=200)
    args = parser.parse_args()
    cfg = preset(args.preset)
    if cfg.pixels is None:
        parser.error(f"preset {args.preset!r} has state observations; give a pixel preset (e.g. pixels)")
    spec = cfg.pixels if args.image_size is None else dataclasses.replace(cfg.pixels, image_size=args.image_size)
    args.image_size = spec.image_size
    agent_cfg = cfg.agent
    rng = np.random.default_rng(0)

    from expoft.envs.pixels import make_pixel_env

    env = make_pixel_env(cfg.env, cfg.task, spec)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(args.render_steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    emit("render_fps", args.render_steps / (time.perf_counter() - start), "frames/s", args)

    capacity = 5_000
    buffer = ReplayBuffer(spec, 5, capacity)

    def observation() -> dict:
        return {PIXELS: rng.integers(0, 256, spec.image_shape, dtype=np.uint8),
                PROPRIO: rng.normal(size=spec.proprio_dim).astype(np.float32)}  # fmt: skip

    obs = observation()
    for t in range(capacity):
        nxt = observation()
        end = t % 100 == 99  # episodes of 100 steps, about the demo task's
        buffer.add(obs, rng.uniform(-1, 1, 5), float(end), nxt, end, end, success=end)
        obs = observation() if end else nxt
    per_100k = buffer.frame_bytes / capacity * 1e5 / 2**20
    emit("buffer_mb_per_100k", per_100k, "MiB", args)
    frame = int(np.prod(spec.image_shape))
    emit("buffer_mb_per_100k_twice", per_100k + (2 - ReplayBuffer.FRAME_SLACK) * frame * 1e5 / 2**20, "MiB", args)

    agent = EXPOAgent.create(agent_cfg, cfg.expo, spec, 5, seed=0)

    def batches():
        pool = buffer.sample(rng, agent_cfg.pool_size, discount=agent_cfg.discount, chunk_len=agent_cfg.exec_len,
                             offline_fraction=0.0)  # fmt: skip
        base = None
        if agent_cfg.base_needs_own_batch:
            base = buffer.sample(rng, agent_cfg.base_batch_size, discount=agent_cfg.discount,
                                 chunk_len=agent_cfg.chunk_len, offline_fraction=0.0)  # fmt: skip
        return pool, base

    start = time.perf_counter()
    agent, metrics = common.update(agent, *batches())
    jax.block_until_ready(metrics)
    emit("update_compile_s", time.perf_counter() - start, "s", args)
    times = []
    for _ in range(args.calls):
        pool, base = batches()
        start = time.perf_counter()
        agent, metrics = common.update(agent, pool, base)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    emit("update_call_s", np.median(times), "s", args)

    one = {k: v[None] for k, v in observation().items()}
    jax.block_until_ready(common.act(agent, one, jax.random.PRNGKey(0)))
    times = []
    for i in range(100):
        start = time.perf_counter()
        jax.block_until_ready(common.act(agent, one, jax.random.PRNGKey(i)))
        times.append(time.perf_counter() - start)
    emit("act_latency_p50_ms", 1000 * np.percentile(times, 50), "ms", args)
    emit("act_latency_p99_ms", 1000 * np.percentile(times, 99), "ms", args)


if __name__ == "__main__":
    main()

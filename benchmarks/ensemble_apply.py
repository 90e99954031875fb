"""How a subset of critic members is best evaluated on XLA:CPU. Run by hand, not by CI.

    taskset -c 0 python benchmarks/ensemble_apply.py          # one core
    python benchmarks/ensemble_apply.py --reps 60             # both cores

OTF scores every candidate with ``critic_subset`` (2) target critics: in an update's TD target
that is 2 members x 256 rows x 16 candidates per critic step, about half of a cached update's
time. Two ways to compute the same values: the members vmapped (one batched matrix product per
layer) or one member after the other on rows flattened to 2-D (``Ensemble.apply_subset`` since
2026-12-06). They are timed alternately in one process on the published critic (10 members of
(256, 256, 256) with LayerNorm, observation 37-d, action 5-d), at the sizes OTF uses. One JSON
line per size: ``metric`` (``subset_apply_speedup``: median of the per-repetition ratios vmapped
/ looped, >1 means the loop is faster), the two medians in ms, and the largest difference of the
values.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from expoft.nets import Critic, Ensemble

OBS_DIM, ACTION_DIM = 37, 5
SIZES = {  # rows x candidates
    "td-target scoring (256 x 16)": (256, 16),
    "td-target value of the chosen (256 x 1)": (256, 1),
    "acting (1 x 16)": (1, 16),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=40)
    args = parser.parse_args()
    ensemble = Ensemble(Critic(zero_output=False), 10)  # non-zero outputs: the values are compared
    params = ensemble.init(jax.random.PRNGKey(0), jnp.zeros((1, OBS_DIM)), jnp.zeros((1, ACTION_DIM)))
    members = jnp.array([1, 3])

    @jax.jit
    def vmapped(params, obs, actions):
        sub = jax.tree.map(lambda p: p[members], params)
        return ensemble.apply(sub, obs, actions)

    looped = jax.jit(lambda params, obs, actions: ensemble.apply_subset(params, members, obs, actions))
    rng = np.random.default_rng(0)
    for name, (rows, cands) in SIZES.items():
        obs = jnp.asarray(rng.normal(size=(rows, 1, OBS_DIM)).repeat(cands, 1), jnp.float32)
        actions = jnp.asarray(rng.uniform(-1, 1, (rows, cands, ACTION_DIM)), jnp.float32)
        diff = float(jnp.abs(vmapped(params, obs, actions) - looped(params, obs, actions)).max())
        times: dict[str, list[float]] = {"vmapped": [], "looped": []}
        for _ in range(args.reps):
            for label, fn in (("vmapped", vmapped), ("looped", looped)):
                start = time.perf_counter()
                jax.block_until_ready(fn(params, obs, actions))
                times[label].append(time.perf_counter() - start)
        ratio = float(np.median(np.array(times["vmapped"]) / np.array(times["looped"])))
        print(
            json.dumps(
                {
                    "metric": "subset_apply_speedup",
                    "size": name,
                    "value": round(ratio, 3),
                    "vmapped_ms": round(1000 * float(np.median(times["vmapped"])), 3),
                    "looped_ms": round(1000 * float(np.median(times["looped"])), 3),
                    "max_abs_diff": diff,
                    "reps": args.reps,
                }
            )
        )


if __name__ == "__main__":
    main()

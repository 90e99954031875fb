"""Why does a fine-tuned cube agent still fail? Run by hand, not by CI.

    python benchmarks/failures.py runs/demo/seed0 --episodes 30

Runs OTF episodes of a run's newest checkpoint (a cube domain, state observations) and, at
every decision, draws the candidates and their scores exactly as acting does. Prints one JSON
line per figure ``{"metric", "value", "unit"}``:

- ``success``; ``fail_lifted_then_lost`` (failed episodes in which a cube was lifted above
  ``--lift`` metres and every cube ended on the table: slips and early releases) and
  ``fail_never_lifted``;
- ``q_std_lifted``: median standard deviation of the scores over the candidates while a cube
  is lifted (how much the critic tells the candidates apart where drops happen);
- ``chosen_grip`` / ``candidate_grip``: mean gripper command (smallest over the chunk) of the
  chosen candidate and of all candidates while lifted (OGBench's gripper command is a position
  target: higher holds firmer); ``corr_q_grip``: median correlation of score and gripper command;
- ``fail_cube_displaced``: failed episodes whose cubes end on the table, one of them more than
  3 cm from where it started (knocked away or dropped, and never picked up again), and
  ``fail_cube_displacement_cm``: the median over failed episodes of the farthest a cube moved.
Every cube of the domain counts (cube-double: two).
A figure with nothing to measure (no failed episode, no lift) is null.
With ``--detail`` every failed episode is also described on stderr (lift height and time, start,
end and goal of the cube, gripper command over the last 20 steps).
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np

from expoft.envs.ogbench_domains import CUBE_AT_REST_Z, CUBE_LIFTED_Z, env_cube_positions, get_domain
from expoft.envs.run_env import make_run_env
from expoft.train.build import load_run_agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=30_000, help="first reset seed")
    parser.add_argument("--lift", type=float, default=CUBE_LIFTED_Z, help="cube height (m) that counts as lifted")
    parser.add_argument("--detail", action="store_true", help="describe every failed episode on stderr")
    args = parser.parse_args()

    cfg, agent, step = load_run_agent(args.run_dir)
    domain = get_domain(cfg.env)
    if domain.family != "cube" or cfg.pixels is not None:
        raise SystemExit(
            f"failures.py reads cube heights: it needs a cube domain with state observations, not {cfg.env}"
        )
    env = make_run_env(cfg)
    h, a_dim = cfg.agent.exec_len, domain.action_dim
    candidates_and_scores = jax.jit(lambda obs, key: agent.scored_candidates(obs, key))

    def height() -> float:  # of the highest cube
        return float(env_cube_positions(domain, env)[:, 2].max())

    key = jax.random.PRNGKey(args.seed)
    outcomes, q_std, chosen_grip, mean_grip, corr, displaced = [], [], [], [], [], []
    for e in range(args.episodes):
        obs, info = env.reset(seed=args.seed + e)
        sim = env.unwrapped
        start = env_cube_positions(domain, env).copy()
        goal = np.stack([sim.data.mocap_pos[sim.model.body(f"object_target_{i}").mocapid[0]]
                         for i in range(domain.num_cubes)])  # fmt: skip
        done, max_z, first_lift, t, grips = False, 0.0, None, 0, []
        while not done:
            key, k = jax.random.split(key)
            cands, scores = candidates_and_scores(obs[None], k)
            cands = np.asarray(cands[0]).reshape(-1, h, a_dim)
            scores = np.asarray(scores[0])
            best = int(scores.argmax())
            z = height()
            max_z = max(max_z, z)
            if z > args.lift:
                grip = cands[:, :, -1].min(axis=1)
                q_std.append(scores.std())
                chosen_grip.append(grip[best])
                mean_grip.append(grip.mean())
                if grip.std() > 1e-6 and scores.std() > 1e-9:
                    corr.append(np.corrcoef(scores, grip)[0, 1])
            for action in cands[best]:
                obs, _, terminated, truncated, info = env.step(action)
                t += 1
                grips.append(float(action[-1]))
                if first_lift is None and height() > args.lift:
                    first_lift = t
                done = terminated or truncated
                if done:
                    break
        final = env_cube_positions(domain, env)
        on_table = bool((final[:, 2] < CUBE_AT_REST_Z + 0.01).all())
        success = bool(info.get("success", False))
        outcomes.append((success, max_z > args.lift and on_table))
        if not success:
            moved = float(np.linalg.norm(final[:, :2] - start[:, :2], axis=-1).max())
            displaced.append((moved, on_table))
            if args.detail:
                row = {"episode": e, "steps": t, "max_z": round(max_z, 3), "first_lift_step": first_lift,
                       "start": start.round(3).tolist(), "end": final.round(3).tolist(),
                       "goal": goal.round(3).tolist(), "moved_cm": round(100 * moved, 1),
                       "grip_last20": round(float(np.mean(grips[-20:])), 2)}  # fmt: skip
                print(json.dumps(row), file=sys.stderr)

    n = len(outcomes)
    fails = [lost for ok, lost in outcomes if not ok]
    figures = [
        ("success", sum(ok for ok, _ in outcomes) / n, "fraction"),
        ("fail_lifted_then_lost", sum(fails) / n, "fraction"),
        ("fail_never_lifted", (len(fails) - sum(fails)) / n, "fraction"),
        ("q_std_lifted", float(np.median(q_std)) if q_std else float("nan"), "Q"),
        ("chosen_grip", float(np.mean(chosen_grip)) if chosen_grip else float("nan"), "command"),
        ("candidate_grip", float(np.mean(mean_grip)) if mean_grip else float("nan"), "command"),
        ("corr_q_grip", float(np.median(corr)) if corr else float("nan"), "correlation"),
        ("fail_cube_displaced", sum(m > 0.03 and on_table for m, on_table in displaced) / n, "fraction"),
        (
            "fail_cube_displacement_cm",
            100 * float(np.median([m for m, _ in displaced])) if displaced else float("nan"),
            "cm",
        ),
    ]
    for name, value, unit in figures:
        # null, not NaN, where there was nothing to measure (no lifts, no failures): strict JSON
        shown = round(value, 4) if np.isfinite(value) else None
        row = {"metric": name, "value": shown, "unit": unit, "run": args.run_dir, "env_step": step}
        print(json.dumps(row))


if __name__ == "__main__":
    main()

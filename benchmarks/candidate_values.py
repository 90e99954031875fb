"""Does the critic's argmax pick better candidates? Run by hand, not by CI.

    python benchmarks/candidate_values.py RUN --states 24 --rollouts 4
    python benchmarks/candidate_values.py RUN --states 24 --at lifted    # decisions with a cube carried
    python benchmarks/candidate_values.py RUN --states 24 --at grasp     # the gripper at a resting cube

Issue "EXPO that learns" asks, where EXPO-FT does not beat its base, whether the argmax over
the OTF candidates picks better ones. This measures it with the simulator instead of the
critic: it runs OTF episodes of a run's newest checkpoint (state observations), picks one
decision per episode uniformly at random, draws that decision's candidates and scores exactly
as acting does, and then, for every candidate, plays it from that very state (the episode
replayed from its reset seed: MuJoCo on CPU is deterministic, and the replay is checked) and
continues with the run's own OTF policy to the episode's end, ``--rollouts`` times. A
candidate's Monte Carlo value is its rollouts' success rate (and mean discounted return: what
its Q predicts). The ``C x rollouts`` continuations step in waves of ``--envs`` environments,
one jitted decision for a whole wave (an OGBench environment holds ~150 MB: 128 of them at once
exhaust 24 GiB).

One JSON line per figure ``{"metric", "value", "unit", ...}``; differences carry a 95% interval
over the states (paired: the same state for both terms):

- ``mc_chosen`` / ``mc_base`` / ``mc_best``: success of the chosen candidate, of an average base
  sample (the base alone at that state, the policy after it), and of the best candidate by its
  own rollouts (biased upward by their noise);
- ``chosen_minus_base``: what the choice adds at a state, the mechanism behind "policy - base";
- ``choice_matters``: fraction of states where the candidates' success rates differ beyond what
  the rollouts' own noise gives (a permutation test of homogeneity, p < 0.05: with a few
  rollouts each, 16 equally good candidates would often span 0.5 by chance);
  ``chosen_minus_base_where_matters``: the gain on those states alone;
- ``q_mc_corr``: median over states (where both vary) of the rank correlation between the
  ensemble's mean Q of a candidate and its MC discounted return; ``q_mc_corr_where_matters`` the
  same on the states where the choice matters.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from expoft.agents.common import evaluation_step, members_q
from expoft.envs.chunks import ActionChunks
from expoft.envs.ogbench_domains import CUBE_LIFTED_Z, Domain, env_cube_positions, get_domain
from expoft.envs.run_env import make_run_env
from expoft.obs import add_batch_axis
from expoft.train.build import load_run_agent

MATTERS_P = 0.05  # a homogeneity test's p-value below which the candidates differ


def homogeneity_p(outcomes: np.ndarray, rng: np.random.Generator, permutations: int = 2000) -> float:
    """p-value that every candidate has the same success rate, from ``outcomes [C, K]`` (0/1):
    the variance of the candidates' rates against that of random regroupings of all outcomes."""
    flat = outcomes.reshape(-1).astype(float)
    if flat.min() == flat.max():
        return 1.0
    observed = outcomes.mean(axis=1).var()
    shuffled = rng.permuted(np.broadcast_to(flat, (permutations, flat.size)), axis=1)
    null = shuffled.reshape(permutations, *outcomes.shape).mean(axis=2).var(axis=1)
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + permutations))


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (for Spearman's correlation)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Rank correlation; None where either side is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(rank(a), rank(b))[0, 1])


def mean_ci(x: list[float]) -> tuple[float, float, float]:
    arr = np.asarray(x, float)
    half = 1.96 * float(arr.std(ddof=1)) / np.sqrt(len(arr)) if len(arr) > 1 else float("inf")
    return float(arr.mean()), float(arr.mean() - half), float(arr.mean() + half)


class Decisions:
    """The jitted decisions of one agent: acting's candidates and scores, and OTF steps."""

    def __init__(self, agent):
        self.agent = agent

        @jax.jit
        def draw(agent, obs, key):
            cands, scores = agent.scored_candidates(obs, key)
            every = jnp.arange(agent.config.num_critics)
            mean_q = members_q(agent.config, agent.target_critic, every, obs, cands).mean(axis=0)
            return cands, scores, mean_q

        self._draw = draw

    def draw(self, obs: np.ndarray, key: jax.Array):
        """Candidates ``[C, exec_dim]``, their acting scores and ensemble-mean Q ``[C]``."""
        cands, scores, mean_q = jax.device_get(self._draw(self.agent, add_batch_axis(obs), key))
        return cands[0], scores[0], mean_q[0]

    def act(self, obs: np.ndarray, key: jax.Array):
        """OTF actions ``[B, exec_dim]`` for observations ``[B, D]``."""
        key, actions, _ = evaluation_step(self.agent, jnp.asarray(obs), key)
        return key, np.asarray(actions)


def cube_lifted(env: ActionChunks, domain: Domain) -> bool:
    """Whether any cube of ``domain`` is above ``CUBE_LIFTED_Z`` (carried, where drops happen)."""
    return bool(env_cube_positions(domain, env.env)[:, 2].max() > CUBE_LIFTED_Z)


GRASP_REACH = 0.05
"""The pinch point's distance (m) to a cube's centre within which a decision counts as a grasp."""
PINCH_SITE = "ur5e/robotiq/pinch"
"""The MuJoCo site between the gripper's fingers in OGBench's manipulation scenes."""


def at_grasp(env: ActionChunks, domain: Domain) -> bool:
    """Whether the gripper's pinch point is within ``GRASP_REACH`` of a cube of ``domain`` that rests
    on the table (below ``CUBE_LIFTED_Z``): the approach and grasp, where cube-double's failures
    happen (a grasp that does not close on the cube)."""
    sim: Any = env.env.unwrapped  # an OGBench manipulation env: its MuJoCo data, by site name
    pinch = np.asarray(sim.data.site(PINCH_SITE).xpos)
    cubes = env_cube_positions(domain, env.env)
    resting = cubes[:, 2] < CUBE_LIFTED_Z
    return bool((resting & (np.linalg.norm(cubes - pinch, axis=-1) < GRASP_REACH)).any())


def pick_decision(eligible: list[bool], pick: np.random.Generator) -> int | None:
    """Index of a decision drawn uniformly among the eligible ones; None if none is."""
    allowed = [i for i, ok in enumerate(eligible) if ok]
    return None if not allowed else allowed[int(pick.integers(len(allowed)))]


def lead_episode(
    env: ActionChunks,
    decisions: Decisions,
    reset_seed: int,
    key: jax.Array,
    pick: np.random.Generator,
    eligible: Callable[[ActionChunks], bool] = lambda env: True,
):
    """One OTF episode; returns the executed primitive actions before a decision drawn uniformly
    among those where ``eligible(env)`` held, that decision's observation, candidates, scores and
    ensemble-mean Q, and whether the episode succeeded; None if no decision was eligible."""
    obs, _ = env.reset(seed=reset_seed)
    done, record, flags = False, [], []
    steps: list[np.ndarray] = []
    while not done:
        key, k = jax.random.split(key)
        cands, scores, mean_q = decisions.draw(obs, k)
        record.append((len(steps), obs, cands, scores, mean_q))
        flags.append(eligible(env))
        obs, _, terminated, truncated, info = env.step(cands[int(scores.argmax())])
        steps.extend(t.action for t in info["transitions"])
        done = terminated or truncated
    index = pick_decision(flags, pick)
    if index is None:
        return None
    at_step, state_obs, cands, scores, mean_q = record[index]
    return steps[:at_step], state_obs, cands, scores, mean_q, bool(info.get("success", False))


def continuations(envs, decisions, reset_seed, prefix, state_obs, first_chunks, key, gamma):
    """Every env replays ``prefix`` from ``reset_seed``, plays its own first chunk, then the OTF
    policy to the episode's end: ``(success [n], discounted return [n])`` from the decision on."""
    n = len(envs)
    obs = np.zeros((n, state_obs.shape[-1]), np.float32)
    for i, env in enumerate(envs):
        obs[i], _ = env.reset(seed=reset_seed)
        for action in prefix:
            obs[i], *_ = env.env.step(action)  # the primitive env: the wrapper only chunks
        env._obs = obs[i]  # the wrapper's own copy of where the episode stands
        if not np.allclose(obs[i], state_obs, atol=1e-6):
            raise RuntimeError(
                f"replaying reset seed {reset_seed} did not reach the same state (max diff "
                f"{np.abs(obs[i] - state_obs).max():.2e}): this environment is not deterministic"
            )
    success = np.zeros(n, bool)
    returns = np.zeros(n)
    steps = np.zeros(n, int)
    alive = np.ones(n, bool)
    chunks = np.asarray(first_chunks)
    while alive.any():
        for i in np.flatnonzero(alive):
            obs[i], _, terminated, truncated, info = envs[i].step(chunks[i])
            for t in info["transitions"]:
                returns[i] += gamma ** steps[i] * t.reward
                steps[i] += 1
            if terminated or truncated:
                alive[i] = False
                success[i] = bool(info.get("success", False))
        if alive.any():  # one call for all, the finished rows' results unread
            key, chunks = decisions.act(obs, key)
    return success, returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--states", type=int, default=24, help="decisions examined, one per episode")
    parser.add_argument("--rollouts", type=int, default=4, help="continuations per candidate")
    parser.add_argument("--seed", type=int, default=40_000, help="first reset seed (evaluations use 10,000+)")
    parser.add_argument("--envs", type=int, default=32, help="environments stepped together (memory: ~150 MB each)")
    parser.add_argument(
        "--at", choices=("any", "lifted", "grasp"), default="any",
        help="which decision of an episode: any (uniform), one taken while a cube is carried (lifted), "
        "or with the gripper at a cube on the table (grasp); episodes without one are skipped, at most "
        "4 x --states tried",
    )  # fmt: skip
    args = parser.parse_args()
    if args.states < 2 or args.rollouts < 1 or args.envs < 1:
        raise SystemExit("need --states >= 2, --rollouts >= 1 and --envs >= 1")

    cfg, agent, env_step = load_run_agent(args.run_dir)
    if cfg.pixels is not None or not hasattr(agent, "candidates"):
        raise SystemExit(f"{args.run_dir}: needs an agent with OTF candidates (EXPO, EXPO-FT) on state observations")
    domain = get_domain(cfg.env)
    if args.at != "any" and domain.family != "cube":
        raise SystemExit(f"--at {args.at} reads cube positions: it needs a cube domain, not {cfg.env}")
    rules = {"any": lambda env: True, "lifted": lambda env: cube_lifted(env, domain),
             "grasp": lambda env: at_grasp(env, domain)}  # fmt: skip
    eligible = rules[args.at]
    decisions = Decisions(agent)
    lead = ActionChunks(make_run_env(cfg), cfg.agent.exec_len)
    num_cands = agent.options.num_base_samples + agent.options.num_edit_samples
    total = num_cands * args.rollouts
    envs = [ActionChunks(make_run_env(cfg), cfg.agent.exec_len) for _ in range(min(args.envs, total))]
    pick, permute = np.random.default_rng(args.seed), np.random.default_rng(args.seed + 1)
    key = jax.random.PRNGKey(args.seed)
    gamma = cfg.agent.discount
    rows: list[dict] = []
    start = time.time()
    for reset_seed in range(args.seed, args.seed + 4 * args.states):
        if len(rows) == args.states:
            break
        key, k_lead, k_roll = jax.random.split(key, 3)
        examined = lead_episode(lead, decisions, reset_seed, k_lead, pick, eligible)
        if examined is None:  # --at lifted: no cube carried in this episode
            continue
        prefix, state_obs, cands, scores, mean_q, lead_success = examined
        s = len(rows)
        first = np.repeat(cands, args.rollouts, axis=0)  # candidate c plays rollouts c*K .. c*K+K-1
        success, returns = np.zeros(total, bool), np.zeros(total)
        for w0 in range(0, total, len(envs)):  # full waves (the last padded): one compiled batch size
            wave = first[w0 : w0 + len(envs)]
            padded = np.concatenate([wave, np.repeat(wave[-1:], len(envs) - len(wave), axis=0)])
            k_roll, k_wave = jax.random.split(k_roll)
            s_wave, r_wave = continuations(envs, decisions, reset_seed, prefix, state_obs, padded, k_wave, gamma)
            success[w0 : w0 + len(wave)], returns[w0 : w0 + len(wave)] = s_wave[: len(wave)], r_wave[: len(wave)]
        outcomes = success.reshape(num_cands, args.rollouts)
        mc = outcomes.mean(axis=1)
        mc_return = returns.reshape(num_cands, args.rollouts).mean(axis=1)
        chosen, num_base = int(scores.argmax()), agent.options.num_base_samples
        row = {
            "state": s, "reset_seed": reset_seed, "decision_step": len(prefix), "lead_success": lead_success,
            "chosen": chosen, "mc_chosen": float(mc[chosen]), "mc_base": float(mc[:num_base].mean()),
            "mc_mean": float(mc.mean()), "mc_best": float(mc.max()), "mc_span": float(np.ptp(mc)),
            "homogeneity_p": homogeneity_p(outcomes, permute),
            "q_mc_corr": spearman(np.asarray(mean_q, float), mc_return),
        }  # fmt: skip
        rows.append(row)
        progress = {"progress": f"{s + 1}/{args.states}", "seconds": round(time.time() - start)}
        print(json.dumps({**progress, **row}), flush=True)

    matters = [r for r in rows if r["homogeneity_p"] < MATTERS_P]
    if len(rows) < 2:
        raise SystemExit(f"only {len(rows)} qualifying decisions in {4 * args.states} episodes (--at {args.at})")
    tag = {"run": args.run_dir, "env_step": env_step, "states": len(rows), "rollouts": args.rollouts, "at": args.at}
    figures: list[tuple[str, object, str]] = []
    for name in ("mc_chosen", "mc_base", "mc_mean", "mc_best"):
        figures.append((name, round(float(np.mean([r[name] for r in rows])), 4), "success"))
    for name, subset in (("chosen_minus_base", rows), ("chosen_minus_base_where_matters", matters)):
        if len(subset) >= 2:
            mean, low, high = mean_ci([r["mc_chosen"] - r["mc_base"] for r in subset])
            figures.append((name, {"mean": round(mean, 4), "ci95": [round(low, 4), round(high, 4)]}, "success"))
        else:
            figures.append((name, None, "success"))
    figures.append(("choice_matters", round(len(matters) / len(rows), 4), "fraction of states"))
    for name, subset in (("q_mc_corr", rows), ("q_mc_corr_where_matters", matters)):
        corrs = [r["q_mc_corr"] for r in subset if r["q_mc_corr"] is not None]
        figures.append((name, round(float(np.median(corrs)), 4) if corrs else None, "rank correlation"))
    for name, value, unit in figures:
        print(json.dumps({"metric": name, "value": value, "unit": unit, **tag}))


if __name__ == "__main__":
    main()

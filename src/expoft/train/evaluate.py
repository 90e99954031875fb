"""Evaluation: episodes with fixed reset seeds, success intervals, the paired policy - base
difference and the critic's calibration (Q of each episode's first decision against its
discounted return)."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from expoft.agents.common import evaluation_step
from expoft.agents.expo import EXPOConfig
from expoft.envs.chunks import ActionChunks
from expoft.envs.run_env import make_run_env
from expoft.obs import add_batch_axis
from expoft.report.video import check_video_path, render_frame, write_video
from expoft.train.build import load_run_agent
from expoft.train.config import RunConfig

log = logging.getLogger(__name__)


def paired_difference(a: list[int], b: list[int], z: float = 1.96) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired episodes (same reset seeds) and its normal-approximation
    interval ``mean +- z * sd / sqrt(n)``; pairing removes the variance the two share (how hard
    each reset is)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference needs two equally long, non-empty lists, got {len(a)} and {len(b)}")
    d = np.asarray(a, float) - np.asarray(b, float)
    half = z * float(d.std(ddof=1)) / np.sqrt(len(d)) if len(d) > 1 else float("inf")
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


DECISION_INFO = ("edited", "not_first", "q", "q_spread", "q_member_std")
"""What an evaluation reads of each decision's info (those an agent reports)."""


def evaluation_seed(cfg: RunConfig) -> int:
    """First reset seed of a run's evaluations: fixed, and disjoint from its training resets."""
    return 10_000 + 1000 * cfg.seed


def evaluate(
    agent,
    env,
    episodes: int,
    seed: int,
    policy: str = "otf",
    video: str | Path | None = None,
    video_episodes: int = 1,
    external=None,
) -> dict:
    """Run ``episodes`` episodes with reset seeds ``seed, seed+1, ...``.

    ``policy``: ``otf`` (the agent's evaluation policy: EXPO's OTF rule, a baseline's own) or
    ``base`` (the imitation policy alone).
    ``video``: a ``.gif`` or ``.mp4`` of the first ``video_episodes`` episodes (``env`` made with
    ``render=True``).
    ``external``: an ``ExternalCandidates`` whose base replaces the agent's own (EXPO).
    """
    if policy not in ("otf", "base"):
        raise ValueError(f"policy must be 'otf' or 'base', got {policy!r}")
    if video is not None:
        check_video_path(video)
    key = jax.random.PRNGKey(seed)
    successes, lengths, returns, edited, not_first, frames = [], [], [], [], [], []
    spread, member_std = [], []  # can the critic tell the candidates apart (EXPO's act_eval)
    first_q, discounted = [], []  # critic calibration: Q of each episode's first decision vs its return
    gamma = agent.config.discount
    filming = False

    def film():
        if filming:
            frames.append(render_frame(env))

    chunked = ActionChunks(env, agent.config.exec_len, on_step=film)
    for e in range(episodes):
        obs, _ = chunked.reset(seed=seed + e)
        filming = video is not None and e < video_episodes
        film()
        done, steps, episode_return, discounted_return = False, 0, 0.0, 0.0
        while not done:
            draw = (seed + e) * 1009 + steps  # the external base's seed: fixed per episode and step
            batch = add_batch_axis(obs)
            if policy == "base" and external is not None:
                action = external(batch, draw, num_samples=1)[:, 0]
            else:
                base = None if policy == "base" or external is None else external(batch, draw)
                key, action, info = evaluation_step(agent, batch, key, base, policy)
                # one transfer of what is read here: indexing device arrays dispatches an op each
                action, info = jax.device_get((action, {k: info[k] for k in DECISION_INFO if k in info}))
                if "edited" in info:
                    edited.append(bool(info["edited"][0]))
                    not_first.append(bool(info["not_first"][0]))
                if "q_spread" in info:
                    spread.append(float(info["q_spread"][0]))
                    member_std.append(float(info["q_member_std"][0]))
                if steps == 0 and "q" in info:
                    first_q.append(float(info["q"][0]))
            obs, reward, terminated, truncated, step_info = chunked.step(np.asarray(action[0]))
            for t in step_info["transitions"]:
                discounted_return += gamma**steps * t.reward
                steps += 1
            episode_return += reward
            done = terminated or truncated
        successes.append(int(step_info["success"]))
        lengths.append(steps)
        returns.append(episode_return)
        discounted.append(discounted_return)
    if video is not None:
        write_video(frames, video)
    low, high = wilson_interval(sum(successes), episodes)
    prefix = "eval" if policy == "otf" else "eval_base"
    result = {
        f"{prefix}/success": sum(successes) / episodes,
        f"{prefix}/success_ci_low": low,
        f"{prefix}/success_ci_high": high,
        f"{prefix}/episode_length": float(np.mean(lengths)),
        # undiscounted, under the run's reward: with OGBench's partial credit (cube-double P2) it
        # shows progress (cubes placed) that the 0/1 success hides
        f"{prefix}/return": float(np.mean(returns)),
        f"{prefix}/episodes": episodes,
        # per episode, in reset-seed order: the base alone and the policy pair up episode by episode
        f"{prefix}/successes": successes,
    }
    if edited:
        result[f"{prefix}/edited_frac"] = float(np.mean(edited))
        result[f"{prefix}/not_first_frac"] = float(np.mean(not_first))
    if spread:  # means over every decision of the evaluation
        result[f"{prefix}/q_spread"] = float(np.mean(spread))
        result[f"{prefix}/q_member_std"] = float(np.mean(member_std))
    if first_q:
        result.update(calibration(first_q, discounted, prefix))
    return result


def calibration(q: list[float], returns: list[float], prefix: str = "eval") -> dict:
    """The critic against what happened: Q of each evaluation episode's first decision (the
    subset-min target Q of the chosen candidate) and the episode's observed discounted return,
    their means and correlation (None when either is constant, e.g. no episode succeeded)."""
    q_arr, g_arr = np.asarray(q), np.asarray(returns)
    constant = len(q_arr) < 2 or np.std(q_arr) == 0 or np.std(g_arr) == 0
    return {
        f"{prefix}/first_q": float(q_arr.mean()),
        f"{prefix}/first_return": float(g_arr.mean()),
        f"{prefix}/q_return_corr": None if constant else float(np.corrcoef(q_arr, g_arr)[0, 1]),
    }


CHOICE_FIELDS = ("num_base_samples", "num_edit_samples", "act_score")
"""What evaluation may change of the OTF rule (``EXPOConfig`` fields): the candidate set and how
acting scores it."""


def with_choice(agent, **changes: Any):
    """``agent`` deciding by another OTF rule: ``num_base_samples`` base samples, of which
    ``num_edit_samples`` are also edited, scored by ``act_score`` (None: the run's own). For
    evaluation only, to ask where a policy's gain comes from with the same critic and base: e.g.
    ``num_edit_samples=0`` is the critic's choice among the base's samples alone, without the
    edit policy. EXPO's agents only (EXPO, EXPO-FT, QC, best-of-N)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return agent
    if unknown := sorted(set(changes) - set(CHOICE_FIELDS)):
        raise ValueError(f"with_choice changes {CHOICE_FIELDS}, not {unknown}")
    flags = " / ".join("--" + k.replace("_", "-") for k in changes)
    options = getattr(agent, "options", None)
    if not isinstance(options, EXPOConfig):
        raise ValueError(
            f"{flags} apply to agents that choose among base samples (EXPO, EXPO-FT, QC, best-of-N); this run's "
            f"agent is {type(agent).__name__}"
        )
    try:
        changed = dataclasses.replace(options, **changes)
    except ValueError as e:
        raise ValueError(f"{flags}: {e}") from None
    return agent.replace(options=changed)


def evaluate_run(
    run_dir: str | Path,
    episodes: int,
    seed: int | None = None,
    checkpoint: str | Path | None = None,
    video: str | Path | None = None,
    video_episodes: int = 1,
    policy: str = "otf",
    choice: dict[str, Any] | None = None,
) -> dict:
    """Evaluate a run's checkpoint; ``seed``: the first reset seed (default: the run's own
    evaluation seed, so that the run's logged evaluations are reproduced); ``policy``: ``otf``
    (the agent's evaluation policy) or ``base`` (its base policy alone); ``choice``: the OTF
    rule changed (:func:`with_choice`; its fields and values are then in the result's
    ``choice``)."""
    cfg, agent, step = load_run_agent(run_dir, checkpoint)
    if policy == "base" and not agent.has_base:
        raise ValueError(f"the agent of {run_dir} ({cfg.algorithm}) has no base policy; evaluate it with policy 'otf'")
    choice = {k: v for k, v in (choice or {}).items() if v is not None}
    if choice and policy != "otf":
        raise ValueError(f"{', '.join(sorted(choice))} change the OTF rule: use them with policy 'otf'")
    agent = with_choice(agent, **choice)
    env = make_run_env(cfg, render=video is not None)
    seed = evaluation_seed(cfg) if seed is None else seed
    result = evaluate(agent, env, episodes, seed, policy=policy, video=video, video_episodes=video_episodes)
    if video is not None:
        result["video"] = str(video)
    if choice:
        result["choice"] = {k: getattr(agent.options, k) for k in CHOICE_FIELDS}
    return {"run": str(run_dir), "env_step": step, "seed": seed, **result}

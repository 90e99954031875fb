"""A fine-tuning run's summary.json and learning curve: success before RL and at the end, the
base alone at the end on the same reset seeds (what the acting rule adds to it), the update
ratio that was run, time, and one entry per evaluation with its diagnostics."""

from __future__ import annotations

from expoft.data.replay import ReplayBuffer
from expoft.envs.ogbench_domains import get_domain
from expoft.report.plots import plot_learning_curves
from expoft.train.config import RunConfig
from expoft.train.evaluate import paired_difference
from expoft.train.online_state import LoopState
from expoft.train.rundir import RunDir


def finish(
    cfg: RunConfig,
    run: RunDir,
    state: LoopState,
    buffer: ReplayBuffer,
    wall_seconds: float,
    cpu_seconds: float,
    extra: dict,
) -> dict:
    domain = get_domain(cfg.env)
    before, final = state.before, state.evals[-1]
    summary = {
        "env": domain.name,
        "task": cfg.task,
        "seed": cfg.seed,
        "offline_transitions": buffer.offline_size,
        "pretrain_final_loss": before["pretrain_final_loss"],
        "bc_success": before.get("eval_base/success"),
        "success_before_rl": before["eval/success"],
        "final_success": final["eval/success"],
        "final_success_ci": [final["eval/success_ci_low"], final["eval/success_ci_high"]],
        # the base alone on the same reset seeds at the end: what the acting rule adds to it
        "final_base_success": final.get("eval_base/success"),
        **policy_minus_base(final, "final_"),
        "env_steps": state.step,
        "env_steps_to_95": state.first_95,
        "update_calls": state.update_calls,
        "train_episodes": state.episodes,
        "train_success_rate": state.total_successes / max(state.episodes, 1),
        "intervened_steps": buffer.intervened_steps,
        "intervention_rate": buffer.intervened_steps / max(state.step, 1),
        "episodes_with_intervention": state.episodes_with_intervention,
        "wall_seconds": round(wall_seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "cpu_seconds_to_95": _round1(state.cpu_to_95),
        "update_seconds": round(state.update_time, 1),
        "critic_steps_per_s": round(state.update_calls * cfg.agent.utd / state.update_time, 2)
        if state.update_time
        else None,
        # the ratio that was run (published: utd critic steps and one actor step per decision)
        "critic_steps_per_env_step": round(state.update_calls * cfg.agent.utd / max(state.step, 1), 3),
        "actor_steps_per_env_step": round(state.update_calls * cfg.agent.actor_steps / max(state.step, 1), 3),
        # the cache's refresh in effect (None: TD-target candidates drawn afresh, or nothing to cache)
        "target_cache_refresh": cfg.target_cache_refresh,
        # CPU seconds rounded like the totals above, so that a total never reads below its last evaluation
        "evaluations": [
            {
                "env_step": e.get("env_step", 0),
                "success": e["eval/success"],
                **({"base_success": e["eval_base/success"]} if "eval_base/success" in e else {}),
                **({"return": e["eval/return"]} if "eval/return" in e else {}),
                **({"base_return": e["eval_base/return"]} if "eval_base/return" in e else {}),
                **policy_minus_base(e),
                **{k[len("eval/") :]: e[k] for k in CALIBRATION if k in e},
                "cpu_seconds": _round1(e.get("time/cpu_s")),
            }
            for e in state.evals
        ],
        **extra,
    }
    run.write_json("summary.json", summary)
    bc = summary["bc_success"]
    plot_learning_curves(
        {f"{cfg.algorithm.upper()} seed {cfg.seed}": run.path},
        run.path / "learning_curve.png",
        f"{domain.name} task {cfg.task}",
        levels={} if bc is None else {f"imitation only ({bc:.0%})": bc},
    )
    run.close()
    return summary


CALIBRATION = ("eval/first_q", "eval/first_return", "eval/q_return_corr", "eval/not_first_frac", "eval/q_spread",
               "eval/q_member_std")  # fmt: skip
"""Evaluation diagnostics copied into the summary's evaluations (see ``expoft.train.evaluate.calibration``)."""


def policy_minus_base(e: dict, prefix: str = "") -> dict:
    """Policy minus base alone on the same reset seeds, with a paired 95% interval, when the
    evaluation ``e`` has both."""
    if "eval_base/successes" not in e or "eval/successes" not in e:
        return {}
    mean, low, high = paired_difference(e["eval/successes"], e["eval_base/successes"])
    return {f"{prefix}policy_minus_base": mean, f"{prefix}policy_minus_base_ci": [low, high]}


def _round1(x: float | None) -> float | None:
    return None if x is None else round(x, 1)

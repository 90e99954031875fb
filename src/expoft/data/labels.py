"""Task labels: rewards, terminals and episode success of play data for one singletask, computed
from the recorded simulator states."""

from __future__ import annotations

import logging

import numpy as np

from expoft.data.transitions import Dataset, DatasetError
from expoft.envs.ogbench_domains import check_reward, get_domain, subgoal_successes, task_goal

log = logging.getLogger(__name__)


def label_for_task(ds: Dataset, env: str, task: int, reward: str = "sparse") -> Dataset:
    """Rewards, terminals and per-episode success of ``ds`` for one singletask.

    ``sparse``: r = 1 when s_{t+1} solves the task, else 0 (EXPO-FT's success reward).
    ``ogbench``: r = (#subgoals satisfied) - (#subgoals), as OGBench's singletask envs.
    In both, s_{t+1} is terminal when the task is solved.
    """
    check_reward(reward)
    if ds.next_qpos is None:
        raise DatasetError(
            "cannot compute task rewards: the dataset has no 'next_qpos'. Either load it without a task "
            "(its own rewards are used) or regenerate it with expoft, which records the simulator state"
        )
    domain = get_domain(env)
    if ds.next_qpos.shape[1] < domain.qpos_columns_needed:
        raise DatasetError(
            f"'next_qpos' has {ds.next_qpos.shape[1]} columns; {domain.name} needs {domain.qpos_columns_needed}"
        )
    if domain.has_button_states and ds.next_button_states is None:
        raise DatasetError(f"cannot judge {domain.name} success: the dataset has no 'next_button_states'")
    parts = subgoal_successes(domain, task_goal(domain.name, task), ds.next_qpos, ds.next_button_states)
    solved = parts.all(axis=1)
    if reward == "sparse":
        rewards = solved.astype(np.float32)
    else:
        rewards = (parts.sum(axis=1) - parts.shape[1]).astype(np.float32)
    starts, stops = ds.episode_bounds()
    episode_success = np.logical_or.reduceat(solved, starts) if len(starts) else np.zeros(0, bool)
    meta = {**ds.meta, "task": task, "reward": reward}
    return ds.replace(rewards=rewards, terminals=solved, episode_success=episode_success, meta=meta)

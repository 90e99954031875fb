"""What the online loop carries between steps and across a checkpoint, and its log rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from expoft.data.replay import ReplayBuffer

RECENT = 20  # episodes in the rolling success and intervention rates


@dataclasses.dataclass
class LoopState:
    """Everything of the online loop that a checkpoint must carry besides the agent and buffer.
    Fields holding ``time`` or ``seconds`` are wall-clock figures; a resumed run differs there only."""

    step: int = 0
    episodes: int = 0
    total_successes: int = 0
    update_calls: int = 0
    episodes_with_intervention: int = 0
    recent_successes: list[bool] = dataclasses.field(default_factory=list)
    recent_interventions: list[float] = dataclasses.field(default_factory=list)
    pending: list[dict[str, float]] = dataclasses.field(default_factory=list)
    """Metrics of the update calls since the last log row."""
    acted_edited: list[bool] = dataclasses.field(default_factory=list)
    acted_not_first: list[bool] = dataclasses.field(default_factory=list)
    """Per training decision since the last log row: did a candidate other than the first base
    sample win (the critic changed the action)?"""
    evals: list[dict] = dataclasses.field(default_factory=list)
    evaluations_due: list[int] = dataclasses.field(default_factory=list)
    """Env steps of evaluations an asynchronous learner had queued and not yet made (written at a
    checkpoint from ``OnlineLearner.evaluations_due``)."""
    first_95: int | None = None
    cpu_to_95: float | None = None
    """CPU seconds (:class:`Clock`) at the evaluation ``first_95``."""
    checkpoint_due: bool = False
    sampling_rng: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """``numpy.random.Generator.bit_generator.state`` of the replay sampling."""
    before: dict = dataclasses.field(default_factory=dict)
    """Evaluations before RL (OTF and base alone) and the pretraining loss."""
    metrics_bytes: int = 0
    """Length of metrics.jsonl when the checkpoint was written; later rows are replayed."""
    dataset_sha256: str = ""
    dropped_episodes: int = 0
    dropped_steps: int = 0
    """Episodes (and their steps) left out of the replay buffer because their actor died in them."""
    actors: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    """Several actors (``expoft learner --actors N``): per actor slot, the env steps and episodes
    of it that are in the replay buffer (whole episodes only): where each actor resumes."""
    detector_false_success: int = 0
    detector_missed: int = 0
    """Episodes a learned success detector ended as successes that the simulator did not see
    reached, and episodes where the simulator saw it but the detector never fired."""
    update_time: float = 0.0
    act_time: float = 0.0
    elapsed_seconds: float = 0.0
    """Wall time of the sessions before this one."""
    cpu_seconds: float = 0.0
    """CPU time of the sessions before this one (see :class:`Clock`)."""

    def finish_episode(self, success: bool, intervened_fraction: float, simulator_success: bool | None = None) -> None:
        if simulator_success is not None:  # a learned detector said `success`
            self.detector_false_success += success and not simulator_success
            self.detector_missed += simulator_success and not success
        self.episodes += 1
        self.total_successes += int(success)
        self.episodes_with_intervention += intervened_fraction > 0
        self.recent_successes = [*self.recent_successes, success][-RECENT:]
        self.recent_interventions = [*self.recent_interventions, intervened_fraction][-RECENT:]


def log_row(state: LoopState, buffer: ReplayBuffer) -> dict:
    row = {
        "env_step": state.step,
        "train/episodes": state.episodes,
        "train/success_rate": state.total_successes / max(state.episodes, 1),
        "train/rolling_success": float(np.mean(state.recent_successes)) if state.recent_successes else 0.0,
        "train/update_calls": state.update_calls,
        "otf/edited_frac": float(np.mean(state.acted_edited)) if state.acted_edited else None,
        "otf/not_first_frac": float(np.mean(state.acted_not_first)) if state.acted_not_first else None,
        "train/successful_online_steps": buffer.successful_steps[1],
        "train/intervened_steps": buffer.intervened_steps,
        "train/intervention_rate": float(np.mean(state.recent_interventions)) if state.recent_interventions else 0.0,
        "train/episodes_with_intervention": state.episodes_with_intervention,
        "train/detector_false_success": state.detector_false_success,
        "train/detector_missed": state.detector_missed,
    }
    if state.pending:
        row.update({k: float(np.mean([m[k] for m in state.pending])) for k in state.pending[0]})
    return row

"""The bench protocols (P1: fine-tune from generated demos; P2: offline-to-online from play data)
and what each sets in the runs."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the data package imports MuJoCo/OGBench: only where demos are made
    from expoft.envs.ogbench_domains import Domain


@dataclasses.dataclass(frozen=True)
class Protocol:
    name: str
    preset: str
    env: str
    overrides: dict
    """RunConfig fields set on every run (as `expoft finetune` flags), but on a method that fixes
    them (`expoft.train.methods.FIXED`)."""
    play_transitions: int | None = None
    """P2: play data of this size, labelled for the task, is the offline data."""
    offline_updates: int = 0
    """P2's offline phase: update calls on the offline data alone (offline RL) after the base's
    pretraining and before going online, for every method but those that fix it
    (`expoft.train.methods.FIXED`: rlpd, online-only by definition; bc, which does not learn; EXPO
    and its variants, which pretrain only the base offline)."""

    def describe(self) -> str:
        if self.play_transitions is None:
            data = "fine-tune from demos (noisy oracle demos generated for the task, base pretrained by imitation)"
        else:
            data = (
                f"offline-to-online from play data ({self.play_transitions:,} task-agnostic transitions labelled "
                f"for the task, offline pretraining of the base, then {self.offline_updates:,} offline RL update "
                "calls for the methods that have an offline RL phase: not rlpd, bc, or EXPO)"
            )
        budget = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in self.overrides.items())
        return f"{data}, then online; preset {self.preset}" + (f" with {budget}" if budget else "")


P2_REWARD = {"cube": "ogbench", "scene": "sparse", "puzzle": "sparse"}
"""P2's reward by domain family (BENCHMARKS.md: "cube-double, scene (sparse), puzzle-3x3
(sparse)", the published tables' settings): OGBench's partial-credit singletask reward on the cube
domains, the success reward on scene and puzzle (OGBench's sparse variants give -1 per step and 0
at success; expoft's gives 0 and 1: the same ordering of policies, with the episode ending at
success in both)."""

P2_OFFLINE_UPDATES = 500
"""Offline RL update calls of reduced P2 (each UTD 20 critic steps on offline batches)."""


PROTOCOLS = {
    # P1: the `p1` preset: 30 noisy demos, 20k imitation steps, 5000 online env steps.
    "p1": Protocol("p1", "p1", "cube-single", {}),
    # P2, reduced so that a grid finishes on a 2-core CPU: 100k play transitions, the p1
    # preset's 20k imitation steps, P2_OFFLINE_UPDATES offline RL update calls, 5000 online env
    # steps. With the old defaults (before 2026-12-05) P1 runs took 20-40 CPU minutes per 5000 env
    # steps; with the exact update at the published ratio plain EXPO takes about 12 CPU hours
    # (20 critic steps of ~0.45 s per env step, pinned), chunked methods a quarter to a half of that.
    "p2": Protocol(
        "p2",
        "p1",
        "cube-double",
        {"env_steps": 5_000, "eval_every": 1_000, "checkpoint_every": 1_000},
        100_000,
        P2_OFFLINE_UPDATES,
    ),  # fmt: skip
    # P2 at full size (--full): 1M play transitions, 1M imitation steps of the base, 1M offline
    # critic steps (50k update calls of UTD 20), 1M online env steps.
    "p2-full": Protocol(
        "p2",
        "default",
        "cube-double",
        {"pretrain_steps": 1_000_000, "env_steps": 1_000_000, "eval_every": 50_000, "checkpoint_every": 50_000},
        1_000_000,
        50_000,
    ),
}


TINY_PLAY_TRANSITIONS = 5_000
"""P2 play data with --preset tiny (unless --play-transitions)."""


TINY_OFFLINE_UPDATES = 5
"""P2 offline update calls with --preset tiny (unless --offline-updates)."""


def with_domain_reward(proto: Protocol, domain: Domain) -> Protocol:
    """A play-data protocol (P2) with the reward of ``domain``'s family (:data:`P2_REWARD`);
    other protocols as they are (the success reward)."""
    if proto.play_transitions is None:
        return proto
    return dataclasses.replace(proto, overrides={**proto.overrides, "reward": P2_REWARD[domain.family]})

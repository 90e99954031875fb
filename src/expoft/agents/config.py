"""What every agent shares: the base policy, the critic ensemble, chunks, batch and update ratio,
the learned actor of the baselines (defaults: EXPO's published values, ALGORITHMS.md), so that
methods compared side by side differ only where their definitions differ. What only one agent
has lives in that agent's file, in a config of its own (``expoft.agents.expo.EXPOConfig``,
``expoft.agents.fql.FQLConfig``, ...), which the registry names."""

from __future__ import annotations

import dataclasses

from expoft.encoders import EncoderConfig
from expoft.policies import BASE_POLICIES
from expoft.validation import require_at_least, require_positive

BASE_TRAINING = ("all", "successes", "frozen")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """The shared agent settings; defaults are EXPO's published ones (ALGORITHMS.md)."""

    base: str = "flow"
    """Base policy: flow (flow matching) or ddpm."""
    chunk_len: int = 1
    """H: actions per base sample (an action chunk). 1 = plain EXPO."""
    exec_len: int = 1
    """h <= H: actions of a chunk executed before replanning; critic and edit policy act on
    these h actions (dimension h * action_dim), and TD targets bootstrap after h steps."""
    flow_steps: int = 10
    """Denoising steps of the base (Euler steps for flow, T for ddpm)."""
    base_width: int = 256
    base_blocks: int = 3
    base_lr: float = 3e-4
    base_lr_decay_steps: int = 1_000_000
    """Cosine decay horizon of the base learning rate, in base steps."""
    base_ema: float = 0.001
    """EMA rate of the acting copy of the base."""
    base_training: str = "all"
    """What the base imitates during RL: all (offline + online data, EXPO), successes (steps of
    successful episodes only, offline and online: EXPO-FT), or frozen (no base steps)."""
    num_critics: int = 10
    critic_subset: int = 2
    """Target critics drawn for a min over the ensemble (OTF scoring, TD targets)."""
    critic_hidden: tuple[int, ...] = (256, 256, 256)
    critic_zero_init: bool = True
    """Every critic member starts at Q = 0 (a zero output layer; see ``expoft.nets.Critic``).
    False: the default init, members offset by about +-0.5 (our rule before 2026-12-05, kept
    for the ablation)."""
    critic_lr: float = 3e-4
    tau: float = 0.005
    discount: float = 0.99
    temperature_lr: float = 3e-4
    target_entropy_per_dim: float = -0.5
    """Target entropy of a SAC-style policy (EXPO's edit u, RLPD's and DSRL's actors) = this * d
    (d = action or executed-chunk dimension)."""
    utd: int = 20
    """Critic steps per update call."""
    actor_steps: int = 1
    """Base, edit and temperature steps per update call (1 as published, <= utd), on the last
    ``actor_steps`` critic minibatches. With one update call every k env steps (EXPO-FT's
    schedule) the published ratio of one actor step per env step needs ``actor_steps = k``:
    with 1, the base's EMA copy (rate 0.001) and the temperature hardly move in a short run."""
    batch_size: int = 256
    offline_fraction: float = 0.5
    target_pool_size: int | None = None
    """Speed option that changes what is learned (off by default): distinct transitions per
    update call whose OTF target candidates are drawn; each critic step takes its minibatch from
    this pool. None = utd * batch_size (every minibatch fresh, as published)."""
    actor_hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden layers of a baseline's learned actor: RLPD's Gaussian policy, FQL's one-step
    policy, DSRL's noise policy, the residual policy (EXPO's edit policy: ``edit_hidden``)."""
    actor_lr: float = 3e-4
    actor_init_temperature: float = 1.0
    """SAC temperature of a baseline's actor at the start (RLPD, DSRL); auto-tuned to
    ``target_entropy_per_dim``."""
    encoder: EncoderConfig = EncoderConfig()
    """Pixel observations only: the critic's image encoder (shared by its members, trained by the
    critic loss; the edit policy reads its features, gradient stopped) and the augmentation; the
    base has its own encoder of the same shape, trained by imitation."""

    def __post_init__(self):
        if self.base not in BASE_POLICIES:
            raise ValueError(f"base must be one of {sorted(BASE_POLICIES)}, got {self.base!r}")
        if self.base_training not in BASE_TRAINING:
            raise ValueError(f"base_training must be one of {BASE_TRAINING}, got {self.base_training!r}")
        require_at_least(
            self, 1, "flow_steps", "num_critics", "utd", "batch_size", "critic_subset",
            "chunk_len", "exec_len", "actor_steps",
        )  # fmt: skip
        if self.actor_steps > self.utd:
            raise ValueError(f"actor_steps {self.actor_steps} > utd {self.utd}: actor steps use critic minibatches")
        if self.exec_len > self.chunk_len:
            raise ValueError(
                f"exec_len {self.exec_len} > chunk_len {self.chunk_len}: "
                "a chunk cannot execute more actions than it has"
            )
        if self.critic_subset > self.num_critics:
            raise ValueError(f"critic_subset {self.critic_subset} > num_critics {self.num_critics}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must lie in [0, 1], got {self.discount}")
        if not 0.0 <= self.offline_fraction <= 1.0:
            raise ValueError(f"offline_fraction must lie in [0, 1], got {self.offline_fraction}")
        if not 0.0 < self.tau <= 1.0 or not 0.0 < self.base_ema <= 1.0:
            raise ValueError("tau and base_ema must lie in (0, 1]")
        require_positive(self, "actor_lr", "actor_init_temperature")
        if not self.actor_hidden or min(self.actor_hidden) < 1:
            raise ValueError(f"actor_hidden needs at least one layer of width >= 1, got {self.actor_hidden}")
        if self.target_pool_size is not None:
            b_off = self.minibatch_offline_count
            p_off = self.pool_offline_count
            if p_off < b_off or self.pool_size - p_off < self.batch_size - b_off:
                raise ValueError(
                    f"target_pool_size {self.target_pool_size} is too small for minibatches of "
                    f"{self.batch_size} with offline_fraction {self.offline_fraction}"
                )

    @property
    def base_needs_own_batch(self) -> bool:
        """The base's imitation batch cannot be the last critic minibatch: other chunk length, or
        other data."""
        if self.base_training == "frozen":  # nothing imitates: no batch to draw
            return False
        return self.chunk_len != self.exec_len or self.base_training == "successes"

    @property
    def base_batch_size(self) -> int:
        """Rows of the base's own imitation batch per update call (one minibatch per actor step)."""
        return self.actor_steps * self.batch_size

    @property
    def pool_size(self) -> int:
        """Transitions the training loop samples per update call."""
        return self.utd * self.batch_size if self.target_pool_size is None else self.target_pool_size

    @property
    def minibatch_offline_count(self) -> int:
        return round(self.batch_size * self.offline_fraction)

    @property
    def pool_offline_count(self) -> int:
        """Offline rows at the front of the pool (exact, so minibatches keep their mix)."""
        if self.target_pool_size is None:
            return self.utd * self.minibatch_offline_count
        return round(self.target_pool_size * self.offline_fraction)

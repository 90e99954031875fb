"""The one registry of agents: what ``RunConfig.algorithm`` may name, how to create it, and what
it can do. The training loop and the config ask the registry, never an agent's name.

An agent is an immutable pytree (``flax.struct.dataclass``) with
- ``config``: the shared ``EXPOConfig`` (chunks, batch, UTD, critic and base settings);
- ``has_base`` / ``learns_online``: class flags;
- ``act(obs, rng) -> (actions [B, exec_len * A], info)``, ``act_eval(obs, rng)``;
- ``update(pool, base_batch, next_base) -> (agent, metrics)``: one update call, on the batches
  the loop draws by :func:`batch_recipe` (the agent's config decides them);
- with a base: ``act_base``, ``pretrain`` (``expoft.agents.common.WithBase``).

Adding an agent: one file with the agent class, plus one line here (or, from outside the
package, a module named in ``$EXPOFT_AGENTS`` that calls :func:`register` when imported: the
environment variable reaches the processes `expoft bench` starts, so the bench can run it).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable
from typing import Any

from expoft.agents.baselines_config import BaselineConfig
from expoft.agents.bc import BCAgent
from expoft.agents.config import EXPOConfig
from expoft.agents.dsrl import DSRLAgent
from expoft.agents.expo import EXPOAgent
from expoft.agents.fql import FQLAgent
from expoft.agents.residual import ResidualAgent
from expoft.agents.rlpd import RLPDAgent
from expoft.obs import ObsSpec, PixelSpec

PLUGINS_VAR = "EXPOFT_AGENTS"


@dataclasses.dataclass(frozen=True)
class BatchRecipe:
    """What the loop draws for one update call: a pool of ``pool_size`` executed chunks of
    ``chunk_len`` steps, the first ``num_offline`` from the offline data; and, when the base
    learns from data of its own, ``base_size`` chunks of ``base_chunk_len`` for its imitation."""

    pool_size: int
    num_offline: int
    chunk_len: int
    discount: float
    base_size: int = 0
    base_chunk_len: int = 0
    base_offline_fraction: float = 0.5
    base_successful_only: bool = False


def batch_recipe(config: EXPOConfig, offline_only: bool = False) -> BatchRecipe:
    """The batches an update call of an agent with this config takes (``offline_only``: every
    row from the offline data, the offline phase)."""
    recipe = BatchRecipe(
        pool_size=config.pool_size,
        num_offline=config.pool_size if offline_only else config.pool_offline_count,
        chunk_len=config.exec_len,
        discount=config.discount,
    )
    if not config.base_needs_own_batch:
        return recipe
    return dataclasses.replace(
        recipe, base_size=config.base_batch_size, base_chunk_len=config.chunk_len,
        base_offline_fraction=1.0 if offline_only else config.offline_fraction,
        base_successful_only=config.base_training == "successes",
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    """An agent the runs can name (``--algorithm NAME``, or a method of ``expoft.train.methods``)."""

    name: str
    create: Callable[[EXPOConfig, BaselineConfig, ObsSpec, int, int], Any]
    """``(config, baseline, obs_dim, action_dim, seed) -> agent``."""
    learns: bool = True
    """False: nothing is learned after pretraining (an offline RL phase has nothing to do)."""
    pixels: bool = False
    """Takes pixel observations (``PixelSpec``) as well as state vectors."""
    external_base: bool = False
    """Can act around an external base (``--external-base``)."""
    target_cache: bool = False
    """Draws its TD-target candidates from its own base, so ``target_cache_refresh`` applies."""
    recipe: Callable[[EXPOConfig, bool], BatchRecipe] | None = None
    """``(config, offline_only) -> BatchRecipe``: the batches of one update call; None: the
    shared rule, :func:`batch_recipe`."""

    def batches(self, config: EXPOConfig, offline_only: bool = False) -> BatchRecipe:
        return (self.recipe or batch_recipe)(config, offline_only)


AGENTS: dict[str, AgentSpec] = {}


def register(spec: AgentSpec) -> AgentSpec:
    if spec.name in AGENTS and AGENTS[spec.name] != spec:
        raise ValueError(f"an agent named {spec.name!r} is registered already")
    AGENTS[spec.name] = spec
    return spec


def _baseline(cls) -> Callable[[EXPOConfig, BaselineConfig, ObsSpec, int, int], Any]:
    # the baselines take state sizes only; create_agent refuses pixels for them before this runs
    return lambda config, baseline, obs_dim, action_dim, seed: cls.create(config, baseline, obs_dim, action_dim, seed)


register(AgentSpec("expo", lambda c, b, o, a, s: EXPOAgent.create(c, o, a, seed=s), pixels=True, external_base=True,
                   target_cache=True))  # fmt: skip
register(AgentSpec("bc", _baseline(BCAgent), learns=False))
register(AgentSpec("rlpd", _baseline(RLPDAgent)))
register(AgentSpec("fql", _baseline(FQLAgent)))
register(AgentSpec("dsrl", _baseline(DSRLAgent)))
register(AgentSpec("residual", _baseline(ResidualAgent)))

_loaded_plugins: set[str] = set()


def load_plugins() -> None:
    """Import the modules named in ``$EXPOFT_AGENTS`` (comma-separated), once each."""
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_VAR, "").split(","))):
        if module not in _loaded_plugins:
            try:
                importlib.import_module(module)
            except ImportError as error:
                raise ValueError(f"${PLUGINS_VAR} names {module!r}, which cannot be imported: {error}") from error
            _loaded_plugins.add(module)


def agent_spec(name: str) -> AgentSpec:
    load_plugins()
    if name not in AGENTS:
        raise ValueError(f"algorithm must be one of {sorted(AGENTS)}, got {name!r} (more: ${PLUGINS_VAR})")
    return AGENTS[name]


def create_agent(
    algorithm: str,
    config: EXPOConfig,
    obs_dim: ObsSpec,
    action_dim: int,
    seed: int = 0,
    baseline: BaselineConfig | None = None,
):
    """A fresh agent; ``action_dim`` is the size of one action (the environment's)."""
    spec = agent_spec(algorithm)
    if isinstance(obs_dim, PixelSpec) and not spec.pixels:
        raise ValueError(
            f"algorithm {algorithm!r} takes state observations only (an int obs_dim, got {obs_dim!r}); "
            f"pixel observations work with {sorted(n for n, s in AGENTS.items() if s.pixels)}"
        )
    return spec.create(config, baseline or BaselineConfig(), obs_dim, action_dim, seed)

"""The one registry of agents: what ``RunConfig.algorithm`` may name, how to create it, and what
it can do. The training loop and the config ask the registry, never an agent's name.

An agent is an immutable pytree (``flax.struct.dataclass``) with
- ``config``: the shared ``AgentConfig`` (chunks, batch, UTD, critic and base settings);
- ``options``: its own settings, an instance of the config class its spec names (or None);
- ``has_base`` / ``learns_online``: class flags;
- ``act(obs, rng) -> (actions [B, exec_len * A], info)``, ``act_eval(obs, rng)``;
- ``update(pool, base_batch, next_base) -> (agent, metrics)``: one update call, on the batches
  the loop draws by :func:`batch_recipe` (the agent's config decides them);
- with a base: ``act_base``, ``pretrain`` (``expoft.agents.common.WithBase``).

Adding an agent: one file with the agent class (and its own config class, if it has settings
of its own), plus one line here (or, from outside the
package, a module named in ``$EXPOFT_AGENTS`` that calls :func:`register` when imported: the
environment variable reaches the processes `expoft bench` starts, so the bench can run it).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable
from typing import Any

from expoft.agents.bc import BCAgent
from expoft.agents.config import AgentConfig
from expoft.agents.dsrl import DSRLAgent, DSRLConfig
from expoft.agents.expo import EXPOAgent, EXPOConfig
from expoft.agents.fql import FQLAgent, FQLConfig
from expoft.agents.residual import ResidualAgent, ResidualConfig
from expoft.agents.rlpd import RLPDAgent, RLPDConfig
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


def batch_recipe(config: AgentConfig, offline_only: bool = False) -> BatchRecipe:
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
    create: Callable[..., Any]
    """``(config, options, obs_dim, action_dim, seed) -> agent``: the ``classmethod create`` of
    the agent class (``obs_dim``: a state size, or a ``PixelSpec`` where ``pixels``)."""
    options: type | None = None
    """The agent's own config class (a frozen dataclass whose defaults are the agent's
    published values; ``RunConfig`` holds one under the agent's name, whose fields are flags of
    their own). It may define ``check(config)``: what its settings need of the shared ones."""
    learns: bool = True
    """False: nothing is learned after pretraining (an offline RL phase has nothing to do)."""
    pixels: bool = False
    """Takes pixel observations (``PixelSpec``) as well as state vectors."""
    external_base: bool = False
    """Can act around an external base (``--external-base``)."""
    target_cache: bool = False
    """Draws its TD-target candidates from its own base, so ``target_cache_refresh`` applies."""
    recipe: Callable[[AgentConfig, bool], BatchRecipe] | None = None
    """``(config, offline_only) -> BatchRecipe``: the batches of one update call; None: the
    shared rule, :func:`batch_recipe`."""

    def batches(self, config: AgentConfig, offline_only: bool = False) -> BatchRecipe:
        return (self.recipe or batch_recipe)(config, offline_only)


AGENTS: dict[str, AgentSpec] = {}


def register(spec: AgentSpec) -> AgentSpec:
    if spec.name in AGENTS and AGENTS[spec.name] != spec:
        raise ValueError(f"an agent named {spec.name!r} is registered already")
    AGENTS[spec.name] = spec
    return spec


# The baselines take state sizes only: create_agent refuses pixels for them before they run.
register(AgentSpec("expo", EXPOAgent.create, EXPOConfig, pixels=True, external_base=True, target_cache=True))
register(AgentSpec("bc", BCAgent.create, learns=False))
register(AgentSpec("rlpd", RLPDAgent.create, RLPDConfig))
register(AgentSpec("fql", FQLAgent.create, FQLConfig))
register(AgentSpec("dsrl", DSRLAgent.create, DSRLConfig))
register(AgentSpec("residual", ResidualAgent.create, ResidualConfig))

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


def default_options(algorithm: str) -> Any:
    """The agent's own settings at their defaults (None for an agent without any)."""
    spec = agent_spec(algorithm)
    return None if spec.options is None else spec.options()


def check_options(algorithm: str, config: AgentConfig, options: Any) -> None:
    """``options`` must be the agent's own config, and fit the shared ``config``."""
    spec = agent_spec(algorithm)
    if spec.options is None:
        if options is not None:
            raise ValueError(f"algorithm {algorithm!r} has no settings of its own, got {type(options).__name__}")
        return
    if not isinstance(options, spec.options):
        raise ValueError(
            f"algorithm {algorithm!r} takes a {spec.options.__name__} as its own settings, got {type(options).__name__}"
        )
    if hasattr(options, "check"):
        options.check(config)


def create_agent(
    algorithm: str,
    config: AgentConfig,
    obs_dim: ObsSpec,
    action_dim: int,
    seed: int = 0,
    options: Any = None,
):
    """A fresh agent; ``action_dim`` is the size of one action (the environment's); ``options``:
    the agent's own settings (None: their defaults)."""
    spec = agent_spec(algorithm)
    if options is None:
        options = default_options(algorithm)
    check_options(algorithm, config, options)
    if isinstance(obs_dim, PixelSpec) and not spec.pixels:
        raise ValueError(
            f"algorithm {algorithm!r} takes state observations only (an int obs_dim, got {obs_dim!r}); "
            f"pixel observations work with {sorted(n for n, s in AGENTS.items() if s.pixels)}"
        )
    return spec.create(config, options, obs_dim, action_dim, seed)

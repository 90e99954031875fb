"""The agent registry: names, capabilities, plugins, and the batches of an update call."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from expoft.agents.expo import EXPOConfig
from expoft.agents.fql import FQLConfig
from expoft.agents.registry import AGENTS, AgentSpec, agent_spec, batch_recipe, create_agent, register
from expoft.obs import PixelSpec
from expoft.train.config import (
    AGENT_SECTIONS,
    EXPO_FT_AGENT,
    SECTIONS,
    TINY_AGENT,
    RunConfig,
    preset,
    section_type,
    with_agent_settings,
)
from expoft.train.methods import apply_method, method_names
from expoft.train.rundir import config_from_json


def test_every_algorithm_is_registered_with_its_capabilities():
    assert {"expo", "bc", "rlpd", "fql", "dsrl", "residual"} <= set(AGENTS)
    assert [n for n, s in AGENTS.items() if s.pixels] == ["expo"] and not agent_spec("bc").learns
    with pytest.raises(ValueError, match="algorithm must be one of .*'rlpd'"):
        agent_spec("ppo")
    with pytest.raises(ValueError, match="already"):
        register(dataclasses.replace(AGENTS["rlpd"], learns=False))


def test_each_agent_owns_its_config_and_the_run_config_holds_one_section_each():
    """An agent with settings of its own has a config class (in its file) and a RunConfig section
    named after it; the flags are flat, so no field name is in two sections."""
    for name, spec in AGENTS.items():
        if spec.options is not None and name in AGENT_SECTIONS:
            assert section_type(name) is spec.options
            assert spec.create.__module__ == spec.options.__module__  # the agent's own file
    names = [f.name for section in SECTIONS for f in dataclasses.fields(section_type(section))]
    assert len(names) == len(set(names))
    cfg = with_agent_settings(preset("tiny"), edit_scale=0.2, utd=3, fql_alpha=7.0)
    assert (cfg.expo.edit_scale, cfg.agent.utd, cfg.fql.fql_alpha) == (0.2, 3, 7.0)
    assert dataclasses.replace(cfg, algorithm="fql").options == FQLConfig(fql_alpha=7.0)
    with pytest.raises(ValueError, match="no agent setting is named 'edit_scal'"):
        with_agent_settings(cfg, edit_scal=0.2)
    with pytest.raises(ValueError, match="takes a EXPOConfig as its own settings, got FQLConfig"):
        create_agent("expo", TINY_AGENT, 3, 2, 0, FQLConfig())
    with pytest.raises(ValueError, match="flow bases only"):
        preset("tiny", agent=dataclasses.replace(TINY_AGENT, base="ddpm"), expo=EXPOConfig(target_flow_steps=1))


def test_a_config_json_from_before_per_agent_configs_loads_unchanged():
    """A committed run folder written when EXPO's settings lived in ``agent`` and the baselines'
    in ``baseline``: each setting lands in the section that holds it now."""
    path = Path(__file__).parents[1] / "benchmarks/results/screen-p1-targets/runs/expo/seed0/config.json"
    old = json.loads(path.read_text())
    assert "baseline" in old and "num_edit_samples" in old["agent"]
    cfg = config_from_json(old)
    assert cfg.agent.chunk_len == old["agent"]["chunk_len"] == 5 and cfg.agent.target_pool_size == 1024
    assert cfg.expo.targets_per_call and not cfg.expo.independent_backup_subsets and not cfg.agent.critic_zero_init
    assert cfg.agent.actor_hidden == tuple(old["baseline"]["actor_hidden"])
    assert cfg.fql.fql_alpha == old["baseline"]["fql_alpha"]
    assert isinstance(cfg, RunConfig)


def test_capabilities_are_checked_by_the_config():
    with pytest.raises(ValueError, match=r"pixel observations work with \['expo'\], not 'rlpd'"):
        preset("tiny", algorithm="rlpd", pixels=PixelSpec(image_size=32))
    with pytest.raises(ValueError, match="does not learn"):
        preset("tiny", algorithm="bc", offline_updates=3)
    with pytest.raises(ValueError, match="acts around an external base"):
        preset("tiny", algorithm="fql", external_base="ws://127.0.0.1:1")


def test_a_plugin_that_cannot_be_imported_is_named(monkeypatch):
    monkeypatch.setenv("EXPOFT_AGENTS", "no_such_module_here")
    with pytest.raises(ValueError, match=r"\$EXPOFT_AGENTS names 'no_such_module_here'"):
        agent_spec("expo")


def test_a_registered_agent_is_a_method_by_its_own_name(monkeypatch):
    monkeypatch.setitem(AGENTS, "mine", AgentSpec("mine", AGENTS["bc"].create, learns=False))
    assert "mine" in method_names() and apply_method("mine", preset("tiny")).algorithm == "mine"


def test_batch_recipe_of_an_update_call():
    plain = batch_recipe(TINY_AGENT)
    assert (plain.pool_size, plain.num_offline, plain.chunk_len, plain.base_size) == (
        TINY_AGENT.utd * TINY_AGENT.batch_size, TINY_AGENT.pool_offline_count, 1, 0
    )  # fmt: skip
    offline = batch_recipe(EXPO_FT_AGENT, offline_only=True)
    assert offline.num_offline == offline.pool_size and offline.base_offline_fraction == 1.0
    ft = batch_recipe(EXPO_FT_AGENT)  # the base imitates successes: its own batch of whole chunks
    assert (ft.chunk_len, ft.base_chunk_len, ft.base_successful_only) == (4, 8, True)

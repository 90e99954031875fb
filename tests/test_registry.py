"""The agent registry: names, capabilities, plugins, and the batches of an update call."""

from __future__ import annotations

import dataclasses

import pytest

from expoft.agents.registry import AGENTS, AgentSpec, agent_spec, batch_recipe, register
from expoft.obs import PixelSpec
from expoft.train.config import EXPO_FT_AGENT, TINY_AGENT, preset
from expoft.train.methods import apply_method, method_names


def test_every_algorithm_is_registered_with_its_capabilities():
    assert {"expo", "bc", "rlpd", "fql", "dsrl", "residual"} <= set(AGENTS)
    assert [n for n, s in AGENTS.items() if s.pixels] == ["expo"] and not agent_spec("bc").learns
    with pytest.raises(ValueError, match="algorithm must be one of .*'rlpd'"):
        agent_spec("ppo")
    with pytest.raises(ValueError, match="already"):
        register(dataclasses.replace(AGENTS["rlpd"], learns=False))


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

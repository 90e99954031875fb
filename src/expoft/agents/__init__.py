"""Agents: EXPO and the baselines, one file each, all with one interface; the registry
(``expoft.agents.registry``) says which exist and what each can do."""

from __future__ import annotations

from expoft.agents.config import AgentConfig
from expoft.agents.expo import EXPOAgent, EXPOConfig
from expoft.agents.registry import AGENTS, AgentSpec, agent_spec, create_agent, register

__all__ = ["AGENTS", "AgentSpec", "AgentConfig", "EXPOAgent", "EXPOConfig", "agent_spec", "create_agent", "register"]

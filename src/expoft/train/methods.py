"""Named methods for side-by-side comparisons (`expoft finetune --method NAME`, `expoft bench`).

A method is a change of a run config: which agent, and the settings that define the method
(ALGORITHMS.md, "baselines"). Everything else (data, pretraining, environment-step budget,
update schedule, UTD, batch, critic ensemble, evaluation) stays as the preset has it, so
that methods run under one preset differ only where their definitions differ. Every method
keeps the preset's ratio per decision (an update call per executed chunk by default), so a
chunked method makes fewer update calls per env step than an unchunked one: a decision is a
chunk (ALGORITHMS.md, EXPO-FT 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated

from expoft.agents.registry import AGENTS, load_plugins
from expoft.train.config import EXPO_FT_AGENT, EXPO_FT_EXPO, RunConfig, preset, with_agent_settings

QC_CHUNK = 5
"""Q-chunking's chunk length on OGBench (h = 5), used by qc and qc-fql."""


_EXPO_OFFLINE = {"offline_updates": 0}
"""EXPO offline-to-online (ALGORITHMS.md): pretrain only the base by imitation, no critic
pretraining; the offline data stays in the online mix. So no offline RL phase for EXPO, its
variants and its ablations, whatever a protocol gives the methods whose definitions have one
(QC, best-of-N, FQL, DSRL, residual). `--offline-updates N` after `--method` still sets one,
as a recorded change of the method."""

FIXED: dict[str, dict] = {
    **dict.fromkeys(("expo", "expo-ft", "expo-ft-intervene", "expo-no-edit", "expo-no-otf-backup"), _EXPO_OFFLINE),
    # RLPD is online-only by definition: Gaussian SAC from scratch, the offline data filling half
    # of each online batch and nothing more (no pretraining, no offline phase, no base to take).
    "rlpd": {"pretrain_steps": 0, "offline_updates": 0, "base_from": None},
    # BC does not learn after its pretraining.
    "bc": {"offline_updates": 0},
}
"""Run settings that define a method, whatever a preset or a protocol sets: `apply_method` sets
them before the method's other changes, and `expoft bench` sets a protocol's fields only on
methods that leave them free. Flags given after `--method` still override them."""


def fixes(name: str) -> frozenset[str]:
    """The RunConfig fields that method ``name`` fixes (see :data:`FIXED`)."""
    return frozenset(FIXED.get(name, {}))


def _agent(cfg: RunConfig, algorithm: str | None = None, **agent_changes) -> RunConfig:
    """``cfg`` run by ``algorithm`` with agent settings changed by name (shared or its own)."""
    return with_agent_settings(dataclasses.replace(cfg, algorithm=algorithm or cfg.algorithm), **agent_changes)


def _chunked(cfg: RunConfig, length: int) -> dict:
    """Chunk settings (chunks executed whole), unless the preset already chunks (then its
    chunking is kept)."""
    return _chunked_as(cfg, length, length)


def _chunked_as(cfg: RunConfig, length: int, executed: int) -> dict:
    """Chunks of ``length`` actions of which ``executed`` run before replanning, unless the
    preset already chunks (then its chunking is kept)."""
    if cfg.agent.chunk_len > 1:
        return {}
    return {"chunk_len": length, "exec_len": executed}


METHODS: dict[str, Callable[[RunConfig], RunConfig]] = {
    # EXPO as the preset has it.
    "expo": lambda c: _agent(c, "expo"),
    # EXPO-FT in simulation, as the expo-ft preset's agent (train/config.py EXPO_FT_*): chunks (H 8,
    # h 4), the base imitating successful episodes only, edit scale 0.1; the preset's ratio per
    # decision (by default one update call of UTD 20 and one actor step per executed chunk). The
    # real-robot schedule decoupled from control (a call every 20-30 env steps) is `--update-every`.
    "expo-ft": lambda c: _agent(
        c,
        "expo",
        base_training=EXPO_FT_AGENT.base_training,
        edit_scale=EXPO_FT_EXPO.edit_scale,
        **_chunked_as(c, EXPO_FT_AGENT.chunk_len, EXPO_FT_AGENT.exec_len),
    ),
    # EXPO-FT given the offline RL phase a protocol gives QC (P2: critic, edit policy and base
    # updated on the play data alone before the first env step). A deviation from published
    # EXPO-FT, whose offline-to-online setting pretrains only the base (so not in FIXED): on P2
    # scene it began online at 0.54-0.76 where expo-ft began at 0.02-0.18, and ended at 0.94
    # against 0.65 (3 seeds; docs/results/learn.md, "EXPO-FT with QC's offline phase on scene").
    # Without an offline phase (P1) it is expo-ft.
    "expo-ft-offline": lambda c: METHODS["expo-ft"](c),
    # EXPO-FT with simulated human interventions (the scripted OGBench oracle takes over when the
    # policy stalls, less and less often): the third arm of the EXPO-FT comparison.
    "expo-ft-intervene": lambda c: dataclasses.replace(METHODS["expo-ft"](c), intervene="scripted"),
    # Best-of-N / Q-chunking: no edits, argmax of N = 32 base samples, chunks of 5.
    "qc": lambda c: _agent(c, "expo", num_base_samples=32, num_edit_samples=0, **_chunked(c, QC_CHUNK)),
    # Best-of-N without chunks (EXPO without edits, N = 32).
    "best-of-n": lambda c: _agent(c, "expo", num_base_samples=32, num_edit_samples=0, chunk_len=1, exec_len=1),
    # EXPO ablations.
    "expo-no-edit": lambda c: _agent(c, "expo", num_edit_samples=0),
    "expo-no-otf-backup": lambda c: _agent(c, "expo", otf_in_backup=False),
    # The pretrained base alone, no online learning.
    "bc": lambda c: _agent(c, "bc"),
    # RLPD: Gaussian SAC from scratch with the offline data in every batch.
    "rlpd": lambda c: _agent(c, "rlpd"),
    # FQL: a one-step policy distilled from the flow base and maximizing Q; QC-FQL adds chunks.
    "fql": lambda c: _agent(c, "fql", chunk_len=1, exec_len=1),
    "qc-fql": lambda c: _agent(c, "fql", **_chunked(c, QC_CHUNK)),
    # DSRL: SAC over the frozen base's input noise.
    "dsrl": lambda c: _agent(c, "dsrl", base_training="frozen"),
    # Residual RL: frozen base plus a small learned correction (TD3-style).
    "residual": lambda c: _agent(c, "residual", base_training="frozen"),
}


COMPARED = ("expo", "expo-ft", "rlpd", "qc", "qc-fql", "fql", "dsrl", "residual", "bc")
"""The methods `expoft bench` compares unless told otherwise (the variants and ablations above
are run by name)."""


def method_names() -> list[str]:
    """Every name `--method` takes: the methods above, then every registered agent by its own name
    (an agent added by ``$EXPOFT_AGENTS`` runs as a method with no further registration)."""
    load_plugins()
    return [*METHODS, *(name for name in AGENTS if name not in METHODS)]


def apply_method(name: str, cfg: RunConfig) -> RunConfig:
    if name not in method_names():
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(method_names())}")
    method = METHODS.get(name) or (lambda c: _agent(c, name))
    # the fixed settings first: a method's config may only be valid with them (bc: no offline phase)
    return method(dataclasses.replace(cfg, **FIXED.get(name, {})))


def split_preset_and_method(argv: list[str], preset_name: str = "default") -> tuple[str, str | None, list[str]]:
    """``(preset, method, the other flags)`` of a command line: ``--preset NAME`` picks the
    defaults, ``--method NAME`` changes them into that method's; the other flags override."""
    rest, method = [], None
    it = iter(argv)
    for arg in it:
        if arg in ("--preset", "--method"):
            value = next(it, "")
        elif arg.startswith(("--preset=", "--method=")):
            arg, value = arg.split("=", 1)
        else:
            rest.append(arg)
            continue
        if arg == "--preset":
            preset_name = value
        else:
            method = value
    return preset_name, method, rest


def base_config(preset_name: str, method: str | None = None) -> RunConfig:
    """The preset's config, changed into ``method``'s when one is named."""
    config = preset(preset_name)
    return config if method is None else apply_method(method, config)


def run_config(argv: list[str], preset_name: str = "default") -> RunConfig:
    """The RunConfig of `expoft finetune` flags (``--preset``, ``--method``, then any RunConfig
    flag), parsed as the CLI parses them; a bad flag is a ValueError that says which."""
    import tyro

    name, method, rest = split_preset_and_method(argv, preset_name)
    try:
        return tyro.cli(
            Annotated[RunConfig, tyro.conf.OmitArgPrefixes], args=rest, default=base_config(name, method),
            prog="expoft finetune",
        )  # fmt: skip
    except SystemExit:  # tyro has printed what is wrong
        raise ValueError(f"`expoft finetune {' '.join(argv)}` is not a valid command (see the message above)") from None

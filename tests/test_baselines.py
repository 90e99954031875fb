"""The baselines in the shared harness: shapes, finite learning, known answers, the loop."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from expoft.agents import create_agent
from expoft.agents.common import act, act_base, act_eval, pretrain, subset_min, tanh_actor, update
from expoft.agents.dsrl import DSRLConfig
from expoft.agents.rlpd import RLPDConfig
from expoft.cli import Finetune, _with_preset, main
from expoft.data.chunk_sampling import ChunkBatch
from expoft.obs import PixelSpec
from expoft.policies import DiffusionPolicy, FlowPolicy
from expoft.train.config import TINY_AGENT, TINY_EXPO, preset
from expoft.train.methods import FIXED, METHODS, apply_method, fixes

from .conftest import metrics_rows

OBS, ACT = 6, 2
CHUNK = 2
TINY = dataclasses.replace(TINY_AGENT, chunk_len=CHUNK, exec_len=CHUNK, utd=4, batch_size=16, actor_steps=2)


def pool(cfg, seed=0, rewards=None, masks=1.0):
    rng = np.random.default_rng(seed)
    p, h = cfg.pool_size, cfg.exec_len
    r = rng.normal(size=p) if rewards is None else np.full(p, rewards)
    return ChunkBatch(
        observations=rng.normal(size=(p, OBS)).astype(np.float32),
        actions=rng.uniform(-1, 1, (p, h, ACT)).astype(np.float32),
        rewards=r.astype(np.float32),
        discounts=np.full(p, cfg.discount**h, np.float32),
        masks=np.full(p, masks, np.float32),
        next_observations=rng.normal(size=(p, OBS)).astype(np.float32),
        valid=np.ones((p, h), np.float32),
        offline=np.arange(p) < cfg.pool_offline_count,
    )


def config_for(algorithm: str):
    frozen = algorithm in ("dsrl", "residual")
    return dataclasses.replace(TINY, base_training="frozen" if frozen else "all")


@pytest.mark.parametrize("algorithm", ["rlpd", "fql", "dsrl", "residual"])
def test_baseline_acts_in_range_and_its_critic_learns(algorithm):
    """Actions are [B, exec_len * A] in [-1, 1]; metrics are finite; on a fixed pool of terminal
    transitions (y = r) the critic loss falls; the actor's parameters change."""
    cfg = config_for(algorithm)
    agent = create_agent(algorithm, cfg, OBS, ACT, seed=0)
    obs = np.random.default_rng(1).normal(size=(5, OBS)).astype(np.float32)
    for fn in (act, act_eval):
        actions, _ = fn(agent, obs, jax.random.PRNGKey(0))
        assert actions.shape == (5, CHUNK * ACT) and actions.dtype == np.float32
        assert float(np.abs(actions).max()) <= 1.0
    data = pool(cfg, rewards=None, masks=0.0)
    # a reward the critic can fit (a function of the state), from a critic that starts at Q = 0
    data = data._replace(rewards=(2.0 * np.tanh(data.observations[:, 0])).astype(np.float32))
    first = agent
    losses = []
    for _ in range(60):
        agent, metrics = update(agent, data)
        assert all(np.isfinite(v) for v in metrics.values()), metrics
        assert metrics["critic/nonfinite"] == 0
        losses.append(float(metrics["critic/loss"]))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
    actor_field = {"rlpd": "actor", "fql": "onestep", "dsrl": "noise_actor", "residual": "actor"}[algorithm]
    before = jax.tree.leaves(getattr(first, actor_field).params)
    after = jax.tree.leaves(getattr(agent, actor_field).params)
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    if algorithm in ("dsrl", "residual"):  # frozen base: untouched
        for a, b in zip(jax.tree.leaves(first.base_ema), jax.tree.leaves(agent.base_ema), strict=True):
            np.testing.assert_array_equal(a, b)


def test_rlpd_soft_target_subtracts_the_entropy_term():
    """Known answer: next_value = min over the drawn subset of Q'(s', a') - alpha * log pi(a'|s'),
    with the same draws, and without the entropy term when backup_entropy is off (the default:
    a sparse 0/1 reward, as for EXPO)."""
    cfg = dataclasses.replace(TINY, actor_init_temperature=0.3)
    soft = create_agent("rlpd", cfg, OBS, ACT, seed=0, options=RLPDConfig(backup_entropy=True))
    hard = create_agent("rlpd", cfg, OBS, ACT, seed=0)
    mb = pool(cfg)._replace(actions=None)
    key = jax.random.PRNGKey(7)
    k_act, k_members = jax.random.split(key)
    a_next, log_prob = tanh_actor(soft.head, soft.actor.params, k_act, mb.next_observations, 1.0, explore=True)
    q = subset_min(cfg, soft.target_critic, k_members, mb.next_observations, a_next)
    np.testing.assert_allclose(soft.next_value(key, mb, soft.target_critic), q - 0.3 * log_prob, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hard.next_value(key, mb, hard.target_critic), q, rtol=1e-5, atol=1e-5)


def test_a_baseline_refuses_pixel_observations():
    with pytest.raises(ValueError, match="'rlpd' takes state observations only"):
        create_agent("rlpd", config_for("rlpd"), PixelSpec(), ACT, seed=0)


def test_fql_distillation_is_a_mean_over_every_element():
    """Known answer: the distillation term is mean((mu(s, z) - flow(s, z))^2) over batch and all
    chunk dimensions, so alpha means the same at any chunk length (a sum over the chunk would
    scale it by chunk_len * action_dim)."""
    cfg = config_for("fql")
    agent = create_agent("fql", cfg, OBS, ACT, seed=0)
    obs = np.random.default_rng(4).normal(size=(8, OBS)).astype(np.float32)
    key = jax.random.PRNGKey(11)
    loss, metrics = agent._onestep_loss(agent.onestep.params, key, obs, agent.base.params, None)
    z = jax.random.normal(key, (8, CHUNK * ACT))
    diff = np.asarray(agent._mu(agent.onestep.params, obs, z)) - np.asarray(
        agent.base_policy.decode(agent.base.params, obs, z)
    )
    np.testing.assert_allclose(metrics["actor/distill_loss"], np.mean(diff**2), rtol=1e-5)
    np.testing.assert_allclose(loss, agent.options.fql_alpha * np.mean(diff**2), rtol=1e-5)


def test_dsrl_noise_critic_takes_a_step_per_critic_step():
    """DSRL-NA trains Q^W alongside the action critic: one update call makes UTD regression steps
    of Q^W (its Adam count) and actor_steps of the noise policy."""
    cfg = config_for("dsrl")
    agent = create_agent("dsrl", cfg, OBS, ACT, seed=0)
    agent, metrics = update(agent, pool(cfg))
    count = lambda t: int(jax.tree.leaves(t.opt_state)[0])  # noqa: E731  Adam's step counter
    assert count(agent.noise_critic) == cfg.utd == 4
    assert count(agent.noise_actor) == cfg.actor_steps == 2
    assert np.isfinite(metrics["noise_critic/loss"])


def test_residual_starts_as_the_base_and_stays_within_its_scale():
    """The zero-initialised correction: evaluation actions equal the base's exactly; exploring
    actions differ from them by at most the residual scale per dimension."""
    agent = create_agent("residual", config_for("residual"), OBS, ACT, seed=0)
    obs = np.random.default_rng(2).normal(size=(64, OBS)).astype(np.float32)
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(act_eval(agent, obs, key)[0], act_base(agent, obs, key))
    k_base, _ = jax.random.split(key)
    explored = np.asarray(act(agent, obs, key)[0])
    base = np.asarray(act_base(agent, obs, k_base))
    assert 0 < np.abs(explored - base).max() <= agent.options.residual_scale + 1e-6


@pytest.mark.parametrize("policy_cls", [FlowPolicy, DiffusionPolicy])
def test_decode_is_the_deterministic_noise_to_action_map(policy_cls):
    """Same noise, same action; different noise, different action; flow sampling is decode of
    normal noise (so DSRL and FQL steer and distil exactly what the base samples)."""
    policy = policy_cls(action_dim=3, steps=4, width=16, blocks=1)
    params = policy.init(jax.random.PRNGKey(0), OBS)
    obs = np.random.default_rng(0).normal(size=(4, OBS)).astype(np.float32)
    noise = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    a = policy.decode(params, obs, noise)
    np.testing.assert_array_equal(a, policy.decode(params, obs, noise))
    assert not np.allclose(a, policy.decode(params, obs, noise + 1.0))
    assert a.shape == (4, 3) and float(np.abs(a).max()) <= 1.0
    if policy_cls is FlowPolicy:
        key = jax.random.PRNGKey(5)
        sampled = policy.sample(params, key, obs, 2)
        drawn = jax.random.normal(key, (4, 2, 3))
        np.testing.assert_allclose(sampled, policy.decode(params, np.repeat(obs[:, None], 2, 1), drawn), atol=1e-6)


def test_fql_pretraining_distils_the_one_step_policy():
    """Pretraining moves the one-step policy towards the base's noise-to-action map."""
    cfg = config_for("fql")
    agent = create_agent("fql", cfg, OBS, ACT, seed=0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(64, OBS)).astype(np.float32)
    actions = (0.5 * np.tanh(obs[:, : CHUNK * ACT])).astype(np.float32)  # a chunk per observation
    z = jax.random.normal(jax.random.PRNGKey(9), (64, CHUNK * ACT))

    def gap(a):
        return float(np.mean((a._mu(a.onestep.params, obs, z) - a.base_policy.decode(a.base.params, obs, z)) ** 2))

    before = gap(agent)
    index = rng.integers(0, 64, size=(300, 16))
    agent, losses = pretrain(agent, obs, actions, index)
    assert losses.shape == (300,) and np.mean(losses[-30:]) < np.mean(losses[:30])
    assert gap(agent) < 0.5 * before


def test_baselines_refuse_a_trainable_base_where_theirs_is_frozen():
    for algorithm in ("dsrl", "residual"):
        with pytest.raises(ValueError, match="frozen"):
            create_agent(algorithm, TINY, OBS, ACT)
    with pytest.raises(ValueError, match="algorithm must be"):
        create_agent("sac", TINY, OBS, ACT)
    with pytest.raises(ValueError, match="dsrl_noise_scale must be > 0"):
        DSRLConfig(dsrl_noise_scale=0.0)


def test_methods_set_what_defines_them():
    base = preset("tiny")
    cfgs = {name: apply_method(name, base) for name in METHODS}
    assert cfgs["qc"].expo.num_edit_samples == 0 and cfgs["qc"].expo.num_base_samples == 32
    assert cfgs["qc"].agent.chunk_len == cfgs["qc"].agent.exec_len == 5
    assert cfgs["qc-fql"].algorithm == "fql" and cfgs["qc-fql"].agent.chunk_len == 5
    assert cfgs["fql"].agent.chunk_len == 1
    assert cfgs["rlpd"].pretrain_steps == 0 and cfgs["rlpd"].algorithm == "rlpd"
    assert cfgs["expo-ft"].agent.base_training == "successes" and cfgs["expo-ft"].agent.exec_len == 4
    assert cfgs["expo-ft-intervene"].intervene == "scripted" and cfgs["expo-ft"].intervene == "none"
    assert cfgs["expo-ft-intervene"].agent == cfgs["expo-ft"].agent
    assert cfgs["expo-ft-offline"] == cfgs["expo-ft"]  # the same agent; only the offline phase differs
    assert not cfgs["expo-no-otf-backup"].expo.otf_in_backup
    assert cfgs["dsrl"].agent.base_training == cfgs["residual"].agent.base_training == "frozen"
    for name, cfg in cfgs.items():  # the budget is the preset's, whatever the method
        assert (cfg.env_steps, cfg.eval_every, cfg.agent.utd) == (
            base.env_steps, base.eval_every, base.agent.utd), name  # fmt: skip
        # every method keeps the preset's schedule and its one actor step per update call
        assert (cfg.update_every, cfg.agent.actor_steps) == (base.update_every, base.agent.actor_steps), name
    for p in ("tiny", "p1"):
        ft = apply_method("expo-ft", preset(p))
        assert ft.start_training == preset(p).start_training and ft.agent.actor_steps == 1
    # p1: the published ratio per decision, a decision being an executed chunk
    assert apply_method("expo-ft", preset("p1")).update_period == 4
    assert apply_method("qc", preset("p1")).update_period == 5 and apply_method("expo", preset("p1")).update_period == 1
    with pytest.raises(ValueError, match="unknown method 'sac'"):
        apply_method("sac", base)


def test_the_settings_a_method_fixes_hold_whatever_the_preset_says():
    """FIXED is what `expoft bench` leaves a protocol's settings off for: each method must indeed
    set those fields, also against a config that sets them otherwise."""
    other = dataclasses.replace(preset("tiny"), pretrain_steps=123, offline_updates=7, base_from="runs/x")
    assert fixes("rlpd") == {"pretrain_steps", "offline_updates", "base_from"} and fixes("qc") == frozenset()
    published = [name for name in METHODS if name.startswith("expo") and name != "expo-ft-offline"]
    assert all(fixes(name) == {"offline_updates"} for name in published)
    assert fixes("expo-ft-offline") == frozenset()  # the deviation: it takes the protocol's offline phase
    for name, fixed in FIXED.items():
        cfg = apply_method(name, other)
        assert {field: getattr(cfg, field) for field in fixed} == fixed, name
    for name in set(METHODS) - set(FIXED):  # the rest leave those fields to the preset and protocol
        cfg = apply_method(name, other)
        assert (cfg.pretrain_steps, cfg.offline_updates, cfg.base_from) == (123, 7, "runs/x"), name
    # a flag after --method still changes a fixed setting (a recorded change of the method)
    argv = ["--preset", "tiny", "--method", "expo", "--offline-updates", "3", "--out", "x"]
    assert _with_preset(Finetune, argv).config.offline_updates == 3


@pytest.mark.parametrize("method", ["rlpd", "bc"])
def test_finetune_runs_a_baseline_end_to_end(tmp_path, method, capsys):
    """Through the CLI, with the method's agent: no base (RLPD), no online learning (BC). With
    --eval-base, RLPD (no base) evaluates only its policy."""
    out = tmp_path / method
    rc = main(["finetune", "--preset", "tiny", "--method", method, "--env-steps", "150", "--out", str(out),
               "--no-progress", *(["--eval-base"] if method == "rlpd" else [])])  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["algorithm"] == method and summary["env_steps"] >= 150
    if method == "rlpd":
        assert summary["bc_success"] is None and summary["update_calls"] > 0
        assert main(["eval", str(out), "--episodes", "1", "--policy", "base"]) == 2
        assert "(rlpd) has no base policy" in capsys.readouterr().err
        assert main(["eval", str(out), "--episodes", "1", "--num-edit-samples", "0"]) == 2
        assert "apply to agents that choose among base samples" in capsys.readouterr().err
    else:
        assert summary["bc_success"] is not None and summary["update_calls"] == 0
    evals = metrics_rows(out)
    assert any("eval/success" in row for row in evals)
    assert any("eval_base/success" in row for row in evals) == (method == "bc")  # bc: before RL only


# With test_baseline_acts_in_range_and_its_critic_learns (chunks of 2, flow base) and
# test_expo.py, every agent is run with chunk length 1 and with chunks, on both base types.
@pytest.mark.parametrize(
    ("algorithm", "chunk", "base"),
    [("expo", 1, "ddpm"), ("bc", 1, "ddpm"), ("bc", 3, "flow"), ("fql", 1, "ddpm"),
     ("dsrl", 1, "ddpm"), ("residual", 1, "ddpm"), ("rlpd", 1, "flow")],
)  # fmt: skip
def test_every_agent_acts_and_learns_with_either_base_and_any_chunk_length(algorithm, chunk, base):
    """Issue 5: each method with chunk length 1 and with chunks, on both base policy types (RLPD
    has no base): acting gives [B, chunk * A] in [-1, 1], base actions too where there is a base;
    two update calls (the frozen-base methods keep their base) give finite metrics."""
    cfg = dataclasses.replace(config_for(algorithm), base=base, chunk_len=chunk, exec_len=chunk)
    agent = create_agent(algorithm, cfg, OBS, ACT, seed=0, options=TINY_EXPO if algorithm == "expo" else None)
    obs = np.random.default_rng(1).normal(size=(3, OBS)).astype(np.float32)
    key = jax.random.PRNGKey(0)
    for fn in (act, act_eval):
        actions, _ = fn(agent, obs, key)
        assert actions.shape == (3, chunk * ACT) and actions.dtype == np.float32, fn
        assert np.all(np.isfinite(actions)) and float(np.abs(actions).max()) <= 1.0
    if agent.has_base:
        base_actions = np.asarray(act_base(agent, obs, key))
        assert base_actions.shape == (3, chunk * ACT) and float(np.abs(base_actions).max()) <= 1.0
    if not agent.learns_online:
        return
    frozen = jax.tree.leaves(agent.base_ema) if cfg.base_training == "frozen" else None
    for seed in range(2):
        agent, metrics = update(agent, pool(cfg, seed=seed))
        assert all(np.isfinite(v) for v in metrics.values()), metrics
    if frozen is not None:
        for a, b in zip(frozen, jax.tree.leaves(agent.base_ema), strict=True):
            np.testing.assert_array_equal(a, b)

"""Training loop, run folders, checkpoints and the training CLI commands (tiny preset)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from expoft.agents.expo import EXPOAgent, act
from expoft.cli import main
from expoft.pytree_io import CheckpointError, load_pytree, save_pytree
from expoft.report.video import read_video
from expoft.train.build import load_run_agent
from expoft.train.config import TINY_AGENT, TINY_EXPO, preset
from expoft.train.evaluate import paired_difference, wilson_interval
from expoft.train.online_loop import update_calls_due as _update_calls_due
from expoft.train.rundir import RunDir

from .conftest import assert_same_leaves, metrics_rows, tensorboard_images


def test_wilson_interval_known_values():
    low, high = wilson_interval(50, 50)
    assert high == 1.0 and abs(low - 0.9287) < 1e-3
    low, high = wilson_interval(25, 50)
    assert abs(low - 0.3664) < 1e-3 and abs(high - 0.6336) < 1e-3
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_checkpoint_round_trip_restores_every_array(tmp_path):
    agent = EXPOAgent.create(TINY_AGENT, TINY_EXPO, 6, 2, seed=0)
    path = save_pytree(agent, tmp_path / "a.npz", env_step=np.int64(7))
    other = EXPOAgent.create(TINY_AGENT, TINY_EXPO, 6, 2, seed=1)
    restored, extra = load_pytree(other, path)
    assert int(extra["env_step"]) == 7
    assert_same_leaves(agent, restored)
    obs = np.ones((1, 6), np.float32)
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(act(agent, obs, key)[0], act(restored, obs, key)[0])
    wrong = EXPOAgent.create(TINY_AGENT, TINY_EXPO, 7, 2, seed=0)
    with pytest.raises(CheckpointError, match="the agent expects"):
        load_pytree(wrong, path)
    with pytest.raises(FileNotFoundError):
        load_pytree(agent, tmp_path / "missing.npz")
    (tmp_path / "notes.npz").write_text("not a checkpoint")  # e.g. a wrong path passed to --checkpoint
    with pytest.raises(CheckpointError, match=r"notes.npz is not an .npz file \(a zip archive of arrays\)"):
        load_pytree(agent, tmp_path / "notes.npz")


def test_run_dir_refuses_to_clobber(tmp_path):
    RunDir(tmp_path / "r", preset("tiny")).close()
    with pytest.raises(FileExistsError, match="already holds a run"):
        RunDir(tmp_path / "r", preset("tiny"))


def test_reopen_cuts_the_metrics_back_and_keeps_the_cut_rows(tmp_path):
    run = RunDir(tmp_path / "r", preset("tiny"))
    run.log({"env_step": 1})
    kept = run.metrics_bytes()
    run.close()
    metrics = tmp_path / "r" / "metrics.jsonl"
    for cut in ('{"env_step": 3, "cut', '{"env_step": 3'):  # killed twice after the same checkpoint
        again = RunDir.reopen(tmp_path / "r", kept, preset("tiny"))
        again.log({"env_step": 2})
        again.close()
        with open(metrics, "a") as f:
            f.write(cut)  # a row cut short by the kill
    RunDir.reopen(tmp_path / "r", kept, preset("tiny")).close()
    assert metrics.read_text() == '{"env_step": 1}\n'
    replayed = (tmp_path / "r" / "metrics.replayed.jsonl").read_text().splitlines()
    # each resume's cut rows on lines of their own, the first resume's before the second's
    assert replayed == ['{"env_step": 2}', '{"env_step": 3, "cut', '{"env_step": 2}', '{"env_step": 3']


def test_paired_difference_known_answer_and_bad_input():
    # differences 1, 0, 0, -1, 1: mean 0.2, sd 0.8367, half-width 1.96 * 0.8367 / sqrt(5) = 0.7334
    mean, low, high = paired_difference([1, 1, 0, 0, 1], [0, 1, 0, 1, 0])
    assert mean == pytest.approx(0.2) and (low, high) == pytest.approx((0.2 - 0.7334, 0.2 + 0.7334), abs=1e-4)
    assert paired_difference([1, 1], [1, 1]) == (0.0, 0.0, 0.0)  # the same episodes: no doubt
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1, 0], [1])


def test_finetune_and_eval_commands_write_a_complete_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "run"
    assert main(["finetune", "--preset", "tiny", "--out", str(out), "--no-progress", "--seed", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name in (
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "learning_curve.png",
        "checkpoints/agent_300.npz",
        "checkpoints/state_300.json",
    ):
        assert (out / name).exists(), name
    final = json.loads((out / "checkpoints" / "state_300.json").read_text())
    assert final["buffer"]["total_added"] == 300  # every online step is in the saved segments
    assert summary["env_steps"] == 300 and summary["update_calls"] > 0
    assert 0.0 <= summary["final_success"] <= 1.0
    # the diagnostics: the base alone at the end on the same reset seeds, the pair's difference,
    # the ratio that was run (tiny: a call of UTD 2 at every 5th env step from step 100 on: 41), calibration
    summary = json.loads((out / "summary.json").read_text())
    final_eval = summary["evaluations"][-1]
    assert summary["final_base_success"] == final_eval["base_success"]
    assert summary["final_policy_minus_base"] == pytest.approx(final_eval["success"] - final_eval["base_success"])
    assert summary["critic_steps_per_env_step"] == pytest.approx(summary["update_calls"] * 2 / 300, abs=1e-3)
    assert summary["update_calls"] == 41 and summary["actor_steps_per_env_step"] == pytest.approx(41 / 300, abs=1e-3)
    assert summary["target_cache_refresh"] == 20  # the default, in effect (state observations, its own base)
    assert {"first_q", "first_return", "not_first_frac"} <= set(final_eval)
    assert all(0.0 <= final_eval[k] <= 1.0 for k in ("first_return", "not_first_frac"))
    rows = metrics_rows(out)
    train_rows = [r for r in rows if "critic/loss" in r]
    assert train_rows and all(np.isfinite(r["critic/loss"]) for r in train_rows)
    assert {"train/rolling_success", "edit/alpha", "otf/edited_frac", "otf/not_first_frac", "base/loss"} <= set(
        train_rows[-1]
    )
    assert any("eval/success" in r for r in rows) and any("eval_base/success" in r for r in rows)
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 1 and config["agent"]["utd"] == TINY_AGENT.utd

    cfg, agent, step = load_run_agent(out)
    assert step == 300 and cfg.seed == 1
    assert main(["eval", str(out), "--episodes", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["eval/episodes"] == 2 and result["env_step"] == 300
    # by default the run's own evaluation seed: the final checkpoint's logged evaluation, reproduced
    logged = [r for r in rows if r.get("env_step") == 300 and "eval/success" in r][-1]
    assert main(["eval", str(out), "--episodes", str(cfg.eval_episodes), "--policy", "base"]) == 0
    base = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert base["seed"] == 11_000 and set(base) >= {"eval_base/success", "eval_base/episode_length"}
    assert main(["eval", str(out), "--episodes", str(cfg.eval_episodes)]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the sparse reward is 1 at the success step, where the episode ends: the return is the success
    assert again["eval/return"] == again["eval/success"] and base["eval_base/return"] == base["eval_base/success"]
    assert all("return" in e for e in json.loads((out / "summary.json").read_text())["evaluations"])
    figures = {k: v for k, v in logged.items() if k.startswith("eval/")}
    assert figures and {k: again[k] for k in figures} == figures
    # the same critic choosing among the base's samples alone (no edits): never an edited candidate
    assert main(["eval", str(out), "--episodes", "2", "--num-edit-samples", "0"]) == 0
    no_edit = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    n = config["expo"]["num_base_samples"]
    assert no_edit["choice"] == {"num_base_samples": n, "num_edit_samples": 0, "act_score": "subset-min"}
    assert no_edit["eval/edited_frac"] == 0.0
    assert main(["eval", str(out), "--episodes", "1", "--num-edit-samples", str(n + 1)]) == 2
    assert f"--num-edit-samples: num_edit_samples must lie in [0, num_base_samples={n}]" in capsys.readouterr().err
    assert main(["eval", str(out), "--episodes", "1", "--policy", "base", "--num-base-samples", "4"]) == 2
    assert "use them with policy 'otf'" in capsys.readouterr().err
    assert main(["eval", str(out), "--episodes", "1", "--act-score", "mean"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["choice"]["act_score"] == "mean"

    # A second run into the same folder is refused, not merged.
    assert main(["finetune", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_pretrain_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "pre"
    assert main(["pretrain", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["pretrain_steps"] == 50 and np.isfinite(summary["final_loss"])
    assert (out / "checkpoints" / "agent_0.npz").exists()


def test_preset_errors():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ValueError, match="env_steps must be >= 1"):
        preset("tiny", env_steps=0)


def test_demo_command_writes_summary_and_curve(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    assert main(["demo", "--preset", "tiny", "--out", str(tmp_path / "demo"), "--no-progress", "--seed", "2"]) == 0
    run = tmp_path / "demo" / "seed2"
    summary = json.loads((run / "summary.json").read_text())
    for key in ("bc_success", "final_success", "env_steps", "wall_seconds", "seed"):
        assert key in summary, key
    assert summary["seed"] == 2 and summary["env_steps"] == 300
    assert (run / "learning_curve.png").stat().st_size > 10_000
    assert "final_success" in capsys.readouterr().out
    # --resume continues a killed demo; a finished one is refused, and nothing is rewritten
    args = ["demo", "--preset", "tiny", "--out", str(tmp_path / "demo"), "--no-progress", "--seed", "2"]
    assert main([*args, "--resume"]) == 2
    assert "has finished" in capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text()) == summary


def test_update_schedules():
    every = preset("tiny", start_training=10, update_every=5)
    due = [_update_calls_due(every, step - 1, step, episode_ended=step % 7 == 0) for step in range(1, 31)]
    assert [s for s, n in zip(range(1, 31), due, strict=True) if n] == [10, 15, 20, 25, 30]
    assert set(due) == {0, 1}
    # chunks of 4 steps: every multiple of 5 passed counts, none before start_training
    chunked = [_update_calls_due(every, prev, prev + 4, episode_ended=False) for prev in range(0, 28, 4)]
    assert chunked == [0, 0, 1, 1, 1, 0, 1]  # 10 in (8,12], 15 in (12,16], 20 in (16,20], 25 in (24,28]
    assert _update_calls_due(every, 10, 30, episode_ended=False) == 4
    per_episode = preset("tiny", start_training=10, updates_per_episode=3)
    due = [_update_calls_due(per_episode, step - 1, step, episode_ended=step % 7 == 0) for step in range(1, 31)]
    assert [(s, n) for s, n in zip(range(1, 31), due, strict=True) if n] == [(14, 3), (21, 3), (28, 3)]
    with pytest.raises(ValueError, match="updates_per_episode must be >= 0"):
        preset("tiny", updates_per_episode=-1)


def test_episode_schedule_runs_calls_at_episode_ends(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "run"
    args = ["finetune", "--preset", "tiny", "--out", str(out), "--no-progress", "--updates-per-episode", "2"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # tiny: 300 env steps, training from step 100; every episode that ends after that adds 2 calls
    assert summary["update_calls"] % 2 == 0 and summary["update_calls"] >= 2
    args = ["finetune", "--preset", "tiny", "--out", str(tmp_path / "late"), "--no-progress", "--start-episodes", "50"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train_episodes"] < 50 and summary["update_calls"] == 0


def test_finetune_from_a_pretrained_base(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    pre = tmp_path / "pre"
    assert main(["pretrain", "--preset", "tiny", "--out", str(pre), "--no-progress"]) == 0
    out = tmp_path / "ft"
    args = ["finetune", "--preset", "tiny", "--out", str(out), "--no-progress", "--base-from", str(pre)]
    assert main([*args, "--checkpoint-every", "1000"]) == 0  # checkpoints: before RL (0) and the end
    _, pretrained, _ = load_run_agent(pre)
    rows = metrics_rows(out)
    assert rows[0]["pretrain/base_from"] == str(pre)
    # Before RL the fine-tuning run acts with exactly the pretrained base.
    from expoft.train.build import with_base_from

    fresh = EXPOAgent.create(TINY_AGENT, TINY_EXPO, 28, 5, seed=0)
    started = with_base_from(fresh, pre)
    assert_same_leaves(pretrained.base_ema, started.base_ema)
    # A checkpoint file names the base of that moment: agent_0 is the pretrained one; the run
    # folder means its newest checkpoint, whose base went on imitating during RL.
    at_start = with_base_from(fresh, out / "checkpoints" / "agent_0.npz")
    assert_same_leaves(pretrained.base_ema, at_start.base_ema)
    at_end = with_base_from(fresh, out)
    assert any(
        not np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(pretrained.base_ema), jax.tree.leaves(at_end.base_ema), strict=True)
    )
    with pytest.raises(FileNotFoundError, match="agent_7.npz does not exist; name a run folder"):
        with_base_from(fresh, out / "checkpoints" / "agent_7.npz")
    capsys.readouterr()
    wider = preset("tiny").agent.__class__(**{**vars(TINY_AGENT), "base_width": 64})
    with pytest.raises(ValueError, match="base_width: 32 there, 64 here"):
        with_base_from(EXPOAgent.create(wider, TINY_EXPO, 28, 5, seed=0), pre)


def test_write_gif_round_trip(tmp_path):
    from PIL import Image

    from expoft.report.video import write_gif, write_video

    frames = [np.full((8, 10, 3), 40 * i, np.uint8) for i in range(5)]
    path = write_gif(frames, tmp_path / "v.gif", fps=10)
    with Image.open(path) as im:
        assert im.size == (10, 8) and im.n_frames == 5
    with pytest.raises(ValueError, match="animated GIFs"):
        write_gif(frames, tmp_path / "v.mp4")
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        write_video(frames, tmp_path / "v.avi")
    with pytest.raises(ValueError, match="no frames"):
        write_gif([], tmp_path / "w.gif")


def _can_render() -> bool:
    from expoft.envs.make import make_env

    env = make_env("cube-single", 1, render=True)
    env.reset(seed=0)
    try:
        env.render()
    except Exception:
        return False
    finally:
        env.close()
    return True


def test_eval_writes_a_video(tmp_path, monkeypatch, capsys):
    if not _can_render():
        pytest.skip("no offscreen OpenGL (EGL) on this machine")
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    pre = tmp_path / "pre"
    # 20-step episodes: each filmed step is a 160-pixel render, most of this test's time
    assert main(["pretrain", "--preset", "tiny", "--episode-steps", "20", "--out", str(pre), "--no-progress"]) == 0
    capsys.readouterr()
    video = tmp_path / "ep.gif"
    assert main(["eval", str(pre), "--episodes", "1", "--video", str(video)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from PIL import Image

    with Image.open(video) as im:
        # one frame per step plus the first observation
        assert im.n_frames == result["eval/episode_length"] + 1 and im.size == (160, 160)
    video = tmp_path / "ep.mp4"
    assert main(["eval", str(pre), "--episodes", "1", "--video", str(video)]) == 0
    frames = read_video(video)
    assert frames.shape == (result["eval/episode_length"] + 1, 160, 160, 3)
    assert main(["eval", str(pre), "--video", str(tmp_path / "ep.avi")]) == 2
    assert ".gif or .mp4" in capsys.readouterr().err


@pytest.mark.slow  # two runs that film (~55 s); test_eval_writes_a_video keeps video writing in the default suite
def test_training_videos_of_every_kth_episode(tmp_path, monkeypatch):
    if not _can_render():
        pytest.skip("no offscreen OpenGL (EGL) on this machine")
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "run"
    flags = ["--preset", "tiny", "--env-steps", "200", "--episode-steps", "40", "--video-every", "2"]
    assert main(["finetune", *flags, "--out", str(out), "--no-progress"]) == 0
    from PIL import Image

    videos = sorted(p.name for p in (out / "videos").glob("*.gif"))
    assert videos == ["episode_0.gif", "episode_2.gif", "episode_4.gif"]  # 5 episodes of 40 steps
    with Image.open(out / "videos" / "episode_2.gif") as im:
        assert im.n_frames == 41  # the reset frame and one per step

    # as MP4, and into TensorBoard as animated images at the env step the episode ended
    out = tmp_path / "mp4"
    flags = ["--preset", "tiny", "--env-steps", "60", "--episode-steps", "30", "--video-every", "1",
             "--pretrain-steps", "10", "--video-format", "mp4", "--log", "tensorboard"]  # fmt: skip
    assert main(["finetune", *flags, "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["episode_0.mp4", "episode_1.mp4"]
    assert read_video(out / "videos" / "episode_1.mp4").shape == (31, 160, 160, 3)
    images = tensorboard_images(out / "tensorboard")
    assert sorted(images) == [("video/episode_0", 30), ("video/episode_1", 60)]
    assert images[("video/episode_1", 60)][:6] == b"GIF89a"


def test_demo_seed_fixes_the_dataset_across_run_seeds(monkeypatch):
    """The demo keeps one dataset (demos of seed 0) whatever the run's seed; other presets draw
    the demos with the run's seed."""
    import expoft.train.build as loop

    asked = []
    monkeypatch.setattr(loop, "get_or_generate", lambda demos, progress: asked.append(demos) or (None, None, None))
    monkeypatch.setattr(loop, "task_labels", lambda ds, cfg, source: ds)
    for name, seed in (("demo", 2), ("p1", 2), ("tiny", 3)):
        loop.offline_data(preset(name, seed=seed), progress=False)
    assert [d.seed for d in asked] == [0, 2, 3]
    assert loop.demos_config(preset("tiny", seed=5, demo_seed=1)).seed == 1
    with pytest.raises(ValueError, match="demo_seed must be >= 0"):
        preset("tiny", demo_seed=-1)
    # The demos' noise settings reach the generator, and bad ones fail before anything runs.
    calm = loop.demos_config(preset("tiny", demo_noise=0.3, demo_gripper_noise=1.0))
    assert (calm.noise, calm.gripper_noise) == (0.3, 1.0)
    assert loop.demos_config(preset("tiny")).gripper_noise == 10.0
    demo_demos = loop.demos_config(preset("demo"))
    assert (demo_demos.disturb, demo_demos.episodes, demo_demos.seed, demo_demos.noise) == (1.0, 30, 0, 0.125)
    assert loop.demos_config(preset("p1")).disturb == 0.0
    with pytest.raises(ValueError, match="demo_gripper_noise must be >= 0"):
        preset("tiny", demo_gripper_noise=-1.0)


def test_eval_base_evaluates_the_base_alone_at_every_evaluation(tmp_path, monkeypatch, capsys):
    """--eval-base: every evaluation row also has the base alone (eval_base/*), the summary's
    evaluations carry base_success, and the last one is what `expoft eval --policy base` gives on
    the final checkpoint. (RLPD, with no base, evaluates only its policy with it: test_baselines.)"""
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "expo"
    assert main(["finetune", "--preset", "tiny", "--eval-base", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    rows = metrics_rows(out)
    evals = [r for r in rows if "eval/success" in r]
    assert [r["env_step"] for r in evals] == [0, 200, 300]
    assert all("eval_base/success" in r and r["eval_base/episodes"] == r["eval/episodes"] for r in evals)
    assert [e["base_success"] for e in summary["evaluations"]] == [r["eval_base/success"] for r in evals]
    cfg = load_run_agent(out)[0]
    assert main(["eval", str(out), "--policy", "base", "--episodes", str(cfg.eval_episodes)]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["eval_base/success"] == evals[-1]["eval_base/success"]


def test_with_choice_changes_only_the_otf_rule_and_refuses_the_rest():
    from expoft.train.evaluate import with_choice

    agent = object()
    assert with_choice(agent) is agent and with_choice(agent, num_base_samples=None) is agent  # nothing to change
    with pytest.raises(ValueError, match="not \\['edit_scale'\\]"):
        with_choice(agent, edit_scale=0.1)
    with pytest.raises(ValueError, match="--num-edit-samples apply to agents that choose among base samples"):
        with_choice(agent, num_edit_samples=0)

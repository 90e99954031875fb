"""A whole pixel run end to end (tiny-pixels preset): demos -> rendered frames -> pixel base ->
EXPO from images -> evaluation; and a run resumed from a mid-run checkpoint (frames of the replay
buffer included) that ends exactly like the uninterrupted one."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from expoft.cli import main
from expoft.envs.make import RENDER_SIZE
from expoft.train.config import preset
from expoft.train.finetune import finetune, resume

from .conftest import metrics_rows

IGNORED = ("time/", "wall_seconds", "update_seconds", "critic_steps_per_s", "phase")


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(IGNORED)} for r in rows if r.get("phase") != "resume"]


def test_tiny_pixels_run_and_resume_from_a_mid_run_checkpoint(tmp_path, rendering, monkeypatch, capsys):
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    # videos of training episodes: from the scene camera, next to the observations' own cameras
    # Short: every step renders (most of this test's time), evaluations too, and nothing tested
    # here needs more than 40-step episodes, one evaluation episode, and updates from step 40 (so
    # that the mid-run checkpoint at 60 holds a trained agent and a replay buffer with frames).
    cfg = dataclasses.replace(
        preset("tiny-pixels"), env_steps=120, start_training=40, checkpoint_every=60, eval_every=120,
        eval_episodes=1, video_every=1000, episode_steps=40,
    )  # fmt: skip
    full = tmp_path / "full"
    summary = finetune(cfg, full, progress=False)
    assert summary["env_steps"] >= 120 and summary["update_calls"] > 0
    assert summary["target_cache_refresh"] is None  # pixels: candidates drawn afresh (nothing to cache)
    assert 0.0 <= summary["final_success"] <= 1.0
    segments = sorted((full / "checkpoints" / "buffer").glob("online_*.npz"))
    with np.load(segments[0]) as seg:  # frames stored once per step plus one per episode
        assert seg["frames"].dtype == np.uint8 and seg["frames"].shape[1:] == (32, 32, 3)
        assert len(seg["frames"]) <= len(seg["actions"]) + int(seg["episode_ends"].sum()) + 1

    # the same run, stopped after its mid-run checkpoint (later ones and the summary removed)
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    states = sorted((cut / "checkpoints").glob("state_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    mid = [p for p in states if 40 < int(p.stem.split("_")[1]) < 120]
    assert mid, f"no mid-run checkpoint among {[p.name for p in states]}"
    keep = int(mid[0].stem.split("_")[1])
    for p in states:
        if int(p.stem.split("_")[1]) > keep:
            p.unlink()
            (cut / "checkpoints" / f"agent_{p.stem.split('_')[1]}.npz").unlink()
    (cut / "summary.json").unlink()
    resumed = resume(cut, progress=False)
    assert comparable(metrics_rows(cut)) == comparable(metrics_rows(full))

    def untimed(summary: dict) -> dict:
        out = {k: v for k, v in summary.items() if k not in IGNORED and not k.startswith("cpu_seconds")}
        out["evaluations"] = [{k: v for k, v in e.items() if k != "cpu_seconds"} for e in out["evaluations"]]
        return out

    assert untimed(resumed) == untimed(summary)

    with Image.open(full / "videos" / "episode_0.gif") as im:  # the first episode only (1 of 1000)
        assert im.size == (RENDER_SIZE, RENDER_SIZE) and im.n_frames > 1
    assert sorted(p.name for p in (full / "videos").iterdir()) == ["episode_0.gif"]

    # the CLI evaluates the pixel run's checkpoint, with a video of its episode
    video = tmp_path / "eval.gif"
    capsys.readouterr()
    assert main(["eval", str(full), "--episodes", "1", "--video", str(video)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with Image.open(video) as im:
        assert im.size == (RENDER_SIZE, RENDER_SIZE) and im.n_frames == result["eval/episode_length"] + 1


@pytest.mark.slow  # a whole pixel run with its renders (~40 s alone, 140 s on a loaded machine)
def test_a_pixel_run_whose_success_a_learned_detector_decides(tmp_path, rendering, monkeypatch):
    """tiny-pixels with --success-detector: a detector trained on the run's own demo frames ends
    the training episodes (its disagreements with the simulator are logged); the run completes
    and its evaluations still use the simulator's success."""
    from expoft.data.frames import frames_for
    from expoft.reward.classifier import DetectorConfig, train_detector
    from expoft.train.build import offline_data

    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    base = dataclasses.replace(preset("tiny-pixels"), demo_episodes=4, env_steps=100, eval_every=100)
    ds = offline_data(base, progress=False)
    small = DetectorConfig(steps=5, batch_size=8, channels=(8,), feature_dim=8, holdout=0.25)
    detector, _ = train_detector(ds, frames_for(ds, base.pixels, progress=False), base.pixels, small, progress=False)
    detector.save(tmp_path / "det")
    cfg = dataclasses.replace(base, success_detector=tmp_path / "det")
    summary = finetune(cfg, tmp_path / "run", progress=False)
    assert summary["env_steps"] >= 100
    rows = [r for r in metrics_rows(tmp_path / "run") if "train/detector_false_success" in r]
    assert rows and all(r["train/detector_false_success"] <= r["train/episodes"] for r in rows)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["success_detector"] == str(tmp_path / "det")

"""Metric sinks beside metrics.jsonl: TensorBoard event files and an offline W&B run; MP4 videos."""

from __future__ import annotations

import numpy as np
import pytest

from expoft.report.sinks import read_tensorboard_scalars, row_step, scalars
from expoft.report.video import read_video, write_video
from expoft.train.config import preset
from expoft.train.finetune import finetune
from expoft.train.rundir import RunDir

from .conftest import metrics_rows


def test_rows_become_scalars_at_their_step():
    row = {"env_step": 300, "phase": "x", "eval/success": 0.5, "eval/successes": [1, 0], "flag": True,
           "none": None, "nan": float("nan"), "name": "a"}  # fmt: skip
    assert scalars(row) == {"eval/success": 0.5, "flag": 1.0}
    assert row_step(row) == 300
    assert row_step({"phase": "offline", "env_step": 0, "offline/update_calls": 40}) == 40
    assert row_step({"phase": "pretrain", "pretrain/steps": 2000}) == 2000


def test_run_logs_to_tensorboard_and_wandb_offline(tmp_path, monkeypatch):
    """A tiny run with both backends: every evaluation row's success is in the event files at its
    env step, as in metrics.jsonl, and the W&B run is written offline (no account) in the folder."""
    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    finetune(preset("tiny", log=("tensorboard", "wandb")), out, progress=False)
    evals = [(r["env_step"], r["eval/success"]) for r in metrics_rows(out) if "eval/success" in r]
    points = read_tensorboard_scalars(out / "tensorboard")
    assert points["eval/success"] == evals and [s for s, _ in evals] == [0, 200, 300]
    assert points["pretrain/final_loss"][0][0] == preset("tiny").pretrain_steps
    assert "critic/loss" in points  # training rows too
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 1000


def test_resumed_run_replaces_what_tensorboard_had_after_the_checkpoint(tmp_path):
    """A resumed run logs the rows after its checkpoint again; TensorBoard keeps the new ones only."""
    cfg = preset("tiny", log=("tensorboard",))
    run = RunDir(tmp_path / "r", cfg)
    for step in (0, 100):
        run.log({"env_step": step, "critic/loss": 1.0})
    kept = run.metrics_bytes()
    run.log({"env_step": 200, "critic/loss": 1.0})  # after the checkpoint at env step 200; then killed
    run.close()
    again = RunDir.reopen(tmp_path / "r", kept, cfg, resume_step=200)
    again.log({"env_step": 200, "critic/loss": 2.0})
    again.log({"env_step": 300, "critic/loss": 3.0})
    again.close()
    assert read_tensorboard_scalars(tmp_path / "r" / "tensorboard")["critic/loss"] == [
        (0, 1.0), (100, 1.0), (200, 2.0), (300, 3.0)
    ]  # fmt: skip


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("log", ("mlflow",), "unknown --log backend"),
        ("log", ("tensorboard", "tensorboard"), "twice"),
        ("video_format", "avi", "video_format must be one of"),
        ("wandb_mode", "cloud", "wandb_mode must be one of"),
    ],
)
def test_bad_logging_settings_are_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        preset("tiny", **{field: value})


def test_mp4_round_trip_within_the_codec(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, 48, dtype=np.float32)
    frames = [np.clip(smooth[None, :, None] + rng.normal(0, 2, (32, 48, 3)) + 5 * i, 0, 255).astype(np.uint8)
              for i in range(12)]  # fmt: skip
    back = read_video(write_video(frames, tmp_path / "v.mp4", fps=10))
    assert back.shape == (12, 32, 48, 3)
    assert np.abs(back.astype(int) - np.stack(frames)).mean() < 3  # lossy, but close
    odd = [f[:31, :47] for f in frames]  # yuv420p needs even sizes: padded by the edge pixels
    assert read_video(write_video(odd, tmp_path / "odd.mp4")).shape == (12, 32, 48, 3)
    with pytest.raises(ValueError, match="one size"):
        write_video([frames[0], odd[0]], tmp_path / "mixed.mp4")
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")

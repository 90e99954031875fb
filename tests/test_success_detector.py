"""The learned success detector: labels from episode ends, a classifier that learns a visible
success cue and is judged on held-out episodes, its files, and a run env whose success it decides."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest

from expoft.cli import main
from expoft.data.transitions import DatasetError, make_dataset
from expoft.obs import PIXELS, PROPRIO, PixelSpec
from expoft.reward.classifier import DetectorConfig, SuccessClassifier, evaluate_detector, frame_labels, train_detector
from expoft.reward.learned_success import LearnedSuccess
from expoft.train.config import preset

SPEC = PixelSpec(image_size=16)
SMALL = DetectorConfig(steps=150, batch_size=32, channels=(8, 8), feature_dim=16, learning_rate=1e-3)


def episodes_with_a_cue(num: int, length: int = 6, seed: int = 0):
    """``num`` episodes of ``length`` steps, every other one successful; frames are noise, and the
    final state of a successful episode shows a bright square (the cube on its target)."""
    rng = np.random.default_rng(seed)
    success = np.arange(num) % 2 == 0
    n = num * length
    ends = np.zeros(n, bool)
    ends[length - 1 :: length] = True
    states = rng.normal(size=(num, length + 1, 3)).astype(np.float32)
    obs, next_obs = states[:, :-1].reshape(n, 3), states[:, 1:].reshape(n, 3)
    ds = make_dataset({
        "observations": obs, "next_observations": next_obs, "actions": np.zeros((n, 2), np.float32),
        "episode_ends": ends, "rewards": np.zeros(n, np.float32), "terminals": np.zeros(n, bool),
        "episode_success": success,
    })  # fmt: skip
    frames = rng.integers(0, 120, size=(n + num, *SPEC.image_shape), dtype=np.uint8)
    for e in np.flatnonzero(success):
        last = (e + 1) * (length + 1) - 1
        frames[last, 4:12, 4:12] = 250
    return ds, frames


def test_frame_labels_mark_the_last_states_of_successful_episodes():
    ds, _ = episodes_with_a_cue(2, length=4)
    labels, episode = frame_labels(ds, DetectorConfig(positive_frames=2, ignore_frames=1))
    np.testing.assert_array_equal(labels, [0, 0, -1, 1, 1, 0, 0, 0, 0, 0])  # 5 states per episode
    np.testing.assert_array_equal(episode, [0] * 5 + [1] * 5)


def test_detector_learns_a_visible_cue_and_is_judged_on_held_out_episodes(tmp_path):
    ds, frames = episodes_with_a_cue(40)
    detector, report = train_detector(ds, frames, SPEC, SMALL, progress=False)
    assert report["held_out_episodes"] == 8 and report["train_episodes"] == 32
    assert report["precision"] >= 0.9 and report["recall"] >= 0.9, report
    assert report["episodes"]["on_time"] >= 3 and report["episodes"]["false_success"] == 0
    # Saved and loaded: the same probabilities; a folder without one is a clear error.
    detector.save(tmp_path / "det")
    again = SuccessClassifier.load(tmp_path / "det")
    np.testing.assert_allclose(again.probability(frames[:20]), detector.probability(frames[:20]), atol=1e-6)
    assert json.loads((tmp_path / "det" / "detector.json").read_text())["report"]["recall"] == report["recall"]
    with pytest.raises(FileNotFoundError, match="expoft reward train"):
        SuccessClassifier.load(tmp_path)
    with pytest.raises(ValueError, match="trained on frames"):
        detector.probability(np.zeros((1, 8, 8, 3), np.uint8))


def test_episode_outcomes_of_a_detector():
    """A detector that fires on every bright frame: early on a successful episode with an early
    bright frame, on time on one without, a false success on a failed one with a bright frame."""

    class Bright(SuccessClassifier):
        def __init__(self):
            self.cfg, self.spec = DetectorConfig(), SPEC

        def probability(self, pixels, batch=512):
            return (np.asarray(pixels).reshape(len(pixels), -1).max(1) > 200).astype(np.float32)

    ds, frames = episodes_with_a_cue(4, length=3)  # 4 states per episode; 0 and 2 succeed
    frames[1, 0, 0] = 255  # episode 0 looks successful at its second state
    frames[4 + 2, 0, 0] = 255  # failed episode 1 too
    labels, episode = frame_labels(ds, DetectorConfig())
    report = evaluate_detector(Bright(), frames, labels, episode, ds.episode_success, first=0)
    assert report["episodes"] == {"on_time": 1, "early": 1, "missed": 0, "false_success": 1, "quiet_failure": 1}
    assert report["recall"] == 1.0 and report["precision"] == 0.5


def test_training_needs_both_kinds_of_state():
    ds, frames = episodes_with_a_cue(4)
    with pytest.raises(DatasetError, match="positive"):
        train_detector(ds.replace(episode_success=np.zeros(4, bool)), frames, SPEC, SMALL, progress=False)
    with pytest.raises(DatasetError, match="frames"):
        train_detector(ds, frames[:-1], SPEC, SMALL, progress=False)
    with pytest.raises(ValueError, match="holdout"):
        DetectorConfig(holdout=1.0)


class CountingEnv(gymnasium.Env):
    """Pixel observations; the simulator 'reaches' the task at step 2; never ends on its own."""

    observation_space = gymnasium.spaces.Dict({})
    action_space = gymnasium.spaces.Box(-1, 1, (2,))

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        pixels = np.zeros(SPEC.image_shape, np.uint8)
        pixels[0, 0, 0] = 255 if self.t >= 4 else 0  # the camera sees success from step 4
        return {PIXELS: pixels, PROPRIO: np.zeros(SPEC.proprio_dim, np.float32)}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, self.t >= 10, {"simulator_success": self.t == 2}


def test_learned_success_ends_the_episode_where_the_detector_fires():
    class Bright:
        def __call__(self, pixels):
            return bool(pixels.max() > 200)

    env = LearnedSuccess(CountingEnv(), Bright())
    env.reset()
    steps = [env.step(np.zeros(2)) for _ in range(4)]
    assert [s[2] for s in steps] == [False, False, False, True] and steps[-1][1] == 1.0
    assert steps[-1][4]["success"] and steps[-1][4]["simulator_success"]  # reached at step 2: remembered
    assert not steps[0][4]["simulator_success"]
    env.reset()
    assert not env.step(np.zeros(2))[4]["simulator_success"]  # a new episode forgets it


def test_a_run_with_a_detector_needs_pixels_and_its_frames(tmp_path):
    with pytest.raises(ValueError, match="--pixels"):
        preset("tiny", success_detector=tmp_path)
    ds, frames = episodes_with_a_cue(4)
    detector, _ = train_detector(ds, frames, SPEC, DetectorConfig(steps=2, batch_size=4, channels=(8,),
                                                                  feature_dim=8), progress=False)  # fmt: skip
    detector.save(tmp_path / "det")
    from expoft.reward.learned_success import make_training_env

    with pytest.raises(ValueError, match="--image-size"):
        make_training_env(preset("tiny-pixels", success_detector=tmp_path / "det"))  # 32 px, detector 16


def test_reward_command_refuses_an_existing_detector(tmp_path, capsys):
    (tmp_path / "det").mkdir()
    (tmp_path / "det" / "detector.json").write_text("{}")
    assert main(["reward", "train", str(tmp_path / "none.npz"), "--out", str(tmp_path / "det")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["reward", "eval", str(tmp_path / "det"), str(tmp_path / "none.npz")]) == 2
    assert "not a success detector" in capsys.readouterr().err

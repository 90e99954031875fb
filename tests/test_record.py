"""`expoft record` and the simulated typist: demonstrations through the key path a person uses,
kept episode by episode, re-records discarded; key events typed from OGBench's oracle."""

from __future__ import annotations

import numpy as np
import pytest

from expoft.cli import main
from expoft.data.dataset import load_dataset
from expoft.data.transitions import DatasetError
from expoft.envs.chunks import ActionChunks
from expoft.envs.make import make_env
from expoft.envs.ogbench_domains import get_domain, task_goal
from expoft.envs.task_director import TaskDirector
from expoft.robot.record import record, reset_seed
from expoft.robot.teleop import KEYBOARD, DeviceEvent, HumanIntervener, ScriptedEvents
from expoft.robot.typist import AlwaysDrive, SimulatedTypist
from expoft.train.build import offline_data
from expoft.train.config import preset

A = 5
META = {"kind": "recorded", "env": "cube-single", "task": 1, "reward": "sparse"}


def key(code: str) -> list[DeviceEvent]:
    return [DeviceEvent("key", code)]


def test_record_keeps_labelled_episodes_and_repeats_a_rerecorded_reset(tmp_path):
    """Scripted keys: episode 0 is re-recorded (discarded, its reset comes again), then driven and
    labelled success; episode 1 fails by the time limit without the person having driven, is
    discarded, then is driven and labelled failure. Steps before the person's first key are not
    recorded; the file holds the two kept episodes after each one."""
    script = [[], [], *([key("t")] + [key("w")] * 3 + [key("x")]),  # attempt 1: re-record
              key("t"), key("w"), key("a"), key(" "), key("y"),  # attempt 2: 5 driven steps, success
              *[[]] * 12,  # attempt 3: nobody drives for the whole (12-step) episode
              key("t"), key("s"), key("n")]  # fmt: skip
    person = HumanIntervener(ScriptedEvents(script), KEYBOARD, A)
    env = make_env("cube-single", 1, episode_steps=12)
    out = tmp_path / "demos.npz"
    done = record(env, person, 2, out, meta=META, seed=3, progress=False)
    assert (done.kept, done.successes, done.rerecorded, done.never_started) == (2, 1, 1, 1)
    ds = load_dataset(out)
    assert ds.meta["kind"] == "recorded" and ds.num_episodes == 2
    np.testing.assert_array_equal(ds.episode_success, [True, False])
    starts, stops = ds.episode_bounds()
    assert list(stops - starts) == [5, 3]
    np.testing.assert_array_equal(ds.actions[0], [0, 0, 0, 0, -1])  # t: the person takes the arm, holds it
    np.testing.assert_array_equal(ds.actions[1], [1, 0, 0, 0, -1])  # w: +x, gripper open
    np.testing.assert_array_equal(ds.actions[3], [0, 0, 0, 0, 1])  # space closed it
    assert ds.rewards[4] == 1.0 and ds.terminals[4] and ds.rewards[:4].sum() == 0 and not ds.terminals[5:].any()
    # Episode 0 started from the reset its re-recorded attempt had (seed 3, episode 0).
    fresh = make_env("cube-single", 1)
    first_obs, _ = fresh.reset(seed=reset_seed(3, 0))
    np.testing.assert_allclose(ds.observations[0], first_obs, atol=1e-6)  # step 0: the person's first key
    assert ds.next_qpos is not None  # simulator states: relabel for other tasks, render frames

    # An existing file is refused, then extended with --append; other settings are refused.
    with pytest.raises(FileExistsError, match="--append"):
        record(env, HumanIntervener(ScriptedEvents([]), KEYBOARD, A), 1, out, meta=META, progress=False)
    with pytest.raises(DatasetError, match="task"):
        record(env, person, 1, out, meta={**META, "task": 2}, append=True, progress=False)
    more = HumanIntervener(ScriptedEvents([key("t"), key("d"), key("y")]), KEYBOARD, A)
    record(env, more, 1, out, meta=META, seed=3, append=True, progress=False)
    grown = load_dataset(out)
    assert grown.num_episodes == 3 and grown.num_transitions == ds.num_transitions + 3
    np.testing.assert_array_equal(grown.actions[: ds.num_transitions], ds.actions)  # the old ones kept as they were


def test_simulated_typist_types_the_oracle_to_success():
    """OGBench's oracle, typed as key presses (one axis at full speed per press, the gripper as a
    toggle) through the person's key handling, solves cube-single: every executed action is a
    key's (motion in {-1, 0, 1}), and the typed pulses keep the oracle's mean speed."""
    env = make_env("cube-single", 1)
    domain = get_domain("cube-single")
    successes = 0
    for episode in range(5):
        rng = np.random.default_rng(episode)
        np.random.seed(episode)
        typist = SimulatedTypist(AlwaysDrive(TaskDirector(env, domain, task_goal("cube-single", 1), rng)), A)
        chunks = ActionChunks(env, 1, intervener=typist)
        chunks.reset(seed=episode)
        actions = []
        for _ in range(200):
            _, _, terminated, truncated, info = chunks.step(np.zeros((1, A), np.float32))
            actions.append(info["transitions"][0].action)
            assert info["transitions"][0].intervened
            if terminated or truncated:
                break
        successes += bool(info["success"])
        actions = np.array(actions)
        assert set(np.unique(actions[:, :4])) <= {-1.0, 0.0, 1.0} and set(np.unique(actions[:, 4])) <= {-1.0, 1.0}
        assert typist.health["takeovers"] == 1 and typist.keys_pressed > len(actions) // 2
    assert successes >= 4


def test_sigma_delta_typing_keeps_the_mean_speed():
    """An expert asking for 0.3 on x gets a key press on 3 steps of 10, in time order."""

    class Constant:
        def reset(self, obs, info):
            pass

        def __call__(self, obs, info, proposed):
            return np.array([0.3, -0.55, 0.0, 0.0, -1.0])

    typist = SimulatedTypist(Constant(), A)
    typist.reset(None, {})
    actions = np.array([typist(None, {}, np.zeros(A)) for _ in range(20)])
    np.testing.assert_allclose(actions[:, :2].mean(0), [0.3, -0.55], atol=0.051)
    assert set(np.unique(actions[:, 0])) == {0.0, 1.0} and typist.health["takeovers"] == 1


def test_a_run_intervened_by_keys_flags_the_typed_steps(tmp_path, monkeypatch):
    """`--intervene keys`: the scripted expert takes over a stuck policy through typed keys; the
    steps it drives are flagged and are key actions."""
    from expoft.train.online_loop import EnvSide

    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    cfg = preset("tiny", intervene="keys", intervene_patience=2, intervene_decay=1.0)
    side = EnvSide(cfg, episodes=0)
    assert isinstance(side.env.intervener, SimulatedTypist)
    typed = []
    for step in range(40):
        decision = side.execute(np.zeros(cfg.agent.exec_len * A, np.float32), step)
        typed += [t.action for t in decision.transitions if t.intervened]
    assert typed, "a policy that never moves is stuck: the typist takes over"
    assert set(np.unique(np.array(typed)[:, :4])) <= {-1.0, 0.0, 1.0}


def test_record_command_with_the_simulated_typist(tmp_path, capsys):
    out = tmp_path / "rec.npz"
    assert main(["record", "--preset", "tiny", "--teleop", "simulated", "--episodes", "2", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    ds = load_dataset(out)
    assert ds.num_episodes == 2 and ds.meta["device"] == "simulated"
    # A recorded file is the offline data of a run.
    cfg = preset("tiny", dataset=out)
    assert offline_data(cfg, progress=False).num_transitions == ds.num_transitions
    assert main(["record", "--preset", "tiny", "--teleop", "simulated", "--out", str(out)]) == 2
    assert "--append" in capsys.readouterr().err
    assert load_dataset(out).num_transitions == ds.num_transitions  # the refused call touched nothing


def test_record_with_cameras_writes_every_states_frame_beside_the_data(tmp_path, rendering):
    """On the pixel env: the dataset holds the simulator's states, the frames file beside it holds
    each state's camera frame in the frames layout (the frame the env showed at that state), and
    a pixel run's offline data reads them; --append extends both."""
    from expoft.data.frames import frames_for
    from expoft.envs.pixels import make_pixel_env, render_state
    from expoft.obs import PixelSpec

    spec = PixelSpec(image_size=32)
    env = make_pixel_env("cube-single", 1, spec, episode_steps=15)
    domain = get_domain("cube-single")
    out = tmp_path / "pix.npz"

    def typist(seed):
        director = TaskDirector(env, domain, task_goal("cube-single", 1), np.random.default_rng(seed))
        return SimulatedTypist(AlwaysDrive(director), A)

    record(env, typist(0), 2, out, meta=META, pixels=spec, progress=False)
    ds, frames = load_dataset(out), frames_for(out, spec, progress=False)
    assert ds.observations.shape[1] == domain.obs_dim and frames.shape == (ds.num_transitions + 2, 32, 32, 3)
    rows = ds.frame_rows()
    for j in (0, 5, ds.num_transitions - 1):  # the next state's frame is the one rendered at its qpos
        np.testing.assert_array_equal(frames[rows[j] + 1], render_state(env, ds.next_qpos[j]))
    record(env, typist(1), 1, out, meta=META, pixels=spec, append=True, progress=False)
    grown = load_dataset(out)
    assert frames_for(out, spec, progress=False).shape[0] == grown.num_transitions + 3
    assert not list(tmp_path.glob("*.bak*"))  # the recorder rewrites its own files without backups
    # refused before the first reset, from the observation space: nobody drives an episode for nothing
    # (person None: it is never asked)
    with pytest.raises(ValueError, match="have cameras: pass the run's --pixels"):
        record(env, None, 1, tmp_path / "other.npz", meta=META, progress=False)
    with pytest.raises(ValueError, match="no cameras"):
        record(make_env("cube-single", 1), None, 1, tmp_path / "other.npz", meta=META, pixels=spec, progress=False)
    assert not (tmp_path / "other.npz").exists()

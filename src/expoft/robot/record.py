"""``expoft record``: demonstrations by a person, through the path interventions take.

The person's device sits behind ``ActionChunks`` as the intervener of a policy that holds the arm
still (zero motion, the gripper as the person last set it), so recording uses the same key
handling, flags, labels and safety wrappers as an intervened run. An episode starts being
recorded at the person's first driven step (they press ``t``; before that the arm waits) and ends
at the environment's success or time limit, or at a label key: success, failure, or re-record (the
episode is discarded and the same reset comes again).

Each kept episode is written at once with the ones before it (``save_dataset``: the whole file,
atomically), so a crash or Ctrl-C loses at most the episode under way; ``append`` continues a
file of the same environment and task. With camera observations the dataset holds the state
vectors (the simulator's state, or the arm's proprioception) and the frames go beside it
(``expoft.data.frames``: every state's frame, ready for pixel runs and ``expoft reward train``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from expoft.data.dataset import dataset_paths, load_dataset, save_dataset
from expoft.data.frames import frames_for, save_frames
from expoft.data.transitions import DatasetError, make_dataset
from expoft.envs.chunks import ActionChunks
from expoft.obs import PIXELS, PROPRIO, PixelSpec

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Recording:
    """What a recording session did."""

    path: Path
    kept: int = 0
    """Episodes written this session."""
    successes: int = 0
    rerecorded: int = 0
    """Episodes the person discarded (the same reset came again)."""
    never_started: int = 0
    """Episodes that ended before the person drove (discarded too)."""


def reset_seed(seed: int, episode: int) -> int:
    """The reset seed of the file's ``episode``-th episode (a simulator uses it; a robot may log it)."""
    return int(np.random.SeedSequence(seed, spawn_key=(episode,)).generate_state(1)[0])


def _hold(person, action_dim: int, gripper_dim: int | None) -> np.ndarray:
    hold = np.zeros(action_dim, np.float32)
    if gripper_dim is not None:
        hold[gripper_dim] = getattr(person, "gripper", -1.0)
    return hold


def _state(obs, info) -> np.ndarray:
    """The state vector kept for an observation: the observation itself, or with cameras the
    simulator's state (``info["state"]``) or else the arm's proprioception."""
    if not isinstance(obs, dict):
        return np.asarray(obs, np.float32)
    return np.asarray(info["state"] if "state" in info else obs[PROPRIO], np.float32)


def _one_episode(chunks: ActionChunks, person, seed: int, action_dim: int, gripper_dim: int | None, reward: str):
    """(arrays of the driven steps, their camera frames or None, success, label) of one attempt;
    the arrays are None when the person never drove."""
    _, info = chunks.reset(seed=seed)
    steps: list = []
    qpos: list = []
    states: list = []  # the state vector of each step's observation and of the last next observation
    frames: list = []
    before = info
    while True:
        _, _, terminated, truncated, info = chunks.step(_hold(person, action_dim, gripper_dim)[None])
        (t,) = info["transitions"]
        if steps or t.intervened:
            if not steps:
                states.append(_state(t.observation, before))
                if isinstance(t.observation, dict):
                    frames.append(t.observation[PIXELS])
            steps.append(t)
            states.append(_state(t.next_observation, info))
            if isinstance(t.next_observation, dict):
                frames.append(t.next_observation[PIXELS])
            if "qpos" in info:
                qpos.append(np.asarray(info["qpos"], np.float32))
        before = info
        if terminated or truncated:
            break
    success = bool(info["success"])
    if not steps:
        return None, None, success, info.get("rerecord", False)
    rewards = np.array([t.reward for t in steps], np.float32)
    if reward == "sparse" and success:  # a person's success key ends the episode: its last step is the success
        rewards[-1] = 1.0
    arrays = {
        "observations": np.stack(states[:-1]),
        "next_observations": np.stack(states[1:]),
        "actions": np.stack([t.action for t in steps]).astype(np.float32),
        "rewards": rewards,
        "terminals": np.array([t.terminated for t in steps]) & success,
        "episode_ends": np.arange(len(steps)) == len(steps) - 1,
        "episode_success": np.array([success]),
    }
    if len(qpos) == len(steps):
        arrays["next_qpos"] = np.stack(qpos)
    return arrays, (np.stack(frames) if frames else None), success, bool(info.get("rerecord", False))


def _check_cameras(has_cameras: bool, pixels: PixelSpec | None) -> None:
    if has_cameras and pixels is None:
        raise ValueError("the environment's observations have cameras: pass the run's --pixels")
    if pixels is not None and not has_cameras:
        raise ValueError("--pixels was given, but the environment's observations have no cameras")


def record(env, person, episodes: int, out: str | Path, *, meta: dict, seed: int = 0, append: bool = False,
           pixels: PixelSpec | None = None, gripper_dim: int | None = -1,
           progress: bool = True) -> Recording:  # fmt: skip
    """Record ``episodes`` kept episodes of ``person`` (an intervener with ``pop_label``) driving
    ``env`` into the dataset ``out``. ``meta``: the file's env, task and reward (and anything to
    remember: the device); an existing ``out`` is refused unless ``append`` (then its env, task
    and reward must match). ``pixels``: the cameras of an env with camera observations; their
    frames are written beside the dataset (``expoft.data.frames``), the state vectors into it."""
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    # before anyone drives (a person's episode is not spent on it); each episode is checked again below
    _check_cameras(PIXELS in getattr(env.observation_space, "spaces", {}), pixels)
    npz, _ = dataset_paths(out)
    previous: dict[str, np.ndarray] = {}
    frames: np.ndarray | None = None
    if npz.exists():
        if not append:
            raise FileExistsError(f"{npz} already exists: pass --append to add episodes to it, or another --out")
        old = load_dataset(npz)
        differ = {
            k: (old.meta.get(k), meta.get(k)) for k in ("env", "task", "reward") if old.meta.get(k) != meta.get(k)
        }
        if differ:
            raise DatasetError(
                f"{npz} was recorded for other settings ({differ}: file vs now); record into another --out"
            )
        previous = {k: v for k, v in old.arrays().items()}
        if pixels is not None:
            frames = frames_for(npz, pixels, progress=False)
    elif append:
        log.info("%s does not exist yet: a new file is started", npz)
    action_dim = int(np.prod(env.action_space.shape))
    chunks = ActionChunks(env, 1, intervener=person)
    done = Recording(path=npz)
    held = len(previous.get("episode_success", ()))
    reward = meta.get("reward", "sparse")
    while done.kept < episodes:
        index = held + done.kept
        arrays, seen, success, rerecord = _one_episode(
            chunks, person, reset_seed(seed, index), action_dim, gripper_dim, reward
        )
        if rerecord or arrays is None:
            done.rerecorded += bool(rerecord)
            done.never_started += arrays is None and not rerecord
            why = "re-record asked" if rerecord else "ended before anyone drove"
            if progress:
                print(f"episode {index}: {why}; discarded, the same reset again", flush=True)
            continue
        if previous and set(arrays) != set(previous):
            raise DatasetError(f"episode {index} has fields {sorted(arrays)}, the file {sorted(previous)}: "
                               "record into another --out")  # fmt: skip
        _check_cameras(seen is not None, pixels)
        previous = {k: np.concatenate([previous[k], v]) if previous else v for k, v in arrays.items()}
        ds = make_dataset(previous, dict(meta), str(npz))
        save_dataset(ds, npz, overwrite=True)
        if seen is not None and pixels is not None:  # the frames file names the dataset it belongs to: after it
            frames = seen if frames is None else np.concatenate([frames, seen])
            save_frames(frames, npz, ds, pixels, backup=False)
        done.kept += 1
        done.successes += success
        if progress:
            steps = len(arrays["actions"])
            print(f"episode {index}: {'success' if success else 'failure'}, {steps} steps; kept "
                  f"({done.kept}/{episodes} this session, saved to {npz})", flush=True)  # fmt: skip
    return done

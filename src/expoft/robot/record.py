"""``expoft record``: demonstrations by a person, through the path interventions take.

The person's device sits behind ``ActionChunks`` as the intervener of a policy that holds the arm
still (zero motion, the gripper as the person last set it), so recording uses the same key
handling, flags, labels and safety wrappers as an intervened run. An episode starts being
recorded at the person's first driven step (they press ``t``; before that the arm waits) and ends
at the environment's success or time limit, or at a label key: success, failure, or re-record (the
episode is discarded and the same reset comes again).

Each kept episode is written at once with the ones before it (``save_dataset``: the whole file,
atomically), so a crash or Ctrl-C loses at most the episode under way; ``append`` continues a
file of the same environment and task.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from expoft.data.dataset import dataset_paths, load_dataset, save_dataset
from expoft.data.transitions import DatasetError, make_dataset
from expoft.envs.chunks import ActionChunks

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


def _one_episode(chunks: ActionChunks, person, seed: int, action_dim: int, gripper_dim: int | None, reward: str):
    """(arrays of the driven steps, success, label) of one attempt; the arrays are None when the
    person never drove."""
    obs, info = chunks.reset(seed=seed)
    if not isinstance(obs, np.ndarray):
        raise ValueError(
            "expoft record writes state observations (a vector); this environment gives "
            f"{type(obs).__name__} observations (cameras). Record the arm's state, or render frames "
            "from the simulator afterwards (`expoft data render`)"
        )
    steps: list = []
    qpos: list = []
    while True:
        _, _, terminated, truncated, info = chunks.step(_hold(person, action_dim, gripper_dim)[None])
        (t,) = info["transitions"]
        if steps or t.intervened:
            steps.append(t)
            if "qpos" in info:
                qpos.append(np.asarray(info["qpos"], np.float32))
        if terminated or truncated:
            break
    success = bool(info["success"])
    if not steps:
        return None, success, info.get("rerecord", False)
    rewards = np.array([t.reward for t in steps], np.float32)
    if reward == "sparse" and success:  # a person's success key ends the episode: its last step is the success
        rewards[-1] = 1.0
    arrays = {
        "observations": np.stack([t.observation for t in steps]).astype(np.float32),
        "next_observations": np.stack([t.next_observation for t in steps]).astype(np.float32),
        "actions": np.stack([t.action for t in steps]).astype(np.float32),
        "rewards": rewards,
        "terminals": np.array([t.terminated for t in steps]) & success,
        "episode_ends": np.arange(len(steps)) == len(steps) - 1,
        "episode_success": np.array([success]),
    }
    if len(qpos) == len(steps):
        arrays["next_qpos"] = np.stack(qpos)
    return arrays, success, bool(info.get("rerecord", False))


def record(env, person, episodes: int, out: str | Path, *, meta: dict, seed: int = 0, append: bool = False,
           gripper_dim: int | None = -1, progress: bool = True) -> Recording:  # fmt: skip
    """Record ``episodes`` kept episodes of ``person`` (an intervener with ``pop_label``) driving
    ``env`` into the dataset ``out``. ``meta``: the file's env, task and reward (and anything to
    remember: the device); an existing ``out`` is refused unless ``append`` (then its env, task
    and reward must match)."""
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    npz, _ = dataset_paths(out)
    previous: dict[str, np.ndarray] = {}
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
    elif append:
        log.info("%s does not exist yet: a new file is started", npz)
    action_dim = int(np.prod(env.action_space.shape))
    chunks = ActionChunks(env, 1, intervener=person)
    done = Recording(path=npz)
    held = len(previous.get("episode_success", ()))
    reward = meta.get("reward", "sparse")
    while done.kept < episodes:
        index = held + done.kept
        arrays, success, rerecord = _one_episode(
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
        previous = {k: np.concatenate([previous[k], v]) if previous else v for k, v in arrays.items()}
        save_dataset(make_dataset(previous, dict(meta), str(npz)), npz, overwrite=True)
        done.kept += 1
        done.successes += success
        if progress:
            steps = len(arrays["actions"])
            print(f"episode {index}: {'success' if success else 'failure'}, {steps} steps; kept "
                  f"({done.kept}/{episodes} this session, saved to {npz})", flush=True)  # fmt: skip
    return done

"""Where a success detector fires on the held-out episodes of its training data, against the
simulator's truth: one JSON line per held-out episode (its length, the first state the detector
fires on, how many steps before the episode's end, the cube's distance to its goal there), so
early fires can be told apart as near misses (cube next to its target) or confusions.

    python benchmarks/detector_errors.py DATASET.npz DETECTOR_DIR

Cube domains only (the distance needs the dataset's ``next_qpos``); reads, writes nothing.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from expoft.data.dataset import load_dataset
from expoft.data.frames import frames_for
from expoft.envs.ogbench_domains import cube_positions, get_domain, task_goal
from expoft.reward.classifier import SuccessClassifier, frame_labels, split_episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("detector")
    args = parser.parse_args()
    detector = SuccessClassifier.load(args.detector)
    ds = load_dataset(args.dataset)
    if ds.next_qpos is None or ds.episode_success is None:
        raise SystemExit("the dataset needs next_qpos and episode_success (the cube's distance, the truth)")
    frames = frames_for(args.dataset, detector.spec, progress=False)
    _, episode = frame_labels(ds, detector.cfg)
    domain = get_domain(ds.meta["env"])
    goal = task_goal(domain.name, ds.meta["task"]).cube_xyzs
    starts, _ = ds.episode_bounds()
    for e in range(split_episodes(ds.num_episodes, detector.cfg.holdout), ds.num_episodes):
        rows = np.flatnonzero(episode == e)
        fires = np.flatnonzero(detector.probability(frames[rows]) >= detector.cfg.threshold)
        first = int(fires[0]) if len(fires) else None
        distance = None
        if first is not None and first >= 1:  # state k >= 1 is the next state of transition k - 1
            qpos = ds.next_qpos[starts[e] + first - 1][None]
            distance = round(float(np.linalg.norm(cube_positions(domain, qpos)[0] - goal, axis=-1).sum()), 4)
        print(json.dumps({"episode": e, "success": bool(ds.episode_success[e]), "states": len(rows),
                          "first_fire": first, "steps_before_end": None if first is None else len(rows) - 1 - first,
                          "cube_goal_distance_m": distance}))  # fmt: skip


if __name__ == "__main__":
    main()

"""The ``expoft`` commands of the robot runtime: serve a base, learner and actor processes, and
recording a person's demonstrations (docs/actorlearner.md, docs/robot.md)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import tyro

from expoft.reward.classifier import DetectorConfig
from expoft.train.config import RunConfig


@dataclasses.dataclass(frozen=True)
class Serve:
    """Serve the (EMA) base of a run folder's latest checkpoint over a websocket (openpi's wire
    format, docs/bases.md), for `expoft finetune --external-base ws://HOST:PORT`."""

    run_dir: tyro.conf.Positional[Path]
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    """Require 'Authorization: Api-Key TOKEN' of every client (default: $EXPOFT_TOKEN)."""
    max_message_mb: float = 32.0
    """Largest request frame taken, in MiB."""

    def run(self) -> None:
        import os

        from expoft.bases.server import PolicyServer
        from expoft.train.build import run_base

        token = self.token if self.token is not None else os.environ.get("EXPOFT_TOKEN")
        max_bytes = int(self.max_message_mb * 2**20)
        server = PolicyServer(run_base(self.run_dir), self.host, self.port, token=token, max_message_bytes=max_bytes)
        print(f"serving the base of {self.run_dir} on {server.url}", flush=True)
        server.serve_forever()


@dataclasses.dataclass(frozen=True)
class Learner:
    """Own a run (agent, buffer, run folder; pretrained as by `expoft finetune`), serve actors its online phase."""

    config: Annotated[RunConfig, tyro.conf.OmitArgPrefixes]
    out: Path = Path("runs/learner")
    """Run folder: the files of `expoft finetune`, plus learner.json (the run's id)."""
    listen: str = "127.0.0.1:8765"
    """HOST:PORT to serve actors on (port 0: a free one, printed)."""
    mode: str = "sync"
    """sync: the actor waits for each decision's update calls and weights (the loop of `expoft finetune`);
    async: the learner updates (and evaluates) in threads of its own; actors never wait for them."""
    actors: int = 1
    """Actor processes served at once, each with its own --slot (more than 1: --mode async)."""
    ray: bool = False
    """Start the --actors on Ray (pip install 'expoft[ray]'): a local Ray, or --ray-address's cluster."""
    ray_address: str | None = None
    ray_cpus_per_actor: float = 1.0
    """CPUs Ray reserves per actor (fractions place several actors per core)."""
    overwrite: bool = False
    resume: bool = False
    """Continue the killed run in --out from its newest checkpoint (its own config.json)."""
    idle_timeout_s: float = 600.0
    """Longest wait for the actor's next message before its connection is dropped."""
    progress: bool = True

    def run(self) -> None:
        from expoft.actorlearner.serve import serve_run

        summary = serve_run(self.config, self.out, self.listen, mode=self.mode, actors=self.actors, ray=self.ray,
                            ray_address=self.ray_address, ray_cpus_per_actor=self.ray_cpus_per_actor,
                            overwrite=self.overwrite, resume=self.resume, progress=self.progress,
                            idle_timeout_s=self.idle_timeout_s)  # fmt: skip
        print(json.dumps({k: v for k, v in summary.items() if k != "evaluations"}))


@dataclasses.dataclass(frozen=True)
class Actor:
    """Act for a learner: build its run's environment and agent, act with the newest weights,
    stream every executed decision; until the learner's run has finished."""

    learner: str = "ws://127.0.0.1:8765"
    name: str = "actor"
    slot: int = 0
    """This actor's place at a learner of several (`expoft learner --actors N`): 0..N-1, one each."""
    answer_timeout_s: float = 600.0
    """Longest wait for the learner's answer to one decision (its update calls included)."""
    retries: int = 10
    """Reconnections (with backoff, up to --max-backoff-s apart) before the actor gives up."""
    max_backoff_s: float = 30.0
    """Longest wait between two reconnections (they start 0.5 s apart and double): after a learner
    restart, the actor may sit idle up to this long."""
    journal: Path | None = None
    """Append one JSON line per executed decision here (env step, episode, transition ids)."""
    robot: str | None = None
    """MODULE:FUNCTION making this actor's environment from the run config (your arm, docs/robot.md);
    default: the run's simulator."""
    teleop: str | None = None
    """A person in the loop: keyboard (this terminal's keys) or gamepad:/dev/input/eventN
    (docs/robot.md, keys and buttons)."""
    hz: float | None = None
    """Hold the simulator to this many env steps per second, as a robot's control loop would
    (default: as fast as it goes; a real arm's driver paces itself)."""
    video_dir: Path = Path("actor-videos")
    """Where the training episodes the run films (`expoft learner --video-every N`) are written:
    <run id>/slot<K>/episode_<n>.<gif|mp4>."""

    def run(self) -> None:
        from expoft.actorlearner.actor import Actor as ActorProcess
        from expoft.robot.interface import load_robot
        from expoft.robot.teleop import make_teleop

        robot = None if self.robot is None else load_robot(self.robot)
        person = None if self.teleop is None else make_teleop(self.teleop)
        actor = ActorProcess(self.learner, name=self.name, answer_timeout_s=self.answer_timeout_s, retries=self.retries,
                             max_backoff_s=self.max_backoff_s,
                             journal=self.journal, robot=robot, intervener=person, slot=self.slot,
                             hz=self.hz, video_dir=self.video_dir)  # fmt: skip
        print(json.dumps({"decisions": actor.run(), **actor.latency_ms()}))


@dataclasses.dataclass(frozen=True)
class Record:
    """Record demonstrations: a person drives the run's environment (or --robot) with a keyboard or
    gamepad; each kept episode is added to --out at once (an expoft dataset, for --dataset).
    Press t to start driving an episode; y success, n failure, x re-record (docs/robot.md)."""

    config: Annotated[RunConfig, tyro.conf.OmitArgPrefixes]
    out: Path = Path("demos/recorded.npz")
    episodes: int = 10
    """Episodes to keep (re-recorded ones do not count)."""
    teleop: str = "keyboard"
    """keyboard (this terminal), gamepad:/dev/input/eventN, or simulated (OGBench's oracle typing
    on the keyboard mapping; the simulator only)."""
    robot: str | None = None
    """MODULE:FUNCTION making the environment from the run config (your arm); default: the simulator."""
    append: bool = False
    """Add to an existing --out (same env, task and reward) instead of refusing it."""
    progress: bool = True

    def run(self) -> None:
        import numpy as np

        from expoft.data.dataset import dataset_paths
        from expoft.envs.ogbench_domains import get_domain, task_goal
        from expoft.envs.run_env import make_run_env
        from expoft.envs.task_director import TaskDirector
        from expoft.robot.interface import load_robot
        from expoft.robot.record import record
        from expoft.robot.teleop import make_teleop
        from expoft.robot.typist import AlwaysDrive, SimulatedTypist

        cfg = self.config
        if dataset_paths(self.out)[0].exists() and not self.append:  # before a device or an arm is touched
            raise FileExistsError(f"{dataset_paths(self.out)[0]} already exists: pass --append, or another --out")
        env = make_run_env(cfg) if self.robot is None else load_robot(self.robot)(cfg)
        if self.teleop == "simulated":
            if self.robot is not None:
                raise ValueError(
                    "--teleop simulated drives the simulator's oracle; with --robot use a keyboard or gamepad"
                )
            domain = get_domain(cfg.env)
            rng = np.random.default_rng(cfg.seed)
            np.random.seed(cfg.seed)  # OGBench's oracles draw from numpy's global generator
            director = TaskDirector(env, domain, task_goal(domain.name, cfg.task), rng)
            person: Any = SimulatedTypist(AlwaysDrive(director), domain.action_dim)
        else:
            person = make_teleop(self.teleop)
        meta = {"kind": "recorded", "env": cfg.env, "task": cfg.task, "reward": cfg.reward, "device": self.teleop,
                "robot": self.robot}  # fmt: skip
        try:
            done = record(env, person, self.episodes, self.out, meta=meta, seed=cfg.seed, append=self.append,
                          pixels=cfg.pixels, progress=self.progress)  # fmt: skip
        finally:
            close = getattr(getattr(person, "source", None), "close", None)
            if close is not None:
                close()  # a terminal back out of raw mode
            env.close()
        print(json.dumps({**dataclasses.asdict(done), "path": str(done.path)}))


@dataclasses.dataclass(frozen=True)
class RewardTrain:
    """Train a success detector (an image classifier) on a dataset's frames: the last frames of its
    successful episodes are positives, the rest negatives; the last episodes are held out and its
    precision and recall on them reported. Use it with `--success-detector DIR` in a pixel run."""

    dataset: tyro.conf.Positional[Path]
    """Dataset whose frames exist or can be rendered (`expoft data render`, or a LeRobot import)."""
    out: Path = Path("detectors/success")
    image_size: int = 48
    """The frames the run observes (the `pixels` preset: 48)."""
    cameras: tuple[str, ...] = ("front_pixels",)
    config: Annotated[DetectorConfig, tyro.conf.OmitArgPrefixes] = DetectorConfig()
    overwrite: bool = False
    progress: bool = True

    def run(self) -> None:
        from expoft.data.dataset import load_dataset
        from expoft.data.frames import frames_for
        from expoft.obs import PixelSpec
        from expoft.reward.classifier import CONFIG_FILE, train_detector

        if (self.out / CONFIG_FILE).exists() and not self.overwrite:
            raise FileExistsError(f"{self.out} already holds a detector: pass --overwrite or another --out")
        spec = PixelSpec(image_size=self.image_size, cameras=tuple(self.cameras))
        ds = load_dataset(self.dataset)
        frames = frames_for(self.dataset, spec, progress=self.progress)
        detector, report = train_detector(ds, frames, spec, self.config, progress=self.progress)
        detector.meta.update(dataset=str(self.dataset), env=ds.meta.get("env"), task=ds.meta.get("task"))
        detector.save(self.out)
        print(json.dumps({"out": str(self.out), **report}))


@dataclasses.dataclass(frozen=True)
class RewardEval:
    """Precision and recall of a trained detector on every episode of another dataset."""

    detector: tyro.conf.Positional[Path]
    dataset: tyro.conf.Positional[Path]
    progress: bool = True

    def run(self) -> None:
        from expoft.data.dataset import load_dataset
        from expoft.data.frames import frames_for
        from expoft.reward.classifier import SuccessClassifier, evaluate_detector, frame_labels

        detector = SuccessClassifier.load(self.detector)
        ds = load_dataset(self.dataset)
        frames = frames_for(self.dataset, detector.spec, progress=self.progress)
        labels, episode = frame_labels(ds, detector.cfg)  # refuses data without episode_success
        assert ds.episode_success is not None
        report = evaluate_detector(detector, frames, labels, episode, ds.episode_success, first=0)
        print(json.dumps({"detector": str(self.detector), "dataset": str(self.dataset), **report}))


RewardCommand = (
    Annotated[RewardTrain, tyro.conf.subcommand("train")] | Annotated[RewardEval, tyro.conf.subcommand("eval")]
)

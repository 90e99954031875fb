"""Actors as Ray actors (``expoft learner --actors N --ray [--ray-address ADDRESS]``).

Ray places the N actor processes (on this machine, or across a Ray cluster's machines) and
restarts one that dies; everything between actor and learner stays the websocket protocol of
``expoft.actorlearner`` (an actor restarted by Ray is a new actor process in the same slot: the
learner drops the episode the dead one left open). On a cluster, every node needs expoft
installed (or a Ray ``runtime_env``), and the learner must listen on an address the nodes reach
(``--listen 0.0.0.0:PORT``; the actors are given this node's IP).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

log = logging.getLogger(__name__)


class ActorWorker:
    """One actor process, as a Ray actor."""

    def run(self, url: str, slot: int, options: dict[str, Any]) -> dict:
        from expoft.actorlearner.actor import Actor

        actor = Actor(url, name=f"ray-actor-{slot}", slot=slot, **options)
        decisions = actor.run()
        return {"slot": slot, "decisions": decisions, **actor.latency_ms()}


@dataclasses.dataclass
class RayActors:
    """N actors started on Ray for a listening learner; :meth:`results` waits for them."""

    url: str
    count: int
    address: str | None = None
    cpus_per_actor: float = 1.0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments of every ``Actor`` (timeouts, retries)."""
    _futures: list = dataclasses.field(default_factory=list)
    _started_ray: bool = False

    def start(self) -> RayActors:
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError("--ray needs Ray: pip install 'expoft[ray]' (or ray==2.60.0)") from exc
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
            self._started_ray = True
        remote: Any = ray.remote(num_cpus=self.cpus_per_actor, max_restarts=3, max_task_retries=3)(ActorWorker)
        workers = [remote.remote() for _ in range(self.count)]
        self._futures = [w.run.remote(self.url, k, self.options) for k, w in enumerate(workers)]
        log.info("started %d actors on Ray for %s", self.count, self.url)
        return self

    def results(self, timeout_s: float = 120.0) -> list[dict]:
        """Each actor's decisions and latencies, once the learner has finished; then Ray is shut
        down if this process started it."""
        import ray

        try:
            return ray.get(self._futures, timeout=timeout_s)
        finally:
            if self._started_ray:
                ray.shutdown()


def reachable_url(host: str, port: int) -> str:
    """The learner's address as actors on other machines reach it."""
    if host in ("0.0.0.0", "::", ""):
        import ray.util

        host = ray.util.get_node_ip_address()
    return f"ws://{host}:{port}"

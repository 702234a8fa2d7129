"""What the driver tracks of a program served on Ray: its replicas, their load, the tree.

:class:`RayServer` is one served name: its replicas (:class:`TrackedReplica`,
the Ray actor handle plus what this driver knows of it) and the balancing
rule (:meth:`RayServer.pick`). :mod:`._serve` owns the directory of them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from dspex.actors._server_requests import ServerFuture
from dspex.errors import ActorStoppedError, OverloadedError
from dspex.programs._ray._replica import ReplicaInfo
from dspex.supervision import Restart, TreeNode

__all__ = ["POLICY", "RayServer", "RayServerFuture", "TrackedReplica", "replica_node"]

POLICY = "least_outstanding"


class RayServerFuture(ServerFuture):
    """A :class:`ServerFuture` that also knows which replica took the request."""

    def __init__(self, server: str, request_id: int, replica: int) -> None:
        super().__init__(server, request_id)
        self.replica = replica


@dataclass(slots=True)
class TrackedReplica:
    """One replica as this driver knows it (fields guarded by its server's lock)."""

    index: int
    handle: Any
    outstanding: int = 0  # requests this driver has in flight to it
    down: bool = False  # died mid-request; Ray restarts it, a probe clears this
    dead: bool = False  # gone for good (restarts exhausted, or stopped)
    info: ReplicaInfo | None = None
    restarts: int = 0  # restarts seen (a new process answered)


@dataclass(slots=True)
class RayServer:
    """One name served on Ray: its replicas, their capacity, the balancing turn."""

    name: str
    replicas: list[TrackedReplica]
    capacity: int
    max_restarts: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    turn: int = 0
    accepting: bool = True
    stopped: bool = False

    def pick(self) -> TrackedReplica:
        """The replica for the next request (counted as outstanding); lock not held."""
        with self.lock:
            if not self.accepting:
                raise ActorStoppedError(
                    f"program server {self.name!r} (ray) is draining or stopped; serve it again"
                )
            live = [r for r in self.replicas if not r.dead]
            if not live:
                raise ActorStoppedError(
                    f"every replica of program server {self.name!r} died for good (more than "
                    f"max_restarts={self.max_restarts} restarts each); serve it again"
                )
            up = [r for r in live if not r.down] or live
            start = self.turn % len(up)
            self.turn += 1
            best = min(up[start:] + up[:start], key=lambda r: r.outstanding)
            if best.outstanding >= self.capacity:
                raise OverloadedError(
                    f"program server {self.name!r} is full: each of its {len(up)} replica(s) "
                    f"holds max_concurrency + queue_limit = {self.capacity} requests; retry "
                    "later, or serve it with more replicas or a longer queue_limit"
                )
            best.outstanding += 1
            return best

    def done(self, replica: TrackedReplica) -> None:
        with self.lock:
            replica.outstanding -= 1


def replica_node(server: RayServer, replica: TrackedReplica, info: ReplicaInfo | None) -> TreeNode:
    if replica.dead:
        status = "dead"
    elif info is None or replica.down:
        status = "restarting"
    else:
        status = "alive"
    known = info or replica.info
    location = None
    if known is not None:
        location = f"node {known.node_id[:12]} {known.address} pid {known.pid}"
    return TreeNode(
        id=f"{server.name}#{replica.index}",
        kind="worker",
        actor_class="ProgramServer",
        status=status,
        restart=Restart.TRANSIENT,
        restarts=replica.restarts,
        location=location,
    )

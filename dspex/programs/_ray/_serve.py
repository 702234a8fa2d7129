"""Program servers on Ray: ``rt.serve(name, program, replicas=N, backend="ray")``.

:class:`RayServers` is one runtime's directory of Ray-served programs (the
``RemoteServers`` of ``dspex.actors._remote``). Each served name runs N
replicas, named Ray actors with ``max_restarts``, each serving the shipped
program in its worker's own dspex runtime (:mod:`._replica`).

Balancing (in the driver, no remote call): *least outstanding*, ties broken
round-robin. The driver counts the requests it has in flight per replica; a
replica holding ``max_concurrency + queue_limit`` is full, and when every
live replica is full ``ask`` raises ``OverloadedError`` at once, before
anything is sent. A replica that another driver filled answers
``OverloadedError`` too (its own admission); it is passed on, not retried.

A replica that dies is restarted by Ray. Requests in flight to it fail with
``ActorStoppedError`` and are *not* retried: a program may have side effects
(tools, writes) that the driver cannot see, and the LM cache makes a retry by
the caller cheap. Until the restarted replica answers a probe, new requests
go to the other replicas.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from typing import Any

from dspex.actors._program_run import RunContext, wrap_program_error
from dspex.actors._server_handle import DrainReport
from dspex.errors import (
    ActorStoppedError,
    ProgramError,
    RegistryError,
    UsageError,
)
from dspex.programs._ray._cluster import ensure_ray
from dspex.programs._ray._limits import NAMESPACE, kill_budgets
from dspex.programs._ray._node import shippable_settings
from dspex.programs._ray._replica import ReplicaInfo, replica_class
from dspex.programs._ray._serve_state import (
    POLICY,
    RayServer,
    RayServerFuture,
    TrackedReplica,
    replica_node,
)
from dspex.programs._ray._shipping import ship
from dspex.supervision import Restart, TreeNode

__all__ = ["POLICY", "RayServerFuture", "RayServerHandle", "RayServers", "ray_servers"]

log = logging.getLogger("dspex.servers")

START_TIMEOUT = 120.0  # seconds for every replica to start (worker processes import dspex)
ACTOR_PREFIX = "dspex.serve:"


class RayServerHandle:
    """What ``serve(..., backend="ray")`` returns: the server by name (any thread)."""

    def __init__(self, directory: RayServers, name: str) -> None:
        self.directory = directory
        self.name = name

    def ask(self, /, **inputs: Any) -> RayServerFuture:
        return self.directory.ask(self.name, **inputs)

    def tell(self, /, **inputs: Any) -> int:
        return self.directory.tell(self.name, **inputs)

    def replicas(self, timeout: float = 10.0) -> list[ReplicaInfo | None]:
        """Where each replica runs and its local server's counters (None: not answering)."""
        return self.directory.replicas(self.name, timeout)

    def actors(self) -> list[Any]:
        """The replicas' Ray actor handles, in index order."""
        return self.directory.actors(self.name)

    def drain(self, timeout: float = 30.0) -> DrainReport:
        return self.directory.drain(self.name, timeout)

    def stop(self) -> None:
        self.directory.stop(self.name)

    def __repr__(self) -> str:
        return f"<RayServerHandle {self.name!r}>"


class RayServers:
    """A runtime's program servers on Ray; every method callable from any thread."""

    def __init__(self, runtime: Any = None, *, address: str | None = None) -> None:
        ensure_ray(address)
        self.runtime = runtime
        self._lock = threading.Lock()
        self._servers: dict[str, RayServer] = {}
        self._ids = itertools.count(1)

    # -- serving ---------------------------------------------------------------------

    def serve(
        self,
        name: str,
        program: Any,
        /,
        *,
        replicas: int = 2,
        max_concurrency: int = 8,
        queue_limit: int = 128,
        max_restarts: int = 5,
        start_timeout: float = START_TIMEOUT,
        factory: str | Callable[[], Any] | None = None,
        ray_options: Mapping[str, Any] | None = None,
    ) -> RayServerHandle:
        """Start ``replicas`` Ray actors serving ``program``; returns once each answers.

        ``max_concurrency``/``queue_limit`` are per replica, as for a local
        server; ``max_restarts`` is Ray's (-1: without limit); ``factory``
        builds the program on the workers (see docs/distributed.md, shipping);
        ``ray_options`` go to ``.options(...)`` of each actor (``num_cpus``...).
        """
        import ray

        _check_int(name, "replicas", replicas, 1)
        _check_int(name, "max_concurrency", max_concurrency, 1)
        _check_int(name, "queue_limit", queue_limit, 0)
        _check_int(name, "max_restarts", max_restarts, -1)
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"serve(name={name!r}): a server name must be a non-empty string")
        with self._lock:
            if name in self._servers:
                raise UsageError(
                    f"a program server named {name!r} already runs on ray; stop it first"
                )
        # Refuses an unshippable program before any actor starts.
        shipped = ship(program, factory=factory)
        settings = shippable_settings(self.runtime.settings) if self.runtime is not None else {}
        actor = replica_class()
        options = {"max_restarts": max_restarts, **dict(ray_options or {})}
        handles = []
        try:
            for index in range(replicas):
                handles.append(
                    actor.options(
                        name=f"{ACTOR_PREFIX}{name}#{index}", namespace=NAMESPACE, **options
                    ).remote(
                        name,
                        index,
                        shipped,
                        settings=settings,
                        max_concurrency=max_concurrency,
                        queue_limit=queue_limit,
                    )
                )
            infos = ray.get([h.describe.remote() for h in handles], timeout=start_timeout)
        except BaseException as exc:
            for handle in handles:
                ray.kill(handle, no_restart=True)
            if isinstance(exc, ValueError) and "already taken" in str(exc):
                raise UsageError(
                    f"serve({name!r}, backend='ray'): a Ray actor named "
                    f"{ACTOR_PREFIX}{name}#... already exists (another driver serves "
                    f"{name!r}?); pick another name"
                ) from exc
            raise
        server = RayServer(
            name,
            [
                TrackedReplica(i, handle, info=info)
                for i, (handle, info) in enumerate(zip(handles, infos, strict=True))
            ],
            capacity=max_concurrency + queue_limit,
            max_restarts=max_restarts,
        )
        with self._lock:
            self._servers[name] = server
        self._emit("program.server.started", server=name, backend="ray", replicas=replicas)
        return RayServerHandle(self, name)

    # -- requests --------------------------------------------------------------------

    def ask(self, name: str, /, **inputs: Any) -> RayServerFuture:
        """Send ``inputs`` to the least busy replica; a future (also awaitable) of the result.

        ``OverloadedError`` at once when every replica is full.
        """
        server = self._server(name)
        replica = server.pick()
        future = RayServerFuture(name, next(self._ids), replica.index)
        try:
            ref = replica.handle.ask.remote(dict(inputs))
        except BaseException:
            server.done(replica)
            raise
        ref.future().add_done_callback(functools.partial(self._answered, server, replica, future))
        future.add_done_callback(functools.partial(_cancel_remote, ref))
        return future

    def tell(self, name: str, /, **inputs: Any) -> int:
        """Fire and forget; the outcome goes to telemetry. Returns the request id."""
        future = self.ask(name, **inputs)
        future.add_done_callback(functools.partial(self._told, name))
        return future.request_id

    def _answered(
        self, server: RayServer, replica: TrackedReplica, future: RayServerFuture, done: Future[Any]
    ) -> None:
        # Runs in a Ray thread of the driver: quick, never blocks.
        server.done(replica)
        error = done.exception()
        try:
            if error is None:
                future.set_result(done.result())
            else:
                future.set_exception(self._translate(server, replica, future, error))
        except InvalidStateError:  # the caller cancelled meanwhile
            pass

    def _translate(
        self,
        server: RayServer,
        replica: TrackedReplica,
        future: RayServerFuture,
        error: BaseException,
    ) -> BaseException:
        from ray import exceptions as rx

        if isinstance(error, rx.RayTaskError):
            cause = getattr(error, "cause", None)
            if not isinstance(cause, BaseException):
                return error
            return _as_local(cause, f"{server.name}#{replica.index}")
        if isinstance(error, rx.RayActorError):
            if server.stopped:
                return ActorStoppedError(
                    f"program server {server.name!r} (ray) was stopped before request "
                    f"#{future.request_id} was answered"
                )
            self._mark_down(server, replica)
            stopped = ActorStoppedError(
                f"replica {server.name}#{replica.index} died while answering request "
                f"#{future.request_id}; Ray restarts it (max_restarts={server.max_restarts}). "
                "The request was not retried, since a program may have side effects: retry it"
            )
            stopped.__cause__ = error
            return stopped
        return error

    def _told(self, name: str, future: Future[Any]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        event = "program.server.result" if error is None else "program.server.error"
        extra = {} if error is None else {"error": type(error).__name__}
        self._emit(event, server=name, backend="ray", **extra)

    # -- supervision ------------------------------------------------------------------

    def _mark_down(self, server: RayServer, replica: TrackedReplica) -> None:
        with server.lock:
            if replica.down or replica.dead:
                return
            replica.down = True
        # A probe queued on the restarting actor answers once it is back.
        ref = replica.handle.describe.remote()
        ref.future().add_done_callback(functools.partial(self._probed, server, replica))

    def _probed(self, server: RayServer, replica: TrackedReplica, done: Future[Any]) -> None:
        from ray import exceptions as rx

        error = done.exception()
        with server.lock:
            if error is None:
                self._seen(replica, done.result())
                replica.down = False
            elif isinstance(error, rx.ActorDiedError):
                replica.dead = True  # restarts exhausted: Ray will not bring it back

    @staticmethod
    def _seen(replica: TrackedReplica, info: ReplicaInfo) -> None:
        """Record a replica's description; a new process means Ray restarted it."""
        if replica.info is not None and info.pid != replica.info.pid:
            replica.restarts += 1
        replica.info = info

    def replicas(self, name: str, timeout: float = 10.0) -> list[ReplicaInfo | None]:
        """Each replica's :class:`ReplicaInfo`, or None if it did not answer within ``timeout``."""
        return self._describe(self._server(name), timeout)

    def _describe(self, server: RayServer, timeout: float) -> list[ReplicaInfo | None]:
        import ray

        refs = [r.handle.describe.remote() for r in server.replicas]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=max(0.0, timeout))
        answered = set(ready)
        out: list[ReplicaInfo | None] = []
        for replica, ref in zip(server.replicas, refs, strict=True):
            info: ReplicaInfo | None = None
            if ref in answered:
                try:
                    info = ray.get(ref, timeout=0)
                except Exception:  # died between answering and now, or for good
                    info = None
            if info is not None:
                with server.lock:
                    self._seen(replica, info)
                    replica.down = False
            else:
                ray.cancel(ref)
            out.append(info)
        return out

    def actors(self, name: str) -> list[Any]:
        return [r.handle for r in self._server(name).replicas]

    def tree(self, timeout: float) -> TreeNode | None:
        """The ``ray`` branch of ``rt.tree()``: each served name and its replicas with node."""
        with self._lock:
            servers = list(self._servers.values())
        if not servers:
            return None
        deadline = time.monotonic() + timeout
        nodes = []
        for server in servers:
            infos = self._describe(server, deadline - time.monotonic())
            replicas = tuple(
                replica_node(server, r, info)
                for r, info in zip(server.replicas, infos, strict=True)
            )
            nodes.append(
                TreeNode(
                    id=f"server:{server.name}",
                    kind="supervisor",
                    actor_class="RayServer",
                    status="alive",
                    restart=Restart.PERMANENT,
                    strategy=POLICY,
                    children=replicas,
                )
            )
        return TreeNode(
            id="ray",
            kind="supervisor",
            actor_class="RayServers",
            status="alive",
            restart=Restart.PERMANENT,
            strategy="ray max_restarts",
            children=tuple(nodes),
        )

    # -- management -------------------------------------------------------------------

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._servers)

    def drain(self, name: str, timeout: float = 30.0) -> DrainReport:
        """Stop accepting, let each replica finish (up to ``timeout`` s), then stop it."""
        import ray

        started = time.monotonic()
        server = self._server(name)
        with server.lock:
            server.accepting = False
        before = [info.stats if info else None for info in self._describe(server, timeout)]
        refs = [r.handle.drain.remote(timeout) for r in server.replicas if not r.dead]
        expired = 0
        try:
            expired = sum(ray.get(refs, timeout=timeout + 10.0))
        except Exception:
            log.exception("program server %r (ray): draining a replica failed", name)
        answered = sum(
            0 if stats is None else int(stats["executing"]) + int(stats["queued"])
            for stats in before
        )
        self.stop(name)
        return DrainReport(
            servers=(name,),
            answered=max(0, answered - expired),
            expired=expired,
            elapsed_s=round(time.monotonic() - started, 6),
        )

    def stop(self, name: str) -> None:
        """Stop every replica now (no restart); requests in flight get ``ActorStoppedError``."""
        import ray

        with self._lock:
            server = self._servers.pop(name, None)
        if server is None:
            raise RegistryError(
                f"no program server named {name!r} runs on ray (running: {self.names()})"
            )
        with server.lock:
            server.accepting = False
            server.stopped = True
        for replica in server.replicas:
            replica.dead = True
            try:
                ray.kill(replica.handle, no_restart=True)
            except Exception:  # already gone
                log.debug("program server %r: killing replica %d failed", name, replica.index)
        self._emit("program.server.stopped", server=name, backend="ray")

    def close_all(self) -> None:
        """Stop every server and remove the cluster's rate budgets (the runtime stops)."""
        for name in self.names():
            self.stop(name)
        kill_budgets()

    # -- internals --------------------------------------------------------------------

    def _server(self, name: str) -> RayServer:
        with self._lock:
            server = self._servers.get(name)
        if server is None:
            raise RegistryError(
                f"no program server named {name!r} runs on ray (running: {self.names()}); "
                f"start it with serve({name!r}, program, backend='ray')"
            )
        return server

    def _emit(self, event: str, **data: Any) -> None:
        telemetry = getattr(self.runtime, "telemetry", None)
        if telemetry is None:
            return
        try:
            telemetry.emit(event, **data)
        except Exception:  # telemetry never fails a request
            log.exception("program servers (ray): emitting %r failed", event)

    def __repr__(self) -> str:
        return f"<RayServers servers={self.names()}>"


def ray_servers(runtime: Any) -> RayServers:
    """The serve-backend factory registered as ``"ray"`` (address from the settings)."""
    settings = getattr(runtime, "settings", None)
    ray_settings = getattr(getattr(settings, "runtime", None), "ray", None)
    return RayServers(runtime, address=getattr(ray_settings, "address", None))


def _as_local(error: BaseException, where: str) -> BaseException:
    """A program's error as a local server raises it: ProgramError and the user's type.

    The replica sends a plain ProgramError carrying the original exception
    (see ``_replica.portable_error``); wrapped again here, ``except
    ValueError`` catches a remote ValueError as it catches a local one.
    """
    if type(error) is not ProgramError or not isinstance(error.original, Exception):
        return error
    run = RunContext(run_id=error.run_id or 0, label=error.run_label or "")
    wrapped = wrap_program_error(error.original, run)
    wrapped.add_note(f"on ray replica {where}")
    return wrapped


def _cancel_remote(ref: Any, future: Future[Any]) -> None:
    if future.cancelled():
        import ray

        try:
            ray.cancel(ref)
        except Exception:  # already finished
            log.debug("cancelling a ray request failed", exc_info=True)


def _check_int(name: str, option: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UsageError(
            f"serve({name!r}, {option}={value!r}, backend='ray'): use an int >= {least}"
        )

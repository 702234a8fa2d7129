"""Named program servers: long-lived actors that each serve one program.

``serve(name, program, max_concurrency=N, queue_limit=M)`` starts a
:class:`ProgramServer` under the runtime's ProgramServers dynamic supervisor,
registered as ``server:<name>``. Callers ``ask`` (a future) or ``tell``
(fire-and-forget, the outcome goes to telemetry) by name.

The actor is only the dispatcher: it moves admitted requests from the queue to
free workers. Admission, the queue, the workers and the program live in a
:class:`~dspex.actors._server_state.ServerState` that outlives the actor, so
a crashed server is restarted (TRANSIENT: a crash restarts it, a deliberate
stop does not) and its next incarnation resumes dispatching where the last
one stopped: no queued request is lost, none is answered twice.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pykka

from dspex.actors._server_requests import Dispatch, Emitter, Execute, ServerFuture, ServerStats
from dspex.actors._server_state import ServerState
from dspex.errors import RegistryError, SupervisionError, UsageError
from dspex.supervision import (
    Actor,
    ChildSpec,
    Down,
    MonitorRef,
    Registry,
    Restart,
    demonitor,
    monitor,
    start_child,
    terminate_child,
)

__all__ = [
    "DrainReport",
    "ProgramServer",
    "ServerDirectory",
    "ServerHandle",
    "server_key",
]


log = logging.getLogger("dspex.servers")


def server_key(name: str) -> str:
    """The registry name of program server ``name`` (kept apart from service names)."""
    return f"server:{name}"


class ProgramServer(Actor):
    """The dispatcher of one named program server (actor thread).

    Requests never execute here, so the mailbox stays responsive while all
    workers are busy. An unexpected message is a bug: like an unmatched cast
    in OTP it crashes the actor, and its supervisor restarts it on the same state.
    """

    def __init__(self, state: ServerState) -> None:
        super().__init__()
        self.state = state

    def on_start(self) -> None:
        if not self.state.adopt(self.actor_ref):
            self.stop()  # drained or stopped while this incarnation was starting
            return
        self.state.dispatch()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Dispatch):
            self.state.dispatch()
            return None
        raise UsageError(
            f"program server {self.state.name!r} got an unexpected message {message!r}; "
            "send requests with ask()/tell() by name"
        )

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.state.detach(self.actor_ref)  # queued work waits for the next incarnation

    def on_stop(self) -> None:
        self.state.detach(self.actor_ref)
        self.state.close("its actor was stopped")

    def stats(self) -> ServerStats:
        """The server's counters, answered by the actor (proves its mailbox is live)."""
        return self.state.stats()


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What a drain did: servers drained, requests answered meanwhile, requests expired."""

    servers: tuple[str, ...]
    answered: int
    expired: int
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """True when every admitted request was answered before the deadline."""
        return self.expired == 0


@dataclass(slots=True)
class _Entry:
    state: ServerState
    watch: MonitorRef | None = None


class ServerDirectory:
    """The program servers of one runtime, by name; every method is callable from any thread.

    ``supervisor`` returns the current ProgramServers dynamic supervisor (a
    ref is accepted too). ``execute`` is the default run executor of new
    servers (see :data:`~dspex.actors._server_state.Execute`); ``runtime``
    is what requests' program runs see as their runtime.
    """

    def __init__(
        self,
        supervisor: Callable[[], pykka.ActorRef[Any]] | pykka.ActorRef[Any],
        registry: Registry,
        *,
        telemetry: Emitter | None = None,
        runtime: Any = None,
        execute: Execute | None = None,
    ) -> None:
        if isinstance(supervisor, pykka.ActorRef):
            ref = supervisor
            self._supervisor: Callable[[], pykka.ActorRef[Any]] = lambda: ref
        else:
            self._supervisor = supervisor
        self.registry = registry
        self.telemetry = telemetry
        self.runtime = runtime
        self.execute = execute
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    # -- serving -------------------------------------------------------------------------

    def serve(
        self,
        name: str,
        program: Any,
        /,
        *,
        max_concurrency: int = 8,
        queue_limit: int = 128,
        execute: Execute | None = None,
        restart: Restart = Restart.TRANSIENT,
        shutdown: float = 10.0,
        start_timeout: float = 5.0,
    ) -> ServerHandle:
        """Start a named server for ``program``; returns a handle once it runs.

        Up to ``max_concurrency`` requests execute at once and ``queue_limit``
        more wait; beyond that ``ask``/``tell`` raise ``OverloadedError`` at once.
        """
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"serve(name={name!r}): a server name must be a non-empty string")
        if restart not in (Restart.TRANSIENT, Restart.TEMPORARY):
            raise UsageError(
                f"serve({name!r}, restart={restart!r}): use Restart.TRANSIENT (restart after a "
                "crash, the default) or Restart.TEMPORARY (never); a PERMANENT server would be "
                "restarted even after it was drained"
            )
        state = ServerState(
            name,
            program,
            max_concurrency=max_concurrency,
            queue_limit=queue_limit,
            execute=execute or self.execute,
            telemetry=self.telemetry,
            runtime=self.runtime,
            on_closed=self._forget,
        )
        entry = _Entry(state)
        with self._lock:
            if name in self._entries:
                raise UsageError(
                    f"a program server named {name!r} already runs; reload it with "
                    f"reload({name!r}, program), or drain it before serving it again"
                )
            self._entries[name] = entry
        try:
            supervisor = self._supervisor()
            # A dynamic supervisor's children die with it: close the state then.
            entry.watch = monitor(supervisor, functools.partial(_supervisor_down, state))
            start_child(
                supervisor,
                ChildSpec(
                    id=server_key(name),
                    start=functools.partial(ProgramServer.start, state),
                    restart=restart,
                    shutdown=shutdown,
                    name=server_key(name),
                    start_timeout=start_timeout,
                ),
            )
        except BaseException:
            state.close("it failed to start")
            raise
        self._emit(
            "program.server.started",
            server=name,
            max_concurrency=max_concurrency,
            queue_limit=queue_limit,
        )
        return ServerHandle(self, name)

    # -- requests ------------------------------------------------------------------------

    def ask(self, name: str, /, **inputs: Any) -> ServerFuture:
        """Send ``inputs`` to server ``name``; the future resolves to the program's result.

        Raises ``OverloadedError`` at once when the server is full, and
        ``ActorStoppedError`` when it is draining or stopped.
        """
        future = ServerFuture(name)
        self._state(name).submit(inputs, future)
        return future

    def tell(self, name: str, /, **inputs: Any) -> int:
        """Fire-and-forget; returns the request id that the telemetry events carry.

        The outcome is emitted as ``program.server.result`` or ``program.server.error``.
        """
        return self._state(name).submit(inputs, None).id

    # -- management ----------------------------------------------------------------------

    def reload(self, name: str, program_or_path: Any, /) -> int:
        """Swap server ``name``'s program; returns the new version number.

        Requests already dispatched finish on the old program, later ones run
        the new one. A path to a saved JSON state is loaded into a copy of
        the current program (``program.deepcopy().load(path)``).
        """
        state = self._state(name)
        if isinstance(program_or_path, str | os.PathLike):
            new = _load_into_copy(name, state.program, Path(program_or_path))
        else:
            new = program_or_path
        version = state.swap(new)
        self._emit("program.server.reloaded", server=name, version=version)
        return version

    def stop_accepting(self, name: str | None = None) -> None:
        """Refuse new requests on server ``name`` (None: on every server)."""
        for state in self._states(name):
            state.stop_accepting()

    def drain(self, name: str, timeout: float = 30.0) -> DrainReport:
        """Stop accepting, finish queued and executing requests up to ``timeout`` s, stop.

        Requests not answered by the deadline get ``ActorStoppedError``.
        """
        return self._drain(self._states(name), timeout)

    def drain_all(self, timeout: float = 30.0) -> DrainReport:
        """:meth:`drain` every server at once, under one shared deadline."""
        return self._drain(self._states(None), timeout)

    def stop(self, name: str) -> None:
        """Stop server ``name`` now: queued requests get an error, executing ones finish."""
        for state in self._states(name):
            self._terminate(state, "stopped")

    def close_all(self) -> None:
        """Stop every server now (for a runtime's shutdown)."""
        for state in self._states(None):
            self._terminate(state, "the runtime stopped")

    def stats(self, name: str) -> ServerStats:
        """Counters of server ``name``, read without a round trip to its actor."""
        return self._state(name).stats()

    def program(self, name: str) -> Any:
        """The program server ``name`` runs new requests on."""
        return self._state(name).program

    def names(self) -> list[str]:
        """Names of the running servers, sorted."""
        with self._lock:
            return sorted(self._entries)

    def handle(self, name: str) -> ServerHandle:
        """A handle bound to server ``name`` (checked to exist)."""
        self._state(name)
        return ServerHandle(self, name)

    # -- internals -----------------------------------------------------------------------

    def _state(self, name: str) -> ServerState:
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                return entry.state
            known = sorted(self._entries)
        raise RegistryError(
            f"no program server named {name!r} is running (running: {known}); "
            f"start it with serve({name!r}, program)"
        )

    def _states(self, name: str | None) -> list[ServerState]:
        if name is not None:
            return [self._state(name)]
        with self._lock:
            return [entry.state for entry in self._entries.values()]

    def _forget(self, state: ServerState) -> None:
        with self._lock:
            entry = self._entries.get(state.name)
            if entry is None or entry.state is not state:
                return
            del self._entries[state.name]
        if entry.watch is not None:
            demonitor(entry.watch)

    def _drain(self, states: list[ServerState], timeout: float) -> DrainReport:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise UsageError(f"drain(timeout={timeout!r}): must be a number of seconds >= 0")
        started = time.monotonic()
        deadline = started + timeout
        for state in states:  # all stop accepting first, then all drain together
            state.stop_accepting()
        before = sum(_answered(state.stats()) for state in states)
        expired = 0
        for state in states:
            if not state.wait_idle(deadline - time.monotonic()):
                expired += state.expire(f"drain deadline of {timeout}s passed")
        answered = sum(_answered(state.stats()) for state in states) - before
        for state in states:
            self._terminate(state, "drained")
            self._emit("program.server.drained", server=state.name)
        return DrainReport(
            servers=tuple(state.name for state in states),
            answered=answered,
            expired=expired,
            elapsed_s=round(time.monotonic() - started, 6),
        )

    def _terminate(self, state: ServerState, why: str) -> None:
        ref = state.ref
        # Closed first: an incarnation restarting right now stops itself on start.
        state.close(why)
        if ref is None:
            return
        try:
            terminate_child(self._supervisor(), ref)
        except SupervisionError:  # the supervisor (or the runtime) is already gone
            _stop_quietly(ref)

    def _emit(self, event: str, **data: Any) -> None:
        if self.telemetry is None:
            return
        try:
            self.telemetry.emit(event, **data)
        except Exception:  # telemetry must never fail a serve, reload or drain
            log.exception("program servers: emitting %r failed", event)

    def __repr__(self) -> str:
        return f"<ServerDirectory servers={self.names()}>"


class ServerHandle:
    """A program server by name, as returned by ``serve`` (any thread)."""

    def __init__(self, directory: ServerDirectory, name: str) -> None:
        self.directory = directory
        self.name = name

    def ask(self, /, **inputs: Any) -> ServerFuture:
        """See :meth:`ServerDirectory.ask`."""
        return self.directory.ask(self.name, **inputs)

    def tell(self, /, **inputs: Any) -> int:
        """See :meth:`ServerDirectory.tell`."""
        return self.directory.tell(self.name, **inputs)

    def reload(self, program_or_path: Any) -> int:
        """See :meth:`ServerDirectory.reload`."""
        return self.directory.reload(self.name, program_or_path)

    def drain(self, timeout: float = 30.0) -> DrainReport:
        """See :meth:`ServerDirectory.drain`."""
        return self.directory.drain(self.name, timeout)

    def stop(self) -> None:
        """See :meth:`ServerDirectory.stop`."""
        self.directory.stop(self.name)

    def stats(self) -> ServerStats:
        """See :meth:`ServerDirectory.stats`."""
        return self.directory.stats(self.name)

    def __repr__(self) -> str:
        return f"<ServerHandle {self.name!r}>"


def _supervisor_down(state: ServerState, down: Down) -> None:
    # Runs in the dying supervisor's thread: quick, never blocks.
    state.close(f"its supervisor stopped ({down.reason!r})")


def _answered(stats: ServerStats) -> int:
    return stats.completed + stats.failed


def _stop_quietly(ref: pykka.ActorRef[Any]) -> None:
    """Ask an orphaned server actor to stop, without waiting."""
    with contextlib.suppress(pykka.ActorDeadError):
        ref.stop(block=False)


def _load_into_copy(name: str, current: Any, path: Path) -> Any:
    if not path.exists():
        raise UsageError(
            f"reload({name!r}, {str(path)!r}): no such file; pass the JSON file written by "
            "program.save(path), or a program instance"
        )
    copy_fn = getattr(current, "deepcopy", None)
    if not callable(copy_fn) or not callable(getattr(current, "load", None)):
        raise UsageError(
            f"reload({name!r}, {str(path)!r}): the served program "
            f"({type(current).__name__}) has no deepcopy()/load(), so a saved state cannot "
            "be loaded into it; pass a program instance instead"
        )
    new = copy_fn()
    new.load(path)
    return new

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
one stopped: no queued request is lost, none is answered twice. The directory
also remembers what is served, so a restart of the supervisor itself brings
every wanted server back (:meth:`ServerDirectory.restore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from dspex.actors._server_actor import ProgramServer, server_key
from dspex.actors._server_handle import DrainReport, ServerHandle
from dspex.actors._server_program import load_into_copy
from dspex.actors._server_requests import (
    AsyncCall,
    Emitter,
    Execute,
    Served,
    ServerFuture,
    ServerStats,
)
from dspex.actors._server_state import ServerState
from dspex.errors import ActorStoppedError, RegistryError, SupervisionError, UsageError
from dspex.supervision import (
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


@dataclass(slots=True)
class _Entry:
    """A running server: its state, the desired-state row it runs, its supervisor watch."""

    state: ServerState
    served: Served
    supervisor_urn: str = ""
    watch: MonitorRef | None = None


class ServerDirectory:
    """The program servers of one runtime, by name; every method is callable from any thread.

    ``supervisor`` returns the current ProgramServers dynamic supervisor (a
    ref is accepted too). ``execute`` is the default run executor of new
    servers (see :data:`~dspex.actors._server_state.Execute`); ``runtime``
    is what requests' program runs see as their runtime.

    The directory also keeps the *desired state*: a :class:`Served` row per
    name from ``serve`` until ``stop``/``drain``, updated by ``reload``. It
    outlives the supervisor: whoever starts a new incarnation of it calls
    :meth:`restore`, which serves every row again. ``restores()`` tells whether
    that will happen (e.g. the runtime is running); while it does, callers of
    a restarting name wait up to ``restore_wait`` seconds for it to come back.
    Without ``restores`` servers die with their supervisor, as in OTP.
    """

    def __init__(
        self,
        supervisor: Callable[[], pykka.ActorRef[Any]] | pykka.ActorRef[Any],
        registry: Registry,
        *,
        telemetry: Emitter | None = None,
        runtime: Any = None,
        execute: Execute | None = None,
        restores: Callable[[], bool] | None = None,
        restore_wait: float = 10.0,
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
        self.restore_wait = restore_wait
        self._restores = restores
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # an entry came or a row went
        self._entries: dict[str, _Entry] = {}
        self._desired: dict[str, Served] = {}

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
        served = Served(
            name,
            program,
            version=1,
            max_concurrency=max_concurrency,
            queue_limit=queue_limit,
            execute=execute,
            restart=restart,
            shutdown=shutdown,
            start_timeout=start_timeout,
        )
        with self._lock:
            if name in self._entries or name in self._desired:
                raise UsageError(
                    f"a program server named {name!r} already runs (or is restarting); reload "
                    f"it with reload({name!r}, program), or stop/drain it before serving it again"
                )
            entry = self._new_entry(served)  # validates the limits and the program
            self._entries[name] = entry
            self._desired[name] = served
        try:
            self._launch(entry, self._supervisor())
        except BaseException:
            with self._lock:
                if self._desired.get(name) is served:
                    del self._desired[name]
            entry.state.close("it failed to start")
            raise
        self._emit(
            "program.server.started",
            server=name,
            max_concurrency=max_concurrency,
            queue_limit=queue_limit,
        )
        return ServerHandle(self, name)

    def restore(self, supervisor: pykka.ActorRef[Any]) -> tuple[str, ...]:
        """Serve every wanted program again under ``supervisor``, a new incarnation.

        Runs in the thread that started ``supervisor`` (for a runtime: the
        root's, before the new incarnation is registered, so no ``serve`` races
        it). Each server comes back under its name with its options and latest
        reloaded program and version; one still bound to the old incarnation
        is closed first (its queued requests get an ``ActorStoppedError``
        saying it restarts). One that fails to start is logged and forgotten.
        """
        with self._lock:
            wanted = sorted(self._desired)
        restored, failed = [], []
        for name in wanted:
            with self._lock:
                served = self._desired.get(name)
                old = self._entries.get(name)
                here = old is not None and old.supervisor_urn == supervisor.actor_urn
                if served is None or here:
                    continue  # stopped meanwhile, or already serving under this incarnation
                entry = self._new_entry(served)
                self._entries[name] = entry
                self._changed.notify_all()
            if old is not None:
                if old.watch is not None:
                    demonitor(old.watch)
                old.state.close("its supervisor restarted", restarting=True)
            try:
                self._launch(entry, supervisor)
            except Exception:
                log.exception("program servers: restoring %r failed; it is no longer served", name)
                with self._lock:
                    if self._desired.get(name) is entry.served:
                        del self._desired[name]
                    self._changed.notify_all()
                entry.state.close("it failed to restart")
                failed.append(name)
            else:
                restored.append(name)
        if restored or failed:
            self._emit(
                "program.server.restored",
                servers=tuple(restored),
                failed=tuple(failed),
                supervisor=supervisor.actor_urn,
            )
        return tuple(restored)

    # -- requests ------------------------------------------------------------------------

    def ask(self, name: str, /, **inputs: Any) -> ServerFuture:
        """Send ``inputs`` to server ``name``; the future resolves to the program's result.

        Raises ``OverloadedError`` at once when the server is full, and
        ``ActorStoppedError`` when it is draining or stopped.
        """
        future = ServerFuture(name)
        self._state(name).submit(inputs, future)
        return future

    def start_call(self, name: str, inputs: Mapping[str, Any], /) -> AsyncCall:
        """Admit ``inputs`` to server ``name`` for a caller on the running loop (or raise).

        ``acall``'s first half, for a caller that must admit before its first
        await (``Runtime.stream``): a program with ``aforward`` runs as a task on
        this loop, others in a worker thread; await the returned call, or
        ``cancel()`` it. A server in restart is waited for here (blocking).
        """
        with self._lock:
            entry = self._entries.get(name)
        state = entry.state if entry is not None else self._state(name)
        return state.start_call(inputs)

    async def acall(self, name: str, /, **inputs: Any) -> Any:
        """Send ``inputs`` to server ``name`` and await the result on the running loop.

        Like ``await ask(...)``, but a program with ``aforward`` runs as a task
        on this loop (no worker thread, no thread hop), and it never blocks the
        loop: while the server restarts, the wait for it happens in a thread.
        Cancelling the awaiting task cancels the request (see ``ServerState.acall``).
        """
        return await (await self.astate(name)).start_call(inputs)

    async def astate(self, name: str, /) -> ServerState:
        """Server ``name``'s state, awaited: a restart is waited for off the loop."""
        with self._lock:
            entry = self._entries.get(name)
        if entry is not None:
            return entry.state
        return await _off_loop(functools.partial(self._state, name))

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
        the current program (``program.deepcopy().load(path)``). The new
        program is also what a restart of the supervisor serves again.
        """
        if isinstance(program_or_path, str | os.PathLike):
            new = load_into_copy(name, self._state(name).program, Path(program_or_path))
        else:
            new = program_or_path
        # Swap and desired state change together, so a concurrent restore
        # serves either the old row before the swap or sees the new entry.
        with self._changed:
            entry = self._current(name)
            version = entry.state.swap(new)
            served = dataclasses.replace(entry.served, program=new, version=version)
            if self._desired.get(name) is entry.served:
                self._desired[name] = served
            entry.served = served
        self._emit("program.server.reloaded", server=name, version=version)
        return version

    def stop_accepting(self, name: str | None = None) -> None:
        """Refuse new requests on server ``name`` (None: on every server)."""
        for state in self._states(name):
            state.stop_accepting()

    def drain(self, name: str, timeout: float = 30.0) -> DrainReport:
        """Stop accepting, finish queued and executing requests up to ``timeout`` s, stop.

        Requests not answered by the deadline get ``ActorStoppedError``. A
        drained server is no longer wanted: a supervisor restart leaves it out.
        """
        _check_timeout(timeout)
        return self._drain(self._unwant(name), timeout)

    def drain_all(self, timeout: float = 30.0) -> DrainReport:
        """:meth:`drain` every server at once, under one shared deadline."""
        _check_timeout(timeout)
        return self._drain(self._unwant(None), timeout)

    def stop(self, name: str) -> None:
        """Stop server ``name`` now: queued requests get an error, executing ones finish.

        It is no longer wanted: a restart of the supervisor does not bring it back.
        """
        for state in self._unwant(name):
            self._terminate(state, "stopped")

    def close_all(self) -> None:
        """Stop every server now (for a runtime's shutdown)."""
        for state in self._unwant(None):
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

    def wanted(self) -> dict[str, Served]:
        """The desired state: what :meth:`restore` would serve, by name."""
        with self._lock:
            return dict(self._desired)

    def handle(self, name: str) -> ServerHandle:
        """A handle bound to server ``name`` (checked to exist)."""
        self._state(name)
        return ServerHandle(self, name)

    # -- internals -----------------------------------------------------------------------

    def _new_entry(self, served: Served) -> _Entry:
        state = ServerState(
            served.name,
            served.program,
            max_concurrency=served.max_concurrency,
            queue_limit=served.queue_limit,
            execute=served.execute or self.execute,
            telemetry=self.telemetry,
            runtime=self.runtime,
            on_closed=self._forget,
            version=served.version,
            will_restart=self._restoring,
        )
        return _Entry(state, served)

    def _launch(self, entry: _Entry, supervisor: pykka.ActorRef[Any]) -> None:
        served, state = entry.served, entry.state
        entry.supervisor_urn = supervisor.actor_urn
        # A dynamic supervisor's children die with it: close the state then.
        entry.watch = monitor(supervisor, functools.partial(_supervisor_down, state))
        start_child(
            supervisor,
            ChildSpec(
                id=server_key(served.name),
                start=functools.partial(ProgramServer.start, state),
                restart=served.restart,
                shutdown=served.shutdown,
                name=server_key(served.name),
                start_timeout=served.start_timeout,
            ),
        )

    def _restoring(self) -> bool:
        return self._restores is not None and self._restores()

    def _current(self, name: str) -> _Entry:
        """The running entry for ``name``, waiting (bounded) while it restarts; lock held."""
        deadline: float | None = None
        while True:
            entry = self._entries.get(name)
            if entry is not None:
                return entry
            if name not in self._desired or not self._restoring():
                known = sorted(self._entries)
                raise RegistryError(
                    f"no program server named {name!r} is running (running: {known}); "
                    f"start it with serve({name!r}, program)"
                )
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.restore_wait
            if now >= deadline:
                raise ActorStoppedError(
                    f"program server {name!r} is restarting (its supervisor restarted) and did "
                    f"not come back within restore_wait={self.restore_wait}s; retry later"
                )
            self._changed.wait(deadline - now)

    def _state(self, name: str) -> ServerState:
        with self._changed:
            return self._current(name).state

    def _states(self, name: str | None) -> list[ServerState]:
        if name is not None:
            return [self._state(name)]
        with self._lock:
            return [entry.state for entry in self._entries.values()]

    def _unwant(self, name: str | None) -> list[ServerState]:
        """Drop ``name`` (None: all) from the desired state; the states to stop now."""
        with self._changed:
            if name is None:
                states = [entry.state for entry in self._entries.values()]
                self._desired.clear()
            else:  # a wanted name that is restarting has no state to stop yet
                entry = self._entries.get(name)
                if entry is None and name not in self._desired:
                    entry = self._current(name)  # raises: no such server
                states = [] if entry is None else [entry.state]
                self._desired.pop(name, None)
            self._changed.notify_all()
        return states

    def _forget(self, state: ServerState) -> None:
        with self._lock:
            entry = self._entries.get(state.name)
            if entry is None or entry.state is not state:
                return  # already replaced by a restored server
            del self._entries[state.name]
            if not state.restarting and self._desired.get(state.name) is entry.served:
                del self._desired[state.name]  # gone for good: nothing will restore it
            self._changed.notify_all()
        if entry.watch is not None:
            demonitor(entry.watch)

    def _drain(self, states: list[ServerState], timeout: float) -> DrainReport:
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


async def _off_loop(fn: Callable[[], ServerState]) -> ServerState:
    """``fn()`` in a thread of its own, awaited (rare: a restart's bounded wait)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[ServerState] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(value)
        else:
            done.set_exception(error)

    def wait() -> None:
        try:
            value, error = fn(), None
        except BaseException as exc:  # handed to the awaiting task
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=wait, name="dspex-server-wait", daemon=True).start()
    return await done


def _supervisor_down(state: ServerState, down: Down) -> None:
    # Runs in the dying supervisor's thread: quick, never blocks.
    state.orphaned(f"its supervisor stopped ({down.reason!r})")


def _check_timeout(timeout: object) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise UsageError(f"drain(timeout={timeout!r}): must be a number of seconds >= 0")


def _answered(stats: ServerStats) -> int:
    return stats.completed + stats.failed


def _stop_quietly(ref: pykka.ActorRef[Any]) -> None:
    """Ask an orphaned server actor to stop, without waiting."""
    with contextlib.suppress(pykka.ActorDeadError):
        ref.stop(block=False)

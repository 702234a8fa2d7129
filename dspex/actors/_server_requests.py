"""The messages and plain types of program servers, and the default run executor.

A request is admitted in the caller's thread, carried as a frozen
:class:`Request` (with the caller's copied ``contextvars``), and answered
through a :class:`ServerFuture`. :func:`inline_executor` is how a request runs
by default: in a server worker thread, as a program run.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Protocol

from dspex.actors._program_run import RunContext, activate_run, wrap_program_error
from dspex.supervision import Restart

__all__ = [
    "AsyncCall",
    "Dispatch",
    "Emitter",
    "Execute",
    "LoopReply",
    "Reply",
    "Request",
    "Served",
    "ServerFuture",
    "ServerStats",
    "Silent",
    "inline_executor",
]

Execute = Callable[[Any, Mapping[str, Any], contextvars.Context], Any]
"""``execute(program, inputs, context) -> result``: runs one request in a worker thread."""


class Emitter(Protocol):
    """Where server events go (a :class:`~dspex.actors.TelemetryEmitter` fits)."""

    def emit(self, name: str, **data: Any) -> None: ...


class Silent:
    """The emitter used when a server has no telemetry."""

    def emit(self, name: str, **data: Any) -> None:
        """Drop the event (no telemetry configured)."""


class ServerFuture(Future[Any]):
    """The reply to ``ask``: a ``concurrent.futures.Future`` that knows its request.

    ``get(timeout)`` is ``result(timeout)``, spelled like a pykka future. It is
    also awaitable: ``await rt.ask(name, **inputs)`` on an event loop waits with
    no thread (the server's worker wakes the loop when it answers), and
    cancelling the awaiting task cancels a request that has not started yet.
    """

    def __init__(self, server: str, request_id: int = 0) -> None:
        super().__init__()
        self.server = server
        self.request_id = request_id

    def get(self, timeout: float | None = None) -> Any:
        """The prediction, or raise the request's (wrapped) error."""
        return self.result(timeout)

    def __await__(self) -> Generator[Any, None, Any]:
        """Await the prediction on the running event loop (``asyncio.wrap_future``)."""
        return asyncio.wrap_future(self).__await__()

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<ServerFuture {self.server!r} #{self.request_id} {state}>"


class Reply(Protocol):
    """Where a request's answer goes: a :class:`ServerFuture` or a :class:`LoopReply`."""

    request_id: int

    def set_running_or_notify_cancel(self) -> bool: ...

    def set_result(self, result: Any) -> None: ...

    def set_exception(self, exception: BaseException | None) -> None: ...

    def cancel(self) -> bool: ...

    def cancelled(self) -> bool: ...


_PENDING, _RUNNING, _CANCELLED, _DONE = range(4)


class LoopReply:
    """The reply of a request whose caller awaits it on an event loop.

    An ``asyncio.Future`` of that loop with a concurrent Future's states
    (pending, running, cancelled, done), settable from any thread: directly
    on the loop's thread (a request run as a task there: no wake-up through
    the loop's self-pipe), through ``call_soon_threadsafe`` from others.
    ``cancel`` runs on the loop's thread.
    """

    __slots__ = ("_lock", "_state", "_thread", "future", "loop", "request_id")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self._thread = threading.get_ident()  # made on the loop's thread
        self._lock = threading.Lock()
        self._state = _PENDING
        self.request_id = 0

    def set_running_or_notify_cancel(self) -> bool:
        with self._lock:
            if self._state == _CANCELLED:
                return False
            self._state = _RUNNING
            return True

    def cancel(self) -> bool:
        """Cancel if not started yet (True); False once it runs or is answered."""
        with self._lock:
            if self._state != _PENDING:
                return self._state == _CANCELLED
            self._state = _CANCELLED
        self.future.cancel()
        return True

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def set_result(self, result: Any) -> None:
        self._settle(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        self._settle(None, exception)

    def _settle(self, result: Any, error: BaseException | None) -> None:
        with self._lock:
            if self._state in (_CANCELLED, _DONE):
                raise InvalidStateError(f"request {self.request_id} was already answered")
            self._state = _DONE
        if threading.get_ident() == self._thread:
            self._apply(result, error)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody awaits it
                self.loop.call_soon_threadsafe(self._apply, result, error)

    def _apply(self, result: Any, error: BaseException | None) -> None:
        if self.future.done():  # its awaiting caller cancelled it
            return
        if error is None:
            self.future.set_result(result)
        else:
            self.future.set_exception(error)


class AsyncCall:
    """A request admitted for a caller on an event loop: await it, or ``cancel()`` it.

    ``cancel`` may be called from the loop's thread only; the awaiting
    coroutine then gets ``CancelledError`` (its own task is not cancelled).
    """

    __slots__ = ("_cancel_task", "reply")

    def __init__(self, reply: LoopReply, cancel_task: Callable[[], None]) -> None:
        self.reply = reply
        self._cancel_task = cancel_task

    def cancel(self) -> None:
        """Cancel the request: a queued one never runs, a running task is cancelled."""
        self.reply.future.cancel()
        self._drop()

    def _drop(self) -> None:
        if not self.reply.cancel():  # started already: stop its task, if it has one
            self._cancel_task()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._wait().__await__()

    async def _wait(self) -> Any:
        try:
            return await self.reply.future
        except asyncio.CancelledError:
            self._drop()  # the awaiting task was cancelled: the request goes too
            raise


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Nudge to the server actor: queued requests may have a free worker now."""


@dataclass(frozen=True, slots=True)
class Request:
    """One admitted request; ``reply`` is None for a fire-and-forget ``tell``."""

    id: int
    inputs: Mapping[str, Any]
    reply: Reply | None
    context: contextvars.Context
    submitted: float  # time.monotonic()
    # The event loop the caller awaits the reply on (``acall``): a program
    # with ``aforward`` then runs as a task there, with no worker thread.
    loop: asyncio.AbstractEventLoop | None = None


@dataclass(frozen=True, slots=True)
class Served:
    """What ``serve`` was asked to run under ``name``: one row of the desired state.

    The directory keeps it while the server is wanted (``reload`` replaces
    ``program`` and ``version``; ``stop``/``drain`` remove it), so a new
    incarnation of the ProgramServers supervisor can serve it again as it was.
    """

    name: str
    program: Any
    version: int
    max_concurrency: int
    queue_limit: int
    execute: Execute | None
    restart: Restart
    shutdown: float
    start_timeout: float


@dataclass(frozen=True, slots=True)
class ServerStats:
    """A snapshot of one program server (read without asking its actor).

    ``admitted`` = ``executing`` + ``queued`` (+ answers being delivered);
    ``rejected`` counts requests refused as overloaded, ``expired`` those
    answered with an error because the server stopped or a drain deadline
    passed, ``restarts`` the crashes its actor recovered from.
    """

    name: str
    version: int
    max_concurrency: int
    queue_limit: int
    executing: int
    queued: int
    admitted: int
    completed: int
    failed: int
    rejected: int
    expired: int
    restarts: int
    accepting: bool
    closed: bool


def inline_executor(
    *, label: str, runtime: Any = None, cancelled: threading.Event | None = None
) -> Execute:
    """The default ``execute``: run the program in the worker thread as a program run.

    A :class:`RunContext` is made current inside a copy of the caller's
    context, so nested modules run inline (no ProgramRun actor per request)
    and find ``runtime``. ``cancelled`` (shared by the server) lets a drain
    deadline stop runs at their next cooperative check.
    """
    stop = cancelled if cancelled is not None else threading.Event()

    def execute(program: Any, inputs: Mapping[str, Any], context: contextvars.Context) -> Any:
        run = RunContext(label=label, runtime=runtime, cancelled=stop)
        try:
            return context.copy().run(_run_inline, run, program, inputs)
        except Exception as exc:
            raise wrap_program_error(exc, run) from exc

    return execute


def _run_inline(run: RunContext, program: Any, inputs: Mapping[str, Any]) -> Any:
    activate_run(run)  # inside a fresh context copy: nothing to reset
    run.check_deadline()
    return program(**inputs)

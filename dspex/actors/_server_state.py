"""What a program server keeps across restarts: its queue, its workers, its program.

A :class:`~dspex.actors.ProgramServer` actor is only the dispatcher. Everything
that must survive a crash of that actor lives here, in one :class:`ServerState`
created by ``serve`` and handed to every incarnation:

- the admitted count, checked and bumped in the *caller's* thread under one
  lock, so a full server refuses work at once (no round trip to the actor);
- the queue of admitted requests not yet started;
- the requests executing, each in a thread of the state's own worker pool, so
  they keep running while the actor restarts and their futures still resolve;
- the current program and its version (hot reload swaps them atomically).

Exactly-once answers: whoever removes a request from the queue or from the
executing table, under the lock, is the one that answers it. A worker whose
request was already answered (a drain deadline passed) drops its late result.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pykka

from dspex.actors._server_program import (
    check_limit,
    check_program,
)
from dspex.actors._server_requests import (
    Dispatch,
    Emitter,
    Execute,
    Reply,
    Request,
    ServerStats,
    Silent,
    inline_executor,
)
from dspex.actors._server_run import RequestRunner
from dspex.errors import ActorStoppedError, OverloadedError

__all__ = ["ServerState"]

log = logging.getLogger("dspex.servers")


class ServerState(RequestRunner):
    """Queue, admitted count, workers and program of one named server (any thread).

    Created by ``serve``; every actor incarnation calls :meth:`adopt` on start.
    ``capacity`` is ``max_concurrency + queue_limit`` admitted requests.
    """

    def __init__(
        self,
        name: str,
        program: Any,
        *,
        max_concurrency: int,
        queue_limit: int,
        execute: Execute | None = None,
        telemetry: Emitter | None = None,
        runtime: Any = None,
        on_closed: Callable[[ServerState], None] | None = None,
        version: int = 1,
        will_restart: Callable[[], bool] | None = None,
    ) -> None:
        check_limit(name, "max_concurrency", max_concurrency, 1)
        check_limit(name, "queue_limit", queue_limit, 0)
        check_program(name, program)
        self.name = name
        self.max_concurrency = max_concurrency
        self.queue_limit = queue_limit
        self.capacity = max_concurrency + queue_limit
        self.cancelled = threading.Event()
        self.execute: Execute = execute or inline_executor(
            label=f"server:{name}", runtime=runtime, cancelled=self.cancelled
        )
        # Only the default executor may be bypassed by awaiting a program on the caller's loop.
        self._native = execute is None
        self.runtime = runtime
        self.telemetry: Emitter = telemetry if telemetry is not None else Silent()
        self._on_closed = on_closed
        # True when an actor stop the directory did not order means the
        # ProgramServers supervisor is restarting and this server will be served again.
        self._will_restart = will_restart
        self._restarting = False
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._pending: deque[Request] = deque()
        self._executing: dict[int, Request] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}  # executing requests awaited natively
        self._unwanted: set[int] = set()  # cancelled between dispatch and their task's start
        self._admitted = 0
        self._program = program
        self._version = version
        self._accepting = True
        self._closed = False
        self._nudged = False
        self._ref: pykka.ActorRef[Any] | None = None
        self._incarnations = 0
        self._completed = self._failed = self._rejected = self._expired = 0
        self._workers = ThreadPoolExecutor(
            max_concurrency, thread_name_prefix=f"dspex-server-{name}"
        )

    # -- callers' threads ------------------------------------------------------------

    def submit(
        self,
        inputs: Mapping[str, Any],
        reply: Reply | None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Request:
        """Admit a request or raise at once (:class:`OverloadedError` when full).

        With a free worker and nobody queued, the request starts here, in the
        caller's thread, without a round trip through the dispatcher actor.
        ``loop``: the running loop of a caller that awaits the reply (``acall``).
        """
        context = contextvars.copy_context()
        with self._cond:
            if not self._accepting:
                raise self._refusal()
            if self._admitted >= self.capacity:
                self._rejected += 1
                raise OverloadedError(self._full_message())
            self._admitted += 1
            request = Request(next(self._ids), dict(inputs), reply, context, time.monotonic(), loop)
            if reply is not None:
                reply.request_id = request.id
            now = self._start_now(request)
            wake = None
            if now is None:
                self._pending.append(request)
                wake = self._wake_target()
        _nudge(wake)
        if now is not None:
            self._launch(request, *now, here=True)
        return request

    def _start_now(self, request: Request) -> tuple[Any, int] | None:
        # Lock held. A free worker and an empty queue: the caller starts it (FIFO kept).
        if (
            self._pending
            or self._closed
            or self._ref is None
            or len(self._executing) >= self.max_concurrency
        ):
            return None
        if request.reply is not None:
            request.reply.set_running_or_notify_cancel()  # just made: cannot be cancelled yet
        self._executing[request.id] = request
        return self._program, self._version

    def _full_message(self) -> str:
        # Called with the lock held. Admitted requests fill the run slots first:
        # one admitted a moment ago that no worker has picked up yet holds a run
        # slot, not a queue place, so the queue count never exceeds queue_limit.
        in_slots = min(self._admitted, self.max_concurrency)
        return (
            f"program server {self.name!r} is full: {in_slots} request(s) hold its run slots "
            f"(max_concurrency={self.max_concurrency}; {len(self._executing)} executing now) "
            f"and {self._admitted - in_slots} wait in its queue (queue_limit={self.queue_limit}); "
            "retry later, or serve it with a higher max_concurrency or queue_limit"
        )

    def swap(self, program: Any) -> int:
        """Make ``program`` the one new dispatches use; returns its version."""
        check_program(self.name, program)
        with self._cond:
            if self._closed:
                raise self._refusal()
            self._program = program
            self._version += 1
            return self._version

    @property
    def program(self) -> Any:
        """The program new requests will run on."""
        with self._cond:
            return self._program

    def stop_accepting(self) -> None:
        """Refuse new requests from now on; queued and executing ones carry on."""
        with self._cond:
            self._accepting = False

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every admitted request has been answered; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._admitted == 0, max(0.0, timeout))

    def expire(self, why: str) -> int:
        """Answer every unanswered request with an error now; returns how many.

        Runs still executing are asked to stop at their next check; their
        late results are dropped (each request is answered once).
        """
        self.cancelled.set()
        with self._cond:
            stale = list(self._pending) + list(self._executing.values())
            self._pending.clear()
            self._executing.clear()
            self._expired += len(stale)
            tasks = [(t.get_loop(), t) for t in self._tasks.values()]
            self._tasks.clear()
        for loop, task in tasks:  # tasks can be stopped, unlike threads
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(task.cancel)
        for request in stale:
            self._deliver(
                request,
                None,
                ActorStoppedError(
                    f"program server {self.name!r} stopped ({why}) before request "
                    f"{request.id} finished; give the drain a longer timeout"
                ),
                0,
            )
        self._release(len(stale))
        return len(stale)

    def close(self, why: str, *, restarting: bool = False) -> None:
        """Stop for good: queued requests get an error, executing ones finish (idempotent).

        ``restarting``: the server is being served again under the same name
        (its supervisor restarted), which the errors tell the callers.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._restarting = restarting
            self._accepting = False
            dropped = list(self._pending)
            self._pending.clear()
            self._expired += len(dropped)
        for request in dropped:
            if restarting:
                message = (
                    f"program server {self.name!r} is restarting ({why}) and dropped request "
                    f"{request.id} before it started; resend it: the server is being served "
                    "again under the same name"
                )
            else:
                message = (
                    f"program server {self.name!r} stopped ({why}) before request "
                    f"{request.id} started; serve it again and resend"
                )
            self._deliver(request, None, ActorStoppedError(message), 0)
        self._release(len(dropped))
        self._workers.shutdown(wait=False)
        if self._on_closed is not None:
            self._on_closed(self)

    def orphaned(self, why: str) -> None:
        """Close because the actor or its supervisor stopped without the directory asking."""
        restarting = self._will_restart is not None and self._will_restart()
        self.close(why, restarting=restarting)

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    @property
    def restarting(self) -> bool:
        """Closed because its supervisor restarts: the directory serves it again."""
        with self._cond:
            return self._restarting

    @property
    def ref(self) -> pykka.ActorRef[Any] | None:
        """The live actor incarnation, if any."""
        with self._cond:
            return self._ref

    def stats(self) -> ServerStats:
        with self._cond:
            return ServerStats(
                name=self.name,
                version=self._version,
                max_concurrency=self.max_concurrency,
                queue_limit=self.queue_limit,
                executing=len(self._executing),
                queued=len(self._pending),
                admitted=self._admitted,
                completed=self._completed,
                failed=self._failed,
                rejected=self._rejected,
                expired=self._expired,
                restarts=max(0, self._incarnations - 1),
                accepting=self._accepting,
                closed=self._closed,
            )

    # -- the server actor's thread ---------------------------------------------------

    def adopt(self, ref: pykka.ActorRef[Any]) -> bool:
        """A new incarnation takes over; False if the server is closed (it should stop)."""
        with self._cond:
            if self._closed:
                return False
            self._ref = ref
            self._incarnations += 1
            # A nudge sent to a dead predecessor is lost: start from a clean slate.
            self._nudged = False
        return True

    def detach(self, ref: pykka.ActorRef[Any]) -> None:
        """The incarnation ``ref`` died; nudges wait for the next one."""
        with self._cond:
            if self._ref is ref:
                self._ref = None

    def dispatch(self) -> None:
        """Start queued requests on free workers, each with the program current now."""
        while True:
            with self._cond:
                self._nudged = False
                batch: list[tuple[Request, Any, int]] = []
                while (
                    self._pending
                    and not self._closed
                    and len(self._executing) < self.max_concurrency
                ):
                    request = self._pending.popleft()
                    self._executing[request.id] = request
                    batch.append((request, self._program, self._version))
            if not batch:
                return
            cancelled = 0
            for request, program, version in batch:
                if request.reply is not None and not request.reply.set_running_or_notify_cancel():
                    cancelled += self._claim(request)
                    continue
                self._launch(request, program, version, here=False)
            if cancelled:
                self._release(cancelled)  # callers cancelled: those slots are free again
                continue
            return

    # -- internals -------------------------------------------------------------------------

    def _release(self, n: int) -> None:
        """``n`` answered requests leave; wake the dispatcher and any drain waiting."""
        if n == 0:
            return
        with self._cond:
            self._admitted -= n
            self._cond.notify_all()
            wake = self._wake_target()
        _nudge(wake)

    def _wake_target(self) -> pykka.ActorRef[Any] | None:
        # Called with the lock held; at most one nudge is in flight at a time.
        if self._nudged or self._ref is None or not self._pending or self._closed:
            return None
        if len(self._executing) >= self.max_concurrency:
            return None
        self._nudged = True
        return self._ref

    def _refusal(self) -> ActorStoppedError:
        if self._restarting:
            return ActorStoppedError(
                f"program server {self.name!r} is restarting (its supervisor restarted); "
                "resend the request: the server is being served again under the same name"
            )
        if self._closed:
            return ActorStoppedError(
                f"program server {self.name!r} has stopped; serve it again to send it requests"
            )
        return ActorStoppedError(
            f"program server {self.name!r} is draining (stopping) and accepts no new requests; "
            "send them to another server or after it is served again"
        )


def _nudge(ref: pykka.ActorRef[Any] | None) -> None:
    if ref is None:
        return
    # A dead incarnation's successor dispatches when it adopts the state.
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(Dispatch())

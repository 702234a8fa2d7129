"""How an admitted request runs and is answered: a worker thread, or a task on its caller's loop.

:class:`RequestRunner` is the base of :class:`~dspex.actors._server_state.ServerState`,
which owns the queue and the slots; this part starts an executing request
(``_launch``), runs it (``_work`` in a worker thread; ``_run_task`` on the
loop of a caller that awaits it, for a program with ``aforward``) and answers
it exactly once (``_finish``: whoever claims it from the executing table).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import InvalidStateError, ThreadPoolExecutor
from typing import Any

from dspex.actors._program_run import RunContext, activate_run, wrap_program_error
from dspex.actors._server_program import as_program_error, original_error
from dspex.actors._server_requests import AsyncCall, Emitter, Execute, LoopReply, Reply, Request
from dspex.errors import ActorStoppedError

__all__ = ["RequestRunner"]

log = logging.getLogger("dspex.servers")


class RequestRunner:
    """Running and answering requests; :class:`ServerState` provides the state below."""

    name: str
    runtime: Any
    execute: Execute
    cancelled: threading.Event
    telemetry: Emitter
    _native: bool  # the default executor: a program with aforward may run on the caller's loop
    _cond: threading.Condition
    _executing: dict[int, Request]
    _tasks: dict[int, asyncio.Task[None]]  # executing requests run as tasks
    _unwanted: set[int]  # cancelled between dispatch and their task's start
    _workers: ThreadPoolExecutor
    _completed: int
    _failed: int

    def submit(
        self,
        inputs: Mapping[str, Any],
        reply: Reply | None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Request:
        raise NotImplementedError

    def _release(self, n: int) -> None:
        raise NotImplementedError

    # -- the caller's event loop -------------------------------------------------------

    def start_call(self, inputs: Mapping[str, Any]) -> AsyncCall:
        """Admit ``inputs`` now (or raise) for a caller on the running loop; await the result.

        A program with ``aforward`` (``Predict``, ``ChainOfThought``...) runs as a
        task on this loop; others in a worker thread. ``cancel()`` (or cancelling
        the awaiting task) cancels the request: a queued one never runs, a
        running task is cancelled (its LM call with it); a worker thread runs on.
        """
        loop = asyncio.get_running_loop()
        reply = LoopReply(loop)
        request = self.submit(inputs, reply, loop=loop)
        return AsyncCall(reply, functools.partial(self._cancel_task, request.id))

    def _cancel_task(self, request_id: int) -> None:
        # On the caller's loop, once its request has started (its reply can't be cancelled).
        with self._cond:
            task = self._tasks.get(request_id)
            if task is None and request_id in self._executing:
                self._unwanted.add(request_id)  # its task is about to start: it won't
        if task is not None:
            task.cancel()

    def _launch(self, request: Request, program: Any, version: int, *, here: bool) -> None:
        """Start an executing request: a task on its caller's loop, or a worker thread.

        ``here``: called in the caller's thread (so on its loop, if it has one).
        """
        loop = request.loop
        if loop is not None and self._native and callable(getattr(program, "aforward", None)):
            try:
                if here:
                    self._start_task(request, program, version)
                else:
                    loop.call_soon_threadsafe(self._start_task, request, program, version)
                return
            except RuntimeError:  # the caller's loop is closed: nobody waits for the answer
                pass
        else:
            try:
                self._workers.submit(self._work, request, program, version)
                return
            except RuntimeError:  # the pool shut down: the server was closed meanwhile
                pass
        if self._claim(request):
            stopped = ActorStoppedError(f"program server {self.name!r} was stopped")
            self._deliver(request, None, stopped, version)
            self._release(1)

    def _start_task(self, request: Request, program: Any, version: int) -> None:
        """Run ``program.acall`` as a task on this loop, under its own RunContext."""
        assert request.loop is not None
        with self._cond:
            unwanted = request.id in self._unwanted
            self._unwanted.discard(request.id)
        if unwanted:
            cancelled = ActorStoppedError(
                f"program server {self.name!r}: request {request.id} was cancelled by its caller"
            )
            self._finish(request, None, cancelled, version, 0.0)
            return
        run = RunContext(
            label=f"server:{self.name}", runtime=self.runtime, cancelled=self.cancelled
        )
        request.context.run(activate_run, run)  # the request's own copy of the caller's context
        task = request.loop.create_task(
            self._run_task(request, program, version, run), context=request.context
        )
        with self._cond:
            if request.id in self._executing:  # else already answered (expired): let it run out
                self._tasks[request.id] = task

    async def _run_task(
        self, request: Request, program: Any, version: int, run: RunContext
    ) -> None:
        label = f"server:{self.name}"
        self._emit("program.run.start", label=label, request_id=request.id)
        started = time.perf_counter()
        value: Any = None
        error: BaseException | None = None
        try:
            run.check_deadline()
            value = await program.acall(**request.inputs)
        except asyncio.CancelledError:  # its caller left, or a drain deadline expired it
            error = ActorStoppedError(
                f"program server {self.name!r}: request {request.id} was cancelled while running"
            )
        except Exception as exc:
            error = as_program_error(wrap_program_error(exc, run), self.name, request.id)
        except BaseException as exc:  # user code; the loop must live on
            error = as_program_error(exc, self.name, request.id)
        with self._cond:
            self._tasks.pop(request.id, None)
        self._finish(request, value, error, version, (time.perf_counter() - started) * 1000)

    # -- worker threads ----------------------------------------------------------------

    def _work(self, request: Request, program: Any, version: int) -> None:
        label = f"server:{self.name}"
        self._emit("program.run.start", label=label, request_id=request.id)
        started = time.perf_counter()
        value: Any = None
        error: BaseException | None = None
        try:
            value = self.execute(program, request.inputs, request.context)
        except BaseException as exc:  # user code; never let a worker thread die
            error = as_program_error(exc, self.name, request.id)
        self._finish(request, value, error, version, (time.perf_counter() - started) * 1000)

    def _finish(
        self,
        request: Request,
        value: Any,
        error: BaseException | None,
        version: int,
        duration_ms: float,
    ) -> None:
        """Answer a request that ran (unless a drain deadline answered it already)."""
        label = f"server:{self.name}"
        if not self._claim(request):
            log.info(
                "program server %r: request %d finished after it was answered (drain "
                "deadline); its late result is dropped",
                self.name,
                request.id,
            )
            return
        if error is None:
            self._emit("program.run.stop", label=label, duration_ms=duration_ms)
        else:
            self._emit(
                "program.run.exception",
                label=label,
                duration_ms=duration_ms,
                error=type(original_error(error)).__name__,
            )
        self._deliver(request, value, error, version, duration_ms)
        with self._cond:
            if error is None:
                self._completed += 1
            else:
                self._failed += 1
        self._release(1)

    def _claim(self, request: Request) -> int:
        """Take ownership of an executing request's answer; 1 if ours, 0 if already taken."""
        with self._cond:
            return 1 if self._executing.pop(request.id, None) is not None else 0

    def _deliver(
        self,
        request: Request,
        value: Any,
        error: BaseException | None,
        version: int,
        duration_ms: float = 0.0,
    ) -> None:
        # Answers before _release: once a drain sees admitted == 0, every
        # reply (and its done-callbacks) has been delivered.
        common = {"server": self.name, "request_id": request.id, "version": version}
        reply = request.reply
        if reply is None:
            if error is None:
                self._emit("program.server.result", **common, result=value, duration_ms=duration_ms)
            else:
                self._emit(
                    "program.server.error",
                    **common,
                    error=type(original_error(error)).__name__,
                    message=str(error),
                )
            return
        try:
            if error is None:
                reply.set_result(value)
            else:
                reply.set_exception(error)
        except InvalidStateError:
            if not reply.cancelled():  # a caller may cancel a queued request; nothing else
                log.exception("program server %r answered request %d twice", self.name, request.id)

    def _emit(self, event: str, **data: Any) -> None:
        # Telemetry must never cost a request its answer.
        try:
            self.telemetry.emit(event, **data)
        except Exception:
            log.exception("program server %r: emitting %r failed", self.name, event)

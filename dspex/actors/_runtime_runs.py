"""Program runs: how the Runtime executes a top-level call as a supervised process.

A run takes one of ``runtime.max_runs`` slots (waiting while all are taken).
Without a deadline it is a light process executed in the calling thread and
adopted by the ``programs`` supervisor (docs/architecture.md, departure 22).
With one, it takes a pre-started spare run actor if one is warm, or starts a
fresh one under ``programs``, hands it the job and awaits the reply up to the
deadline, checking the actor is still alive. Kept apart from the Runtime
class, which mixes :class:`ProgramRuns` in, so the tree's lifecycle and
services read on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, InvalidStateError, wait
from typing import TYPE_CHECKING, Any

import pykka

from dspex.actors._program_run import (
    ProgramRun,
    RunContext,
    RunJob,
    activate_run,
    enter_run,
    leave_run,
    wrap_program_error,
)
from dspex.errors import ActorStoppedError, MaxChildrenError, ProgramError
from dspex.supervision import (
    NORMAL,
    ChildSpec,
    ExitReason,
    LightProcess,
    Restart,
    adopt_child,
    monitor,
    start_child,
)

if TYPE_CHECKING:
    from dspex.actors._telemetry_emitter import TelemetryEmitter
    from dspex.config import Settings

__all__ = ["ProgramRuns"]

_RUN_POLL = 1.0  # a run's reply is awaited in slices, checking the run is alive


class ProgramRuns:
    """The Runtime's program-run machinery: admission gate, warm spares, run, record.

    A mixin: the host (the Runtime) provides the settings, the telemetry
    emitter, ``whereis``, ``running`` and the shared lock and stop event, and
    calls :meth:`_init_runs` from its ``__init__``.
    """

    if TYPE_CHECKING:
        telemetry: TelemetryEmitter
        _lock: threading.Lock
        _stopping: threading.Event

        @property
        def settings(self) -> Settings: ...

        @property
        def running(self) -> bool: ...

        def whereis(self, name: str) -> pykka.ActorRef[Any]: ...

    def _init_runs(self, settings: Settings) -> None:
        """Set up the run slots and the spare list (called from the host's ``__init__``)."""
        # One token per run slot: a SimpleQueue blocks and wakes in C, cheaper than a Semaphore.
        self._run_tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(settings.runtime.max_runs):
            self._run_tokens.put(None)
        self._spares: list[pykka.ActorRef[Any]] = []  # pre-started ProgramRun actors
        self._spares_starting = 0
        self._spare_spec = ChildSpec("run-spare", ProgramRun.start, restart=Restart.TEMPORARY)
        self._programs: pykka.ActorRef[Any] | None = None  # last "programs" incarnation seen

    def run(
        self,
        fn: Callable[[], Any],
        *,
        label: str = "program",
        timeout: float | None = None,
        run: RunContext | None = None,
    ) -> Any:
        """Execute ``fn`` as a supervised program run and return its result.

        Without a deadline the run is a light process executed in the calling
        thread, which would only block on it otherwise (see :meth:`_run_here`);
        with ``timeout`` (seconds, the run's deadline) it runs in a ProgramRun
        actor and the caller returns when the deadline passes even if ``fn``
        blocks. Either way the caller's contextvars travel into the run, and
        past ``runtime.max_runs`` concurrent runs the caller waits for a slot.
        """
        if timeout is None and (run is None or run.deadline is None):
            return self._run_here(fn, label, run)
        programs = self._programs_ref()
        self._admit()
        try:
            if run is None:
                deadline = time.monotonic() + timeout if timeout is not None else None
                run = RunContext(deadline=deadline, label=label, runtime=self)
            reply: Future[Any] = Future()
            ref = self._take_spare() or self._start_run(programs, run)
            # No wake-up of Telemetry for this: the stop event carries it along
            # (and a long run's _await_run flushes it).
            self.telemetry.run_event("program.run.start", run.run_id, label, nudge=False)
            started = time.perf_counter()
            # The run starts the spare that replaces it, in its own thread.
            before = self._refill if self.settings.runtime.warm_runs else None
            ref.tell(RunJob(fn, contextvars.copy_context(), run, reply, before))
            try:
                result = self._await_run(ref, run, reply)
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    run.cancelled.set()  # Ctrl-C: the run stops at its next check
                self.record_run(run, (time.perf_counter() - started) * 1000, exc)
                raise
            # Emitted here, not in the run's thread, so metrics read after the
            # call returns already count it.
            self.record_run(run, (time.perf_counter() - started) * 1000, None)
            return result
        finally:
            self._run_tokens.put(None)

    def _run_here(self, fn: Callable[[], Any], label: str, run: RunContext | None) -> Any:
        """A run executed by the calling thread, as a light process under ``programs``.

        The caller would block until the run ends anyway, so the run borrows
        its thread instead of taking another one's: no thread start, no
        hand-off. It is still a supervised process: it has a run id, it is a
        child of ``programs`` in ``rt.tree()`` while it runs, a monitor gets
        its ``Down`` (normal, or the exception that failed it), stopping it
        (``terminate_child``, a runtime shutdown) cancels it at its next check,
        its failure is wrapped as a run actor wraps it, and it reports to
        telemetry. It runs in a copy of the caller's contextvars, so nothing
        it sets leaks back.
        """
        programs = self._programs_ref()
        self._admit()
        try:
            if run is None:
                run = RunContext(label=label, runtime=self)
            process = LightProcess(ProgramRun, run.cancelled.set)
            adopt_child(programs, process, ChildSpec(f"run-{run.run_id}", _adopted, _TEMPORARY))
            # Nudged: no waiting caller flushes a long run's start event later.
            self.telemetry.run_event("program.run.start", run.run_id, run.label)
            started = time.perf_counter()
            reason: ExitReason = NORMAL
            try:
                result = contextvars.copy_context().run(_execute_here, fn, run)
            except Exception as exc:  # user code: fail this run only, as ProgramRun does
                reason = exc
                wrapped = wrap_program_error(exc, run)
                self.record_run(run, (time.perf_counter() - started) * 1000, wrapped)
                raise wrapped from exc
            except BaseException as exc:
                reason = exc
                self.record_run(run, (time.perf_counter() - started) * 1000, exc)
                if isinstance(exc, KeyboardInterrupt) and _in_main_thread():
                    # Ctrl-C lands in whatever the main thread runs, here the run:
                    # it is the caller's too. The run's fan-outs stop; Ctrl-C goes on.
                    run.cancelled.set()
                    raise
                # SystemExit & co raised by user code: contained, as in a run actor.
                raise ProgramError(
                    f"program run {run.run_id} ({run.label}) raised {exc!r}", original=exc
                ) from exc
            finally:
                process.exit(reason)
            self.record_run(run, (time.perf_counter() - started) * 1000, None)
            return result
        finally:
            self._run_tokens.put(None)

    async def arun(self, make: Callable[[], Awaitable[Any]], *, label: str = "program") -> Any:
        """Await ``make()`` as a supervised program run on the caller's event loop.

        The async twin of a light run (:meth:`_run_here`): a light process under
        ``programs`` while it is awaited, monitorable, reported to telemetry,
        its failure wrapped as a run's. Stopping it (``terminate_child``, a
        runtime stop) cancels its LM calls and the awaiting task; the awaiter
        gets a ``ProgramError``. It takes no thread, so it takes no
        ``max_runs`` slot (waiting for one would block the loop): what bounds
        awaited runs is the LM clients' ``max_in_flight``.
        """
        programs = self._programs_ref()
        run = RunContext(label=label, runtime=self)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def stop() -> None:  # any thread
            run.cancelled.set()  # wakes an LM call in flight
            if task is not None:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nothing awaits
                    loop.call_soon_threadsafe(cancel_awaiter)

        def cancel_awaiter() -> None:  # the loop thread, which also ends the run: no race
            if process.is_alive() and task is not None:
                task.cancel()

        process = LightProcess(ProgramRun, stop)
        adopt_child(programs, process, ChildSpec(f"run-{run.run_id}", _adopted, _TEMPORARY))
        self.telemetry.run_event("program.run.start", run.run_id, run.label)
        started = time.perf_counter()
        reason: ExitReason = NORMAL
        token = enter_run(run)
        try:
            result = await make()
        except asyncio.CancelledError as exc:
            if task is None or not run.cancelled.is_set() or task.cancelling() > 1:
                reason = exc  # the awaiter itself was cancelled: that goes on
                self.record_run(run, (time.perf_counter() - started) * 1000, exc)
                raise
            task.uncancel()  # the run was stopped: its awaiter gets an error, as a caller does
            error = ProgramError(f"program run {run.run_id} ({run.label}) was cancelled")
            reason = error
            self.record_run(run, (time.perf_counter() - started) * 1000, error)
            raise error from None
        except Exception as exc:  # user code: fail this run only
            reason = exc
            wrapped = wrap_program_error(exc, run)
            self.record_run(run, (time.perf_counter() - started) * 1000, wrapped)
            raise wrapped from exc
        except BaseException as exc:  # asyncio lets SystemExit & co stop the loop anyway
            reason = exc
            self.record_run(run, (time.perf_counter() - started) * 1000, exc)
            raise
        finally:
            leave_run(token)
            process.exit(reason)
        self.record_run(run, (time.perf_counter() - started) * 1000, None)
        return result

    def submit_run(
        self,
        fn: Callable[[], Any],
        *,
        label: str = "program",
        timeout: float | None = None,
    ) -> tuple[Future[Any], RunContext]:
        """Start ``fn`` as a ProgramRun (as :meth:`run`) without waiting for it.

        Returns the run's reply future and its context (set
        ``run.cancelled`` to cancel it). The caller's contextvars travel
        into the run. Waits only for a run slot, like :meth:`run`. Used by
        ``streamify``, whose consumer awaits the future on its own loop.
        """
        programs = self._programs_ref()
        self._admit()
        try:
            deadline = time.monotonic() + timeout if timeout is not None else None
            run = RunContext(deadline=deadline, label=label, runtime=self)
            reply: Future[Any] = Future()
            ref = self._take_spare() or self._start_run(programs, run)
            self.telemetry.run_event("program.run.start", run.run_id, label, nudge=False)
            started = time.perf_counter()
            before = self._refill if self.settings.runtime.warm_runs else None
            ref.tell(RunJob(fn, contextvars.copy_context(), run, reply, before))
        except BaseException:
            self._run_tokens.put(None)
            raise

        def finished(done: Future[Any]) -> None:
            self._run_tokens.put(None)
            error = None if done.cancelled() else done.exception()
            self.record_run(run, (time.perf_counter() - started) * 1000, error)

        def died(_down: Any) -> None:
            if not reply.done():
                with contextlib.suppress(InvalidStateError):
                    reply.set_exception(
                        ProgramError(
                            f"program run {run.run_id} ({run.label}) died without replying; "
                            "see the supervisor events in telemetry"
                        )
                    )

        reply.add_done_callback(finished)
        monitor(ref, died)
        return reply, run

    def _admit(self) -> None:
        """Take one of the ``runtime.max_runs`` run slots, waiting while all are taken."""
        while True:
            try:
                return self._run_tokens.get(timeout=_RUN_POLL)
            except queue.Empty:
                if not self.running:
                    msg = "the dspex runtime stopped while this run was waiting"
                    raise ActorStoppedError(msg) from None

    def _programs_ref(self) -> pykka.ActorRef[Any]:
        """The ``programs`` supervisor, re-resolved only once the one we knew has died."""
        ref = self._programs
        if ref is None or not ref.is_alive():
            ref = self._programs = self.whereis("programs")
        return ref

    def _take_spare(self) -> pykka.ActorRef[Any] | None:
        with self._lock:
            while self._spares:
                ref = self._spares.pop()
                if ref.is_alive():
                    return ref
        return None

    def _refill(self) -> None:
        # Runs in a run's thread, before its job (a restarted supervisor is
        # picked up by the next caller's _programs_ref).
        programs = self._programs
        if programs is not None and programs.is_alive():
            self._refill_spares(programs)

    def _refill_spares(self, programs: pykka.ActorRef[Any]) -> None:
        """Pre-start run actors up to ``runtime.warm_runs``; best effort, never raises."""
        want = self.settings.runtime.warm_runs
        while True:
            with self._lock:
                if self._stopping.is_set() or len(self._spares) + self._spares_starting >= want:
                    return
                self._spares_starting += 1
            try:
                ref = start_child(
                    programs, self._spare_spec, timeout=self.settings.runtime.run_start_timeout
                )
            except Exception:  # full, stopping or slow: runs start on demand instead
                with self._lock:
                    self._spares_starting -= 1
                return
            with self._lock:
                self._spares_starting -= 1
                self._spares.append(ref)

    def _start_run(self, programs: pykka.ActorRef[Any], run: RunContext) -> pykka.ActorRef[Any]:
        spec = ChildSpec(f"run-{run.run_id}", ProgramRun.start, restart=Restart.TEMPORARY)
        start_timeout = self.settings.runtime.run_start_timeout
        deadline = time.monotonic() + start_timeout
        pause = 0.0005
        while True:
            try:
                return start_child(programs, spec, timeout=start_timeout)
            except MaxChildrenError:
                # The gate admits a caller as soon as an earlier run replied, but
                # the supervisor counts that run until its exit is processed, a
                # moment later: wait for the slot instead of failing the caller.
                if time.monotonic() >= deadline or self._stopping.wait(pause):
                    raise
                pause = min(pause * 2, 0.05)

    def _await_run(self, ref: pykka.ActorRef[Any], run: RunContext, reply: Future[Any]) -> Any:
        # Wait for the future to be done, then read it: catching TimeoutError
        # around result(timeout) would also catch a run that *failed* with a
        # TimeoutError (LMTimeoutError...), and wait for it forever. A run
        # with a deadline is given up at the deadline, whatever its forward is
        # doing (the caller's run() cancels it: it stops at its next check).
        while True:
            slice_ = _RUN_POLL
            if run.deadline is not None:
                slice_ = min(slice_, run.deadline - time.monotonic())
                if slice_ <= 0 and not reply.done():
                    run.cancelled.set()  # given up on: it stops at its next check
                    raise ProgramError(
                        f"program run {run.run_id} ({run.label}) passed its deadline; "
                        "raise the timeout or make the program faster"
                    )
            if wait((reply,), timeout=max(0.0, slice_)).done:
                return reply.result()
            self.telemetry.flush()  # a long run's start event is not held back further
            if not ref.is_alive() and not reply.done():
                raise ProgramError(
                    f"program run {run.run_id} ({run.label}) died without replying; "
                    "see the supervisor events in telemetry"
                ) from None

    def record_run(self, run: RunContext, duration_ms: float, error: BaseException | None) -> None:
        """Report a finished run to telemetry (also for runs executed inline, e.g. by Evaluate)."""
        if error is None:
            self.telemetry.run_event("program.run.stop", run.run_id, run.label, duration_ms)
        else:
            original = getattr(error, "original", None) or error
            self.telemetry.run_event(
                "program.run.exception",
                run.run_id,
                run.label,
                duration_ms,
                type(original).__name__,
            )


_TEMPORARY = Restart.TEMPORARY


def _adopted() -> pykka.ActorRef[Any]:
    # The spec of a run executed in its caller's thread: never started by the
    # supervisor (temporary, so never restarted either).
    raise ProgramError("a program run executed in its caller's thread cannot be restarted")


def _execute_here(fn: Callable[[], Any], run: RunContext) -> Any:
    # Runs inside a copy of the caller's context: nothing to reset afterwards.
    activate_run(run)
    return fn()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()

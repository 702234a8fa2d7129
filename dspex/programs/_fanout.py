"""The one fan-out engine: a body over many items on a WorkerPool, each item its own run.

Evaluate, ``Module.batch`` and ``Parallel`` (through ``_evaluate_engine``) and
every optimizer (through its coordinator) run their items with
:func:`fan_out`. Each item runs in a pool worker as its own program run: a
:class:`~dspex.actors.RunContext` with the item's deadline and the fan-out's
shared ``cancelled`` event is made current in the worker, so the program runs
inline there and checks the deadline between LM calls (a ProgramRun actor per
item was measured at ~0.45 ms of CPU each: over half the per-example budget).
The caller's ``contextvars`` (``dspex.context`` overrides) are copied into
every item; nothing is deep-copied.

Ctrl-C. While a fan-out runs in the main thread over Python's default SIGINT
handler, SIGINT first sets the cancel event (LM calls the items wait for end
at once) and then raises ``KeyboardInterrupt`` in the consumer, except inside
:meth:`Flow.critical` (recording a finished item), where it is raised on the
way out. Leaving on ``KeyboardInterrupt`` does not wait for the running
items: their results are dropped and a pool the fan-out owns is stopped
without waiting (its worker threads are daemons; a stuck one is abandoned).
``KeyboardInterrupt`` raised by user code in an item stops the fan-out the same way.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, Generic, TypeVar

from dspex.actors._program_run import CancelEvent, RunContext, activate_run, current_run
from dspex.supervision import ChildSpec, Restart, Result, WorkerPool, current_lease, start_child

__all__ = [
    "Flow",
    "coordination",
    "fan_out",
    "fan_out_runtime",
    "open_pool",
    "pools_under",
    "spare_threads",
]

logger = logging.getLogger("dspex.programs")

R = TypeVar("R")

SHUTDOWN_SECONDS: Final = 1.0
"""How long closing a pool waits for a worker stuck in user code before abandoning it."""

_DEFAULT_SPARE_THREADS: Final = 256
"""Burst workers when no runtime is running (the ``runtime.spare_threads`` default)."""

coordination: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "dspex_coordination", default=None
)
"""The optimizer compile whose pool items go to (see ``_teleprompt._coordinator``)."""

_pool_owner: contextvars.ContextVar[Any] = contextvars.ContextVar("dspex_pool_owner", default=None)
"""The supervisor (an actor ref) that owned pools start under; None: coordinators."""
_pool_ids = itertools.count(1)


class _Interrupted:
    """Returned by an item whose user code raised KeyboardInterrupt."""


_INTERRUPTED: Final = _Interrupted()


def fan_out_runtime() -> Any:
    """The runtime items belong to: the enclosing run's, else the current one, else None.

    None (the pool then runs unsupervised) only when no runtime can start.
    """
    outer = current_run()
    if outer is not None:
        return outer.runtime
    from dspex.programs._runtime_access import current_runtime

    try:
        return current_runtime()
    except Exception:  # no runtime can start: run the pool unsupervised
        logger.warning("no dspex runtime available; the pool runs unsupervised")
        return None


def spare_threads(runtime: Any) -> int:
    """``runtime.spare_threads``: burst workers for items parked in a retry wait."""
    if runtime is None:
        return _DEFAULT_SPARE_THREADS
    spare: int = runtime.settings.runtime.spare_threads
    return spare


@contextmanager
def pools_under(owner: Any) -> Iterator[None]:
    """Pools opened in this block (by :func:`open_pool`) go under ``owner``, a supervisor.

    An optimizer's coordinator uses it, so the pools of the evaluations it
    runs show (and stop) inside its own subtree. None: the default place.
    """
    token = _pool_owner.set(owner)
    try:
        yield
    finally:
        _pool_owner.reset(token)


def open_pool(runtime: Any, size: int, burst: int, label: str) -> WorkerPool:
    """A WorkerPool for one fan-out, a temporary child of the runtime's coordinators.

    Under the tree it shows in ``rt.tree()`` while it runs and is stopped with
    the runtime; inside :func:`pools_under` it goes under that owner instead.
    ``burst`` workers start only while items are parked in a retry wait (see
    ``dspex.supervision.Lease``): ``size`` items keep working meanwhile.
    """
    options: dict[str, Any] = {
        "size": size,
        "burst": burst,
        "name": label,
        "shutdown_timeout": SHUTDOWN_SECONDS,
    }
    if runtime is None:
        return WorkerPool(**options)
    owner = _pool_owner.get()
    if owner is not None and owner.is_alive():
        parent, child_id = owner, f"{label}-{next(_pool_ids)}"  # ids are unique in a supervisor
    else:
        parent, child_id = runtime.whereis("coordinators"), label
    spec: ChildSpec = WorkerPool.child_spec(id=child_id, restart=Restart.TEMPORARY, **options)
    ref = start_child(parent, spec, timeout=spec.start_timeout)
    return WorkerPool.of(ref)


class Flow(Generic[R]):
    """A running fan-out as its consumer sees it: iterate it for the items' results.

    Each result's ``item`` is the ``(key, value)`` pair given. Run the
    recording of a result inside :meth:`critical` so Ctrl-C cannot cut it in
    half. Iterating raises ``KeyboardInterrupt`` if an item's user code did.
    """

    def __init__(
        self, results: Iterator[Result[Any]], guard: _SigintGuard, outer: RunContext | None
    ) -> None:
        self._results = results
        self._guard = guard
        self._outer = outer

    def __iter__(self) -> Iterator[Result[R]]:
        outer = self._outer
        for result in self._results:
            if result.ok and result.value is _INTERRUPTED:
                raise KeyboardInterrupt
            if outer is not None and outer.cancelled.is_set():
                outer.check_deadline()  # raises: the enclosing run was cancelled (Ctrl-C)
            yield result

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A Ctrl-C arriving in this block is raised when it ends, not inside it."""
        with self._guard.deferred():
            yield


@contextmanager
def fan_out(
    body: Callable[[Any], R],
    items: Sequence[tuple[int, Any]],
    *,
    pool: WorkerPool | Callable[[], WorkerPool],
    num_threads: int,
    label: str,
    runtime: Any,
    timeout: float | None = None,
    ordered: bool = False,
    error_of: Callable[[R], BaseException | None] | None = None,
    contain: Callable[[BaseException], R] | None = None,
) -> Iterator[Flow[R]]:
    """Run ``body(value)`` for each ``(key, value)`` of ``items``; yield the :class:`Flow`.

    ``pool`` is a running pool (shared; left running) or a factory for one the
    fan-out owns (stopped when it ends, without waiting after Ctrl-C). At
    most ``num_threads`` items are in flight or waiting to be read; input is
    pulled only as slots free up. ``timeout`` is each item's run deadline
    (cooperative; the pool's per-task timeout a little later is the
    backstop). ``ordered``: results in input order, else completion order.
    ``error_of(value)`` names the failure a value stands for (run metrics).
    ``contain(exc)`` turns a ``BaseException`` (``SystemExit``...) escaping
    ``body`` into a value; without it the worker dies and the pool retries
    the item once. Leaving the block cancels the items still running (at
    their next deadline check) and, unless leaving on Ctrl-C, waits for them
    up to the pool's shutdown timeout.
    """
    cancel = CancelEvent()  # setting it also ends the LM calls the items wait for
    context = contextvars.copy_context()
    outer = current_run()
    outer_deadline = outer.deadline if outer is not None else None
    monotonic = time.monotonic

    def task(item: tuple[int, Any]) -> Any:
        key, value = item
        deadline = None if timeout is None else monotonic() + timeout
        if outer_deadline is not None:
            deadline = outer_deadline if deadline is None else min(deadline, outer_deadline)
        run = RunContext(
            deadline=deadline,
            cancelled=cancel,
            label=f"{label}[{key}]",
            runtime=runtime,
            lease=current_lease(),
        )
        if runtime is not None:
            runtime.telemetry.run_event("program.run.start", run.run_id, run.label)
        started = time.perf_counter()
        try:
            result = context.copy().run(_run_inline, run, body, value)
        except BaseException as exc:
            if runtime is not None:
                runtime.record_run(run, (time.perf_counter() - started) * 1000, exc)
            if isinstance(exc, KeyboardInterrupt):
                cancel.set()
                return _INTERRUPTED
            if contain is None:
                raise  # a crash: the pool starts a new worker and retries the item
            return contain(exc)
        if runtime is not None:  # each item is a program run in the metrics too
            error = error_of(result) if error_of is not None else None
            runtime.record_run(run, (time.perf_counter() - started) * 1000, error)
        return result

    backstop = None if timeout is None else timeout * 1.25 + 1.0
    guard = _SigintGuard(cancel)
    # Cancelling the enclosing run (Ctrl-C while its caller waits) cancels these items too.
    outer_cancel = outer.cancelled if outer is not None else None
    if isinstance(outer_cancel, CancelEvent):
        outer_cancel.add_waker(cancel.set)
    with guard, _unlinked(outer_cancel, cancel):
        owned = not isinstance(pool, WorkerPool)
        running = pool() if not isinstance(pool, WorkerPool) else pool
        interrupted = False
        try:
            results: Generator[Result[Any], None, None] = running.map(
                task,
                items,
                max_concurrency=max(1, min(num_threads, running.size)),
                ordered=ordered,
                timeout=backstop,
            )
            try:
                yield Flow(results, guard, outer)
            except KeyboardInterrupt:
                interrupted = True
                cancel.set()
                # Thrown into the pool's stream, it closes without waiting for
                # the running items (see WorkerPool.map).
                with contextlib.suppress(KeyboardInterrupt):
                    results.throw(KeyboardInterrupt())
                raise
            finally:
                cancel.set()  # running items stop at their next check
                results.close()
        finally:
            if owned and interrupted:
                running.stop(timeout=0.0, abandon=True)
            elif owned:
                running.stop()


@contextmanager
def _unlinked(outer: threading.Event | None, cancel: CancelEvent) -> Iterator[None]:
    """On the way out, the enclosing run's cancel no longer reaches ``cancel``."""
    try:
        yield
    finally:
        if isinstance(outer, CancelEvent):
            outer.discard_waker(cancel.set)


def _run_inline(run: RunContext, body: Callable[[Any], R], value: Any) -> R:
    # Runs inside a fresh copy of the caller's context, so nothing to reset.
    # A compile started from inside an item gets its own pool: sharing the
    # enclosing compile's from one of its workers could wait forever for a slot.
    coordination.set(None)
    activate_run(run)
    return body(value)


class _SigintGuard:
    """Ctrl-C first cancels the fan-out's items, then raises (deferred in critical blocks).

    Installed only in the main thread and only over Python's default handler:
    a program that installed its own SIGINT handler keeps it untouched. The
    handler runs in the main thread, between two bytecodes of whatever it does.
    """

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel
        self._previous: Any = None
        self._installed = False
        self._critical = 0
        self._pending = False

    def __enter__(self) -> _SigintGuard:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is signal.default_int_handler:
                try:
                    signal.signal(signal.SIGINT, self._handle)
                except ValueError:  # not the main interpreter
                    return self
                self._previous, self._installed = previous, True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            self._installed = False
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        self._cancel.set()
        if self._critical:
            self._pending = True  # raised when the critical block ends
            return
        signal.default_int_handler(signum, frame)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._pending and not self._critical:
            self._pending = False
            raise KeyboardInterrupt

"""WorkerPool: N supervised worker actors with ``Task.async_stream`` semantics.

Three kinds of thread cooperate (see ``_pool_actor``, ``_pool_worker`` and
``_pool_stream``):

- the **pool actor** supervises the workers: it monitors each one, restarts
  a dead worker (within ``max_restarts`` per ``max_seconds``, else the pool
  fails with :class:`SupervisionError`), replaces workers stuck past a task
  timeout, and stops them all, newest first, when the pool stops;
- **workers** pull tasks from one shared queue and push each outcome
  straight to the task's owner, with no round trip through the pool actor;
- the **consumer** (whoever iterates ``map`` or waits on a ``submit``
  future) pulls input lazily, enforces timeouts and decides retries.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import time
from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

import pykka

from dspex.errors import CallTimeoutError, StartError, UsageError
from dspex.supervision._actor import shutdown
from dspex.supervision._clock import Clock, SystemClock
from dspex.supervision._events import EventBus
from dspex.supervision._pool_actor import HandleQuery, PoolActor
from dspex.supervision._pool_results import PoolStats, Result
from dspex.supervision._pool_stream import Stream, Submission
from dspex.supervision._pool_worker import Core
from dspex.supervision._spec import ChildSpec, Restart

__all__ = ["WorkerPool"]

log = logging.getLogger("dspex.supervision")

T = TypeVar("T")
R = TypeVar("R")


def _default_size() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


def _check_positive(field: str, value: float, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise UsageError(f"WorkerPool({field}={value!r}): must be a number > 0; {fix}")


def _check_count(field: str, value: int, minimum: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"WorkerPool({field}={value!r}): must be an int >= {minimum}; {fix}")


class WorkerPool:
    """A fixed set of supervised worker actors that run tasks, like Elixir's ``Task.async_stream``.

    ::

        with WorkerPool(size=16, name="eval") as pool:
            for result in pool.map(score, examples, timeout=30):
                if result.ok:
                    print(result.index, result.value)
                else:
                    print(result.index, "failed:", result.error)

    Failure semantics, by cause:

    - **the task raises an** ``Exception``: that is the task's own error. It is
      reported as ``Failed(exc)`` at once and *not* retried, because running
      the same code on the same input would most likely raise again. Pass
      ``retry_on=(SomeError, ...)`` to ``map`` to retry chosen types.
    - **the worker dies** while it holds the task (the task raised a
      ``BaseException`` such as ``SystemExit``, or someone stopped the worker):
      the pool starts a new worker and the task is retried on another worker
      up to ``max_retries`` times, then reported ``Failed(reason)``.
    - **the task overruns** ``map(timeout=...)``: it is reported
      ``Failed(CallTimeoutError)``; its worker thread cannot be killed, so it
      is abandoned (stopped once the task returns, its late result dropped)
      and replaced at once to keep capacity.
    - **more than** ``max_restarts`` **worker restarts within**
      ``max_seconds`` (measured on ``clock``): the pool fails; consumers get
      a :class:`SupervisionError`, like a supervisor escalating.

    **Parked tasks.** A task about to wait on a timer (a provider's
    ``Retry-After``, a retry backoff) may lend out its slot through
    :func:`current_lease`: ``map`` then starts another input meanwhile, on
    one of up to ``burst`` extra workers started on demand (they live as long
    as the pool), and the parked task gets the next free slot back before
    any new input. So at most ``max_concurrency`` tasks are working at once
    while up to ``burst`` more sit out waits. ``burst=0`` (the default) keeps
    the pool at ``size`` threads, and its tasks get no lease.

    A result is delivered exactly once per input. The pool is itself an
    :class:`Actor` (see :attr:`ref`, :meth:`child_spec`), so a supervisor or a
    coordinator can own it.
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        burst: int = 0,
        name: str = "pool",
        events: EventBus | None = None,
        clock: Clock | None = None,
        max_restarts: int = 10,
        max_seconds: float = 5.0,
        max_retries: int = 1,
        shutdown_timeout: float = 5.0,
        start_timeout: float = 5.0,
    ) -> None:
        size = _default_size() if size is None else size
        _check_count("size", size, 1, "pass the number of worker threads, e.g. size=8")
        _check_count("burst", burst, 0, "extra workers for parked tasks; 0 = none")
        if not isinstance(name, str) or not name:
            raise UsageError(f"WorkerPool(name={name!r}): must be a non-empty string")
        _check_count("max_restarts", max_restarts, 0, "e.g. max_restarts=10")
        _check_positive("max_seconds", max_seconds, "e.g. max_seconds=5.0")
        _check_count("max_retries", max_retries, 0, "use 0 to never retry")
        _check_positive("shutdown_timeout", shutdown_timeout, "e.g. shutdown_timeout=5.0")
        _check_positive("start_timeout", start_timeout, "e.g. start_timeout=5.0")
        self._max_retries = max_retries
        self._core = Core(
            name=name,
            size=size,
            burst=burst,
            events=events,
            clock=clock if clock is not None else SystemClock(),
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            shutdown_timeout=shutdown_timeout,
            start_timeout=start_timeout,
        )
        self._ref: pykka.ActorRef[Any] = PoolActor.start_link(
            self._core, self, start_timeout=start_timeout + 1.0
        )

    # -- running tasks (any thread) ----------------------------------------------

    def map(
        self,
        fn: Callable[[T], R],
        iterable: Iterable[T],
        *,
        max_concurrency: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry_on: tuple[type[BaseException], ...] = (),
    ) -> Generator[Result[R], None, None]:
        """Run ``fn(item)`` for each item; yield ``Ok``/``Failed`` as tasks finish.

        At most ``max_concurrency`` (default and maximum: the pool size) tasks
        of this call are unfinished or waiting to be yielded at any moment, and
        input is pulled only when one of those slots frees up, so memory does
        not grow with the input. ``ordered=True`` yields in input order;
        ``False`` yields in completion order. ``timeout`` is per task attempt,
        in seconds, counted from when the task is queued; it is enforced while
        the consumer iterates. ``max_retries`` (default: the pool's) bounds
        retries after a worker crash or a ``retry_on`` exception.

        The generator runs in the caller's thread. Leaving it early (``break``,
        an exception, ``close()``) cancels queued tasks and waits for running
        ones (up to ``timeout``, else the pool's ``shutdown_timeout``), except
        on ``KeyboardInterrupt`` (raised in it, or thrown in with
        ``throw(KeyboardInterrupt())``): then running tasks are not awaited.
        Raises :class:`SupervisionError` (or :class:`ActorStoppedError`) if
        the pool fails (or is stopped) meanwhile.
        """
        core = self._core
        if not callable(fn):
            raise UsageError(f"WorkerPool.map(fn={fn!r}): fn must be callable")
        try:
            iter(iterable)
        except TypeError:
            raise UsageError(
                f"WorkerPool.map(iterable={iterable!r}): not iterable; pass a list, "
                "generator or other iterable of task inputs"
            ) from None
        limit = core.size if max_concurrency is None else max_concurrency
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= core.size:
            raise UsageError(
                f"WorkerPool.map(max_concurrency={max_concurrency!r}): must be an int from 1 "
                f"to the pool size {core.size}; start a bigger pool for more concurrency"
            )
        if timeout is not None:
            _check_positive("map timeout", timeout, "or None for no per-task limit")
        retries = self._max_retries if max_retries is None else max_retries
        _check_count("map max_retries", retries, 0, "use 0 to never retry")
        if not isinstance(retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in retry_on
        ):
            raise UsageError(
                f"WorkerPool.map(retry_on={retry_on!r}): must be a tuple of exception "
                "types, e.g. retry_on=(ConnectionError,)"
            )
        if core.down is not None:
            raise core.down
        stream: Stream[T, R] = Stream(
            core,
            fn,
            iterable,
            max_concurrency=limit,
            ordered=ordered,
            timeout=timeout,
            max_retries=retries,
            retry_on=retry_on,
        )
        return stream.run()

    def submit(
        self, fn: Callable[..., R], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[R]:
        """Run one task; the future resolves to its value or raises its error.

        A worker crash is retried like in :meth:`map` (the pool's
        ``max_retries``). There is no per-task timeout here: bound the wait
        with ``future.result(timeout)``, or use :meth:`map` with ``timeout``.
        """
        if not callable(fn):
            raise UsageError(f"WorkerPool.submit(fn={fn!r}): fn must be callable")
        call = functools.partial(fn, **kwargs) if kwargs else fn
        return Submission(self._core, call, args, self._max_retries).start()

    # -- lifecycle ----------------------------------------------------------------

    def stop(self, timeout: float | None = None, *, abandon: bool = False) -> bool:
        """Stop every worker (newest first) and the pool; False if some were abandoned.

        Waits for running tasks up to the pool's ``shutdown_timeout``; tasks
        still queued are reported to their owners as the pool stopping.
        ``abandon=True`` (after Ctrl-C) does not wait for busy workers: their
        threads (daemons) end when their task returns. ``timeout`` bounds
        this call's wait for the pool actor (default: the shutdown timeout + 1s).
        """
        if abandon:
            self._core.abandon_at_stop = True
        limit = self._core.shutdown_timeout + 1.0 if timeout is None else timeout
        dead = shutdown(self._ref, limit)
        return dead and self._core.stuck_at_stop == 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def ref(self) -> pykka.ActorRef[Any]:
        """The pool actor: monitor it, or hand it to a supervisor."""
        return self._ref

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def size(self) -> int:
        return self._core.size

    def is_alive(self) -> bool:
        """True until the pool is stopped or fails."""
        return self._core.down is None and self._ref.is_alive()

    def statistics(self) -> PoolStats:
        """Counters since start: tasks, retries, timeouts, worker restarts."""
        core = self._core
        with core.lock:
            return PoolStats(
                name=core.name,
                size=core.size,
                workers=len(core.slots),
                queued=core.tasks.qsize(),
                tasks_ok=core.tasks_ok,
                tasks_failed=core.tasks_failed,
                tasks_timed_out=core.tasks_timed_out,
                tasks_retried=core.tasks_retried,
                worker_restarts=core.worker_restarts,
                workers_abandoned=core.workers_abandoned,
                uptime=time.monotonic() - core.started_at,
                parked=core.parked,
                burst_workers=core.burst_started,
            )

    def __repr__(self) -> str:
        state = "running" if self.is_alive() else "stopped"
        return f"WorkerPool(name={self.name!r}, size={self.size}, {state})"

    # -- as a supervised child ------------------------------------------------------

    @classmethod
    def child_spec(
        cls, id: str = "worker_pool", *, restart: Restart = Restart.PERMANENT, **options: Any
    ) -> ChildSpec:
        """A :class:`ChildSpec` that starts a pool with ``options`` (``WorkerPool``'s keywords).

        The owner gets the handle of the running incarnation with :meth:`of`.
        """
        shutdown_timeout = float(options.get("shutdown_timeout", 5.0))
        start_timeout = float(options.get("start_timeout", 5.0))

        def start() -> pykka.ActorRef[Any]:
            return cls(**options).ref

        return ChildSpec(
            id=id,
            start=start,
            restart=restart,
            shutdown=shutdown_timeout + 1.0,
            start_timeout=start_timeout + 2.0,
        )

    @classmethod
    def of(cls, ref: pykka.ActorRef[Any], timeout: float = 5.0) -> WorkerPool:
        """The :class:`WorkerPool` handle of a running pool actor (e.g. a supervised child)."""
        try:
            handle = ref.ask(HandleQuery(), timeout=timeout)
        except pykka.Timeout:
            raise CallTimeoutError(
                f"WorkerPool.of({ref}): no answer within {timeout}s; the pool is busy or stuck"
            ) from None
        except pykka.ActorDeadError:
            raise StartError(f"WorkerPool.of({ref}): that actor is not running") from None
        if not isinstance(handle, WorkerPool):
            raise UsageError(f"WorkerPool.of({ref}): not a WorkerPool actor")
        return handle

"""The consumer side of a pool: ``map`` streams and ``submit`` futures.

A stream runs in the thread that iterates it. It pulls input only while fewer
than ``max_concurrency`` of its tasks are unfinished or buffered, queues tasks
for the workers, and reads outcomes from its own result queue. It alone
decides each task's fate: a result is delivered only if it answers the
attempt the stream is waiting for, so a late reply (after a timeout, a retry
or a crash report) is dropped and nothing is delivered twice.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from typing import Any, Final, Generic, TypeVar

from dspex.errors import CallTimeoutError
from dspex.supervision._pool_lease import Lease
from dspex.supervision._pool_results import POOL_TASK_RETRIED, Failed, Ok, Result
from dspex.supervision._pool_task import DOWN, ERR, LOST, OK, PARK, RESUME, UNPARK, Task
from dspex.supervision._pool_worker import Core, as_error

__all__: list[str] = []

log = logging.getLogger("dspex.supervision")

T = TypeVar("T")
R = TypeVar("R")

_CHECK_SECONDS: Final = 1.0
"""Longest a waiting consumer goes without checking that the pool still runs."""


class Stream(Generic[T, R]):
    """State of one ``WorkerPool.map`` call; :meth:`run` is the generator."""

    def __init__(
        self,
        core: Core,
        fn: Callable[[T], R],
        iterable: Iterable[T],
        *,
        max_concurrency: int,
        ordered: bool,
        timeout: float | None,
        max_retries: int,
        retry_on: tuple[type[BaseException], ...],
    ) -> None:
        self._core = core
        self._fn = fn
        self._input = iter(iterable)
        self._limit = max_concurrency
        self._ordered = ordered
        self._timeout = timeout
        self._max_retries = max_retries
        self._retry_on = retry_on
        self._inflight: dict[int, Task] = {}  # index -> the attempt we wait for
        self._results: queue.SimpleQueue[tuple[Task, int, Any]] = queue.SimpleQueue()
        self._deadlines: deque[tuple[float, Task]] = deque()
        self._parked: dict[int, Lease] = {}  # tasks lending their slot (see _pool_lease)
        self._resuming: deque[Lease] = deque()  # parked tasks asking for a slot back

    def run(self) -> Generator[Result[R], None, None]:
        inflight = self._inflight
        results = self._results
        deadlines = self._deadlines
        timeout = self._timeout
        ordered = self._ordered
        dispatch = self._core.dispatch
        sink = results.put
        fn = self._fn
        source = self._input
        limit = self._limit
        capacity = self._core.size + self._core.burst
        parked = self._parked
        resuming = self._resuming
        buffer: dict[int, Result[R]] = {}  # ordered mode: done but not yet due
        head = 0  # ordered mode: the next index to yield
        next_index = 0
        exhausted = False
        linger = True
        try:
            while True:
                # A parked task wanting its slot back goes before any new input.
                # Buffered results (ordered mode) run nothing, so they do not
                # count here: the parked head may be what they wait for.
                while resuming and len(inflight) - len(parked) < limit:
                    lease = resuming.popleft()
                    if parked.get(lease.task.seq) is lease:
                        del parked[lease.task.seq]
                        self._core.note_parked(-1)
                        lease.granted()
                while (
                    not exhausted
                    and not resuming
                    and len(inflight) + len(buffer) - len(parked) < limit
                    and len(inflight) < capacity
                ):
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    task = Task(next_index, 0, fn, (item,), inflight, sink)
                    inflight[next_index] = task
                    next_index += 1
                    if timeout is not None:
                        deadlines.append((time.monotonic() + timeout, task))
                    dispatch(task)
                if not inflight:
                    return  # in ordered mode the buffer is empty too: its head was due
                produced: list[Result[R]] | tuple[Result[R]]
                if deadlines and deadlines[0][0] <= time.monotonic():
                    produced = self._expire()
                else:
                    try:
                        message = results.get(timeout=self._wait_seconds())
                    except queue.Empty:
                        self._check_pool()
                        continue
                    one = self._handle(message)
                    if one is None:
                        continue
                    produced = (one,)
                for result in produced:
                    if not ordered:
                        yield result
                    elif result.index != head:
                        buffer[result.index] = result
                    else:
                        yield result
                        head += 1
                        while head in buffer:
                            yield buffer.pop(head)
                            head += 1
        except KeyboardInterrupt:
            linger = False  # Ctrl-C: the consumer is leaving; running tasks are not awaited
            raise
        finally:
            self._close(linger)

    def _wait_seconds(self) -> float:
        if not self._deadlines:
            return _CHECK_SECONDS
        return max(0.0, min(_CHECK_SECONDS, self._deadlines[0][0] - time.monotonic()))

    def _check_pool(self) -> None:
        down = self._core.down
        if down is not None:
            raise down

    def _handle(self, message: tuple[Task, int, Any]) -> Result[R] | None:
        """Turn one worker/pool message into a result, a retry, or nothing (stale)."""
        task, kind, payload = message
        index = task.seq
        if self._inflight.get(index) is not task:
            if kind == RESUME:
                payload.granted()  # not ours to limit any more: never leave it waiting
            return None  # an attempt we stopped waiting for
        if kind == OK:
            del self._inflight[index]
            if self._parked:
                self._forget(index)
            self._core.count(ok=1)
            return Ok(payload, index, task.args[0])
        if kind >= PARK:
            self._lease_signal(index, kind, payload)
            return None
        if kind == ERR:
            retry = bool(self._retry_on) and isinstance(payload, self._retry_on)
            if retry and self._retry(task, payload):
                return None
            return self._fail(task, payload)
        if kind == LOST:
            if self._retry(task, payload):
                return None
            return self._fail(task, as_error(payload, f"task {index}"))
        raise payload  # DOWN: the pool stopped or failed under us

    def _lease_signal(self, index: int, kind: int, lease: Lease) -> None:
        parked = self._parked
        if kind == PARK:
            if index not in parked:
                parked[index] = lease
                self._core.note_parked(1)
        elif kind == RESUME:
            if parked.get(index) is lease:
                self._resuming.append(lease)
            else:
                lease.granted()
        elif kind == UNPARK and parked.get(index) is lease:
            del parked[index]
            self._core.note_parked(-1)

    def _forget(self, index: int) -> None:
        """A task ended (or its attempt was replaced): it no longer holds a parked place."""
        lease = self._parked.pop(index, None)
        if lease is not None:
            self._core.note_parked(-1)
            lease.granted()  # whoever still waits on it must not hang

    def _retry(self, task: Task, reason: Any) -> bool:
        if task.attempt >= self._max_retries:
            return False
        if self._parked:
            self._forget(task.seq)
        again = task._replace(attempt=task.attempt + 1)
        self._inflight[task.seq] = again
        self._core.count(retried=1)
        self._core.emit(
            POOL_TASK_RETRIED, index=task.seq, attempt=again.attempt, reason=repr(reason)
        )
        if self._timeout is not None:
            self._deadlines.append((time.monotonic() + self._timeout, again))
        self._core.dispatch(again)
        return True

    def _fail(self, task: Task, error: BaseException) -> Failed:
        del self._inflight[task.seq]
        if self._parked:
            self._forget(task.seq)
        self._core.count(failed=1)
        return Failed(error, task.seq, task.args[0], task.attempt + 1)

    def _expire(self) -> list[Result[R]]:
        """Fail the tasks past their deadline (after taking any result already in)."""
        produced: list[Result[R]] = []
        while True:
            try:
                message = self._results.get_nowait()
            except queue.Empty:
                break
            one = self._handle(message)
            if one is not None:
                produced.append(one)
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines:
            deadline, task = deadlines[0]
            if self._inflight.get(task.seq) is not task:
                deadlines.popleft()  # finished or retried: its entry is stale
                continue
            if deadline > now:
                break
            deadlines.popleft()
            del self._inflight[task.seq]
            if self._parked:
                self._forget(task.seq)
            self._core.count(failed=1, timed_out=1)
            self._core.retire(task)
            error = CallTimeoutError(
                f"task {task.seq} of pool {self._core.name!r} ran over its "
                f"timeout={self._timeout}s; raise map(timeout=...) if it needs longer"
            )
            produced.append(Failed(error, task.seq, task.args[0], task.attempt + 1))
        return produced

    def _close(self, linger: bool = True) -> None:
        """Cancel queued tasks, wait for running ones, abandon those that overrun.

        Runs when the stream ends, raises, or its consumer stops iterating
        (``GeneratorExit``). Clearing the table makes workers skip our queued
        tasks; tasks already running get until their timeout (or the pool's
        ``shutdown_timeout``) to finish before their workers are replaced.
        Without ``linger`` (Ctrl-C) running tasks are left to finish on their
        own, their results dropped.
        """
        self._inflight.clear()
        self._deadlines.clear()
        self._resuming.clear()
        for index in list(self._parked):
            self._forget(index)
        core = self._core
        if core.down is not None or not linger:
            return
        running = core.running(self._inflight)
        if not running:
            return
        wait = self._timeout if self._timeout is not None else core.shutdown_timeout
        deadline = time.monotonic() + wait
        while running:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or core.down is not None:
                break
            try:
                message = self._results.get(timeout=min(remaining, _CHECK_SECONDS))
            except queue.Empty:
                continue
            if message[1] >= PARK:
                if message[1] == RESUME:
                    message[2].granted()  # no limit while closing: let it finish
                continue
            running.pop(id(message[0]), None)
        for task in running.values():
            if core.retire(task):
                log.warning(
                    "pool %r: task %d still running %.3gs after its stream closed; "
                    "abandoning its worker",
                    core.name,
                    task.seq,
                    wait,
                )


class Submission(Generic[R]):
    """One ``WorkerPool.submit`` call: a future plus the retry of lost attempts."""

    def __init__(self, core: Core, fn: Callable[..., R], args: tuple[Any, ...], retries: int):
        self._core = core
        self._retries = retries
        self.future: concurrent.futures.Future[R] = concurrent.futures.Future()
        self._task = Task(0, 0, fn, args, self, self._sink)

    def start(self) -> concurrent.futures.Future[R]:
        self._core.dispatch(self._task)
        return self.future

    def get(self, key: int, /) -> Task | None:
        """The attempt still wanted (None once the future is done or cancelled)."""
        return None if self.future.done() else self._task

    def _sink(self, message: tuple[Task, int, Any]) -> None:
        # Called by a worker (OK/ERR) or the pool actor (LOST/DOWN); never raises.
        task, kind, payload = message
        if kind >= PARK:
            if kind == RESUME:
                payload.granted()  # a lone submission has no slot limit to wait for
            return
        if task is not self._task or self.future.done():
            return
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if kind == OK:
                self.future.set_result(payload)
                self._core.count(ok=1)
            elif kind == LOST and task.attempt < self._retries:
                self._task = task._replace(attempt=task.attempt + 1)
                self._core.count(retried=1)
                self._core.emit(
                    POOL_TASK_RETRIED, index=0, attempt=task.attempt + 1, reason=repr(payload)
                )
                try:
                    self._core.dispatch(self._task)
                except Exception as exc:  # the pool went down meanwhile
                    self.future.set_exception(exc)
            else:
                error = as_error(payload, "submitted task") if kind == LOST else payload
                self.future.set_exception(error)
                if kind != DOWN:
                    self._core.count(failed=1)

"""dspex's own threads for async calls that must block (never the loop's default executor).

``await in_thread(fn, *args)`` runs ``fn`` with the caller's context in one of
at most ``async_max_workers`` (a program setting, default 8) threads per
process: a user module with only a sync ``forward``, an LM or embedder that
has no awaitable path, an adapter without one. Workers start on demand and
exit after ``IDLE_SECONDS`` without work, so an idle process keeps none.
Cancelling the awaiting task abandons the result (a thread cannot be
interrupted; the call finishes in the background and its outcome is dropped).

It lives in the actors layer so that ``BaseLM.aforward`` and
``Embedder.acall`` use it too; the limit is read through a hook the programs
layer installs (``set_worker_limit``), 8 until then.
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # asyncio loads with the first awaited call, not with this module
    import asyncio

__all__ = ["DEFAULT_WORKERS", "in_thread", "pool_threads", "set_worker_limit", "submit"]

T = TypeVar("T")

IDLE_SECONDS = 1.0
DEFAULT_WORKERS = 8

_Job = tuple["asyncio.AbstractEventLoop", "asyncio.Future[Any]", Callable[[], Any]]


class _Pool:
    """A bounded set of worker threads fed from one queue (thread-safe)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._serial = 0

    @property
    def threads(self) -> int:
        return self._threads

    def submit(self, job: _Job, limit: int) -> None:
        with self._lock:
            self._jobs.put(job)
            if self._jobs.qsize() <= self._idle or self._threads >= limit:
                return  # an idle worker will take it (or the next free one)
            self._threads += 1
            self._serial += 1
            name = f"dspex-async-{self._serial}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._jobs.empty():
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
            loop, future, call = job
            try:
                outcome: Any = call()
                ok = True
            except BaseException as exc:  # delivered to the awaiting task, whatever it is
                outcome, ok = exc, False
            # A closed loop raises RuntimeError: nobody awaits the outcome any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, ok, outcome)


def _settle(future: asyncio.Future[Any], ok: bool, outcome: Any) -> None:
    if future.done():
        return  # the awaiting task was cancelled
    if ok:
        future.set_result(outcome)
    else:
        future.set_exception(outcome)


_pool = _Pool()


def pool_threads() -> int:
    """How many of dspex's async worker threads are alive now (for tests and metrics)."""
    return _pool.threads


_limit_source: Callable[[], int] | None = None


def set_worker_limit(source: Callable[[], int] | None) -> None:
    """Install how many workers a call may use (read in the caller's thread, per call)."""
    global _limit_source
    _limit_source = source


def submit(
    fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], limit: int
) -> asyncio.Future[T]:
    """Queue ``fn(*args, **kwargs)`` (in the caller's context); the running loop's future."""
    import asyncio

    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()  # settings overrides, usage tracker, callbacks

    def call() -> T:
        return context.run(fn, *args, **kwargs)

    _pool.submit((loop, future, call), limit)
    return future


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in one of dspex's async worker threads, awaited here."""
    source = _limit_source
    limit = source() if source is not None else DEFAULT_WORKERS
    return await submit(fn, args, kwargs, limit)

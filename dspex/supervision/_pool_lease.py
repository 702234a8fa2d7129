"""Managed blocking: a pool task that waits on a timer lends out its concurrency slot.

A ``map`` stream keeps at most ``max_concurrency`` of its tasks running. A
task that must sit out a wait it does not control (a provider's
``Retry-After``, a retry backoff) can *park* through its :class:`Lease`: the
stream stops counting it and starts another input meanwhile, on a burst
worker if the pool has ``burst`` capacity. Before the task works again it
asks to *resume*, and the stream hands it the next free slot ahead of any new
input, so the number of tasks doing work never exceeds ``max_concurrency``.
This is Java's ``ForkJoinPool.managedBlock`` idea, kept cooperative.

Lease signals travel to the owning stream through the task's sink, like
results do, and are handled in the consumer thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from dspex.supervision._pool_task import PARK, RESUME, UNPARK, Task

__all__ = ["Lease", "current_lease", "enter_task"]

log = logging.getLogger("dspex.supervision")

_ACTIVE: Final = 0
_PARKED: Final = 1
_RESUMING: Final = 2


class Lease:
    """The running task's claim on a slot of its stream; every method is thread-safe."""

    __slots__ = ("_callbacks", "_lock", "_state", "task")

    def __init__(self, task: Task) -> None:
        self.task = task
        self._lock = threading.Lock()
        self._state = _ACTIVE
        self._callbacks: list[Callable[[], None]] = []

    @property
    def parked(self) -> bool:
        """True from :meth:`park` until the slot is given back (or :meth:`unpark`)."""
        return self._state != _ACTIVE

    def park(self) -> None:
        """Stop counting this task against its stream's concurrency until it resumes.

        Call it right before a wait that does no work. Idempotent.
        """
        task = self.task
        if task.live.get(task.seq) is not task:
            return  # its owner stopped waiting for it: there is no slot to lend
        with self._lock:
            if self._state != _ACTIVE:
                return
            self._state = _PARKED
        task.sink((task, PARK, self))

    def resume(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once this task holds a slot again (at once if not parked).

        The stream's consumer thread usually makes the call; ``callback``
        must be quick and must not block (e.g. schedule a future's result).
        """
        task = self.task
        if task.live.get(task.seq) is not task:
            self.granted()  # its owner stopped waiting for it: nobody would answer
            _call(callback)
            return
        with self._lock:
            state = self._state
            if state != _ACTIVE:
                self._callbacks.append(callback)
                self._state = _RESUMING
        if state == _ACTIVE:
            _call(callback)
        elif state == _PARKED:
            task.sink((task, RESUME, self))

    def unpark(self) -> None:
        """Count again at once, without waiting for a slot (the wait ended abnormally)."""
        with self._lock:
            if self._state == _ACTIVE:
                return
            self._state = _ACTIVE
            callbacks, self._callbacks = self._callbacks, []
        self.task.sink((self.task, UNPARK, self))
        for callback in callbacks:
            _call(callback)

    def granted(self) -> None:
        """The owner gave this task a slot (or no longer limits it): run the callbacks."""
        with self._lock:
            self._state = _ACTIVE
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback)

    def __repr__(self) -> str:
        state = ("active", "parked", "resuming")[self._state]
        return f"Lease(task={self.task.seq}, {state})"


def _call(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:  # a waiter's bug must not take the consumer thread down
        log.exception("a pool lease's resume callback failed")


class _Running(threading.local):
    task: Task | None = None
    lease: Lease | None = None


_running: Final = _Running()


def enter_task(task: Task | None) -> None:
    """Mark ``task`` as the one this worker thread runs (None: between tasks or no burst)."""
    _running.task = task
    _running.lease = None


def current_lease() -> Lease | None:
    """The lease of the pool task running in this thread, if it can lend its slot.

    None outside pool tasks, and in pools without ``burst`` workers: there a
    parked task's slot could not be used, and its resume would only wait for
    the consumer thread.
    """
    task = _running.task
    if task is None:
        return None
    lease = _running.lease
    if lease is None:
        lease = _running.lease = Lease(task)
    return lease

"""The pool actor: supervises the workers of one :class:`~dspex.supervision.WorkerPool`.

It monitors each worker, restarts a dead one (within ``max_restarts`` per
``max_seconds`` on the pool's clock, else it fails with
:class:`SupervisionError`, like a supervisor escalating), replaces workers
stuck past a task timeout, and on the way down stops them all, newest first,
and reports every task that will now never finish to its owner.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from dspex.errors import SupervisionError
from dspex.supervision._actor import Actor, Down, await_started, shutdown, wait_dead
from dspex.supervision._pool_results import (
    POOL_INTENSITY_EXCEEDED,
    POOL_WORKER_ABANDONED,
    POOL_WORKER_RESTARTED,
)
from dspex.supervision._pool_task import DOWN, LOST, Task
from dspex.supervision._pool_worker import (
    WAKE,
    AddWorker,
    Core,
    RetireWorker,
    Slot,
    Worker,
)

__all__: list[str] = []

log = logging.getLogger("dspex.supervision")


@dataclass(frozen=True, slots=True)
class HandleQuery:
    """Asks a pool actor for its :class:`WorkerPool` handle (opaque to the actor)."""


@dataclass(frozen=True, slots=True)
class _Fail:
    """Told by the pool actor to itself: fail on the tell path, so it dies."""

    error: BaseException


class PoolActor(Actor):
    """Supervises the workers of one pool (runs in its own actor thread)."""

    def __init__(self, core: Core, handle: object) -> None:
        super().__init__()
        self._core = core
        self._handle = handle
        self._watched: dict[str, Slot] = {}  # urn -> slot, live and retired, start order
        self._restarts: collections.deque[float] = collections.deque()
        self._ids = itertools.count()
        self._orphan: Task | None = None  # the task of the worker whose death failed us

    def on_start(self) -> None:
        core = self._core
        core.actor = self.actor_ref
        deadline = time.monotonic() + core.start_timeout
        try:
            # Start every thread first and only then wait: starts overlap.
            slots = [self._spawn() for _ in range(core.size)]
            for slot in slots:
                assert slot.ref is not None
                await_started(slot.ref, max(0.0, deadline - time.monotonic()))
        except BaseException:
            self._stop_workers(list(self._watched.values()), core.shutdown_timeout)
            raise

    def _spawn(self) -> Slot:
        core = self._core
        slot = Slot(next(self._ids))
        with core.lock:
            core.slots[slot.id] = slot  # before it can take a task, so scans see it
        ref = Worker.start(core, slot)
        slot.ref = ref
        self._watched[ref.actor_urn] = slot
        self.monitor(ref)  # a worker already dead yields Down(noproc): still handled
        return slot

    def _replace(self) -> None:
        slot = self._spawn()
        assert slot.ref is not None
        await_started(slot.ref, self._core.start_timeout)

    # -- messages (pool actor thread) -------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RetireWorker):
            self._retire(message.slot)
            return None
        if isinstance(message, AddWorker):
            if self._core.down is None:
                self._spawn()  # not awaited: it pulls from the shared queue once up
            return None
        if isinstance(message, HandleQuery):
            return self._handle
        if isinstance(message, _Fail):
            raise message.error
        return super().on_receive(message)

    def on_down(self, down: Down) -> None:
        core = self._core
        slot = self._watched.pop(down.ref.actor_urn, None)
        if slot is None:
            return
        with core.lock:
            core.slots.pop(slot.id, None)
            task, slot.current = slot.current, None
        if slot.retired or core.down is not None:
            return  # replaced already, or the pool is stopping
        now = core.clock.monotonic()
        self._restarts.append(now)
        while self._restarts and now - self._restarts[0] > core.max_seconds:
            self._restarts.popleft()
        if len(self._restarts) > core.max_restarts:
            error = SupervisionError(
                f"worker pool {core.name!r}: {len(self._restarts)} worker restarts within "
                f"{core.max_seconds}s exceed max_restarts={core.max_restarts}; the pool "
                f"failed (last worker exit: {down.reason!r}). Fix the crashing tasks or "
                "raise max_restarts"
            )
            if isinstance(down.reason, BaseException):
                error.__cause__ = down.reason
            core.emit(POOL_INTENSITY_EXCEEDED, restarts=len(self._restarts), reason=repr(error))
            self._orphan = task  # reported by _terminate, once the pool is marked down
            raise error  # kills this actor: on_failure stops the rest
        self._replace()
        with core.lock:
            core.worker_restarts += 1
        core.emit(POOL_WORKER_RESTARTED, worker=slot.id, reason=repr(down.reason))
        if task is not None:
            task.sink((task, LOST, down.reason))

    def _retire(self, slot: Slot) -> None:
        core = self._core
        if core.down is not None or slot.ref is None:
            return
        with core.lock:
            core.slots.pop(slot.id, None)
            core.workers_abandoned += 1
        # The stuck thread cannot be killed: ask it to stop once its task
        # returns (its late result is dropped), and keep capacity meanwhile.
        shutdown(slot.ref, 0)
        core.emit(POOL_WORKER_ABANDONED, worker=slot.id)
        try:
            self._replace()
        except Exception as exc:
            # We are answering an ask, where raising would not kill this
            # actor; a pool that cannot restore capacity must fail.
            self.actor_ref.tell(_Fail(exc))

    # -- the end ------------------------------------------------------------------

    def on_stop(self) -> None:
        self._terminate(self._dspex_life.stop_reason)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._terminate(exception_value if exception_value is not None else "failure")

    def _terminate(self, reason: str | BaseException) -> None:
        core = self._core
        error = core.down_error(reason)
        with core.lock:
            if core.down is not None:
                return
            core.down = error  # from now on dispatch raises it
            core.slots.clear()
        slots = list(self._watched.values())
        abandon = core.abandon_at_stop
        stuck = self._stop_workers(slots, 0.0 if abandon else core.shutdown_timeout)
        if stuck and abandon:
            with core.lock:
                core.workers_abandoned += len(stuck)
                core.stuck_at_stop = len(stuck)
            log.debug(
                "worker pool %r: %d busy worker(s) abandoned on request", core.name, len(stuck)
            )
        elif stuck:
            with core.lock:
                core.workers_abandoned += len(stuck)
                core.stuck_at_stop = len(stuck)
            log.warning(
                "worker pool %r: %d worker(s) still busy %.3gs after stop; abandoned",
                core.name,
                len(stuck),
                core.shutdown_timeout,
            )
        # Every task that will now never finish is reported to its owner.
        while True:
            try:
                queued = core.tasks.get_nowait()
            except queue.Empty:
                break
            if isinstance(queued, Task):
                queued.sink((queued, DOWN, error))
        lost = [slot.current for slot in slots] + [self._orphan]
        for task in lost:
            if task is not None:
                task.sink((task, DOWN, error))

    def _stop_workers(self, slots: list[Slot], timeout: float) -> list[Slot]:
        """Stop workers newest first; returns those not dead within ``timeout``."""
        refs = [slot.ref for slot in reversed(slots) if slot.ref is not None]
        for ref in refs:
            shutdown(ref, 0)  # marks the reason and posts the stop; waits below
        for _ in refs:
            self._core.tasks.put(WAKE)  # a worker blocked on the queue reads its mail
        deadline = time.monotonic() + timeout
        return [
            slot
            for slot in reversed(slots)
            if slot.ref is not None
            and not wait_dead(slot.ref, max(0.0, deadline - time.monotonic()))
        ]

"""The worker side of a pool: the shared state and the worker actor (tasks: ``_pool_task``).

Workers pull tasks from one shared ``queue.SimpleQueue`` instead of being
handed tasks one by one: a busy worker takes the next task without anyone
waking it, which is what keeps the per-task overhead close to a
``ThreadPoolExecutor``'s (handing each task to a chosen sleeping thread was
measured at 2x slower). A worker is still an :class:`Actor`: it is monitored,
restarted and stopped like any other, because its pull loop returns to its
mailbox whenever mail is waiting (checked after every task, and every
``_POLL_SECONDS`` while idle).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

import pykka

from dspex.errors import ActorStoppedError, SupervisionError
from dspex.supervision._actor import Actor, ExitReason
from dspex.supervision._clock import Clock
from dspex.supervision._events import EventBus
from dspex.supervision._pool_lease import enter_task
from dspex.supervision._pool_task import ERR, OK, Live, Task

__all__: list[str] = []

log = logging.getLogger("dspex.supervision")

_POLL_SECONDS: Final = 0.5
"""How often an idle worker looks at its mailbox (a stray ``stop()`` waits this long)."""


@dataclass(frozen=True, slots=True)
class _Pull:
    """Tells a worker to (re)enter its pull loop."""


@dataclass(frozen=True, slots=True)
class _Wake:
    """Put in the shared queue so a blocked worker looks at its mailbox."""


PULL: Final = _Pull()
WAKE: Final = _Wake()


class Slot:
    """One worker incarnation as the pool sees it; fields are guarded by ``Core.lock``.

    ``current`` is the task the worker took (set by the worker thread before it
    runs it), so whoever sees the worker die knows which task died with it.
    """

    __slots__ = ("current", "id", "ref", "retired")

    def __init__(self, slot_id: int) -> None:
        self.id = slot_id
        self.ref: pykka.ActorRef[Any] | None = None
        self.current: Task | None = None
        self.retired = False


def as_error(reason: ExitReason, what: str) -> BaseException:
    """The exception to report for a worker's exit reason."""
    if isinstance(reason, BaseException):
        return reason
    return ActorStoppedError(f"{what}: its worker stopped ({reason}) before finishing it")


class Core:
    """State shared by the pool actor, its workers and the threads consuming results."""

    def __init__(
        self,
        *,
        name: str,
        size: int,
        burst: int = 0,
        events: EventBus | None,
        clock: Clock,
        max_restarts: int,
        max_seconds: float,
        shutdown_timeout: float,
        start_timeout: float,
    ) -> None:
        self.name = name
        self.size = size
        self.burst = burst
        self.parked = 0  # tasks of all streams parked now (see _pool_lease)
        self.burst_started = 0  # extra workers started for parked tasks
        self.events = events
        self.clock = clock
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.shutdown_timeout = shutdown_timeout
        self.start_timeout = start_timeout
        self.lock = threading.Lock()
        self.tasks: queue.SimpleQueue[Task | _Wake] = queue.SimpleQueue()
        self.slots: dict[int, Slot] = {}  # workers alive and pulling
        self.actor: pykka.ActorRef[Any] | None = None
        self.down: BaseException | None = None  # set once, when the pool stops
        self.started_at = time.monotonic()
        self.tasks_ok = 0
        self.tasks_failed = 0
        self.tasks_timed_out = 0
        self.tasks_retried = 0
        self.worker_restarts = 0
        self.workers_abandoned = 0
        self.stuck_at_stop = 0  # workers still busy when the pool stopped
        self.abandon_at_stop = False  # stop(abandon=True): busy workers are not waited for

    # -- any thread -------------------------------------------------------------

    def dispatch(self, task: Task) -> None:
        """Queue a task for the next free worker; raises if the pool is down."""
        with self.lock:
            if self.down is not None:
                raise self.down
            self.tasks.put(task)

    def note_parked(self, delta: int) -> None:
        """Track parked tasks; start a burst worker while they outnumber those started."""
        with self.lock:
            self.parked += delta
            grow = delta > 0 and self.parked > self.burst_started < self.burst
            if grow:
                self.burst_started += 1
            actor = self.actor if self.down is None else None
        if grow and actor is not None:
            actor.tell(AddWorker())

    def count(self, *, ok: int = 0, failed: int = 0, timed_out: int = 0, retried: int = 0) -> None:
        with self.lock:
            self.tasks_ok += ok
            self.tasks_failed += failed
            self.tasks_timed_out += timed_out
            self.tasks_retried += retried

    def emit(self, name: str, **data: Any) -> None:
        if self.events is not None:
            self.events.emit(name, pool=self.name, **data)

    def running(self, live: Live) -> dict[int, Task]:
        """Tasks of one owner that a worker has taken and not finished, by ``id``."""
        with self.lock:
            found = [slot.current for slot in self.slots.values()]
        return {id(t): t for t in found if t is not None and t.live is live}

    def retire(self, task: Task) -> bool:
        """Give up on the worker running ``task`` (it overran): the pool replaces it.

        Waits (bounded) until the replacement runs, so capacity is back when
        this returns. False if no worker is running the task any more (it
        finished, or was never taken; a queued task whose owner no longer
        wants it is skipped).
        """
        with self.lock:
            for slot in self.slots.values():
                if slot.current is task and not slot.retired:
                    slot.retired = True
                    break
            else:
                return False
            actor = self.actor
        if actor is not None:
            try:
                actor.ask(RetireWorker(slot), timeout=self.start_timeout + 1.0)
            except pykka.ActorDeadError:
                pass  # the pool is stopping; its shutdown handles the worker
            except pykka.Timeout:
                log.warning("pool %r: replacing an abandoned worker is slow", self.name)
        return True

    def down_error(self, reason: ExitReason) -> BaseException:
        """The error consumers see once the pool has stopped for ``reason``."""
        if isinstance(reason, SupervisionError):
            return reason
        if isinstance(reason, BaseException):
            err = SupervisionError(f"worker pool {self.name!r} failed: {reason!r}")
            err.__cause__ = reason
            return err
        return ActorStoppedError(
            f"worker pool {self.name!r} was stopped ({reason}); start a new WorkerPool"
        )


@dataclass(frozen=True, slots=True)
class AddWorker:
    """Asks the pool actor for one more (burst) worker: a task parked and lent its slot."""


@dataclass(frozen=True, slots=True)
class RetireWorker:
    """Asks the pool actor to stop a stuck worker and start a replacement."""

    slot: Slot


class Worker(Actor):
    """Runs tasks from the pool's shared queue, one at a time, in its own thread.

    A task raising an ``Exception`` is that task's failure; a ``BaseException``
    (``SystemExit`` & co) escapes the handler, so the Actor base turns it into
    :class:`ActorAbortError` and the worker dies: a crash the pool handles.
    """

    def __init__(self, core: Core, slot: Slot) -> None:
        super().__init__()
        self._core = core
        self._slot = slot

    @staticmethod
    def _create_actor_inbox() -> Any:
        # pykka only needs put/get/empty, and the pull loop checks empty()
        # after every task: SimpleQueue's C implementation keeps that cheap.
        return queue.SimpleQueue()

    def on_start(self) -> None:
        self.actor_ref.tell(PULL)

    def on_receive(self, message: Any) -> Any:
        if message is PULL:
            self._pull()
            return None
        return super().on_receive(message)

    def _pull(self) -> None:
        tasks = self._core.tasks
        inbox: queue.SimpleQueue[Any] = self.actor_inbox  # type: ignore[assignment]
        slot = self._slot
        lends = self._core.burst > 0  # else tasks get no lease (see _pool_lease)
        while True:
            try:
                task = tasks.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if inbox.empty():
                    continue
                break
            if isinstance(task, _Wake):
                if inbox.empty():
                    continue
                break
            slot.current = task
            if task.live.get(task.seq) is not task:
                slot.current = None  # its owner gave up on it (timeout, close, cancel)
                continue
            if lends:
                enter_task(task)
            try:
                outcome = (task, OK, task.fn(*task.args))
            except Exception as exc:
                outcome = (task, ERR, exc)
            if lends:
                enter_task(None)
            slot.current = None
            task.sink(outcome)
            if slot.retired:
                return  # a stop is on its way; take no more tasks
            if not inbox.empty():
                break
        self.actor_ref.tell(PULL)  # resume after the mailbox is served

"""What static and dynamic supervisors share: starting, stopping and counting children.

Both are :class:`~dspex.supervision.Actor` subclasses, so a supervisor can be
the child of another one and its parent monitors it like any worker. Restart
decisions always run in the supervisor's own thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, ClassVar, NoReturn

import pykka

from dspex._record import Record
from dspex.errors import RegistryError, StartError, SupervisionError, UsageError
from dspex.supervision._actor import (
    SHUTDOWN,
    Actor,
    ExitReason,
    MonitorRef,
    ProcessRef,
    await_started,
    shutdown,
)
from dspex.supervision._child import (
    ALIVE,
    DEAD,
    Child,
    ChildCounts,
    ChildInfo,
    SupervisorSnapshot,
    count,
    kind_of,
)
from dspex.supervision._clock import Clock, SystemClock
from dspex.supervision._events import (
    CHILD_TERMINATED,
    INTENSITY_EXCEEDED,
    EventBus,
)
from dspex.supervision._intensity import RestartWindow
from dspex.supervision._registry import Registry, default_registry

__all__ = ["SupervisorBase", "SupervisorStats"]

log = logging.getLogger("dspex.supervision")


class SupervisorStats(Record):
    """``statistics()`` of one supervisor incarnation.

    ``restarts`` counts restarts charged to the intensity budget over the whole
    life, ``recent_restarts`` those still inside the ``max_seconds`` window;
    ``failures`` counts crashed children and failed (re)starts; ``abandoned``
    children did not stop within their ``shutdown`` timeout. ``uptime`` is in
    seconds of the supervisor's clock, ``started_at`` wall-clock epoch seconds.
    """

    name: str
    restarts: int
    recent_restarts: int
    failures: int
    abandoned: int
    started_at: float
    uptime: float
    active: int
    specs: int


class SupervisorBase(Actor):
    """Shared machinery; subclasses decide how children are stored and watched."""

    dspex_kind: ClassVar[str] = "supervisor"

    def __init__(
        self,
        *,
        name: str,
        max_restarts: int,
        max_seconds: float,
        registry: Registry | None,
        events: EventBus | None,
        clock: Clock | None,
    ) -> None:
        super().__init__()
        if not isinstance(name, str) or not name:
            raise UsageError(f"{type(self).__name__}(name={name!r}): name must be a non-empty str")
        self.name = name
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._window = RestartWindow(max_restarts, max_seconds, self._clock)
        self._events = events if events is not None else EventBus()
        self._registry = registry
        # Guards counters and (in DynamicSupervisor) the child table, which
        # callers' threads touch too. Never held while waiting on an actor.
        self._lock = threading.Lock()
        self._failures = 0
        self._abandoned = 0
        self._started_at = time.time()
        self._started_mono = self._clock.monotonic()
        self._stopping = False

    # -- subclass hooks (supervisor thread unless noted) -----------------------

    @property
    def strategy_name(self) -> str:
        raise NotImplementedError

    def _children_list(self) -> list[Child]:
        """Children in start order (a copy; any thread)."""
        raise NotImplementedError

    def _watch(self, child: Child, ref: ProcessRef) -> MonitorRef:
        """Monitor a freshly started incarnation so its death reaches this supervisor."""
        raise NotImplementedError

    def _unwatch(self, child: Child, mref: MonitorRef) -> None:
        raise NotImplementedError

    def _terminate_all(self) -> None:
        """Stop every running child in reverse start order."""
        raise NotImplementedError

    # -- starting and stopping one incarnation --------------------------------

    @property
    def registry(self) -> Registry:
        return self._registry if self._registry is not None else default_registry()

    def _emit(self, event: str, child: Child, **data: Any) -> None:
        self._events.emit(event, supervisor=self.name, child=child.spec.id, **data)

    def _start_incarnation(self, child: Child) -> pykka.ActorRef[Any]:
        """Start ``child.spec`` and wait for its init ack; raises :class:`StartError`.

        Runs in whichever thread starts the child. On success the child is
        monitored, registered under ``spec.name`` and marked alive.
        """
        spec = child.spec
        where = f"child {spec.id!r} of supervisor {self.name!r}"
        try:
            ref = spec.start()
        except Exception as exc:
            raise StartError(f"{where}: its start function raised {exc!r}") from exc
        if not isinstance(ref, pykka.ActorRef) or not issubclass(ref.actor_class, Actor):
            if isinstance(ref, pykka.ActorRef):
                ref.stop(block=False)
            raise StartError(
                f"{where}: start must return the ActorRef of a dspex.supervision.Actor "
                f"subclass, got {ref!r}; e.g. start=MyActor.start with class MyActor(Actor)"
            )
        mref = self._watch(child, ref)
        try:
            await_started(ref, spec.start_timeout)
            if spec.name is not None:
                self.registry.register(spec.name, ref, replacing=child.last_ref)
        except (StartError, RegistryError) as exc:
            self._unwatch(child, mref)
            if not shutdown(ref, spec.shutdown):
                self._report_abandoned(child, ref)
            raise StartError(f"{where}: {exc}") from exc
        child.ref = ref
        child.mref = mref
        child.last_ref = ref
        child.kind = kind_of(ref.actor_class)
        child.actor_class = ref.actor_class.__name__
        child.status = ALIVE
        child.failed_attempts = 0
        return ref

    def _stop_incarnation(self, child: Child) -> bool:
        """Stop the running incarnation (reason ``shutdown``); False if abandoned.

        The monitor is removed first, so the resulting ``Down`` can never be
        mistaken for a crash that needs a restart.
        """
        ref, mref = child.ref, child.mref
        child.ref = None
        child.mref = None
        child.status = DEAD
        if ref is None:
            return True
        if mref is not None:
            self._unwatch(child, mref)
        if shutdown(ref, child.spec.shutdown):
            self._emit(CHILD_TERMINATED, child, reason=repr(SHUTDOWN), abandoned=False)
            return True
        self._report_abandoned(child, ref)
        return False

    def _report_abandoned(self, child: Child, ref: ProcessRef) -> None:
        with self._lock:
            self._abandoned += 1
        log.warning(
            "supervisor %r abandoned child %r (%s): it did not stop within %ss; its thread "
            "keeps running until its handler returns",
            self.name,
            child.spec.id,
            ref,
            child.spec.shutdown,
        )
        if child.spec.name is not None and isinstance(ref, pykka.ActorRef):
            self.registry.unregister(child.spec.name, ref=ref)
        self._emit(
            CHILD_TERMINATED,
            child,
            reason=f"abandoned after {child.spec.shutdown}s",
            abandoned=True,
        )

    def _stop_in_reverse(self, children: Iterable[Child]) -> None:
        for child in reversed(list(children)):
            if child.ref is not None:
                self._stop_incarnation(child)

    def _note_failure(self) -> None:
        with self._lock:
            self._failures += 1

    def _give_up(self, child: Child, reason: ExitReason) -> NoReturn:
        """Restart intensity exceeded: stop all children, then fail (escalate)."""
        window = self._window
        self._stopping = True
        log.error(
            "supervisor %r: more than %d restarts within %ss (last: child %r exited with %r); "
            "stopping its children and exiting",
            self.name,
            window.max_restarts,
            window.max_seconds,
            child.spec.id,
            reason,
        )
        self._emit(
            INTENSITY_EXCEEDED,
            child,
            reason=repr(reason),
            max_restarts=window.max_restarts,
            max_seconds=window.max_seconds,
        )
        self._terminate_all()
        raise SupervisionError(
            f"supervisor {self.name!r} exceeded its restart intensity: more than "
            f"{window.max_restarts} restart(s) within {window.max_seconds}s (last: child "
            f"{child.spec.id!r} exited with {reason!r}); it stopped its children and exits so "
            "its parent can react. Fix the crashing child or raise max_restarts/max_seconds."
        )

    # -- pykka hooks -------------------------------------------------------------

    def on_stop(self) -> None:
        """Ordered shutdown (supervisor thread): children stop in reverse start order."""
        self._stopping = True
        self._terminate_all()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """The supervisor itself failed (supervisor thread): never leave children behind."""
        self._stopping = True
        self._terminate_all()

    # -- public calls, run in the supervisor thread via proxy or ProxyCall ------

    def which_children(self) -> list[ChildInfo]:
        """``(id, ref | None, restart, kind)`` for each child, in start order."""
        return [c.info() for c in self._children_list()]

    def count_children(self) -> ChildCounts:
        """Child specs, running children, and specs that are supervisors / workers."""
        return count(self._children_list())

    def statistics(self) -> SupervisorStats:
        """Restart, failure and abandonment counters plus uptime."""
        counts = self.count_children()
        with self._lock:
            failures, abandoned = self._failures, self._abandoned
        return SupervisorStats(
            name=self.name,
            restarts=self._window.total,
            recent_restarts=self._window.recent(),
            failures=failures,
            abandoned=abandoned,
            started_at=self._started_at,
            uptime=self._clock.monotonic() - self._started_mono,
            active=counts.active,
            specs=counts.specs,
        )

    def describe(self) -> SupervisorSnapshot:
        """This supervisor and its children as data, for :func:`tree`."""
        return SupervisorSnapshot(
            name=self.name,
            actor_class=type(self).__name__,
            strategy=self.strategy_name,
            children=tuple(c.snapshot() for c in self._children_list()),
        )

"""The dynamic supervisor: children started on demand, e.g. one per program run.

Starting and terminating a child happen in the caller's thread: the child is
started and acknowledged there, then published in the child table under a
lock, so a start costs no round trip through the supervisor's mailbox. A
death that calls for no restart (a temporary child, or a transient one that
stopped normally) is also booked under that lock, in the dying child's own
thread: waking the supervisor once per program run would cost more than the
run's own bookkeeping. A death that may need a restart goes through the
mailbox, so every restart decision runs in the supervisor's thread. Children
are one_for_one, each with its own restart type, under the same intensity rule
as :class:`~dspex.supervision.Supervisor`.
"""

from __future__ import annotations

import functools
import itertools
import weakref
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import pykka

from dspex._record import Record
from dspex.errors import ActorStoppedError, MaxChildrenError, StartError, UsageError
from dspex.supervision._actor import (
    Down,
    ExitReason,
    LightProcess,
    MonitorRef,
    ProcessRef,
    demonitor,
    monitor,
)
from dspex.supervision._base import SupervisorBase
from dspex.supervision._child import (
    ALIVE,
    DEAD,
    RESTARTING,
    WORKER,
    Child,
    is_crash,
    wants_restart,
)
from dspex.supervision._clock import Clock
from dspex.supervision._events import CHILD_RESTARTED, CHILD_STARTED, CHILD_TERMINATED, EventBus
from dspex.supervision._registry import Registry
from dspex.supervision._spec import ChildSpec, Restart

__all__ = ["DynamicSupervisor", "dynamic_of"]


class _ChildDown(Record):
    """A child's death, forwarded into the supervisor's mailbox by its monitor."""

    child: Child
    down: Down


class _RetryRestart(Record):
    """Self-message: try again to start a child whose restart failed."""

    child: Child
    reason: ExitReason


class DynamicSupervisor(SupervisorBase):
    """Supervises children added at run time (see the module docstring).

    ``max_children`` (None: unbounded) caps running plus starting children;
    one more raises :class:`MaxChildrenError`. :meth:`start_child` and
    :meth:`terminate_child` may run in any thread: call them through the module
    functions :func:`~dspex.supervision.start_child` and
    :func:`~dspex.supervision.terminate_child`, which take the fast path.
    """

    def __init__(
        self,
        *,
        max_children: int | None = None,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        name: str = "dynamic_supervisor",
        registry: Registry | None = None,
        events: EventBus | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            name=name,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            registry=registry,
            events=events,
            clock=clock,
        )
        if max_children is not None and (
            isinstance(max_children, bool) or not isinstance(max_children, int) or max_children < 1
        ):
            raise UsageError(
                f"DynamicSupervisor(name={name!r}, max_children={max_children!r}): must be an "
                "int >= 1, or None for no limit"
            )
        self.max_children = max_children
        self._children: dict[int, Child] = {}  # insertion order is start order
        self._by_urn: dict[str, Child] = {}
        # Children being started by a caller: key -> a Down that arrived before
        # the child was published (re-sent to the mailbox once it is).
        self._starting: dict[int, Down | None] = {}
        self._closed = False
        self._keys = itertools.count(1)
        # Lets callers reach this object (for the lock-protected fast path)
        # without keeping a stopped supervisor alive.
        self.actor_ref._dspex_dynamic = weakref.ref(self)  # type: ignore[attr-defined]

    @classmethod
    def spec(
        cls,
        id: str,
        *,
        max_children: int | None = None,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        name: str | None = None,
        registry: Registry | None = None,
        events: EventBus | None = None,
        clock: Clock | None = None,
        restart: Restart = Restart.PERMANENT,
        shutdown: float = 30.0,
        significant: bool = False,
        register_as: str | None = None,
        start_timeout: float = 5.0,
    ) -> ChildSpec:
        """A :class:`ChildSpec` that runs a dynamic supervisor under another supervisor.

        ``shutdown`` must cover stopping all of its children one by one.
        """
        start: Callable[[], pykka.ActorRef[Any]] = functools.partial(
            cls.start,
            max_children=max_children,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            name=name or id,
            registry=registry,
            events=events,
            clock=clock,
        )
        return ChildSpec(
            id=id,
            start=start,
            restart=restart,
            shutdown=shutdown,
            significant=significant,
            name=register_as,
            start_timeout=start_timeout,
        )

    @property
    def strategy_name(self) -> str:
        return "one_for_one"

    def __repr__(self) -> str:
        return f"<DynamicSupervisor {self.name!r} ({self.actor_urn})>"

    # -- SupervisorBase hooks -------------------------------------------------------

    def _children_list(self) -> list[Child]:
        with self._lock:
            return list(self._children.values())

    def _watch(self, child: Child, ref: ProcessRef) -> MonitorRef:
        def forward(down: Down) -> None:  # runs in the dying child's thread
            self._child_down(child, down)

        return monitor(ref, forward)

    def _child_down(self, child: Child, down: Down) -> None:
        """Book a death here (any thread) unless it may need a restart (supervisor thread)."""
        if wants_restart(child.spec.restart, down.reason):
            with suppress(pykka.ActorDeadError):  # a dead supervisor restarts nothing
                self.actor_ref.tell(_ChildDown(child, down))
            return
        self._on_child_down(child, down)

    def _unwatch(self, child: Child, mref: MonitorRef) -> None:
        demonitor(mref)

    def _terminate_all(self) -> None:
        with self._lock:
            self._closed = True
            children = list(self._children.values())
            self._children.clear()
            self._by_urn.clear()
        self._stop_in_reverse(children)

    # -- any thread -----------------------------------------------------------------

    def _stopped_error(self) -> ActorStoppedError:
        return ActorStoppedError(
            f"dynamic supervisor {self.name!r} has stopped or is stopping; it takes no new "
            "children (start a new supervisor)"
        )

    def start_child(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        """Start a child in the calling thread and supervise it; returns its ref.

        Raises :class:`MaxChildrenError` when full, :class:`StartError` when the
        child fails to start, :class:`ActorStoppedError` once the supervisor stops.
        """
        if not isinstance(spec, ChildSpec):
            raise UsageError(
                f"dynamic supervisor {self.name!r}: start_child needs a ChildSpec, got {spec!r}"
            )
        if spec.significant:
            raise UsageError(
                f"dynamic supervisor {self.name!r}: child {spec.id!r} is significant, but "
                "dynamic supervisors have no auto_shutdown; drop significant=True"
            )
        child = Child(spec, key=next(self._keys))
        with self._lock:
            if self._closed:
                raise self._stopped_error()
            limit = self.max_children
            if limit is not None and len(self._children) + len(self._starting) >= limit:
                raise MaxChildrenError(
                    f"dynamic supervisor {self.name!r} already runs max_children={limit} "
                    f"children; wait for some to finish, terminate one, or raise max_children"
                )
            self._starting[child.key] = None
        try:
            ref = self._start_incarnation(child)
        except BaseException:
            with self._lock:
                self._starting.pop(child.key, None)
            self._note_failure()
            raise
        with self._lock:
            early = self._starting.pop(child.key, None)
            published = not self._closed
            if published:
                self._children[child.key] = child
                self._by_urn[ref.actor_urn] = child
        if not published:
            self._stop_incarnation(child)
            raise self._stopped_error()
        self._emit(CHILD_STARTED, child, ref=str(ref))
        if early is not None:  # it died before we published it: book it now
            self._child_down(child, early)
        return ref

    def adopt(self, process: LightProcess, spec: ChildSpec) -> None:
        """Supervise a running light process as a temporary child (any thread).

        Its death is booked when it reports it (:meth:`LightProcess.exit`);
        stopping this supervisor stops it like any child. ``max_children``
        does not refuse it (that limit bounds the threads children take, and
        a light process takes none; its owner bounds how many run), but it
        counts against later :meth:`start_child` calls while it lives.
        Raises :class:`ActorStoppedError` once the supervisor stops.
        """
        child = Child(
            spec,
            key=next(self._keys),
            ref=process,
            kind=WORKER,
            actor_class=process.actor_class.__name__,
            status=ALIVE,
        )
        with self._lock:
            if self._closed:
                raise self._stopped_error()
            self._children[child.key] = child
            self._by_urn[process.actor_urn] = child
        # The exit is booked by a direct call rather than a monitor: the same
        # booking, without a Down per run. The adopting thread is the one that
        # executes the process and reports its exit, so it is alive here.
        process.on_exit = functools.partial(self._light_exit, child)

    def _light_exit(self, child: Child, reason: ExitReason) -> None:
        """Book a light child's exit (its executing thread); never restarted."""
        with self._lock:
            if self._children.get(child.key) is not child:
                return  # terminated on purpose (its termination booked it)
            del self._children[child.key]
            if child.ref is not None:
                self._by_urn.pop(child.ref.actor_urn, None)
            child.ref = None
            child.status = DEAD
        if is_crash(reason):
            self._note_failure()

    def terminate_child(self, ref: ProcessRef) -> bool:
        """Stop a child (reason ``shutdown``, no restart); False if it is not a current child."""
        if not isinstance(ref, pykka.ActorRef | LightProcess):
            raise UsageError(
                f"dynamic supervisor {self.name!r}: terminate_child needs the child's ActorRef, "
                f"got {ref!r}"
            )
        with self._lock:
            child = self._by_urn.pop(ref.actor_urn, None)
            if child is None:
                return False
            del self._children[child.key]
        self._stop_incarnation(child)
        return True

    def restart_child(self, child_id: str) -> pykka.ActorRef[Any]:
        """Not supported: a dynamic supervisor keeps no specs of terminated children."""
        raise UsageError(
            f"dynamic supervisor {self.name!r} keeps no terminated children to restart "
            f"(asked for {child_id!r}); call start_child with the spec again"
        )

    def delete_child(self, child_id: str) -> None:
        """Not supported: terminated dynamic children are forgotten at once."""
        raise UsageError(
            f"dynamic supervisor {self.name!r} keeps no terminated children to delete "
            f"(asked for {child_id!r}); terminate_child(ref) is enough"
        )

    # -- supervisor thread ----------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _ChildDown):
            self._on_child_down(message.child, message.down)
            return None
        if isinstance(message, _RetryRestart):
            self._retry(message)
            return None
        return super().on_receive(message)

    def _on_child_down(self, child: Child, down: Down) -> None:
        """Book a death. Any thread when no restart is wanted, else the supervisor's."""
        reason = down.reason
        with self._lock:
            if child.key in self._starting:
                self._starting[child.key] = down
                return
            current = child.mref
            if (
                self._children.get(child.key) is not child
                or current is None
                or current.id != down.monitor.id
            ):
                return  # terminated on purpose, or an older incarnation
            restart = not self._stopping and wants_restart(child.spec.restart, reason)
            self._by_urn.pop(down.ref.actor_urn, None)
            child.ref = None
            child.mref = None
            child.status = RESTARTING if restart else DEAD
            if not restart:
                del self._children[child.key]
        if is_crash(reason):
            self._note_failure()
        self._emit(CHILD_TERMINATED, child, reason=repr(reason), abandoned=False)
        if not restart:
            return
        if self._window.add():
            self._give_up(child, reason)
        self._restart(child, reason)

    def _restart(self, child: Child, reason: ExitReason) -> None:
        try:
            ref = self._start_incarnation(child)
        except StartError as exc:
            self._note_failure()
            child.failed_attempts += 1
            if child.failed_attempts > self._window.max_restarts:
                self._give_up(child, exc)
            self.actor_ref.tell(_RetryRestart(child, exc))
            return
        with self._lock:
            self._by_urn[ref.actor_urn] = child
        child.restarts += 1
        self._emit(CHILD_RESTARTED, child, reason=repr(reason), restarts=child.restarts)

    def _retry(self, message: _RetryRestart) -> None:
        child = message.child
        with self._lock:
            if self._children.get(child.key) is not child or child.status != RESTARTING:
                return
        if self._stopping:
            return
        if self._window.add():
            self._give_up(child, message.reason)
        self._restart(child, message.reason)


def dynamic_of(sup: pykka.ActorRef[Any]) -> DynamicSupervisor | None:
    """The live DynamicSupervisor behind ``sup`` (for the fast path), or None."""
    pinned: weakref.ref[DynamicSupervisor] | None = getattr(sup, "_dspex_dynamic", None)
    return pinned() if pinned is not None else None

"""The static supervisor: a fixed, ordered list of children and a restart strategy.

It follows OTP's ``supervisor``: children start in order (a failure stops the
ones already started, newest first, and fails the start); a dead child is
restarted according to its restart type and the strategy; more than
``max_restarts`` restarts within ``max_seconds`` make the supervisor stop all
children and fail, so its parent applies its own strategy. All child
book-keeping happens in the supervisor's own thread.

Two deliberate simplifications: a group restart (one_for_all, rest_for_one)
restarts only siblings that were running or already restarting, not ones that
had terminated for good; and a child that fails to restart is retried from the
mailbox (each retry is charged to the intensity budget, and more than
``max_restarts`` consecutive failures of one child give up regardless of time).
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Iterable
from typing import Any, Self, TypeVar

import pykka

from dspex._record import Record
from dspex.errors import ActorStoppedError, StartError, UsageError
from dspex.supervision._actor import Down, ExitReason, MonitorRef, ProcessRef, shutdown
from dspex.supervision._base import SupervisorBase
from dspex.supervision._child import (
    DEAD,
    RESTARTING,
    Child,
    is_crash,
    wants_restart,
)
from dspex.supervision._clock import Clock
from dspex.supervision._events import (
    CHILD_RESTARTED,
    CHILD_STARTED,
    CHILD_TERMINATED,
    EventBus,
)
from dspex.supervision._registry import Registry
from dspex.supervision._spec import ChildSpec, Restart, Strategy

__all__ = ["AutoShutdown", "Supervisor", "start_budget", "stop_budget"]

log = logging.getLogger("dspex.supervision")

E = TypeVar("E", bound=enum.Enum)


class AutoShutdown(enum.Enum):
    """When a supervisor stops itself because ``significant`` children ended (OTP)."""

    NEVER = "never"  # significant children are not allowed
    ANY_SIGNIFICANT = "any_significant"  # as soon as one ends without a restart
    ALL_SIGNIFICANT = "all_significant"  # once the last one has ended


def coerce_enum(kind: type[E], value: Any, field: str) -> E:
    """Accept an enum member or its string value; a clear error otherwise."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(f"{kind.__name__}.{m.name}" for m in kind)
        raise UsageError(f"{field}={value!r} is not valid; use one of {choices}") from None


def start_budget(children: Iterable[ChildSpec]) -> float:
    """Seconds a supervisor may need to start ``children`` one after another."""
    return sum(c.start_timeout for c in children) + 5.0


def stop_budget(children: Iterable[ChildSpec]) -> float:
    """Seconds a supervisor may need to stop ``children`` one after another."""
    return sum(c.shutdown for c in children) + 1.0


def check_spec(spec: Any, taken: set[str], auto_shutdown: AutoShutdown, owner: str) -> ChildSpec:
    """Validate one child spec for a supervisor named ``owner``."""
    if not isinstance(spec, ChildSpec):
        raise UsageError(
            f"supervisor {owner!r}: children must be ChildSpec objects, got {spec!r}; "
            "wrap it as ChildSpec(id=..., start=...)"
        )
    if spec.id in taken:
        raise UsageError(
            f"supervisor {owner!r}: child id {spec.id!r} is used twice; ids must be unique"
        )
    if spec.significant and auto_shutdown is AutoShutdown.NEVER:
        raise UsageError(
            f"supervisor {owner!r}: child {spec.id!r} is significant but auto_shutdown is "
            "NEVER; pass auto_shutdown=AutoShutdown.ANY_SIGNIFICANT or ALL_SIGNIFICANT, "
            "or drop significant=True"
        )
    return spec


class _RetryRestart(Record):
    """Self-message: try again to start children left in ``restarting``."""

    child_id: str
    reason: ExitReason


class Supervisor(SupervisorBase):
    """An OTP supervisor for a fixed list of children (see the module docstring).

    Start it with :meth:`start_link` (or nest it with :meth:`spec`). Its public
    calls (``which_children``, ``count_children``, ``statistics``,
    ``start_child``, ``terminate_child``, ``restart_child``, ``delete_child``)
    run in its thread; use the module functions of the same names, which carry
    a timeout, or a proxy.
    """

    def __init__(
        self,
        children: Iterable[ChildSpec] = (),
        *,
        strategy: Strategy | str = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        auto_shutdown: AutoShutdown | str = AutoShutdown.NEVER,
        name: str = "supervisor",
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
        self.strategy = coerce_enum(Strategy, strategy, "strategy")
        self.auto_shutdown = coerce_enum(AutoShutdown, auto_shutdown, "auto_shutdown")
        taken: set[str] = set()
        specs = []
        for spec in children:
            specs.append(check_spec(spec, taken, self.auto_shutdown, name))
            taken.add(spec.id)
        self._specs = tuple(specs)
        self._children: list[Child] = []
        self._by_mref: dict[int, Child] = {}

    @classmethod
    def start_link(
        cls, *args: Any, start_timeout: float | None = None, **kwargs: Any
    ) -> pykka.ActorRef[Self]:
        """Start the supervisor and its children; returns once all have acknowledged.

        ``start_timeout`` defaults to the children's start timeouts added up.
        Raises :class:`StartError` if a child fails to start.
        """
        if "children" in kwargs:
            kwargs["children"] = list(kwargs["children"])
            children = kwargs["children"]
        elif args:
            args = (list(args[0]), *args[1:])
            children = args[0]
        else:
            children = []
        if start_timeout is None:
            start_timeout = start_budget(c for c in children if isinstance(c, ChildSpec))
        return super().start_link(*args, start_timeout=start_timeout, **kwargs)

    @classmethod
    def spec(
        cls,
        id: str,
        children: Iterable[ChildSpec] = (),
        *,
        strategy: Strategy | str = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        auto_shutdown: AutoShutdown | str = AutoShutdown.NEVER,
        name: str | None = None,
        registry: Registry | None = None,
        events: EventBus | None = None,
        clock: Clock | None = None,
        restart: Restart = Restart.PERMANENT,
        shutdown: float | None = None,
        significant: bool = False,
        register_as: str | None = None,
        start_timeout: float | None = None,
    ) -> ChildSpec:
        """A :class:`ChildSpec` that runs this supervisor as a child of another.

        ``name`` (the supervisor's name in events and trees) defaults to ``id``;
        ``register_as`` registers it in the parent's registry. ``shutdown`` and
        ``start_timeout`` default to the children's budgets added up.
        """
        specs = tuple(children)
        auto = coerce_enum(AutoShutdown, auto_shutdown, "auto_shutdown")
        taken: set[str] = set()
        for child in specs:
            check_spec(child, taken, auto, name or id)
            taken.add(child.id)
        start = functools.partial(
            cls.start,
            specs,
            strategy=strategy,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            auto_shutdown=auto,
            name=name or id,
            registry=registry,
            events=events,
            clock=clock,
        )
        return ChildSpec(
            id=id,
            start=start,
            restart=restart,
            shutdown=shutdown if shutdown is not None else stop_budget(specs),
            significant=significant,
            name=register_as,
            start_timeout=start_timeout if start_timeout is not None else start_budget(specs),
        )

    @property
    def strategy_name(self) -> str:
        return self.strategy.value

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} {self.strategy.value} ({self.actor_urn})>"

    # -- SupervisorBase hooks (supervisor thread) -------------------------------

    def _children_list(self) -> list[Child]:
        return list(self._children)

    def _watch(self, child: Child, ref: ProcessRef) -> MonitorRef:
        mref = self.monitor(ref)
        self._by_mref[mref.id] = child
        return mref

    def _unwatch(self, child: Child, mref: MonitorRef) -> None:
        self._by_mref.pop(mref.id, None)
        self.demonitor(mref)

    def _terminate_all(self) -> None:
        self._stop_in_reverse(self._children)

    # -- life cycle ---------------------------------------------------------------

    def on_start(self) -> None:
        """Start the children in order (supervisor thread); undo and fail on an error."""
        try:
            for spec in self._specs:
                child = Child(spec)
                self._start_incarnation(child)
                self._children.append(child)
                self._emit(CHILD_STARTED, child, ref=str(child.ref))
        except BaseException as exc:
            self._stopping = True
            self._terminate_all()
            if isinstance(exc, StartError):
                raise StartError(f"supervisor {self.name!r} failed to start: {exc}") from exc
            raise

    def on_down(self, down: Down) -> None:
        """A child died (supervisor thread): apply its restart type and the strategy."""
        child = self._by_mref.pop(down.monitor.id, None)
        if child is None or child.ref is None or child.ref.actor_urn != down.ref.actor_urn:
            return
        child.ref = None
        child.mref = None
        child.status = DEAD
        reason = down.reason
        if is_crash(reason):
            self._note_failure()
        self._emit(CHILD_TERMINATED, child, reason=repr(reason), abandoned=False)
        if self._stopping:
            return
        if not wants_restart(child.spec.restart, reason):
            if child.spec.restart is Restart.TEMPORARY:
                self._children.remove(child)
            self._check_auto_shutdown(child)
            return
        if self._window.add():
            self._give_up(child, reason)
        self._restart_group(child, reason)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _RetryRestart):
            self._retry(message)
            return None
        return super().on_receive(message)

    # -- restarts (supervisor thread) -------------------------------------------

    def _group(self, child: Child) -> list[Child]:
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        if self.strategy is Strategy.ONE_FOR_ALL:
            return list(self._children)
        return self._children[self._children.index(child) :]

    def _restart_group(self, child: Child, reason: ExitReason) -> None:
        group = self._group(child)
        again = [c for c in group if c is child or c.ref is not None or c.status == RESTARTING]
        self._stop_in_reverse(c for c in group if c is not child)
        for sibling in again:
            if sibling.spec.restart is Restart.TEMPORARY:
                self._children.remove(sibling)  # OTP: a temporary sibling is not brought back
            else:
                sibling.status = RESTARTING
        self._restart_pending(child.spec.id, reason)

    def _restart_pending(self, trigger: str, reason: ExitReason) -> None:
        for child in list(self._children):
            if child.status != RESTARTING:
                continue
            try:
                self._start_incarnation(child)
            except StartError as exc:
                child.status = RESTARTING
                self._note_failure()
                child.failed_attempts += 1
                log.error(
                    "supervisor %r could not restart child %r: %s", self.name, child.spec.id, exc
                )
                if child.failed_attempts > self._window.max_restarts:
                    self._give_up(child, exc)
                self.actor_ref.tell(_RetryRestart(child.spec.id, exc))
                return
            child.restarts += 1
            self._emit(
                CHILD_RESTARTED,
                child,
                reason=repr(reason),
                trigger=trigger,
                restarts=child.restarts,
            )

    def _retry(self, message: _RetryRestart) -> None:
        if self._stopping:
            return
        pending = [c for c in self._children if c.status == RESTARTING]
        if not pending:
            return
        if self._window.add():
            self._give_up(pending[0], message.reason)
        self._restart_pending(message.child_id, message.reason)

    def _check_auto_shutdown(self, child: Child) -> None:
        if not child.spec.significant or self.auto_shutdown is AutoShutdown.NEVER:
            return
        if self.auto_shutdown is AutoShutdown.ALL_SIGNIFICANT and any(
            c.spec.significant and c is not child and c.status != DEAD for c in self._children
        ):
            return
        log.info(
            "supervisor %r: significant child %r ended; auto_shutdown=%s stops the supervisor",
            self.name,
            child.spec.id,
            self.auto_shutdown.value,
        )
        self._stopping = True
        # Stop with reason "shutdown", as OTP does; on_stop stops the others in order.
        shutdown(self.actor_ref, 0.0)

    # -- public calls (supervisor thread) -----------------------------------------

    def _find(self, child: str | pykka.ActorRef[Any]) -> Child | None:
        if isinstance(child, pykka.ActorRef):
            return next(
                (
                    c
                    for c in self._children
                    if c.ref is not None and c.ref.actor_urn == child.actor_urn
                ),
                None,
            )
        for c in self._children:
            if c.spec.id == child:
                return c
        ids = [c.spec.id for c in self._children]
        raise UsageError(f"supervisor {self.name!r} has no child {child!r}; its children are {ids}")

    def start_child(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        """Add ``spec`` at the end and start it; raises :class:`StartError` on failure."""
        if self._stopping:
            raise ActorStoppedError(f"supervisor {self.name!r} is stopping; it takes no children")
        check_spec(spec, {c.spec.id for c in self._children}, self.auto_shutdown, self.name)
        child = Child(spec)
        ref = self._start_incarnation(child)
        self._children.append(child)
        self._emit(CHILD_STARTED, child, ref=str(ref))
        return ref

    def terminate_child(self, child: str | pykka.ActorRef[Any]) -> bool:
        """Stop a child by id (or current ref) and keep its spec; True if it was running.

        A temporary child's spec is deleted, as in OTP. Never triggers a restart.
        """
        found = self._find(child)
        if found is None:
            return False
        was_running = found.ref is not None or found.status == RESTARTING
        self._stop_incarnation(found)
        if found.spec.restart is Restart.TEMPORARY:
            self._children.remove(found)
        return was_running

    def restart_child(self, child_id: str) -> pykka.ActorRef[Any]:
        """Start a terminated child again (not counted toward intensity)."""
        child = self._find(child_id)
        assert child is not None  # an id either matches or _find raised
        if child.status != DEAD:
            raise UsageError(
                f"child {child_id!r} of supervisor {self.name!r} is {child.status}; "
                f"call terminate_child({child_id!r}) first"
            )
        ref = self._start_incarnation(child)
        child.restarts += 1
        self._emit(CHILD_RESTARTED, child, reason="restart_child", restarts=child.restarts)
        return ref

    def delete_child(self, child_id: str) -> None:
        """Forget a terminated child's spec."""
        child = self._find(child_id)
        assert child is not None
        if child.status != DEAD:
            raise UsageError(
                f"child {child_id!r} of supervisor {self.name!r} is {child.status}; "
                f"call terminate_child({child_id!r}) before delete_child"
            )
        self._children.remove(child)

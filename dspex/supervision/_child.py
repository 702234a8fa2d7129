"""What a supervisor knows about each child, and the read-only views it hands out."""

from __future__ import annotations

from typing import Any, Final

import pykka

from dspex._record import Record
from dspex.supervision._actor import NORMAL, SHUTDOWN, ExitReason, MonitorRef, ProcessRef
from dspex.supervision._spec import ChildSpec, Restart

__all__ = [
    "ALIVE",
    "DEAD",
    "RESTARTING",
    "ChildCounts",
    "ChildInfo",
    "ChildSnapshot",
    "SupervisorSnapshot",
    "kind_of",
]

ALIVE: Final = "alive"
"""The child's current incarnation is running."""
DEAD: Final = "dead"
"""The child is not running and no restart is pending (terminated, or a supervisor stopped it)."""
RESTARTING: Final = "restarting"
"""The child died and its supervisor is (re)trying to start a new incarnation."""

WORKER: Final = "worker"
SUPERVISOR: Final = "supervisor"


def kind_of(actor_class: type[Any]) -> str:
    """``"supervisor"`` for actor classes that supervise others, else ``"worker"``.

    A class opts in with ``dspex_kind = "supervisor"``; :func:`~dspex.supervision.tree`
    then asks it for ``describe()`` to walk below it.
    """
    kind = getattr(actor_class, "dspex_kind", WORKER)
    return SUPERVISOR if kind == SUPERVISOR else WORKER


def is_crash(reason: ExitReason) -> bool:
    """True unless the child stopped on request (OTP: anything but normal/shutdown)."""
    return not (isinstance(reason, str) and reason in (NORMAL, SHUTDOWN))


def wants_restart(restart: Restart, reason: ExitReason) -> bool:
    """OTP's rule: permanent always, transient after a crash, temporary never."""
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return is_crash(reason)
    return False


class ChildInfo(Record):
    """One row of ``which_children()``: ``ref`` is None while the child is not running."""

    id: str
    ref: ProcessRef | None
    restart: Restart
    kind: str


class ChildCounts(Record):
    """``count_children()``: child specs, running children, and specs by kind."""

    specs: int
    active: int
    supervisors: int
    workers: int


class ChildSnapshot(Record):
    """A child as its supervisor sees it at one instant (for :func:`tree`)."""

    id: str
    ref: ProcessRef | None
    kind: str
    actor_class: str
    status: str
    restart: Restart
    restarts: int


class SupervisorSnapshot(Record):
    """What ``describe()`` returns: a supervisor's name, strategy and children."""

    name: str
    actor_class: str
    strategy: str
    children: tuple[ChildSnapshot, ...]


class Child:
    """Mutable book-keeping for one child; owned by its supervisor.

    A static supervisor touches it only in its own thread; a dynamic one also
    from callers' threads, always under its lock once the child is published.
    A plain class (not a dataclass): cheaper to define at import.
    """

    __slots__ = (
        "actor_class",
        "failed_attempts",
        "key",
        "kind",
        "last_ref",
        "mref",
        "ref",
        "restarts",
        "spec",
        "status",
    )

    def __init__(
        self,
        spec: ChildSpec,
        key: int = 0,
        ref: ProcessRef | None = None,
        *,
        kind: str = WORKER,
        actor_class: str = "?",
        status: str = DEAD,
    ) -> None:
        self.spec = spec
        self.key = key
        self.ref = ref
        self.mref: MonitorRef | None = None
        self.last_ref: pykka.ActorRef[Any] | None = None
        self.kind = kind
        self.actor_class = actor_class
        self.status = status
        self.restarts = 0
        self.failed_attempts = 0

    def __repr__(self) -> str:
        return f"Child(id={self.spec.id!r}, key={self.key}, status={self.status!r})"

    def info(self) -> ChildInfo:
        return ChildInfo(self.spec.id, self.ref, self.spec.restart, self.kind)

    def snapshot(self) -> ChildSnapshot:
        return ChildSnapshot(
            id=self.spec.id,
            ref=self.ref,
            kind=self.kind,
            actor_class=self.actor_class,
            status=self.status,
            restart=self.spec.restart,
            restarts=self.restarts,
        )


def count(children: list[Child]) -> ChildCounts:
    """Tally children the way OTP's ``count_children`` does."""
    active = sum(1 for c in children if c.ref is not None)
    supervisors = sum(1 for c in children if c.kind == SUPERVISOR)
    return ChildCounts(len(children), active, supervisors, len(children) - supervisors)

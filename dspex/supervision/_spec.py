"""Child specifications: how a supervisor starts, restarts and stops a child."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from dspex.errors import UsageError

__all__ = ["ChildSpec", "Restart", "Strategy"]


class Restart(enum.Enum):
    """When a dead child is restarted (OTP's restart types)."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit (a crash)
    TEMPORARY = "temporary"  # never


class Strategy(enum.Enum):
    """Which children restart when one dies."""

    ONE_FOR_ONE = "one_for_one"  # just that child
    ONE_FOR_ALL = "one_for_all"  # all of them
    REST_FOR_ONE = "rest_for_one"  # it and those started after it


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to run one child.

    ``start`` is called in the supervisor's thread and returns the child's
    ``ActorRef`` (an :class:`~dspex.supervision.Actor`; the supervisor waits for
    its ``on_start`` to finish, up to ``start_timeout``). ``shutdown`` is the
    seconds a stop may take before the child is abandoned and reported.
    ``significant`` children drive ``auto_shutdown``. ``name`` registers the
    current incarnation in the supervisor's registry, surviving restarts.
    """

    id: str
    start: Callable[[], pykka.ActorRef[Any]]
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0
    significant: bool = False
    name: str | None = None
    start_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise UsageError(f"ChildSpec(id={self.id!r}): id must be a non-empty string")
        if not callable(self.start):
            raise UsageError(
                f"ChildSpec(id={self.id!r}, start={self.start!r}): start must be a callable "
                "returning an ActorRef, e.g. lambda: MyActor.start()"
            )
        if self.shutdown <= 0:
            raise UsageError(
                f"ChildSpec(id={self.id!r}, shutdown={self.shutdown}): must be > 0 seconds"
            )
        if self.significant and self.restart is Restart.PERMANENT:
            raise UsageError(
                f"ChildSpec(id={self.id!r}): a significant child cannot be PERMANENT "
                "(OTP rule); use Restart.TRANSIENT or Restart.TEMPORARY"
            )

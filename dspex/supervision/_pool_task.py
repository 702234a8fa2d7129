"""A pool task as its worker, its stream and its lease see it, and the kinds of
outcome its sink receives.

Kept apart from the worker so the lease (which a task reaches while it runs)
and the worker (which runs it) both build on it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

from dspex._record import Record

__all__ = ["DOWN", "ERR", "LOST", "OK", "PARK", "RESUME", "UNPARK", "Live", "Task"]

# Kinds of message a task's sink receives, as (task, kind, payload).
OK: Final = 0  # payload: the return value
ERR: Final = 1  # payload: the exception the task raised
LOST: Final = 2  # payload: the exit reason of the worker that died with it
DOWN: Final = 3  # payload: the error the whole pool stopped or failed with


class Live(Protocol):
    """The owner's table of wanted task attempts: ``get(seq) is task`` means run it."""

    def get(self, key: int, /) -> Any: ...


class Task(Record):
    """One attempt at running ``fn(*args)``; a retry is a new tuple with ``attempt + 1``."""

    seq: int
    attempt: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    live: Live
    sink: Callable[[tuple[Task, int, Any]], None]
    """Where the outcome goes; never raises, any thread may call it."""


# Lease signals, as (task, kind, lease): a parked task gives its slot back
# until it asks to resume (see ``_pool_lease``).
PARK: Final = 4
RESUME: Final = 5
UNPARK: Final = 6

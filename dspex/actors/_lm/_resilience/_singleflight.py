"""Single-flight: identical requests in flight share one upstream call.

The first request for a key starts the work as a task; requests for the same
key that arrive before it finishes join it as extra waiters, and every waiter
gets the same outcome. Nothing is remembered afterwards: this collapses
concurrent duplicates, it is not a cache. Runs on one asyncio loop thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["Notify", "SingleFlight"]

log = logging.getLogger("dspex.lm")

T = TypeVar("T")
W = TypeVar("W")

Notify = Callable[[W, "asyncio.Task[T]", bool], None]
"""``notify(waiter, finished_task, shared)``, on the loop thread; quick, must not raise.

``shared`` is True for waiters that joined a flight someone else started.
"""


class _Flight(Generic[T, W]):
    __slots__ = ("leader", "task", "waiters")

    def __init__(self, task: asyncio.Task[T], leader: W) -> None:
        self.task = task
        self.leader = leader
        self.waiters: list[W] = [leader]


class SingleFlight(Generic[T, W]):
    """In-flight work by key; every method must be called on the loop thread."""

    def __init__(self, notify: Notify[W, T]) -> None:
        self._notify = notify
        self._flights: dict[Hashable, _Flight[T, W]] = {}
        self.shared = 0  # waiters that joined an existing flight

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._flights

    def join(self, key: Hashable, start: Callable[[], Coroutine[Any, Any, T]], waiter: W) -> bool:
        """Wait for ``key``'s outcome, running ``start()`` if nothing is in flight for it.

        Returns True when the waiter joined a flight that was already running.
        """
        flight = self._flights.get(key)
        if flight is not None:
            flight.waiters.append(waiter)
            self.shared += 1
            return True
        task = asyncio.get_running_loop().create_task(start())
        flight = _Flight(task, waiter)
        self._flights[key] = flight
        task.add_done_callback(lambda done: self._finish(key, flight, done))
        return False

    def waiters(self, key: Hashable) -> tuple[W, ...]:
        """Who waits for ``key``'s outcome now (empty if nothing is in flight for it)."""
        flight = self._flights.get(key)
        return () if flight is None else tuple(flight.waiters)

    def leave(self, key: Hashable, waiter: W) -> None:
        """Stop waiting; when the last waiter leaves, the work is cancelled."""
        flight = self._flights.get(key)
        if flight is None:
            return
        try:
            flight.waiters.remove(waiter)
        except ValueError:
            return
        if not flight.waiters:
            del self._flights[key]
            flight.task.cancel()

    async def cancel_all(self) -> None:
        """Cancel every flight and wait for its task to unwind; waiters are notified."""
        tasks = [flight.task for flight in self._flights.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _finish(self, key: Hashable, flight: _Flight[T, W], task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        waiters, flight.waiters = flight.waiters, []
        for waiter in waiters:
            try:
                self._notify(waiter, task, waiter is not flight.leader)
            except Exception:
                log.exception("single-flight waiter of an LM request failed")

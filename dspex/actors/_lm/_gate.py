"""A counting gate (upstream requests, pooled connections) on one event loop.

Does what ``asyncio.Semaphore`` does for the pipeline and the pool, minus
its cost on the common path: a free slot is taken with an int compare
(3.11's ``Semaphore.acquire`` scans its waiters with a generator in
``locked()``, and ``async with`` adds two coroutines). A freed slot goes
straight to the oldest waiter, so nobody starves.
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ["Gate"]


class Gate:
    """``take()``/``give()`` around each upstream request; loop thread only."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_take(self) -> bool:
        """Take a slot now if one is free and nobody queues for it."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot (first come, first served)."""
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as the wait was cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        """Free a slot: the oldest live waiter gets it, else it goes back to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

"""Injectable clocks, so restart windows and backoffs can run in virtual time."""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

from dspex.errors import CallTimeoutError, UsageError

__all__ = ["Clock", "SystemClock", "VirtualClock"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic time plus a blocking sleep; any thread may call both."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


class VirtualClock:
    """A clock that moves only when a test calls :meth:`advance`.

    ``sleep`` blocks the calling thread until virtual time reaches its
    deadline. ``real_timeout`` bounds that wait in real seconds so a test that
    forgets to advance fails loudly instead of hanging.
    """

    def __init__(self, start: float = 0.0, *, real_timeout: float = 10.0) -> None:
        self._now = start
        self._cond = threading.Condition()
        self._sleepers = 0
        self.real_timeout = real_timeout

    def monotonic(self) -> float:
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward and wake sleepers whose deadline passed; returns now."""
        if seconds < 0:
            raise UsageError(f"VirtualClock.advance(seconds={seconds}): time cannot go back")
        with self._cond:
            self._now += seconds
            self._cond.notify_all()
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._cond:
            deadline = self._now + max(0.0, seconds)
            self._sleepers += 1
            self._cond.notify_all()
            try:
                ok = self._cond.wait_for(lambda: self._now >= deadline, self.real_timeout)
            finally:
                self._sleepers -= 1
        if not ok:
            raise CallTimeoutError(
                f"VirtualClock.sleep({seconds}) waited {self.real_timeout}s of real time "
                "without advance(); advance the clock in the test"
            )

    def wait_for_sleepers(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` threads are inside :meth:`sleep` (for tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._sleepers >= count, timeout)

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now})"

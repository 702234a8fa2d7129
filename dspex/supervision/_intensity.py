"""Restart intensity: how many restarts a supervisor tolerates in a sliding window."""

from __future__ import annotations

from collections import deque

from dspex.errors import UsageError
from dspex.supervision._clock import Clock

__all__ = ["RestartWindow"]


class RestartWindow:
    """Counts restarts over the last ``max_seconds`` of ``clock`` time.

    A restart counts for ``max_seconds`` after it happened (one exactly
    ``max_seconds`` old has dropped out). :meth:`add` reports True once more
    than ``max_restarts`` restarts fall inside the window, i.e. on restart
    number ``max_restarts + 1``: the supervisor must then give up.
    """

    def __init__(self, max_restarts: int, max_seconds: float, clock: Clock) -> None:
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise UsageError(
                f"max_restarts={max_restarts!r}: must be an int >= 0 (0 means give up on the "
                "first restart)"
            )
        if isinstance(max_seconds, bool) or not isinstance(max_seconds, int | float):
            raise UsageError(f"max_seconds={max_seconds!r}: must be a number of seconds > 0")
        if max_seconds <= 0:
            raise UsageError(f"max_seconds={max_seconds!r}: must be > 0 seconds")
        self.max_restarts = max_restarts
        self.max_seconds = float(max_seconds)
        self._clock = clock
        self._times: deque[float] = deque()
        self.total = 0

    def _expire(self, now: float) -> None:
        times = self._times
        while times and now - times[0] >= self.max_seconds:
            times.popleft()

    def add(self) -> bool:
        """Record one restart now; True if the intensity is exceeded."""
        now = self._clock.monotonic()
        self._expire(now)
        self._times.append(now)
        self.total += 1
        return len(self._times) > self.max_restarts

    def recent(self) -> int:
        """Restarts still inside the window."""
        self._expire(self._clock.monotonic())
        return len(self._times)

"""Retry policy: exponential backoff with full jitter that honours ``Retry-After``.

The policy only decides *whether* and *how long*; the waiting itself is done
by a :data:`Sleeper` on the client's event loop, so a retry never occupies a
caller's thread. Sleepers are injectable, which is how tests run backoff in
virtual time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dspex.errors import LMError, RateLimitError, UsageError
from dspex.supervision import Clock, SystemClock, VirtualClock

__all__ = ["RetryPolicy", "Sleeper", "VirtualSleeper", "sleeper_for"]

Sleeper = Callable[[float], Awaitable[None]]
"""An async sleep, awaited on the client's loop thread."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to retry a failed LM call and how long to wait first.

    Attempt ``k`` (0-based count of retries already made) waits a uniform
    random time in ``[0, min(backoff_max, backoff_base * 2**k)]`` ("full
    jitter", which spreads a herd of clients apart). A provider's
    ``Retry-After`` replaces the jittered wait exactly; one longer than
    ``max_retry_after`` is not worth waiting for, so the error is raised.
    """

    num_retries: int = 3
    backoff_base: float = 0.25
    backoff_max: float = 30.0
    max_retry_after: float = 120.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.num_retries, int) or self.num_retries < 0:
            raise UsageError(
                f"RetryPolicy(num_retries={self.num_retries!r}): use an int >= 0 (0 = no retries)"
            )
        for name in ("backoff_base", "backoff_max", "max_retry_after"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise UsageError(f"RetryPolicy({name}={value!r}): use a number of seconds >= 0")
        if self.backoff_max < self.backoff_base:
            raise UsageError(
                f"RetryPolicy(backoff_max={self.backoff_max!r}): must be >= backoff_base "
                f"({self.backoff_base!r})"
            )

    def backoff(self, retries_done: int) -> float:
        """The jittered wait before retry number ``retries_done + 1``."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** min(retries_done, 62)))
        return self.rng.uniform(0.0, ceiling)

    def next_delay(self, error: BaseException, retries_done: int) -> float | None:
        """Seconds to wait before retrying after ``error``; None: give up and raise it."""
        if not isinstance(error, LMError) or not error.retryable:
            return None
        if retries_done >= self.num_retries:
            return None
        retry_after = error.retry_after if isinstance(error, RateLimitError) else None
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            return max(0.0, float(retry_after))
        return self.backoff(retries_done)


class VirtualSleeper:
    """A sleeper for tests: records each wait and moves a :class:`VirtualClock` by it.

    Nothing really waits, so backoff and rate-limit waits of minutes run in
    microseconds while breaker and limiter decisions still see time pass.
    """

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if seconds > 0:
            self.clock.advance(seconds)
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"VirtualSleeper(waits={len(self.waits)}, clock={self.clock!r})"


def sleeper_for(clock: Clock) -> Sleeper:
    """The sleeper matching ``clock``: asyncio's timer for real time.

    Any other clock's blocking ``sleep`` runs in the loop's executor, so a test
    can drive it with ``VirtualClock.advance`` (use :class:`VirtualSleeper` when
    many waits overlap: the executor has few threads).
    """
    if isinstance(clock, SystemClock):
        return asyncio.sleep

    async def sleep(seconds: float) -> None:
        await asyncio.get_running_loop().run_in_executor(None, clock.sleep, seconds)

    return sleep

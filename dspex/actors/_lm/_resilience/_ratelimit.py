"""Client-side rate limiting: requests- and tokens-per-minute buckets, adaptive on 429.

Each bucket holds up to one minute's allowance and refills continuously. A
call *reserves* what it needs and is told how long to wait; the balance may
go negative, so waiting callers queue up fairly instead of polling. Token
reservations use an estimate, settled against the real usage afterwards.

On a 429 the limiter cuts its rates (multiplicatively, down to a floor) and
drains the buckets; each success wins back a small step of the configured
rate. That is AIMD, the scheme TCP uses: quick to back off, slow to recover.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.errors import UsageError
from dspex.supervision import Clock, SystemClock

__all__ = ["RateLimiter", "TokenBucket", "estimate_tokens"]

CHARS_PER_TOKEN = 4


def estimate_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """A cheap prompt-size guess (about 4 characters per token), at least 1."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, Mapping) else None
                chars += len(text) if isinstance(text, str) else 0
    return max(1, math.ceil(chars / CHARS_PER_TOKEN))


class TokenBucket:
    """A bucket of ``per_minute`` units refilling at ``per_minute / 60`` per second.

    Not locked: :class:`RateLimiter` serializes access.
    """

    def __init__(self, per_minute: float, clock: Clock) -> None:
        if not isinstance(per_minute, int | float) or per_minute <= 0:
            raise UsageError(f"TokenBucket(per_minute={per_minute!r}): use a number > 0")
        self._clock = clock
        self.per_minute = float(per_minute)
        self.tokens = self.per_minute
        self._updated = clock.monotonic()

    @property
    def rate(self) -> float:
        """Units refilled per second."""
        return self.per_minute / 60.0

    def _refill(self) -> None:
        now = self._clock.monotonic()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self.tokens = min(self.per_minute, self.tokens + elapsed * self.rate)

    def available(self) -> float:
        self._refill()
        return self.tokens

    def reserve(self, amount: float) -> float:
        """Take ``amount`` now; returns the seconds to wait until it is really covered."""
        self._refill()
        self.tokens -= amount
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def charge(self, amount: float) -> None:
        """Take (or, if negative, give back) ``amount`` after the fact."""
        self._refill()
        self.tokens = min(self.per_minute, self.tokens - amount)

    def set_rate(self, per_minute: float) -> None:
        self._refill()
        self.per_minute = float(per_minute)
        self.tokens = min(self.tokens, self.per_minute)

    def drain(self) -> None:
        """Empty the bucket (keeping any debt), so the next call waits for a refill."""
        self._refill()
        self.tokens = min(self.tokens, 0.0)


class RateLimiter:
    """rpm and tpm limits of one client; either may be None (unlimited).

    ``shrink`` is the factor applied on a 429, ``recover`` the fraction of the
    configured rate regained per success, ``floor`` the lowest fraction kept.
    """

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        clock: Clock | None = None,
        shrink: float = 0.5,
        recover: float = 0.02,
        floor: float = 0.05,
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise UsageError(
                    f"RateLimiter({name}={value!r}): use an int > 0, or None for no limit"
                )
        if not 0 < shrink < 1:
            raise UsageError(f"RateLimiter(shrink={shrink!r}): use a factor between 0 and 1")
        if not 0 < floor <= 1 or not 0 < recover <= 1:
            raise UsageError(
                f"RateLimiter(floor={floor!r}, recover={recover!r}): use fractions in (0, 1]"
            )
        clock = clock or SystemClock()
        self.rpm = rpm
        self.tpm = tpm
        self.shrink = shrink
        self.recover = recover
        self.floor = floor
        self.factor = 1.0
        self.throttled = 0  # 429s seen
        self._lock = threading.Lock()
        self._requests = TokenBucket(rpm, clock) if rpm is not None else None
        self._tokens = TokenBucket(tpm, clock) if tpm is not None else None

    @property
    def enabled(self) -> bool:
        return self._requests is not None or self._tokens is not None

    @property
    def current_rpm(self) -> float | None:
        return None if self._requests is None else self._requests.per_minute

    @property
    def current_tpm(self) -> float | None:
        return None if self._tokens is None else self._tokens.per_minute

    def reserve(self, tokens: int, requests: int = 1) -> float:
        """Reserve ``requests`` requests and ``tokens`` tokens; returns seconds to wait first."""
        if not self.enabled:
            return 0.0
        with self._lock:
            wait = 0.0
            if self._requests is not None and requests:
                wait = self._requests.reserve(requests)
            if self._tokens is not None:
                wait = max(wait, self._tokens.reserve(tokens))
            return wait

    def settle(self, estimated: int, actual: int) -> None:
        """Correct a token reservation once the real usage is known."""
        if self._tokens is None or actual <= 0:
            return
        with self._lock:
            self._tokens.charge(actual - estimated)

    def on_rate_limited(self) -> None:
        """The provider said 429: cut the rates and drain the buckets."""
        with self._lock:
            self.throttled += 1
            if not self.enabled:
                return
            self.factor = max(self.floor, self.factor * self.shrink)
            self._apply()
            for bucket in (self._requests, self._tokens):
                if bucket is not None:
                    bucket.drain()

    def on_success(self) -> None:
        """An answer came back: win back a step of the configured rate."""
        if self.factor >= 1.0 or not self.enabled:
            return
        with self._lock:
            self.factor = min(1.0, self.factor + self.recover)
            self._apply()

    def _apply(self) -> None:
        if self._requests is not None and self.rpm is not None:
            self._requests.set_rate(self.rpm * self.factor)
        if self._tokens is not None and self.tpm is not None:
            self._tokens.set_rate(self.tpm * self.factor)

    def __repr__(self) -> str:
        return f"RateLimiter(rpm={self.rpm}, tpm={self.tpm}, factor={self.factor:.2f})"

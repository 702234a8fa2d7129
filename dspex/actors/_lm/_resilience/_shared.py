"""Rate limits shared by every process of a cluster: leases from one budget per model.

With a distributed backend (Ray), each node runs its own LM clients, so a
per-process :class:`RateLimiter` would let N nodes send N times a model's
rpm/tpm. Instead one *budget* per model (a named Ray actor holding a
:class:`RateLimiter`) is the only holder of the allowance, and each node's
client draws from it through a :class:`SharedRateLimiter`.

A remote call per request would add a round trip to every LM call, so a
client takes a *lease*: several requests' and tokens' worth at once (at most
about one second's allowance, :func:`lease_size`), and spends it locally.
The budget is debited when the lease is taken, so the cluster as a whole
never exceeds the limit; the cost is that a node may hold up to one lease it
does not use. Successes are reported with the next lease (they let the
budget win back rate after a 429); a 429 is reported at once.

Which budget a client draws from is decided by a process-wide hook,
:func:`install_shared_limits`, that the backend installs in its worker
processes (the actors layer knows nothing of Ray).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from typing import Protocol

from dspex.actors._lm._resilience._ratelimit import RateLimiter
from dspex.supervision import Clock

__all__ = [
    "LeaseSource",
    "SharedLimits",
    "SharedRateLimiter",
    "budget_key",
    "install_shared_limits",
    "lease_size",
    "make_limiter",
]

MAX_LEASE_REQUESTS = 64
"""Most requests one lease takes: bounds what an idle node can hold back."""


class LeaseSource(Protocol):
    """The budget's client side (for Ray: a wrapper of the budget actor's handle)."""

    async def lease(self, requests: int, tokens: int, successes: int) -> float:
        """Debit ``requests`` and ``tokens``; the seconds until they are covered."""
        ...

    def charge(self, tokens: int) -> None:
        """Fire and forget: ``tokens`` more (negative: fewer) were used than leased."""
        ...

    def throttled(self) -> None:
        """Fire and forget: the provider answered 429."""
        ...


SharedLimits = Callable[[str, int | None, int | None], LeaseSource]
"""``source(key, rpm, tpm)``: the lease source of the budget named ``key``."""

_lock = threading.Lock()
_shared: SharedLimits | None = None


def install_shared_limits(source: SharedLimits | None) -> SharedLimits | None:
    """Make LM clients started from now on draw from shared budgets; returns the old hook.

    None restores per-process limiters. Process-wide: a backend installs it
    in its worker processes before their runtime starts any LM client.
    """
    global _shared
    with _lock:
        old, _shared = _shared, source
    return old


def budget_key(model: str, api_base: str | None, api_key: str | None) -> str:
    """A stable name for one model endpoint's budget; the key only enters as a digest."""
    digest = hashlib.sha256(f"{model}\0{api_base or ''}\0{api_key or ''}".encode()).hexdigest()
    return f"{model}#{digest[:12]}"


def lease_size(per_minute: int | None, *, cap: int) -> int:
    """Units one lease takes: about a second's allowance, at least 1, at most ``cap``."""
    if per_minute is None:
        return 0
    return max(1, min(cap, per_minute // 60))


def make_limiter(
    model: str,
    api_base: str | None,
    api_key: str | None,
    rpm: int | None,
    tpm: int | None,
    *,
    clock: Clock,
) -> RateLimiter | SharedRateLimiter:
    """The limiter a new LM client engine uses: shared when a hook is installed and limited."""
    source = _shared
    if source is None or (rpm is None and tpm is None):
        return RateLimiter(rpm, tpm, clock=clock)
    return SharedRateLimiter(source(budget_key(model, api_base, api_key), rpm, tpm), rpm, tpm)


class SharedRateLimiter:
    """A client's view of a shared budget; call it on the client's loop thread only.

    :meth:`acquire` spends from the local lease and takes a new one (one
    remote call, others wait on a lock meanwhile) when it runs out.
    """

    def __init__(self, source: LeaseSource, rpm: int | None, tpm: int | None) -> None:
        self.source = source
        self.rpm = rpm
        self.tpm = tpm
        self.lease_requests = lease_size(rpm, cap=MAX_LEASE_REQUESTS)
        self.lease_tokens = lease_size(tpm, cap=tpm or 1)
        self.requests = 0  # leased, not yet spent
        self.tokens = 0
        self.ready_at = 0.0  # loop time when the current lease is covered
        self.leases = 0
        self.throttled = 0
        self._successes = 0
        self._fetching: asyncio.Lock | None = None  # made on the loop

    @property
    def enabled(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def _covers(self, tokens: int) -> bool:
        ok_requests = self.rpm is None or self.requests >= 1
        return ok_requests and (self.tpm is None or self.tokens >= tokens)

    def _spend(self, tokens: int, now: float) -> float:
        if self.rpm is not None:
            self.requests -= 1
        if self.tpm is not None:
            self.tokens -= tokens
        return max(0.0, self.ready_at - now)

    async def acquire(self, tokens: int) -> float:
        """Take one request and ``tokens`` tokens; returns the seconds to wait first."""
        loop = asyncio.get_running_loop()
        if self._covers(tokens):
            return self._spend(tokens, loop.time())
        if self._fetching is None:
            self._fetching = asyncio.Lock()
        async with self._fetching:
            if self._covers(tokens):  # another caller's lease covered us meanwhile
                return self._spend(tokens, loop.time())
            want_requests = self.lease_requests if self.rpm is not None else 0
            want_tokens = 0
            if self.tpm is not None:
                want_tokens = max(self.lease_tokens, tokens - self.tokens)
            successes, self._successes = self._successes, 0
            wait = await self.source.lease(want_requests, want_tokens, successes)
            self.leases += 1
            self.requests += want_requests
            self.tokens += want_tokens
            now = loop.time()
            self.ready_at = max(self.ready_at, now + max(0.0, wait))
            return self._spend(tokens, now)

    def settle(self, estimated: int, actual: int) -> None:
        """Correct a token reservation: an overrun is charged to the budget at once."""
        if self.tpm is None or actual <= 0:
            return
        overrun = actual - estimated
        if overrun > 0:
            self.source.charge(overrun)
        elif overrun < 0:
            self.tokens += -overrun  # unused estimate stays in this node's lease

    def on_success(self) -> None:
        self._successes += 1

    def on_rate_limited(self) -> None:
        """The provider said 429: tell the budget, and drop what is left of the lease."""
        self.throttled += 1
        self.requests = min(self.requests, 0)
        self.tokens = min(self.tokens, 0)
        self.source.throttled()

    def __repr__(self) -> str:
        return (
            f"SharedRateLimiter(rpm={self.rpm}, tpm={self.tpm}, leases={self.leases}, "
            f"held={self.requests}r/{self.tokens}t)"
        )

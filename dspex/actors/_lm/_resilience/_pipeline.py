"""The resilient call path of one LM client, run on the client's event loop.

Per request: single-flight (join an identical request already in flight),
then per attempt the circuit breaker (fail fast while open), the rate limiter
(await a reservation), the upstream send, and on a retryable error a wait
from the retry policy before the next attempt. Outcomes feed the breaker, the
limiter's adaptation and the usage meter. Nothing here blocks a thread: every
wait is an ``await`` on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

from dspex._record import Record
from dspex.actors._lm._gate import Gate
from dspex.actors._lm._resilience._backoff import RetryPolicy, Sleeper
from dspex.actors._lm._resilience._breaker import CircuitBreaker
from dspex.actors._lm._resilience._ratelimit import RateLimiter, estimate_tokens
from dspex.actors._lm._resilience._shared import SharedRateLimiter
from dspex.actors._lm._resilience._singleflight import SingleFlight
from dspex.actors._lm._resilience._usage import UsageMeter
from dspex.actors._lm._types import LMRequest, LMResponse
from dspex.errors import CircuitOpenError, LMError, RateLimitError, UsageError

__all__ = [
    "PARK_MIN_SECONDS",
    "CallInfo",
    "CallOptions",
    "Deliver",
    "Emit",
    "Park",
    "Pipeline",
    "Resume",
    "Send",
]

log = logging.getLogger("dspex.lm")

W = TypeVar("W")

Send = Callable[[LMRequest, float], Awaitable[LMResponse]]
"""One upstream attempt: ``send(request, timeout_seconds)``; raises ``LMError``s."""

Emit = Callable[[str, Mapping[str, Any]], None]
"""A telemetry sink ``emit(event_name, data)``; must be quick (a tell)."""


# A slotted class and a NamedTuple, not frozen dataclasses: a dataclass costs ~0.5 ms
# to define on a cold start and more to build, and both are made on every call.
class CallOptions:
    """Per-call overrides of the client's settings (not part of the request's identity)."""

    __slots__ = ("num_retries", "timeout")

    def __init__(self, timeout: float | None = None, num_retries: int | None = None) -> None:
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise UsageError(f"timeout={timeout!r}: use seconds > 0 for one HTTP request")
        if num_retries is not None and (not isinstance(num_retries, int) or num_retries < 0):
            raise UsageError(f"num_retries={num_retries!r}: use an int >= 0")
        self.timeout = timeout
        self.num_retries = num_retries

    def __repr__(self) -> str:
        return f"CallOptions(timeout={self.timeout!r}, num_retries={self.num_retries!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not CallOptions:
            return NotImplemented
        return (self.timeout, self.num_retries) == (other.timeout, other.num_retries)

    def __hash__(self) -> int:
        return hash((self.timeout, self.num_retries))


class CallInfo(Record):
    """How an outcome came about: retries made, and whether the flight was shared."""

    retries: int = 0
    shared: bool = False


_FIRST_TRY = (CallInfo(0, False), CallInfo(0, True))  # indexed by ``shared``


class _Outcome(Record):
    value: LMResponse | BaseException
    retries: int


Deliver = Callable[[W, "LMResponse | BaseException", CallInfo], None]
"""``deliver(waiter, response_or_error, info)`` on the loop thread; quick, must not raise."""

Park = Callable[[W], None]
"""``park(waiter)`` on the loop thread: its call starts a retry wait; quick, must not raise."""

Resume = Callable[[W, Callable[[], None]], None]
"""``resume(waiter, ready)``: call ``ready()`` (any thread) once the waiter may send again."""

PARK_MIN_SECONDS = 0.05
"""Retry waits shorter than this are not worth parking the callers for."""


class Pipeline(Generic[W]):
    """Runs requests for one client; construct and call it on the loop thread only."""

    def __init__(
        self,
        send: Send,
        deliver: Deliver[W],
        *,
        model: str,
        policy: RetryPolicy,
        breaker: CircuitBreaker,
        limiter: RateLimiter | SharedRateLimiter,
        sleeper: Sleeper,
        meter: UsageMeter,
        timeout: float,
        max_in_flight: int,
        emit: Emit | None = None,
        park: Park[W] | None = None,
        resume: Resume[W] | None = None,
    ) -> None:
        self._send = send
        self._deliver = deliver
        self.model = model
        self.policy = policy
        self.breaker = breaker
        self.limiter = limiter
        self.sleeper = sleeper
        self.meter = meter
        self.timeout = timeout
        self.emit = emit
        self._park = park
        self._resume = resume
        self._slots = Gate(max_in_flight)
        self._flights: SingleFlight[_Outcome, W] = SingleFlight(self._notify)

    @property
    def in_flight(self) -> int:
        """Distinct requests being worked on (shared ones count once)."""
        return len(self._flights)

    def start(self, key: str, request: LMRequest, options: CallOptions, waiter: W) -> bool:
        """Work on ``request`` (or join the identical one in flight); True if joined."""
        self.meter.count("calls")
        memo = getattr(waiter, "memo", None)
        store = memo.put if memo is not None else None
        shared = self._flights.join(key, lambda: self._run(key, request, options, store), waiter)
        if shared:
            self.meter.count("shared")
        return shared

    def flying(self, key: str) -> bool:
        """Whether a request for ``key`` is being worked on (loop thread)."""
        return key in self._flights

    def leave(self, key: str, waiter: W) -> None:
        """The waiter gave up; the last one to leave cancels the upstream work."""
        self._flights.leave(key, waiter)

    async def close(self) -> None:
        """Cancel all work in flight (waiters are not told: the owner orphans them)."""
        await self._flights.cancel_all()

    def _notify(self, waiter: W, task: asyncio.Task[_Outcome], shared: bool) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # a bug below us, not an LM failure: pass it on as is
            self._deliver(waiter, error, CallInfo(0, shared))
            return
        value, retries = task.result()
        # The common case (no retry) takes a prebuilt frozen instance: no allocation.
        info = _FIRST_TRY[shared] if retries == 0 else CallInfo(retries, shared)
        self._deliver(waiter, value, info)

    async def _run(
        self,
        key: str,
        request: LMRequest,
        options: CallOptions,
        store: Callable[[str, Any], None] | None = None,
    ) -> _Outcome:
        policy = self.policy
        if options.num_retries is not None:
            policy = dataclasses.replace(policy, num_retries=options.num_retries)
        timeout = options.timeout or self.timeout
        estimate = estimate_tokens(request.messages) if self.limiter.enabled else 0
        retries = 0
        last_error: LMError | None = None
        while True:
            try:
                permit = self.breaker.acquire()
            except CircuitOpenError as exc:
                self.meter.count("circuit_rejections")
                self.meter.failure(exc)
                exc.__cause__ = last_error
                return _Outcome(exc, retries)
            error: LMError | None = None
            try:
                limiter = self.limiter
                if isinstance(limiter, RateLimiter):
                    wait = limiter.reserve(estimate)
                else:  # a cluster-wide budget: may take a lease (one remote call)
                    wait = await limiter.acquire(estimate)
                if wait > 0:
                    await self.sleeper(wait)
                slots = self._slots
                if not slots.try_take():
                    await slots.take()
                try:
                    self.meter.count("upstream_requests")
                    response = await self._send(request, timeout)
                finally:
                    slots.give()
            except LMError as exc:
                error = exc
            except BaseException:  # cancelled, or a bug: no verdict on the provider
                self.breaker.release(permit)
                raise
            self.breaker.record(permit, error)
            if error is None:
                self.limiter.on_success()
                self.limiter.settle(estimate, response.usage.total_tokens)
                self.meter.success(response.usage)
                if store is not None:
                    # In memory before the flight ends: a request that missed the
                    # cache and arrives meanwhile joins, one after finds the cache.
                    try:
                        store(key, response)
                    except Exception:
                        log.exception("writing an answer to the memory cache failed")
                return _Outcome(response, retries)
            if isinstance(error, RateLimitError):
                self.meter.count("throttled")
                self.limiter.on_rate_limited()
            delay = policy.next_delay(error, retries)
            if delay is None:
                self.meter.failure(error)
                return _Outcome(error, retries)
            retries += 1
            last_error = error
            self.meter.count("retries")
            if self.emit is not None:
                self._emit_retry(retries, delay, error)
            self._trace_retry(key, retries, delay, error)
            if delay >= PARK_MIN_SECONDS and self._park is not None:
                await self._wait_parked(key, delay)
            else:
                await self.sleeper(delay)

    async def _wait_parked(self, key: str, delay: float) -> None:
        """Sleep ``delay`` with the callers parked, then wait until each may send again.

        A caller running as a pool task lends its slot to other work while
        the request only waits (see ``dspex.supervision.Lease``); getting the
        slot back before the retry keeps the requests a pool sends at once
        within its concurrency.
        """
        assert self._park is not None and self._resume is not None
        for waiter in self._flights.waiters(key):
            self._park(waiter)
        await self.sleeper(delay)
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[None]] = []
        for waiter in self._flights.waiters(key):
            ready: asyncio.Future[None] = loop.create_future()
            pending.append(ready)
            self._resume(waiter, functools.partial(_settle_from_any_thread, loop, ready))
        if pending:
            await asyncio.gather(*pending)

    def _trace_retry(self, key: str, retry: int, delay: float, error: LMError) -> None:
        """Add a retry event to the span each waiter carries (OpenTelemetry export on)."""
        for waiter in self._flights.waiters(key):
            span = getattr(waiter, "trace", None)
            if span is not None:
                span.add_event(
                    "gen_ai.retry",
                    {
                        "dspex.retry": retry,
                        "dspex.retry.delay_s": delay,
                        "error.type": type(error).__name__,
                    },
                )

    def _emit_retry(self, retry: int, delay: float, error: LMError) -> None:
        assert self.emit is not None
        data = {
            "model": self.model,
            "retry": retry,
            "delay": delay,
            "error": type(error).__name__,
            "status": error.status,
        }
        try:
            self.emit("lm.request.retry", data)
        except Exception:
            log.exception("telemetry sink failed on lm.request.retry")


def _settle(ready: asyncio.Future[None]) -> None:
    if not ready.done():  # the wait may have been cancelled meanwhile
        ready.set_result(None)


def _settle_from_any_thread(loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
    # RuntimeError: the loop closed with the client, so nothing waits any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, ready)

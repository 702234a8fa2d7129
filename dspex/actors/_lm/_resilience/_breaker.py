"""Circuit breaker: closed, open, half-open with a single probe.

``failure_threshold`` consecutive failures open the circuit; while it is open
every call fails fast with :class:`~dspex.errors.CircuitOpenError`, sparing a
struggling provider. After ``reset_timeout`` seconds one probe call is let
through (half-open): its success closes the circuit, its failure opens it
again for another ``reset_timeout``. Time comes from an injectable clock.
"""

from __future__ import annotations

import enum
import threading

from dspex._record import Record
from dspex.errors import (
    AuthenticationError,
    CircuitOpenError,
    LMTimeoutError,
    ProviderError,
    UsageError,
)
from dspex.supervision import Clock, SystemClock

__all__ = ["BreakerState", "CircuitBreaker", "Permit", "counts_as_failure"]


class BreakerState(enum.StrEnum):
    """Where the breaker stands."""

    CLOSED = "closed"  # calls flow; failures are counted
    OPEN = "open"  # calls fail fast until the reset timeout passes
    HALF_OPEN = "half_open"  # one probe call decides


class Permit(Record):  # not a frozen dataclass: cheaper to define and to build
    """Leave to make one upstream attempt; hand it back with the outcome."""

    probe: bool
    generation: int


_FREE = Permit(False, 0)
"""The permit of every attempt made while the circuit is closed."""


def counts_as_failure(error: BaseException) -> bool:
    """Whether ``error`` says the provider is unhealthy (and so feeds the breaker).

    Server faults, dropped connections and timeouts count. A 429 is the rate
    limiter's business, and a rejected key or a bad request is the caller's
    fault, so those leave the breaker alone.
    """
    if isinstance(error, AuthenticationError):
        return False
    return isinstance(error, ProviderError | LMTimeoutError) and error.retryable


class CircuitBreaker:
    """One client's breaker; thread-safe, though the client uses it on its loop thread."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        *,
        clock: Clock | None = None,
        model: str | None = None,
    ) -> None:
        if not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise UsageError(
                f"CircuitBreaker(failure_threshold={failure_threshold!r}): use an int >= 1"
            )
        if not isinstance(reset_timeout, int | float) or reset_timeout <= 0:
            raise UsageError(f"CircuitBreaker(reset_timeout={reset_timeout!r}): use seconds > 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self.model = model
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        # Bumped on every state change, so an outcome of a permit issued before
        # the change cannot flip the new state.
        self._generation = 0
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current(self._clock.monotonic())

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _current(self, now: float) -> BreakerState:
        if self._state is BreakerState.OPEN and now >= self._opened_at + self.reset_timeout:
            self._state = BreakerState.HALF_OPEN
            self._probing = False
            self._generation += 1
        return self._state

    def acquire(self) -> Permit:
        """Leave for one attempt, or :class:`CircuitOpenError` when failing fast."""
        if self._state is BreakerState.CLOSED:
            # The common case, without the lock or the clock: only OPEN moves
            # with time, and a non-probe permit's generation is never compared.
            return _FREE
        with self._lock:
            state = self._current(self._clock.monotonic())
            if state is BreakerState.CLOSED:
                return Permit(False, self._generation)
            if state is BreakerState.HALF_OPEN and not self._probing:
                self._probing = True
                return Permit(True, self._generation)
            retry_at = self._opened_at + self.reset_timeout
        what = "a probe call is in flight" if state is BreakerState.HALF_OPEN else "it is open"
        raise CircuitOpenError(
            f"circuit breaker for {self.model or 'this LM client'} is failing fast because "
            f"{what} after {self.failure_threshold} consecutive provider failures; it lets a "
            f"probe through {self.reset_timeout:g}s after opening",
            model=self.model,
            retry_at=retry_at,
        )

    def record_success(self, permit: Permit) -> None:
        """The attempt got an answer: a probe closes the circuit, failures reset."""
        if not permit.probe and self._failures == 0:
            return  # nothing to reset (a failure racing in counts as after this success)
        with self._lock:
            if permit.probe:
                if permit.generation == self._generation:
                    self._to(BreakerState.CLOSED)
            elif self._state is BreakerState.CLOSED:
                self._failures = 0

    def record_failure(self, permit: Permit) -> None:
        """The provider failed the attempt (see :func:`counts_as_failure`)."""
        with self._lock:
            now = self._clock.monotonic()
            if permit.probe:
                if permit.generation == self._generation:
                    self._open(now)
                return
            if self._state is not BreakerState.CLOSED:
                return  # already open: a late failure must not extend the wait
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open(now)

    def release(self, permit: Permit) -> None:
        """The attempt ended without a verdict (429, bad request, cancelled)."""
        with self._lock:
            if permit.probe and permit.generation == self._generation:
                self._probing = False

    def record(self, permit: Permit, error: BaseException | None) -> None:
        """Feed the outcome of an attempt: None for success, else the error."""
        if error is None:
            self.record_success(permit)
        elif counts_as_failure(error):
            self.record_failure(permit)
        else:
            self.release(permit)

    def _open(self, now: float) -> None:
        self._to(BreakerState.OPEN)
        self._opened_at = now
        self.times_opened += 1

    def _to(self, state: BreakerState) -> None:
        self._state = state
        self._failures = 0
        self._probing = False
        self._generation += 1

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self.state.value}, failures={self._failures}/"
            f"{self.failure_threshold}, reset_timeout={self.reset_timeout:g})"
        )

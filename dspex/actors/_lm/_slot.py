"""How a call reaches one model's client: the slot, its endpoints and a call's attempts.

A :class:`ClientSlot` outlives client incarnations: it holds the model's
endpoint (the running incarnation's engine), its config and usage meter.
Callers submit an :class:`_Attempt` (a :class:`Waiter`) to the current
:class:`Endpoint` and block on it; the incarnation resolves it, or orphans it
if it dies first so the caller can submit again to the next one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from dspex._record import Record
from dspex.actors._lm._resilience import CallInfo, CallOptions, LMClientConfig, UsageMeter
from dspex.actors._lm._streaming import ChunkSink
from dspex.actors._lm._types import LMRequest, LMResponse
from dspex.errors import ActorStoppedError, LMTimeoutError, UsageError
from dspex.supervision import Lease

__all__ = ["Attempt", "ClientSlot", "Endpoint", "Memo", "Waiter"]


class Waiter(Protocol):
    """A caller's pending attempt, told exactly one of two things (on any thread)."""

    def resolve(self, value: LMResponse | BaseException, info: CallInfo) -> None:
        """The call finished: a response or the error to raise."""

    def orphan(self, epoch: int) -> None:
        """Incarnation ``epoch`` died before answering: submit again elsewhere."""

    def park(self) -> None:
        """The call starts a retry wait (loop thread): the caller may lend out its slot."""

    def resume(self, ready: Callable[[], None]) -> None:
        """Call ``ready()`` (any thread) once the caller may send again."""


class Endpoint(Protocol):
    """Where callers submit requests: one client incarnation's engine."""

    epoch: int

    def submit(self, key: str, request: LMRequest, options: CallOptions, waiter: Waiter) -> bool:
        """Accept the call (True), or refuse because this incarnation is closing."""

    def cancel(self, waiter: Waiter) -> None:
        """The caller gave up: stop working on its behalf."""

    @property
    def in_flight(self) -> int:
        """Distinct requests this incarnation is working on."""


class ClientSlot:
    """The stable home of one model's client across restarts; thread-safe.

    The running :class:`LMClient` incarnation publishes its endpoint here;
    :class:`~dspex.actors.LMHandle` waits here (on a condition, bounded by
    the call's timeout) while a restart is under way.
    """

    def __init__(
        self, model: str, api_base: str | None = None, config: LMClientConfig | None = None
    ) -> None:
        if not isinstance(model, str) or "/" not in model:
            raise UsageError(
                f"ClientSlot(model={model!r}): use '<provider>/<model>', e.g. 'openai/gpt-4o-mini'"
            )
        self.model = model
        self.api_base = api_base
        self.config = config or LMClientConfig()
        self.meter = UsageMeter(model)
        self.incarnations = 0
        self._cond = threading.Condition()
        self._endpoint: Endpoint | None = None
        self._closed = False
        self._close_reason: str | None = None
        # Async callers waiting out a restart: woken (any thread) on publish/close.
        self._watchers: set[Callable[[], None]] = set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def endpoint(self) -> Endpoint | None:
        """The current incarnation's endpoint, if one is running."""
        return self._endpoint

    def publish(self, endpoint: Endpoint, config: LMClientConfig) -> None:
        """Make ``endpoint`` current (called by a starting incarnation)."""
        with self._cond:
            if self._closed:
                raise ActorStoppedError(f"the client slot of {self.model!r} was closed")
            self._endpoint = endpoint
            self.config = config
            self.incarnations += 1
            self._cond.notify_all()
            watchers = list(self._watchers)
        for wake in watchers:
            wake()

    def retract(self, endpoint: Endpoint) -> None:
        """``endpoint`` is going away; callers will wait for the next one."""
        with self._cond:
            if self._endpoint is endpoint:
                self._endpoint = None

    def close(self, reason: str | None = None) -> None:
        """No incarnation will follow: waiting and future callers fail fast.

        ``reason`` replaces the default explanation in their ``ActorStoppedError``.
        """
        with self._cond:
            self._closed = True
            self._close_reason = reason
            self._endpoint = None
            self._cond.notify_all()
            watchers = list(self._watchers)
        for wake in watchers:
            wake()

    def watch(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` (from the publishing thread) whenever an endpoint is published
        or the slot closes, until :meth:`unwatch`; for callers that cannot block."""
        with self._cond:
            self._watchers.add(wake)

    def unwatch(self, wake: Callable[[], None]) -> None:
        with self._cond:
            self._watchers.discard(wake)

    def current_or_none(self, *, not_epoch: int | None = None) -> Endpoint | None:
        """The running endpoint (other than ``not_epoch``) now, without waiting.

        Raises ``ActorStoppedError`` if the slot is closed.
        """
        endpoint = self._endpoint
        if endpoint is not None and endpoint.epoch != not_epoch:
            return endpoint
        if self._closed:
            self.current(0.0, not_epoch=not_epoch)  # raises the closed error, worded once
        return None

    def current(self, timeout: float, *, not_epoch: int | None = None) -> Endpoint:
        """The running endpoint (other than ``not_epoch``), waiting up to ``timeout`` s."""
        endpoint = self._endpoint
        if endpoint is not None and endpoint.epoch != not_epoch:
            return endpoint
        with self._cond:

            def ready() -> bool:
                e = self._endpoint
                return self._closed or (e is not None and e.epoch != not_epoch)

            self._cond.wait_for(ready, max(0.0, timeout))
            endpoint = self._endpoint
            if self._closed:
                raise ActorStoppedError(
                    self._close_reason
                    or f"the LM client for {self.model!r} has stopped; start a new one "
                    "(or the Runtime that owns it)"
                )
            if endpoint is None or endpoint.epoch == not_epoch:
                raise LMTimeoutError(
                    f"no LM client for {self.model!r} was running within {timeout:.3g}s; "
                    "it may be restarting too often (see the supervisor's events)",
                    model=self.model,
                )
            return endpoint

    def __repr__(self) -> str:
        running = self._endpoint is not None
        return f"ClientSlot({self.model!r}, running={running}, incarnations={self.incarnations})"


class Memo(Record):
    """The cache as the client's loop sees it: read before a flight starts, and the
    answer written to memory before the flight ends (so a request arriving meanwhile
    finds one or the other, never neither)."""

    get: Callable[[str], Any]
    put: Callable[[str, Any], None]


class Attempt:
    """One submission of a call: told once (answer or orphaned), then spent.

    ``lease`` is the caller's pool-task lease, if it runs in a WorkerPool task
    (an Evaluate or batch example): a retry wait parks it, so the pool can
    start another example while this one only waits. ``trace`` is the call's
    OpenTelemetry span when export is on: the client's loop adds retry events
    to it (the trace context travels in the message, not in contextvars).
    """

    __slots__ = (
        "_claim",
        "_signal",
        "cancelled",
        "info",
        "lease",
        "memo",
        "orphaned",
        "parked",
        "sink",
        "trace",
        "value",
    )

    def __init__(
        self, lease: Lease | None = None, sink: ChunkSink | None = None, trace: Any = None
    ) -> None:
        self._claim = threading.Lock()
        self._signal = threading.Lock()
        self._signal.acquire()
        self.value: LMResponse | BaseException | None = None
        self.info = CallInfo()
        self.orphaned = False
        self.cancelled = False
        self.lease = lease
        self.parked = False
        self.sink = sink  # a streaming call's chunk sink (``_streaming``), run on the loop
        self.trace = trace
        self.memo: Memo | None = None

    def park(self) -> None:
        lease = self.lease
        if lease is not None:
            self.parked = True
            lease.park()

    def resume(self, ready: Callable[[], None]) -> None:
        lease = self.lease
        if lease is None:
            ready()
        else:
            lease.resume(ready)

    def resolve(self, value: LMResponse | BaseException, info: CallInfo) -> None:
        if self._claim.acquire(blocking=False):
            self.value = value
            self.info = info
            self._signal.release()

    def orphan(self, epoch: int) -> None:
        if self._claim.acquire(blocking=False):
            self.orphaned = True
            self._signal.release()

    def cancel(self) -> None:
        """The caller's run was cancelled: stop waiting (any thread)."""
        if self._claim.acquire(blocking=False):
            self.cancelled = True
            self._signal.release()

    def abandon(self) -> bool:
        """Claim the attempt for a caller that gave up; False if an answer got in first."""
        return self._claim.acquire(blocking=False)

    def wait(self, timeout: float) -> bool:
        return self._signal.acquire(timeout=max(0.0, timeout))

"""The LM client actor: one per model, HTTP on its own event loop, restarts lose nothing.

Three pieces share the work:

- :class:`LMClient`, the supervised actor. It owns an :class:`_Engine` per
  incarnation and handles lifecycle, stats and reconfiguration. Its mailbox
  never waits on HTTP.
- :class:`_Engine`, the incarnation's I/O: an :class:`IOLoop` thread running
  the resilience :class:`Pipeline` and the HTTP transports it sends through
  (httptools, or httpx for proxied URLs or when ``transport = "httpx"``; see
  ``_transport``). Callers submit straight onto its loop (no actor round trip
  per call).
- :class:`~dspex.actors.ClientSlot` (in ``_slot``), which outlives
  incarnations: the actor publishes its engine there on start and retracts it
  on death, and handles wait on it for the next incarnation. Usage totals
  live there too, so they survive restarts.

When an incarnation ends, its engine hands every accepted call back to its
caller as *orphaned* before the loop stops; the caller re-submits to the next
incarnation, and any reply the old loop still produces is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dspex._record import Record
from dspex.actors._lm._loop import engine_loop
from dspex.actors._lm._resilience import (
    CallInfo,
    CallOptions,
    CircuitBreaker,
    Emit,
    LMClientConfig,
    Pipeline,
    RetryPolicy,
    Sleeper,
    make_limiter,
    sleeper_for,
)
from dspex.actors._lm._slot import ClientSlot, Waiter
from dspex.actors._lm._streaming import STREAM_TO, ChunkSink
from dspex.actors._lm._transport import Transport, TransportName, choose_transport, env_proxies
from dspex.actors._lm._types import LMRequest, LMResponse
from dspex.errors import ActorStoppedError, UsageError
from dspex.supervision import Actor, ChildSpec, Clock, Restart, SystemClock, monitor

if TYPE_CHECKING:
    from dspex.actors._lm._providers import HTTPCall, Provider
    from dspex.actors._lm._resilience._stats import LMClientStats


# ClientSlot is re-exported: the slot is what callers pass to LMClient.child_spec.
__all__ = ["ClientSlot", "GetSlot", "GetStats", "LMClient", "Reconfigure"]

log = logging.getLogger("dspex.lm")

_epochs = itertools.count(1)


class _Secret:
    """An API key that never shows in a repr, a log line or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value

    def reveal(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>" if self._value else "None"


class _Engine:
    """One incarnation's I/O: loop thread, transports, pipeline, accepted calls."""

    def __init__(
        self,
        *,
        slot: ClientSlot,
        provider: Provider,
        api_key: _Secret,
        config: LMClientConfig,
        clock: Clock,
        sleeper: Sleeper,
        emit: Emit | None,
        trust_env: bool,
    ) -> None:
        self.epoch = next(_epochs)
        self.model = slot.model
        self.api_base = slot.api_base
        self.config = config
        self._slot = slot
        self._provider = provider
        self._api_key = api_key
        self._clock = clock
        self._sleeper = sleeper
        self._emit = emit
        self._trust_env = trust_env
        self._lock = threading.Lock()
        self._accepted: dict[Waiter, str] = {}
        self._closed = False
        self._io = engine_loop(f"dspex-lm-{slot.model}#{self.epoch}")
        # Made on first use, on the loop thread; the route memo maps a URL to
        # its transport under the current ``transport`` setting.
        self._transports: dict[str, Transport] = {}
        self._routes: dict[str, Transport] = {}
        self._proxies = env_proxies() if trust_env else {}
        self._inbox: collections.deque[tuple[str, LMRequest, CallOptions, Waiter]] = (
            collections.deque()
        )
        self._drain_scheduled = False
        self._pipeline: Pipeline[Waiter] | None = None

    # -- lifecycle (actor thread) ----------------------------------------------

    def start(self, timeout: float) -> None:
        self._io.start(timeout)
        # Built here, not on the loop: a loop shared with callers (``dspex
        # serve``) may be the very thread waiting for this start. Nothing in
        # the pipeline binds to a loop when made, and the loop first sees it
        # through call_soon, which publishes it to that thread.
        self._setup()

    def _setup(self) -> None:
        cfg = self.config
        self._pipeline = Pipeline(
            self._send,
            self._deliver,
            model=self.model,
            policy=self._policy(cfg),
            breaker=self._breaker(cfg),
            limiter=self._limiter(cfg),
            sleeper=self._sleeper,
            meter=self._slot.meter,
            timeout=cfg.timeout,
            max_in_flight=cfg.max_in_flight,
            emit=self._emit,
            park=self._park,
            resume=self._resume,
        )

    @staticmethod
    def _policy(cfg: LMClientConfig) -> RetryPolicy:
        return RetryPolicy(cfg.num_retries, cfg.backoff_base, cfg.backoff_max)

    def _limiter(self, cfg: LMClientConfig) -> Any:
        # Per process, or a cluster-wide budget when a backend installed one.
        key = self._provider.resolve_api_key(self._api_key.reveal())  # a key from the env too
        return make_limiter(self.model, self.api_base, key, cfg.rpm, cfg.tpm, clock=self._clock)

    def _breaker(self, cfg: LMClientConfig) -> CircuitBreaker:
        return CircuitBreaker(
            cfg.breaker_failure_threshold,
            cfg.breaker_reset_timeout,
            clock=self._clock,
            model=self.model,
        )

    def close(self, timeout: float) -> bool:
        """Orphan every accepted call, cancel the work, close HTTP, join the loop.

        Idempotent; returns False if the loop thread had to be abandoned.
        """
        with self._lock:
            first = not self._closed
            self._closed = True
            orphans = list(self._accepted)
            self._accepted.clear()
        for waiter in orphans:
            try:
                waiter.orphan(self.epoch)
            except Exception:
                log.exception("orphaning a call of %s failed", self.model)
        if not first:
            return not self._io.running
        return self._io.stop(timeout, cleanup=self._teardown)

    async def _teardown(self) -> None:
        if self._pipeline is not None:
            await self._pipeline.close()
        for transport in self._transports.values():
            await transport.aclose()

    def reconfigure(self, config: LMClientConfig) -> None:
        """Apply new settings on the loop (connection pool sizes stay as started)."""
        self._io.call_soon(self._apply, config)

    def _apply(self, config: LMClientConfig) -> None:
        old, self.config = self.config, config
        pipeline = self._pipeline
        if pipeline is None:
            return
        if old.transport != config.transport:
            self._routes.clear()  # transports already open stay, for calls in flight
        pipeline.policy = self._policy(config)
        pipeline.timeout = config.timeout
        breaker_keys = ("breaker_failure_threshold", "breaker_reset_timeout")
        if any(getattr(old, k) != getattr(config, k) for k in breaker_keys):
            pipeline.breaker = self._breaker(config)
        if (old.rpm, old.tpm) != (config.rpm, config.tpm):
            pipeline.limiter = self._limiter(config)

    # -- calls (any thread in; loop thread out) ------------------------------------

    @property
    def in_flight(self) -> int:
        return 0 if self._pipeline is None else self._pipeline.in_flight

    @property
    def breaker_state(self) -> str | None:
        """The circuit breaker's state (``closed``, ``half_open``, ``open``); None before start."""
        return None if self._pipeline is None else self._pipeline.breaker.state.value

    def submit(self, key: str, request: LMRequest, options: CallOptions, waiter: Waiter) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._accepted[waiter] = key
        # Calls queue in a deque drained by one scheduled callback, so a burst
        # costs one loop wake-up (a self-pipe write, which also hands away the
        # GIL) rather than one per call. Append before reading the flag: the
        # drain resets the flag before it empties the deque, so nothing strands.
        self._inbox.append((key, request, options, waiter))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            try:
                self._io.call_soon(self._drain)
            except ActorStoppedError:
                with self._lock:
                    self._accepted.pop(waiter, None)
                return False
        return True

    def _drain(self) -> None:
        self._drain_scheduled = False
        inbox, pipeline = self._inbox, self._pipeline
        assert pipeline is not None
        while inbox:
            key, request, options, waiter = inbox.popleft()
            sink = getattr(waiter, "sink", None)
            if sink is None:
                memo = getattr(waiter, "memo", None)
                if memo is not None and not pipeline.flying(key):
                    # Answered (and written to memory) after the caller looked: a hit.
                    hit = memo.get(key)
                    if hit is not None:
                        self._deliver(waiter, hit, CallInfo(0, True))
                        continue
                pipeline.start(key, request, options, waiter)
                continue
            # The call's task copies this context: its send finds the sink there.
            token = STREAM_TO.set(sink)
            try:
                pipeline.start(key, request, options, waiter)
            finally:
                STREAM_TO.reset(token)

    def cancel(self, waiter: Waiter) -> None:
        with self._lock:
            key = self._accepted.pop(waiter, None)
        if key is not None and self._pipeline is not None:
            # If the loop is gone, so is the work: nothing to leave.
            with contextlib.suppress(ActorStoppedError):
                self._io.call_soon(self._pipeline.leave, key, waiter)

    def _deliver(self, waiter: Waiter, value: LMResponse | BaseException, info: CallInfo) -> None:
        with self._lock:
            if self._accepted.pop(waiter, None) is None:
                return  # orphaned by close() or cancelled: its caller moved on
        waiter.resolve(value, info)

    def _park(self, waiter: Waiter) -> None:
        if waiter in self._accepted:  # a racy read is fine: parking is advisory
            waiter.park()

    @staticmethod
    def _resume(waiter: Waiter, ready: Callable[[], None]) -> None:
        waiter.resume(ready)

    async def _send(self, request: LMRequest, timeout: float) -> LMResponse:
        # A provider may cut one request into several (n without native support,
        # embeddings inputs past a server's per-request limit); one attempt
        # sends them all, so a retry repeats the whole call.
        parts = self._provider.split(request)
        if len(parts) == 1:
            return await self._send_one(parts[0], timeout)
        sink = STREAM_TO.get()
        token = STREAM_TO.set(None)  # fanned-out parts do not stream; the first is sent whole
        try:
            replies = await asyncio.gather(*(self._send_one(r, timeout) for r in parts))
        finally:
            STREAM_TO.reset(token)
        merged = self._provider.merge(list(replies), model=request.model)
        if sink is not None and merged.texts and merged.texts[0]:
            sink(merged.texts[0])
        return merged

    async def _send_one(self, request: LMRequest, timeout: float) -> LMResponse:
        from dspex.actors._lm._providers import send

        provider = self._provider
        key = provider.resolve_api_key(self._api_key.reveal())
        call = provider.build(request, api_base=self.api_base, api_key=key)
        sink = STREAM_TO.get()
        if sink is not None:
            return await self._send_streaming(provider, call, request, timeout, sink)
        return await send(
            self._transport_for(call.url),
            provider,
            call,
            model=request.model,
            timeout=timeout,
            max_response_bytes=self.config.max_response_bytes,
        )

    async def _send_streaming(
        self,
        provider: Provider,
        call: HTTPCall,
        request: LMRequest,
        timeout: float,
        sink: ChunkSink,
    ) -> LMResponse:
        from dspex.actors._lm._providers import send
        from dspex.actors._lm._providers._stream import send_stream, streams

        transport = self._transport_for(call.url)
        limit = self.config.max_response_bytes
        if streams(provider):
            return await send_stream(
                transport,
                provider,
                call,
                sink,
                model=request.model,
                timeout=timeout,
                max_response_bytes=limit,
            )
        # A dialect dspex cannot stream: the whole text is one chunk.
        response = await send(
            transport,
            provider,
            call,
            model=request.model,
            timeout=timeout,
            max_response_bytes=limit,
        )
        if response.texts and response.texts[0]:
            sink(response.texts[0])
        return response

    @property
    def transports(self) -> tuple[str, ...]:
        """Names of the transports this engine has opened so far (for tests and metrics)."""
        return tuple(sorted(self._transports))

    def _transport_for(self, url: str) -> Transport:
        """The transport for ``url`` (loop thread), made on first use."""
        transport = self._routes.get(url)
        if transport is None:
            name = choose_transport(self.config.transport, url, self._proxies)
            transport = self._transports.get(name)
            if transport is None:
                transport = _make_transport(
                    name, max_connections=self.config.max_in_flight, trust_env=self._trust_env
                )
                self._transports[name] = transport
            self._routes[url] = transport
        return transport

    def __repr__(self) -> str:
        return f"<LM engine {self.model!r} #{self.epoch}>"


def _make_transport(name: TransportName, *, max_connections: int, trust_env: bool) -> Transport:
    """A new transport of kind ``name`` (on the loop thread that will use it).

    Imported here, on first use: httpx costs about 100 ms to import, and a
    client that never needs it should not pay that.
    """
    if name == "httptools":
        from dspex.actors._lm._transport_httptools import HttptoolsTransport

        return HttptoolsTransport(
            max_connections=max_connections, keepalive_expiry=30.0, trust_env=trust_env
        )
    if name == "h11":
        from dspex.actors._lm._transport_h11 import H11Transport

        return H11Transport(
            max_connections=max_connections, keepalive_expiry=30.0, trust_env=trust_env
        )
    from dspex.actors._lm._transport_httpx import HttpxTransport

    return HttpxTransport(
        max_connections=max_connections, keepalive_expiry=30.0, trust_env=trust_env
    )


# -- actor messages --------------------------------------------------------------


# Plain classes and a NamedTuple, not frozen dataclasses: a dataclass costs ~0.5 ms
# to define, and this module is on a fresh process's first call.
class GetSlot:
    """Ask for the client's :class:`ClientSlot` (to build a handle)."""

    __slots__ = ()


class GetStats:
    """Ask for an :class:`LMClientStats` snapshot."""

    __slots__ = ()


class Reconfigure(Record):
    """Replace the client's settings; in-flight calls finish under the old ones."""

    config: LMClientConfig


class LMClient(Actor):
    """The supervised client of one model (``"<provider>/<model>"``).

    Start it directly (``LMClient.start_link(model, ...)``) or under a
    supervisor with :meth:`child_spec`. Callers reach it through an
    :class:`~dspex.actors.LMHandle` on the same :class:`ClientSlot`; pass the
    same ``slot`` to every incarnation so a restart is seamless. A client that
    created its own slot closes it when it stops.

    ``clock`` drives the breaker and rate limiter; ``sleeper`` does the retry
    and rate-limit waits on the loop (tests pass a ``VirtualSleeper``).
    ``telemetry`` receives ``lm.request.retry`` events.
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        config: LMClientConfig | None = None,
        slot: ClientSlot | None = None,
        provider_options: dict[str, Any] | None = None,
        clock: Clock | None = None,
        sleeper: Sleeper | None = None,
        telemetry: Emit | None = None,
        trust_env: bool = True,
        start_timeout: float = 5.0,
        stop_timeout: float = 5.0,
    ) -> None:
        super().__init__()
        from dspex.actors._lm._providers import resolve_provider

        self._provider, _ = resolve_provider(model, **(provider_options or {}))
        if slot is None:
            slot = ClientSlot(model, api_base, config)
            self._owns_slot = True
        else:
            if (slot.model, slot.api_base) != (model, api_base):
                raise UsageError(
                    f"LMClient(model={model!r}, api_base={api_base!r}) was given the slot of "
                    f"{slot.model!r} at {slot.api_base!r}; use one slot per model and endpoint"
                )
            self._owns_slot = False
        self.slot = slot
        self.model = model
        self.config = config or slot.config
        self._api_key = _Secret(api_key)
        self._clock = clock or SystemClock()
        self._sleeper = sleeper or sleeper_for(self._clock)
        self._telemetry = telemetry
        self._trust_env = trust_env
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._engine: _Engine | None = None

    @classmethod
    def child_spec(
        cls,
        model: str,
        *,
        slot: ClientSlot,
        id: str | None = None,
        name: str | None = None,
        restart: Restart = Restart.PERMANENT,
        shutdown: float = 10.0,
        **kwargs: Any,
    ) -> ChildSpec:
        """A ChildSpec whose every incarnation serves ``slot`` (kwargs as for the class)."""
        api_base = slot.api_base

        def start() -> Any:
            return cls.start(model, api_base=api_base, slot=slot, **kwargs)

        return ChildSpec(
            id=id or f"lm:{model}",
            start=start,
            restart=restart,
            shutdown=shutdown,
            name=name,
        )

    # -- lifecycle (actor thread) ------------------------------------------------

    def on_start(self) -> None:
        engine = _Engine(
            slot=self.slot,
            provider=self._provider,
            api_key=self._api_key,
            config=self.config,
            clock=self._clock,
            sleeper=self._sleeper,
            emit=self._telemetry,
            trust_env=self._trust_env,
        )
        try:
            engine.start(self._start_timeout)
        except BaseException:
            engine.close(self._stop_timeout)  # on_stop will not run after a failed start
            raise
        self._engine = engine
        # Backstop: whatever ends this actor, the engine is closed by the time
        # monitors hear of it (a no-op if on_stop/on_failure already did it).
        monitor(self.actor_ref, lambda _down: self._shutdown())
        self.slot.publish(engine, self.config)

    def on_stop(self) -> None:
        self._shutdown()

    def on_failure(self, *exc_info: Any) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        engine = self._engine
        if engine is None:
            return
        # Retract before orphaning, so orphaned callers wait for the next
        # incarnation instead of re-submitting to this one.
        self.slot.retract(engine)
        if self._owns_slot:
            self.slot.close()
        engine.close(self._stop_timeout)

    # -- messages ------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, GetSlot):
            return self.slot
        if isinstance(message, GetStats):
            return self.stats()
        if isinstance(message, Reconfigure):
            return self.reconfigure(message.config)
        return super().on_receive(message)

    def stats(self) -> LMClientStats:
        """Counters and token usage of this model (totals survive restarts)."""
        return self.slot.meter.snapshot()

    def reconfigure(self, config: LMClientConfig) -> None:
        """Adopt new settings: retries, timeouts, breaker and rate limits."""
        if not isinstance(config, LMClientConfig):
            raise UsageError(f"reconfigure(config={config!r}): pass an LMClientConfig")
        self.config = config
        self.slot.config = config
        if self._engine is not None:
            self._engine.reconfigure(config)

    def __repr__(self) -> str:
        return f"<LMClient {self.model!r} urn={self.actor_urn}>"

"""What callers hold to reach a model: the LM handle.

:class:`LMHandle` implements the LM protocol. ``generate`` runs in the
caller's thread: it builds the canonical request, tries the cache hook, hands
the call straight to the current client incarnation's event loop and blocks
on its own one-shot signal, bounded by the call timeout. If the incarnation
dies first, the call comes back *orphaned* and the handle submits it again to
the next incarnation, so a restart loses no call and answers none twice.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pykka

from dspex.actors import _otel
from dspex.actors._lm._budget import Budget, active_budgets
from dspex.actors._lm._cache_key import request_key, request_params
from dspex.actors._lm._prices import PricedLater, PriceTable, cost_or_later
from dspex.actors._lm._resilience import (
    CallInfo,
    CallOptions,
    Emit,
)
from dspex.actors._lm._slot import Attempt, ClientSlot, Endpoint, Memo, Waiter
from dspex.actors._lm._streaming import STREAM_TO, ChunkSink
from dspex.actors._lm._types import LMRequest, LMResponse, Message
from dspex.actors._program_run import CancelEvent, RunContext, current_run
from dspex.actors._telemetry_emitter import TelemetryEmitter
from dspex.errors import ActorStoppedError, LMError, LMTimeoutError, ProgramError, UsageError
from dspex.supervision import current_lease

if TYPE_CHECKING:
    from dspex.actors._lm._resilience._stats import LMClientStats

__all__ = [
    "CacheGet",
    "CachePut",
    "ClientSlot",
    "Endpoint",
    "LMHandle",
    "Waiter",
    "request_key",
]

# Per-call keys of uncached calls (``flight_key``); next() on a count is atomic.
_SOLO = itertools.count()

CacheGet = Callable[[str], LMResponse | None]
CachePut = Callable[[str, LMResponse], None]


class LMHandle:
    """A caller's view of one model's supervised client (the LM protocol).

    ``kwargs`` are default request parameters (temperature, max_tokens...);
    per-call ``params`` override them. ``timeout`` and ``num_retries`` in
    either act per call; ``cache=False`` skips the cache hooks for a call.
    ``call_timeout`` bounds a whole call (default: from the client's config).
    ``telemetry`` gets ``lm.request.start``/``stop``/``exception`` from the
    caller's thread, so it must be quick (a tell).
    ``memo`` is the memory cache as the client's loop uses it (``_slot.Memo``).
    ``label`` names the model in telemetry (default: the slot's model id);
    ``cache_scope`` stands for the endpoint in cache keys (default: its URL).
    ``prices`` prices each answered call (``LMResponse.cost``; None: unknown);
    ``budget`` is the runtime-wide budget, checked with those in scope
    (``budget_scope``) before a call leaves for the provider.
    """

    def __init__(
        self,
        slot: ClientSlot,
        *,
        kwargs: Mapping[str, Any] | None = None,
        call_timeout: float | None = None,
        telemetry: Emit | None = None,
        cache_get: CacheGet | None = None,
        cache_put: CachePut | None = None,
        memo: Memo | None = None,
        label: str | None = None,
        cache_scope: str | None = None,
        prices: PriceTable | None = None,
        budget: Budget | None = None,
    ) -> None:
        if not isinstance(slot, ClientSlot):
            raise UsageError(
                f"LMHandle(slot={slot!r}): pass the ClientSlot of a running LMClient, or use "
                "LMHandle.for_client(ref)"
            )
        if call_timeout is not None and call_timeout <= 0:
            raise UsageError(f"LMHandle(call_timeout={call_timeout!r}): use seconds > 0")
        self.slot = slot
        self.model = slot.model
        # Telemetry names the model as the user did ("local/smollm2"), which may
        # differ from the client's wire id ("openai/smollm2").
        self.label = label or slot.model
        self.api_base = slot.api_base
        # What identifies the endpoint in cache keys: its URL, unless that is
        # ephemeral (a local model server gets a new port each run).
        self.cache_scope = cache_scope or slot.api_base
        self.kwargs: dict[str, Any] = dict(kwargs or {})
        self.call_timeout = call_timeout
        self.telemetry = telemetry
        self._cache_get = cache_get
        self._cache_put = cache_put
        # The client's loop reads the cache before it starts a flight and writes an
        # answer to memory before the flight ends: no window for a duplicate request.
        self.memo = memo
        self.prices = prices
        self.budget = budget if budget is not None and budget.limited else None
        self._lock = threading.Lock()
        self.resubmits = 0  # calls re-sent because their incarnation died

    @classmethod
    def for_client(
        cls, ref: pykka.ActorRef[Any], *, timeout: float = 5.0, **options: Any
    ) -> LMHandle:
        """A handle on the slot of a started :class:`~dspex.actors.LMClient`."""
        from dspex.actors._lm._client import GetSlot

        try:
            slot: Any = ref.ask(GetSlot(), timeout=timeout)
        except pykka.ActorDeadError as exc:
            raise ActorStoppedError(f"{ref} is not running; start the LMClient first") from exc
        return cls(slot, **options)

    def attach_cache(self, get: CacheGet | None, put: CachePut | None) -> None:
        """Consult ``get(key)`` before calling the model and ``put(key, response)`` after."""
        self._cache_get, self._cache_put = get, put

    def request_key(self, request: LMRequest) -> str:
        """The stable cache and single-flight key of ``request`` (see :func:`request_key`)."""
        return request_key(request, self.cache_scope)

    def flight_key(self, request: LMRequest, use_cache: bool) -> str:
        """The key a call looks up, stores and flies under.

        A cached call's is :meth:`request_key`, so identical calls in flight
        share one upstream request. An uncached call (``cache=False`` on the
        LM or the call, or the runtime's cache off) gets a key of its own: as
        in DSPy it always goes upstream, so concurrent identical calls sampled
        at a temperature get their own answers.
        """
        if use_cache and self._cache_get is not None:
            return request_key(request, self.cache_scope)
        return f"solo-{next(_SOLO)}"

    def stats(self) -> LMClientStats:
        """Counters and token usage of this model's client (survive restarts)."""
        return self.slot.meter.snapshot()

    # -- the LM protocol ---------------------------------------------------------

    def build(
        self, messages: Sequence[Message], params: Mapping[str, Any]
    ) -> tuple[LMRequest, CallOptions, bool]:
        """The canonical request, per-call options and cache switch for a call."""
        merged = {**self.kwargs, **params} if params else self.kwargs
        options = CallOptions(merged.get("timeout"), merged.get("num_retries"))
        use_cache = merged.get("cache", True) is not False
        wire = request_params(merged)  # call options stay out (see _cache_key.PARAMS)
        if isinstance(messages, str) or not isinstance(messages, Sequence):
            raise UsageError(
                f"messages={messages!r} must be a list of chat messages such as "
                '[{"role": "user", "content": "..."}]'
            )
        return LMRequest(self.model, tuple(messages), wire), options, use_cache

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any]) -> LMResponse:
        """Call the model (or the cache); blocks this thread only, up to the call timeout."""
        otel = _otel._tracing
        if otel is None:
            return self._generate(messages, params, None)
        # A CLIENT span, child of the span current here (the module's, inside a run).
        merged = {**self.kwargs, **params} if params else self.kwargs
        span = otel.start_lm(self.label, self.api_base, merged, messages)
        try:
            response = self._generate(messages, params, span)
        except BaseException as exc:
            otel.end_lm(span, None, exc)
            raise
        otel.end_lm(span, response, None)
        return response

    def _generate(
        self, messages: Sequence[Message], params: Mapping[str, Any], span: Any
    ) -> LMResponse:
        request, options, use_cache = self.build(messages, params)
        key = self.flight_key(request, use_cache)
        started = time.perf_counter()
        hit = self._cache_get(key) if use_cache and self._cache_get is not None else None
        emit = self.telemetry
        sink = STREAM_TO.get()
        if hit is not None:
            # A hit costs nothing; it is tagged with the model whose cache answered.
            hit = _as_hit(hit, self.label)
            if sink is not None and hit.texts and hit.texts[0]:
                sink(hit.texts[0])  # a cached reply streams at once, whole
            if isinstance(emit, TelemetryEmitter):
                # One queued record the Telemetry actor reads as the start and stop
                # events below (it builds them only for a subscriber or the log).
                keep = request.params.get("model_type") != "embeddings"
                emit.report_lm_call(
                    self.label,
                    request.messages,
                    (time.perf_counter() - started) * 1000.0,
                    hit,
                    params=params,
                    keep=keep,
                )
            elif emit is not None:
                emit("lm.request.start", {"model": self.label})
                self._emit_stop(emit, request, hit, CallInfo(), started, params=params)
            return hit
        if emit is not None:
            emit("lm.request.start", {"model": self.label})
        budgets = self._budgets(emit, started)
        value, info = self._call(key, request, options, sink, span, use_cache=use_cache)
        if span is not None and (info.retries or info.shared):
            span.set_attribute("dspex.lm.retries", info.retries)
            span.set_attribute("dspex.lm.single_flight_joined", info.shared)
        if isinstance(value, BaseException):
            if emit is not None:
                self._emit_error(emit, value, info, started)
            raise value
        if value.cache_hit:  # the client's loop found it in the cache: a hit, costs nothing
            value = dataclasses.replace(value, cost=0.0, answered_by=self.label)
            if emit is not None:
                self._emit_stop(emit, request, value, info, started, params=params)
            return value
        value = self._settle(value, budgets)
        if use_cache and self._cache_put is not None:
            self._cache_put(key, value)
        if emit is not None:
            self._emit_stop(emit, request, value, info, started, params=params)
        return value

    def complete(
        self,
        prompt: str | None = None,
        messages: Sequence[Message] | None = None,
        **params: Any,
    ) -> list[str]:
        """``lm("prompt")`` / ``lm(messages=[...])`` as in DSPy: the completion texts."""
        if (prompt is None) == (messages is None):
            raise UsageError(
                f"pass exactly one of prompt= or messages= (got prompt={prompt!r}, "
                f"messages={'None' if messages is None else '[...]'})"
            )
        if prompt is not None:
            if not isinstance(prompt, str):
                raise UsageError(f"prompt={prompt!r} must be a string; use messages=[...] for chat")
            messages = [{"role": "user", "content": prompt}]
        assert messages is not None
        return self.generate(messages, params).texts

    def _budgets(self, emit: Emit | None, started: float) -> tuple[Budget, ...]:
        """The budgets in force for a call about to start, each of which lets it (or raises)."""
        budgets = active_budgets()
        if self.budget is not None:
            budgets = (self.budget, *budgets)
        if budgets:
            self._admit(budgets, emit, started)
        return budgets

    def _settle(self, value: LMResponse, budgets: tuple[Budget, ...]) -> LMResponse:
        """``value`` priced and tagged with this model; the budgets charged for it."""
        prices, label, usage = self.prices, self.label, value.usage
        if prices is not None and not budgets and not prices.known(label):
            # The first answer of a model: price it when the cost is first read, so
            # the caller does not wait for the price table to load (``_prices``).
            return PricedLater.of(value, lambda: prices.cost(label, usage), answered_by=label)
        cost = prices.cost(label, usage) if prices is not None else None
        value = _tagged(value, value.cache_hit, cost, label)
        for budget in budgets:
            budget.charge(cost, value.usage.total_tokens)
        return value

    def _admit(self, budgets: tuple[Budget, ...], emit: Emit | None, started: float) -> None:
        """Refuse the call (raise) if any budget in force is spent."""
        priced = self.prices is not None and self.prices.price(self.label) is not None
        try:
            for budget in budgets:
                if budget.limited:
                    budget.admit(self.label, priced)
        except Exception as exc:
            if emit is not None:
                self._emit_error(emit, exc, CallInfo(), started)
            raise

    # -- the call and its re-submission ----------------------------------------

    def _call(
        self,
        key: str,
        request: LMRequest,
        options: CallOptions,
        sink: ChunkSink | None = None,
        span: Any = None,
        *,
        use_cache: bool = False,
    ) -> tuple[LMResponse | BaseException, CallInfo]:
        """The call's outcome (an error is returned, for the caller to raise)."""
        tap: _Tap | None = None
        if sink is not None:
            tap = _Tap(sink)
            # A streaming call shares no flight: its chunks belong to this caller.
            key = f"{key}#stream-{id(tap)}"
        budget = self.call_timeout or self.slot.config.call_timeout
        deadline = time.monotonic() + budget
        avoid: int | None = None
        run = current_run()
        lease = current_lease()
        if lease is None and run is not None:
            lease = run.lease  # e.g. a ReAct trajectory lends its parent's slot
        cancel = run.cancelled if run is not None else None
        if not isinstance(cancel, CancelEvent):
            cancel = None
        while True:
            endpoint = self.slot.current(deadline - time.monotonic(), not_epoch=avoid)
            attempt = Attempt(lease, tap, span)
            if use_cache and tap is None:
                attempt.memo = self.memo
            if not endpoint.submit(key, request, options, attempt):
                avoid = endpoint.epoch  # closing: wait for its successor
                continue
            wake = attempt.cancel
            if cancel is not None:
                cancel.add_waker(wake)
            try:
                answered = attempt.wait(deadline - time.monotonic())
            finally:
                if cancel is not None:
                    cancel.discard_waker(wake)
                if attempt.parked:
                    assert lease is not None
                    lease.unpark()  # back to work (a no-op if its slot was given back)
            if attempt.cancelled:
                endpoint.cancel(attempt)  # the last waiter to leave cancels the request
                assert run is not None
                return _cancelled_error(run), CallInfo()
            if not answered:
                endpoint.cancel(attempt)
                if attempt.abandon():
                    timed_out = LMTimeoutError(
                        f"model {self.model!r}: no answer within the call timeout of "
                        f"{budget:g}s (retries included); raise timeout/num_retries or "
                        "check the provider",
                        model=self.model,
                    )
                    return timed_out, CallInfo()
                attempt.wait(budget)  # an answer won the race: it is already signalled
            if attempt.orphaned:
                if tap is not None and tap.sent:
                    return _replay_refused(self.model), CallInfo()
                with self._lock:
                    self.resubmits += 1
                avoid = endpoint.epoch
                continue
            assert attempt.value is not None
            return attempt.value, attempt.info

    # -- telemetry ----------------------------------------------------------------

    def _emit_stop(
        self,
        emit: Emit,
        request: LMRequest,
        response: LMResponse,
        info: CallInfo,
        started: float,
        *,
        params: Mapping[str, Any],
    ) -> None:
        usage = response.usage
        data: dict[str, Any] = {
            "model": self.label,
            "duration_ms": (time.perf_counter() - started) * 1000.0,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cache_hit": response.cache_hit,
            "cost": cost_or_later(response),  # the Telemetry actor prices a LaterCost
            "retries": info.retries,
            "shared": info.shared,
        }
        # An embeddings call is metered but not an LM call in the history
        # (inspect_history, lm.history), as in DSPy: no messages, no entry.
        if request.params.get("model_type") != "embeddings":
            data["messages"] = request.messages
            data["outputs"] = response.texts
            # The call's own parameters, not the LM's defaults (DSPy's history kwargs).
            data["kwargs"] = params
            data["response"] = response
        emit("lm.request.stop", data)

    def _emit_error(self, emit: Emit, exc: BaseException, info: CallInfo, started: float) -> None:
        emit(
            "lm.request.exception",
            {
                "model": self.label,
                "duration_ms": (time.perf_counter() - started) * 1000.0,
                "error": type(exc).__name__,
                "status": getattr(exc, "status", None),
                "retries": info.retries,
            },
        )

    def __repr__(self) -> str:
        from dspex.config import redact

        return (
            f"LMHandle({self.model!r}, api_base={self.api_base!r}, kwargs={redact(self.kwargs)!r})"
        )


def _as_hit(response: LMResponse, label: str) -> LMResponse:
    """``response`` as a cache hit answered by ``label``: it costs nothing."""
    return _tagged(response, True, 0.0, label)


def _tagged(response: LMResponse, cache_hit: bool, cost: float | None, label: str) -> LMResponse:
    """``dataclasses.replace(response, cache_hit=..., cost=..., answered_by=label)``."""
    if type(response) is LMResponse:  # built directly: replace() costs 2 µs a call
        return LMResponse(
            response.completions,
            response.usage,
            response.model,
            cache_hit,
            cost,
            label,
            response.embeddings,
        )
    return dataclasses.replace(response, cache_hit=cache_hit, cost=cost, answered_by=label)


class _Tap:
    """A streaming call's sink that remembers whether text went out (loop thread)."""

    __slots__ = ("sent", "sink")

    def __init__(self, sink: ChunkSink) -> None:
        self.sink = sink
        self.sent = False

    def __call__(self, text: str) -> None:
        self.sent = True
        self.sink(text)


def _replay_refused(model: str) -> LMError:
    return LMError(
        f"model {model!r}: the LM client restarted after part of the reply was streamed; "
        "the call is not re-sent because the consumer already received that part",
        model=model,
        retryable=False,
    )


def _cancelled_error(run: RunContext) -> ProgramError:
    """The error a call of a cancelled run ends with (the run's own check wording)."""
    try:
        run.check_deadline()
    except ProgramError as exc:
        return exc
    return ProgramError(f"program run {run.run_id} ({run.label}) was cancelled")

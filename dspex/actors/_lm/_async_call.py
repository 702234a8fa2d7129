"""The async-native LM call: awaited on the caller's event loop, no thread per call.

:func:`agenerate` is :meth:`LMHandle.generate` for a coroutine. The cache is
read in the loop's thread (a hit never leaves it). On a miss an
:class:`AsyncAttempt` is submitted to the current client incarnation exactly
as a blocking caller's attempt is; when the client's IO loop resolves (or
orphans) it, ``loop.call_soon_threadsafe`` wakes the caller's future. So the
same rules hold as on the sync path: an orphaned attempt is submitted again to
the next incarnation, the call timeout bounds the whole call, and cancelling
the awaiting task leaves the request (the last waiter to leave cancels it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dspex.actors import _otel
from dspex.actors._lm._resilience import CallInfo, CallOptions
from dspex.actors._lm._slot import ClientSlot, Endpoint, Memo
from dspex.actors._lm._streaming import STREAM_TO, ChunkSink
from dspex.actors._lm._types import LMRequest, LMResponse, Message
from dspex.actors._program_run import CancelEvent, current_run
from dspex.errors import LMTimeoutError

if TYPE_CHECKING:
    from dspex.actors._lm._handle import LMHandle

__all__ = ["AsyncAttempt", "agenerate"]


class AsyncAttempt:
    """One submission of an awaited call: told once, then wakes its event loop.

    Implements the :class:`~dspex.actors._lm._slot.Waiter` protocol. It never
    holds a pool lease (an awaited call runs in no pool task), so a retry wait
    parks nothing and ``resume`` is immediate.
    """

    __slots__ = (
        "_claim",
        "_waker",
        "cancelled",
        "expired",
        "future",
        "info",
        "memo",
        "orphaned",
        "sink",
        "value",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: ChunkSink | None = None) -> None:
        self._claim = threading.Lock()
        self._waker = _waker_for(loop)
        self.future: asyncio.Future[None] = loop.create_future()
        self.value: LMResponse | BaseException | None = None
        self.info = CallInfo()
        self.orphaned = False
        self.cancelled = False
        self.expired = False
        self.sink = sink  # a streaming call's chunk sink, run on the client's loop
        self.memo: Memo | None = None  # see Attempt.memo

    def park(self) -> None:
        pass  # no lease to lend out

    def resume(self, ready: Callable[[], None]) -> None:
        ready()

    def resolve(self, value: LMResponse | BaseException, info: CallInfo) -> None:
        if self._claim.acquire(blocking=False):
            self.value = value
            self.info = info
            self._wake()

    def orphan(self, epoch: int) -> None:
        if self._claim.acquire(blocking=False):
            self.orphaned = True
            self._wake()

    def cancel(self) -> None:
        """The caller's run was cancelled (any thread)."""
        if self._claim.acquire(blocking=False):
            self.cancelled = True
            self._wake()

    def abandon(self) -> bool:
        """Claim the attempt for a caller that gave up; False if an answer got in first."""
        return self._claim.acquire(blocking=False)

    def expire(self) -> None:
        """The call timeout passed (on the caller's loop): give up unless an answer got in."""
        if self._claim.acquire(blocking=False):
            self.expired = True
            if not self.future.done():
                self.future.set_result(None)

    def _wake(self) -> None:
        self._waker.wake(self.future)


class _LoopWaker:
    """Completes futures of one event loop from other threads, a batch per wake-up.

    A burst of answers (hundreds of awaited calls finishing together) costs
    one ``call_soon_threadsafe`` (on asyncio's loop, a self-pipe write and a
    GIL hand-off) per batch instead of one per answer. Same pattern as the
    engine's inbox: append, then read the flag; the loop clears the flag
    before it empties the queue, so nothing strands.
    """

    __slots__ = ("_loop", "_pending", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: the waker is the value of a weak-keyed table whose key is this loop.
        self._loop = weakref.ref(loop)
        self._pending: collections.deque[asyncio.Future[None]] = collections.deque()
        self._scheduled = False

    def wake(self, future: asyncio.Future[None]) -> None:
        """Complete ``future`` (result None) on its loop soon; any thread."""
        if asyncio._get_running_loop() is self._loop():
            # The client shares the caller's loop (``dspex serve``): no hop at all.
            if not future.done():
                future.set_result(None)
            return
        self._pending.append(future)
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop()
            try:
                if loop is not None:
                    loop.call_soon_threadsafe(self._run)
            except RuntimeError:  # the loop is closed: its callers are gone, nobody waits
                self._scheduled = False

    def _run(self) -> None:
        self._scheduled = False
        pending = self._pending
        while pending:
            future = pending.popleft()
            if not future.done():
                future.set_result(None)


def _expire(attempt: AsyncAttempt) -> None:
    attempt.expire()


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker] = (
    weakref.WeakKeyDictionary()
)
_wakers_lock = threading.Lock()


def _waker_for(loop: asyncio.AbstractEventLoop) -> _LoopWaker:
    """The loop's waker (made on first use; it goes with the loop)."""
    waker = _wakers.get(loop)
    if waker is None:
        with _wakers_lock:
            waker = _wakers.get(loop)
            if waker is None:
                waker = _wakers[loop] = _LoopWaker(loop)
    return waker


async def agenerate(
    handle: LMHandle, messages: Sequence[Message], params: Mapping[str, Any]
) -> LMResponse:
    """``handle.generate(messages, params)`` awaited on the running loop (telemetry alike)."""
    otel = _otel._tracing
    if otel is None:
        return await _agenerate(handle, messages, params)
    merged = {**handle.kwargs, **params} if params else handle.kwargs
    span = otel.start_lm(handle.label, handle.api_base, merged, messages)
    try:
        response = await _agenerate(handle, messages, params)
    except BaseException as exc:
        otel.end_lm(span, None, exc)
        raise
    otel.end_lm(span, response, None)
    return response


async def _agenerate(
    handle: LMHandle, messages: Sequence[Message], params: Mapping[str, Any]
) -> LMResponse:
    request, options, use_cache = handle.build(messages, params)
    key = handle.flight_key(request, use_cache)
    emit = handle.telemetry
    started = time.perf_counter()
    if emit is not None:
        emit("lm.request.start", {"model": handle.label})
    sink = STREAM_TO.get()
    cache_get = handle._cache_get
    if use_cache and cache_get is not None:
        hit = cache_get(key)
        if hit is not None:
            # A hit costs nothing; it is tagged with the model whose cache answered.
            hit = dataclasses.replace(hit, cache_hit=True, cost=0.0, answered_by=handle.label)
            if sink is not None and hit.texts and hit.texts[0]:
                sink(hit.texts[0])  # a cached reply streams at once, whole
            if emit is not None:
                handle._emit_stop(emit, request, hit, CallInfo(), started, params=params)
            return hit
    budgets = handle._budgets(emit, started)
    try:
        value, info = await _call(handle, key, request, options, sink, use_cache=use_cache)
    except asyncio.CancelledError:
        if emit is not None:
            handle._emit_error(emit, asyncio.CancelledError(), CallInfo(), started)
        raise
    if isinstance(value, BaseException):
        if emit is not None:
            handle._emit_error(emit, value, info, started)
        raise value
    if value.cache_hit:  # the client's loop found it in the cache: a hit, costs nothing
        value = dataclasses.replace(value, cost=0.0, answered_by=handle.label)
        if emit is not None:
            handle._emit_stop(emit, request, value, info, started, params=params)
        return value
    value = handle._settle(value, budgets)
    cache_put = handle._cache_put
    if use_cache and cache_put is not None:
        cache_put(key, value)
    if emit is not None:
        handle._emit_stop(emit, request, value, info, started, params=params)
    return value


async def _call(
    handle: LMHandle,
    key: str,
    request: LMRequest,
    options: CallOptions,
    sink: ChunkSink | None = None,
    *,
    use_cache: bool = False,
) -> tuple[LMResponse | BaseException, CallInfo]:
    """The call's outcome (an error is returned, for the caller to raise)."""
    from dspex.actors._lm._handle import _cancelled_error, _replay_refused, _Tap

    tap: _Tap | None = None
    if sink is not None:
        tap = _Tap(sink)
        key = f"{key}#stream-{id(tap)}"  # a streaming call shares no flight
    loop = asyncio.get_running_loop()
    budget = handle.call_timeout or handle.slot.config.call_timeout
    deadline = time.monotonic() + budget
    avoid: int | None = None
    run = current_run()
    cancel = run.cancelled if run is not None else None
    if not isinstance(cancel, CancelEvent):
        cancel = None
    while True:
        endpoint = await _endpoint(handle.slot, deadline, avoid)
        attempt = AsyncAttempt(loop, tap)
        if use_cache and tap is None:
            attempt.memo = handle.memo
        if not endpoint.submit(key, request, options, attempt):
            avoid = endpoint.epoch  # closing: wait for its successor
            continue
        wake = attempt.cancel
        if cancel is not None:
            cancel.add_waker(wake)
        # A timer rather than asyncio.wait(timeout=): no waiter future, set or
        # done callbacks per call. It claims the attempt itself, so a late
        # answer finds it claimed and is dropped.
        timer = loop.call_later(max(0.0, deadline - time.monotonic()), _expire, attempt)
        try:
            await attempt.future
        except asyncio.CancelledError:
            endpoint.cancel(attempt)  # the awaiting task was cancelled: leave the request
            attempt.abandon()
            raise
        finally:
            timer.cancel()
            if cancel is not None:
                cancel.discard_waker(wake)
        if attempt.cancelled:
            endpoint.cancel(attempt)
            assert run is not None
            return _cancelled_error(run), CallInfo()
        if attempt.expired:
            endpoint.cancel(attempt)
            timed_out = LMTimeoutError(
                f"model {handle.model!r}: no answer within the call timeout of "
                f"{budget:g}s (retries included); raise timeout/num_retries or "
                "check the provider",
                model=handle.model,
            )
            return timed_out, CallInfo()
        if attempt.orphaned:
            if tap is not None and tap.sent:
                return _replay_refused(handle.model), CallInfo()
            with handle._lock:
                handle.resubmits += 1
            avoid = endpoint.epoch
            continue
        assert attempt.value is not None
        return attempt.value, attempt.info


async def _endpoint(slot: ClientSlot, deadline: float, avoid: int | None) -> Endpoint:
    """The running endpoint other than ``avoid``; awaits a restart without blocking the loop."""
    endpoint = slot.current_or_none(not_epoch=avoid)
    if endpoint is not None:
        return endpoint
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(changed.set)

    slot.watch(wake)
    try:
        while True:
            endpoint = slot.current_or_none(not_epoch=avoid)
            if endpoint is not None:
                return endpoint
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return slot.current(0.0, not_epoch=avoid)  # raises the timeout error
            changed.clear()
            # Re-checked after clear(): a publish in between has already set it again.
            endpoint = slot.current_or_none(not_epoch=avoid)
            if endpoint is not None:
                return endpoint
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
    finally:
        slot.unwatch(wake)

"""The sending side of telemetry: :class:`TelemetryEmitter` and its queue protocol.

An emitter queues events and nudges the Telemetry actor (a ``tell``) only
when the actor is not already watching its queue; after a nudge the actor
polls the queue every :data:`LINGER` seconds until a poll finds it empty. So
emitting never blocks, and while events flow the actor thread wakes once per
``LINGER``, not once per event. The actor's inbox (:class:`_PollingInbox`)
is what hands it those polls. The actor itself lives in
:mod:`dspex.actors._telemetry`.
"""

from __future__ import annotations

import collections
import queue
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pykka

from dspex.supervision import Event

__all__ = ["LINGER", "TelemetryEmitter", "TelemetryEvent"]

LINGER = 0.01
"""Seconds between the actor's polls of an emitter's queue while events flow."""


@dataclass(frozen=True, slots=True)
class TelemetryEvent:
    """One event for the Telemetry actor."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class _Drain:
    """Nudge from an emitter: handle the events queued in ``source``, then keep polling it."""

    source: TelemetryEmitter


class _PollDue:
    """Handed to the actor by its inbox when it is time to poll the emitters' queues."""


@dataclass(frozen=True, slots=True)
class _Envelope:
    """Looks like pykka's envelope to its actor loop: a message, no reply."""

    message: object
    reply_to: None = None


_POLL = _Envelope(_PollDue())


class _PollingInbox:
    """The Telemetry actor's inbox: a SimpleQueue whose ``get`` returns :data:`_POLL`
    once ``deadline`` (``time.monotonic()``; None: never) has passed.

    Only the actor thread touches ``deadline``; one poll is handed out per
    deadline, so pykka's final "drain the inbox" loop always ends.
    """

    __slots__ = ("_queue", "deadline")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.deadline: float | None = None

    def put(self, envelope: Any, /) -> None:
        self._queue.put(envelope)

    def get(self) -> Any:
        deadline = self.deadline
        if deadline is None:
            return self._queue.get()
        remaining = deadline - time.monotonic()
        if remaining > 0:
            try:
                return self._queue.get(timeout=remaining)
            except queue.Empty:
                pass
        self.deadline = None
        return _POLL

    def empty(self) -> bool:
        return self._queue.empty()


class TelemetryEmitter:
    """What other components hold: ``emit(name, **data)``, never blocking.

    ``target`` returns the current Telemetry incarnation (None while it
    restarts). Events wait in this emitter's queue until the actor drains it
    (see the module docstring). Events emitted while no Telemetry runs, or
    queued for one found dead, are counted in ``dropped``.
    """

    def __init__(self, target: Callable[[], pykka.ActorRef[Any] | None]) -> None:
        self._target = target
        self._ref: pykka.ActorRef[Any] | None = None  # last incarnation resolved
        self._pending: collections.deque[TelemetryEvent | Event] = collections.deque()
        # The incarnation that will look at the queue without a nudge: one
        # polling it, or one a nudge was sent to. The actor resets it.
        self._watcher: pykka.ActorRef[Any] | None = None
        self._drain_message = _Drain(self)
        self.dropped = 0

    def emit(self, name: str, **data: Any) -> None:
        """Queue an event; the actor handles it within ``LINGER`` seconds."""
        self._push(TelemetryEvent(name, data), nudge=True)

    def emit_later(self, name: str, **data: Any) -> None:
        """Queue an event without waking the actor.

        It is handled with the next event or :meth:`flush`; use it only where
        one is sure to follow soon (e.g. a run's start, whose stop follows).
        """
        self._push(TelemetryEvent(name, data), nudge=False)

    def flush(self) -> None:
        """Make sure queued events will be handled (a query made afterwards sees them)."""
        if self._pending:
            ref = self._resolve()
            if ref is None:
                self._drop_pending()
            else:
                self._nudge(ref)

    def __call__(self, name: str, data: Mapping[str, Any]) -> None:
        self._push(TelemetryEvent(name, data), nudge=True)

    def sink(self, event: Event) -> None:
        """An EventBus sink: forwards supervision events."""
        self._push(event, nudge=True)

    def _resolve(self) -> pykka.ActorRef[Any] | None:
        ref = self._ref
        if ref is None or not ref.is_alive():
            ref = self._ref = self._target()
            if ref is not None and not ref.is_alive():
                return None
        return ref

    def _push(self, event: TelemetryEvent | Event, *, nudge: bool) -> None:
        ref = self._resolve()
        if ref is None:
            self.dropped += 1
            return
        self._pending.append(event)
        if nudge:
            self._nudge(ref)

    def _nudge(self, ref: pykka.ActorRef[Any]) -> None:
        if self._watcher is ref:
            return  # it polls this queue, or a nudge is on its way
        self._watcher = ref
        try:
            ref.tell(self._drain_message)
        except pykka.ActorDeadError:
            self._watcher = None
            self._drop_pending()

    def _drop_pending(self) -> None:
        while self._pending:
            try:
                self._pending.popleft()
            except IndexError:
                return
            self.dropped += 1

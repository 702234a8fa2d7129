"""Supervision events and the pluggable sinks that receive them.

Supervisors emit ``supervisor.child_started``, ``supervisor.child_restarted``,
``supervisor.child_terminated`` and ``supervisor.intensity_exceeded``. A sink
is any callable taking an :class:`Event`; it runs in the emitting actor's
thread, so it must be quick (the telemetry sink only does a pykka ``tell``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CHILD_RESTARTED",
    "CHILD_STARTED",
    "CHILD_TERMINATED",
    "INTENSITY_EXCEEDED",
    "Event",
    "EventBus",
    "EventSink",
]

log = logging.getLogger("dspex.supervision")

CHILD_STARTED = "supervisor.child_started"
CHILD_RESTARTED = "supervisor.child_restarted"
CHILD_TERMINATED = "supervisor.child_terminated"
INTENSITY_EXCEEDED = "supervisor.intensity_exceeded"


@dataclass(frozen=True, slots=True)
class Event:
    """One named occurrence with its data; ``time`` is wall-clock seconds."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


EventSink = Callable[[Event], None]


class EventBus:
    """Fan-out of events to subscribed sinks; a failing sink never hurts the emitter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: tuple[EventSink, ...] = ()

    def subscribe(self, sink: EventSink) -> Callable[[], None]:
        """Add a sink; returns a function that removes it."""
        with self._lock:
            self._sinks = (*self._sinks, sink)

        def unsubscribe() -> None:
            with self._lock:
                self._sinks = tuple(s for s in self._sinks if s is not sink)

        return unsubscribe

    def emit(self, name: str, **data: Any) -> None:
        sinks = self._sinks  # a tuple swapped atomically: no lock on the hot path
        if not sinks:
            return
        event = Event(name, data)
        for sink in sinks:
            try:
                sink(event)
            except Exception:
                log.exception("event sink %r failed on %s", sink, name)

    def __call__(self, event: Event) -> None:
        """Forward an event: lets a bus itself be a sink of another bus."""
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                log.exception("event sink %r failed on %s", sink, event.name)

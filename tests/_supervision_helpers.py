"""Test actors and waiting helpers shared by the supervisor tests (no sleeps)."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from dspex.supervision import Actor, Down, Event, EventBus, monitor


@dataclass(frozen=True)
class Crash:
    """Tell this to make the actor raise (an abnormal exit)."""

    message: str = "boom"


@dataclass(frozen=True)
class Exit:
    """Tell this to make the actor stop itself (a normal exit)."""


@dataclass
class Journal:
    """Thread-safe record of starts and stops, in order."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def start(self, label: str) -> None:
        with self.lock:
            self.started.append(label)

    def stop(self, label: str) -> None:
        with self.lock:
            self.stopped.append(label)

    def clear(self) -> None:
        with self.lock:
            self.started.clear()
            self.stopped.clear()


_incarnations = itertools.count(1)


class Worker(Actor):
    """Answers ``"ping"`` with ``(label, incarnation)``; crashes or exits on request."""

    def __init__(self, label: str = "w", journal: Journal | None = None) -> None:
        super().__init__()
        self.label = label
        self.journal = journal
        self.incarnation = next(_incarnations)

    def on_start(self) -> None:
        if self.journal is not None:
            self.journal.start(self.label)

    def on_stop(self) -> None:
        if self.journal is not None:
            self.journal.stop(self.label)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise RuntimeError(message.message)
        if isinstance(message, Exit):
            self.stop()
            return None
        if message == "ping":
            return (self.label, self.incarnation)
        return super().on_receive(message)

    def whoami(self) -> tuple[str, int]:
        return (self.label, self.incarnation)


def worker(label: str, journal: Journal | None = None) -> Callable[[], pykka.ActorRef[Any]]:
    """A ChildSpec start function for a :class:`Worker`."""

    def start() -> pykka.ActorRef[Any]:
        return Worker.start(label, journal)

    return start


class Stuck(Actor):
    """An actor whose ``on_stop`` blocks until ``release`` is set (or 10 s pass)."""

    def __init__(self, release: threading.Event, entered: threading.Event) -> None:
        super().__init__()
        self.release = release
        self.entered = entered

    def on_stop(self) -> None:
        self.entered.set()
        self.release.wait(10)


class FailingStart(Actor):
    def on_start(self) -> None:
        raise ValueError("cannot init")


class EventLog:
    """Collects bus events; waits for the one you expect with a timeout."""

    def __init__(self, bus: EventBus) -> None:
        self._cond = threading.Condition()
        self.events: list[Event] = []
        self.unsubscribe = bus.subscribe(self._add)

    def _add(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def matching(self, name: str, **data: Any) -> list[Event]:
        with self._cond:
            return [
                e
                for e in self.events
                if e.name == name and all(e.data.get(k) == v for k, v in data.items())
            ]

    def wait(self, name: str, *, count: int = 1, timeout: float = 5.0, **data: Any) -> Event:
        """Block until at least ``count`` matching events arrived; returns the last one."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.matching(name, **data)) >= count, timeout)
        found = self.matching(name, **data)
        assert ok, f"no {count}x {name} {data} within {timeout}s; saw {self.events}"
        return found[count - 1]


def ping(ref: pykka.ActorRef[Any], timeout: float = 5.0) -> tuple[str, int]:
    """``(label, incarnation)`` of a :class:`Worker`."""
    reply: tuple[str, int] = ref.ask("ping", block=True, timeout=timeout)
    return reply


def down_queue(ref: pykka.ActorRef[Any]) -> queue.Queue[Down]:
    """A queue that receives the ``Down`` of ``ref``."""
    q: queue.Queue[Down] = queue.Queue()
    monitor(ref, q.put)
    return q

"""TelemetryEmitter's queue and the actor's polling: few wake-ups, nothing lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from wait_helpers import wait_until

from dspex.actors._telemetry import Telemetry
from dspex.actors._telemetry_emitter import TelemetryEmitter, _Drain


class CountingTelemetry(Telemetry):
    """Counts the nudges (drain requests) that reach the actor."""

    def __init__(self) -> None:
        super().__init__()
        self.nudges = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Drain):
            self.nudges += 1
        return super().on_receive(message)


def _nudges(ref: pykka.ActorRef[Any]) -> int:
    count: int = ref.proxy().nudges.get(timeout=5)
    return count


def _events(ref: pykka.ActorRef[Any]) -> int:
    metrics: dict[str, Any] = ref.proxy().metrics().get(timeout=5)
    return int(metrics["events"])


@pytest.fixture
def telemetry() -> Iterator[pykka.ActorRef[Any]]:
    ref = CountingTelemetry.start_link()
    yield ref
    ref.stop(block=True, timeout=5)


def test_a_burst_while_the_actor_is_busy_costs_no_more_nudges(
    telemetry: pykka.ActorRef[Any],
) -> None:
    # The first event's nudge finds the actor busy (its subscriber holds it);
    # the 400 events emitted meanwhile from four threads must not nudge again.
    # (How many nudges an unhindered burst costs is a figure in bench/telemetry.py.)
    entered, release = threading.Event(), threading.Event()

    def holding(event: Any) -> None:  # the actor's thread
        if event.name == "first":
            entered.set()
            release.wait(10)

    telemetry.proxy().subscribe(holding).get(timeout=5)
    emitter = TelemetryEmitter(lambda: telemetry)
    emitter.emit("first")
    assert entered.wait(5)

    def burst() -> None:
        for i in range(100):
            emitter.emit("cache.flush", rows=i)

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    release.set()
    assert _events(telemetry) == 401  # a query sees every event emitted before it
    assert _nudges(telemetry) == 1
    assert emitter.dropped == 0


def test_polling_stops_when_quiet_and_the_next_event_nudges_again(
    telemetry: pykka.ActorRef[Any],
) -> None:
    emitter = TelemetryEmitter(lambda: telemetry)
    emitter.emit("cache.flush")
    # The actor lets go after one empty poll (LINGER).
    wait_until(lambda: emitter._watcher is None, what="the actor stops polling")
    before = _nudges(telemetry)
    emitter.emit("cache.flush")
    assert _events(telemetry) == 2
    assert _nudges(telemetry) == before + 1


def test_events_reach_subscribers_without_a_query(telemetry: pykka.ActorRef[Any]) -> None:
    seen: list[str] = []
    third = threading.Event()

    def subscriber(event: Any) -> None:  # the actor's thread
        seen.append(event.name)
        if len(seen) == 3:
            third.set()

    telemetry.proxy().subscribe(subscriber).get(timeout=5)
    emitter = TelemetryEmitter(lambda: telemetry)
    for name in ("a.start", "a.step", "a.stop"):
        emitter.emit(name)
    assert third.wait(5)
    assert seen == ["a.start", "a.step", "a.stop"]


def test_emit_later_waits_for_the_next_event_or_a_flush(
    telemetry: pykka.ActorRef[Any],
) -> None:
    emitter = TelemetryEmitter(lambda: telemetry)
    emitter.emit_later("program.run.start")
    assert _events(telemetry) == 0  # nobody was told yet
    emitter.flush()
    assert _events(telemetry) == 1
    emitter.flush()  # nothing queued: no-op
    assert _events(telemetry) == 1


def test_stop_handles_everything_queued_before_it() -> None:
    seen: list[int] = []
    ref = Telemetry.start_link()
    ref.proxy().subscribe(lambda event: seen.append(event.data["i"])).get(timeout=5)
    emitter = TelemetryEmitter(lambda: ref)
    for i in range(50):
        emitter.emit("cache.flush", i=i)
    ref.stop(block=True, timeout=5)
    assert seen == list(range(50))
    assert emitter._watcher is None


def test_a_new_incarnation_is_nudged_and_drops_are_counted() -> None:
    current: list[pykka.ActorRef[Any] | None] = [CountingTelemetry.start_link()]
    emitter = TelemetryEmitter(lambda: current[0])
    first = current[0]
    assert first is not None
    emitter.emit("cache.flush")
    assert _events(first) == 1
    first.stop(block=True, timeout=5)
    current[0] = None  # restarting
    emitter.emit("cache.flush")
    assert emitter.dropped == 1
    second = CountingTelemetry.start_link()
    try:
        current[0] = second
        emitter.emit("cache.flush")
        assert _events(second) == 1
        assert _nudges(second) == 1
    finally:
        second.stop(block=True, timeout=5)


def test_after_a_crash_the_next_incarnation_gets_the_queue() -> None:
    from dspex.supervision import wait_dead

    first = CountingTelemetry.start_link()
    current: list[pykka.ActorRef[Any]] = [first]
    emitter = TelemetryEmitter(lambda: current[0])
    emitter.emit("lm.request.stop", model="m", duration_ms="not a number")  # crashes it
    assert wait_dead(first, 5)
    assert emitter._watcher is None  # released by on_failure
    emitter.emit("cache.flush")
    assert emitter.dropped == 1  # nobody to take it while no incarnation runs
    second = CountingTelemetry.start_link()
    try:
        current[0] = second
        emitter.emit("cache.flush")
        assert _events(second) == 1
        assert _nudges(second) == 1
    finally:
        second.stop(block=True, timeout=5)

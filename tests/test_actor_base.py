"""The Actor base: death reports on every path, init ack, BaseException capture."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pykka
import pytest

from dspex.errors import StartError
from dspex.supervision import (
    NOPROC,
    NORMAL,
    SHUTDOWN,
    Actor,
    ActorAbortError,
    Down,
    await_started,
    demonitor,
    is_abnormal,
    monitor,
    shutdown,
    wait_dead,
)


class Echo(Actor):
    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("boom")
        if message == "exit":
            raise SystemExit(3)
        return message


class FailingStart(Actor):
    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.gate = gate

    def on_start(self) -> None:
        if self.gate is not None:
            self.gate.wait(5)
        raise ValueError("bad init")


class ExitingStart(Actor):
    def on_start(self) -> None:
        raise KeyboardInterrupt


class SlowStart(Actor):
    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    def on_start(self) -> None:
        self.gate.wait(5)


def _downs() -> tuple[queue.Queue[Down], Any]:
    q: queue.Queue[Down] = queue.Queue()
    return q, q.put


def test_normal_stop_reports_normal() -> None:
    ref = Echo.start_link()
    q, put = _downs()
    monitor(ref, put)
    ref.stop()
    down = q.get(timeout=5)
    assert down.reason == NORMAL and down.ref is ref
    assert not is_abnormal(down.reason)


def test_tell_failure_reports_the_exception() -> None:
    ref = Echo.start_link()
    q, put = _downs()
    monitor(ref, put)
    ref.tell("boom")
    down = q.get(timeout=5)
    assert isinstance(down.reason, RuntimeError) and str(down.reason) == "boom"
    assert wait_dead(ref, 5)


def test_ask_failure_goes_to_caller_and_actor_lives() -> None:
    ref = Echo.start_link()
    with pytest.raises(RuntimeError, match="boom"):
        ref.ask("boom", timeout=5)
    assert ref.ask("still here", timeout=5) == "still here"
    ref.stop()


def test_base_exception_in_handler_does_not_stop_other_actors() -> None:
    bystander = Echo.start_link()
    ref = Echo.start_link()
    q, put = _downs()
    monitor(ref, put)
    ref.tell("exit")
    down = q.get(timeout=5)
    assert isinstance(down.reason, ActorAbortError)
    assert isinstance(down.reason.__cause__, SystemExit)
    assert bystander.ask("alive", timeout=5) == "alive"
    with pytest.raises(ActorAbortError):
        bystander.ask("exit", timeout=5)
    assert bystander.ask("alive", timeout=5) == "alive"
    bystander.stop()


def test_on_start_failure_is_reported_and_raises_start_error() -> None:
    with pytest.raises(StartError, match="bad init") as info:
        FailingStart.start_link()
    assert isinstance(info.value.__cause__, ValueError)
    gate = threading.Event()
    ref = FailingStart.start(gate)
    q, put = _downs()
    monitor(ref, put)  # set before on_start runs, so the crash is seen
    gate.set()
    down = q.get(timeout=5)
    assert isinstance(down.reason, ValueError)


def test_base_exception_in_on_start_is_contained() -> None:
    with pytest.raises(StartError) as info:
        ExitingStart.start_link()
    assert isinstance(info.value.__cause__, ActorAbortError)


def test_start_ack_timeout() -> None:
    gate = threading.Event()
    ref = SlowStart.start(gate)
    with pytest.raises(StartError, match="did not finish on_start"):
        await_started(ref, timeout=0.05)
    gate.set()
    assert wait_dead(ref, 5)


def test_monitor_dead_actor_gets_noproc() -> None:
    ref = Echo.start_link()
    ref.stop()
    assert wait_dead(ref, 5)
    q, put = _downs()
    monitor(ref, put)
    assert q.get(timeout=5).reason == NOPROC


def test_demonitor_suppresses_down() -> None:
    ref = Echo.start_link()
    q, put = _downs()
    first = monitor(ref, put)
    monitor(ref, put)
    assert demonitor(first)
    assert not demonitor(first)
    ref.stop()
    down = q.get(timeout=5)
    assert down.monitor != first
    assert q.empty()


def test_shutdown_reports_shutdown() -> None:
    ref = Echo.start_link()
    q, put = _downs()
    monitor(ref, put)
    assert shutdown(ref, timeout=5)
    assert q.get(timeout=5).reason == SHUTDOWN


class Watching(Actor):
    def __init__(self, seen: queue.Queue[Down]) -> None:
        super().__init__()
        self.seen = seen

    def watch(self, ref: pykka.ActorRef[Any]) -> None:
        self.monitor(ref)

    def watch_then_drop(self, ref: pykka.ActorRef[Any]) -> None:
        self.demonitor(self.monitor(ref))

    def on_down(self, down: Down) -> None:
        self.seen.put(down)


def test_actor_watcher_receives_down_in_on_down() -> None:
    seen: queue.Queue[Down] = queue.Queue()
    watcher = Watching.start_link(seen)
    target = Echo.start_link()
    other = Echo.start_link()
    proxy = watcher.proxy()
    proxy.watch_then_drop(other).get(timeout=5)
    proxy.watch(target).get(timeout=5)
    other.stop()
    target.tell("boom")
    down = seen.get(timeout=5)
    assert down.ref is target and isinstance(down.reason, RuntimeError)
    # the demonitored actor's Down never reaches on_down
    assert watcher.ask("ping-noop", timeout=5) is None or True
    assert seen.empty()
    watcher.stop()


def test_many_monitors_each_get_exactly_one_down() -> None:
    ref = Echo.start_link()
    qs = [queue.Queue[Down]() for _ in range(20)]
    for q in qs:
        monitor(ref, q.put)
    ref.tell("boom")
    for q in qs:
        assert isinstance(q.get(timeout=5).reason, RuntimeError)
        assert q.empty()


class Recorder(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def on_receive(self, message: Any) -> Any:
        if message == "seen":
            return list(self.seen)
        self.seen.append(message)
        return None


def test_inbox_keeps_order_across_threads_and_asks_queue_behind_tells() -> None:
    ref = Recorder.start_link()
    try:

        def send(base: int) -> None:
            for i in range(200):
                ref.tell(base + i)

        senders = [threading.Thread(target=send, args=(k * 1000,)) for k in range(3)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(10)
        seen = ref.ask("seen", timeout=5)
        assert len(seen) == 600
        for k in range(3):  # each sender's messages arrive in the order it sent them
            assert [m for m in seen if m // 1000 == k] == [k * 1000 + i for i in range(200)]
    finally:
        ref.stop()
    assert wait_dead(ref, 5)
